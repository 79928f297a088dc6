"""A hostile tenant admin, a hostile web page and a hostile source against the console and the
admin API's sources (issue 21, second attack): stored and reflected XSS, open redirects,
headers on every answer, sign-in (fixation, login CSRF, what a refusal reveals), operator routes
by every method, SSRF through a source's address, and a source echoing its credentials back.
Each test is an attack that must fail; a finding still open is xfail(strict=True) with its
reason. The first attack's tests (tests/test_api_attacks.py) are not repeated here."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from api_fixtures import ApiClient, make_api, patiently, task_ended
from console_client import session_cookie, sign_in
from test_api_instances import SECRET_KEY, TOKEN, _add, _gated

# The fixtures: a server that opens sources, and the fake Jira.
from test_api_instances import api as api
from test_api_instances import jira as jira
from test_console import CSP

from spiral_mcp.server.app import create_app
from tests.conftest import make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients

XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
RAW = ("<script>alert(1)", "<img src=x", "onerror=alert(2)>")


def _origin(client: Any) -> str:
    return str(client.make_url("")).rstrip("/")


def _no_raw(html: str, where: str) -> None:
    for raw in RAW:
        assert raw not in html, (where, raw)


# --- stored and reflected XSS -------------------------------------------------------------


async def test_values_a_tenant_stores_are_text_on_every_page(api: ApiClient, jira: FakeJira,
                                                             make_tenant) -> None:
    """Key names, acts_as, a source's name and projects, audit arguments and tool names of
    the admin's own calls: every page shows them escaped."""
    tenant = await make_tenant()
    client = api.client
    user = await sign_in(client, tenant.key)
    status, body = await user.api("POST", "/keys", json={
        "name": "k" + XSS, "scopes": ["read"], "acts_as": "u" + XSS})
    assert status in (201, 400), body
    instance_id = await _add(api, tenant, jira, name="src" + XSS)
    await api.get(f"/audit?tool={XSS}", tenant)
    for path in ("/admin", "/admin/keys", "/admin/sources", f"/admin/sources/{instance_id}",
                 "/admin/audit", "/admin/usage", "/admin/projects",
                 f"/admin/audit?tool={XSS}&key_id={XSS}&outcome={XSS}&since={XSS}",
                 f"/admin/usage?window={XSS}", f"/admin/audit?cursor={XSS}",
                 f"/admin/projects/{XSS}", f"/admin/sources/{XSS}",
                 f"/admin/login?expired={XSS}&next={XSS}"):
        status, html = await user.page(path)
        assert status < 500, (path, status)
        _no_raw(html, path)


async def test_what_a_source_says_is_text_in_the_history(api: ApiClient, serve_fake,
                                                         make_tenant) -> None:
    """A hostile source's item titles and error messages reach the console as text."""
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary=XSS, status="To Do", updated=datetime(2025, 3, 1, tzinfo=UTC))
    jira_ = await serve_fake(fake)
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira_)
    resp = await patiently(api, "POST", f"/instances/{instance_id}/sync", tenant,
                            json={"full": True})
    assert (await task_ended(api, tenant, resp.data["task"]["task_id"]))["status"] == \
        "completed"
    jira_.token = "rotated"
    resp = await patiently(api, "POST", f"/instances/{instance_id}/sync", tenant, json={})
    await task_ended(api, tenant, resp.data["task"]["task_id"])
    user = await sign_in(api.client, tenant.key)
    for path in (f"/admin/sources/{instance_id}", "/admin/projects", "/admin/projects/API",
                 "/admin/usage", "/admin/audit"):
        status, html = await user.page(path)
        assert status == 200, path
        _no_raw(html, path)


# --- headers on every answer, redirects, caches -------------------------------------------


