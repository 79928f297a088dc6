"""The web console without a browser: headers, the session cookie's flags, CSRF, sign-out,
what a tenant admin's cookie cannot reach, and no secret in any page (issue 21)."""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest
from console_client import session_cookie, sign_in

from spiral_mcp.admin import operators
from spiral_mcp.config import load_settings
from spiral_mcp.db import init_connection
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.sources import manage
from spiral_mcp.sources.secrets import SecretBox
from tests.conftest import Tenant, TenantFactory

BOX = SecretBox(b"x" * 43 + b"=")
TENANT_PAGES = ("/admin", "/admin/keys", "/admin/sources", "/admin/projects", "/admin/usage",
                "/admin/audit")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def assert_page_headers(headers, *, cache: str = "no-store") -> None:
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with the
    # console's own posts, which the origin checks then refuse (seen in the browser test).
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cache-Control"] == cache


async def test_every_answer_carries_the_security_headers(client, tenant: Tenant) -> None:
    login = await client.get("/admin/login")
    assert login.status == 200
    assert_page_headers(login.headers)
    assert "text/html" in login.headers["Content-Type"]
    for name, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        static = await client.get(f"/admin/static/{name}")
        assert static.status == 200 and kind in static.headers["Content-Type"]
        assert_page_headers(static.headers, cache="no-cache")
    away = await client.get("/admin/keys", allow_redirects=False)
    assert away.status == 303 and away.headers["Location"].startswith("/admin/login")
    assert_page_headers(away.headers)
    user = await sign_in(client, tenant.key)
    slash = await client.get("/admin/", headers=user.cookies, allow_redirects=False)
    assert slash.status == 308 and slash.headers["Location"] == "/admin"
    for path in TENANT_PAGES:
        response = await client.get(path, headers=user.cookies, allow_redirects=False)
        assert response.status == 200, path
        assert_page_headers(response.headers)
        html = await response.text()
        # No inline script or style: the CSP would refuse it, so none may be needed.
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert "<style" not in html and " style=" not in html and " on" + "click=" not in html


