"""Signing in to the console with OAuth, against a real OpenID provider (npm's oidc-provider):
the console is the provider's client in the authorization code flow with PKCE; the test plays
the browser (it follows the redirects, signs in at the provider's forms, and carries the
cookies by hand, as tests/console_client.py does). Without Node.js these tests are skipped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import ClientResponse
from browser import Browser
from conftest import Tenant, TenantFactory
from console_client import ConsoleUser, csrf_token_of
from oauth_serving import USERS, OAuthApp, bind, free_port, serve_oauth_app, unbind_orgs
from oidc_provider import OidcProvider, start_provider

from spiral_mcp import migrate
from spiral_mcp.oauth import bindings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries

PENDING = "spiral_console_oauth"
SESSION = "spiral_console"


@dataclass(frozen=True)
class ConsoleWorld:
    """A provider, the product with the console registered as its client, and two tenants
    bound to the provider's org_id claim: acme (alice, bob) and globex (carol)."""

    provider: OidcProvider
    app: OAuthApp
    acme: Tenant
    globex: Tenant
    database_urls: DatabaseUrls
    queries: Queries

    @property
    def client(self):
        return self.app.client


@contextlib.asynccontextmanager
async def console_world(database_urls: DatabaseUrls, queries: Queries,
                        make_tenant: TenantFactory, *, host: str = "127.0.0.1",
                        confidential: bool = False, accounts: dict[str, Any] | None = None,
                        **env: str) -> AsyncIterator[ConsoleWorld]:
    """``host`` names the product in OAUTH_RESOURCE (and so in the console's redirect URI);
    ``confidential``: the console is registered with a client secret (HTTP Basic at the token
    endpoint), else as a public client; ``accounts``: the provider's users (USERS)."""
    acme = await make_tenant(demo=True, name="acme")
    globex = await make_tenant(name="globex")
    async with start_provider(accounts=accounts or USERS) as provider:
        port = free_port()
        registered = await provider.register_client(
            redirect_uris=[f"http://{host}:{port}/admin/oauth/callback"],
            grant_types=["authorization_code"], client_name="spiral-mcp console",
            **({"token_endpoint_auth_method": "client_secret_basic",
                "application_type": "web"} if confidential else {}))
        if confidential:
            env["CONSOLE_OAUTH_CLIENT_SECRET"] = registered["client_secret"]
        async with serve_oauth_app(database_urls, issuers=[provider.issuer], port=port,
                                   host=host, CONSOLE_OAUTH_CLIENT_ID=registered["client_id"],
                                   OAUTH_JWKS_MIN_REFRESH="1", **env) as app:
            orgs = [(acme.id, "acme"), (globex.id, "globex")]
            for tenant_id, org in orgs:
                await bind(database_urls, queries, tenant_id=tenant_id,
                           issuer=provider.issuer, claim="org_id", value=org)
            try:
                yield ConsoleWorld(provider, app, acme, globex, database_urls, queries)
            finally:
                await unbind_orgs(database_urls, queries, provider.issuer, orgs)


@pytest.fixture
async def cworld(database_urls: DatabaseUrls, queries: Queries,
                 make_tenant: TenantFactory) -> AsyncIterator[ConsoleWorld]:
    async with console_world(database_urls, queries, make_tenant) as opened:
        yield opened


def cookies_of(response: ClientResponse) -> dict[str, Any]:
    """The cookies a response sets, by name (morsels: value, flags)."""
    found: dict[str, Any] = {}
    for header in response.headers.getall("Set-Cookie", []):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        found.update(parsed.items())
    return found


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**query_of(url), **changes})))


@dataclass
class Started:
    """A sign-in started at /admin/oauth/start: where the browser was sent and its cookie."""

    authorize_url: str
    pending: str


def forget_cookies(world: ConsoleWorld) -> None:
    """The test client's own jar would send what it kept: each request here carries exactly
    the cookies the test gives it."""
    world.client.session.cookie_jar.clear()


async def start(world: ConsoleWorld) -> Started:
    forget_cookies(world)
    response = await world.client.get("/admin/oauth/start", allow_redirects=False)
    assert response.status == 303, await response.text()
    morsel = cookies_of(response)[PENDING]
    # Lax, not Strict: the provider's redirect back is a top-level cross-site navigation.
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert 0 < int(morsel["max-age"]) <= 600
    return Started(response.headers["Location"], morsel.value)


