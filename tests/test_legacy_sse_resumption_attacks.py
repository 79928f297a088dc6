"""Hostile and unlucky resumptions of 2024-11-05 GET /sse streams (Last-Event-ID
``<session>/<entry>``), and a GET /mcp stream taken over on its own process, with sessions shared
through Redis: a real `spiral-mcp serve` process and a Redis of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from conftest import Tenant
from faults import OwnRedis
from test_shared_sessions_failover import STREAM, _headers, _ready, _rpc, _session
from test_shutdown import _free_port, _serve
from test_transports import read_event

from spiral_mcp import admin

pytestmark = pytest.mark.slow


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    if not OwnRedis.available():
        pytest.skip("redis-server is not installed")
    own = OwnRedis(tmp_path)
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
async def server(database_urls, redis_server: OwnRedis) -> AsyncIterator[str]:
    """One server process on a Redis of its own (a revoked key seen within a second); no
    traceback in its log when it is done."""
    port = _free_port()
    process = await _serve(database_urls, port, REDIS_URL=redis_server.url, AUTH_CACHE_TTL="1")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _ready(http, base)
        yield base
    finally:
        process.kill()
        await process.wait()
    assert process.stderr is not None
    assert b"Traceback" not in await process.stderr.read()


async def _legacy(http: aiohttp.ClientSession, base: str,
                  tenant: Tenant) -> tuple[aiohttp.ClientResponse, dict[str, str]]:
    stream = await http.get(f"{base}/sse", headers={**tenant.headers, "Accept": STREAM})
    assert stream.status == 200
    return stream, await read_event(stream, timeout=30)


async def _initialize(http: aiohttp.ClientSession, base: str, tenant: Tenant,
                      endpoint: str) -> int:
    sent = await http.post(f"{base}{endpoint}", data=_rpc(
        0, "initialize", protocolVersion="2024-11-05", capabilities={},
        clientInfo={"name": "t", "version": "1"}),
        headers={**tenant.headers, "Content-Type": "application/json"})
    return sent.status


async def test_a_legacy_stream_resumed_on_the_same_process_survives_its_old_connection(
        server: str, make_tenant) -> None:
    """The client resumes on the very process that still serves its old connection (one
    process, or a balancer sending it back): when the old connection closes, the session
    must go on with the resumed stream, not be ended by the old one's close."""
    tenant = await make_tenant(demo=True)
    async with aiohttp.ClientSession() as http:
        old, endpoint_event = await _legacy(http, server, tenant)
        resumed = await http.get(f"{server}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": endpoint_event["id"]})
        assert resumed.status == 200
        assert (await read_event(resumed, timeout=30))["data"] == endpoint_event["data"]
        old.close()
        await asyncio.sleep(2.5)  # the process notices the old client gone (1 s reads)

        assert await _initialize(http, server, tenant, endpoint_event["data"]) == 202
        answered = await read_event(resumed, timeout=30)
        assert orjson.loads(answered["data"])["id"] == 0
        # The resumed stream still holds the session: its client leaving ends it.
        resumed.close()
        await asyncio.sleep(2.5)
        assert await _initialize(http, server, tenant, endpoint_event["data"]) == 404