async def test_a_page_without_a_session_leads_to_sign_in(client) -> None:
    for path in (*TENANT_PAGES, "/admin/tenants", f"/admin/sources/{uuid.uuid4()}"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/admin/login")
    forged = await client.get("/admin/keys", headers={"Cookie": "spiral_console=forged"},
                              allow_redirects=False)
    assert forged.status == 303
    first = await client.get("/admin", allow_redirects=False)
    assert first.headers["Location"] == "/admin/login"  # a first visit: no "session ended"


async def test_the_session_cookie_is_http_only_and_strict(client, tenant: Tenant) -> None:
    user = await sign_in(client, tenant.key)
    _, value, parsed = session_cookie(user.set_cookie)
    morsel = next(iter(parsed.values()))
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP here: a Secure cookie would never come back
    assert tenant.key not in user.set_cookie and value not in (tenant.key, "")


async def test_the_cookie_is_secure_when_the_request_came_as_https(client,
                                                                   tenant: Tenant) -> None:
    # As a TLS-terminating proxy in front says (X-Forwarded-Proto).
    user = await sign_in(client, tenant.key, **{"X-Forwarded-Proto": "https"})
    name, _, parsed = session_cookie(user.set_cookie)
    morsel = next(iter(parsed.values()))
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Strict"
    assert name.startswith("__Host-")


async def test_sign_in_refuses_what_is_not_an_admin_credential(
        client, make_tenant: TenantFactory) -> None:
    reader = await make_tenant(scopes=("read",))
    refused = await client.post("/admin/login", data={"credential": reader.key},
                                allow_redirects=False)
    assert refused.status == 403 and "lacks the admin scope" in await refused.text()
    assert "Set-Cookie" not in refused.headers
    for wrong in ("spk_" + "0" * 107, "nonsense", ""):
        answer = await client.post("/admin/login", data={"credential": wrong},
                                   allow_redirects=False)
        assert answer.status in (400, 401, 403) and "Set-Cookie" not in answer.headers
        assert "spk_000" not in await answer.text()  # never echoed


async def test_sign_in_from_another_origin_is_refused(client, tenant: Tenant) -> None:
    # A loopback page on another port passes the server's origin guard; it is still not the
    # console itself, so it cannot sign a browser in (login CSRF).
    answer = await client.post("/admin/login", data={"credential": tenant.key},
                               headers={"Origin": "http://127.0.0.1:9"}, allow_redirects=False)
    assert answer.status == 403 and "Set-Cookie" not in answer.headers


async def test_changes_need_the_sessions_csrf_token(client, tenant: Tenant) -> None:
    user = await sign_in(client, tenant.key)
    body = {"name": "from the console", "scopes": ["read"]}
    for csrf in (None, "not-the-token"):
        status, answer = await user.api("POST", "/keys", csrf=csrf, json=body)
        assert status == 403 and answer["success"] is False, (csrf, answer)
        assert "CSRF" in answer["error"]["message"] or "csrf" in answer["error"]["message"]
    status, answer = await user.api("POST", "/keys", json=body)
    assert status == 201, answer
    # Reads need no token; a cookie of another site's page cannot read (SameSite=Strict).
    status, _ = await user.api("GET", "/keys", csrf=None)
    assert status == 200


async def test_sign_out_needs_the_token_and_ends_the_session(client, tenant: Tenant) -> None:
    user = await sign_in(client, tenant.key)
    stale = await client.post("/admin/logout", data={"csrf_token": "wrong"},
                              headers=user.cookies, allow_redirects=False)
    assert stale.status == 403
    assert (await user.page("/admin/keys"))[0] == 200
    out = await client.post("/admin/logout", data={"csrf_token": user.csrf},
                            headers={**user.cookies, "Origin": user.origin()},
                            allow_redirects=False)
    assert out.status == 303 and out.headers["Location"].startswith("/admin/login")
    cleared = next(iter(session_cookie(out.headers["Set-Cookie"])[2].values()))
    assert cleared.value == "" and cleared.key == user.cookie_name
    # The session is over in the store, not only in this browser: the old cookie is nothing.
    status, _ = await user.page("/admin/keys")
    assert status == 303
    status, answer = await user.api("GET", "/keys", csrf=None)
    assert status == 401 and answer["success"] is False


async def test_revoking_the_key_ends_its_sessions(client, make_tenant: TenantFactory,
                                                  admin_conn, queries: Queries) -> None:
    owner = await make_tenant()
    user = await sign_in(client, owner.key)
    await queries.revoke_api_key(admin_conn, key_id=owner.key_id)
    status, _ = await user.page("/admin/keys")
    assert status == 303


async def test_a_tenant_admin_cannot_reach_operator_pages_or_routes(client,
                                                                    tenant: Tenant) -> None:
    user = await sign_in(client, tenant.key)
    status, html = await user.page("/admin/tenants")
    assert status == 403 and "for operators" in html
    status, answer = await user.api("GET", "/tenants", csrf=None)
    assert status == 403 and answer["error"]["code"] == "PERMISSION_DENIED"
    status, answer = await user.api("POST", "/tenants", json={"name": "mine now"})
    assert status == 403


async def add_source(admin_conn: asyncpg.Connection, queries: Queries,
                     tenant_id: uuid.UUID, token: str, *, name: str | None = None) -> uuid.UUID:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="jira",
            name=name or f"jira {uuid.uuid4().hex[:6]}", base_url="http://127.0.0.1:1/retired",
            projects={"ABC": "ABC"}, token=token)


async def test_another_tenants_objects_are_not_found(
        client, make_tenant: TenantFactory, admin_conn, queries: Queries) -> None:
    mine, theirs = await make_tenant(), await make_tenant(demo=True)
    their_source = await add_source(admin_conn, queries, theirs.id, "their-token",
                                    name="their-own-jira")
    user = await sign_in(client, mine.key)
    # Nothing of theirs on any of my pages.
    for path in TENANT_PAGES:
        status, html = await user.page(path)
        assert status == 200
        for theirs_only in (str(theirs.id), str(theirs.key_id), "their-own-jira",
                            str(their_source)):
            assert theirs_only not in html, (path, theirs_only)
    status, html = await user.page(f"/admin/sources/{their_source}")
    assert status == 404 and str(their_source) not in html
    for path in ("/admin/sources/not-a-uuid", "/admin/projects/NOPE"):
        assert (await user.page(path))[0] == 404
    # The demo projects (WEB, API, OPS) are theirs, not mine.
    status, html = await user.page("/admin/projects")
    assert status == 200 and "No projects yet" in html
    assert (await user.page("/admin/projects/WEB"))[0] == 404
    status, html = await user.page("/admin/sources")
    assert "their-token" not in html and str(their_source) not in html


