"""The console's session cookie on /api/v1: what it may do, CSRF on every change, and when it
ends (sign-out, idle, its key revoked)."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from api_fixtures import ApiClient

from spiral_mcp.api.auth import AdminPrincipal, request_admin
from spiral_mcp.api.sessions import clear_session_cookie, cookie_name, set_session_cookie
from spiral_mcp.errors import ServiceError
from spiral_mcp.server.keys import AUTHENTICATOR, CONSOLE_SESSIONS

ENDED = {"code": "UNAUTHENTICATED",
         "message": "the console session has ended (signed out, expired, its key revoked or "
                    "its OAuth sign-in no longer bound to the tenant); sign in again at "
                    "/admin/login",
         "details": [], "retry_after": None}


async def sign_in(api: ApiClient, secret: str) -> tuple[str, dict[str, str], str]:
    """A console session of the key ``secret``: (cookie value, its Cookie header, CSRF token)."""
    app = api.client.server.app
    principal = await app[AUTHENTICATOR].authenticate(secret)
    assert principal is not None
    cookie, csrf = await app[CONSOLE_SESSIONS].create(AdminPrincipal.tenant_admin(principal))
    return cookie, {"Cookie": f"spiral_console={cookie}"}, csrf


async def test_the_cookie_reads_and_changes_with_its_csrf_token(api: ApiClient, tenant) -> None:
    _, cookie, csrf = await sign_in(api, tenant.key)
    listed = await api.get("/keys", cookie)
    assert listed.status == 200 and listed.body["tenant_id"] == str(tenant.id)
    origin = f"http://{api.client.host}:{api.client.port}"
    created = await api.post("/keys", {**cookie, "X-CSRF-Token": csrf, "Origin": origin},
                             json={"name": "from the console", "scopes": ["read"]})
    assert created.status == 201, created.body


async def test_a_change_without_the_right_csrf_token_is_refused(api: ApiClient, tenant) -> None:
    _, cookie, csrf = await sign_in(api, tenant.key)
    body = {"name": "forged", "scopes": ["admin"]}
    missing = await api.post("/keys", cookie, json=body)
    assert missing.status == 403 and missing.error["code"] == "PERMISSION_DENIED"
    assert missing.error["message"] == (
        "the CSRF token is missing: send the session's token in the X-CSRF-Token header (or "
        "the form field csrf_token)")
    wrong = await api.post("/keys", {**cookie, "X-CSRF-Token": csrf[::-1]}, json=body)
    assert wrong.status == 403 and wrong.error["message"] == (
        "the CSRF token does not match this session; reload the page and try again")
    # Another loopback origin passes the server's origin guard, not the session's check.
    other = await api.post("/keys", {**cookie, "X-CSRF-Token": csrf,
                                     "Origin": "http://localhost:1"}, json=body)
    assert other.status == 403 and other.error["message"] == (
        "cross-origin request refused: Origin 'http://localhost:1' is not this server")
    foreign = await api.post("/keys", {**cookie, "X-CSRF-Token": csrf,
                                       "Origin": "https://evil.example"}, json=body)
    assert foreign.status == 403 and foreign.error["code"] == "FORBIDDEN_ORIGIN"
    revoke = await api.delete(f"/keys/{tenant.key_id}", cookie)
    assert revoke.status == 403
    names = [k["name"] for k in (await api.get("/keys", cookie)).data["keys"]]
    assert names == ["test key"]


async def test_a_bearer_credential_needs_no_csrf_token(api: ApiClient, tenant) -> None:
    # The Authorization header wins over a cookie sent with it.
    _, cookie, _ = await sign_in(api, tenant.key)
    resp = await api.post("/keys", {**cookie, **tenant.headers},
                          json={"name": "scripted", "scopes": ["read"]})
    assert resp.status == 201


async def test_revoking_the_key_ends_its_sessions_at_once(api: ApiClient, tenant) -> None:
    second = await api.post("/keys", tenant, json={"name": "console", "scopes": ["admin"]})
    _, cookie, _ = await sign_in(api, second.data["secret"])
    assert (await api.get("/keys", cookie)).status == 200
    await api.delete(f"/keys/{second.data['key']['key_id']}", tenant)
    ended = await api.get("/keys", cookie)
    assert ended.status == 401 and ended.error == ENDED


async def test_sign_out_and_idle_end_a_session(api: ApiClient, tenant,
                                               admin_conn: asyncpg.Connection) -> None:
    sessions = api.client.server.app[CONSOLE_SESSIONS]
    value, cookie, _ = await sign_in(api, tenant.key)
    await sessions.end(value)
    assert await sessions.find(value) is None
    assert (await api.get("/keys", cookie)).error == ENDED

    value, cookie, _ = await sign_in(api, tenant.key)
    assert (await sessions.find(value)).key_id == tenant.key_id
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute("UPDATE console_sessions SET last_seen_at = now() - "
                                 "make_interval(secs => $1 + 1)", sessions.idle)
    assert (await api.get("/keys", cookie)).error == ENDED


async def test_a_session_sees_only_its_own_tenant(api: ApiClient, make_tenant) -> None:
    a = await make_tenant(name="tenant A")
    b = await make_tenant(name="tenant B")
    _, cookie, _ = await sign_in(api, a.key)
    resp = await api.get(f"/keys/{b.key_id}", cookie)
    assert resp.status == 404 and resp.error["message"] == f"no key with id {b.key_id}"


async def test_made_up_cookies_are_refused(api: ApiClient, tenant) -> None:
    value, _, _ = await sign_in(api, tenant.key)
    for forged in ("cs_nothing", value[:-1] + ("A" if value[-1] != "A" else "B"),
                   "cs_" + "0" * 32 + value[35:]):
        resp = await api.get("/keys", {"Cookie": f"spiral_console={forged}"})
        assert resp.error == ENDED, forged


def test_the_cookie_is_httponly_strict_and_secure_over_tls() -> None:
    plain = make_mocked_request("GET", "/admin")
    response = web.Response()
    set_session_cookie(response, plain, "cs_x", max_age=60)
    header = response.cookies.output(header="")
    assert header.strip().startswith("spiral_console=cs_x;")
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Secure" not in header

    tls = make_mocked_request("GET", "/admin", sslcontext=True)
    assert cookie_name(tls) == "__Host-spiral_console"
    response = web.Response()
    set_session_cookie(response, tls, "cs_x", max_age=60)
    header = response.cookies.output(header="")
    assert header.strip().startswith("__Host-spiral_console=cs_x;") and "Secure" in header
    assert "Domain" not in header
    response = web.Response()
    clear_session_cookie(response, tls)
    assert "Max-Age=0" in response.cookies.output()


async def test_a_console_form_passes_its_csrf_field(api: ApiClient, tenant) -> None:
    """What the console's own routes check (a form post to /admin/logout, say)."""
    _, cookie, csrf = await sign_in(api, tenant.key)
    app = api.client.server.app
    request = make_mocked_request("POST", "/admin/logout", headers=cookie, app=app)
    admin = await request_admin(request, form_token=csrf)
    assert admin.tenant_id == tenant.id and admin.session.csrf_token == csrf
    with pytest.raises(ServiceError, match="does not match this session"):
        await request_admin(request, form_token="forged")
