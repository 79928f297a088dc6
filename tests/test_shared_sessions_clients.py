"""The official `mcp` client against two server processes sharing their sessions through Redis,
behind a round-robin proxy of the test's own (no stickiness): every request of one session may
reach either process. (The lead's HAProxy tests do the same with a real balancer.)"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Tenant, make_settings
from faults import OwnRedis
from serving import ProductionLikeServer
from test_mcp_clients import Probe, _elicit, _sample, connect, fixture_tools

from spiral_mcp.handlers import builtin_tools
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app

# Headers of one hop, not to be passed on (RFC 9110 7.6.1), and those the proxy's own client
# and server set for their hop.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "host",
                  "content-length", "te", "trailer", "proxy-connection"})


class RoundRobin:
    """Each request to the next process in turn; answers, SSE streams too, passed on as they
    come."""

    def __init__(self, targets: list[str]) -> None:
        self._targets = itertools.cycle(targets)
        self._http = aiohttp.ClientSession(auto_decompress=False,
                                           timeout=aiohttp.ClientTimeout(total=None))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = next(self._targets)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._http.request(request.method, target + request.path_qs,
                                      headers=headers, data=await request.read(),
                                      allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def close(self) -> None:
        await self._http.close()


@pytest.fixture
async def balanced(database_urls: DatabaseUrls, module_redis: OwnRedis
                   ) -> AsyncIterator[TestServer]:
    """Two processes' apps and the proxy before them."""
    settings = make_settings(database_urls, REDIS_URL=module_redis.url)
    servers = []
    for _ in range(2):
        server = ProductionLikeServer(create_app(
            settings, database_url=database_urls.runtime,
            tools=[*builtin_tools(), *fixture_tools(Probe())]), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
    proxy = RoundRobin([str(s.make_url("")).rstrip("/") for s in servers])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    front = TestServer(app, host="127.0.0.1")
    await front.start_server()
    yield front
    await front.close()
    await proxy.close()
    for server in servers:
        await server.close()


@pytest.mark.parametrize("mode", ["legacy", "sse"])
async def test_the_official_client_across_two_processes(balanced: TestServer, tenant: Tenant,
                                                        mode: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(balanced, tenant, mode, sampling_callback=_sample,
                       elicitation_callback=_elicit) as client:
        assert client.protocol_version == "2025-11-25"
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"jira_get_issue", "test_ask"} <= names
        for key in ("WEB-1", "WEB-2", "WEB-3"):  # each on the other process than the last
            result = await client.call_tool("jira_get_issue", {"issue_key": key})
            assert result.structured_content["data"]["key"] == key
        # Asked on one process, answered (POSTed) to whichever comes next.
        asked = await client.call_tool("test_ask", {})
        assert asked.structured_content["data"] == {
            "sampled": "hi there", "elicited": {"action": "accept", "content": {"name": "Ada"}}}
        stepped = await client.call_tool("test_steps", {}, progress_callback=on_progress)
        assert stepped.structured_content["data"] == {"steps": 3}
        for _ in range(50):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert seen == [1, 2, 3]
