"""The official ``mcp`` client package against the product on a real port.

Three ways in: streamable HTTP at /mcp with the initialize handshake (mode="legacy"), /mcp in the
client's default mode (it probes ``server/discover`` and speaks the stateless 2026-07-28 era), and
the legacy HTTP+SSE transport at /sse. Each: initialize, list tools, call jira_get_issue (success
and a VALIDATION_ERROR result), ping, progress, a call cancelled by the client, and tools that ask
the client (a request to it on a session, a multi round-trip request when stateless).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from aiohttp.test_utils import TestServer
from conftest import Tenant, TenantFactory, make_settings
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged
from serving import ProductionLikeServer
from test_mrtr import two_closes

from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import DISPATCHER, SESSIONS
from tests.conformance_modern import CUSTOM_HEADER_SCHEMA

MODES = ("legacy", "auto", "sse")

_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_ANY_DATA: dict[str, Any] = {"type": "object"}


@dataclasses.dataclass
class Probe:
    """What the test-only tools saw: the slow tool's start and its cancellation."""

    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    finished: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def fixture_tools(probe: Probe) -> list[Tool]:
    async def slow(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        probe.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        probe.finished.set()
        return {"slept": True}

    async def steps(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        for done in range(1, 4):
            await ctx.progress(done, 3, f"step {done}")
            await asyncio.sleep(0.01)
        return {"steps": 3}

    async def ask(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        sampled = await ctx.ask("sampling/createMessage", {
            "messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}],
            "maxTokens": 10})
        elicited = await ctx.ask("elicitation/create", {
            "message": "Your name?", "requestedSchema": {
                "type": "object", "properties": {"name": {"type": "string"}}}})
        return {"sampled": sampled["content"]["text"], "elicited": elicited}

    return [
        Tool(name="test_ask", title="Ask", description="Asks the client (test only)",
             handler=ask, scope="read", call_class="read",
             input_schema=_OBJECT, output_schema=_ANY_DATA),
        Tool(name="test_slow", title="Slow", description="Sleeps until cancelled (test only)",
             handler=slow, scope="read", call_class="read",
             input_schema=_OBJECT, output_schema=_ANY_DATA),
        Tool(name="test_steps", title="Steps", description="Reports progress (test only)",
             handler=steps, scope="read", call_class="read",
             input_schema=_OBJECT, output_schema=_ANY_DATA),
        Tool(name="test_headers", title="Headers", description="Mirrors parameters into "
             "headers (test only)", handler=_echo, scope="read", call_class="read",
             input_schema=CUSTOM_HEADER_SCHEMA, output_schema=_ANY_DATA),
    ]


async def _echo(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return args


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def server(database_urls: DatabaseUrls, probe: Probe) -> AsyncIterator[TestServer]:
    settings = make_settings(database_urls)
    app = create_app(settings, database_url=database_urls.runtime,
                     tools=[*builtin_tools(), *fixture_tools(probe)])
    server = ProductionLikeServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def connect(server: TestServer, tenant: Tenant, mode: str,
                  **callbacks: Any) -> AsyncIterator[Client]:
    if mode == "sse":
        transport: Any = sse_client(str(server.make_url("/sse")), headers=tenant.headers)
        client_mode = "legacy"
    else:
        transport = streamable_http_client(
            str(server.make_url("/mcp")), http_client=httpx2.AsyncClient(headers=tenant.headers))
        client_mode = mode
    async with Client(transport, mode=client_mode, **callbacks) as client:
        yield client


def _expected_version(mode: str) -> str:
    return {"legacy": "2025-11-25", "auto": "2026-07-28", "sse": "2025-11-25"}[mode]


@pytest.mark.parametrize("mode", MODES)
async def test_handshake_tools_and_calls(server: TestServer, tenant: Tenant, mode: str) -> None:
    async with connect(server, tenant, mode) as client:
        assert client.protocol_version == _expected_version(mode)
        assert client.instructions and "jira_get_issue" in client.instructions
        # From initialize's result, or (2026-07-28) from the _meta of discover's.
        assert client.server_info is not None and client.server_info.name == "spiral-mcp"
        assert client.server_capabilities.tools is not None

        listing = await client.list_tools()
        names = {tool.name for tool in listing.tools}
        assert {"jira_get_issue", "test_slow", "test_steps"} <= names
        tool = next(t for t in listing.tools if t.name == "jira_get_issue")
        assert tool.input_schema["type"] == "object"
        assert tool.annotations is not None and tool.annotations.read_only_hint is True

        result = await client.call_tool("jira_get_issue", {"issue_key": "WEB-3"})
        assert result.is_error is False
        assert result.structured_content is not None
        assert result.structured_content["success"] is True
        assert result.structured_content["data"]["key"] == "WEB-3"
        assert result.structured_content["tenant_id"] == str(tenant.id)

        bad = await client.call_tool("jira_get_issue", {"issue_key": "bad"})
        assert bad.is_error is True
        assert bad.structured_content is not None
        assert bad.structured_content["error"]["code"] == "VALIDATION_ERROR"

        missing = await client.call_tool("jira_get_issue", {"issue_key": "WEB-99999"})
        assert missing.is_error is True
        assert missing.structured_content["error"]["code"] == "NOT_FOUND"

        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_tool", {})
        assert unknown.value.error.code == -32602

        if mode != "auto":
            # The stateless era has no ping (the client deprecates it there).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert (await client.send_ping()).model_dump(exclude_none=True) in ({}, {
                    "result_type": "complete"})


async def test_the_official_client_listens_for_changes(server: TestServer,
                                                        tenant: Tenant) -> None:
    async with connect(server, tenant, "auto") as client, \
            client.listen(tools_list_changed=True, resources_list_changed=True) as subscription:
        # What the server agreed to: tool list changes; it sends no resource list changes.
        assert subscription.honored.tools_list_changed is True
        assert not subscription.honored.resources_list_changed
        server.app[DISPATCHER].registry.add(Tool(
            name="test_new", title="New", description="Added while serving (test only)",
            handler=_nothing, scope="read", call_class="read", input_schema=_OBJECT,
            output_schema=_ANY_DATA))
        async with asyncio.timeout(5):
            event = await anext(subscription)
        assert isinstance(event, ToolsListChanged)
        assert "test_new" in {tool.name for tool in (await client.list_tools()).tools}


async def _nothing(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {}


async def test_the_official_client_mirrors_header_parameters(server: TestServer,
                                                             tenant: Tenant) -> None:
    # The client sends Mcp-Param-Region (Base64 for this value) and Mcp-Param-Priority; the
    # server checks them against the arguments and lets the call through.
    async with connect(server, tenant, "auto") as client:
        await client.list_tools()  # the client learns the annotations from the listing
        arguments = {"region": "Zürich ", "priority": 3}
        result = await client.call_tool("test_headers", arguments)
        assert result.is_error is False
        assert result.structured_content is not None
        assert result.structured_content["data"] == arguments


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications(server: TestServer, tenant: Tenant, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(server, tenant, mode) as client:
        result = await client.call_tool("test_steps", {}, progress_callback=on_progress)
        assert result.is_error is False
        assert result.structured_content["data"] == {"steps": 3}
        # Progress arrives before the result on the same stream; allow the callback to run.
        for _ in range(50):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_stops_the_handler(server: TestServer, tenant: Tenant, probe: Probe,
                                        mode: str, admin_conn) -> None:
    admin = admin_conn
    async with connect(server, tenant, mode) as client:
        call = asyncio.ensure_future(client.call_tool("test_slow", {}))
        await asyncio.wait_for(probe.started.wait(), 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The server stopped the handler itself, not merely stopped waiting for it.
        await asyncio.wait_for(probe.cancelled.wait(), 10)
        assert not probe.finished.is_set()

        # The session (or, stateless, the connection) still works afterwards.
        result = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
        assert result.is_error is False
        assert result.structured_content["data"]["key"] == "WEB-1"

        if mode != "auto":
            # No call is left in flight on the session.
            sessions = server.app[SESSIONS]
            assert all(not s.inflight for s in sessions._sessions.values())

    # The cancelled call is still accounted for: its audit row says so.
    async with admin.transaction():
        await admin.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        for _ in range(50):
            codes = await admin.fetch(
                "SELECT error_code FROM audit_log WHERE tool = 'test_slow'")
            if codes:
                break
            await asyncio.sleep(0.1)
    assert [r["error_code"] for r in codes] == ["CANCELLED"]


async def _sample(context: Any, params: types.CreateMessageRequestParams
                  ) -> types.CreateMessageResult:
    assert params.messages[0].content.text == "Say hi"
    return types.CreateMessageResult(role="assistant", model="test-model",
                                     content=types.TextContent(type="text", text="hi there"))


async def _elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    assert params.message == "Your name?"
    return types.ElicitResult(action="accept", content={"name": "Ada"})


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_asks_the_client_for_sampling_and_elicitation(
        server: TestServer, tenant: Tenant, mode: str) -> None:
    # On a session: requests to the client; stateless (auto): InputRequiredResult, one round per
    # question, which the client's driver answers with the same callbacks and retries.
    async with connect(server, tenant, mode, sampling_callback=_sample,
                       elicitation_callback=_elicit) as client:
        result = await client.call_tool("test_ask", {})
        assert result.is_error is False, result
        assert result.structured_content["data"] == {
            "sampled": "hi there", "elicited": {"action": "accept", "content": {"name": "Ada"}}}
        sessions = server.app[SESSIONS]
        assert all(not s.asked for s in sessions._sessions.values())


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_without_the_capability_is_not_asked(
        server: TestServer, tenant: Tenant, mode: str) -> None:
    async with connect(server, tenant, mode) as client:
        if mode == "auto":
            # Stateless, asking what the request's _meta does not declare is a protocol error.
            with pytest.raises(MCPError) as refused:
                await client.call_tool("test_ask", {})
            assert refused.value.error.code == -32021
            assert refused.value.error.data == {"requiredCapabilities": {"sampling": {}}}
            return
        result = await client.call_tool("test_ask", {})
        assert result.is_error is True
        error = result.structured_content["error"]
        assert error["code"] == "UPSTREAM_ERROR"
        assert "sampling" in error["message"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_product_tool_asks_which_status_it_means(
        server: TestServer, tenant: Tenant, mode: str, admin_conn) -> None:
    await two_closes(admin_conn, tenant)
    offered: list[Any] = []

    async def choose(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        offered.append(params.requested_schema["properties"]["status"]["enum"])
        return types.ElicitResult(action="accept", content={"status": "Won't Do"})

    async with connect(server, tenant, mode, elicitation_callback=choose) as client:
        created = await client.call_tool("jira_create_issue", {
            "project_key": "WEB", "summary": "Asked, not guessed"})
        key = created.structured_content["data"]["key"]
        moved = await client.call_tool("jira_transition_issue", {
            "issue_key": key, "status": "close", "idempotency_key": f"close-{mode}"})
        assert moved.is_error is False, moved
        assert moved.structured_content["data"]["to_status"] == "Won't Do"
    assert offered == [["Done", "Won't Do"]]


SEARCH_HELD_SECONDS = 6.0  # longer than httpx2's default 5 s read timeout


@pytest.mark.slow
async def test_the_readme_python_snippet_survives_a_long_call(
        database_urls: DatabaseUrls, make_tenant: TenantFactory, admin_conn, queries,
        serve_fake, tmp_path) -> None:
    """README's Python example, run as written (its URL pointed at this server), against a
    source whose search takes longer than httpx2's default read timeout: sources_sync answers
    after it, and the snippet's timeout carries the call through."""
    import os
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path

    from aiohttp import web

    from spiral_mcp.sources import manage
    from spiral_mcp.sources.secrets import SecretBox
    from tests.fake_jira import FakeJira

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    code = snippet.group(1)
    assert 'URL = "http://127.0.0.1:8055/mcp"\n' in code

    @web.middleware
    async def slow_search(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/search/jql"):
            await asyncio.sleep(SEARCH_HELD_SECONDS)
        return await handler(request)

    jira = FakeJira()
    app = jira.app()
    app.middlewares.insert(0, slow_search)
    await serve_fake(jira, app=app)
    secret_key = "x" * 43 + "="
    tenant = await make_tenant(scopes=("read", "admin"))
    async with admin_conn.transaction():
        await manage.add_source(
            admin_conn, queries, SecretBox(secret_key), tenant_id=tenant.id, kind="jira",
            name="slow jira", base_url=jira.base_url, projects={"ABC": "ABC"},
            email=jira.email, token=jira.token)

    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=secret_key, SYNC_INTERVAL="0")
    server = ProductionLikeServer(create_app(settings, database_url=database_urls.runtime),
                                  host="127.0.0.1")
    await server.start_server()
    try:
        code = code.replace('URL = "http://127.0.0.1:8055/mcp"',
                            f'URL = "{server.make_url("/mcp")}"')
        script = tmp_path / "snippet.py"
        script.write_text(code)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env={**os.environ, "SPIRAL_KEY": tenant.key},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        elapsed = time.monotonic() - started
    finally:
        await server.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert elapsed > SEARCH_HELD_SECONDS
    assert out.decode().startswith("slow jira {'success': True, 'data': {"), out.decode()