async def test_every_console_answer_has_the_csp_even_errors(api: ApiClient, tenant) -> None:
    client = api.client
    user = await sign_in(client, tenant.key)
    for path in ("/admin/nope", "/admin/static/nope.js", f"/admin/sources/{uuid.uuid4()}",
                 "/admin/projects/NOPE", "/admin/static/", "/admin/login/x", "/admin/tenants"):
        for headers in ({}, user.cookies):
            response = await client.get(path, headers=headers, allow_redirects=False)
            assert response.headers.get("Content-Security-Policy") == CSP, (path, response.status)
            assert response.headers.get("X-Frame-Options") == "DENY", path
            if not path.startswith("/admin/static/"):
                assert response.headers.get("Cache-Control") == "no-store", path
    # A method the route does not take, on a page and on sign-in.
    for method, path in (("DELETE", "/admin/keys"), ("PUT", "/admin/login")):
        response = await client.request(method, path, headers=user.cookies,
                                        allow_redirects=False)
        assert response.status in (303, 405), (method, path)
        assert response.headers.get("Content-Security-Policy") == CSP, (method, path)


async def test_no_redirect_leaves_this_server(api: ApiClient, tenant) -> None:
    client = api.client
    user = await sign_in(client, tenant.key)
    origin = _origin(client)
    for path in ("/admin//evil.example/", "/admin/\\evil.example", "/admin/login?next=//evil",
                 "/admin/keys/", "/admin/%2F%2Fevil.example",
                 "/admin/login/..//evil.example", "/admin/static//evil.example/"):
        for headers in ({}, user.cookies):
            response = await client.get(path, headers=headers, allow_redirects=False)
            location = response.headers.get("Location")
            if location is None:
                continue
            assert location.startswith("/admin") and not location.startswith("//"), \
                (path, location)
            assert "evil" not in location, (path, location)
    response = await client.post("/admin/login?next=https://evil.example",
                                 data={"credential": tenant.key}, headers={"Origin": origin},
                                 allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/admin"


# --- sign-in ------------------------------------------------------------------------------


async def test_a_cookie_planted_before_sign_in_is_not_the_session(api: ApiClient,
                                                                  tenant) -> None:
    """Session fixation: whatever cookie the browser carried, sign-in sets a new one, and the
    planted value is no session."""
    client = api.client
    planted = "cs_" + tenant.id.hex + "A" * 43
    response = await client.post("/admin/login", data={"credential": tenant.key}, headers={
        "Origin": _origin(client), "Cookie": f"spiral_console={planted}"},
        allow_redirects=False)
    assert response.status == 303
    _, value, _ = session_cookie(response.headers["Set-Cookie"])
    assert value != planted
    client.session.cookie_jar.clear()
    page = await client.get("/admin/keys", headers={"Cookie": f"spiral_console={planted}"},
                            allow_redirects=False)
    assert page.status == 303


async def test_login_csrf_from_another_site_or_a_null_origin_is_refused(api: ApiClient,
                                                                        tenant) -> None:
    client = api.client
    for origin in ("https://evil.example", "null", _origin(client).replace("http", "https"),
                   _origin(client) + ".evil.example"):
        response = await client.post("/admin/login", data={"credential": tenant.key},
                                     headers={"Origin": origin}, allow_redirects=False)
        assert response.status == 403 and "Set-Cookie" not in response.headers, origin
    # Sign-out from another site does not end the session either.
    user = await sign_in(client, tenant.key)
    response = await client.post("/admin/logout", data={"csrf_token": user.csrf},
                                 headers={**user.cookies, "Origin": "https://evil.example"},
                                 allow_redirects=False)
    assert response.status == 403
    assert (await user.page("/admin/keys"))[0] == 200


@pytest.mark.xfail(strict=True, reason=(
    "open, low: sign-in attempts are not limited per client; a key is 256 random bits, so "
    "guessing is hopeless, but each made-up key id costs a database lookup. A limit per client "
    "address needs the client's address behind a proxy (a trusted-proxy setting), a design "
    "choice"))
async def test_sign_in_attempts_are_limited(api: ApiClient, tenant) -> None:
    client = api.client
    statuses = []
    for _ in range(40):
        response = await client.post("/admin/login", data={
            "credential": "spk_" + uuid.uuid4().hex + uuid.uuid4().hex},
            headers={"Origin": _origin(client)}, allow_redirects=False)
        statuses.append(response.status)
    assert 429 in statuses


async def test_a_refused_sign_in_says_the_same_for_unknown_and_revoked_keys(
        api: ApiClient, make_tenant, queries, admin_conn) -> None:
    client = api.client
    revoked = await make_tenant()
    await queries.revoke_api_key(admin_conn, key_id=revoked.key_id)
    unknown = "spk_" + revoked.key[4:-4] + ("AAAA" if not revoked.key.endswith("AAAA")
                                             else "BBBB")
    answers = []
    for key in (revoked.key, unknown):
        response = await client.post("/admin/login", data={"credential": key},
                                     headers={"Origin": _origin(client)},
                                     allow_redirects=False)
        answers.append((response.status, await response.text()))
    assert answers[0] == answers[1]


# --- operators by every path ----------------------------------------------------------------


async def test_a_tenant_admin_reaches_no_operator_route_by_any_method(api: ApiClient,
                                                                      tenant) -> None:
    """HEAD, OPTIONS and method-override headers open nothing of the operator path."""
    client = api.client
    user = await sign_in(client, tenant.key)
    origin = _origin(client)
    for creds in (tenant.headers, {**user.cookies, "Origin": origin, "X-CSRF-Token": user.csrf}):
        for method in ("HEAD", "OPTIONS", "GET"):
            for path in ("/api/v1/tenants", "/api/v1/usage/tenants",
                         f"/api/v1/tenants/{tenant.id}"):
                response = await client.request(method, path, headers=creds)
                text = await response.text()
                assert response.status in (401, 403, 404, 405), (method, path, response.status)
                assert str(tenant.id) not in text or path.endswith(str(tenant.id))
        for override in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
            response = await client.post(f"/api/v1/tenants/{tenant.id}/suspend",
                                         headers={**creds, override: "GET"})
            assert response.status in (401, 403), override
        for method in ("HEAD", "GET"):
            response = await client.request(method, "/admin/tenants", headers=creds,
                                            allow_redirects=False)
            assert response.status in (303, 403), method


async def test_an_operator_cookie_or_credential_is_nothing_with_the_operator_api_off(
        api: ApiClient, tenant) -> None:
    client = api.client
    for creds in ({"Authorization": "Bearer spo_" + "A" * 43},
                  {"Cookie": "spiral_console=os_" + "A" * 60}):
        for path in ("/api/v1/keys", "/api/v1/tenants"):
            response = await client.get(path, headers=creds)
            assert response.status in (401, 403), (path, creds)
        response = await client.post("/mcp", headers={**creds, "Content-Type":
                                                      "application/json"}, data=b"{}")
        assert response.status in (401, 403)


# --- sources: SSRF and credentials echoed ----------------------------------------------------


@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:6379", "http://localhost:5432", "http://[::1]:8080", "https://10.0.0.1",
    "https://192.168.1.1", "https://[fd00::1]", "https://2130706433", "https://[::ffff:a00:1]"])
