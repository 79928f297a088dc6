"""Multi round-trip requests over real HTTP and PostgreSQL: a tool asks the client.

The stateless era (2026-07-28) with raw HTTP: InputRequiredResult, the retry with the answers,
the sealed requestState refused when altered, expired, another key's (of another tenant or the
same one) or another request's; -32021 for a capability the client did not declare; the product's
questions (an ambiguous transition, an ambiguous assignee), the idempotency key across rounds,
and the audit of a round that asked. The session eras still ask by a request to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import Tenant, make_settings
from cryptography.fernet import Fernet
from serving import app_clients
from test_transports import open_session, post, read_event, request

from spiral_mcp import admin
from spiral_mcp.handlers import builtin_tools
from spiral_mcp.protocol.input_required import RequestStateSeal, request_digest
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from tests.conformance_mrtr import mrtr_prompts, mrtr_tools

MODERN = "2026-07-28"
PV_META = "io.modelcontextprotocol/protocolVersion"
CAPS_META = "io.modelcontextprotocol/clientCapabilities"
SECRET = Fernet.generate_key().decode()
ELICIT: dict[str, Any] = {"elicitation": {}}


def _app(database_urls: DatabaseUrls, secret: str = SECRET) -> Any:
    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=secret)
    return create_app(settings, database_url=database_urls.runtime,
                      tools=[*builtin_tools(), *mrtr_tools()], prompts=mrtr_prompts())


@pytest.fixture
async def mcp(database_urls: DatabaseUrls) -> AsyncIterator[TestClient]:
    async with app_clients() as start:
        yield await start(_app(database_urls))


async def stateless(client: TestClient, tenant: Tenant, method: str, params: dict[str, Any], *,
                    capabilities: dict[str, Any] | None = None, rid: int = 1
                    ) -> tuple[int, dict[str, Any]]:
    """One stateless request, as a 2026-07-28 client sends it: (HTTP status, JSON-RPC body)."""
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": {
        **params, "_meta": {PV_META: MODERN, CAPS_META: capabilities or {}}}}
    headers = {**tenant.headers, "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": method}
    if method in ("tools/call", "prompts/get"):
        headers["Mcp-Name"] = params["name"]
    response = await client.post("/mcp", data=orjson.dumps(body), headers=headers)
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def call(client: TestClient, tenant: Tenant, name: str, arguments: dict[str, Any], *,
               capabilities: dict[str, Any] | None = None, rid: int = 1,
               **retry: Any) -> dict[str, Any]:
    """The result of a tools/call (asserting HTTP 200 and no JSON-RPC error)."""
    status, body = await stateless(client, tenant, "tools/call",
                                   {"name": name, "arguments": arguments, **retry},
                                   capabilities=capabilities, rid=rid)
    assert status == 200 and "result" in body, body
    return body["result"]


async def refused(client: TestClient, tenant: Tenant, name: str, arguments: dict[str, Any],
                  **retry: Any) -> dict[str, Any]:
    status, body = await stateless(client, tenant, "tools/call",
                                   {"name": name, "arguments": arguments, **retry},
                                   capabilities=ELICIT)
    assert status == 400 and body["error"]["code"] == -32602, body
    return body["error"]


async def in_tenant(conn: asyncpg.Connection, tenant: Tenant, sql: str, *args: Any) -> list[Any]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        return await conn.fetch(sql, *args)


async def second_key(database_urls: DatabaseUrls, tenant: Tenant) -> Tenant:
    """Another key of ``tenant``."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(database_urls.admin)
    try:
        key_id, secret = await admin.create_api_key(
            conn, Queries.load(), tenant_id=tenant.id, name="second key",
            scopes=["read", "write"], user="second@example.com")
    finally:
        await conn.close()
    return Tenant(tenant.id, secret, key_id)


# -- the mechanism, through the conformance fixtures -------------------------------------------

