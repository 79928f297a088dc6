"""Serving: prepare the database, build the app, listen, and stop gracefully on SIGTERM.

aiohttp's runner stops accepting on SIGTERM/SIGINT and waits for in-flight requests, then runs
the cleanup contexts in reverse (flush, close the pool). The app cuts the calls still running
when SHUTDOWN_TIMEOUT is over (``shutdown.py``), so their requests end then; aiohttp's own wait,
longer by the wind-down, is only a backstop.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncpg
import orjson
from aiohttp import web

from .. import admin, migrate
from ..config import Settings
from ..provision import EMBEDDED_DATABASE, DatabaseUrls, provision, start_embedded
from ..queries import Queries, QueryFileError
from ..roles import UnsafeRuntimeRole
from ..templates import TemplateError
from .app import create_app
from .logs import configure_logging
from .shutdown import WIND_DOWN_SECONDS

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def _embedded_urls(settings: Settings) -> DatabaseUrls:
    superuser = await asyncio.to_thread(start_embedded, settings.data_dir)
    urls = await provision(superuser, EMBEDDED_DATABASE)
    log.info("embedded PostgreSQL ready", extra={"data_dir": str(settings.data_dir)})
    if settings.demo_data:
        assert urls.admin is not None
        await _first_start_demo(urls.admin, settings)
    return urls


async def _first_start_demo(admin_url: str, settings: Settings) -> None:
    """On the very first start, a demo tenant with data and a key, printed once."""
    from .. import demo

    queries = Queries.load()
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            if await queries.list_tenants(conn):
                return
            tenant_id = await admin.create_tenant(conn, queries, "Demo")
            _, secret = await admin.create_api_key(
                conn, queries, tenant_id=tenant_id, name="demo",
                scopes=["read", "write", "query", "admin"], user="demo@example.com",
            )
            summary = await demo.load_demo(conn, queries, tenant_id=tenant_id)
    finally:
        await conn.close()
    _print_banner(settings, tenant_id=str(tenant_id), secret=secret, summary=summary)


def _print_banner(settings: Settings, *, tenant_id: str, secret: str, summary: dict) -> None:
    # Printed to the terminal, never logged: the key must not reach log storage.
    url = f"http://{settings.host}:{settings.port}"
    desktop = {"mcpServers": {"spiral": {
        "command": "npx",
        "args": ["-y", "mcp-remote", f"{url}/mcp", "--header", "Authorization:${SPIRAL_AUTH}"],
        "env": {"SPIRAL_AUTH": f"Bearer {secret}"},
    }}}
    lines = [
        "",
        "spiral-mcp: first start - created a demo tenant with "
        f"{summary.get('work_items', 0)} work items in {summary.get('projects', 0)} projects.",
        f"  tenant id: {tenant_id}",
        f"  API key (shown once, store it now): {secret}",
        "",
        "  Claude Code:",
        f'    claude mcp add --transport http spiral {url}/mcp '
        f'--header "Authorization: Bearer {secret}"',
        "  Claude Desktop (claude_desktop_config.json):",
        *("    " + line for line in
          orjson.dumps(desktop, option=orjson.OPT_INDENT_2).decode().splitlines()),
        "  MCP Inspector:",
        f"    npx @modelcontextprotocol/inspector  (Streamable HTTP, {url}/mcp, "
        "header Authorization: Bearer <key>)",
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


async def _external_urls(settings: Settings) -> DatabaseUrls:
    assert settings.database_url is not None
    if settings.admin_database_url is not None:
        applied = await asyncio.to_thread(migrate.apply, settings.admin_database_url)
        if applied:
            log.info("applied migrations", extra={"migrations": list(applied)})
    return DatabaseUrls(runtime=settings.database_url, admin=settings.admin_database_url)


async def _build(settings: Settings) -> web.Application:
    urls = await (_embedded_urls(settings) if settings.embedded else _external_urls(settings))
    return create_app(settings, database_url=urls.runtime, explorer_url=urls.explorer)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else the standard one.

    libuv's loop and transports cost the request path less per socket read, write and wake-up
    than the standard selector loop (the server does several of each per call: the client's
    request, the database round trips). uvloop does not exist on Windows, hence optional.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    loop = new_event_loop()
    log.info("starting", extra={"host": settings.host, "port": settings.port,
                                "event_loop": type(loop).__module__.split(".")[0]})
    try:
        web.run_app(
            _build(settings),
            loop=loop,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout + WIND_DOWN_SECONDS,
            access_log=None,
            print=None,
            handle_signals=True,
        )
    except (UnsafeRuntimeRole, TemplateError, QueryFileError, ConnectionError, OSError) as exc:
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("stopped")
