"""Several ``spiral-mcp serve`` processes behind a real HAProxy (tests/balancer.py): round robin per
request, no stickiness, one database, one Redis, one SPIRAL_SECRET_KEY.

The official ``mcp`` client in its three ways in (/mcp with the handshake, /mcp in its default
mode, which speaks the stateless 2026-07-28 era, and /sse), a call with progress, /execute,
a backend killed with SIGKILL and restarted, and the MCP conformance suite (CONFORMANCE=1), all
through the balancer. The stateless era and /execute run on STATELESS_BACKENDS processes; the
session eras on SESSION_BACKENDS (a session across a killed backend needs two or more).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from aiohttp import web
from conftest import LOOPBACK_SETTING, Tenant, TenantFactory
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from test_first_start import environment

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.sources import manage
from spiral_mcp.sources.secrets import SecretBox
from tests.balancer import Balancer, balanced
from tests.conformance_suites import SUITES, failed_lines
from tests.fake_jira import FakeJira

ROOT = Path(__file__).resolve().parent.parent

# Sessions (2024-11-05 over /sse, 2025-03-26 … 2025-11-25 over /mcp) are shared through Redis
# (issue #20): any of the processes serves any request of theirs.
SESSION_BACKENDS = 3
# The stateless era and /execute keep nothing between requests: any process serves any request.
STATELESS_BACKENDS = 3

MODES = ("legacy", "auto", "sse")
# A client that waits for an answer no process will send (a session another process holds)
# fails the test in this time instead of hanging it.
CLIENT_SECONDS = 60
SECRET_KEY = "b" * 43 + "="  # a Fernet key: the same in every process, as the README says


def backends_for(mode: str) -> int:
    return STATELESS_BACKENDS if mode == "auto" else SESSION_BACKENDS


Fronts = Callable[[int], Awaitable[Balancer]]


@pytest.fixture(scope="module")
async def fronts(haproxy: str, database_urls: DatabaseUrls,
                 redis_url: str) -> AsyncIterator[Fronts]:
    """``await fronts(k)``: k server processes behind HAProxy, started once for the module and
    shared by its tests (a restarted backend is back up before its test ends)."""
    env = environment(
        DATABASE_URL=database_urls.runtime, EXPLORER_DATABASE_URL=database_urls.explorer,
        REDIS_URL=redis_url, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0",
        AUTH_CACHE_TTL="0", LOG_LEVEL="warning",
        SOURCE_PRIVATE_NETWORKS=LOOPBACK_SETTING,  # the fake source is on loopback
        PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    command = [sys.executable, "-m", "spiral_mcp", "serve"]
    started: dict[int, Balancer] = {}
    async with contextlib.AsyncExitStack() as stack:
        async def front(count: int) -> Balancer:
            if count not in started:
                started[count] = await stack.enter_async_context(balanced(count, command, env))
            return started[count]

        yield front


@contextlib.asynccontextmanager
async def connect(front: Balancer, tenant: Tenant, mode: str,
                  **callbacks: Any) -> AsyncIterator[Client]:
    if mode == "sse":
        transport: Any = sse_client(f"{front.url}/sse", headers=tenant.headers)
        client_mode = "legacy"
    else:
        transport = streamable_http_client(
            f"{front.url}/mcp", http_client=httpx2.AsyncClient(headers=tenant.headers))
        client_mode = mode
    async with asyncio.timeout(CLIENT_SECONDS), Client(transport, mode=client_mode,
                                                        **callbacks) as client:
        yield client


async def every_backend_served(front: Balancer, before: dict[str, int]) -> None:
    """Round robin reached every process since ``before`` (HAProxy's own counts)."""
    after = await front.served()
    assert all(after[name] > before[name] for name in before), (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_the_official_client_through_the_balancer(fronts: Fronts, tenant: Tenant,
                                                        mode: str) -> None:
    front = await fronts(backends_for(mode))
    before = await front.served()
    async with connect(front, tenant, mode) as client:
        assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        assert client.server_info is not None and client.server_info.name == "spiral-mcp"
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"jira_get_issue", "jira_search"} <= names
        for number in range(1, 5):
            got = await client.call_tool("jira_get_issue", {"issue_key": f"WEB-{number}"})
            assert got.is_error is False, got
            assert got.structured_content is not None
            assert got.structured_content["data"]["key"] == f"WEB-{number}"
            assert got.structured_content["tenant_id"] == str(tenant.id)
        for project in ("WEB", "API", "OPS"):
            found = await client.call_tool("jira_search",
                                           {"jql": f"project = {project}", "limit": 5})
            assert found.is_error is False, found
            issues = found.structured_content["data"]["issues"]
            assert len(issues) == 5 and all(i["key"].startswith(f"{project}-") for i in issues)
        missing = await client.call_tool("jira_get_issue", {"issue_key": "WEB-99999"})
        assert missing.is_error is True
        assert missing.structured_content["error"]["code"] == "NOT_FOUND"
    await every_backend_served(front, before)


@dataclasses.dataclass
class PagedSource:
    """A tenant with a Jira source of two pages; the fake holds the second page back until the
    test lets it go (``first_progress``), and says whether it was let go (``released``)."""

    tenant: Tenant
    source_id: str
    first_progress: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    released: list[bool] = dataclasses.field(default_factory=list)


@pytest.fixture
async def paged_source(make_tenant: TenantFactory, admin_conn, queries,
                       serve_fake) -> PagedSource:
    jira = FakeJira()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for n in range(1, 121):  # two pages of the sync's 100
        jira.add_issue(f"ABC-{n}", summary=f"Issue {n}", updated=start + timedelta(minutes=n))
    tenant = await make_tenant(scopes=("read", "write", "admin"))
    source = PagedSource(tenant=tenant, source_id="")
    pages = 0

    @web.middleware
    async def hold_the_second_page(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal pages
        if request.path.endswith("/search/jql"):
            pages += 1
            if pages == 2:
                # A guard, not a measure: unbuffered, the first page's progress comes at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(source.first_progress.wait(), 20)
                source.released.append(source.first_progress.is_set())
        return await handler(request)

    app = jira.app()
    app.middlewares.insert(0, hold_the_second_page)
    await serve_fake(jira, app=app)
    async with admin_conn.transaction():
        source.source_id = str(await manage.add_source(
            admin_conn, queries, SecretBox(SECRET_KEY), tenant_id=tenant.id, kind="jira",
            name="paged jira", base_url=jira.base_url, projects={"ABC": "ABC"},
            email=jira.email, token=jira.token))
    return source


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_progress_through_the_balancer(fronts: Fronts, paged_source: PagedSource,
                                             mode: str) -> None:
    # The notifications come on the stream of the call's own answer (or the /sse stream), through
    # HAProxy as they are sent: the second page is fetched only once the client has the first
    # page's progress, which a balancer holding the stream back until the answer never delivers.
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))
        paged_source.first_progress.set()

    async with connect(await fronts(backends_for(mode)), paged_source.tenant, mode) as client:
        result = await client.call_tool(
            "sources_sync", {"source_id": paged_source.source_id, "full": True},
            progress_callback=on_progress)
        assert result.is_error is False, result
        assert result.structured_content["data"]["items"] == 120
        assert result.structured_content["data"]["pages"] == 2
        for _ in range(50):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
    assert paged_source.released == [True]
    assert [progress for progress, _, _ in seen] == [1, 2], seen


