"""The first start on an empty database: a tenant and an API key with every scope, the key shown
once; and the line every start prints to say where the server listens.

Whoever starts the server must be able to use it at once: ``make run`` (the embedded database)
creates the demo tenant with demo data, a server on your own PostgreSQL (``docker compose up``)
creates the tenant BOOTSTRAP_TENANT names. Either happens only while the database has no tenant,
under a lock, so servers starting together create one between them, and a restart creates
nothing.

Both texts go to stderr, never to the log: the key must not reach log storage, and the lines are
for the person at the terminal, not for a log pipeline.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from .. import __version__, admin
from ..auth import SCOPES
from ..config import Settings
from ..queries import Queries

__all__ = ["INSPECTOR", "bootstrap", "print_listening", "public_url"]

# The MCP Inspector as README gives it: the current Inspector needs Node 22.19 or newer, and on an
# older Node npx quietly picks an old Inspector without --header; the version pin makes npx take
# this one, and node@22 runs it on a Node new enough.
INSPECTOR = "npx -y -p node@22 -p @modelcontextprotocol/inspector@2.12.0 mcp-inspector"


def public_url(settings: Settings) -> str:
    """The server's base URL as a client on this machine reaches it: a server listening on every
    interface (0.0.0.0, ::) is reached on loopback, as docker-compose.yml publishes it."""
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding to it
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def print_listening(settings: Settings) -> None:
    """One line at every start, once the server listens: where to point a client."""
    print(f"spiral-mcp {__version__}: serving MCP at {public_url(settings)}/mcp "
          "(Ctrl+C stops it)", file=sys.stderr, flush=True)


async def bootstrap(admin_url: str, settings: Settings, *, name: str, demo: bool) -> None:
    """On an empty database: create the tenant ``name`` (with the demo data when ``demo``) and a
    key with every scope, and print the key once. Nothing when any tenant exists."""
    from .. import demo as demo_data

    queries = Queries.load()
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await queries.lock_first_start(conn)
            if await queries.has_tenants(conn):
                return
            tenant_id = await admin.create_tenant(conn, queries, name)
            _, secret = await admin.create_api_key(
                conn, queries, tenant_id=tenant_id, name="first start", scopes=list(SCOPES),
                user="demo@example.com" if demo else None,
            )
            summary = (await demo_data.load_demo(conn, queries, tenant_id=tenant_id)
                       if demo else None)
    finally:
        await conn.close()
    _print_banner(settings, name=name, tenant_id=tenant_id, secret=secret, summary=summary)


def _command() -> str:
    """This installation's ``spiral-mcp`` script, as a client starting it needs it: a full path
    (Claude Desktop does not start servers in this folder, nor with this PATH)."""
    script = Path(sys.executable).with_name("spiral-mcp")
    return str(script) if script.exists() else "spiral-mcp"


def _desktop_config(settings: Settings, secret: str) -> dict[str, Any]:
    """Claude Desktop's entry: on the embedded database, Desktop starts ``spiral-mcp stdio`` on
    the same data (no Node needed); on your own PostgreSQL, whose URL may only make sense where
    this server runs (a container's), it reaches this server through ``mcp-remote``."""
    if settings.embedded:
        server: dict[str, Any] = {"command": _command(), "args": ["stdio"], "env": {
            "SPIRAL_API_KEY": secret, "SPIRAL_DATA_DIR": str(settings.data_dir)}}
    else:
        server = {"command": "npx",
                  "args": ["-y", "mcp-remote", f"{public_url(settings)}/mcp", "--header",
                           "Authorization:${SPIRAL_AUTH}"],
                  "env": {"SPIRAL_AUTH": f"Bearer {secret}"}}
    return {"mcpServers": {"spiral": server}}


def _print_banner(settings: Settings, *, name: str, tenant_id: uuid.UUID, secret: str,
                  summary: dict[str, Any] | None) -> None:
    url = public_url(settings)
    desktop = _desktop_config(settings, secret)
    created = (f"a demo tenant with {summary.get('work_items', 0)} work items in "
               f"{summary.get('projects', 0)} projects" if summary is not None
               else f"the tenant {name!r} (BOOTSTRAP_TENANT)")
    lines = [
        "",
        f"spiral-mcp: first start - created {created}.",
        f"  tenant id: {tenant_id}",
        f"  API key (shown once, store it now): {secret}",
        "",
        "  Claude Code:",
        f'    claude mcp add --transport http spiral {url}/mcp '
        f'--header "Authorization: Bearer {secret}"',
        "  Claude Desktop (claude_desktop_config.json"
        + ("; Desktop starts spiral-mcp stdio itself, no Node needed):" if settings.embedded
           else "):"),
        *("    " + line for line in
          orjson.dumps(desktop, option=orjson.OPT_INDENT_2).decode().splitlines()),
        "  MCP Inspector (Node 22.19 or newer; this command brings one):",
        f'    {INSPECTOR} --server-url {url}/mcp --transport http '
        f'--header "Authorization: Bearer {secret}"',
        "  Web console (keys, sources and their syncs, audit log, usage, project dashboards):",
        f"    {url}/admin (sign in with this key)",
    ]
    if settings.spiral_secret_key is None and not settings.embedded:
        lines.append("  Sources (Jira, GitHub, Asana) need SPIRAL_SECRET_KEY: see README, "
                     "Sources.")
    lines.append("")
    print("\n".join(lines), file=sys.stderr, flush=True)