@pytest.mark.usefixtures("public_only")
async def test_a_tenant_admin_cannot_point_a_source_at_private_addresses(
        api: ApiClient, make_tenant, base_url: str) -> None:
    """Loopback, private networks and names resolving there are not a tenant's to probe:
    refused unless the operator lists them (SOURCE_PRIVATE_NETWORKS; a name resolving there
    only later is refused at connect time: tests/test_source_networks.py)."""
    tenant = await make_tenant()
    resp = await api.post("/instances", tenant, json={
        "kind": "jira", "name": f"ssrf {uuid.uuid4().hex[:6]}", "base_url": base_url,
        "token": "t", "projects": {"ABC": "ABC"}})
    assert resp.status == 400, (base_url, resp.body)
    assert "(SOURCE_PRIVATE_NETWORKS)" in resp.error["message"], resp.body


@pytest.mark.parametrize("base_url", [
    "https://169.254.169.254/latest", "https://[fe80::1]", "https://0.0.0.0",
    "https://[::]:443", "https://224.0.0.1", "https://[::ffff:169.254.169.254]"])
async def test_no_source_lives_at_link_local_unspecified_or_multicast_addresses(
        api: ApiClient, make_tenant, base_url: str) -> None:
    """Cloud metadata (169.254.169.254), link-local, 0.0.0.0 (this host) and multicast are
    never a source's address, whoever asks: refused as the address is given."""
    tenant = await make_tenant()
    resp = await api.post("/instances", tenant, json={
        "kind": "jira", "name": f"ssrf {uuid.uuid4().hex[:6]}", "base_url": base_url,
        "token": "t", "projects": {"ABC": "ABC"}})
    assert resp.status == 400 and "no source is served" in resp.error["message"], resp.body




