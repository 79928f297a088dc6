"""Operator endpoints: what the service is, whether it lives, whether it can serve, its metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import ServiceError
from .keys import DATABASE, HEAD_MIGRATIONS, METRICS, REDIS

__all__ = ["routes"]

routes = web.RouteTableDef()

_CHECK_TIMEOUT = 2.0


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.json_response({
        "name": "spiral-mcp",
        "version": __version__,
        "endpoints": {
            "mcp": "/mcp",
            "legacy_sse": "/sse",
            "execute": "/execute",
            "tools": "/tools",
            "health": "/health",
            "ready": "/ready",
            "metrics": "/metrics",
        },
    })


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
    except (ServiceError, TimeoutError):
        return "unreachable"
    return "ok" if applied == len(head) else f"migrations not at head ({applied}/{len(head)})"


async def _check_redis(app: web.Application) -> str | None:
    client = app.get(REDIS)
    if client is None:
        return None
    try:
        await client.ping()
    except Exception:  # any failure of the client means "not ready", whatever its kind
        return "unreachable"
    return "ok"


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Can serve: database reachable, schema at head, Redis reachable when configured."""
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            database, redis_state = await asyncio.gather(
                _check_database(request.app), _check_redis(request.app)
            )
    except TimeoutError:
        database, redis_state = "timeout", "timeout"
    checks = {"database": database}
    if redis_state is not None:
        checks["redis"] = redis_state
    ok = all(state == "ok" for state in checks.values())
    return web.json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