async def _execute(http: aiohttp.ClientSession, front: Balancer, tenant: Tenant,
                   key: str) -> dict[str, Any]:
    async with http.post(f"{front.url}/execute", headers=tenant.headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "jira_get_issue", "arguments": {"issue_key": key}}}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["result"]["structuredContent"]


@pytest.mark.slow
async def test_execute_survives_a_killed_backend(fronts: Fronts, tenant: Tenant) -> None:
    front = await fronts(STATELESS_BACKENDS)
    async with aiohttp.ClientSession() as http:
        before = await front.served()
        for number in range(1, 7):
            got = await _execute(http, front, tenant, f"API-{number}")
            assert got["success"] is True and got["data"]["key"] == f"API-{number}"
        await every_backend_served(front, before)

        # SIGKILL: HAProxy takes it out, and every call is served by the others meanwhile.
        await front.kill(0)
        try:
            for number in range(1, 7):
                assert (await _execute(http, front, tenant, f"OPS-{number}"))["success"] is True
        finally:
            await front.restart(0)
        # Back in the rotation.
        before = await front.served()
        for number in range(1, 7):
            assert (await _execute(http, front, tenant, f"WEB-{number}"))["success"] is True
        await every_backend_served(front, before)


@pytest.mark.slow
async def test_the_stateless_client_goes_on_across_a_killed_backend(
        fronts: Fronts, tenant: Tenant) -> None:
    front = await fronts(STATELESS_BACKENDS)
    async with connect(front, tenant, "auto") as client:
        assert (await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})).is_error is False
        await front.kill(1)
        try:
            for number in range(2, 6):
                got = await client.call_tool("jira_get_issue", {"issue_key": f"WEB-{number}"})
                assert got.is_error is False and got.structured_content["data"]["key"] == (
                    f"WEB-{number}")
        finally:
            await front.restart(1)
        assert (await client.call_tool("jira_get_issue", {"issue_key": "WEB-6"})).is_error is False



