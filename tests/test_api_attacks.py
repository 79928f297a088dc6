"""A hostile tenant (and a hostile web page) against /api/v1: every boundary the admin API draws,
tried from the wrong side. Each test is an attack that must fail; a finding that is still open
is marked xfail(strict=True) with its reason."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from api_fixtures import ApiClient, make_api
from conftest import make_settings
from test_api_sessions import ENDED, sign_in

from spiral_mcp import charts
from spiral_mcp.api import keys as api_keys
from spiral_mcp.api import sessions
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import CONSOLE_SESSIONS

ALL_SCOPES = ["read", "write", "query", "admin"]


def _origin(api: ApiClient) -> str:
    return f"http://{api.client.host}:{api.client.port}"


async def _raw(api: ApiClient, method: str, path: str, headers: dict[str, str],
               data: bytes | str | None = None) -> tuple[int, str]:
    """A request the checking client would refuse to build (raw paths, odd bodies)."""
    async with api.client.request(method, path, headers=headers, data=data,
                                  skip_auto_headers=("Content-Type",)) as resp:
        return resp.status, await resp.text()


# --- another tenant's objects ------------------------------------------------------------


async def test_another_tenants_key_is_exactly_as_missing_as_no_key(api: ApiClient, tenant,
                                                                   make_tenant) -> None:
    other = await make_tenant()
    ghost = uuid.uuid4()
    for method in ("GET", "DELETE"):
        theirs = await api.call(method, f"/keys/{other.key_id}", tenant)
        none = await api.call(method, f"/keys/{ghost}", tenant)
        assert theirs.status == none.status == 404
        assert theirs.error["message"] == f"no key with id {other.key_id}"
        assert none.error["message"] == f"no key with id {ghost}"
    # Spellings of the same id that uuid.UUID takes reach nothing of theirs either.
    for spelled in (str(other.key_id).upper(), other.key_id.hex, "{" + str(other.key_id) + "}",
                    f"urn:uuid:{other.key_id}"):
        assert (await api.delete(f"/keys/{spelled}", tenant)).status == 404
    # Their key still works.
    assert (await api.get("/keys", other)).status == 200


async def test_path_tricks_reach_no_other_route(api: ApiClient, tenant, make_tenant) -> None:
    other = await make_tenant()
    h = tenant.headers
    for path in (f"/api/v1/keys/{other.key_id}/", f"/api/v1/keys/%2F..%2F{other.key_id}",
                 f"/api/v1/keys/..%2F{other.key_id}",
                 "/API/V1/keys", "/api/v1//keys", "/api/v1/keys%2F", "/api/v1/tasks/",
                 "/api/v1/%2e%2e/mcp", "/api/v1/..%2Fexecute"):
        status, text = await _raw(api, "GET", path, h)
        assert status in (401, 404), (path, status, text)
        assert '"success":true' not in text.replace(" ", "")
    # MCP's door is not opened by a path under /api/v1 that normalises out of it.
    for path in ("/api/v1/../execute", "/api/v1/%2e%2e/execute", "/api/v1%2F..%2Fexecute"):
        status, _ = await _raw(api, "POST", path, {}, data=b"{}")
        assert status in (401, 404), (path, status)


async def test_another_tenants_audit_usage_tasks_and_projects_show_nothing(
        api: ApiClient, tenant, make_tenant) -> None:
    other = await make_tenant(demo=True)
    # Their key made calls: create a key so their audit log has rows with their key id.
    assert (await api.post("/keys", other, json={"name": "x", "scopes": ["read"]})).status == 201
    audit = await api.get(f"/audit?key_id={other.key_id}", tenant)
    assert audit.status == 200 and audit.data["items"] == []
    usage = await api.get(f"/usage?by=key&key_id={other.key_id}", tenant)
    assert usage.status == 200 and usage.data["series"] == []
    task = await api.get(f"/tasks/{uuid.uuid4()}", tenant)
    assert task.status == 404


# --- who may call ------------------------------------------------------------------------


async def test_without_the_admin_scope_every_route_is_refused(api: ApiClient,
                                                              make_tenant) -> None:
    reader = await make_tenant(scopes=("read", "write", "query"), demo=True)
    key = uuid.uuid4()
    for method, path in (("GET", "/keys"), ("POST", "/keys"), ("GET", f"/keys/{key}"),
                         ("DELETE", f"/keys/{key}"), ("GET", f"/tasks/{key}"),
                         ("DELETE", f"/tasks/{key}"), ("GET", "/audit"), ("GET", "/usage"),
                         ("GET", "/usage/charts/calls.png"), ("GET", "/projects"),
                         ("GET", "/projects/DEMO/flow"), ("GET", "/projects/DEMO/charts/cfd.svg")):
        resp = await api.call(method, path, reader,
                              json={"name": "up", "scopes": ALL_SCOPES} if method == "POST"
                              else None)
        assert resp.status == 403, (method, path, resp.body)
        assert resp.error["message"] == "this key lacks the admin scope"


async def test_a_key_cannot_create_a_key_for_another_tenant(api: ApiClient, tenant,
                                                            make_tenant) -> None:
    other = await make_tenant()
    for extra in ({"tenant_id": str(other.id)}, {"key_id": str(uuid.uuid4())},
                  {"key_hash": "00" * 32}):
        resp = await api.post("/keys", tenant, json={"name": "x", "scopes": ["read"], **extra})
        assert resp.status == 400, resp.body
    keys = (await api.get("/keys", other)).data["keys"]
    assert [k["key_id"] for k in keys] == [str(other.key_id)]


async def test_revoked_and_expired_keys_are_refused(api: ApiClient, tenant, admin_conn) -> None:
    made = await api.post("/keys", tenant, json={"name": "short", "scopes": ["admin"]})
    secret, key_id = made.data["secret"], made.data["key"]["key_id"]
    who = {"Authorization": f"Bearer {secret}"}
    assert (await api.get("/keys", who)).status == 200
    await admin_conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 s' "
                             "WHERE key_id = $1", uuid.UUID(key_id))
    assert (await api.get("/keys", who)).error["code"] == "INVALID_API_KEY"
    await api.delete(f"/keys/{key_id}", tenant)
    assert (await api.get("/keys", who)).error["code"] == "INVALID_API_KEY"


# --- console cookies ---------------------------------------------------------------------


async def test_forged_and_foreign_cookies_are_no_session(api: ApiClient, tenant,
                                                         make_tenant) -> None:
    other = await make_tenant()
    cookie, _, _ = await sign_in(api, tenant.key)
    secret = cookie[3 + 32:]
    forged = {
        "another tenant's id, this session's secret": f"cs_{other.id.hex}{secret}",
        "a random secret": f"cs_{tenant.id.hex}{'A' * 43}",
        "too long": cookie + "A",
        "an operator prefix": "os_" + cookie[3:],
        "not hex": "cs_" + "g" * 32 + secret,
    }
    for why, value in forged.items():
        resp = await api.get("/keys", {"Cookie": f"spiral_console={value}"})
        assert resp.status == 401 and resp.error == ENDED, why


async def test_a_session_ends_at_sign_out_for_reads_and_changes(api: ApiClient, tenant) -> None:
    cookie, header, csrf = await sign_in(api, tenant.key)
    await api.client.server.app[CONSOLE_SESSIONS].end(cookie)
    assert (await api.get("/keys", header)).status == 401
    resp = await api.post("/keys", {**header, "X-CSRF-Token": csrf, "Origin": _origin(api)},
                          json={"name": "late", "scopes": ["admin"]})
    assert resp.status == 401


# --- cross-site requests -----------------------------------------------------------------


async def test_csrf_every_forgery_is_refused(api: ApiClient, tenant, make_tenant) -> None:
    _, header, csrf = await sign_in(api, tenant.key)
    _, _, other_csrf = await sign_in(api, tenant.key)
    other = await make_tenant()
    _, _, foreign_csrf = await sign_in(api, other.key)
    body = {"name": "forged", "scopes": ALL_SCOPES}
    attempts = {
        "another session's token": {**header, "X-CSRF-Token": other_csrf},
        "another tenant's token": {**header, "X-CSRF-Token": foreign_csrf},
        "an empty token": {**header, "X-CSRF-Token": ""},
        "a prefix of the token": {**header, "X-CSRF-Token": csrf[:-1]},
        "Origin null": {**header, "X-CSRF-Token": csrf, "Origin": "null"},
        "another port of this host": {**header, "X-CSRF-Token": csrf,
                                      "Origin": f"http://{api.client.host}:1"},
        "the token in the query": {**header},
    }
    for why, headers in attempts.items():
        path = "/keys?csrf_token=" + csrf if why == "the token in the query" else "/keys"
        resp = await api.post(path, headers, json=body)
        assert resp.status == 403, (why, resp.body)
    # A form post a foreign page can make: text/plain or urlencoded, csrf_token as a field.
    for ctype, data in (("text/plain", '{"name": "x", "scopes": ["admin"]}'),
                        ("application/x-www-form-urlencoded", f"csrf_token={csrf}&name=x"),
                        ("multipart/form-data; boundary=b",
                         f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
                         f'{csrf}\r\n--b--\r\n')):
        status, text = await _raw(api, "POST", "/api/v1/keys",
                                  {**header, "Content-Type": ctype}, data=data)
        assert status == 403, (ctype, text)
    status, _ = await _raw(api, "DELETE", f"/api/v1/keys/{tenant.key_id}", header)
    assert status == 403
    names = [k["name"] for k in (await api.get("/keys", tenant)).data["keys"]]
    assert names == ["test key"]


async def test_no_get_changes_anything(api: ApiClient, tenant) -> None:
    """Every GET route is read-only: a page's <img src> cannot change state."""
    routes = [(path, ops) for path, ops in api.document["paths"].items()]
    for path, ops in routes:
        if "get" in ops and "{" not in path:
            await api.get(path, tenant)
    for method in ("GET", "HEAD"):
        status, _ = await _raw(api, method, f"/api/v1/keys/{tenant.key_id}?_method=DELETE",
                               tenant.headers)
        assert status in (200, 405)
    assert (await api.get(f"/keys/{tenant.key_id}", tenant)).data["state"] == "live"


