"""The operator routes of the admin API (/api/v1/tenants, /api/v1/usage/tenants) over real HTTP:
off by default, operators only (a tenant admin is refused, an operator is refused on tenant
routes), the tenant lifecycle with suspension felt by MCP calls, deletion behind its
confirmation, revoked credentials, and every action in operator_audit. Every answer is checked
against the OpenAPI document (api_fixtures)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from api_fixtures import ApiClient, make_api
from test_cli import cli  # noqa: F401 - the fixture, shared

from spiral_mcp.admin import operators
from spiral_mcp.api.principal import AdminPrincipal
from spiral_mcp.api.state import OPERATORS
from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.db import init_connection
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import BEARER, CONSOLE_SESSIONS

MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
OPERATOR_ROUTES = [("GET", "/tenants"), ("POST", "/tenants"),
                   ("GET", "/tenants/{id}"), ("POST", "/tenants/{id}/suspend"),
                   ("POST", "/tenants/{id}/resume"), ("DELETE", "/tenants/{id}"),
                   ("GET", "/usage/tenants")]


def _settings(database_urls: DatabaseUrls, **env: str):
    assert database_urls.admin is not None
    return load_settings(environ={
        "DATABASE_URL": database_urls.runtime, "ADMIN_DATABASE_URL": database_urls.admin,
        "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1", "DB_POOL_MAX": "5", **env})


@pytest.fixture
async def served(aiohttp_client, database_urls: DatabaseUrls) -> TestClient:
    """The server with OPERATOR_API on, its operator pool logging in as the owner."""
    app = create_app(_settings(database_urls, OPERATOR_API="on"),
                     database_url=database_urls.runtime, owner_url=database_urls.admin)
    return await aiohttp_client(app)


@pytest.fixture
async def ops_api(served: TestClient) -> ApiClient:
    return await make_api(served)


@pytest.fixture
async def owner(admin_conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    await init_connection(admin_conn)
    yield admin_conn


async def _operator(owner: asyncpg.Connection, queries: Queries) -> tuple[uuid.UUID, dict]:
    async with owner.transaction():
        operator_id, secret = await operators.create_operator(
            owner, queries, f"op-{uuid.uuid4().hex[:8]}")
    return operator_id, {"Authorization": f"Bearer {secret}"}


def _path(template: str, tenant_id: uuid.UUID) -> str:
    return template.replace("{id}", str(tenant_id))


async def _actions(owner: asyncpg.Connection, operator_id: uuid.UUID) -> list[tuple]:
    return [tuple(r) for r in await owner.fetch(
        "SELECT action, target_tenant_id, outcome FROM operator_audit WHERE operator_id = $1 "
        "ORDER BY id", operator_id)]


async def test_operator_routes_are_off_by_default(
    api: ApiClient, tenant, owner: asyncpg.Connection, queries: Queries,
) -> None:
    _, headers = await _operator(owner, queries)
    for method, template in OPERATOR_ROUTES:
        resp = await api.call(method, _path(template, tenant.id), headers)
        assert resp.status == 401, (method, template)
        assert resp.error["code"] == "UNAUTHENTICATED"
        assert resp.error["message"] == "operator access is off on this server (OPERATOR_API)"


async def test_a_tenant_admin_cannot_reach_operator_routes(
    ops_api: ApiClient, tenant, make_tenant,
) -> None:
    other = await make_tenant(name="Other")
    for method, template in OPERATOR_ROUTES:
        for tenant_id in (tenant.id, other.id):
            resp = await ops_api.call(method, _path(template, tenant_id), tenant,
                                      json={"name": "x"} if method == "POST" else None)
            assert resp.status == 403, (method, template, resp.body)
            assert resp.error["code"] == "PERMISSION_DENIED"
            # Nothing of any tenant: the same words whoever's id it names.
            assert resp.error["message"] == "this route is for operators"


async def test_an_operator_has_no_tenant_context(
    ops_api: ApiClient, owner: asyncpg.Connection, queries: Queries,
) -> None:
    _, headers = await _operator(owner, queries)
    resp = await ops_api.get("/keys", headers)
    assert resp.status == 403 and resp.error["code"] == "PERMISSION_DENIED"
    assert "an operator manages tenants at /api/v1/tenants" in resp.error["message"]


async def test_tenant_lifecycle_over_http(
    ops_api: ApiClient, served: TestClient, owner: asyncpg.Connection, queries: Queries,
    make_tenant,
) -> None:
    operator_id, headers = await _operator(owner, queries)
    name = f"Http {uuid.uuid4().hex[:6]}"
    created = await ops_api.post("/tenants", headers, json={"name": name})
    assert created.status == 201, created.body
    assert created.body["tenant_id"] is None  # an operator acts in no tenant
    tenant_id = uuid.UUID(created.data["tenant_id"])
    assert created.data["name"] == name and created.data["suspended"] is False

    listed = await ops_api.get("/tenants", headers)
    assert listed.status == 200
    assert {"tenant_id": str(tenant_id), "live_keys": 0} .items() <= \
        next(t for t in listed.data["tenants"] if t["tenant_id"] == str(tenant_id)).items()

    # A key for the tenant (its admin's first, as the CLI makes it), used on MCP.
    admin_tenant = await make_tenant()
    async with owner.transaction():
        from spiral_mcp import admin
        _, key = await admin.create_api_key(owner, queries, tenant_id=tenant_id, name="k",
                                            scopes=["read", "admin"])
    mcp = {"Authorization": f"Bearer {key}"}
    assert (await served.post("/execute", json=MCP_CALL, headers=mcp)).status == 200

    detail = await ops_api.get(f"/tenants/{tenant_id}", headers)
    assert detail.status == 200
    assert (detail.data["keys"], detail.data["instances"]) == (1, 0)
    assert detail.data["calls_24h"] >= 0

    suspended = await ops_api.post(f"/tenants/{tenant_id}/suspend", headers)
    assert suspended.status == 200 and suspended.data["suspended"] is True
    refused = await served.post("/execute", json=MCP_CALL, headers=mcp)
    assert refused.status == 403
    assert "tenant is suspended" in (await refused.json())["error"]["message"]
    # The suspended tenant's admin key is refused on the admin API too, saying why.
    resp = await ops_api.get("/keys", mcp)
    assert resp.status == 403 and "suspended" in resp.error["message"]
    # Another tenant goes on.
    assert (await served.post("/execute", json=MCP_CALL,
                              headers=admin_tenant.headers)).status == 200
    resumed = await ops_api.post(f"/tenants/{tenant_id}/resume", headers)
    assert resumed.status == 200 and resumed.data["suspended"] is False
    assert (await served.post("/execute", json=MCP_CALL, headers=mcp)).status == 200

    for body, what in ((None, "no body"), ({}, "no confirm"), ({"confirm": name.lower()},
                                                                  "wrong case")):
        resp = await ops_api.delete(f"/tenants/{tenant_id}", headers, json=body)
        assert resp.status == 400, what
        assert resp.error == {"code": "VALIDATION_ERROR", "details": [], "retry_after": None,
                              "message": f"deleting tenant {tenant_id} removes all its data: "
                                         f"confirm with its exact name, {name!r}"}
    resp = await ops_api.delete(f"/tenants/{tenant_id}", headers, json={"confirm": 7})
    assert resp.status == 400 and "confirm" in resp.error["message"]
    deleted = await ops_api.delete(f"/tenants/{tenant_id}", headers, json={"confirm": name})
    assert deleted.status == 200, deleted.body
    assert deleted.data["deleted"]["tenants"] == 1 and deleted.data["deleted"]["api_keys"] == 1
    assert (await served.post("/execute", json=MCP_CALL, headers=mcp)).status == 403

    gone = await ops_api.get(f"/tenants/{tenant_id}", headers)
    assert gone.status == 404
    assert gone.error["message"] == f"no tenant with id {tenant_id}"
    for method, template in OPERATOR_ROUTES[2:6]:
        resp = await ops_api.call(method, _path(template, tenant_id), headers,
                                  json={"confirm": name} if method == "DELETE" else None)
        assert resp.status == 404, (method, template)
    malformed = await ops_api.get("/tenants/not-a-uuid", headers)
    assert malformed.status == 404 and malformed.error["code"] == "NOT_FOUND"

    assert await _actions(owner, operator_id) == [
        ("tenants.create", tenant_id, "ok"), ("tenants.list", None, "ok"),
        ("tenants.get", tenant_id, "ok"), ("tenants.suspend", tenant_id, "ok"),
        ("tenants.resume", tenant_id, "ok"),
        *[("tenants.delete", tenant_id, "error")] * 3,
        ("tenants.delete", tenant_id, "ok"), ("tenants.get", tenant_id, "error"),
        ("tenants.get", tenant_id, "error"), ("tenants.suspend", tenant_id, "error"),
        ("tenants.resume", tenant_id, "error"), ("tenants.delete", tenant_id, "error")]
    actor, arguments = await owner.fetchrow(
        "SELECT actor, arguments FROM operator_audit WHERE operator_id = $1 "
        "AND action = 'tenants.delete' AND outcome = 'ok'", operator_id)
    assert actor.startswith("operator:op-") and arguments == {"confirm": name}


async def test_a_revoked_or_unknown_operator_is_refused(
    ops_api: ApiClient, owner: asyncpg.Connection, queries: Queries,
) -> None:
    operator_id, headers = await _operator(owner, queries)
    assert (await ops_api.get("/tenants", headers)).status == 200
    async with owner.transaction():
        await operators.revoke_operator(owner, queries, operator_id)
    for sent in (headers, {"Authorization": "Bearer spo_" + "0" * 75},
                 {"Authorization": "Bearer spo_short"}):
        resp = await ops_api.get("/tenants", sent)
        assert resp.status == 401 and resp.error["code"] == "UNAUTHENTICATED"
        assert "operator credential is not valid" in resp.error["message"]


async def test_usage_of_every_tenant(
    ops_api: ApiClient, owner: asyncpg.Connection, queries: Queries, tenant,
) -> None:
    operator_id, headers = await _operator(owner, queries)
    assert (await ops_api.get("/keys", tenant)).status == 200  # nothing audited: a read
    async with owner.transaction():
        await queries.set_tenant(owner, tenant_id=str(tenant.id))
        await owner.execute("INSERT INTO audit_log (tenant_id, tool, outcome, duration_ms) "
                            "VALUES ($1, 't', 'error', 4.0)", tenant.id)
    resp = await ops_api.get("/usage/tenants", headers)
    assert resp.status == 200, resp.body
    mine = next(t for t in resp.data["tenants"] if t["tenant_id"] == str(tenant.id))
    assert (mine["calls"], mine["errors"], mine["p95_ms"]) == (1, 1, 4.0)
    since = datetime.fromisoformat(resp.data["since"])
    until = datetime.fromisoformat(resp.data["until"])
    assert until - since == timedelta(hours=24)

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await ops_api.get(f"/usage/tenants?since={later.replace('+', '%2B')}", headers)
    assert resp.status == 400 and resp.error["message"] == "since must be before until"
    resp = await ops_api.get("/usage/tenants?until=yesterday", headers)
    assert resp.status == 400
    assert resp.error["message"].startswith("until must be an ISO 8601 time with a time zone")
    resp = await ops_api.get("/usage/tenants?since=2026-01-01T00:00:00", headers)
    assert resp.status == 400 and "time zone" in resp.error["message"]
    assert [a for a, _, _ in await _actions(owner, operator_id)] == ["usage.tenants"] * 4


async def test_operator_console_sessions(served: TestClient, owner: asyncpg.Connection,
                                         queries: Queries) -> None:
    access = served.app[OPERATORS]
    operator_id, headers = await _operator(owner, queries)
    admin = await access.principal(headers["Authorization"].removeprefix("Bearer "))
    assert admin is not None and admin.role == "operator" and admin.tenant_id is None
    cookie, csrf = await access.open_session(admin)
    assert cookie.startswith("os_")
    found = await access.session(cookie)
    assert found is not None and found.operator_id == operator_id
    assert found.session is not None and found.session.csrf_token == csrf
    assert await access.session("os_" + "x" * 43) is None
    assert await access.session(cookie.removeprefix("os_")) is None  # a tenant's cookie shape
    await access.end_session(cookie)
    assert await access.session(cookie) is None
    await access.end_session(cookie)  # twice: nothing more
    assert [a for a, _, _ in await _actions(owner, operator_id)] == [
        "console.sign_in", "console.sign_out"]


async def test_operator_api_needs_the_owner_role(aiohttp_client,
                                                 database_urls: DatabaseUrls) -> None:
    app = create_app(_settings(database_urls, OPERATOR_API="on"),
                     database_url=database_urls.runtime, owner_url=database_urls.runtime)
    with pytest.raises(ConnectionError, match="must be the owner role"):
        await aiohttp_client(app)


def _cookie(value: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"spiral_console={value}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


async def test_console_cookies_tenant_admin_kept_out_operator_let_in_with_csrf(
    ops_api: ApiClient, served: TestClient, owner: asyncpg.Connection, queries: Queries,
    make_tenant,
) -> None:
    tenant = await make_tenant(name="Cookie")
    principal = await served.app[BEARER].principal(tenant.key)
    cookie, csrf = await served.app[CONSOLE_SESSIONS].create(
        AdminPrincipal.tenant_admin(principal))
    assert (await ops_api.get("/keys", _cookie(cookie))).status == 200
    for method, template in OPERATOR_ROUTES:
        resp = await ops_api.call(method, _path(template, tenant.id), _cookie(cookie, csrf),
                                  json={"name": "x"} if method == "POST" else None)
        assert resp.status == 403, (method, template, resp.body)
        assert resp.error["message"] == "this route is for operators"

    operator_id, headers = await _operator(owner, queries)
    access = served.app[OPERATORS]
    admin = await access.principal(headers["Authorization"].removeprefix("Bearer "))
    assert admin is not None
    op_cookie, op_csrf = await access.open_session(admin)
    listed = await ops_api.get("/tenants", _cookie(op_cookie))
    assert listed.status == 200 and str(tenant.id) in listed.text
    refused = await ops_api.post(f"/tenants/{tenant.id}/suspend", _cookie(op_cookie))
    assert refused.status == 403 and "CSRF token is missing" in refused.error["message"]
    assert (await ops_api.post(f"/tenants/{tenant.id}/suspend",
                               _cookie(op_cookie, "x" * 43))).status == 403
    suspended = await ops_api.post(f"/tenants/{tenant.id}/suspend", _cookie(op_cookie, op_csrf))
    assert suspended.status == 200 and suspended.data["suspended"] is True
    # The operator's cookie has no tenant context either.
    assert (await ops_api.get("/keys", _cookie(op_cookie))).status == 403

    # The suspended tenant's console session is over, as its keys are.
    ended = await ops_api.get("/keys", _cookie(cookie))
    assert ended.status == 401 and "console session has ended" in ended.error["message"]
    assert [a for a, _, o in await _actions(owner, operator_id) if o == "ok"] == [
        "console.sign_in", "tenants.list", "tenants.suspend"]


async def test_operator_api_needs_the_owners_url(aiohttp_client,
                                                 database_urls: DatabaseUrls) -> None:
    with pytest.raises(ConfigError, match="OPERATOR_API: needs ADMIN_DATABASE_URL"):
        load_settings(environ={"DATABASE_URL": database_urls.runtime, "OPERATOR_API": "on"})
    assert load_settings(environ={}).operator_api is False  # off by default
    app = create_app(_settings(database_urls, OPERATOR_API="on"),
                     database_url=database_urls.runtime)
    with pytest.raises(ConnectionError, match="needs the owner role's URL"):
        await aiohttp_client(app)


async def test_an_operator_made_and_revoked_by_the_cli_over_http(
    cli, ops_api: ApiClient, tenant,  # noqa: F811
) -> None:
    made = await cli("operator", "create", "--name", f"e2e-{uuid.uuid4().hex[:6]}")
    assert made.code == 0, made.err
    headers = {"Authorization": f"Bearer {made.out.strip()}"}
    operator_id = made.err.split("operator id: ")[1].split()[0]
    resp = await ops_api.get(f"/tenants/{tenant.id}", headers)
    assert resp.status == 200 and resp.data["name"] == "test"
    assert (await cli("operator", "revoke", operator_id)).code == 0
    resp = await ops_api.get(f"/tenants/{tenant.id}", headers)
    assert resp.status == 401 and "not valid" in resp.error["message"]