def _echoing_app(status: int = 401) -> web.Application:
    """A hostile (or careless) source that puts the request's Authorization in its error."""

    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        return web.json_response({"errorMessages": [f"bad credentials {said}"],
                                  "errors": {"auth": said}}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("email", [None, "me@example.com"])
async def test_a_source_echoing_the_token_does_not_leak_it(
        api: ApiClient, serve_fake, make_tenant, admin_conn, status: int,
        email: str | None) -> None:
    fake = await serve_fake(FakeJira(token=TOKEN), app=_echoing_app(status))
    tenant = await make_tenant()
    body = {"kind": "jira", "name": f"echo {uuid.uuid4().hex[:6]}", "base_url": fake.base_url,
            "token": TOKEN, "projects": {"ABC": "ABC"}}
    if email:
        body["email"] = email
    resp = await api.post("/instances", tenant, json=body)
    assert resp.status == 201, resp.body
    instance_id = resp.data["instance_id"]
    basic = base64.b64encode(f"{email}:{TOKEN}".encode()).decode()
    tested = await patiently(api, "POST", f"/instances/{instance_id}/test", tenant)
    assert tested.status >= 400
    synced = await patiently(api, "POST", f"/instances/{instance_id}/sync", tenant, json={})
    task = await task_ended(api, tenant, synced.data["task"]["task_id"])
    runs = await patiently(api, "GET", f"/instances/{instance_id}/runs", tenant)
    stored = await admin_conn.fetch("SELECT error FROM sync_runs WHERE instance_id = $1",
                                    uuid.UUID(instance_id))
    user = await sign_in(api.client, tenant.key)
    _, page = await user.page(f"/admin/sources/{instance_id}")
    for text in (tested.text, str(task), runs.text, str(stored), page):
        assert TOKEN not in text and basic not in text, text[:400]


# --- suspension ---------------------------------------------------------------------------


async def test_suspending_a_tenant_stops_its_running_sync(api: ApiClient, serve_fake,
                                                          make_tenant, admin_conn) -> None:
    """A sync started just before the operator suspends the tenant does not go on with the
    suspended tenant's rights until the source is done (a backfill can take hours)."""
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary="One", status="To Do", updated=datetime(2025, 3, 1,
                                                                            tzinfo=UTC))
    app, gate = _gated(fake)
    await serve_fake(fake, app=app)
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, fake)
    resp = await patiently(api, "POST", f"/instances/{instance_id}/sync", tenant,
                            json={"full": True})
    assert resp.status == 202, resp.body
    task_id = resp.data["task"]["task_id"]
    await admin_conn.execute("UPDATE tenants SET suspended_at = now() WHERE tenant_id = $1",
                             tenant.id)
    try:
        deadline = time.monotonic() + 15
        while True:
            async with admin_conn.transaction():
                await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                         str(tenant.id))
                task = await admin_conn.fetchrow(
                    "SELECT status, error FROM tasks WHERE task_id = $1", uuid.UUID(task_id))
            if task["status"] != "working" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        gate.set()
        await admin_conn.execute("UPDATE tenants SET suspended_at = NULL WHERE tenant_id = $1",
                                 tenant.id)
    assert task["status"] == "failed", task
    assert "suspended" in task["error"]


# --- many syncs at once -------------------------------------------------------------------