async def callback(world: ConsoleWorld, answer: dict[str, str], pending: str | None
                   ) -> ClientResponse:
    headers = {"Cookie": f"{PENDING}={pending}"} if pending is not None else {}
    forget_cookies(world)
    return await world.client.get("/admin/oauth/callback?" + urlencode(answer), headers=headers,
                                  allow_redirects=False)


async def authorize(world: ConsoleWorld, started: Started, login: str, **changes: str
                    ) -> dict[str, str]:
    """The provider's answer to the authorization request (``changes`` made to it first, as a
    user agent could), the user signed in afresh."""
    world.provider.sign_out()
    url = with_query(started.authorize_url, **changes) if changes else started.authorize_url
    return await world.provider.authorize(url, login=login)


async def refused(response: ClientResponse, status: int, words: str) -> None:
    page = await response.text()
    assert response.status == status, page
    assert "OAuth sign-in refused" in page and words in page, page
    assert SESSION not in cookies_of(response)


async def signed_in(world: ConsoleWorld, login: str = "alice") -> ConsoleUser:
    started = await start(world)
    response = await callback(world, await authorize(world, started, login), started.pending)
    page = await response.text()
    assert response.status == 200, page
    assert 'http-equiv="refresh"' in page and "/admin" in page
    set_cookies = cookies_of(response)
    session = set_cookies[SESSION]
    assert session["httponly"] and session["samesite"] == "Strict"
    assert set_cookies[PENDING].value == ""  # the pending sign-in is spent
    home = await world.client.get("/admin", headers={"Cookie": f"{SESSION}={session.value}"},
                                  allow_redirects=False)
    assert home.status == 200
    html = await home.text()
    return ConsoleUser(world.client, SESSION, session.value, csrf_token_of(html),
                       session.OutputString())


async def test_the_sign_in_page_offers_the_issuer(cworld: ConsoleWorld) -> None:
    page = await (await cworld.client.get("/admin/login")).text()
    host = urlsplit(cworld.provider.issuer).netloc
    assert f"Sign in with {host}" in page and 'href="/admin/oauth/start"' in page


