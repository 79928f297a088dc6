"""A tool call's place among its session's, claimed by the session's lookup in Redis
(shared_sessions.py): a lookup whose answer never reaches its request (the request cancelled,
the answer overdue) must not keep the places it claimed. Against a Redis of the module's own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from faults import OwnRedis

from spiral_mcp.protocol.shared_local import SharedSession
from spiral_mcp.protocol.shared_sessions import SharedSessionStore

pytestmark = pytest.mark.redis

CAP = 2


@pytest.fixture
async def store(module_redis: OwnRedis) -> AsyncIterator[SharedSessionStore]:
    client = redis.Redis.from_url(module_redis.url)
    await client.flushall()
    store = SharedSessionStore(client, client, max_sessions=10, max_per_tenant=10,
                               max_per_key=10, idle_timeout=60.0, max_concurrent_calls=CAP)
    yield store
    await store.stop(grace=0)
    await client.aclose()


async def test_a_lookup_cancelled_after_it_was_sent_gives_its_places_back(
        store: SharedSessionStore) -> None:
    """Requests cancelled while their lookup (which claimed their call's place) was on its way
    to Redis: their places come back, else the session's calls are refused as busy for as long
    as it lives (every lookup renews the calls' hash)."""
    session = await store.create(
        key_id=uuid.uuid4(), tenant_id=uuid.uuid4(), scopes=frozenset({"read"}),
        transport="streamable", protocol_version="2025-06-18", max_concurrent_calls=CAP)

    def lookup(request_id: int) -> asyncio.Future[object]:
        return asyncio.ensure_future(store.get(
            session.id, session.key_id, tenant_id=session.tenant_id, transport="streamable",
            calls=[(request_id, {"tool": "t"})]))

    assert await store.get(session.id, session.key_id, tenant_id=session.tenant_id,
                           transport="streamable")  # the line is connected
    for request_id in range(CAP + 1):
        cancelled = lookup(request_id)
        await asyncio.sleep(0)  # written (in this turn's write), no longer awaited
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    await asyncio.sleep(0.2)  # the places given back reach Redis

    found = await lookup(100)
    assert isinstance(found, SharedSession)
    assert await found.claim_call(100) is None  # not "busy"
    await found.release_call(100)