@pytest.mark.slow
@pytest.mark.skipif(SESSION_BACKENDS < 2, reason="a session outlives its process once sessions "
                    "are shared through Redis: SESSION_BACKENDS > 1")
async def test_a_session_goes_on_across_a_killed_backend(fronts: Fronts, tenant: Tenant) -> None:
    # Whichever process held the session's GET stream or served its last call: the next calls,
    # on the others, continue the same session.
    front = await fronts(SESSION_BACKENDS)
    async with connect(front, tenant, "legacy") as client:
        assert (await client.call_tool("jira_get_issue", {"issue_key": "API-1"})).is_error is False
        await front.kill(0)
        try:
            for number in range(2, 6):
                got = await client.call_tool("jira_get_issue", {"issue_key": f"API-{number}"})
                assert got.is_error is False, got
        finally:
            await front.restart(0)
        assert (await client.call_tool("jira_get_issue", {"issue_key": "API-6"})).is_error is False


# -- the MCP conformance suite through the balancer ----------------------------------------------

def suite_backends(suite: str) -> int:
    return STATELESS_BACKENDS if suite == "2026-07-28" else SESSION_BACKENDS


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CONFORMANCE") != "1",
                    reason="set CONFORMANCE=1 to run the MCP conformance suite")
@pytest.mark.parametrize("suite", list(SUITES))
def test_conformance_through_the_balancer(haproxy: str, superuser_url: str, redis_url: str,
                                          suite: str) -> None:
    env = {**os.environ, "TEST_DATABASE_URL": superuser_url, "REDIS_URL": redis_url}
    env.pop("CONFORMANCE_ARGS", None)  # a developer's --scenario must not narrow CI's run
    completed = subprocess.run(
        [sys.executable, "-m", "tests.conformance_harness", "--suite", suite,
         "--balanced", str(suite_backends(suite))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = completed.stdout + completed.stderr
    assert failed_lines(output) == [], output[-5000:]
    assert completed.returncode == 0, output[-5000:]
    assert re.search(r"Total: [1-9]\d* passed, 0 failed", output), output[-5000:]
    # Every process served a share of it.
    served = re.search(r"requests per backend (\{.*\})", output)
    assert served is not None, output[-5000:]
    counts = [int(n) for n in re.findall(r": (\d+)", served.group(1))]
    assert len(counts) == suite_backends(suite) and min(counts) > 0, served.group(1)
