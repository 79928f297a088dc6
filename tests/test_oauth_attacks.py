"""Attacks on the OAuth boundary (issue 19) that once got through, and the few defences nothing
else pins down: over real HTTP against the real app, real issuers (tests/fake_issuer.py) and
real PostgreSQL, with the helpers of tests/test_oauth_http.py."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.oauth import bindings
from spiral_mcp.queries import Queries
from spiral_mcp.server.keys import SESSIONS
from tests.conftest import Tenant
from tests.fake_issuer import FakeIssuer, SigningKey
from tests.test_auth import _ended, _open_streams
from tests.test_oauth_http import (
    TASKS,
    Serve,
    authors,
    bearer,
    execute,
    idps,  # noqa: F401  (a fixture)
    orgs,  # noqa: F401  (a fixture)
    result_of,
    rpc_body,
    serve,  # noqa: F401  (a fixture)
    stateless,
    user,
)


async def test_unbinding_ends_the_open_streams_of_its_tokens_within_the_cache_ttl(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant],  # noqa: F811
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    """A stream opened with a token was checked against the token's exp only, so once the
    operator unbound its issuer (or claim value) the stream went on hearing the tenant's
    notifications until the token expired, where a revoked API key's streams end within
    AUTH_CACHE_TTL."""
    ttl = 1.0
    client = await serve(AUTH_CACHE_TTL=str(ttl))
    globex = orgs["globex"]
    ada = user(idps[0], globex, org="globex", exp=int(time.time()) + 600)
    kept = user(idps[0], orgs["acme"], org="acme", exp=int(time.time()) + 600)
    doomed, untouched = await _open_streams(client, ada.key), await _open_streams(client, kept.key)
    await bindings.unbind(admin_conn, queries, tenant_id=globex.id, issuer=idps[0].url,
                          claim="org", value="globex")
    within = ttl + 2.0
    for name in ("sse", "mcp"):
        assert await _ended(doomed[name], within=within) <= within
    assert await client.app[SESSIONS].get(doomed["sid"], ada.key_id, tenant_id=globex.id,
                                          transport="streamable") is None
    # The other tenant's binding still holds, and so do its streams.
    assert not untouched["sse"].content.at_eof() and not untouched["mcp"].content.at_eof()
    assert await client.app[SESSIONS].get(untouched["sid"], kept.key_id, tenant_id=orgs["acme"].id,
                                          transport="streamable") is not None


@pytest.mark.parametrize("mapping", ["admin=spiral:write", "write=spiral:read",
                                     "read=mcp:read,write=mcp:read"])
def test_a_scope_map_granting_two_scopes_with_one_token_scope_is_refused(mapping: str) -> None:
    """Only the scopes written in OAUTH_SCOPE_MAP were compared, not the defaults filling in the
    rest: admin=spiral:write passed, and every token holding spiral:write was given admin."""
    with pytest.raises(ConfigError, match=r"^OAUTH_SCOPE_MAP: two scopes are mapped to the "
                                          r"same token scope"):
        load_settings(environ={"OAUTH_SCOPE_MAP": mapping})


async def test_an_unverified_email_does_not_name_the_user(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:  # noqa: F811
    """The first of OAUTH_USER_CLAIMS present named the user, so a user who set someone else's
    address as their (unverified) email at the issuer wrote comments, issues and audit rows as
    that person, and currentUser() found that person's issues."""
    client = await serve()
    acme = orgs["acme"]
    mallory = user(idps[0], acme, org="acme", sub="mallory", email="ada@acme.example",
                   email_verified=False)
    for body, who in (("as whom?", mallory),
                      ("verified", user(idps[0], acme, org="acme", sub="ada",
                                        email="ada@acme.example", email_verified=True))):
        written = await result_of(await execute(
            client, who, "tools/call", name="jira_add_comment",
            arguments={"issue_key": "WEB-1", "body": body}))
        assert written["structuredContent"]["success"] is True, written
    found = await authors(client, mallory)
    assert found["as whom?"] == "mallory" and found["verified"] == "ada@acme.example"


async def test_unbinding_stops_the_running_tasks_of_its_tokens(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant],  # noqa: F811
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    """The heartbeat stopped a task once its token's exp had passed, never on an unbinding, so
    a task went on acting in a tenant its user no longer reached ("a task never goes on with
    rights a request could no longer use")."""
    client = await serve(AUTH_CACHE_TTL="1")
    globex = orgs["globex"]
    binding = {"tenant_id": globex.id, "issuer": idps[0].url, "claim": "org", "value": "globex"}
    ada = user(idps[0], globex, org="globex", exp=int(time.time()) + 600)
    created = await result_of(await stateless(client, ada, "tools/call", capabilities=TASKS,
                                              name="slow_compute", arguments={"seconds": 60}))
    await bindings.unbind(admin_conn, queries, **binding)
    await asyncio.sleep(1 + 1.5)  # the cache TTL, and a few heartbeats
    # Bound again, the user finds the task stopped.
    await bindings.bind(admin_conn, queries, **binding)
    task = await result_of(await stateless(client, user(idps[0], globex, org="globex"),
                                           "tasks/get", capabilities=TASKS,
                                           taskId=created["taskId"]))
    assert task["status"] == "failed", task
    assert task["error"]["message"].startswith(
        "the user who created this task no longer acts in this tenant")


async def test_an_expiry_past_any_date_is_refused_not_a_failure_later(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:  # noqa: F811
    """PyJWT takes any number as exp: a token of exp 1e30 was accepted, and a task it started
    failed as an internal error (no date holds it) with a traceback in the log."""
    client = await serve()
    huge = user(idps[0], orgs["acme"], org="acme", exp=10**30)
    response = await stateless(client, huge, "tools/call", capabilities=TASKS,
                               name="slow_compute", arguments={"seconds": 1})
    assert response.status == 401
    assert (await response.json())["error"]["message"] == "the token is malformed"


async def test_keys_named_or_carried_by_the_token_itself_are_never_used(
        serve: Serve, idps: list[FakeIssuer], orgs: dict[str, Tenant]) -> None:  # noqa: F811
    """Held: jwk, jku and x5u headers (RFC 7515) would let a token bring its own key; only the
    keys its issuer publishes verify it, and nothing a header names is fetched."""
    client = await serve()
    trusted, attacker = idps
    forged_key = SigningKey.rsa()
    headers = {"jwk": forged_key.jwk(), "jku": f"{attacker.base}/keys",
               "x5u": f"{attacker.base}/keys"}
    attacker.keys = attacker.published = [forged_key]
    for kid in (forged_key.kid, trusted.keys[0].kid):
        token = trusted.token(key=SigningKey(kid, "RS256", forged_key.private), headers=headers,
                              org="acme")
        response = await client.post("/execute", json=rpc_body("ping"), headers=bearer(token))
        assert response.status == 401
    assert attacker.requests["/keys"] == 0
