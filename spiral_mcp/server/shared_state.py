"""The shared session store's cleanup context: with REDIS_URL, sessions live in Redis so that
any process serves any request of any session (protocol/shared_sessions.py).

It uses the Redis client the rate limiter's context built (app[REDIS]) for its commands, and one
client of its own for what waits on Redis (a stream's XREAD BLOCK, the pub/sub listener), whose
socket timeout must outlast the wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..protocol.shared_sessions import SharedSessionStore
from ..protocol.shared_streams import READ_BLOCK_MS
from ..redis_client import close_redis, redis_client
from .keys import REDIS, SESSIONS, SETTINGS, SHUTDOWN

__all__ = ["shared_sessions"]

# Beyond a blocking read's wait: Redis answering that late is as good as away.
_BLOCKING_SOCKET_SECONDS = READ_BLOCK_MS / 1000 + 2.0


async def shared_sessions(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    # Through the same factory as app[REDIS]: a Sentinel URL names the set's master here too.
    blocking = redis_client(settings.redis_url, timeout=_BLOCKING_SOCKET_SECONDS)
    store = SharedSessionStore(
        app[REDIS], blocking, max_sessions=settings.session_max,
        max_per_tenant=settings.session_max_per_tenant,
        max_per_key=settings.session_max_per_key, idle_timeout=settings.session_idle_timeout,
        max_concurrent_calls=settings.session_max_concurrent_calls)
    app[SESSIONS] = store
    store.start()
    yield
    # After the protocol's own wind-down (cleanup contexts leave in reverse): what its last
    # calls posted is sent before the connections close.
    await store.stop(grace=app[SHUTDOWN].left(1.0))
    await close_redis(blocking)
