"""A hostile user, a hostile web page and a hostile second tenant against the console's OAuth
sign-in (real oidc-provider, as tests/test_console_oauth.py) and the key rules that go with
it. Each test is an attack that must fail; a finding still open is xfail(strict=True) with its
reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from http.cookies import SimpleCookie

import asyncpg
import pytest
from api_fixtures import ApiClient
from conftest import TenantFactory
from test_console_oauth import (
    PENDING,
    SESSION,
    ConsoleWorld,
    authorize,
    callback,
    console_world,
    cookies_of,
    forget_cookies,
    refused,
    signed_in,
    start,
)

from spiral_mcp.api.sessions import MAX_SESSIONS_PER_KEY
from spiral_mcp.oauth import bindings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries


@pytest.fixture
async def cworld(database_urls: DatabaseUrls, queries: Queries,
                 make_tenant: TenantFactory) -> AsyncIterator[ConsoleWorld]:
    async with console_world(database_urls, queries, make_tenant) as opened:
        yield opened


# --- the code flow --------------------------------------------------------------------------


async def test_two_sign_ins_cannot_swap_answers(cworld: ConsoleWorld) -> None:
    """Login CSRF: the attacker's own answer (code and state of the attacker's sign-in) put in
    front of a victim's browser, which holds its own pending sign-in, is refused; so is the
    victim's answer under the attacker's cookie."""
    victim = await start(cworld)
    attacker = await start(cworld)
    answer = await authorize(cworld, attacker, "carol")
    await refused(await callback(cworld, answer, victim.pending), 400, "state does not match")
    # The victim's own answer arriving at the attacker's browser is refused there too.
    mine = await authorize(cworld, victim, "alice")
    await refused(await callback(cworld, mine, attacker.pending), 400, "state does not match")
    # And a nonce swapped into the cookie (state and verifier kept) fails the ID token's check.
    again = await start(cworld)
    answer = await authorize(cworld, again, "alice")
    state, _, verifier = again.pending.split(".")
    other_nonce = attacker.pending.split(".")[1]
    await refused(await callback(cworld, answer, f"{state}.{other_nonce}.{verifier}"), 400,
                  "nonce")


async def test_the_callback_never_sends_the_browser_elsewhere(cworld: ConsoleWorld) -> None:
    """Open redirect: no parameter of the callback chooses where the browser goes next."""
    started = await start(cworld)
    answer = await authorize(cworld, started, "alice")
    response = await callback(cworld, {**answer, "next": "https://evil.example/",
                                       "redirect_uri": "https://evil.example/",
                                       "return_to": "//evil.example"}, started.pending)
    page = await response.text()
    assert response.status == 200 and "evil.example" not in page
    assert "Location" not in response.headers


async def test_the_pending_cookie_is_narrow_and_short(cworld: ConsoleWorld) -> None:
    response = await cworld.client.get("/admin/oauth/start", allow_redirects=False)
    morsel = cookies_of(response)[PENDING]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and not morsel["domain"]
    assert int(morsel["max-age"]) <= 600
    # A forged pending cookie without a matching answer gives nothing and is spent.
    forged = await callback(cworld, {"state": "a" * 43, "code": "x",
                                     "iss": cworld.provider.issuer}, f"{'a' * 43}.b.c")
    await refused(forged, 400, "refused the authorization code")
    assert cookies_of(forged)[PENDING].value == ""


async def test_a_long_lived_token_gives_no_longer_session_than_the_ttl(
        database_urls: DatabaseUrls, queries: Queries, make_tenant: TenantFactory) -> None:
    async with console_world(database_urls, queries, make_tenant,
                             CONSOLE_SESSION_TTL="60") as world:
        user = await signed_in(world, "alice")
        assert int(SimpleCookie(user.set_cookie)[SESSION]["max-age"]) <= 60
        # The row too, not only the cookie (a browser may keep a cookie past its max-age).
        conn = await asyncpg.connect(world.database_urls.admin)
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                   str(world.acme.id))
                lasts = await conn.fetchval(
                    "SELECT max(extract(epoch FROM expires_at - created_at)) "
                    "FROM console_sessions WHERE principal_id IS NOT NULL")
        finally:
            await conn.close()
        assert 0 < lasts <= 60


async def test_a_users_sessions_are_bounded(cworld: ConsoleWorld) -> None:
    """Signing in again and again as one user cannot grow the session table: the oldest end,
    as a key's do."""
    first = await signed_in(cworld, "carol")
    for _ in range(MAX_SESSIONS_PER_KEY):
        await signed_in(cworld, "carol")
    forget_cookies(cworld)  # the client's jar holds the newest session's cookie
    status, _ = await first.page("/admin")
    assert status == 303


async def test_a_user_cannot_pose_as_an_operator_in_the_audit_log(
        database_urls: DatabaseUrls, queries: Queries, make_tenant: TenantFactory) -> None:
    """A user claim reading 'operator:...' (an issuer where users pick their name) would make
    the user's changes read as an operator's in the tenant's audit log, which a key's name and
    user may not: such a claim names nobody, and the next claim (sub) is the user."""
    accounts = {"mallory": {"email": "operator:root@example.com", "org_id": "acme"}}
    async with console_world(database_urls, queries, make_tenant, accounts=accounts) as world:
        mallory = await signed_in(world, "mallory")
        status, created = await mallory.api("POST", "/keys",
                                            json={"name": "k", "scopes": ["read"]})
        assert status == 201, created
        status, audit = await mallory.api("GET", "/audit?tool=admin:keys.create")
        actor = audit["data"]["items"][0]["actor"]
        assert not actor.lower().startswith("operator:") and actor == "mallory", actor