async def test_a_round_trip_asks_then_completes_with_the_answer(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    first = await call(mcp, tenant, "test_input_required_result_multi_round", {},
                       capabilities=ELICIT)
    assert first["resultType"] == "input_required"
    assert list(first["inputRequests"]) == ["step1"]
    assert first["inputRequests"]["step1"]["method"] == "elicitation/create"
    assert isinstance(first["requestState"], str)

    second = await call(mcp, tenant, "test_input_required_result_multi_round", {},
                        capabilities=ELICIT, rid=2, requestState=first["requestState"],
                        inputResponses={"step1": {"action": "accept",
                                                  "content": {"name": "Ada"}}})
    assert second["resultType"] == "input_required"
    assert list(second["inputRequests"]) == ["step2"]
    assert second["requestState"] != first["requestState"]

    # The first answer comes back sealed in the state alone; the retry brings only the second.
    done = await call(mcp, tenant, "test_input_required_result_multi_round", {},
                      capabilities=ELICIT, rid=3, requestState=second["requestState"],
                      inputResponses={"step2": {"action": "accept",
                                                "content": {"color": "blue"}}})
    assert done["resultType"] == "complete"
    assert done["structuredContent"]["data"] == {"text": "Ada likes blue"}

    # Without the earlier state, the second answer alone does not do: step 1 is asked again.
    again = await call(mcp, tenant, "test_input_required_result_multi_round", {},
                       capabilities=ELICIT, rid=4,
                       inputResponses={"step2": {"action": "accept",
                                                 "content": {"color": "blue"}}})
    assert list(again["inputRequests"]) == ["step1"]


async def test_several_questions_travel_in_one_round(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    everything = {"sampling": {}, "elicitation": {}, "roots": {}}
    first = await call(mcp, tenant, "test_input_required_result_multiple_inputs", {},
                       capabilities=everything)
    assert {k: v["method"] for k, v in first["inputRequests"].items()} == {
        "user_name": "elicitation/create", "greeting": "sampling/createMessage",
        "client_roots": "roots/list"}
    done = await call(mcp, tenant, "test_input_required_result_multiple_inputs", {},
                      capabilities=everything, requestState=first["requestState"],
                      inputResponses={
                          "user_name": {"action": "accept", "content": {"name": "Ada"}},
                          "greeting": {"role": "assistant", "model": "m",
                                       "content": {"type": "text", "text": "Hi"}},
                          "client_roots": {"roots": [{"uri": "file:///a"}]}})
    assert done["structuredContent"]["data"] == {"text": "Hi Ada, 1 root(s)"}


async def test_a_prompt_asks_too_and_lists_never_do(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    status, first = await stateless(mcp, tenant, "prompts/get",
                                    {"name": "test_input_required_result_prompt"},
                                    capabilities=ELICIT)
    assert status == 200 and first["result"]["resultType"] == "input_required"
    status, done = await stateless(
        mcp, tenant, "prompts/get", {
            "name": "test_input_required_result_prompt",
            "requestState": first["result"]["requestState"],
            "inputResponses": {"user_context": {"action": "accept",
                                                "content": {"context": "billing"}}}},
        capabilities=ELICIT, rid=2)
    assert status == 200 and done["result"]["resultType"] == "complete"
    assert "billing" in done["result"]["messages"][0]["content"]["text"]
    status, listed = await stateless(mcp, tenant, "tools/list", {}, capabilities=ELICIT)
    assert listed["result"]["resultType"] == "complete"


async def test_answers_that_are_not_results_are_refused(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    error = await refused(mcp, tenant, "test_input_required_result_elicitation", {},
                          inputResponses={"user_name": 12345})
    assert "inputResponses.user_name" in error["message"]
    error = await refused(mcp, tenant, "test_input_required_result_elicitation", {},
                          inputResponses={"user_name": {"action": "maybe"}})
    assert "accept, decline or cancel" in error["message"]
    error = await refused(mcp, tenant, "test_input_required_result_elicitation", {},
                          inputResponses=None)
    assert "inputResponses must be an object" in error["message"]
    # An answer under a key nobody asked is ignored; the question is asked again.
    result = await call(mcp, tenant, "test_input_required_result_elicitation", {},
                        capabilities=ELICIT,
                        inputResponses={"wrong_key": {"action": "accept", "content": {}}})
    assert list(result["inputRequests"]) == ["user_name"]


# -- requestState: sealed, bound, expiring -----------------------------------------------------

async def _first_state(client: TestClient, tenant: Tenant,
                       arguments: dict[str, Any] | None = None,
                       name: str = "test_input_required_result_tampered_state") -> str:
    result = await call(client, tenant, name, arguments or {}, capabilities=ELICIT)
    assert result["resultType"] == "input_required"
    return result["requestState"]


_OK = {"confirm": {"action": "accept", "content": {"ok": True}}}


async def test_a_state_is_good_for_its_key_and_request_only(
        mcp, make_tenant, database_urls) -> None:
    tenant = await make_tenant()
    state = await _first_state(mcp, tenant)
    name = "test_input_required_result_tampered_state"

    # Altered anywhere: refused, the answer notwithstanding.
    for altered in (state + "-TAMPERED", state[:-4] + ("AAAA" if state[-4:] != "AAAA" else "BBBB"),
                    "v1." + state[3:][::-1], "not a state"):
        error = await refused(mcp, tenant, name, {}, requestState=altered, inputResponses=_OK)
        assert error["data"] == {"reason": "tampered"}, altered
    error = await refused(mcp, tenant, name, {}, requestState=17, inputResponses=_OK)
    assert error["data"] == {"reason": "malformed"}

    # Another tenant's key, and another key of the same tenant.
    for other in (await make_tenant(), await second_key(database_urls, tenant)):
        error = await refused(mcp, other, name, {}, requestState=state, inputResponses=_OK)
        assert error["data"] == {"reason": "other_key"}
        assert "another API key" in error["message"]

    # Another request: another tool, or the same tool with other arguments.
    error = await refused(mcp, tenant, "test_input_required_result_request_state", {},
                          requestState=state, inputResponses=_OK)
    assert error["data"] == {"reason": "other_request"}
    error = await refused(mcp, tenant, name, {"unasked": 1}, requestState=state,
                          inputResponses=_OK)
    assert error["data"] == {"reason": "other_request"}

    # The key and the request it was made for: accepted.
    done = await call(mcp, tenant, name, {}, capabilities=ELICIT, requestState=state,
                      inputResponses=_OK)
    assert done["structuredContent"]["data"]["text"].startswith("state-ok")


async def test_an_expired_state_is_refused(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    name = "test_input_required_result_tampered_state"
    params = {"name": name, "arguments": {}}
    # Sealed with the installation's key, as any of its processes would, but already past.
    principal = type("P", (), {"tenant_id": tenant.id, "key_id": tenant.key_id})
    expired = RequestStateSeal(SECRET.encode(), ttl=-1).seal(
        principal=principal, method="tools/call", digest=request_digest("tools/call", params),
        answers={})
    error = await refused(mcp, tenant, name, {}, requestState=expired, inputResponses=_OK)
    assert error["data"] == {"reason": "expired"}
    assert "start over" in error["message"]
    live = RequestStateSeal(SECRET.encode(), ttl=60).seal(
        principal=principal, method="tools/call", digest=request_digest("tools/call", params),
        answers={})
    done = await call(mcp, tenant, name, {}, capabilities=ELICIT, requestState=live,
                      inputResponses=_OK)
    assert done["resultType"] == "complete"


async def test_any_process_of_the_installation_takes_the_answer(
        database_urls, make_tenant) -> None:
    tenant = await make_tenant()
    name = "test_input_required_result_tampered_state"
    async with app_clients() as start:
        one = await start(_app(database_urls))
        other = await start(_app(database_urls))
        elsewhere = await start(_app(database_urls, secret=Fernet.generate_key().decode()))
        state = await _first_state(one, tenant)
        done = await call(other, tenant, name, {}, capabilities=ELICIT, requestState=state,
                          inputResponses=_OK)
        assert done["resultType"] == "complete"
        # Another installation (another SPIRAL_SECRET_KEY) cannot open it.
        error = await refused(elsewhere, tenant, name, {}, requestState=state,
                              inputResponses=_OK)
        assert error["data"] == {"reason": "tampered"}


# -- capabilities ------------------------------------------------------------------------------

async def test_a_capability_the_client_did_not_declare_is_minus_32021(mcp, make_tenant) -> None:
    tenant = await make_tenant()
    status, body = await stateless(mcp, tenant, "tools/call",
                                   {"name": "test_missing_capability", "arguments": {}},
                                   capabilities=ELICIT, rid=7)
    assert status == 400
    assert body["id"] == 7
    assert body["error"]["code"] == -32021
    assert body["error"]["data"] == {"requiredCapabilities": {"sampling": {}}}
    # A form needs an elicitation capability that takes forms.
    status, body = await stateless(mcp, tenant, "tools/call",
                                   {"name": "test_input_required_result_elicitation",
                                    "arguments": {}},
                                   capabilities={"elicitation": {"url": {}}})
    assert (status, body["error"]["code"]) == (400, -32021)
    assert body["error"]["data"] == {"requiredCapabilities": {"elicitation": {"form": {}}}}
    # A tool with a fallback asks only what the client can answer.
    result = await call(mcp, tenant, "test_input_required_result_capabilities", {},
                        capabilities={"sampling": {}})
    assert [r["method"] for r in result["inputRequests"].values()] == ["sampling/createMessage"]


# -- the product: a transition or an assignee that could mean several ----------------------------

async def two_closes(conn: asyncpg.Connection, tenant: Tenant) -> None:
    """WEB's workflow gets a status Won't Do, and two moves out of To Do named Close."""
    await in_tenant(conn, tenant, """
        WITH s AS (INSERT INTO workflow_statuses (tenant_id, project_key, status, category,
                                                  position)
                   VALUES ($1, 'WEB', 'Won''t Do', 'cancelled', 7) RETURNING 1)
        INSERT INTO workflow_transitions (tenant_id, project_key, transition_id, name,
                                          from_status, to_status)
        SELECT $1, 'WEB', id, 'Close', 'To Do', target
        FROM (VALUES ('13', 'Done'), ('14', 'Won''t Do')) AS t (id, target), s""", tenant.id)


async def new_item(client: TestClient, tenant: Tenant) -> str:
    created = await call(client, tenant, "jira_create_issue",
                         {"project_key": "WEB", "summary": "Ask before moving"})
    return created["structuredContent"]["data"]["key"]


async def test_an_ambiguous_transition_is_asked_and_the_write_waits_for_the_answer(
        mcp, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await two_closes(admin_conn, tenant)
    key = await new_item(mcp, tenant)
    arguments = {"issue_key": key, "status": "close", "idempotency_key": "close-once"}

    first = await call(mcp, tenant, "jira_transition_issue", arguments, capabilities=ELICIT)
    assert first["resultType"] == "input_required"
    ((question_key, question),) = first["inputRequests"].items()
    assert question["method"] == "elicitation/create"
    field = question["params"]["requestedSchema"]["properties"]["status"]
    assert field["enum"] == ["Done", "Won't Do"]
    assert "'Close' (id 13) to 'Done'" in question["params"]["message"]
    # Nothing written, and the idempotency key is free for the retry that brings the answer.
    (row,) = await in_tenant(admin_conn, tenant, "SELECT status, version FROM work_items "
                             "WHERE key = $1", key)
    assert (row["status"], row["version"]) == ("To Do", 1)
    assert await in_tenant(admin_conn, tenant, "SELECT 1 FROM idempotency_keys") == []

    answer = {question_key: {"action": "accept", "content": {"status": "Won't Do"}}}
    moved = await call(mcp, tenant, "jira_transition_issue", arguments, capabilities=ELICIT,
                       rid=2, requestState=first["requestState"], inputResponses=answer)
    data = moved["structuredContent"]["data"]
    assert (data["to_status"], data["transition"]) == ("Won't Do", {"id": "14", "name": "Close"})

    # The retry of the retry (its answer lost on the way) replays; so does the first round.
    again = await call(mcp, tenant, "jira_transition_issue", arguments, capabilities=ELICIT,
                       rid=3, requestState=first["requestState"], inputResponses=answer)
    assert again["structuredContent"]["replayed"] is True
    assert again["structuredContent"]["data"] == data
    replayed = await call(mcp, tenant, "jira_transition_issue", arguments, capabilities=ELICIT,
                          rid=4)
    assert replayed["resultType"] == "complete"
    assert replayed["structuredContent"]["data"] == data
    history = await in_tenant(admin_conn, tenant, "SELECT t.to_status FROM work_item_transitions "
                              "t JOIN work_items w ON w.id = t.work_item_id WHERE w.key = $1 "
                              "ORDER BY t.id", key)
    assert [h["to_status"] for h in history] == ["To Do", "Won't Do"]
    # The round that asked is audited as a call that did not complete (queued, so awaited); the
    # write's row, in its transaction; the replays, queued.
    for _ in range(50):
        audits = await in_tenant(admin_conn, tenant, "SELECT outcome, error_code FROM audit_log "
                                 "WHERE tool = 'jira_transition_issue'")
        if len(audits) == 4:
            break
        await asyncio.sleep(0.1)
    assert sorted(tuple(a) for a in audits) == [("error", "INPUT_REQUIRED"), ("ok", None),
                                                ("ok", None), ("ok", None)]


async def test_an_answer_that_chooses_nothing_changes_nothing(
        mcp, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await two_closes(admin_conn, tenant)
    key = await new_item(mcp, tenant)
    arguments = {"issue_key": key, "status": "Close"}
    first = await call(mcp, tenant, "jira_transition_issue", arguments, capabilities=ELICIT)
    (question_key,) = first["inputRequests"]
    for answer, says in (({"action": "decline"}, "'decline'"),
                         ({"action": "accept", "content": {"status": "Done!"}},
                          "'Done!' is not one of them")):
        result = await call(mcp, tenant, "jira_transition_issue", arguments,
                            capabilities=ELICIT, requestState=first["requestState"],
                            inputResponses={question_key: answer})
        error = result["structuredContent"]["error"]
        assert error["code"] == "VALIDATION_ERROR" and says in error["message"], error
    (row,) = await in_tenant(admin_conn, tenant, "SELECT status FROM work_items WHERE key = $1",
                             key)
    assert row["status"] == "To Do"


async def test_a_client_that_cannot_be_asked_is_told_the_candidates(
        mcp, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await two_closes(admin_conn, tenant)
    key = await new_item(mcp, tenant)
    arguments = {"issue_key": key, "status": "close"}
    stateless_result = await call(mcp, tenant, "jira_transition_issue", arguments)
    response = await mcp.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "jira_transition_issue", "arguments": arguments}})
    execute_result = (await response.json())["result"]
    for result in (stateless_result, execute_result):
        error = result["structuredContent"]["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert "'Close' (id 13) to 'Done', 'Close' (id 14) to \"Won't Do\"" in error["message"]
        assert error["details"][0]["candidates"] == ["Done", "Won't Do"]
    # A status given exactly, or a name that means one move, is not asked about.
    exact = await call(mcp, tenant, "jira_transition_issue",
                       {"issue_key": key, "status": "won't do"}, capabilities=ELICIT)
    assert exact["structuredContent"]["data"]["to_status"] == "Won't Do"


async def test_an_assignee_that_could_mean_several_people_is_asked(
        mcp, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    key = await new_item(mcp, tenant)
    # The demo's items know alice@example.com; one more Alice.
    await call(mcp, tenant, "jira_update_issue",
               {"issue_key": "WEB-1", "fields": {"assignee": "alice.smith@example.com"}})
    arguments = {"issue_key": key, "fields": {"assignee": "Alice", "priority": "high"}}
    first = await call(mcp, tenant, "jira_update_issue", arguments, capabilities=ELICIT)
    ((question_key, question),) = first["inputRequests"].items()
    assert question["params"]["requestedSchema"]["properties"]["assignee"]["enum"] == [
        "alice.smith@example.com", "alice@example.com"]
    (row,) = await in_tenant(admin_conn, tenant, "SELECT assignee, priority, version "
                             "FROM work_items WHERE key = $1", key)
    assert tuple(row) == (None, "medium", 1)
    done = await call(mcp, tenant, "jira_update_issue", arguments, capabilities=ELICIT,
                      requestState=first["requestState"], inputResponses={question_key: {
                          "action": "accept", "content": {"assignee": "alice@example.com"}}})
    assert done["structuredContent"]["data"]["changed"]["assignee"] == {
        "from": None, "to": "alice@example.com"}
    (row,) = await in_tenant(admin_conn, tenant, "SELECT assignee, priority FROM work_items "
                             "WHERE key = $1", key)
    assert tuple(row) == ("alice@example.com", "high")

    # Without a way to ask: the candidates; a name like nobody's, or an address, stands.
    refusal = await call(mcp, tenant, "jira_update_issue", arguments)
    assert refusal["structuredContent"]["error"]["details"][0]["candidates"] == [
        "alice.smith@example.com", "alice@example.com"]
    for assignee in ("zoe", "alice@elsewhere.example", "alice@example.com"):
        stands = await call(mcp, tenant, "jira_create_issue", {
            "project_key": "WEB", "summary": "x", "assignee": assignee})
        assert stands["structuredContent"]["data"]["assignee"] == assignee
    # Another tenant's people are nobody here: its own demo knows one Alice only, so "Alice"
    # stands as given there, asking nothing.
    other = await make_tenant(demo=True)
    there = await call(mcp, other, "jira_update_issue",
                       {"issue_key": "WEB-2", "fields": {"assignee": "Alice"}},
                       capabilities=ELICIT)
    assert there["resultType"] == "complete"
    assert there["structuredContent"]["data"]["changed"]["assignee"]["to"] == "Alice"


async def test_on_a_session_the_question_is_a_request_to_the_client(
        mcp, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await two_closes(admin_conn, tenant)
    key = await new_item(mcp, tenant)
    sid = await open_session(mcp, tenant, capabilities=ELICIT)
    response = await post(mcp, tenant, request("tools/call", 5, name="jira_transition_issue",
                                               arguments={"issue_key": key, "status": "close"}),
                          sid=sid, version="2025-11-25")
    assert response.content_type == "text/event-stream"
    asked = orjson.loads((await read_event(response))["data"])
    assert asked["method"] == "elicitation/create" and "id" in asked
    assert asked["params"]["requestedSchema"]["properties"]["status"]["enum"] == [
        "Done", "Won't Do"]
    answered = await post(mcp, tenant, {"jsonrpc": "2.0", "id": asked["id"], "result": {
        "action": "accept", "content": {"status": "Done"}}}, sid=sid, version="2025-11-25")
    assert answered.status == 202
    final = orjson.loads((await read_event(response))["data"])
    assert final["id"] == 5
    assert "resultType" not in final["result"]
    assert final["result"]["structuredContent"]["data"]["to_status"] == "Done"
