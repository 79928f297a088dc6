"""The tasks extension (io.modelcontextprotocol/tasks) through /mcp in the stateless era, over
real HTTP against real PostgreSQL: the lifecycle, questions to the client, cancellation, another
key's and another tenant's tasks, a restart (graceful and a killed process), expiry, and the
product's long calls (sources_sync against the fake Jira, explorer_query, a report) as tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from spiral_mcp import admin
from spiral_mcp.handlers import builtin_tools
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from tests.conformance_tasks import task_fixture_tools
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.serving import app_clients

ROOT = Path(__file__).resolve().parent.parent
MODERN = "2026-07-28"
TASKS = {"extensions": {"io.modelcontextprotocol/tasks": {}}, "elicitation": {}}
ORPHANED = "stopped before it finished"

Serve = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    """``await serve(**env)``: the app with the task fixtures beside the product's tools."""
    async with app_clients() as start_client:
        async def start(**env: str) -> TestClient:
            settings = make_settings(database_urls, TASK_POLL_INTERVAL="0.25", **env)
            return await start_client(create_app(
                settings, database_url=database_urls.runtime,
                explorer_url=database_urls.explorer,
                tools=[*builtin_tools(), *task_fixture_tools()]))

        yield start


def headers_for(tenant: Tenant | str, method: str, name: str | None) -> dict[str, str]:
    key = tenant if isinstance(tenant, str) else tenant.key
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


async def rpc(client: TestClient | str, tenant: Tenant | str, method: str,
              capabilities: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    """One stateless-era request; the JSON-RPC answer (result or error)."""
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                       "io.modelcontextprotocol/clientCapabilities":
                       TASKS if capabilities is None else capabilities}
    name = params.get("name") if method == "tools/call" else params.get("taskId")
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    headers = headers_for(tenant, method, name)
    if isinstance(client, str):  # a server in another process
        async with aiohttp.ClientSession() as session, \
                session.post(f"{client}/mcp", json=body, headers=headers) as response:
            return await response.json()
    response = await client.post("/mcp", json=body, headers=headers)
    return await response.json()


async def call(client: TestClient | str, tenant: Tenant | str, tool: str,
               **arguments: Any) -> dict[str, Any]:
    answer = await rpc(client, tenant, "tools/call", name=tool, arguments=arguments)
    assert "result" in answer, answer
    return answer["result"]


async def get(client: TestClient | str, tenant: Tenant | str, task_id: str) -> dict[str, Any]:
    answer = await rpc(client, tenant, "tasks/get", taskId=task_id)
    assert "result" in answer, answer
    return answer["result"]


