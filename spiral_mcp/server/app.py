"""The application factory: middleware, routes, and the resources built once at start-up.

Resources are cleanup contexts, entered in order and left in reverse: the database first, then
what uses it (key verification with its background flush, the background source sync, rate
limits). On the way out each takes its step of shutdown's wind-down (``shutdown.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from .. import migrate
from ..api.app import API_PREFIX, api_application
from ..api.sessions import ConsoleSessions
from ..auth import Authenticator
from ..config import Settings
from ..console import CONSOLE_PREFIX, console_application
from ..console.oauth_signin import console_oauth_client
from ..credentials import BearerCheck
from ..db import Database, close_pool, connect, create_pool, keep_session
from ..errors import ServiceError
from ..explorer import Explorer, create_explorer_pool
from ..handlers import Tool, ToolRegistry, builtin_tools
from ..handlers.audit import AuditWriter
from ..handlers.guides import shipped_resources
from ..handlers.idempotency import IdempotencyStore
from ..handlers.prompts import Prompt, PromptRegistry
from ..handlers.recipes import shipped_prompts
from ..handlers.resources import Resource, ResourceRegistry
from ..handlers.sql_templates import template_tools
from ..oauth import TokenVerifier
from ..oauth.identity import IdentityMapper
from ..protocol import execute, legacy_sse, streamable
from ..protocol.changes import ChangeHub
from ..protocol.dispatcher import Dispatcher
from ..protocol.input_required import RequestStateSeal
from ..protocol.sessions import SessionStore
from ..protocol.tasks import TaskRunner
from ..queries import Queries
from ..ratelimit import RateLimiter, RedisBuckets
from ..redis_client import close_redis, redis_client
from ..roles import EXPLORER_ROLE, check_runtime_role, url_for_role
from ..shares import Shares
from ..sources.access import SourceAccess
from ..sources.scheduler import SyncScheduler
from ..sources.secrets import CredentialError, load_secret_key
from ..task_store import TaskStore
from ..tasks import BackgroundTasks
from ..templates import builtin_directory, load_templates
from . import discovery, ops, shared_state
from .keys import (
    AUTHENTICATOR,
    BACKGROUND,
    BEARER,
    CONSOLE_OAUTH,
    CONSOLE_SESSIONS,
    DATABASE,
    DISPATCHER,
    EXPLORER,
    HEAD_MIGRATIONS,
    IDENTITIES,
    METRICS,
    RATE_LIMITER,
    REDIS,
    SESSIONS,
    SETTINGS,
    SHUTDOWN,
    SOURCES,
    TASK_RUNNER,
    TASK_STORE,
    TEMPLATES,
    TOKEN_VERIFIER,
    TRACER,
)
from .metrics import Metrics
from .middleware import authenticate, cors_headers, origin_guard, request_context
from .operators import operator_context
from .replica_context import replica_context
from .shutdown import ShutdownClock
from .tracing import tracing_context

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_STARTUP_ATTEMPTS = 15
_LAST_USED_FLUSH_SECONDS = 30.0
_REAP_SECONDS = 600.0


def create_app(
    settings: Settings, *, database_url: str, tools: Iterable[Tool] | None = None,
    explorer_url: str | None = None, resources: Iterable[Resource] | None = None,
    prompts: Iterable[Prompt] | None = None, shared_secret: bytes | None = None,
    share_sessions: bool = True, owner_url: str | None = None,
) -> web.Application:
    """Build the application; ``database_url`` logs in as the runtime role, ``explorer_url`` as
    the explorer role (default: EXPLORER_DATABASE_URL, else ``database_url`` as spiral_explorer).

    ``tools`` replaces the shipped tools and report templates (the conformance harness adds its
    fixtures this way); ``resources`` and ``prompts``, the shipped MCP resources (guides.py) and
    prompts (recipes.py). ``shared_secret``: a secret every process of this server holds (the
    workers of ``serve --workers``), which seals what a tool asks a stateless client when
    SPIRAL_SECRET_KEY is not set. With REDIS_URL set, sessions are shared through Redis unless
    SESSION_STORE is `memory` or ``share_sessions`` is False (stdio: one client, one process).
    ``owner_url`` logs in as the owner role: with OPERATOR_API on, operator requests run there.
    Raises TemplateError, naming the file, when a report template is bad.
    """
    app = web.Application(
        middlewares=[request_context, origin_guard, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SHUTDOWN] = ShutdownClock(settings.shutdown_timeout)
    app[HEAD_MIGRATIONS] = migrate.head_ids()
    sources = app[SOURCES] = SourceAccess.from_settings(settings)
    if tools is None:
        extra = [Path(settings.spiral_templates_dir)] if settings.spiral_templates_dir else []
        app[TEMPLATES] = load_templates(builtin_directory(), *extra)
        durations = app[METRICS].template_duration
        tools = [*builtin_tools(), *template_tools(
            app[TEMPLATES], observe=lambda name, seconds: durations.labels(name).observe(seconds))]
    else:
        app[TEMPLATES] = []
    app.router.add_routes(ops.routes)
    app.router.add_routes(discovery.routes(settings))
    app.router.add_routes(streamable.routes)
    app.router.add_routes(legacy_sse.routes)
    app.router.add_routes(execute.routes)
    app.add_subapp(API_PREFIX, api_application())
    app.add_subapp(CONSOLE_PREFIX, console_application())
    app.cleanup_ctx.append(tracing_context)
    app.cleanup_ctx.append(_database(database_url))
    app.cleanup_ctx.append(_explorer(
        explorer_url or settings.explorer_database_url or url_for_role(database_url, EXPLORER_ROLE),
        configured=bool(explorer_url or settings.explorer_database_url),
    ))
    # After the explorer: it gives the explorer its pool on the standby.
    app.cleanup_ctx.append(replica_context(explorer_url or settings.explorer_database_url))
    app.cleanup_ctx.append(_authenticator)
    app.cleanup_ctx.append(operator_context(owner_url))
    if settings.oauth:
        app.cleanup_ctx.append(_oauth)
    app.cleanup_ctx.append(_source_sync(database_url, sources))
    app.cleanup_ctx.append(_rate_limits)
    if settings.shares_sessions and share_sessions:
        app.cleanup_ctx.append(shared_state.shared_sessions)
    app.cleanup_ctx.append(_protocol(
        list(tools), None if resources is None else list(resources),
        PromptRegistry(shipped_prompts() if prompts is None else prompts), shared_secret))
    app.on_response_prepare.append(cors_headers)
    app.on_shutdown.append(_drain_sessions)
    return app


def _database(url: str):
    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        queries = Queries.load().traced(app[TRACER])
        pool = await _connect_with_retry(settings, url)
        try:
            async with pool.acquire() as conn:
                await check_runtime_role(conn)
            # The pool resets nothing (keep_session), so settled connections may be kept.
            # Work that waits on a third party opens connections of its own (detached).
            db = Database(pool, queries, acquire_timeout=settings.db_connect_timeout,
                          keep_idle=True, connect=functools.partial(
                              connect, url, connect_timeout=settings.db_connect_timeout,
                              statement_timeout=settings.db_statement_timeout))
            app[DATABASE] = db
            app[METRICS].watch_pool(db.sizes)
            try:
                yield
            finally:
                await db.close()
        finally:
            await close_pool(pool, grace=app[SHUTDOWN].left(2.0))

    return database


def _explorer(url: str, *, configured: bool):
    async def explorer(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if settings.enabled_toolsets and "explorer" not in settings.enabled_toolsets:
            yield
            return
        try:
            pool = await create_explorer_pool(
                url, min_size=0, max_size=settings.db_pool_max,
                connect_timeout=settings.db_connect_timeout,
                query_timeout=settings.explorer_timeout_s, queries=app[DATABASE].queries)
            app[EXPLORER] = await Explorer.start(
                pool, app[DATABASE].queries, acquire_timeout=settings.db_connect_timeout,
                query_timeout=settings.explorer_timeout_s, max_rows=settings.explorer_max_rows,
                runtime=app[DATABASE])
            if exposed := await app[EXPLORER].unguarded():
                log.warning("the explorer role may still read or signal other sessions, or use "
                            "memory without limit; run the statements of docker/init-roles.sql "
                            "for the explorer role in this database",
                            extra={"exposed": exposed[:8]})
        except (ServiceError, OSError, asyncpg.PostgresError) as exc:
            if configured:
                raise ConnectionError(f"cannot reach the database as the explorer role: {exc}") \
                    from None
            # A derived URL (no password of its own) may not log in: serve without the explorer.
            log.warning("data explorer unavailable; set EXPLORER_DATABASE_URL",
                        extra={"error": str(exc)})
            yield
            return
        try:
            yield
        finally:
            await app[EXPLORER].close()
            await close_pool(pool, grace=app[SHUTDOWN].left(1.0))

    return explorer


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
                reset=keep_session,
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
    app[BEARER] = BearerCheck(app[SETTINGS], authenticator)
    app[CONSOLE_SESSIONS] = ConsoleSessions(app[DATABASE], ttl=app[SETTINGS].console_session_ttl,
                                            idle=app[SETTINGS].console_session_idle)

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(_LAST_USED_FLUSH_SECONDS)
            await authenticator.flush_last_used()

    task = asyncio.create_task(flush_periodically(), name="flush-last-used")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Only a key's last use is lost if the database does not answer in time.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(app[SHUTDOWN].left(1.0)):
            await authenticator.flush_last_used()


async def _oauth(app: web.Application) -> AsyncIterator[None]:
    """Access tokens: verified against the issuers' keys (fetched and cached by the verifier's
    own HTTP client), then mapped to a tenant and a principal."""
    verifier = app[TOKEN_VERIFIER] = TokenVerifier(app[SETTINGS])
    identities = app[IDENTITIES] = IdentityMapper(app[DATABASE], app[SETTINGS])
    app[BEARER] = dataclasses.replace(app[BEARER], verifier=verifier, identities=identities)
    if app[SETTINGS].console_oauth:
        app[CONSOLE_OAUTH] = console_oauth_client(app[SETTINGS], verifier)
    yield
    await verifier.close()


def _source_sync(url: str, sources: SourceAccess):
    async def source_sync(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if settings.sync_interval == 0:
            yield
            return
        if sources.unavailable is not None:
            # Serving needs no sources: start without the background sync, and say why once.
            log.info("background source sync off", extra={"reason": sources.unavailable})
            yield
            return
        scheduler = SyncScheduler(url, app[DATABASE].queries, sources,
                                  connect_timeout=settings.db_connect_timeout,
                                  statement_timeout=settings.db_statement_timeout,
                                  concurrency=settings.sync_concurrency)
        task = asyncio.create_task(scheduler.run_forever(settings.sync_interval),
                                   name="source-sync")
        yield
        # A sync cut short keeps its committed pages; the next start resumes from its cursor.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return source_sync


async def _rate_limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client: redis.Redis | None = None
    buckets = None
    if settings.redis_url is not None:
        # One client for the process (a Sentinel set's master too): app[REDIS].
        client = redis_client(settings.redis_url)
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
        await close_redis(client)


def _request_state_seal(settings: Settings, shared: bytes | None) -> RequestStateSeal:
    """The seal of the stateless era's requestState, keyed from the installation's secret so
    that any of its processes takes the answers to what another asked (else from ``shared``,
    the secret of one server's workers)."""
    try:
        secret = load_secret_key(settings)
    except CredentialError:
        if shared is not None:
            return RequestStateSeal(shared, ttl=settings.request_state_ttl)
        log.warning("SPIRAL_SECRET_KEY is not set: what a tool asks a stateless (2026-07-28) "
                    "client is sealed with a key of this process only, so its answer must come "
                    "back to this process; set SPIRAL_SECRET_KEY when several serve /mcp")
        return RequestStateSeal(None, ttl=settings.request_state_ttl)
    return RequestStateSeal(secret.encode() if isinstance(secret, str) else secret,
                            ttl=settings.request_state_ttl)


def _protocol(tools: list[Tool], given: list[Resource] | None, prompts: PromptRegistry,
              shared_secret: bytes | None):
    async def protocol(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        metrics = app[METRICS]
        audit = AuditWriter(
            app[DATABASE],
            on_failure=lambda reason: metrics.audit_write_failures.labels(reason).inc(),
            on_dropped=lambda reason, rows: metrics.audit_rows_dropped.labels(reason).inc(rows))
        metrics.watch_audit(lambda: audit.queued)
        idempotency = IdempotencyStore(app[DATABASE], ttl=settings.idempotency_ttl)
        registry = ToolRegistry(
            tools,
            enabled_toolsets=frozenset(settings.enabled_toolsets) or None,
            read_only_mode=settings.read_only,
            rate_limiter=app[RATE_LIMITER],
            shares=Shares.from_settings(settings),
            audit=audit,
            idempotency=idempotency,
            metrics=app[METRICS],
            tracer=app[TRACER],
        )
        app[TASK_STORE] = TaskStore(
            app[DATABASE], ttl_ms=round(settings.task_ttl * 1000),
            poll_interval_ms=round(settings.task_poll_interval * 1000),
            lease_seconds=settings.task_lease, max_per_key=settings.task_max_per_key)
        tasks = app[TASK_RUNNER] = TaskRunner(app[TASK_STORE])
        resources = given
        if resources is None:
            # Built here: they describe what this process serves (its reports, the explorer's
            # views when the explorer runs, the tools of the registry).
            explorer = app.get(EXPLORER)
            resources = shipped_resources(
                templates=[t for t in app[TEMPLATES] if t.name in registry],
                catalog=explorer.catalog if explorer is not None else None,
                result_schema=registry.result_schema)
        # Shared through Redis (shared_state.py) or in this process's memory.
        sessions = app.get(SESSIONS) or SessionStore(
            max_sessions=settings.session_max, max_per_tenant=settings.session_max_per_tenant,
            max_per_key=settings.session_max_per_key, idle_timeout=settings.session_idle_timeout,
        )
        app[SESSIONS] = sessions
        # Listen streams are capped as sessions are: each holds a connection open.
        served = ResourceRegistry(resources)
        changes = ChangeHub(max_listeners=settings.session_max,
                            max_per_tenant=settings.session_max_per_tenant,
                            max_per_key=settings.session_max_per_key, sessions=sessions.live,
                            showing=served.showing)
        sessions.bind(changes=changes, audit=audit)
        # A sync (the background one too, which has no caller) announces what it changed.
        app[SOURCES].on_change = changes.data_changed
        app[METRICS].watch_listeners(changes.count)
        app[DISPATCHER] = Dispatcher(registry=registry, database=app[DATABASE],
                                     metrics=app[METRICS], explorer=app.get(EXPLORER),
                                     sources=app[SOURCES], resources=served,
                                     prompts=prompts, changes=changes, tasks=tasks,
                                     request_state=_request_state_seal(settings, shared_secret))
        app[METRICS].watch_sessions(sessions.count)
        background = BackgroundTasks()
        app[BACKGROUND] = background
        audit.start()
        reaper = asyncio.create_task(idempotency.reap_periodically(_REAP_SECONDS))
        tasks.start(heartbeat_seconds=settings.task_lease / 3)
        yield
        reaper.cancel()
        clock = app[SHUTDOWN]
        clock.wind_down()
        # The grace period is over, or every request has ended: a call still running (there is
        # none unless shutdown began elsewhere than SIGTERM) is cut, answered and audited; a task
        # still running is stopped first and stored as failed.
        tasks.stop_all()
        registry.stop_calls()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(clock.left(2.0)):
                await registry.calls_ended()
        await tasks.close(grace=clock.left(1.0))
        sessions.close_all()
        changes.close_all()
        await background.close(grace=clock.left(1.0))
        # Last: every call has ended, so every audit row is queued; write them before the pool
        # closes.
        await audit.stop(grace=clock.left(3.0))

    return protocol


async def _drain_sessions(app: web.Application) -> None:
    """SIGTERM: sessions take no new calls, their idle streams and the listen streams finish
    cleanly rather than being cut; calls in flight get SHUTDOWN_TIMEOUT (aiohttp runs this
    before it waits for requests), then are cut (each answered and audited)."""
    if SESSIONS in app:
        app[SESSIONS].drain_all()
    if DISPATCHER in app:
        # Listen streams end now, each answered (their clients may listen again elsewhere).
        app[DISPATCHER].changes.close_all()
        tasks, registry = app[TASK_RUNNER], app[DISPATCHER].registry
        app[SHUTDOWN].begin(lambda: (tasks.stop_all(), registry.stop_calls()))
