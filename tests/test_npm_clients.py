"""The clients of the npm registry a person reaches for first, `mcp-remote` and the MCP Inspector's
CLI, against the real server (issue 19: "tried as a new user would"): given a wrong API key,
each shows the server's own message, not an OAuth flow it went looking for; given a right one, it
works.

Runs only with CONFORMANCE=1 (CI sets it): like the conformance suite, it needs npx and, on a
first run, the npm registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestServer

from spiral_mcp.handlers import builtin_tools
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from tests.conftest import Tenant, make_settings
from tests.serving import ProductionLikeServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CONFORMANCE") != "1",
                       reason="set CONFORMANCE=1 to run the npm clients (needs npx)"),
]

# Pinned, as the conformance suite is: a new release must not change what CI checks unseen.
MCP_REMOTE = "mcp-remote@0.15.1"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
WRONG_KEY = "spk_" + "0" * 64 + "x" * 43
KEY_MESSAGE = "the API key is not valid"


@pytest.fixture
async def server(database_urls: DatabaseUrls) -> AsyncIterator[TestServer]:
    settings = make_settings(database_urls)
    app = create_app(settings, database_url=database_urls.runtime, tools=builtin_tools())
    server = ProductionLikeServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def npx(*argv: str, stdin: bytes = b"", until: str | None = None,
              timeout: float = 240) -> tuple[int, str]:
    """Run an npm client, feeding it ``stdin``; its exit status and everything it printed. With
    ``until``, its input stays open (a stdio proxy shuts down at its end) until that text has
    been printed; a client still running then, or at the timeout, is stopped."""
    process = await asyncio.create_subprocess_exec(
        "npx", "-y", *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    if until is None:
        process.stdin.close()
    output = bytearray()

    async def read() -> None:
        while chunk := await process.stdout.read(65536):
            output.extend(chunk)
            if until is not None and until.encode() in output:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), timeout)
    # npx runs the client as a child: the whole process group goes, or the client lives on
    # with its streams to the server open.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
    return process.returncode or 0, output.decode(errors="replace")


def initialize() -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}) + b"\n"


async def test_mcp_remote_shows_the_servers_message_for_a_wrong_key(server: TestServer) -> None:
    _, said = await npx(MCP_REMOTE, str(server.make_url("/mcp")), "--header",
                        f"Authorization: Bearer {WRONG_KEY}", stdin=initialize(), timeout=120)
    assert KEY_MESSAGE in said, said[-3000:]
    assert "Dynamic Client Registration" not in said, said[-3000:]


async def test_mcp_remote_proxies_with_a_right_key(server: TestServer, tenant: Tenant) -> None:
    listing = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}) + b"\n"
    initialized = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + b"\n"
    _, said = await npx(MCP_REMOTE, str(server.make_url("/mcp")), "--header",
                        f"Authorization: Bearer {tenant.key}",
                        stdin=initialize() + initialized + listing, until="jira_search",
                        timeout=120)
    assert "jira_search" in said, said[-3000:]


async def test_the_inspector_cli_shows_the_servers_message_for_a_wrong_key(
        server: TestServer) -> None:
    status, said = await npx(INSPECTOR, "--cli", str(server.make_url("/mcp")), "--transport",
                             "http", "--header", f"Authorization: Bearer {WRONG_KEY}",
                             "--method", "tools/list")
    assert status != 0
    assert KEY_MESSAGE in said, said[-3000:]
    assert "requires a TTY" not in said, said[-3000:]


async def test_the_inspector_cli_lists_the_tools_with_a_right_key(
        server: TestServer, tenant: Tenant) -> None:
    status, said = await npx(INSPECTOR, "--cli", str(server.make_url("/mcp")), "--transport",
                             "http", "--header", f"Authorization: Bearer {tenant.key}",
                             "--method", "tools/list")
    assert status == 0, said[-3000:]
    assert "jira_search" in said, said[-3000:]