async def until(client: TestClient, tenant: Tenant, task_id: str,
                done: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not done(task := await get(client, tenant, task_id)):
        assert time.monotonic() < deadline, f"the task never got there: {task}"
        await asyncio.sleep(0.05)
    return task


def without_meta(result: dict[str, Any]) -> dict[str, Any]:
    """A result without the _meta every stateless answer carries (the server's name)."""
    return {k: v for k, v in result.items() if k != "_meta"}


def terminal(task: dict[str, Any]) -> bool:
    return task["status"] in ("completed", "failed", "cancelled")


async def second_key(database_urls: DatabaseUrls, tenant: Tenant) -> str:
    """Another key of ``tenant``, with every scope."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.admin)
    try:
        async with conn.transaction():
            _, secret = await admin.create_api_key(
                conn, Queries.load(), tenant_id=tenant.id, name="second key",
                scopes=["read", "write", "query", "admin"], user="other@example.com")
    finally:
        await conn.close()
    return secret


# -- the lifecycle -----------------------------------------------------------------------------

async def test_a_declared_client_gets_a_task_and_reads_its_progress_and_result(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve(TASK_TTL="600")
    discovered = (await rpc(client, tenant, "server/discover"))["result"]
    assert discovered["capabilities"]["extensions"] == {"io.modelcontextprotocol/tasks": {}}
    created = await call(client, tenant, "slow_compute", seconds=2, label="x")
    assert created["resultType"] == "task" and created["status"] == "working"
    assert created["ttlMs"] == 600_000 and created["pollIntervalMs"] == 250
    assert "result" not in created and "content" not in created
    task_id = created["taskId"]
    uuid.UUID(task_id)
    working = await until(client, tenant, task_id,
                          lambda t: "spiral-mcp/progress" in t["_meta"] or terminal(t))
    assert working["status"] == "working" and working["resultType"] == "complete"
    assert working["_meta"]["spiral-mcp/progress"]["total"] == 2
    assert working["statusMessage"].endswith("of 2 s")
    done = await until(client, tenant, task_id, terminal)
    assert done["status"] == "completed"
    assert done["result"]["content"][0]["text"] == "computed x in 2 s"
    assert done["result"]["structuredContent"]["success"] is True
    assert done["createdAt"].endswith("Z") and done["lastUpdatedAt"] >= done["createdAt"]


async def test_without_the_extension_calls_answer_inline_and_tasks_methods_are_refused(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve()
    inline = await rpc(client, tenant, "tools/call", capabilities={}, name="slow_compute",
                       arguments={"seconds": 0})
    assert inline["result"]["resultType"] == "complete" and "taskId" not in inline["result"]
    for method, extra in (("tasks/get", {}), ("tasks/update", {"inputResponses": {}}),
                          ("tasks/cancel", {})):
        refused = await rpc(client, tenant, method, capabilities={}, taskId="x", **extra)
        assert refused["error"]["code"] == -32021, refused
    required = await rpc(client, tenant, "tools/call", capabilities={}, name="failing_job",
                         arguments={})
    assert required["error"]["code"] == -32021
    assert required["error"]["data"] == {
        "requiredCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}
    # The handshake eras know no tasks: /execute answers as they do.
    response = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": "x"}})
    assert (await response.json())["error"]["code"] == -32601


async def test_tool_errors_complete_and_protocol_errors_fail(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve()
    tool_error = await call(client, tenant, "failing_job")
    done = await until(client, tenant, tool_error["taskId"], terminal)
    assert done["status"] == "completed" and done["result"]["isError"] is True
    protocol_error = await call(client, tenant, "protocol_error_job")
    failed = await until(client, tenant, protocol_error["taskId"], terminal)
    assert failed["status"] == "failed" and "result" not in failed
    assert failed["error"]["code"] == -32603 and "protocol level" in failed["error"]["message"]


async def test_a_question_waits_for_tasks_update_and_unknown_answers_are_ignored(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve()
    task_id = (await call(client, tenant, "multi_input"))["taskId"]
    asking = await until(client, tenant, task_id, lambda t: len(t.get("inputRequests", {})) == 2)
    assert asking["status"] == "input_required"
    first, second = sorted(asking["inputRequests"])
    assert asking["inputRequests"][first]["method"] == "elicitation/create"
    ack = await rpc(client, tenant, "tasks/update", taskId=task_id, inputResponses={
        first: {"action": "accept", "content": {"name": "Ann"}}, "never-asked": {"x": 1}})
    assert without_meta(ack["result"]) == {"resultType": "complete"}
    partly = await get(client, tenant, task_id)
    assert partly["status"] == "input_required" and list(partly["inputRequests"]) == [second]
    await rpc(client, tenant, "tasks/update", taskId=task_id, inputResponses={
        second: {"action": "accept", "content": {"confirm": True}}})
    done = await until(client, tenant, task_id, terminal)
    assert done["status"] == "completed" and "Ann" in done["result"]["content"][0]["text"]


async def test_cancel_stops_a_running_task_and_is_an_ack_once_it_ended(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve()
    task_id = (await call(client, tenant, "slow_compute", seconds=60))["taskId"]
    ack = await rpc(client, tenant, "tasks/cancel", taskId=task_id)
    assert without_meta(ack["result"]) == {"resultType": "complete"}
    cancelled = await until(client, tenant, task_id, terminal, timeout=5)
    assert cancelled["status"] == "cancelled"
    again = await rpc(client, tenant, "tasks/cancel", taskId=task_id)
    assert without_meta(again["result"]) == {"resultType": "complete"}
    unknown = await rpc(client, tenant, "tasks/cancel", taskId=str(uuid.uuid4()))
    assert unknown["error"]["code"] == -32602


async def test_a_cancel_taken_by_another_process_reaches_the_running_one(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    runner = await serve(TASK_LEASE="1.5")
    other = await serve(TASK_LEASE="1.5")
    task_id = (await call(runner, tenant, "slow_compute", seconds=60))["taskId"]
    cancelled_ack = await rpc(other, tenant, "tasks/cancel", taskId=task_id)
    assert without_meta(cancelled_ack["result"]) == {"resultType": "complete"}
    # Found at the runner's next heartbeat (every half second here), not at its lease's end.
    cancelled = await until(other, tenant, task_id, terminal, timeout=5)
    assert cancelled["status"] == "cancelled"


# -- isolation ---------------------------------------------------------------------------------

async def test_another_key_or_tenant_finds_no_task(
        serve: Serve, make_tenant: TenantFactory, database_urls: DatabaseUrls) -> None:
    owner, stranger = await make_tenant(), await make_tenant()
    sibling = await second_key(database_urls, owner)
    client = await serve()
    task_id = (await call(client, owner, "confirm_delete", filename="a.txt"))["taskId"]
    asking = await until(client, owner, task_id, lambda t: t["status"] == "input_required")
    (question,) = asking["inputRequests"]
    for outsider in (sibling, stranger):
        for method, extra in (("tasks/get", {}), ("tasks/cancel", {}), ("tasks/update", {
                "inputResponses": {question: {"action": "accept",
                                              "content": {"confirm": True}}}})):
            answer = await rpc(client, outsider, method, taskId=task_id, **extra)
            assert answer["error"]["code"] == -32602, (method, answer)
            assert "not found" in answer["error"]["message"]
    # Nothing of theirs reached the task: it still waits for its own key's answer.
    still = await get(client, owner, task_id)
    assert still["status"] == "input_required" and list(still["inputRequests"]) == [question]
    await rpc(client, owner, "tasks/update", taskId=task_id, inputResponses={
        question: {"action": "accept", "content": {"confirm": True}}})
    done = await until(client, owner, task_id, terminal)
    assert done["result"]["content"][0]["text"] == "deleted a.txt"


async def test_malformed_and_unknown_task_ids_are_not_found(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    client = await serve()
    for task_id in ("nope", str(uuid.uuid4()), "x" * 36):
        answer = await rpc(client, tenant, "tasks/get", taskId=task_id)
        assert answer["error"]["code"] == -32602
    missing = await rpc(client, tenant, "tasks/get")
    assert missing["error"]["code"] == -32602


# -- restart and expiry ------------------------------------------------------------------------

async def test_after_a_restart_results_stay_and_a_cut_task_has_failed(
        serve: Serve, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant()
    first = await serve(SHUTDOWN_TIMEOUT="0")
    finished = (await call(first, tenant, "slow_compute", seconds=0, label="kept"))["taskId"]
    await until(first, tenant, finished, terminal)
    running = (await call(first, tenant, "slow_compute", seconds=60))["taskId"]
    await first.close()
    second = await serve()
    kept = await get(second, tenant, finished)
    assert kept["status"] == "completed"
    assert kept["result"]["content"][0]["text"] == "computed kept in 0 s"
    cut = await get(second, tenant, running)
    assert cut["status"] == "failed" and "shut down" in cut["error"]["message"]
    assert cut["statusMessage"] == cut["error"]["message"]


_SERVER = """
import sys
from aiohttp import web
from spiral_mcp.config import load_settings
from spiral_mcp.handlers import builtin_tools
from spiral_mcp.server.app import create_app
from tests.conformance_tasks import task_fixture_tools
settings = load_settings()
app = create_app(settings, database_url=settings.database_url,
                 tools=[*builtin_tools(), *task_fixture_tools()])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_task_of_a_killed_process_reads_as_failed_not_working_forever(
        serve: Serve, make_tenant: TenantFactory, database_urls: DatabaseUrls) -> None:
    tenant = await make_tenant()
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_urls.runtime, "TASK_LEASE": "1",
           "LOG_LEVEL": "error", "DB_POOL_MIN": "1", "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", _SERVER, str(port),
                                                   env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                created = await call(url, tenant, "slow_compute", seconds=60)
                break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the server never came up"
                await asyncio.sleep(0.2)
        task_id = created["taskId"]
        await asyncio.sleep(1.2)  # its heartbeat has renewed the lease at least once
        assert (await get(url, tenant, task_id))["status"] == "working"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    client = await serve()
    orphan = await until(client, tenant, task_id, terminal, timeout=5)
    assert orphan["status"] == "failed" and ORPHANED in orphan["error"]["message"]
    assert orphan["error"]["code"] == -32603
    # Read as failed once, stored so.
    assert (await get(client, tenant, task_id))["status"] == "failed"


async def test_expired_tasks_are_not_found_and_swept(
        serve: Serve, make_tenant: TenantFactory, database_urls: DatabaseUrls) -> None:
    tenant = await make_tenant()
    client = await serve(TASK_TTL="10")
    task_id = (await call(client, tenant, "slow_compute", seconds=0))["taskId"]
    done = await until(client, tenant, task_id, terminal)
    assert done["ttlMs"] >= 10_000
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.runtime)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
            # Ten seconds have passed (the sweep keeps a lease alive task: this one ended).
            await conn.execute("UPDATE tasks SET expires_at = now() - interval '1 second' "
                               "WHERE task_id = $1", uuid.UUID(task_id))
        gone = await rpc(client, tenant, "tasks/get", taskId=task_id)
        assert gone["error"]["code"] == -32602
        assert await conn.fetchval("SELECT task_sweep()") >= 1
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
            assert await conn.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1",
                                       uuid.UUID(task_id)) == 0
    finally:
        await conn.close()
