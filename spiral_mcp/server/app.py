"""The application factory: middleware, routes, and the resources built once at start-up.

Resources are cleanup contexts, entered in order and left in reverse: the database first, then
what uses it (key verification with its background flush, rate limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as redis
from aiohttp import web

from .. import migrate
from ..auth import Authenticator
from ..config import Settings
from ..db import Database, create_pool
from ..handlers import Tool, ToolRegistry, builtin_tools
from ..handlers.audit import AuditWriter
from ..handlers.idempotency import IdempotencyStore
from ..protocol import execute, legacy_sse, streamable
from ..protocol.dispatcher import Dispatcher
from ..protocol.sessions import SessionStore
from ..queries import Queries
from ..ratelimit import RateLimiter, RedisBuckets
from ..roles import check_runtime_role
from ..tasks import BackgroundTasks
from . import ops
from .keys import (
    AUTHENTICATOR,
    BACKGROUND,
    DATABASE,
    DISPATCHER,
    HEAD_MIGRATIONS,
    METRICS,
    RATE_LIMITER,
    REDIS,
    SESSIONS,
    SETTINGS,
)
from .metrics import Metrics
from .middleware import authenticate, origin_guard, request_context

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_STARTUP_ATTEMPTS = 15
_LAST_USED_FLUSH_SECONDS = 30.0
_REAP_SECONDS = 600.0


def create_app(
    settings: Settings, *, database_url: str, tools: Iterable[Tool] | None = None
) -> web.Application:
    """Build the application; ``database_url`` logs in as the runtime role.

    ``tools`` replaces the shipped tool set (the conformance harness adds its fixtures this way).
    """
    app = web.Application(
        middlewares=[request_context, origin_guard, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[HEAD_MIGRATIONS] = migrate.head_ids()
    app.router.add_routes(ops.routes)
    app.router.add_routes(streamable.routes)
    app.router.add_routes(legacy_sse.routes)
    app.router.add_routes(execute.routes)
    app.cleanup_ctx.append(_database(database_url))
    app.cleanup_ctx.append(_authenticator)
    app.cleanup_ctx.append(_rate_limits)
    app.cleanup_ctx.append(_protocol(list(tools) if tools is not None else builtin_tools()))
    app.on_shutdown.append(_end_sessions)
    return app


def _database(url: str):
    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        queries = Queries.load()
        pool = await _connect_with_retry(settings, url)
        try:
            async with pool.acquire() as conn:
                await check_runtime_role(conn)
            db = Database(pool, queries, acquire_timeout=settings.db_connect_timeout)
            app[DATABASE] = db
            app[METRICS].watch_pool(lambda: (pool.get_size(), pool.get_idle_size()))
            yield
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout=settings.shutdown_timeout)
            except TimeoutError:
                pool.terminate()

    return database


async def _connect_with_retry(settings: Settings, url: str):
    """The database may still be starting (a container started beside it): wait, within bounds."""
    for attempt in range(1, _STARTUP_ATTEMPTS + 1):
        try:
            return await create_pool(
                url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                connect_timeout=settings.db_connect_timeout,
                statement_timeout=settings.db_statement_timeout,
            )
        except (OSError, TimeoutError) as exc:
            if attempt == _STARTUP_ATTEMPTS:
                raise ConnectionError(f"cannot reach the database: {exc}") from None
            log.warning("database not reachable yet; retrying", extra={"attempt": attempt})
            await asyncio.sleep(min(2.0, 0.2 * attempt))
    raise AssertionError("unreachable")


async def _authenticator(app: web.Application) -> AsyncIterator[None]:
    authenticator = Authenticator(app[DATABASE], cache_ttl=app[SETTINGS].auth_cache_ttl)
    app[AUTHENTICATOR] = authenticator

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(_LAST_USED_FLUSH_SECONDS)
            await authenticator.flush_last_used()

    task = asyncio.create_task(flush_periodically(), name="flush-last-used")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await authenticator.flush_last_used()


async def _rate_limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client: redis.Redis | None = None
    buckets = None
    if settings.redis_url is not None:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        app[REDIS] = client
        buckets = RedisBuckets(client)
    app[RATE_LIMITER] = RateLimiter(
        limits=settings.rate_limits,
        window=settings.rate_limit_window,
        redis_buckets=buckets,
        on_backend_error=app[METRICS].rate_limit_backend_errors.inc,
    )
    yield
    if client is not None:
        await client.aclose()


def _protocol(tools: list[Tool]):
    async def protocol(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        audit = AuditWriter(app[DATABASE])
        idempotency = IdempotencyStore(app[DATABASE], ttl=settings.idempotency_ttl)
        registry = ToolRegistry(
            tools,
            enabled_toolsets=frozenset(settings.enabled_toolsets) or None,
            read_only_mode=settings.read_only,
            rate_limiter=app[RATE_LIMITER],
            audit=audit,
            idempotency=idempotency,
            metrics=app[METRICS],
        )
        app[DISPATCHER] = Dispatcher(registry=registry, database=app[DATABASE],
                                     metrics=app[METRICS])
        sessions = SessionStore(
            max_sessions=settings.session_max, max_per_key=settings.session_max_per_key,
            idle_timeout=settings.session_idle_timeout,
        )
        app[SESSIONS] = sessions
        app[METRICS].watch_sessions(sessions.count)
        background = BackgroundTasks()
        app[BACKGROUND] = background
        audit.start()
        reaper = asyncio.create_task(idempotency.reap_periodically(_REAP_SECONDS))
        yield
        reaper.cancel()
        await background.close(grace=settings.shutdown_timeout)
        # Last: every call has ended, so every audit row is queued; write them before the pool
        # closes.
        await audit.stop()

    return protocol


async def _end_sessions(app: web.Application) -> None:
    """SIGTERM: end every session so open streams finish cleanly rather than being cut."""
    if SESSIONS in app:
        app[SESSIONS].close_all()
