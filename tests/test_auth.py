"""Authentication and the request guards, over real HTTP against a real database.

The product has no protected route of its own yet, so each app here gets a tiny ``/whoami`` that
answers with the principal the middleware attached.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spiral_mcp import admin
from spiral_mcp.auth import Authenticator, new_key
from spiral_mcp.config import load_settings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import AUTHENTICATOR, DATABASE, PRINCIPAL, SESSIONS

# A wrong key's answer: 403, its own message, and no challenge (a 401 would send clients such as
# mcp-remote into an OAuth flow instead of showing the message).
NOT_VALID = {"code": "INVALID_API_KEY",
             "message": "the API key is not valid: it is unknown, revoked or expired; an "
                        "operator creates a new one with spiral-mcp apikey create"}


async def assert_not_valid(resp) -> None:
    assert resp.status == 403 and "WWW-Authenticate" not in resp.headers
    assert (await resp.json())["error"] == NOT_VALID

Serve = Callable[..., Awaitable[TestClient]]


async def whoami(request: web.Request) -> web.Response:
    await request.read()  # reading is where aiohttp enforces client_max_size
    principal = request[PRINCIPAL]
    return web.json_response({
        "tenant_id": str(principal.tenant_id),
        "key_id": str(principal.key_id),
        "key_name": principal.key_name,
        "scopes": sorted(principal.scopes),
        "user": principal.user,
    })


@pytest.fixture
def serve(aiohttp_client, database_urls: DatabaseUrls) -> Serve:
    """``await serve(AUTH_CACHE_TTL="1")``: the app with ``/whoami``, on a real loopback socket."""

    async def start(**env: str) -> TestClient:
        settings = load_settings(environ={
            "DATABASE_URL": database_urls.runtime, "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1",
            "DB_POOL_MAX": "5", **env,
        })
        app = create_app(settings, database_url=database_urls.runtime)
        app.router.add_route("*", "/whoami", whoami)
        return await aiohttp_client(app)

    return start


async def _create_key(
    conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID, *,
    scopes: tuple[str, ...] = ("read",), user: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    async with conn.transaction():
        return await admin.create_api_key(
            conn, queries, tenant_id=tenant_id, name="auth test", scopes=list(scopes), user=user,
            expires_at=expires_at)


async def _revoke(conn: asyncpg.Connection, queries: Queries, key_id: uuid.UUID) -> None:
    async with conn.transaction():
        await admin.revoke_api_key(conn, queries, key_id)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_valid_key_is_the_principal(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    client = await serve()
    tenant = await make_tenant()
    key_id, secret = await _create_key(admin_conn, queries, tenant.id, scopes=("query", "read"),
                                       user="ana@example.com")
    resp = await client.get("/whoami", headers=_bearer(secret))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "tenant_id": str(tenant.id), "key_id": str(key_id), "key_name": "auth test",
        "scopes": ["query", "read"], "user": "ana@example.com",
    }
    # The scheme is case-insensitive (RFC 9110); a key without a user acts for nobody.
    resp = await client.get("/whoami", headers={"Authorization": f"bearer {tenant.key}"})
    assert resp.status == 200
    body = await resp.json()
    assert body["key_id"] == str(tenant.key_id) and body["user"] == "tester@example.com"
    assert body["scopes"] == ["admin", "query", "read", "write"]
    _, anonymous = await _create_key(admin_conn, queries, tenant.id)
    resp = await client.get("/whoami", headers=_bearer(anonymous))
    assert (await resp.json())["user"] is None


KEY_SENT = "spk_" + "0" * 64 + "k" * 43  # a key's shape; sent in place of the scheme


@pytest.mark.parametrize(("header", "says"), [
    (None, "an API key is required: Authorization: Bearer <key>"),
    ("Basic dXNlcjpwYXNz", "the Authorization scheme must be Bearer: Authorization: Bearer <key>"),
    ("Bearer", "the API key is missing after Bearer: Authorization: Bearer <key>"),
    ("Bearer   ", "the API key is missing after Bearer: Authorization: Bearer <key>"),
    ("Token x", "the Authorization scheme must be Bearer: Authorization: Bearer <key>"),
    (KEY_SENT, "the Authorization header has no scheme: send the key as "
               "Authorization: Bearer <key>"),
], ids=["none", "basic", "bearer-alone", "bearer-blank", "token", "key-without-bearer"])
async def test_no_bearer_key_is_401_saying_what_is_missing(
    serve: Serve, header: str | None, says: str
) -> None:
    client = await serve()
    resp = await client.get("/whoami", headers={"Authorization": header} if header else {})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="spiral-mcp"'
    error = (await resp.json())["error"]
    assert error == {"code": "UNAUTHENTICATED", "message": says}
    assert KEY_SENT not in await resp.text()  # a key sent wrongly is never echoed


async def test_every_invalid_key_gets_the_same_answer(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    """Unknown, wrong secret, revoked, expired: one status, one body, so an answer never tells
    whether a key or tenant exists. A key of the wrong form is told what is wrong with its form
    (which says nothing of anyone's keys), and a credential that is no key at all that this
    server takes only keys."""
    client = await serve()
    tenant = await make_tenant()
    other = await make_tenant()
    revoked_id, revoked = await _create_key(admin_conn, queries, tenant.id)
    await _revoke(admin_conn, queries, revoked_id)
    _, expired = await _create_key(admin_conn, queries, tenant.id,
                                   expires_at=datetime.now(UTC) - timedelta(seconds=1))
    real = tenant.key
    body_of_real = real[len("spk_") + 64:]
    cases = {
        "unknown tenant": new_key(uuid.uuid4()).secret,
        "real tenant, unknown key id": new_key(tenant.id).secret,
        "wrong secret for a real key id": real[:-43] + new_key(tenant.id).secret[-43:],
        "real key under another tenant": f"spk_{other.id.hex}{tenant.key_id.hex}{body_of_real}",
        "revoked": revoked,
        "expired": expired,
    }
    answers: dict[str, tuple[int, str | None, bytes]] = {}
    for case, secret in cases.items():
        resp = await client.get("/whoami", headers=_bearer(secret))
        answers[case] = (resp.status, resp.headers.get("WWW-Authenticate"), await resp.read())
    first = answers["unknown tenant"]
    assert first[0] == 403 and first[1] is None
    assert orjson.loads(first[2])["error"] == NOT_VALID
    assert {case: answer for case, answer in answers.items() if answer != first} == {}

    malformed = {
        "short": (real[:-1], "it has 110 characters where a key has 111; copy it whole"),
        "long": (real + "A", "it has 112 characters where a key has 111; copy it whole"),
        "ids not hex": ("spk_" + "z" * 64 + body_of_real,
                        "its tenant and key ids are not hexadecimal"),
    }
    for case, (secret, says) in malformed.items():
        resp = await client.get("/whoami", headers=_bearer(secret))
        assert resp.status == 403 and "WWW-Authenticate" not in resp.headers, case
        error = (await resp.json())["error"]
        assert error["code"] == "INVALID_API_KEY", case
        assert error["message"].startswith(f"the API key is malformed: {says}"), case
        assert secret not in await resp.text()
    for not_a_key in ("hello", "spx_" + real[4:]):
        resp = await client.get("/whoami", headers=_bearer(not_a_key))
        assert resp.status == 403 and "WWW-Authenticate" not in resp.headers
        assert (await resp.json())["error"] == {
            "code": "INVALID_API_KEY",
            "message": "this server takes API keys (spk_...) and OAuth is not configured, so "
                       "it cannot check this credential; an operator creates a key with "
                       "spiral-mcp apikey create"}
    # The real key still works: the refusals above were about the keys, not the server.
    assert (await client.get("/whoami", headers=tenant.headers)).status == 200


async def test_revocation_is_immediate_without_a_cache(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    client = await serve(AUTH_CACHE_TTL="0")
    tenant = await make_tenant()
    assert (await client.get("/whoami", headers=tenant.headers)).status == 200
    await _revoke(admin_conn, queries, tenant.key_id)
    await assert_not_valid(await client.get("/whoami", headers=tenant.headers))


async def test_revocation_takes_effect_within_the_cache_ttl(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    ttl = 1.0
    client = await serve(AUTH_CACHE_TTL=str(ttl))
    tenant = await make_tenant()
    started = time.monotonic()
    assert (await client.get("/whoami", headers=tenant.headers)).status == 200  # now cached
    await _revoke(admin_conn, queries, tenant.key_id)
    # Within the TTL the verified row is trusted: that is what the cache is for.
    assert (await client.get("/whoami", headers=tenant.headers)).status == 200
    while (await client.get("/whoami", headers=tenant.headers)).status == 200:
        assert time.monotonic() - started < ttl + 2.0, "revoked key still accepted"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= ttl


async def test_last_used_is_written_by_the_flush_not_per_request(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection
) -> None:
    client = await serve()
    tenant = await make_tenant()

    async def last_used() -> datetime | None:
        # The owner sees every tenant's key rows (policy owner_admin).
        return await admin_conn.fetchval(
            "SELECT last_used_at FROM api_keys WHERE key_id = $1", tenant.key_id)

    before = datetime.now(UTC)
    for _ in range(3):
        assert (await client.get("/whoami", headers=tenant.headers)).status == 200
    assert await last_used() is None
    await client.app[AUTHENTICATOR].flush_last_used()
    used = await last_used()
    assert used is not None and before <= used <= datetime.now(UTC)
    # A refused key is not "used".
    unknown = new_key(tenant.id).secret
    await assert_not_valid(await client.get("/whoami", headers=_bearer(unknown)))
    await client.app[AUTHENTICATOR].flush_last_used()
    assert await last_used() == used


@pytest.mark.parametrize("origin", [
    "https://evil.example", "null", "http://localhost.evil.example",
    "http://127.0.0.1.nip.io:8055", "file://", "chrome-extension://abcdef",
])
async def test_a_foreign_origin_is_403(serve: Serve, make_tenant, origin: str) -> None:
    client = await serve()
    tenant = await make_tenant()
    resp = await client.get("/whoami", headers={**tenant.headers, "Origin": origin})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "FORBIDDEN_ORIGIN"
    # Checked before authentication: a keyless cross-site probe learns nothing more.
    resp = await client.get("/whoami", headers={"Origin": origin})
    assert resp.status == 403


@pytest.mark.parametrize("origin", [
    "http://localhost:6274", "https://localhost", "http://127.0.0.1:3000", "http://[::1]:8080",
])
async def test_a_loopback_origin_is_allowed(serve: Serve, make_tenant, origin: str) -> None:
    client = await serve()
    tenant = await make_tenant()
    resp = await client.get("/whoami", headers={**tenant.headers, "Origin": origin})
    assert resp.status == 200, await resp.text()


async def test_allowed_origins_admits_exactly_those(serve: Serve, make_tenant) -> None:
    client = await serve(ALLOWED_ORIGINS="https://app.example.com, https://ops.example.com")
    tenant = await make_tenant()
    for origin, status in [("https://app.example.com", 200), ("https://ops.example.com", 200),
                           ("https://app.example.com:8443", 403), ("http://app.example.com", 403),
                           ("https://evil.example", 403)]:
        resp = await client.get("/whoami", headers={**tenant.headers, "Origin": origin})
        assert resp.status == status, origin


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:8055", "10.1.2.3"])
async def test_a_foreign_host_header_is_403_on_a_loopback_bind(
    serve: Serve, make_tenant, host: str
) -> None:
    """DNS rebinding: a foreign name resolving to 127.0.0.1 arrives with its own Host."""
    client = await serve(HOST="127.0.0.1")
    tenant = await make_tenant()
    resp = await client.get("/whoami", headers={**tenant.headers, "Host": host})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "FORBIDDEN_HOST"
    for loopback in ("localhost:8055", "127.0.0.1", "[::1]:8055"):
        resp = await client.get("/whoami", headers={**tenant.headers, "Host": loopback})
        assert resp.status == 200, loopback


async def test_any_host_header_is_served_when_bound_to_all_interfaces(
    serve: Serve, make_tenant
) -> None:
    client = await serve(HOST="0.0.0.0")  # noqa: S104 - the setting under test, not a bind
    tenant = await make_tenant()
    resp = await client.get("/whoami", headers={**tenant.headers, "Host": "spiral.example.com"})
    assert resp.status == 200


async def test_a_body_over_max_body_bytes_is_413(serve: Serve, make_tenant) -> None:
    client = await serve(MAX_BODY_BYTES="1024")
    tenant = await make_tenant()
    resp = await client.post("/whoami", data=b"x" * 1024, headers=tenant.headers)
    assert resp.status == 200
    resp = await client.post("/whoami", data=b"x" * 1025, headers=tenant.headers)
    assert resp.status == 413


async def test_keys_in_use_stay_cached_through_a_flood_of_made_up_ones(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    client = await serve()
    tenant = await make_tenant()
    authenticator = Authenticator(client.app[DATABASE], cache_ttl=60, cache_size=3)
    flood = [new_key(tenant.id).secret for _ in range(4)]
    assert await authenticator.authenticate(tenant.key) is not None
    for made_up in flood[:2]:
        assert await authenticator.authenticate(made_up) is None
    assert await authenticator.authenticate(tenant.key) is not None  # in use: most recent now
    # Revoked meanwhile: a cached key is still trusted (the TTL's promise), a looked-up one not.
    await _revoke(admin_conn, queries, tenant.key_id)
    for made_up in flood[2:]:
        assert await authenticator.authenticate(made_up) is None
    assert await authenticator.authenticate(tenant.key) is not None, "the flood pushed it out"


async def _open_streams(client: TestClient, secret: str) -> dict[str, Any]:
    """A legacy SSE stream (GET /sse, its endpoint event read) and a streamable-HTTP session
    with its GET stream, both opened with ``secret``; and the session's id."""
    bearer = _bearer(secret)
    sse = await client.get("/sse", headers={**bearer, "Accept": "text/event-stream"})
    assert sse.status == 200
    assert (await asyncio.wait_for(sse.content.readline(), 5)).startswith(b"event: endpoint")
    mcp_headers = {**bearer, "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json"}
    init = await client.post("/mcp", headers=mcp_headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}})
    assert init.status == 200
    sid = init.headers["Mcp-Session-Id"]
    session_headers = {**mcp_headers, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    assert (await client.post("/mcp", headers=session_headers, json={
        "jsonrpc": "2.0", "method": "notifications/initialized"})).status == 202
    stream = await client.get("/mcp", headers={**session_headers, "Accept": "text/event-stream"})
    assert stream.status == 200
    return {"sse": sse, "mcp": stream, "sid": sid, "headers": session_headers}


async def _ended(response: Any, *, within: float) -> float:
    """Seconds until the server ends an SSE response (pings aside), or a failure after
    ``within``."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while await response.content.readline():
            pass
    return time.monotonic() - started


@pytest.mark.parametrize("ending", ["revoked", "expired"])
async def test_a_revoked_or_expired_keys_streams_end_within_the_cache_ttl(
    serve: Serve, make_tenant, admin_conn: asyncpg.Connection, queries: Queries, ending: str
) -> None:
    """POST /messages was refused after revocation while GET /sse lived on, so a client waiting
    on it (the SDK) waited forever. Now the streams of a key no longer valid end, legacy SSE and
    streamable HTTP alike, and the streamable session with them."""
    ttl = 1.0
    client = await serve(AUTH_CACHE_TTL=str(ttl))
    tenant = await make_tenant()
    key_id, secret = await _create_key(
        admin_conn, queries, tenant.id, scopes=("read",),
        expires_at=datetime.now(UTC) + timedelta(seconds=2) if ending == "expired" else None)
    doomed = await _open_streams(client, secret)
    kept = await _open_streams(client, tenant.key)  # another key of the tenant: untouched
    sessions = client.app[SESSIONS]
    assert sessions.count("streamable") == 2 and sessions.count("sse") == 2

    if ending == "revoked":
        await _revoke(admin_conn, queries, key_id)
        within = ttl + 2.0  # the cached row is trusted for the TTL, then the stream ends
    else:
        within = 2.0 + 2.0  # no cache makes an expired key live longer
    for name in ("sse", "mcp"):
        assert await _ended(doomed[name], within=within) <= within
    # The streamable session ended with its stream; the key's requests are refused.
    assert await sessions.get(doomed["sid"], key_id, tenant_id=tenant.id,
                              transport="streamable") is None
    assert sessions.count("streamable") == 1 and sessions.count("sse") == 1
    await assert_not_valid(await client.post("/mcp", headers=doomed["headers"], json={
        "jsonrpc": "2.0", "id": 1, "method": "ping"}))

    # The other key's streams still flow.
    session = await sessions.get(kept["sid"], tenant.key_id, tenant_id=tenant.id,
                                 transport="streamable")
    assert session is not None
    session.post({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "data": "still here"}})
    async with asyncio.timeout(5):
        while b"still here" not in await kept["mcp"].content.readline():
            pass
    for response in (kept["sse"], kept["mcp"]):
        response.close()
