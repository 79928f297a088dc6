"""A server process killed (SIGKILL) mid-call, with sessions shared through Redis: another
process answers the call as failed on the session's stream, writes its audit row, and the
session goes on. Real `spiral-mcp serve` processes sharing the test database and a Redis of the
test's own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from faults import OwnRedis
from test_shutdown import SLOW_SQL, _free_port, _serve
from test_transports import read_event

from spiral_mcp.protocol.shared_reaper import LOST_MESSAGE, PROCESS_LOST

pytestmark = pytest.mark.slow

STREAM = "text/event-stream"


async def _ready(http: aiohttp.ClientSession, base: str) -> None:
    for _ in range(150):
        try:
            async with http.get(f"{base}/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"the server at {base} did not become ready")


@contextlib.asynccontextmanager
async def _two_servers(database_urls, tmp_path: Path, **env: str
                       ) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, str]]]:
    """Two real `spiral-mcp serve` processes sharing a Redis of the test's own, both ready, as
    (process, base URL); killed, and the Redis stopped, as the test ends."""
    if not OwnRedis.available():
        pytest.skip("redis-server is not installed")
    redis_server = OwnRedis(tmp_path)
    redis_server.start()
    servers: list[tuple[asyncio.subprocess.Process, str]] = []
    try:
        for _ in range(2):
            port = _free_port()
            process = await _serve(database_urls, port, REDIS_URL=redis_server.url, **env)
            servers.append((process, f"http://127.0.0.1:{port}"))
        async with aiohttp.ClientSession() as http:
            for _, base in servers:
                await _ready(http, base)
        yield servers
    finally:
        for process, _ in servers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        redis_server.stop()


def _headers(tenant: Any, sid: str | None = None, accept: str = "application/json, "
             "text/event-stream") -> dict[str, str]:
    headers = {**tenant.headers, "Accept": accept, "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
    if sid is not None:
        headers["Mcp-Session-Id"] = sid
    return headers


async def _session(http: aiohttp.ClientSession, opened_on: str, initialized_on: str,
                   tenant: Any, capabilities: dict[str, Any]) -> str:
    made = await http.post(f"{opened_on}/mcp", headers=_headers(tenant), data=orjson.dumps(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities,
                    "clientInfo": {"name": "t", "version": "1"}}}))
    assert made.status == 200, await made.text()
    sid = made.headers["Mcp-Session-Id"]
    initialized = await http.post(
        f"{initialized_on}/mcp", headers=_headers(tenant, sid),
        data=orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert initialized.status == 202
    return sid


async def _audited(admin_conn: asyncpg.Connection, tenant_id: Any) -> list[asyncpg.Record]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await admin_conn.fetch(
            "SELECT tool, outcome, error_code FROM audit_log WHERE error_code = $1",
            PROCESS_LOST)


async def test_a_call_of_a_killed_process_is_answered_by_another(
        database_urls, make_tenant, admin_conn: asyncpg.Connection, tmp_path: Path) -> None:
    tenant = await make_tenant(demo=True)
    bystander = await make_tenant(name="bystander")
    env = {"EXPLORER_TIMEOUT_S": "60"}
    async with _two_servers(database_urls, tmp_path, **env) as servers, \
            aiohttp.ClientSession() as http:
        (victim, victim_url), (_, survivor_url) = servers
        sid = await _session(http, victim_url, survivor_url, tenant, {})
        # This client can be asked things: its calls are answered as (resumable) streams.
        asking = await _session(http, victim_url, survivor_url, tenant, {"elicitation": {}})
        stream = await http.get(f"{survivor_url}/mcp",
                                headers=_headers(tenant, sid, accept=STREAM))
        assert stream.status == 200

        call = asyncio.ensure_future(http.post(
            f"{victim_url}/mcp", headers=_headers(tenant, sid), data=orjson.dumps(
                {"jsonrpc": "2.0", "id": 42, "method": "tools/call",
                 "params": {"name": "explorer_query", "arguments": {"sql": SLOW_SQL}}})))
        streamed = await http.post(
            f"{victim_url}/mcp", headers=_headers(tenant, asking), data=orjson.dumps(
                {"jsonrpc": "2.0", "id": 44, "method": "tools/call",
                 "params": {"name": "explorer_query", "arguments": {"sql": SLOW_SQL}}}))
        priming = await read_event(streamed)
        assert priming["data"] == ""
        await asyncio.sleep(1.0)  # the queries are running
        assert not call.done()
        victim.kill()
        await victim.wait()
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(call, 10)

        # The survivor notices the heartbeat gone and answers the call on the stream.
        event = await read_event(stream, timeout=30)
        answer = orjson.loads(event["data"])
        assert answer == {"jsonrpc": "2.0", "id": 42,
                          "error": {"code": -32603, "message": LOST_MESSAGE}}
        assert event["id"].count("-") == 1
        stream.close()
        # The streamed call's answer comes on its own stream, resumed on the survivor.
        resumed = await http.get(f"{survivor_url}/mcp", headers={
            **_headers(tenant, asking, accept=STREAM), "Last-Event-ID": priming["id"]})
        assert resumed.status == 200
        event = await read_event(resumed, timeout=30)
        assert orjson.loads(event["data"]) == {
            "jsonrpc": "2.0", "id": 44, "error": {"code": -32603, "message": LOST_MESSAGE}}
        assert event["id"].split("_")[0] == priming["id"].split("_")[0]
        with pytest.raises(EOFError):
            await read_event(resumed)

        # Their audit rows says so (written by the survivor, under the tenant).
        deadline = time.monotonic() + 20
        while not (rows := await _audited(admin_conn, tenant.id)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        while len(rows) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            rows = await _audited(admin_conn, tenant.id)
        assert [dict(r) for r in rows] == 2 * [
            {"tool": "explorer_query", "outcome": "error", "error_code": PROCESS_LOST}]
        assert await _audited(admin_conn, bystander.id) == []

        # The session goes on, and its call place was freed.
        ping = await http.post(f"{survivor_url}/mcp", headers=_headers(tenant, sid),
                               data=orjson.dumps({"jsonrpc": "2.0", "id": 43,
                                                  "method": "ping"}))
        assert ping.status == 200


WORK_ITEMS = "spiral://explorer/views/work_items"


def _rpc(request_id: int, method: str, **params: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


async def test_a_stream_of_a_killed_process_resumes_on_another(
        database_urls, make_tenant, tmp_path: Path) -> None:
    """The process holding a session's GET stream is killed: what the session's calls on another
    process announce meanwhile is kept, and the client resumes the stream there from its last
    event id, missing nothing."""
    tenant = await make_tenant(demo=True)

    async def create(request_id: int, summary: str) -> None:
        made = await http.post(f"{survivor_url}/mcp", headers=_headers(tenant, sid), data=_rpc(
            request_id, "tools/call", name="jira_create_issue",
            arguments={"project_key": "WEB", "summary": summary}))
        assert (await made.json())["result"]["isError"] is False

    async with _two_servers(database_urls, tmp_path) as servers, \
            aiohttp.ClientSession() as http:
        (victim, victim_url), (_, survivor_url) = servers
        sid = await _session(http, survivor_url, survivor_url, tenant, {})
        subscribed = await http.post(f"{survivor_url}/mcp", headers=_headers(tenant, sid),
                                     data=_rpc(1, "resources/subscribe", uri=WORK_ITEMS))
        assert subscribed.status == 200
        stream = await http.get(f"{victim_url}/mcp",
                                headers=_headers(tenant, sid, accept=STREAM))
        assert stream.status == 200
        await create(2, "before the kill")
        seen = await read_event(stream, timeout=30)
        assert orjson.loads(seen["data"])["params"] == {"uri": WORK_ITEMS}

        victim.kill()
        await victim.wait()
        await create(3, "while no process holds the stream")
        resumed = await http.get(f"{survivor_url}/mcp", headers={
            **_headers(tenant, sid, accept=STREAM), "Last-Event-ID": seen["id"]})
        assert resumed.status == 200
        missed = await read_event(resumed, timeout=30)
        assert orjson.loads(missed["data"]) == {
            "jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": WORK_ITEMS}}
        assert missed["id"] != seen["id"]
        # The resumed stream goes on live.
        await create(4, "after the resumption")
        live = await read_event(resumed, timeout=30)
        assert orjson.loads(live["data"])["method"] == "notifications/resources/updated"
        resumed.close()


async def test_a_legacy_sse_stream_of_a_killed_process_resumes_on_another(
        database_urls, make_tenant, tmp_path: Path) -> None:
    """2024-11-05's GET /sse: the process holding the stream is killed; the client reconnects
    on another process with the last event id it got (as an EventSource does by itself) and
    goes on with the same session, getting the answer it missed meanwhile. Another key cannot
    take the stream over, and an id the server never sent is refused."""
    tenant = await make_tenant(demo=True)
    stranger = await make_tenant(demo=True)
    json_headers = {**tenant.headers, "Content-Type": "application/json"}

    async def post(endpoint: str, body: bytes) -> None:
        sent = await http.post(f"{survivor_url}{endpoint}", headers=json_headers, data=body)
        assert sent.status == 202, await sent.text()

    def get_issue(request_id: int) -> bytes:
        return _rpc(request_id, "tools/call", name="jira_get_issue",
                    arguments={"issue_key": "WEB-1"})

    async with _two_servers(database_urls, tmp_path) as servers, \
            aiohttp.ClientSession() as http:
        (victim, victim_url), (_, survivor_url) = servers
        stream = await http.get(f"{victim_url}/sse",
                                headers={**tenant.headers, "Accept": STREAM})
        assert stream.status == 200
        endpoint_event = await read_event(stream, timeout=30)
        endpoint = endpoint_event["data"]
        sid = endpoint.rpartition("=")[2]
        assert endpoint_event["id"].startswith(f"{sid}/")
        await post(endpoint, _rpc(0, "initialize", protocolVersion="2024-11-05",
                                  capabilities={}, clientInfo={"name": "t", "version": "1"}))
        answered = await read_event(stream, timeout=30)
        assert orjson.loads(answered["data"])["id"] == 0
        await post(endpoint, orjson.dumps({"jsonrpc": "2.0",
                                           "method": "notifications/initialized"}))

        victim.kill()
        await victim.wait()
        await post(endpoint, get_issue(1))  # answered while no process holds the stream

        foreign = await http.get(f"{survivor_url}/sse", headers={
            **stranger.headers, "Accept": STREAM, "Last-Event-ID": answered["id"]})
        assert foreign.status == 404
        made_up = await http.get(f"{survivor_url}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": f"{sid}/not-an-id"})
        assert made_up.status == 400

        resumed = await http.get(f"{survivor_url}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": answered["id"]})
        assert resumed.status == 200
        again = await read_event(resumed, timeout=30)
        assert (again["event"], again["data"]) == ("endpoint", endpoint)
        missed = await read_event(resumed, timeout=30)
        call = orjson.loads(missed["data"])
        assert call["id"] == 1 and call["result"]["isError"] is False
        assert missed["id"].startswith(f"{sid}/") and missed["id"] != answered["id"]
        # The session goes on, live, on the resumed stream.
        await post(endpoint, get_issue(2))
        live = await read_event(resumed, timeout=30)
        assert orjson.loads(live["data"])["id"] == 2
        resumed.close()


async def test_a_legacy_stream_taken_over_survives_its_old_connection_closing(
        database_urls, make_tenant, tmp_path: Path) -> None:
    """The client resumes its /sse stream on another process while the first still holds it
    (a balancer cut the connection, say), then the first connection closes: the process that
    held it must not end the session, whose stream now lives elsewhere."""
    tenant = await make_tenant(demo=True)
    json_headers = {**tenant.headers, "Content-Type": "application/json"}
    async with _two_servers(database_urls, tmp_path) as servers, \
            aiohttp.ClientSession() as http:
        (_, first_url), (_, second_url) = servers
        old = await http.get(f"{first_url}/sse", headers={**tenant.headers, "Accept": STREAM})
        endpoint_event = await read_event(old, timeout=30)
        endpoint = endpoint_event["data"]
        resumed = await http.get(f"{second_url}/sse", headers={
            **tenant.headers, "Accept": STREAM, "Last-Event-ID": endpoint_event["id"]})
        assert resumed.status == 200
        assert (await read_event(resumed, timeout=30))["data"] == endpoint
        old.close()
        await asyncio.sleep(2.5)  # the first process notices its client gone (1 s reads)

        sent = await http.post(f"{first_url}{endpoint}", headers=json_headers, data=_rpc(
            0, "initialize", protocolVersion="2024-11-05", capabilities={},
            clientInfo={"name": "t", "version": "1"}))
        assert sent.status == 202, await sent.text()
        answered = await read_event(resumed, timeout=30)
        assert orjson.loads(answered["data"])["id"] == 0
        resumed.close()