async def test_the_authorization_request_asks_as_it_must(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    asked = query_of(started.authorize_url)
    assert started.authorize_url.startswith(cworld.provider.metadata["authorization_endpoint"])
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["resource"] == cworld.app.resource
    assert asked["redirect_uri"] == str(cworld.client.make_url("/admin/oauth/callback"))
    assert set(asked["scope"].split()) == {"openid", "spiral:admin"}
    state, nonce, verifier = started.pending.split(".")
    assert asked["state"] == state and asked["nonce"] == nonce
    assert verifier not in started.authorize_url  # the PKCE verifier stays in the cookie


async def test_an_admin_user_signs_in_reaches_pages_and_makes_a_change(
        cworld: ConsoleWorld) -> None:
    user = await signed_in(cworld, "alice")
    for path in ("/admin", "/admin/keys", "/admin/sources", "/admin/audit", "/admin/usage"):
        status, html = await user.page(path)
        assert status == 200, path
        assert "alice@example.com" in html
    status, created = await user.api("POST", "/keys", json={"name": "agent", "scopes": ["read"]})
    assert status == 201, created
    assert created["tenant_id"] == str(cworld.acme.id)
    # Without the CSRF token the same change is refused.
    status, body = await user.api("POST", "/keys", csrf=None,
                                  json={"name": "agent-2", "scopes": ["read"]})
    assert status == 403 and "CSRF" in body["error"]["message"]
    # The change is the user's in the audit log.
    status, audit = await user.api("GET", "/audit?tool=admin:keys.create")
    assert status == 200 and audit["data"]["items"][0]["actor"] == "alice@example.com"


async def test_the_session_ends_no_later_than_the_token(cworld: ConsoleWorld) -> None:
    user = await signed_in(cworld, "bob")
    max_age = int(SimpleCookie(user.set_cookie)[SESSION]["max-age"])
    assert 0 < max_age <= 300  # the provider's access tokens live 300 s; the TTL is 12 h


async def test_a_user_without_admin_is_refused_with_the_reason(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    # The user grants less than the console asked for.
    answer = await authorize(cworld, started, "alice", scope="openid spiral:read")
    response = await callback(cworld, answer, started.pending)
    await refused(response, 403, "lacks the admin scope (spiral:admin)")


async def test_a_state_mismatch_is_refused(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice")
    await refused(await callback(cworld, {**answer, "state": "x" * 43}, started.pending), 400,
                  "state does not match")
    # No cookie at all: a callback this browser never started.
    await refused(await callback(cworld, answer, None), 400, "not started in this browser")


async def test_an_answer_of_another_issuer_or_a_refusal_is_refused(
        cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice")
    await refused(await callback(cworld, {**answer, "iss": "https://other.example.com"},
                                 started.pending), 400, "from another issuer")
    unnamed = {name: value for name, value in answer.items() if name != "iss"}
    await refused(await callback(cworld, unnamed, started.pending), 400,
                  "does not name its issuer")
    started = await start(cworld)
    denied = {"error": "access_denied", "error_description": "the user said no",
              "state": started.pending.split(".")[0], "iss": cworld.provider.issuer}
    await refused(await callback(cworld, denied, started.pending), 400,
                  "the issuer did not sign you in: the user said no")


async def test_a_confidential_client_signs_in_with_its_secret(
        database_urls: DatabaseUrls, queries: Queries, make_tenant: TenantFactory) -> None:
    async with console_world(database_urls, queries, make_tenant,
                             confidential=True) as world:
        user = await signed_in(world, "carol")
        status, keys = await user.api("GET", "/keys")
        assert status == 200 and keys["tenant_id"] == str(world.globex.id)


async def test_without_the_setting_no_oauth_sign_in_is_offered(client) -> None:
    page = await (await client.get("/admin/login")).text()
    assert "/admin/oauth/start" not in page and "oauth-sign-in" not in page
    for path in ("/admin/oauth/start", "/admin/oauth/callback?code=x&state=y"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 404
        assert "not configured on this server (CONSOLE_OAUTH_CLIENT_ID)" in await response.text()


async def test_a_replayed_code_is_refused(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice")
    first = await callback(cworld, answer, started.pending)
    assert first.status == 200
    # The same callback again, cookie and all (a replay): the provider has spent the code.
    await refused(await callback(cworld, answer, started.pending), 400,
                  "refused the authorization code")


async def test_a_wrong_or_missing_pkce_verifier_is_refused(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice")
    state, nonce, _ = started.pending.split(".")
    await refused(await callback(cworld, answer, f"{state}.{nonce}"), 400,
                  "not started in this browser")
    await refused(await callback(cworld, answer, f"{state}.{nonce}.{'v' * 86}"), 400,
                  "refused the authorization code")


async def test_a_token_for_another_audience_is_refused(cworld: ConsoleWorld) -> None:
    # The provider writes another audience into the token than the resource asked for: the
    # console's token is verified as /mcp's are, so it is refused.
    await cworld.provider.reconfigure(audiences={cworld.app.resource: "http://127.0.0.1:1/mcp"})
    started = await start(cworld)
    response = await callback(cworld, await authorize(cworld, started, "alice"),
                              started.pending)
    await refused(response, 403, "the token was issued for another resource")
    # A request naming another resource than the console asked for: its code buys no token.
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice", resource="http://127.0.0.1:1/mcp")
    await refused(await callback(cworld, answer, started.pending), 400,
                  "refused the authorization code")


async def test_a_user_of_no_bound_tenant_is_refused(cworld: ConsoleWorld) -> None:
    started = await start(cworld)
    response = await callback(cworld, await authorize(cworld, started, "dave"), started.pending)
    await refused(response, 403, "no tenant is bound to this token")


async def _owner(world: ConsoleWorld) -> asyncpg.Connection:
    assert world.database_urls.admin is not None
    return await asyncpg.connect(world.database_urls.admin)


async def test_the_session_ends_when_the_binding_goes(cworld: ConsoleWorld) -> None:
    user = await signed_in(cworld, "alice")
    conn = await _owner(cworld)
    try:
        await bindings.unbind(conn, cworld.queries, tenant_id=cworld.acme.id,
                              issuer=cworld.provider.issuer, claim="org_id", value="acme")
    finally:
        await conn.close()
    status, _ = await user.page("/admin/keys")
    assert status == 303
    status, body = await user.api("GET", "/keys")
    assert status == 401, body
    started = await start(cworld)
    response = await callback(cworld, await authorize(cworld, started, "alice"), started.pending)
    await refused(response, 403, "no tenant is bound to this token")


async def test_the_session_ends_when_the_tenant_is_suspended(cworld: ConsoleWorld) -> None:
    user = await signed_in(cworld, "carol")
    conn = await _owner(cworld)
    try:
        await conn.execute("UPDATE tenants SET suspended_at = now() WHERE tenant_id = $1",
                           cworld.globex.id)
        status, _ = await user.page("/admin")
        assert status == 303
    finally:
        await conn.execute("UPDATE tenants SET suspended_at = NULL WHERE tenant_id = $1",
                           cworld.globex.id)
        await conn.close()


async def test_sign_out_ends_the_session(cworld: ConsoleWorld) -> None:
    user = await signed_in(cworld, "alice")
    response = await cworld.client.post(
        "/admin/logout", data={"csrf_token": user.csrf},
        headers={**user.cookies, "Origin": user.origin()}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].endswith("ended=1")
    status, _ = await user.page("/admin")
    assert status == 303


async def test_an_oauth_admin_cannot_reach_another_tenant(cworld: ConsoleWorld) -> None:
    alice = await signed_in(cworld, "alice")
    status, body = await alice.api("GET", f"/keys/{cworld.globex.key_id}")
    assert status == 404, body
    status, _ = await alice.page(f"/admin/sources/{cworld.globex.key_id}")
    assert status == 404
    status, body = await alice.api("GET", "/tenants")
    assert status == 403
    carol = await signed_in(cworld, "carol")
    status, keys = await carol.api("GET", "/keys")
    assert status == 200 and keys["tenant_id"] == str(cworld.globex.id)
    assert str(cworld.acme.key_id) not in str(keys)


@pytest.mark.slow
async def test_the_oauth_walk_in_a_browser(database_urls: DatabaseUrls, queries: Queries,
                                           make_tenant: TenantFactory, browser) -> None:
    """Chromium signs in through the provider's own pages. The product is named localhost, the
    provider 127.0.0.1: two sites, so the return from the provider is a cross-site navigation,
    as with a real issuer (the pre-sign-in cookie must be Lax, and the Strict session cookie
    must be in place after the callback's own page moves on)."""
    async with console_world(database_urls, queries, make_tenant, host="localhost") as world:
        base = world.app.resource.removesuffix("/mcp")
        page: Browser = browser(base)
        await page.get("/admin/login")
        await page.find("#oauth-sign-in")
        await page.screenshot("oauth-01-sign-in")
        await page.click("#oauth-sign-in")
        # The provider's own sign-in and consent pages (oidc-provider's devInteractions).
        await page.type("input[name=login]", "alice")
        await page.type("input[name=password]", "any")
        await page.click("button[type=submit]")
        await page.click("button[type=submit]")
        await page.wait_for_path("/admin")
        assert "alice@example.com" in await page.page_source()
        await page.screenshot("oauth-02-home")
        assert await page.page_problems() == []
        names = {cookie["name"]: cookie for cookie in await page.cookies()}
        assert names[SESSION]["sameSite"] == "Strict" and names[SESSION]["httpOnly"]
        assert PENDING not in names
        # Sign out from the page's own button.
        await page.click("form[action='/admin/logout'] button")
        await page.wait_for_path("/admin/login")


async def test_migration_0021_rolls_back_with_users_sessions_in_place(
        fresh_database: str) -> None:
    """Rolling 0021 back ends the users' sessions (a session needs a key again) and keeps the
    keys' ones; applied again, both kinds can be written."""
    await asyncio.to_thread(migrate.apply, fresh_database)
    assert migrate.head_ids()[-1] == "0021_console_oauth"
    conn = await asyncpg.connect(fresh_database)
    try:
        tenant_id = await conn.fetchval(
            "INSERT INTO tenants (name) VALUES ('t') RETURNING tenant_id")
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            key_id = await conn.fetchval(
                "INSERT INTO api_keys (tenant_id, name, key_hash, scopes) "
                "VALUES ($1, 'k', $2, '{admin}') RETURNING key_id", tenant_id, b"k" * 32)
            await conn.execute(
                "INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, key_id, "
                "expires_at) VALUES ($1, $2, $3, $4, now() + interval '1 hour')",
                tenant_id, b"a" * 32, "c" * 43, key_id)
            await conn.execute(
                "INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, "
                "principal_id, oauth_issuer, oauth_subject, oauth_claims, scopes, expires_at) "
                "VALUES ($1, $2, $3, gen_random_uuid(), 'https://i', 'u', '{}', '{admin}', "
                "now() + interval '1 hour')", tenant_id, b"b" * 32, "c" * 43)
    finally:
        await conn.close()
    assert await asyncio.to_thread(migrate.rollback, fresh_database) == ("0021_console_oauth",)
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            left = await conn.fetch("SELECT session_hash FROM console_sessions")
        assert [row["session_hash"] for row in left] == [b"a" * 32]
    finally:
        await conn.close()
    assert await asyncio.to_thread(migrate.apply, fresh_database) == ("0021_console_oauth",)
