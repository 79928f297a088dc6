"""Operator endpoints: what the service is, whether it lives, whether it can serve, its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from .. import __version__
from ..errors import ServiceError
from ..explorer import Explorer
from ..oauth.challenges import metadata_paths
from .keys import DATABASE, EXPLORER, HEAD_MIGRATIONS, METRICS, REDIS, REPLICA, SETTINGS
from .worker_metrics import WORKER_METRICS

__all__ = ["routes"]

routes = web.RouteTableDef()

_CHECK_TIMEOUT = 2.0


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    endpoints = {
        "mcp": "/mcp",
        "legacy_sse": "/sse",
        "execute": "/execute",
        "tools": "/tools",
        "templates": "/templates",
        "health": "/health",
        "ready": "/ready",
        "metrics": "/metrics",
        # The admin API; its OpenAPI document is /api/v1/openapi.json.
        "admin_api": "/api/v1",
        # The web console: sign in at /admin/login with an admin key or an operator secret.
        "console": "/admin",
    }
    settings = request.app[SETTINGS]
    if settings.oauth:
        endpoints["oauth_protected_resource"] = metadata_paths(settings)[-1]
    return web.json_response({"name": "spiral-mcp", "version": __version__,
                              "endpoints": endpoints})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Alive: the process answers. Touches nothing, so a slow database never fails it."""
    return web.json_response({"status": "ok"})


async def _check_database(app: web.Application) -> str:
    database = app[DATABASE]
    head = app[HEAD_MIGRATIONS]
    try:
        async with database.connection() as conn:
            applied = await database.queries.migrations_applied(
                conn, migration_ids=list(head)
            )
    except ServiceError:  # no connection, or one that broke under the check
        return "unreachable"
    return "ok" if applied == len(head) else f"migrations not at head ({applied}/{len(head)})"


async def _check_explorer(explorer: Explorer) -> str:
    """The explorer logs in as a role of its own, with a pool of its own: either can fail alone."""
    try:
        async with explorer.database.connection() as conn:
            await explorer.queries.explorer_ping(conn)
    except ServiceError:
        return "unreachable"
    return "ok"


async def _check_redis(client: Redis) -> str:
    try:
        await client.ping()
    except Exception:  # any failure of the client means "not ready", whatever its kind
        return "unreachable"
    return "ok"


async def _within_timeout(check: Awaitable[str]) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            return await check
    except TimeoutError:
        return "timeout"


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Can serve: database reachable, schema at head; the explorer's pool and Redis reachable
    when the process has them. Each check has its own time limit, so a slow one names itself.
    With a replica: its state at the last background check, and who serves its reads."""
    app = request.app
    checks = {"database": _check_database(app)}
    if (explorer := app.get(EXPLORER)) is not None:
        checks["explorer"] = _check_explorer(explorer)
    if (redis := app.get(REDIS)) is not None:
        checks["redis"] = _check_redis(redis)
    states = dict(zip(checks, await asyncio.gather(*map(_within_timeout, checks.values())),
                      strict=True))
    ok = all(state == "ok" for state in states.values())
    body: dict[str, object] = {"status": "ready" if ok else "unavailable", "checks": states}
    if (replica := app.get(REPLICA)) is not None:
        # Not a check: while the primary serves the replica's reads, the process can serve.
        body["replica"] = replica.report()
    return web.json_response(body, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    if (workers := request.app.get(WORKER_METRICS)) is not None:
        body = await workers.exposition(body)  # the whole server's, not this worker's only
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
