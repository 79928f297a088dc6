"""``spiral-mcp stdio`` in the stateless 2026-07-28 era (and beside it, the session): multi
round-trip requests driven by the official ``mcp`` client's stdio transport, and the era's rules
over raw lines on the pipes (caching hints, serverInfo, removed methods, per-request log level,
resources, prompts, the tasks extension, ``subscriptions/listen``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from conftest import Tenant, TenantFactory
from mcp import types
from mcp.shared.subscriptions import ToolsListChanged
from test_mrtr import in_tenant, two_closes
from test_stdio import (
    INITIALIZED,
    MODES,
    PRODUCT,
    SESSION_VERSION,
    STATELESS_META,
    WITH_FIXTURES,
    Process,
    audit_rows,
    call,
    connect,
    environment,  # noqa: F401  (a fixture)
    initialize,
    tenant,  # noqa: F401  (a fixture)
)

from spiral_mcp import admin
from spiral_mcp.queries import Queries

CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
TASKS = {"extensions": {"io.modelcontextprotocol/tasks": {}}}


@pytest.mark.parametrize("mode", MODES)
async def test_an_ambiguous_transition_is_asked_through_the_official_client(
        environment, tenant: Tenant,  # noqa: F811
        admin_conn: asyncpg.Connection, tmp_path: Path, mode: str) -> None:
    """Legacy: a request to the client on the session; auto (2026-07-28): InputRequiredResult,
    answered by the client's driver with the same callback and retried. Either way one write,
    one audit row of the write."""
    await two_closes(admin_conn, tenant)
    offered: list[Any] = []

    async def choose(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        offered.append(params.requested_schema["properties"]["status"]["enum"])
        return types.ElicitResult(action="accept", content={"status": "Won't Do"})

    async with connect(PRODUCT, environment(tenant), mode, tmp_path / "err",
                       elicitation_callback=choose) as client:
        assert client.protocol_version == {"legacy": SESSION_VERSION, "auto": "2026-07-28"}[mode]
        created = await client.call_tool("jira_create_issue", {
            "project_key": "WEB", "summary": "Asked over stdio"})
        key = created.structured_content["data"]["key"]
        moved = await client.call_tool("jira_transition_issue", {
            "issue_key": key, "status": "close", "idempotency_key": f"close-{mode}"})
        assert moved.is_error is False, moved
        assert moved.structured_content["data"]["to_status"] == "Won't Do"
    assert offered == [["Done", "Won't Do"]]
    history = await in_tenant(admin_conn, tenant, "SELECT t.to_status FROM work_item_transitions "
                              "t JOIN work_items w ON w.id = t.work_item_id WHERE w.key = $1 "
                              "ORDER BY t.id", key)
    assert [h["to_status"] for h in history] == ["To Do", "Won't Do"]
    rows = await audit_rows(admin_conn, tenant, tool="jira_transition_issue",
                            count={"legacy": 1, "auto": 2}[mode])
    # Stateless, the round that asked is audited too, as a call that did not complete.
    assert sorted((r["outcome"], r["error_code"]) for r in rows) == sorted(
        {"legacy": [("ok", None)], "auto": [("error", "INPUT_REQUIRED"), ("ok", None)]}[mode])


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_cannot_be_asked_gets_the_candidates(
        environment, tenant: Tenant,  # noqa: F811
        admin_conn: asyncpg.Connection, tmp_path: Path, mode: str) -> None:
    await two_closes(admin_conn, tenant)
    async with connect(PRODUCT, environment(tenant), mode, tmp_path / "err") as client:
        created = await client.call_tool("jira_create_issue", {
            "project_key": "WEB", "summary": "Not asked over stdio"})
        key = created.structured_content["data"]["key"]
        moved = await client.call_tool("jira_transition_issue", {
            "issue_key": key, "status": "close"})
    # Auto mode too: the client declares no elicitation in its requests' _meta, so the server
    # does not ask (which would be -32021), it names the candidates.
    assert moved.is_error is True
    error = moved.structured_content["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["candidates"] == ["Done", "Won't Do"]
    (row,) = await in_tenant(admin_conn, tenant, "SELECT status, version FROM work_items "
                             "WHERE key = $1", key)
    assert tuple(row) == ("To Do", 1)


# -- the era's rules, on raw lines ------------------------------------------------------------

def rpc(request_id: Any, method: str, *, capabilities: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    """A stateless-era request: everything a request needs is in its own ``_meta``."""
    params["_meta"] = {**STATELESS_META, CAPABILITIES: capabilities or {}, **(meta or {})}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def tool(request_id: Any, name: str, *, capabilities: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None, **arguments: Any) -> dict[str, Any]:
    return rpc(request_id, "tools/call", capabilities=capabilities, meta=meta, name=name,
               arguments=arguments)


async def test_caching_server_info_removed_methods_resources_and_prompts(
        environment, tenant: Tenant) -> None:  # noqa: F811
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send(
        rpc(1, "server/discover"), rpc(2, "tools/list"),
        rpc(3, "resources/read", uri="spiral://reference/jql"),
        rpc(4, "prompts/get", name="weekly_status_report", arguments={"project_key": "WEB"}),
        rpc(5, "ping"), rpc(6, "logging/setLevel", level="debug"),
        rpc(7, "resources/subscribe", uri="spiral://reference/jql"),
        rpc(8, "initialize", protocolVersion="2026-07-28", capabilities={},
            clientInfo={"name": "t", "version": "1"}),
        rpc(9, "resources/read", uri="spiral://reference/nothing"),
        rpc(10, "tools/list", meta={LOG_LEVEL: "loud"}))
    answers = {m["id"]: m for m in [await proc.receive() for _ in range(10)]}
    discovered = answers[1]["result"]
    assert (discovered["ttlMs"], discovered["cacheScope"]) == (300_000, "public")
    assert discovered["_meta"][SERVER_INFO]["icons"]
    for request_id in (2, 3, 4):
        result = answers[request_id]["result"]
        assert result["resultType"] == "complete"
        assert result["_meta"][SERVER_INFO]["name"] == "spiral-mcp"
    listed = answers[2]["result"]
    assert (listed["ttlMs"], listed["cacheScope"]) == (300_000, "private")
    assert "jira_get_issue" in {t["name"] for t in listed["tools"]}
    read = answers[3]["result"]
    assert read["cacheScope"] == "private" and read["ttlMs"] > 0
    ((content,),) = [read["contents"]]
    assert content["uri"] == "spiral://reference/jql" and "ORDER BY" in content["text"]
    assert "ttlMs" not in answers[4]["result"]  # prompts/get is not cacheable
    assert answers[4]["result"]["messages"][0]["role"] == "user"
    assert "WEB" in answers[4]["result"]["messages"][0]["content"]["text"]
    # Removed by the revision: unknown methods here, whatever a session would say.
    for request_id, method in ((5, "ping"), (6, "logging/setLevel"),
                               (7, "resources/subscribe"), (8, "initialize")):
        assert answers[request_id]["error"] == {
            "code": -32601, "message": f"method not found: {method}"}, answers[request_id]
    assert answers[9]["error"]["code"] == -32602  # not found is invalid params (was -32002)
    assert answers[10]["error"]["code"] == -32602
    assert LOG_LEVEL in answers[10]["error"]["message"]
    code, out, err = await proc.finish()
    assert code == 0 and out == b"", err


async def test_log_messages_flow_for_the_level_a_request_names(
        environment, tenant: Tenant) -> None:  # noqa: F811
    proc = await Process.start(WITH_FIXTURES, environment(tenant))
    await proc.send(tool(1, "test_logging_tool"))
    assert "result" in await proc.receive()  # no log message before it: no level was named
    await proc.send(tool(2, "test_logging_tool", meta={LOG_LEVEL: "info"}))
    notes = [await proc.receive() for _ in range(4)]
    assert [n.get("method") for n in notes[:3]] == ["notifications/message"] * 3
    assert notes[0]["params"]["data"] == "Tool execution started"
    assert notes[3]["id"] == 2 and "result" in notes[3]
    await proc.send(tool(3, "test_logging_tool", meta={LOG_LEVEL: "warning"}))
    assert (await proc.receive())["id"] == 3  # info is below warning
    # Asking what the request's capabilities do not declare is -32021, naming what is missing.
    await proc.send(tool(4, "test_ask"))
    refused = await proc.receive()
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"] == {"requiredCapabilities": {"sampling": {}}}
    code, out, err = await proc.finish()
    assert code == 0 and out == b"", err


async def test_a_client_declaring_tasks_gets_a_task_and_polls_it(
        environment, tenant: Tenant, make_tenant: TenantFactory) -> None:  # noqa: F811
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send(tool(1, "explorer_query", capabilities=TASKS,
                         sql="SELECT count(*) AS n FROM work_items"),
                    tool(2, "explorer_query", sql="SELECT 1 AS one"))
    answers = {m["id"]: m["result"] for m in [await proc.receive() for _ in range(2)]}
    created = answers[1]
    assert created["resultType"] == "task", created
    task_id = created["taskId"]
    # Without the extension declared, the same call is answered inline.
    assert answers[2]["structuredContent"]["data"]["rows"] == [[1]]
    for poll in range(3, 200):
        await proc.send(rpc(poll, "tasks/get", capabilities=TASKS, taskId=task_id))
        task = (await proc.answer(poll))["result"]
        if task["status"] in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.05)
    assert task["status"] == "completed", task
    assert task["result"]["structuredContent"]["data"]["rows"] == [[60]]
    code, out, err = await proc.finish()
    assert code == 0 and out == b"", err
    # Another tenant's key, over its own stdio process, finds no such task.
    other = await Process.start(PRODUCT, environment(await make_tenant(demo=True)))
    await other.send(rpc(1, "tasks/get", capabilities=TASKS, taskId=task_id))
    assert (await other.receive())["error"]["code"] == -32602
    code, out, err = await other.finish()
    assert code == 0 and out == b"", err


# -- subscriptions/listen ---------------------------------------------------------------------

LISTEN_ID_META = "io.modelcontextprotocol/subscriptionId"


def listen(request_id: Any, **notifications: Any) -> dict[str, Any]:
    return rpc(request_id, "subscriptions/listen", notifications=notifications)


async def until_answered(proc: Process, request_id: Any) -> list[dict[str, Any]]:
    """The lines up to and with the answer to ``request_id``."""
    lines = [await proc.receive()]
    while lines[-1].get("id") != request_id or "method" in lines[-1]:
        lines.append(await proc.receive())
    return lines


async def test_listen_streams_share_stdout_tagged_with_their_ids(
        environment, tenant: Tenant) -> None:  # noqa: F811
    proc = await Process.start(WITH_FIXTURES, environment(tenant))
    await proc.send(listen("tools", toolsListChanged=True, resourcesListChanged=True,
                           resourceSubscriptions=["spiral://reference/jql", "file:///etc/x"]),
                    listen(7, promptsListChanged=True),
                    listen(8, toolsListChanged="yes"))
    lines = [await proc.receive() for _ in range(3)]
    acks = {m["params"]["_meta"][LISTEN_ID_META]: m["params"]["notifications"]
            for m in lines if m.get("method") == "notifications/subscriptions/acknowledged"}
    # What the server agreed to: no resource list changes (its list is fixed), only URIs this
    # key may read.
    assert acks == {"tools": {"toolsListChanged": True,
                              "resourceSubscriptions": ["spiral://reference/jql"]},
                    7: {"promptsListChanged": True}}
    (refused,) = [m for m in lines if m.get("id") == 8]
    assert refused["error"]["code"] == -32602

    # A tool list change reaches the stream that asked for it, and only that one.
    await proc.send(tool(1, "test_trigger_tool_change"))
    seen = await until_answered(proc, 1)
    if len(seen) == 1:  # the answer came first
        seen.append(await proc.receive())
    notes = [m for m in seen if "method" in m]
    assert notes == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                      "params": {"_meta": {LISTEN_ID_META: "tools"}}}]
    await proc.send(tool(2, "test_trigger_prompt_change"))
    seen = await until_answered(proc, 2)
    if len(seen) == 1:
        seen.append(await proc.receive())
    assert [m["params"]["_meta"][LISTEN_ID_META] for m in seen if "method" in m] == [7]

    # notifications/cancelled ends a stream: no answer, and it hears nothing more.
    await proc.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": "tools"}},
                    tool(3, "test_trigger_tool_change"))
    assert [m.get("id") for m in await until_answered(proc, 3)] == [3]
    # Reading ends (EOF): the stream still open is answered, a graceful end; nothing else.
    code, out, err = await proc.finish()
    assert code == 0, err
    assert [orjson.loads(line) for line in out.splitlines()] == [
        {"jsonrpc": "2.0", "id": 7, "result": {"resultType": "complete",
                                               "_meta": {LISTEN_ID_META: 7}}}]


async def test_a_listen_stream_ends_with_its_key(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection,  # noqa: F811
        queries: Queries) -> None:
    """With no other request to notice it, the revoked key still ends the stream (unanswered:
    the key may hear nothing more) and the server, as it would on a request."""
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send(listen(1, toolsListChanged=True))
    assert (await proc.receive())["method"] == "notifications/subscriptions/acknowledged"
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    out, err = await asyncio.wait_for(proc.proc.communicate(), 30)  # it ends by itself
    assert proc.proc.returncode == 1 and out == b"", err
    assert "no longer accepted" in err.decode().splitlines()[-1]


async def test_the_official_client_listens_over_stdio(
        environment, tenant: Tenant, tmp_path: Path) -> None:  # noqa: F811
    async with connect(WITH_FIXTURES, environment(tenant), "auto", tmp_path / "err") as client, \
            client.listen(tools_list_changed=True, resources_list_changed=True) as subscription:
        assert subscription.honored.tools_list_changed is True
        assert not subscription.honored.resources_list_changed
        added = await client.call_tool("test_trigger_tool_change", {})
        assert added.structured_content["data"] == {"text": "added test_dynamic_tool"}
        async with asyncio.timeout(5):
            event = await anext(subscription)
        assert isinstance(event, ToolsListChanged)
        assert "test_dynamic_tool" in {t.name for t in (await client.list_tools()).tools}


async def test_a_session_hears_list_changes_beside_a_listen_stream(
        environment, tenant: Tenant) -> None:  # noqa: F811
    """A session's change notifications (HTTP's GET stream) are lines on stdout too, untagged;
    a stateless listen stream in the same process gets its own, tagged."""
    proc = await Process.start(WITH_FIXTURES, environment(tenant))
    await proc.send(initialize(), INITIALIZED, listen("L", toolsListChanged=True))
    first = [await proc.receive() for _ in range(2)]
    assert {m.get("id") or m["method"] for m in first} == {
        1, "notifications/subscriptions/acknowledged"}
    await proc.send(call(2, "test_trigger_tool_change"))
    seen = [await proc.receive() for _ in range(3)]
    assert {orjson.dumps(m["params"], option=orjson.OPT_SORT_KEYS).decode() if "params" in m
            else "session" for m in seen if m.get("method") == "notifications/tools/list_changed"
            } == {"session", '{"_meta":{"io.modelcontextprotocol/subscriptionId":"L"}}'}
    (answer,) = [m for m in seen if m.get("id") == 2]
    assert answer["result"]["structuredContent"]["data"] == {"text": "added test_dynamic_tool"}
    code, out, err = await proc.finish()
    assert code == 0, err
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["L"]