async def test_no_secret_in_any_page_after_creation(client, tenant: Tenant, admin_conn,
                                                    queries: Queries) -> None:
    user = await sign_in(client, tenant.key)
    status, created = await user.api("POST", "/keys", json={"name": "agent",
                                                            "scopes": ["read", "write"]})
    assert status == 201
    secret = created["data"]["secret"]
    source_id = await add_source(admin_conn, queries, tenant.id, "jira-token-never-shown")
    pages = [*TENANT_PAGES, f"/admin/sources/{source_id}", "/admin/login"]
    for path in pages:
        status, html = await user.page(path)
        assert status == 200, path
        for hidden in (secret, tenant.key, user.cookie, "jira-token-never-shown"):
            assert hidden not in html, (path, hidden[:8])
    status, html = await user.page("/admin/keys")
    assert "agent" in html  # listed, without its secret


async def test_stored_values_are_escaped(client, make_tenant: TenantFactory) -> None:
    owner = await make_tenant()
    user = await sign_in(client, owner.key)
    status, _ = await user.api("POST", "/keys", json={
        "name": '<script src="/x.js"></script><img src=x onerror=alert(1)>', "scopes": ["read"]})
    assert status == 201
    status, html = await user.page("/admin/keys")
    assert '<script src="/x.js">' not in html and "<img src=x" not in html
    assert "&lt;script src=&#34;/x.js&#34;&gt;" in html


@pytest.mark.parametrize("path", ["/admin/static/../templates/base.html",
                                  "/admin/static/%2e%2e/signin.py"])
async def test_static_files_are_the_package_css_and_js_only(client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status in (403, 404)


@pytest.fixture
async def operator_client(aiohttp_client, database_urls):
    """The server with the operator path on (OPERATOR_API, the owner's pool)."""
    assert database_urls.admin is not None
    settings = load_settings(environ={
        "DATABASE_URL": database_urls.runtime, "ADMIN_DATABASE_URL": database_urls.admin,
        "OPERATOR_API": "on", "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1", "DB_POOL_MAX": "5"})
    return await aiohttp_client(create_app(settings, database_url=database_urls.runtime,
                                           owner_url=database_urls.admin))


async def test_an_operator_has_the_tenants_page_and_no_tenants_pages(
        operator_client, admin_conn, queries: Queries, tenant: Tenant) -> None:
    await init_connection(admin_conn)
    async with admin_conn.transaction():
        operator_id, secret = await operators.create_operator(
            admin_conn, queries, f"op-{uuid.uuid4().hex[:8]}")
    user = await sign_in(operator_client, secret)
    assert user.cookie.startswith("os_")
    status, html = await user.page("/admin/tenants")
    assert status == 200 and str(tenant.id) in html and secret not in html
    for path in TENANT_PAGES:
        response = await operator_client.get(path, headers=user.cookies,
                                             allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/admin/tenants"
    # Its changes need the session's token too.
    status, _ = await user.api("POST", "/tenants", csrf=None, json={"name": "no token"})
    assert status == 403
    status, created = await user.api("POST", "/tenants", json={"name": "with token"})
    assert status == 201, created
    # Sign-in and the page views are in the operator's own audit.
    actions = {row["action"] for row in await admin_conn.fetch(
        "SELECT action FROM operator_audit WHERE operator_id = $1", operator_id)}
    assert {"console.sign_in", "console.tenants", "tenants.create"} <= actions
    # Signed out, the operator's session is over.
    out = await operator_client.post("/admin/logout", data={"csrf_token": user.csrf},
                                     headers={**user.cookies, "Origin": user.origin()},
                                     allow_redirects=False)
    assert out.status == 303
    assert (await user.page("/admin/tenants"))[0] == 303