# --- what answers and logs leak ----------------------------------------------------------


async def test_no_secret_or_hash_in_answers_logs_or_the_document(
        api: ApiClient, tenant, admin_conn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = await api.post("/keys", tenant, json={"name": "leak?", "scopes": ["read"]})
    secret = made.data["secret"]
    row = await admin_conn.fetchrow("SELECT key_hash FROM api_keys WHERE key_id = $1",
                                    uuid.UUID(made.data["key"]["key_id"]))
    digest = bytes(row["key_hash"]).hex()
    texts = [(await api.get("/keys", tenant)).text,
             (await api.get(f"/keys/{made.data['key']['key_id']}", tenant)).text,
             (await api.get("/audit", tenant)).text,
             (await api.get("/openapi.json")).text,
             # A refused secret is never said back.
             (await api.get("/keys", {"Authorization": f"Bearer {secret}"})).text,
             (await api.get("/keys", {"Authorization": f"Basic {secret}"})).text,
             (await api.get("/keys", {"Authorization": secret})).text]
    texts += [r.getMessage() + str(r.__dict__) for r in caplog.records]
    for text in texts:
        assert secret not in text and secret[4:] not in text and digest not in text
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        audit = await admin_conn.fetch("SELECT arguments::text, after::text FROM audit_log")
    for one in audit:
        assert secret not in str(one) and digest not in str(one)


@pytest.mark.parametrize("body", [
    {"name": "nul\u0000name", "scopes": ["read"]},
    {"name": "ok", "scopes": ["read"], "user": "nul\u0000user"},
    {"name": "ok", "scopes": ["read"], "expires_at": "9999-12-31T23:59:59-12:00"},
    {"name": "ok", "scopes": ["read"], "expires_at": "2030-01-01T00:00:00+23:59"},
])
async def test_odd_bodies_are_400_not_500(api: ApiClient, tenant, body) -> None:
    resp = await api.post("/keys", tenant, json=body)
    assert resp.status in (201, 400), resp.body
    assert "Traceback" not in resp.text and "asyncpg" not in resp.text


@pytest.mark.parametrize("path", [
    "/audit?tool=%00", "/usage?tool=%00", "/audit?since=9999-12-31T23:59:59-23:59",
    "/usage?bucket=day&until=9999-12-31T23:59:59-12:00",
    "/usage?since=0001-01-01T00:00:00%2B14:00&bucket=day",
    "/projects/DEMO%0A/flow", "/projects/DEMO/flow?since=0001-01-01&until=0001-12-31",
    "/projects/DEMO/flow?until=9999-12-31", "/audit?cursor=" + "A" * 1000,
    "/audit?limit=99999999999999999999999", "/audit?limit=-1",
])
async def test_odd_queries_are_4xx_not_500(api: ApiClient, tenant, path: str) -> None:
    resp = await api.get(path, tenant)
    assert resp.status < 500, resp.body


# --- resource abuse ----------------------------------------------------------------------


async def test_a_huge_body_is_refused_before_it_is_read(api: ApiClient, tenant) -> None:
    limit = api.client.server.app["settings"].max_body_bytes \
        if "settings" in api.client.server.app else 4 * 1024 * 1024
    resp = await api.post("/keys", tenant, data=b"{" + b" " * (limit + 10) + b"}",
                          headers={"Content-Type": "application/json"})
    assert resp.status == 413, resp.status


async def test_a_time_near_the_calendars_ends_is_named(api: ApiClient, tenant) -> None:
    resp = await api.get("/audit?since=9999-12-31T23:59:59-23:59", tenant)
    assert resp.status == 400 and resp.error["message"] == (
        "since must be between 1970 and 9000 (UTC), not '9999-12-31T23:59:59-23:59'")


async def test_the_admin_api_draws_on_the_keys_rate_limit(aiohttp_client, database_urls,
                                                          tenant) -> None:
    """Without a budget, one admin key could spend the server (keys, audit scans, charts)
    for every tenant; its calls draw on the key's read or write budget as its tool calls do."""
    settings = make_settings(database_urls, RATE_LIMIT_DEFAULT="3", RATE_LIMIT_WINDOW="60")
    api = await make_api(await aiohttp_client(create_app(
        settings, database_url=database_urls.runtime, explorer_url=database_urls.explorer)))
    for _ in range(3):
        assert (await api.get("/keys", tenant)).status == 200
    refused = await api.get("/keys", tenant)
    assert refused.status == 429 and refused.error["code"] == "RATE_LIMITED"
    assert refused.error["message"].startswith("rate limit for read calls reached; retry after")
    assert int(refused.headers["Retry-After"]) >= 1
    # Changes have their own budget, which the reads did not spend.
    for _ in range(3):
        assert (await api.post("/keys", tenant, json={"name": "k", "scopes": ["read"]})).status \
            == 201
    assert (await api.post("/keys", tenant, json={"name": "k", "scopes": ["read"]})).status \
        == 429
    # The public document is not behind a budget, nor is a refused credential counted.
    assert (await api.get("/openapi.json")).status == 200


async def test_a_flood_of_charts_neither_starves_the_server_nor_queues_without_end(
        api: ApiClient, tenant) -> None:
    """Charts are drawn one at a time; a tenant asking for many at once must not hold the
    event loop's default executor (DNS lookups of every outbound call wait on it), and what
    waits is bounded, per tenant and in all."""
    loop = asyncio.get_running_loop()
    flood = [asyncio.ensure_future(api.get("/projects/WEB/charts/lead_cycle.svg", tenant))
             for _ in range(12)]
    await asyncio.sleep(0.3)  # the renders are queued
    started = time.perf_counter()
    await loop.run_in_executor(None, lambda: None)
    waited = time.perf_counter() - started
    answers = await asyncio.gather(*flood)
    assert waited < 0.2, f"the default executor waited {waited:.2f} s behind the charts"
    assert {a.status for a in answers} <= {200, 429}


async def test_charts_waiting_are_bounded_per_owner_and_in_all() -> None:
    data = {"title": "t", "since": "s", "until": "u", "rows": []}
    first = [asyncio.ensure_future(charts.render_async("calls", data, fmt="svg", owner="a"))
             for _ in range(charts.MAX_WAITING_EACH + 2)]
    results = await asyncio.gather(*first, return_exceptions=True)
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(refused) == 2 and all(r.code == ErrorCode.RATE_LIMITED for r in refused)
    assert refused[0].message == ("too many charts are being drawn for this tenant; retry in "
                                  "a few seconds")
    owners = [f"o{i}" for i in range(charts.MAX_WAITING // charts.MAX_WAITING_EACH + 1)]
    many = [asyncio.ensure_future(charts.render_async("calls", data, fmt="svg", owner=o))
            for o in owners for _ in range(charts.MAX_WAITING_EACH)]
    results = await asyncio.gather(*many, return_exceptions=True)
    assert sum(isinstance(r, ServiceError) for r in results) == \
        len(many) - charts.MAX_WAITING
    # Nothing stays counted once drawn.
    assert isinstance(await charts.render_async("calls", data, fmt="svg", owner="a"), bytes)


async def test_live_keys_of_a_tenant_are_bounded(api: ApiClient, tenant, admin_conn) -> None:
    """Keys cost every request's lookup and the console's lists; an admin key in a loop must
    not mint them without end."""
    bound = api_keys.MAX_LIVE_KEYS
    # The tenant's key and bound - 2 others, made as the owner (fast), then one through the API.
    await admin_conn.execute(
        "INSERT INTO api_keys (tenant_id, name, key_hash, scopes) "
        "SELECT $1, 'bulk ' || i, sha256(gen_random_uuid()::text::bytea), ARRAY['read'] "
        "FROM generate_series(1, $2) AS i", tenant.id, bound - 2)
    last = await api.post("/keys", tenant, json={"name": "last", "scopes": ["read"]})
    assert last.status == 201
    over = await api.post("/keys", tenant, json={"name": "over", "scopes": ["admin"]})
    assert over.status == 409 and over.error["code"] == "CONFLICT"
    assert over.error["message"] == (
        f"this tenant has {bound} live keys, the most it may have; revoke one first")
    # Revoked and expired keys do not count.
    await api.delete(f"/keys/{last.data['key']['key_id']}", tenant)
    assert (await api.post("/keys", tenant, json={"name": "again", "scopes": ["read"]})).status \
        == 201


@pytest.mark.parametrize("body", [{"name": "operator:root"},
                                  {"name": "ci", "user": "Operator:alice"},
                                  {"name": " operator:root"}])
async def test_a_key_cannot_pose_as_an_operator_in_the_audit_log(api: ApiClient, tenant,
                                                                 body) -> None:
    """Audit rows name an operator's changes "operator:<name>"; a key's actor (its user, or
    its name) must not read the same."""
    resp = await api.post("/keys", tenant, json={"scopes": ["admin"], **body})
    assert resp.status == 400, resp.body
    assert resp.error["message"] == ("a key's name and user may not start with 'operator:', "
                                     "which the audit log keeps for operators")


async def test_sessions_of_a_key_are_bounded_the_oldest_ending(api: ApiClient, tenant,
                                                                admin_conn) -> None:
    """Every sign-in adds a session row; signing in in a loop must not add them without end."""
    bound = sessions.MAX_SESSIONS_PER_KEY
    made = [await sign_in(api, tenant.key) for _ in range(bound + 3)]
    async with admin_conn.transaction():  # forced row-level security binds the owner too
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        count = await admin_conn.fetchval("SELECT count(*) FROM console_sessions")
    assert count == bound
    assert (await api.get("/keys", made[0][1])).status == 401
    assert (await api.get("/keys", made[2][1])).status == 401
    assert (await api.get("/keys", made[3][1])).status == 200
    assert (await api.get("/keys", made[-1][1])).status == 200


async def test_answers_are_never_cached_nor_sniffed(api: ApiClient, tenant) -> None:
    """The 201 of a new key carries its secret, every other answer a tenant's data or a path
    the caller wrote: no cache keeps them, no browser reads them as anything but JSON."""
    made = await api.post("/keys", tenant, json={"name": "cached?", "scopes": ["read"]})
    answers = [made, await api.get("/keys", tenant),
               await api.get("/keys/<script>alert(1)</script>", tenant),
               await api.get("/keys")]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.status
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


# --- findings the lead decided (once strict xfails) ---------------------------------------


async def test_the_key_list_is_bounded(api: ApiClient, tenant, admin_conn) -> None:
    """An admin key may leave thousands of revoked keys behind: the list is live keys unless
    asked, in bounded pages."""
    await admin_conn.execute(
        "INSERT INTO api_keys (tenant_id, name, key_hash, scopes, revoked_at) "
        "SELECT $1, 'old ' || i, sha256(gen_random_uuid()::text::bytea), ARRAY['read'], now() "
        "FROM generate_series(1, 3000) AS i", tenant.id)
    listed = await api.get("/keys", tenant)
    assert listed.status == 200 and len(listed.data["keys"]) <= 1000
    assert all(key["state"] == "live" for key in listed.data["keys"])
    revoked = await api.get("/keys?state=revoked&limit=500", tenant)
    assert len(revoked.data["keys"]) == 500 and revoked.data["next_cursor"]
    too_many = await api.get("/keys?state=all&limit=501", tenant)
    assert too_many.status == 400


async def test_usage_series_are_bounded(api: ApiClient, tenant, admin_conn) -> None:
    """Keys minted and used in a loop: the busiest series, the rest summed into one that says
    how many it holds; the sum keeps every call."""
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO audit_log (tenant_id, key_id, tool, outcome, duration_ms, at) "
            "SELECT $1, gen_random_uuid(), 'sql_get_project_metrics', 'ok', 5, "
            "now() - interval '1 hour' FROM generate_series(1, 2000)", tenant.id)
    usage = await api.get("/usage?by=key", tenant)
    assert usage.status == 200 and len(usage.data["series"]) <= 100
    *busiest, other = usage.data["series"]
    assert len(busiest) == 19 and other["name"] == "other keys"
    assert other["folded"] == 2000 - 19 and other["p95_ms"] == [None] * len(other["calls"])
    assert sum(s["totals"]["calls"] for s in usage.data["series"]) == 2000
    assert usage.data["totals"]["calls"] == 2000
    chart = await api.client.get("/api/v1/usage/charts/calls.png?by=key",
                                 headers=tenant.headers)
    assert chart.status == 200


async def test_an_audit_page_is_bounded_whatever_the_calls_carried(api: ApiClient, tenant,
                                                                   admin_conn) -> None:
    """A tool call's arguments are audited as sent (refused ones too), up to MAX_BODY_BYTES
    each: 200 rows a page of megabyte arguments would be a 200 MB answer. Large arguments are
    shown by their size instead."""
    big = {"jql": "x" * 300_000}
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO audit_log (tenant_id, tool, outcome, arguments) "
            "SELECT $1, 'jira_search', 'error', $2::jsonb FROM generate_series(1, 3)",
            tenant.id, orjson.dumps(big).decode())
        await admin_conn.execute(
            "INSERT INTO audit_log (tenant_id, tool, outcome, arguments) "
            "VALUES ($1, 'jira_search', 'ok', '{\"jql\": \"project = WEB\"}')", tenant.id)
    page = await api.get("/audit?tool=jira_search", tenant)
    assert page.status == 200 and len(page.text) < 10_000
    small, *large = page.data["items"]
    assert small["arguments"] == {"jql": "project = WEB"}
    size = len(orjson.dumps(big)) + 1  # PostgreSQL's jsonb text puts a space after ':'
    assert [one["arguments"] for one in large] == [
        {"[too large to show]": f"{size} bytes"}] * 3


@pytest.mark.parametrize("body", [
    {"name": "x" * 500_000, "scopes": ["read"]},
    {"name": "x", "scopes": ["read"], **{f"k{i}" + "y" * 100: 1 for i in range(5000)}},
    {"name": "x", "scopes": [f"nope{i}" for i in range(20_000)]},
    [1] * 100_000,
])
async def test_a_refusal_does_not_echo_the_body_back(api: ApiClient, tenant, body) -> None:
    """A refused value is quoted in part: the answer neither multiplies a big body (message and
    details each held all of it) nor repeats more than a glimpse of what may be a secret."""
    resp = await api.post("/keys", tenant, json=body)
    assert resp.status == 400 and len(resp.text) < 8_000, len(resp.text)
    assert resp.error["message"].startswith("invalid body for POST /api/v1/keys: /")


async def test_a_key_cannot_outlive_the_key_that_made_it(api: ApiClient, tenant,
                                                         admin_conn) -> None:
    """An admin key that expires (a contractor's, for a week) mints keys that expire with it at
    the latest. It may make keys acting for any user of its tenant (README says so): the audit
    row names the contractor as their maker."""
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = await api.post("/keys", tenant, json={"name": "contractor", "scopes": ["admin"],
                                                 "user": "contractor@example.com",
                                                 "expires_at": soon})
    contractor = {"Authorization": f"Bearer {made.data['secret']}"}
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    beyond = await api.post("/keys", contractor, json={"name": "backdoor", "scopes": ["admin"],
                                                       "expires_at": later})
    assert beyond.status == 400
    assert "after" in beyond.error["message"] and "may not outlive" in beyond.error["message"]
    bounded = await api.post("/keys", contractor, json={"name": "helper", "scopes": ["admin"]})
    assert bounded.status == 201
    assert bounded.data["key"]["expires_at"] == made.data["key"]["expires_at"]
    assert "may not outlive" in bounded.data["note"]
    sooner = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    short = await api.post("/keys", contractor, json={"name": "short", "scopes": ["read"],
                                                      "expires_at": sooner})
    assert short.status == 201 and short.data["note"] is None
    posing = await api.post("/keys", contractor, json={"name": "ceo", "scopes": ["write"],
                                                       "user": "ceo@example.com"})
    assert posing.status == 201 and posing.data["key"]["user"] == "ceo@example.com"
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        maker = await admin_conn.fetchval(
            "SELECT actor FROM audit_log WHERE tool = 'admin:keys.create' "
            "AND after->>'key_id' = $1", str(posing.data["key"]["key_id"]))
    assert maker == "contractor@example.com"


async def test_credentials_do_not_mix(api: ApiClient, tenant, make_tenant) -> None:
    """A non-admin bearer key beside an admin's cookie is the key (refused), never the cookie;
    a cookie value sent as a bearer credential, or a key as the cookie, is nobody."""
    reader = await make_tenant(scopes=("read",))
    cookie, header, csrf = await sign_in(api, tenant.key)
    mixed = await api.get("/keys", {**header, **reader.headers})
    assert mixed.status == 403 and mixed.error["message"] == "this key lacks the admin scope"
    as_bearer = await api.get("/keys", {"Authorization": f"Bearer {cookie}"})
    assert as_bearer.status in (401, 403) and as_bearer.error["code"] != "PERMISSION_DENIED"
    as_cookie = await api.get("/keys", {"Cookie": f"spiral_console={tenant.key}"})
    assert as_cookie.status == 401
    as_csrf = await api.get("/keys", {"Authorization": f"Bearer {csrf}"})
    assert as_csrf.status in (401, 403)
    # The TLS cookie's name over plain HTTP is not the session cookie.
    tls = await api.get("/keys", {"Cookie": f"__Host-spiral_console={cookie}"})
    assert tls.status == 401
    # An Origin of this host on another scheme is another origin.
    other_scheme = await api.post("/keys", {**header, "X-CSRF-Token": csrf,
                                            "Origin": f"https://{api.client.host}:"
                                                      f"{api.client.port}"},
                                  json={"name": "x", "scopes": ["read"]})
    assert other_scheme.status == 403