async def test_crafted_last_event_ids_reach_no_other_session_and_break_nothing(
        server: str, make_tenant, admin_conn: asyncpg.Connection, queries: Any) -> None:
    """Another tenant's or another key's legacy session, the caller's own streamable session,
    and ids the server never sends: refused (404, 400) without touching any session."""
    tenant = await make_tenant(demo=True)
    stranger = await make_tenant(demo=True)
    async with admin_conn.transaction():
        key_id, secret = await admin.create_api_key(admin_conn, queries, tenant_id=tenant.id,
                                                    name="second", scopes=["read"])
    colleague = Tenant(tenant.id, secret, key_id)
    async with aiohttp.ClientSession() as http:
        stream, endpoint_event = await _legacy(http, server, tenant)
        sid = endpoint_event["data"].rpartition("=")[2]
        assert await _initialize(http, server, tenant, endpoint_event["data"]) == 202
        answered = await read_event(stream, timeout=30)
        # The same key's streamable session, its GET stream held by this process.
        modern = await _session(http, server, server, tenant, {})
        modern_stream = await http.get(f"{server}/mcp",
                                       headers=_headers(tenant, modern, accept=STREAM))
        assert modern_stream.status == 200

        async def resume(who: Tenant, last_event_id: str) -> int:
            async with http.get(f"{server}/sse", headers={
                    **who.headers, "Accept": STREAM, "Last-Event-ID": last_event_id}) as got:
                return got.status

        assert await resume(stranger, answered["id"]) == 404
        assert await resume(colleague, answered["id"]) == 404
        assert await resume(tenant, f"{modern}/0-0") == 404
        malformed = [f"{sid}/{entry}" for entry in (
            "", "+", "-", "$", ">", "*", "0", "0-", "-0", "0-0/0-0", "0 -0",
            "18446744073709551616-0", "0-18446744073709551616", "9" * 200 + "-0",
            "0123456789abcdef_0-1",  # a POST stream's id: no legacy session has one
            "\u00b2-1")] + [sid, f"{sid.upper()}/0-0", f"/{answered['id']}", f"{sid}x/0-0",
                            "../" + answered["id"], f"{sid}/" + "1" * 7000]
        for header in malformed:
            assert await resume(tenant, header) in (400, 431), header

        # Nor does posting to the streamable session as if it were a legacy one.
        misrouted = await http.post(f"{server}/messages?session_id={modern}", data=_rpc(9, "ping"),
                                    headers={**tenant.headers, "Content-Type": "application/json"})
        assert misrouted.status == 404
        # The legacy stream and the streamable one go on, untouched.
        for held in (stream, modern_stream):
            with pytest.raises(TimeoutError):
                await read_event(held, timeout=2.5)
        sent = await http.post(f"{server}{endpoint_event['data']}", data=_rpc(1, "ping"),
                               headers={**tenant.headers, "Content-Type": "application/json"})
        assert sent.status == 202
        assert orjson.loads((await read_event(stream, timeout=30))["data"])["id"] == 1
        # Resuming from the very start replays this session's own events, and no other's.
        replay = await http.get(f"{server}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": f"{sid}/0-0"})
        assert replay.status == 200
        assert (await read_event(replay, timeout=30))["event"] == "endpoint"
        assert [orjson.loads((await read_event(replay, timeout=30))["data"])["id"]
                for _ in range(2)] == [0, 1]
        with pytest.raises(TimeoutError):
            await read_event(replay, timeout=2.5)
        replay.close()
        stream.close()
        modern_stream.close()


async def test_a_resumed_legacy_stream_ends_with_its_session_when_the_key_is_revoked(
        server: str, redis_server: OwnRedis, make_tenant, admin_conn: asyncpg.Connection,
        queries: Any) -> None:
    """Revoking the key ends a resumed stream, and its session with it (the old connection,
    still open on the same process, neither keeps it alive nor is left streaming)."""
    tenant = await make_tenant(demo=True)
    async with aiohttp.ClientSession() as http:
        old, endpoint_event = await _legacy(http, server, tenant)
        sid = endpoint_event["data"].rpartition("=")[2]
        resumed = await http.get(f"{server}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": endpoint_event["id"]})
        assert resumed.status == 200
        await read_event(resumed, timeout=30)
        async with admin_conn.transaction():
            await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
        for ended in (resumed, old):
            with pytest.raises(EOFError):
                await read_event(ended, timeout=15)
        store = redis.from_url(redis_server.url)
        try:
            # Removed right after the stream's end has been sent.
            for _ in range(50):
                if not await store.exists(f"spiral:t:{tenant.id}:s:{sid}"):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the session outlived its revoked key")
        finally:
            await store.aclose()


async def test_a_streamable_get_stream_resumed_on_the_same_process_survives_its_old_one(
        server: str, make_tenant) -> None:
    """The same takeover on GET /mcp: the old stream's close leaves the resumed one its mark."""
    tenant = await make_tenant(demo=True)
    async with aiohttp.ClientSession() as http:
        sid = await _session(http, server, server, tenant, {})
        old = await http.get(f"{server}/mcp", headers=_headers(tenant, sid, accept=STREAM))
        assert old.status == 200
        resumed = await http.get(f"{server}/mcp", headers={
            **_headers(tenant, sid, accept=STREAM), "Last-Event-ID": "0-0"})
        assert resumed.status == 200
        old.close()
        # Past the old stream's noticing its client gone and the resumed one's renewal.
        with pytest.raises(TimeoutError):
            await read_event(resumed, timeout=5)
        resumed.close()