async def test_syncs_through_the_api_draw_on_the_tenants_share(database_urls, serve_fake,
                                                               make_tenant) -> None:
    """Each sync holds a database connection of its own for as long as its source takes;
    MCP's sources_sync is bounded per tenant (SYNC_MAX_PER_TENANT) and per process, so one
    tenant cannot take every connection. The API's sync must draw on the same share, MCP and
    API together."""
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary="One", status="To Do", updated=datetime(2025, 3, 1,
                                                                            tzinfo=UTC))
    app, gate = _gated(fake)
    await serve_fake(fake, app=app)
    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0",
                             SYNC_MAX_PER_TENANT="1", SYNC_ON_DEMAND_MAX="2")
    async with app_clients() as start:
        api = await make_api(await start(create_app(settings, database_url=database_urls.runtime,
                                                    explorer_url=database_urls.explorer)))
        tenant, other = await make_tenant(), await make_tenant()
        first, second = await _add(api, tenant, fake), await _add(api, tenant, fake)
        running = await patiently(api, "POST", f"/instances/{first}/sync", tenant, json={})
        assert running.status == 202, running.body
        refused = await patiently(api, "POST", f"/instances/{second}/sync", tenant, json={})
        assert refused.status == 429 and refused.error["code"] == "RATE_LIMITED", refused.body
        assert refused.headers["Retry-After"]
        assert (await api.get("/runs", tenant)).data["runs"][0]["run_id"] == \
            running.data["run_id"]  # the refused sync left no run behind
        mcp = await api.client.post("/execute", headers=tenant.headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "sources_sync", "arguments": {"source_id": second}}})
        assert "RATE_LIMITED" in await mcp.text()
        # Another tenant has its own share, and then the process's total is reached.
        theirs = await _add(api, other, fake)
        theirs_sync = await patiently(api, "POST", f"/instances/{theirs}/sync", other, json={})
        assert theirs_sync.status == 202
        third = await make_tenant()
        full = await api.post(f"/instances/{await _add(api, third, fake)}/sync", third, json={})
        assert full.status == 429 and "this server already runs" in full.error["message"]
        gate.set()
        await task_ended(api, tenant, running.data["task"]["task_id"])
        await asyncio.sleep(0.1)
        again = await patiently(api, "POST", f"/instances/{second}/sync", tenant, json={})
        assert again.status == 202, again.body
        await task_ended(api, tenant, again.data["task"]["task_id"])


# --- chart images, other tenants' tasks ------------------------------------------------------


async def test_a_chart_as_svg_carries_no_markup_of_the_tenant_and_runs_nothing(
        api: ApiClient, tenant, admin_conn) -> None:
    """Tool names in the audit log become the usage chart's legend: an SVG opened on its own
    is a document, so no text of the tenant may be markup in it, and its answer forbids script
    anyway."""
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO audit_log (tenant_id, key_id, actor, tool, arguments, outcome, "
            "duration_ms) VALUES ($1, $2, 'x', $3, '{}', 'ok', 5)",
            tenant.id, tenant.key_id, "t--><script>alert(3)</script><!--" + XSS)
    for chart in ("calls", "errors", "latency"):
        resp = await api.client.get(f"/api/v1/usage/charts/{chart}.svg?by=tool",
                                    headers=tenant.headers)
        assert resp.status == 200, chart
        svg = await resp.text()
        # Text is drawn as paths (svg.fonttype), each glyph run after a comment naming its
        # text: escaped, and a "-->" in it does not end the comment.
        assert "<script" not in svg and "<img" not in svg
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_another_tenants_sync_task_cannot_be_read_or_cancelled(
        api: ApiClient, serve_fake, make_tenant) -> None:
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary="One", status="To Do", updated=datetime(2025, 3, 1,
                                                                            tzinfo=UTC))
    app, gate = _gated(fake)
    await serve_fake(fake, app=app)
    victim, attacker = await make_tenant(), await make_tenant()
    instance_id = await _add(api, victim, fake)
    try:
        started = await patiently(api, "POST", f"/instances/{instance_id}/sync", victim, json={})
        task_id = started.data["task"]["task_id"]
        for method, path in (("GET", f"/tasks/{task_id}"), ("DELETE", f"/tasks/{task_id}"),
                             ("POST", f"/instances/{instance_id}/sync"),
                             ("GET", f"/instances/{instance_id}/runs"),
                             ("DELETE", f"/instances/{instance_id}")):
            resp = await patiently(api, method, path, attacker,
                                    **({"json": {}} if method == "POST" else {}))
            assert resp.status == 404, (method, path, resp.body)
        runs = await patiently(api, "GET", f"/runs?instance_id={instance_id}", attacker)
        assert runs.status in (200, 404) and task_id not in runs.text
        assert (await patiently(api, "GET", f"/tasks/{task_id}", victim)).data["status"] == \
            "working"
    finally:
        gate.set()