# --- the session ----------------------------------------------------------------------------


async def test_an_oauth_admins_key_belongs_to_the_tenant_and_names_its_maker(
        cworld: ConsoleWorld) -> None:
    """Keys are the tenant's, not their maker's (README, Web console and admin API): a key an
    OAuth admin makes is not bound by the admin's short-lived token or binding, so it lives
    until its own expiry or revocation; the audit log names who made it, for the tenant's other
    admins to find and revoke the keys of a user who left."""
    alice = await signed_in(cworld, "alice")
    status, created = await alice.api("POST", "/keys",
                                      json={"name": "kept", "scopes": ["admin"]})
    assert status == 201, created
    assert created["data"]["key"]["expires_at"] is None
    status, audit = await alice.api("GET", "/audit?tool=admin:keys.create")
    assert status == 200, audit
    [row] = [r for r in audit["data"]["items"]
             if r["arguments"].get("name") == "kept"]
    assert row["actor"] == "alice@example.com", row


# --- key rules ------------------------------------------------------------------------------


async def test_a_far_west_time_zone_at_the_calendars_end_is_named(api: ApiClient,
                                                                  tenant) -> None:
    """expires_at 9999-12-31T23:59:59-14:00 is year 10000 in UTC: a 400 that says so, not a
    500."""
    for value in ("9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999-00:01"):
        made = await api.post("/keys", tenant, json={"name": "forever", "scopes": ["read"],
                                                     "expires_at": value})
        assert made.status == 400, made.data
        assert "expires_at" in made.error["message"]


async def test_expiry_spellings_cannot_outlive_the_maker(api: ApiClient, tenant) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    made = await api.post("/keys", tenant, json={"name": "contractor", "scopes": ["admin"],
                                                 "expires_at": soon.isoformat()})
    contractor = {"Authorization": f"Bearer {made.data['secret']}"}
    # A minute past the maker's expiry, spelt in a zone where the wall clock reads earlier,
    # and in ISO 8601's basic format.
    past = soon + timedelta(minutes=1)
    for value in (past.astimezone(timezone(timedelta(hours=-12))).isoformat(),
                  past.strftime("%Y%m%dT%H%M%S+0000")):
        beyond = await api.post("/keys", contractor, json={"name": "b", "scopes": ["read"],
                                                           "expires_at": value})
        assert beyond.status == 400, (value, beyond.data)


async def test_the_last_lasting_admin_key_is_kept(api: ApiClient, tenant) -> None:
    """An admin key expiring in an hour does not stand in for the one that never expires."""
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = await api.post("/keys", tenant, json={"name": "brief", "scopes": ["admin"],
                                                 "expires_at": soon})
    brief = {"Authorization": f"Bearer {made.data['secret']}"}
    revoked = await api.delete(f"/keys/{tenant.key_id}", brief)
    assert revoked.status == 409


async def test_a_binding_moved_to_another_tenant_ends_the_session(cworld: ConsoleWorld) -> None:
    """alice was an admin of acme through org_id=acme; the operator binds that claim to globex
    instead. Her acme session ends at once, and signing in again lands in globex, with none of
    acme's keys in sight."""
    alice = await signed_in(cworld, "alice")
    conn = await asyncpg.connect(cworld.database_urls.admin)
    try:
        await bindings.unbind(conn, cworld.queries, tenant_id=cworld.acme.id,
                              issuer=cworld.provider.issuer, claim="org_id", value="acme")
        await bindings.bind(conn, cworld.queries, tenant_id=cworld.globex.id,
                            issuer=cworld.provider.issuer, claim="org_id", value="acme")
    finally:
        await conn.close()
    forget_cookies(cworld)
    status, body = await alice.api("GET", "/keys")
    assert status == 401, body
    again = await signed_in(cworld, "alice")
    status, keys = await again.api("GET", "/keys")
    assert status == 200 and keys["tenant_id"] == str(cworld.globex.id)
    assert str(cworld.acme.key_id) not in str(keys)


async def test_an_oauth_admin_cannot_revoke_the_last_admin_key(cworld: ConsoleWorld) -> None:
    """Only OAuth admins would be left: the rule holds for them as for a key (an issuer's
    outage or a binding removed would leave nobody who can manage the tenant)."""
    alice = await signed_in(cworld, "alice")
    status, body = await alice.api("DELETE", f"/keys/{cworld.acme.key_id}")
    assert status == 409 and "last admin key" in body["error"]["message"], body


async def test_a_key_revoking_itself(api: ApiClient, tenant) -> None:
    """The last admin key cannot revoke itself; with another admin key it can, and is then
    nobody."""
    alone = await api.delete(f"/keys/{tenant.key_id}", tenant)
    assert alone.status == 409
    made = await api.post("/keys", tenant, json={"name": "second", "scopes": ["admin"]})
    second = {"Authorization": f"Bearer {made.data['secret']}"}
    gone = await api.delete(f"/keys/{made.data['key']['key_id']}", second)
    assert gone.status == 200 and gone.data["state"] == "revoked"
    after = await api.get("/keys", second)
    assert after.status == 403 and after.error["code"] == "INVALID_API_KEY"


async def test_two_admin_keys_revoking_each_other_at_once_leave_one(api: ApiClient,
                                                                    tenant) -> None:
    made = await api.post("/keys", tenant, json={"name": "second", "scopes": ["admin"]})
    second = {"Authorization": f"Bearer {made.data['secret']}"}
    results = await asyncio.gather(
        api.delete(f"/keys/{made.data['key']['key_id']}", tenant),
        api.delete(f"/keys/{tenant.key_id}", second))
    assert sorted(result.status for result in results) in ([200, 403], [200, 409]), \
        [result.data for result in results]
