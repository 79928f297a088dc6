"""What a request changes of a shared session reaches Redis, whichever process serves it, and
what changes nothing writes nothing: ``save`` skips a session whose values are those it last
saved or read (SharedSession.unchanged), so a copy must never believe Redis holds what it does
not. Two processes (two apps) share the test database and a Redis of the module's own, and the
session's hash is read straight from Redis after each step.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import redis.asyncio as redis
import test_shared_sessions as shared
from conftest import Tenant
from faults import OwnRedis
from test_shared_sessions import JQL, Pair
from test_transports import post, request

from spiral_mcp.protocol.shared_local import SharedSession
from spiral_mcp.protocol.shared_sessions import SharedSessionStore

# The shared-session tests' fixtures: two apps sharing the database and a Redis of the module's.
pair = shared.pair
redis_client = shared.redis_client

VERSION = "2025-06-18"


async def _session_key(redis_client: redis.Redis, sid: str) -> str:
    keys = [k async for k in redis_client.scan_iter(match=f"spiral:t:*:s:{sid}")]
    assert len(keys) == 1
    return keys[0].decode()


async def _hash(redis_client: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await redis_client.hgetall(key)).items()}


async def test_each_change_through_either_process_is_written_and_nothing_else(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    a, b = await pair()
    made = await post(a, tenant, request(
        "initialize", 0, protocolVersion=VERSION, capabilities={"roots": {"listChanged": True}},
        clientInfo={"name": "hostile", "version": "1"}))
    assert made.status == 200
    sid = made.headers["Mcp-Session-Id"]
    key = await _session_key(redis_client, sid)
    saved = await _hash(redis_client, key)
    assert (saved["handshake_done"], saved["state"], saved["protocol_version"]) == (
        "1", "open", VERSION)
    assert orjson.loads(saved["client_info"]) == {"name": "hostile", "version": "1"}
    assert orjson.loads(saved["client_capabilities"]) == {"roots": {"listChanged": True}}

    async def send(client: Any, rid: int | None, method: str, **params: Any) -> None:
        body = (request(method, rid, **params) if rid is not None
                else {"jsonrpc": "2.0", "method": method})
        answered = await post(client, tenant, body, sid=sid, version=VERSION)
        assert answered.status in (200, 202), await answered.text()

    await send(b, None, "notifications/initialized")
    assert (await _hash(redis_client, key))["state"] == "ready"

    # Each process's copy last saved or read a value the other then changed: set again, it
    # is a change to write, not the copy's "unchanged".
    steps = [(a, "debug"), (b, "info"), (a, "debug"), (b, "info"), (b, "info"), (a, "debug")]
    for rid, (client, level) in enumerate(steps, start=1):
        await send(client, rid, "logging/setLevel", level=level)
        assert (await _hash(redis_client, key))["log_level"] == level, (rid, level)

    subs = f"{key}:subs"
    steps_subs = [(b, "resources/subscribe", {JQL}), (a, "resources/unsubscribe", set()),
                  (b, "resources/subscribe", {JQL}), (a, "resources/unsubscribe", set()),
                  (a, "resources/subscribe", {JQL})]
    for rid, (client, method, expected) in enumerate(steps_subs, start=10):
        await send(client, rid, method, uri=JQL)
        assert {s.decode() for s in await redis_client.smembers(subs)} == expected, (
            rid, method)

    # Requests that change nothing write nothing (the revision stays), on either process.
    rev = (await _hash(redis_client, key))["rev"]
    for rid, client in enumerate((a, b, a, b), start=20):
        await send(client, rid, "ping")
        await send(client, rid + 10, "logging/setLevel", level="debug")
    assert (await _hash(redis_client, key))["rev"] == rev


async def test_a_change_made_while_another_lookup_of_the_session_was_answered_is_kept(
        module_redis: OwnRedis, redis_client: redis.Redis) -> None:
    """Two requests of one session on this process, their lookups answered in one read after
    another process changed the session: the first sets the level and saves; the second's
    lookup, the same revision, must not put the level of before back into the copy (it was
    then served here, and the next save wrote it back to Redis)."""
    here, there = (redis.Redis.from_url(module_redis.url) for _ in range(2))
    stores = [SharedSessionStore(client, client, max_sessions=10, max_per_tenant=10,
                                 max_per_key=10, idle_timeout=60.0, max_concurrent_calls=4)
              for client in (here, there)]
    store, other = stores
    try:
        made = await store.create(
            key_id=uuid.uuid4(), tenant_id=uuid.uuid4(), scopes=frozenset({"read"}),
            transport="streamable", protocol_version="2025-06-18", max_concurrent_calls=4)

        async def lookup(on: SharedSessionStore) -> SharedSession:
            found = await on.get(made.id, made.key_id, tenant_id=made.tenant_id,
                                 transport="streamable")
            assert isinstance(found, SharedSession)
            return found

        async def set_level(level: str) -> None:
            session = await lookup(store)
            session.log_level = level
            await store.save(session)

        async def ping() -> None:
            await store.save(await lookup(store))

        elsewhere = await lookup(other)
        elsewhere.log_level = "info"
        await other.save(elsewhere)
        await asyncio.gather(set_level("debug"), ping())
        await ping()
        assert (await lookup(store)).log_level == "debug"
        assert await here.hget(made.key, "log_level") == b"debug"
    finally:
        for each in stores:
            await each.stop(grace=0)
        await here.aclose()
        await there.aclose()
