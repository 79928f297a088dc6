"""A hostile tenant admin and a careless operator against the operator path (OPERATOR_API on):
operator routes and pages by every method and credential, the delete confirmation's
look-alikes, an operator's session inside a tenant, suspension felt by the console, and the
tenants page showing what an operator typed as text. Each test is an attack that must fail."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from api_fixtures import ApiClient
from console_client import sign_in
from test_api_tenants import _operator
from test_api_tenants import ops_api as ops_api  # the fixtures: the server with operators on
from test_api_tenants import owner as owner
from test_api_tenants import served as served

from spiral_mcp.queries import Queries
from spiral_mcp.server.keys import CONSOLE_SESSIONS
from tests.fake_jira import FakeJira
from tests.test_attacks_issue18 import product as product  # heartbeat every half second
from tests.test_source_sync_server import eventually, scalar
from tests.test_source_sync_server import jira as jira  # holds its third page until released
from tests.test_tasks_product import held_sync

XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def _origin(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def _operator_cookie(served: TestClient, owner: asyncpg.Connection,
                           queries: Queries) -> tuple[dict[str, str], str]:
    _, headers = await _operator(owner, queries)
    user = await sign_in(served, headers["Authorization"].removeprefix("Bearer "))
    return user.cookies, user.csrf


async def test_a_tenant_admin_reaches_no_operator_route_by_any_method_or_header(
        served: TestClient, make_tenant) -> None:
    tenant = await make_tenant()
    user = await sign_in(served, tenant.key)
    other = await make_tenant(name=f"Victim {uuid.uuid4().hex[:6]}")
    session = {**user.cookies, "Origin": _origin(served), "X-CSRF-Token": user.csrf}
    for creds in (tenant.headers, session):
        for method in ("GET", "HEAD", "OPTIONS"):
            for path in ("/api/v1/tenants", "/api/v1/usage/tenants",
                         f"/api/v1/tenants/{other.id}"):
                response = await served.request(method, path, headers=creds)
                text = await response.text()
                assert response.status in (403, 405), (method, path, response.status)
                assert str(other.id) not in text or path.endswith(str(other.id))
                assert "Victim" not in text
        for override in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
            for path in (f"/api/v1/tenants/{other.id}/suspend", "/api/v1/keys"):
                response = await served.post(path, headers={**creds, override: "DELETE"},
                                             json={"name": "x", "scopes": ["read"]})
                if path.endswith("/suspend"):
                    assert response.status == 403, override
        for method in ("GET", "HEAD"):
            response = await served.request(method, "/admin/tenants", headers=creds,
                                            allow_redirects=False)
            assert response.status in (303, 403), method
            assert "Victim" not in await response.text()
    assert (await served.post("/execute", headers=other.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list"})).status == 200  # not suspended


async def test_an_operator_session_acts_in_no_tenant(served: TestClient, owner, queries,
                                                     make_tenant, ops_api: ApiClient) -> None:
    tenant = await make_tenant(demo=True)
    cookies, csrf = await _operator_cookie(served, owner, queries)
    unsafe = {**cookies, "Origin": _origin(served), "X-CSRF-Token": csrf}
    for method, path, body in (("GET", "/api/v1/keys", None), ("GET", "/api/v1/audit", None),
                               ("POST", "/api/v1/keys", {"name": "x", "scopes": ["admin"]}),
                               ("GET", "/api/v1/projects", None),
                               ("GET", f"/api/v1/keys/{tenant.key_id}", None)):
        response = await served.request(method, path, headers=unsafe, json=body)
        assert response.status == 403, (method, path)
    for path in ("/admin", "/admin/keys", "/admin/projects/WEB", "/admin/audit"):
        response = await served.get(path, headers=cookies, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/admin/tenants"


@pytest.mark.parametrize("confirm", [
    " {name}", "{name} ", "{name}\n", "{upper}", "{lower}", "{name}\u200b", "\u0410{rest}",
    "{nbsp}", "{nfd}", "{name}\x00"])
async def test_delete_takes_only_the_exact_name(ops_api: ApiClient, owner, queries,
                                                confirm: str) -> None:
    _, headers = await _operator(owner, queries)
    name = f"Acme Café {uuid.uuid4().hex[:4]}"
    created = await ops_api.post("/tenants", headers, json={"name": name})
    tenant_id = created.data["tenant_id"]
    import unicodedata
    typed = confirm.format(name=name, upper=name.upper(), lower=name.lower(), rest=name[1:],
                           nbsp=name.replace(" ", "\u00a0", 1),
                           nfd=unicodedata.normalize("NFD", name))
    resp = await ops_api.delete(f"/tenants/{tenant_id}", headers, json={"confirm": typed})
    assert resp.status == 400, resp.body
    assert (await ops_api.get(f"/tenants/{tenant_id}", headers)).status == 200


async def test_the_tenants_page_shows_names_as_text(served: TestClient, owner, queries,
                                                    ops_api: ApiClient) -> None:
    _, headers = await _operator(owner, queries)
    assert (await ops_api.post("/tenants", headers, json={"name": "t" + XSS})).status == 201
    cookies, _ = await _operator_cookie(served, owner, queries)
    response = await served.get("/admin/tenants", headers=cookies)
    html = await response.text()
    assert response.status == 200
    assert "<script>alert(1)" not in html and "<img src=x" not in html


async def test_a_suspended_tenants_admin_cannot_sign_in_and_is_told_why(
        served: TestClient, make_tenant, admin_conn) -> None:
    tenant = await make_tenant()
    user = await sign_in(served, tenant.key)
    await admin_conn.execute("UPDATE tenants SET suspended_at = now() WHERE tenant_id = $1",
                             tenant.id)
    try:
        assert (await user.page("/admin/keys"))[0] == 303
        response = await served.post("/admin/login", data={"credential": tenant.key},
                                     headers={"Origin": _origin(served)},
                                     allow_redirects=False)
        assert response.status == 403 and "Set-Cookie" not in response.headers
        assert "suspended" in await response.text()
        assert await served.app[CONSOLE_SESSIONS].admin(user.cookie) is None
    finally:
        await admin_conn.execute("UPDATE tenants SET suspended_at = NULL WHERE tenant_id = $1",
                                 tenant.id)


async def test_suspending_a_tenant_stops_its_mcp_task(
        jira: FakeJira, make_tenant, admin_conn, app_conn, product, queries) -> None:
    """The same through MCP: a sources_sync started as a task stops when the tenant is
    suspended, failed and saying so, and writes nothing more."""
    tenant, _, task_id = await held_sync(jira, make_tenant, admin_conn, product, queries)
    count = "SELECT count(*) FROM work_items"

    async def two_pages() -> bool:
        return await scalar(app_conn, tenant.id, count) == 199

    await eventually(two_pages)
    await admin_conn.execute("UPDATE tenants SET suspended_at = now() WHERE tenant_id = $1",
                             tenant.id)
    status = "SELECT status FROM tasks WHERE task_id = $1"

    async def stopped() -> bool:
        return await scalar(app_conn, tenant.id, status, uuid.UUID(task_id)) != "working"

    try:
        await eventually(stopped, timeout=5)
    finally:
        jira.watch.release.set()  # type: ignore[attr-defined]
        await admin_conn.execute("UPDATE tenants SET suspended_at = NULL WHERE tenant_id = $1",
                                 tenant.id)
    message = await scalar(app_conn, tenant.id,
                           "SELECT error->>'message' FROM tasks WHERE task_id = $1",
                           uuid.UUID(task_id))
    assert "suspended" in message
    assert await scalar(app_conn, tenant.id, count) == 199
