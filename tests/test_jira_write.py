"""The jira write and listing tools over real HTTP: exact values in the database, every error code,
keys under concurrency, idempotency, audit rows in the write's transaction, and tenant isolation."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from jsonschema import Draft202012Validator

import spiral_mcp
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.idempotency import request_hash

# The schemas the server loads, from the installed package or the source tree alike.
SCHEMAS = Path(spiral_mcp.__file__).resolve().parent / "schemas"

USER = "tester@example.com"
WRITE_TOOLS = ("jira_create_issue", "jira_update_issue", "jira_transition_issue",
               "jira_add_comment", "jira_link_issues")


async def rpc(client, tenant, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert resp.status == 200
    return await resp.json()


async def call(client, tenant, name: str, **arguments: Any) -> dict[str, Any]:
    """The result envelope (structuredContent) of one tool call."""
    answer = await rpc(client, tenant, name, arguments)
    assert "result" in answer, answer
    envelope = answer["result"]["structuredContent"]
    assert answer["result"]["isError"] is (not envelope["success"])
    return envelope


@cache
def output_validator(name: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMAS / f"{name}.output.json").read_bytes())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


async def ok(client, tenant, name: str, **arguments: Any) -> dict[str, Any]:
    """The data of a successful call, checked against the tool's declared output schema."""
    envelope = await call(client, tenant, name, **arguments)
    assert envelope["success"], envelope
    output_validator(name.replace(".", "_", 1)).validate(envelope["data"])
    return envelope["data"]


async def fails(client, tenant, name: str, code: str, **arguments: Any) -> dict[str, Any]:
    envelope = await call(client, tenant, name, **arguments)
    assert not envelope["success"], envelope
    assert envelope["error"]["code"] == code, envelope
    return envelope["error"]


async def create(client, tenant, **arguments: Any) -> dict[str, Any]:
    return await ok(client, tenant, "jira_create_issue",
                    **{"project_key": "WEB", "summary": "A fresh item", **arguments})


async def fetch(conn: asyncpg.Connection, tenant_id: Any, sql: str, *args: Any) -> list[Any]:
    """Rows of ``sql`` as the owner, inside the tenant's context (RLS is forced on the owner)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch(sql, *args)


async def item_row(conn: asyncpg.Connection, tenant_id: Any, key: str) -> Any:
    rows = await fetch(conn, tenant_id, "SELECT * FROM work_items WHERE key = $1", key)
    return rows[0] if rows else None


async def audit_rows(conn: asyncpg.Connection, tenant_id: Any, tool: str) -> list[Any]:
    # A call by alias is audited in the write's transaction under the name it was called by
    # (the dispatcher hands the alias to ToolContext.tool); see test_alias_calls_are_audited...
    alias = tool.replace("_", ".", 1)
    return await fetch(conn, tenant_id, "SELECT * FROM audit_log WHERE tool = ANY($1::text[]) "
                       "ORDER BY id", [tool, alias])


# --- jira_create_issue ---------------------------------------------------------------------

async def test_create_issue_stores_every_field(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    adf = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Steps", "marks": [
            {"type": "strong"}]}, {"type": "text", "text": " below"}]}]}
    issue = await ok(client, tenant, "jira_create_issue", project_key="web",
                     summary="  Checkout fails on Safari  ", issue_type="Bug", description=adf,
                     priority="Highest", assignee="dave@example.com",
                     labels=["frontend", "safari", "frontend"], parent_key="web-1",
                     due_date="2030-05-17", custom_fields={"story_points": 3, "team": None})
    # The demo's 20 items took WEB-1..WEB-20.
    assert issue["key"] == "WEB-21"
    assert issue["project_key"] == "WEB"
    assert issue["summary"] == "Checkout fails on Safari"
    assert issue["description"] == "**Steps** below"
    assert issue["type"] == "bug"
    assert (issue["status"], issue["status_category"]) == ("To Do", "todo")
    assert issue["priority"] == "critical"
    assert issue["reporter"] == USER
    assert issue["version"] == 1
    assert issue["due_at"] == "2030-05-17T00:00:00+00:00"
    assert issue["resolved_at"] is None
    assert issue["source"] == "local"

    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert row["number"] == 21
    assert row["title"] == "Checkout fails on Safari"
    assert row["description"] == "**Steps** below"
    assert (row["type"], row["status"], row["status_category"]) == ("bug", "To Do", "todo")
    assert row["priority"] == "critical"
    assert (row["assignee"], row["reporter"]) == ("dave@example.com", USER)
    assert row["labels"] == ["frontend", "safari"]
    assert row["parent_key"] == "WEB-1"
    assert row["due_at"] == dt.datetime(2030, 5, 17, tzinfo=dt.UTC)
    assert row["custom_fields"] == '{"story_points": 3}'  # the owner's connection: raw JSON text
    assert row["version"] == 1

    history = await fetch(admin_conn, tenant.id, "SELECT * FROM work_item_transitions "
                          "WHERE work_item_id = $1", row["id"])
    assert [(h["from_status"], h["to_status"], h["from_category"], h["to_category"], h["actor"])
            for h in history] == [(None, "To Do", None, "todo", USER)]
    assert history[0]["transitioned_at"] == row["created_at"]
    next_number = await fetch(admin_conn, tenant.id,
                              "SELECT next_number FROM projects WHERE project_key = 'WEB'")
    assert next_number[0]["next_number"] == 22

    (audit,) = await audit_rows(admin_conn, tenant.id, "jira_create_issue")
    assert (audit["outcome"], audit["actor"], audit["key_id"]) == ("ok", USER, tenant.key_id)
    assert audit["before"] is None
    assert '"key": "WEB-21"' in audit["after"]


async def test_create_issue_defaults_and_an_empty_project(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant()
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                                 "VALUES ($1, 'NEW', 'New project')", tenant.id)
    issue = await ok(client, tenant, "jira_create_issue", project_key="NEW", summary="First")
    assert issue["key"] == "NEW-1"
    assert (issue["type"], issue["priority"], issue["labels"]) == ("task", "medium", [])
    assert (issue["description"], issue["assignee"], issue["parent_key"]) == (None, None, None)
    assert issue["custom_fields"] == {}
    second = await ok(client, tenant, "jira.create_issue", project_key="new", summary="Second")
    assert second["key"] == "NEW-2"


@pytest.mark.parametrize(("arguments", "code", "path"), [
    ({"project_key": "NOPE"}, "NOT_FOUND", None),
    ({"parent_key": "WEB-999"}, "VALIDATION_ERROR", "/parent_key"),
    ({"issue_type": "incident"}, "VALIDATION_ERROR", "/issue_type"),
    ({"issue_type": "subtask"}, "VALIDATION_ERROR", "/parent_key"),
    ({"priority": "urgent"}, "VALIDATION_ERROR", "/priority"),
    ({"due_date": "2030-02-30"}, "VALIDATION_ERROR", "/due_date"),
    ({"due_date": "tomorrow"}, "VALIDATION_ERROR", "/due_date"),
    ({"summary": "   "}, "VALIDATION_ERROR", "/summary"),
    ({"labels": ["two words"]}, "VALIDATION_ERROR", "/labels/0"),
    ({"description": {"type": "paragraph"}}, "VALIDATION_ERROR", "/description/type"),
    ({"description": {"type": "doc", "content": "x"}}, "VALIDATION_ERROR",
     "/description/content"),
    ({"description": {"type": "doc", "content": [{"type": "paragraph", "content": "x"}]}},
     "VALIDATION_ERROR", "/description"),
    ({"project_key": "web-1"}, "VALIDATION_ERROR", "/project_key"),
    ({"status": "Done"}, "VALIDATION_ERROR", "/"),
    ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, "VALIDATION_ERROR", "/"),
    ({"idempotency_key": "has space"}, "VALIDATION_ERROR", "/idempotency_key"),
])
async def test_create_issue_errors_write_nothing(
        client, make_tenant, admin_conn, arguments: dict[str, Any], code: str,
        path: str | None) -> None:
    tenant = await make_tenant(demo=True)
    error = await fails(client, tenant, "jira_create_issue", code,
                        **{"project_key": "WEB", "summary": "Doomed", **arguments})
    if path is not None:
        assert path in [d["path"] for d in error["details"]], error
    assert await fetch(admin_conn, tenant.id,
                       "SELECT 1 FROM work_items WHERE title = 'Doomed'") == []
    numbers = await fetch(admin_conn, tenant.id,
                          "SELECT next_number FROM projects WHERE project_key = 'WEB'")
    assert numbers[0]["next_number"] == 21
    # The failure is audited as an error (off the request path), never as 'ok'.
    assert all(a["outcome"] == "error"
               for a in await audit_rows(admin_conn, tenant.id, "jira_create_issue"))


async def test_missing_required_arguments_name_them(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    error = await fails(client, tenant, "jira_create_issue", "VALIDATION_ERROR",
                        project_key="WEB")
    assert error["details"] == [{"path": "/", "message": "'summary' is a required property"}]


async def test_concurrent_creates_get_distinct_consecutive_keys(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    results = await asyncio.gather(*(
        call(client, tenant, "jira_create_issue", project_key="WEB", summary=f"Parallel {i}")
        for i in range(50)))
    assert all(r["success"] for r in results), [r for r in results if not r["success"]][:3]
    keys = [r["data"]["key"] for r in results]
    assert sorted(keys, key=lambda k: int(k.split("-")[1])) == [f"WEB-{n}" for n in range(21, 71)]
    rows = await fetch(admin_conn, tenant.id, "SELECT key, title FROM work_items "
                       "WHERE title LIKE 'Parallel %'")
    assert {r["key"]: r["title"] for r in rows} == {
        r["data"]["key"]: r["data"]["summary"] for r in results}
    numbers = await fetch(admin_conn, tenant.id,
                          "SELECT next_number FROM projects WHERE project_key = 'WEB'")
    assert numbers[0]["next_number"] == 71


async def test_numbers_skip_keys_a_sync_already_took(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO work_items (tenant_id, key, project_key, number, title, status, "
            "status_category, source, source_id) VALUES ($1, 'WEB-21', 'WEB', 21, 'Synced', "
            "'To Do', 'todo', 'jira', '10021')", tenant.id)
    assert (await create(client, tenant))["key"] == "WEB-22"


# --- idempotency -----------------------------------------------------------------------------

async def test_one_idempotency_key_under_concurrency_makes_one_item(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    arguments = {"project_key": "WEB", "summary": "Exactly once", "idempotency_key": "req-42"}
    results = await asyncio.gather(*(call(client, tenant, "jira_create_issue", **arguments)
                                     for _ in range(50)))
    succeeded = [r for r in results if r["success"]]
    refused = [r for r in results if not r["success"]]
    assert succeeded
    assert {r["error"]["code"] for r in refused} <= {"IDEMPOTENCY_IN_PROGRESS"}
    assert all(r["error"]["retry_after"] == 1.0 for r in refused)
    assert len({r["data"]["key"] for r in succeeded}) == 1
    assert sum(1 for r in succeeded if not r.get("replayed")) == 1
    rows = await fetch(admin_conn, tenant.id,
                       "SELECT key FROM work_items WHERE title = 'Exactly once'")
    assert len(rows) == 1

    again = await call(client, tenant, "jira_create_issue", **arguments)
    assert again["success"] and again["replayed"] is True
    first = next(r for r in succeeded if not r.get("replayed"))
    assert again["data"] == first["data"]
    assert len(await fetch(admin_conn, tenant.id,
                           "SELECT 1 FROM work_items WHERE title = 'Exactly once'")) == 1
    # One write, one 'ok' audit row: replays are not writes.
    oks = [a for a in await audit_rows(admin_conn, tenant.id, "jira_create_issue")
           if a["outcome"] == "ok"]
    assert len(oks) == 1

    await fails(client, tenant, "jira_create_issue", "IDEMPOTENCY_MISMATCH",
                **{**arguments, "summary": "Something else"})


IDEMPOTENT_CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # tool: (arguments, other arguments for the same key)
    "jira_create_issue": ({"project_key": "WEB", "summary": "Once"},
                          {"project_key": "WEB", "summary": "Twice"}),
    "jira_update_issue": ({"issue_key": "WEB-2", "fields": {"summary": "Once"}},
                          {"issue_key": "WEB-2", "fields": {"summary": "Twice"}}),
    "jira_transition_issue": ({"issue_key": "WEB-21", "status": "In Progress"},
                              {"issue_key": "WEB-21", "status": "Cancelled"}),
    "jira_add_comment": ({"issue_key": "WEB-2", "body": "Once"},
                         {"issue_key": "WEB-2", "body": "Twice"}),
    "jira_link_issues": ({"outward_issue_key": "WEB-21", "inward_issue_key": "WEB-22",
                          "link_type": "blocks"},
                         {"outward_issue_key": "WEB-21", "inward_issue_key": "WEB-22",
                          "link_type": "clones"}),
}


@pytest.mark.parametrize("tool", WRITE_TOOLS)
async def test_every_write_tool_replays_and_refuses_reuse(
        client, make_tenant, admin_conn, tool: str) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)   # WEB-21, WEB-22: fresh items with known state
    await create(client, tenant)
    arguments, other = IDEMPOTENT_CALLS[tool]
    first = await call(client, tenant, tool, **arguments, idempotency_key=f"{tool}:1")
    assert first["success"] and "replayed" not in first, first
    again = await call(client, tenant, tool, **arguments, idempotency_key=f"{tool}:1")
    assert (again["success"], again["replayed"], again["data"]) == (True, True, first["data"])
    await fails(client, tenant, tool, "IDEMPOTENCY_MISMATCH", **other,
                idempotency_key=f"{tool}:1")
    oks = [a for a in await audit_rows(admin_conn, tenant.id, tool) if a["outcome"] == "ok"]
    assert len(oks) == (3 if tool == "jira_create_issue" else 1)  # the two setup creates

    # A key another call holds right now: IDEMPOTENCY_IN_PROGRESS, and nothing is written.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, expires_at) "
            "VALUES ($1, $2, 'held', $3, 'in_progress', now() + interval '1 hour')",
            tenant.id, tool, request_hash(other))
    error = await fails(client, tenant, tool, "IDEMPOTENCY_IN_PROGRESS", **other,
                        idempotency_key="held")
    assert error["retry_after"] == 1.0
    after = [a for a in await audit_rows(admin_conn, tenant.id, tool) if a["outcome"] == "ok"]
    assert len(after) == len(oks)


async def test_a_held_idempotency_key_is_in_progress(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    arguments = {"issue_key": "WEB-1", "body": "hello", "idempotency_key": "held"}
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, expires_at) "
            "VALUES ($1, 'jira_add_comment', 'held', $2, 'in_progress', now() + interval '1 h')",
            tenant.id, request_hash(arguments))
    error = await fails(client, tenant, "jira_add_comment", "IDEMPOTENCY_IN_PROGRESS",
                        **arguments)
    assert error["retry_after"] == 1.0
    assert await fetch(admin_conn, tenant.id,
                       "SELECT 1 FROM comments WHERE body = 'hello'") == []


async def test_a_failed_write_frees_its_idempotency_key(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await fails(client, tenant, "jira_update_issue", "NOT_FOUND", issue_key="WEB-999",
                fields={"summary": "x"}, idempotency_key="k1")
    assert await fetch(admin_conn, tenant.id, "SELECT 1 FROM idempotency_keys") == []


async def test_write_audit_and_result_commit_together_or_not_at_all(
        client, make_tenant, admin_conn, monkeypatch) -> None:
    tenant = await make_tenant(demo=True)
    original = ToolContext.commit_write

    async def commit_then_fail(self: ToolContext, conn: Any, **kwargs: Any) -> None:
        await original(self, conn, **kwargs)
        raise RuntimeError("the process died before COMMIT")

    monkeypatch.setattr(ToolContext, "commit_write", commit_then_fail)
    await fails(client, tenant, "jira_create_issue", "INTERNAL_ERROR", project_key="WEB",
                summary="Half done", idempotency_key="k2")
    monkeypatch.undo()
    assert await fetch(admin_conn, tenant.id,
                       "SELECT 1 FROM work_items WHERE title = 'Half done'") == []
    assert await fetch(admin_conn, tenant.id, "SELECT 1 FROM idempotency_keys") == []
    assert not [a for a in await audit_rows(admin_conn, tenant.id, "jira_create_issue")
                if a["outcome"] == "ok"]
    # The key was released with the rollback: the retry runs and writes once.
    issue = await ok(client, tenant, "jira_create_issue", project_key="WEB", summary="Half done",
                     idempotency_key="k2")
    assert issue["key"] == "WEB-21"


async def test_read_only_key_cannot_call_write_tools(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True, scopes=("read",))
    arguments = {
        "jira_create_issue": {"project_key": "WEB", "summary": "x"},
        "jira_update_issue": {"issue_key": "WEB-1", "fields": {"summary": "x"}},
        "jira_transition_issue": {"issue_key": "WEB-1", "status": "Done"},
        "jira_add_comment": {"issue_key": "WEB-1", "body": "x"},
        "jira_link_issues": {"outward_issue_key": "WEB-1", "inward_issue_key": "WEB-2",
                             "link_type": "blocks"},
    }
    for name in WRITE_TOOLS:
        answer = await rpc(client, tenant, name, arguments[name])
        error = answer["result"]["structuredContent"]["error"]
        assert error["code"] == "PERMISSION_DENIED", answer
        assert error["message"].startswith(f"{name} needs the API-key scope 'write'")
    listed = await client.get("/tools", headers=tenant.headers)
    names = {t["name"] for t in (await listed.json())["tools"]}
    assert {"jira_list_projects", "jira_list_transitions"} <= names
    assert not names & set(WRITE_TOOLS)
    await ok(client, tenant, "jira_list_transitions", issue_key="WEB-1")


async def test_tool_listing_declares_scopes_and_hints(client, make_tenant) -> None:
    tenant = await make_tenant()
    listed = await client.get("/tools", headers=tenant.headers)
    tools = {t["name"]: t for t in (await listed.json())["tools"]}
    # A read-only tool's listing leaves out the hints that mean nothing for it.
    hints = {name: (t["annotations"]["readOnlyHint"], t["annotations"].get("destructiveHint"),
                    t["annotations"].get("idempotentHint")) for name, t in tools.items()}
    assert hints["jira_create_issue"] == (False, False, False)
    assert hints["jira_update_issue"] == (False, True, True)
    assert hints["jira_transition_issue"] == (False, True, False)
    assert hints["jira_add_comment"] == (False, False, False)
    assert hints["jira_link_issues"] == (False, False, True)
    assert hints["jira_list_transitions"] == (True, None, None)
    assert hints["jira_list_projects"] == (True, None, None)
    for name in WRITE_TOOLS:
        key = tools[name]["inputSchema"]["properties"]["idempotency_key"]
        assert key == {**key, "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,255}$"}


# --- jira_update_issue ---------------------------------------------------------------------

async def test_update_issue_sets_fields_and_returns_the_changes(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant, assignee="erin@example.com", labels=["a"],
                 custom_fields={"keep": 1, "drop": 2})
    result = await ok(client, tenant, "jira_update_issue", issue_key="web-21", expected_version=1,
                      fields={"summary": "Renamed", "priority": "Low", "assignee": "",
                              "labels": ["b", "c"], "due_date": "2031-01-02",
                              "parent_key": "WEB-2", "custom_fields": {"drop": None, "new": "x"},
                              "description": "Now *with* text"})
    assert result["key"] == "WEB-21"
    assert result["version"] == 2
    assert result["changed"] == {
        "summary": {"from": "A fresh item", "to": "Renamed"},
        "description": {"from": None, "to": "Now *with* text"},
        "priority": {"from": "medium", "to": "low"},
        "assignee": {"from": "erin@example.com", "to": None},
        "labels": {"from": ["a"], "to": ["b", "c"]},
        "due_date": {"from": None, "to": "2031-01-02T00:00:00+00:00"},
        "parent_key": {"from": None, "to": "WEB-2"},
        "custom_fields": {"from": {"keep": 1, "drop": 2}, "to": {"keep": 1, "new": "x"}},
    }
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["title"], row["priority"], row["assignee"]) == ("Renamed", "low", None)
    assert row["description"] == "Now *with* text"
    assert row["labels"] == ["b", "c"]
    assert row["due_at"] == dt.datetime(2031, 1, 2, tzinfo=dt.UTC)
    assert row["parent_key"] == "WEB-2"
    assert row["custom_fields"] == '{"new": "x", "keep": 1}'
    assert row["version"] == 2
    assert row["updated_at"] > row["created_at"]
    assert result["updated_at"] == row["updated_at"].isoformat()

    (audit,) = await audit_rows(admin_conn, tenant.id, "jira_update_issue")
    assert audit["outcome"] == "ok"
    assert '"summary": "A fresh item"' in audit["before"]
    assert '"summary": "Renamed"' in audit["after"]
    assert "status" not in audit["after"]

    # Clearing ("": every client can send it, not every one a null) works, and the same fields
    # again change nothing and keep the version.
    cleared = await ok(client, tenant, "jira_update_issue", issue_key="WEB-21",
                       fields={"due_date": "", "parent_key": "", "labels": ["c", "b"]})
    assert cleared["changed"] == {
        "due_date": {"from": "2031-01-02T00:00:00+00:00", "to": None},
        "parent_key": {"from": "WEB-2", "to": None}}
    assert cleared["version"] == 3
    again = await ok(client, tenant, "jira_update_issue", issue_key="WEB-21",
                     fields={"due_date": "", "parent_key": ""})
    assert (again["changed"], again["version"]) == ({}, 3)
    assert (await item_row(admin_conn, tenant.id, "WEB-21"))["version"] == 3
    cleared = await ok(client, tenant, "jira_update_issue", issue_key="WEB-21",
                       fields={"description": "", "assignee": ""})
    assert cleared["changed"] == {"description": {"from": "Now *with* text", "to": None}}
    # A null is no value of these fields' schemas: refused by name, nothing written.
    refused = await call(client, tenant, "jira_update_issue", issue_key="WEB-21",
                         fields={"assignee": None})
    assert refused["error"]["code"] == "VALIDATION_ERROR"
    assert refused["error"]["details"][0]["path"] == "/fields/assignee"


async def test_update_issue_with_a_stale_version_conflicts(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    await ok(client, tenant, "jira_update_issue", issue_key="WEB-21", fields={"summary": "v2"})
    error = await fails(client, tenant, "jira_update_issue", "CONFLICT", issue_key="WEB-21",
                        expected_version=1, fields={"summary": "lost update"})
    assert error["details"] == [{"path": "/expected_version", "expected": 1, "current": 2}]
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["title"], row["version"]) == ("v2", 2)


async def test_concurrent_updates_with_one_version_one_wins(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    results = await asyncio.gather(*(
        call(client, tenant, "jira_update_issue", issue_key="WEB-21", expected_version=1,
             fields={"summary": f"writer {i}"}) for i in range(10)))
    winners = [r for r in results if r["success"]]
    assert len(winners) == 1
    assert {r["error"]["code"] for r in results if not r["success"]} == {"CONFLICT"}
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["title"], row["version"]) == (winners[0]["data"]["changed"]["summary"]["to"], 2)


@pytest.mark.parametrize(("fields", "path"), [
    ({"status": "Done"}, "/fields"),
    ({"key": "WEB-99"}, "/fields"),
    ({"project_key": "API"}, "/fields"),
    ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, "/fields"),
    ({}, "/fields"),
    ({"summary": ""}, "/fields/summary"),
    ({"priority": "p1"}, "/fields/priority"),
    ({"due_date": "2031-13-01"}, "/fields/due_date"),
    ({"parent_key": "WEB-21"}, "/fields/parent_key"),
    ({"parent_key": "WEB-999"}, "/fields/parent_key"),
    ({"parent_key": "WEB-22"}, "/fields/parent_key"),   # WEB-22 is WEB-21's child: a loop
])
async def test_update_issue_validation(client, make_tenant, admin_conn,
                                       fields: dict[str, Any], path: str) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    await create(client, tenant, parent_key="WEB-21")
    error = await fails(client, tenant, "jira_update_issue", "VALIDATION_ERROR",
                        issue_key="WEB-21", fields=fields)
    assert path in [d["path"] for d in error["details"]], error
    assert (await item_row(admin_conn, tenant.id, "WEB-21"))["version"] == 1


async def test_update_issue_refuses_top_level_identity_arguments(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    error = await fails(client, tenant, "jira_update_issue", "VALIDATION_ERROR",
                        issue_key="WEB-1", fields={"summary": "x"}, project_key="API")
    assert "Additional properties" in error["details"][0]["message"]


async def test_update_issue_not_found(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    await fails(client, tenant, "jira_update_issue", "NOT_FOUND", issue_key="WEB-999",
                fields={"summary": "x"})


# --- jira_transition_issue and jira_list_transitions -------------------------------------------

async def test_list_transitions(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    listed = await ok(client, tenant, "jira.list_transitions", issue_key="web-21")
    assert listed == {
        "key": "WEB-21", "project_key": "WEB", "status": "To Do", "status_category": "todo",
        "version": 1, "transitions": [
            {"id": "11", "name": "Start progress", "to_status": "In Progress",
             "to_category": "in_progress"},
            {"id": "12", "name": "Cancel", "to_status": "Cancelled", "to_category": "cancelled"},
        ]}
    await fails(client, tenant, "jira_list_transitions", "NOT_FOUND", issue_key="WEB-999")
    await fails(client, tenant, "jira_list_transitions", "VALIDATION_ERROR", issue_key="WEB")


async def test_transition_issue_walks_the_workflow(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    moved = await ok(client, tenant, "jira_transition_issue", issue_key="web-21",
                     status="in progress")
    assert moved["transition"] == {"id": "11", "name": "Start progress"}
    assert (moved["from_status"], moved["to_status"]) == ("To Do", "In Progress")
    assert (moved["from_category"], moved["to_category"]) == ("todo", "in_progress")
    assert (moved["version"], moved["resolved_at"], moved["comment_id"]) == (2, None, None)

    done = await ok(client, tenant, "jira_transition_issue", issue_key="WEB-21", status="DONE",
                    comment="Shipped in **1.4**", expected_version=2)
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["status"], row["status_category"], row["version"]) == ("Done", "done", 3)
    assert row["resolved_at"] is not None
    assert done["resolved_at"] == row["resolved_at"].isoformat()
    comments = await fetch(admin_conn, tenant.id, "SELECT id, author, body FROM comments "
                           "WHERE work_item_id = $1", row["id"])
    assert [(c["id"], c["author"], c["body"]) for c in comments] == [
        (done["comment_id"], USER, "Shipped in **1.4**")]

    reopened = await ok(client, tenant, "jira_transition_issue", issue_key="WEB-21",
                        transition_id=51)
    assert reopened["transition"] == {"id": "51", "name": "Reopen"}
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["status"], row["status_category"], row["resolved_at"]) == ("To Do", "todo", None)

    # A transition's name works too when it is unambiguous.
    started = await ok(client, tenant, "jira_transition_issue", issue_key="WEB-21",
                       status="Start progress")
    assert started["to_status"] == "In Progress"

    history = await fetch(admin_conn, tenant.id, "SELECT from_status, to_status, from_category, "
                          "to_category, actor FROM work_item_transitions WHERE work_item_id = $1 "
                          "ORDER BY id", row["id"])
    assert [tuple(h.values()) for h in history] == [
        (None, "To Do", None, "todo", USER),
        ("To Do", "In Progress", "todo", "in_progress", USER),
        ("In Progress", "Done", "in_progress", "done", USER),
        ("Done", "To Do", "done", "todo", USER),
        ("To Do", "In Progress", "todo", "in_progress", USER),
    ]
    audits = await audit_rows(admin_conn, tenant.id, "jira_transition_issue")
    assert [a["outcome"] for a in audits] == ["ok"] * 4
    assert '"status": "Done"' in audits[1]["after"]
    assert '"status": "In Progress"' in audits[1]["before"]


async def test_transition_issue_refuses_moves_the_workflow_does_not_allow(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    error = await fails(client, tenant, "jira_transition_issue", "VALIDATION_ERROR",
                        issue_key="WEB-21", status="Done")
    assert "'Start progress' (id 11) to 'In Progress'" in error["message"]
    assert "'Cancel' (id 12) to 'Cancelled'" in error["message"]
    (detail,) = error["details"]
    assert detail["path"] == "/status"
    assert detail["current_status"] == "To Do"
    assert [(a["id"], a["name"]) for a in detail["allowed"]] == [
        ("11", "Start progress"), ("12", "Cancel")]

    error = await fails(client, tenant, "jira_transition_issue", "VALIDATION_ERROR",
                        issue_key="WEB-21", transition_id="24")
    assert error["details"][0]["path"] == "/transition_id"
    await fails(client, tenant, "jira_transition_issue", "VALIDATION_ERROR",
                issue_key="WEB-21", status="In Progress", transition_id="11")
    await fails(client, tenant, "jira_transition_issue", "VALIDATION_ERROR", issue_key="WEB-21")
    await fails(client, tenant, "jira_transition_issue", "VALIDATION_ERROR",
                issue_key="WEB-21", status="Done", resolution="Fixed")
    await fails(client, tenant, "jira_transition_issue", "CONFLICT", issue_key="WEB-21",
                status="In Progress", expected_version=7)
    await fails(client, tenant, "jira_transition_issue", "NOT_FOUND", issue_key="WEB-999",
                status="In Progress")
    row = await item_row(admin_conn, tenant.id, "WEB-21")
    assert (row["status"], row["version"]) == ("To Do", 1)
    assert len(await fetch(admin_conn, tenant.id, "SELECT 1 FROM work_item_transitions "
                           "WHERE work_item_id = $1", row["id"])) == 1


# --- jira_add_comment --------------------------------------------------------------------------

async def test_add_comment_markdown_and_adf(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await create(client, tenant)
    before = await item_row(admin_conn, tenant.id, "WEB-21")
    first = await ok(client, tenant, "jira_add_comment", issue_key="web-21",
                     body="Looks *good*.\n\n- one\n- two")
    assert (first["issue_key"], first["author"]) == ("WEB-21", USER)
    assert first["body"] == "Looks *good*.\n\n- one\n- two"
    adf = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [
            {"type": "mention", "attrs": {"id": "x1", "text": "@Alice"}},
            {"type": "text", "text": " see "},
            {"type": "text", "text": "the docs",
             "marks": [{"type": "link", "attrs": {"href": "https://example.com"}}]}]},
        {"type": "codeBlock", "attrs": {"language": "sql"},
         "content": [{"type": "text", "text": "SELECT 1"}]}]}
    second = await ok(client, tenant, "jira.add_comment", issue_key="WEB-21", body=adf)
    assert second["body"] == "@Alice see [the docs](https://example.com)\n\n```sql\nSELECT 1\n```"
    third = await ok(client, tenant, "jira_add_comment", issue_key="WEB-21", comment="via alias")

    rows = await fetch(admin_conn, tenant.id, "SELECT id, author, body FROM comments "
                       "WHERE work_item_id = $1 ORDER BY id", before["id"])
    assert [(r["id"], r["author"], r["body"]) for r in rows] == [
        (first["id"], USER, first["body"]), (second["id"], USER, second["body"]),
        (third["id"], USER, "via alias")]
    after = await item_row(admin_conn, tenant.id, "WEB-21")
    assert after["updated_at"] > before["updated_at"]
    assert after["version"] == before["version"]  # a comment is not a field change
    audits = await audit_rows(admin_conn, tenant.id, "jira_add_comment")
    assert [a["outcome"] for a in audits] == ["ok"] * 3
    assert f'"id": {first["id"]}' in audits[0]["after"]


async def test_comment_author_is_the_keys_user(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True, user="bot@agents.example")
    comment = await ok(client, tenant, "jira_add_comment", issue_key="WEB-3", body="hi")
    assert comment["author"] == "bot@agents.example"


@pytest.mark.parametrize(("arguments", "code", "path"), [
    ({"issue_key": "WEB-999", "body": "x"}, "NOT_FOUND", None),
    ({"issue_key": "WEB-1"}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": "x", "comment": "y"}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": ""}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": "   "}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": {"type": "doc", "content": []}}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": {"type": "doc", "content": [{"type": "paragraph",
                                                                 "content": "x"}]}},
     "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": {"type": "paragraph"}}, "VALIDATION_ERROR", "/body/type"),
    ({"issue_key": "WEB-1", "body": 42}, "VALIDATION_ERROR", "/body"),
    ({"issue_key": "WEB-1", "body": "x", "author": "someone@else"}, "VALIDATION_ERROR", "/"),
])
async def test_add_comment_errors(client, make_tenant, admin_conn, arguments: dict[str, Any],
                                  code: str, path: str | None) -> None:
    tenant = await make_tenant(demo=True)
    count = len(await fetch(admin_conn, tenant.id, "SELECT 1 FROM comments"))
    error = await fails(client, tenant, "jira_add_comment", code, **arguments)
    if path is not None:
        assert path in [d["path"] for d in error["details"]], error
    assert len(await fetch(admin_conn, tenant.id, "SELECT 1 FROM comments")) == count


# --- jira_link_issues --------------------------------------------------------------------------

async def test_link_issues_directions_and_duplicates(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    a, b, c = [(await create(client, tenant, summary=s))["key"] for s in ("A", "B", "C")]
    assert (a, b, c) == ("WEB-21", "WEB-22", "WEB-23")
    blocks = await ok(client, tenant, "jira_link_issues", outward_issue_key=a.lower(),
                      inward_issue_key=b, link_type="Blocks")
    assert blocks["description"] == "WEB-21 blocks WEB-22"
    assert (blocks["link_type"], blocks["outward_issue_key"], blocks["inward_issue_key"]) == (
        "blocks", a, b)
    # The inverse name reads the other way round: "C is blocked by A" is "A blocks C".
    inverse = await ok(client, tenant, "jira.link_issues", outward_issue_key=c,
                       inward_issue_key=a, link_type="is blocked by")
    assert inverse["description"] == "WEB-21 blocks WEB-23"
    relates = await ok(client, tenant, "jira_link_issues", outward_issue_key=b,
                       inward_issue_key=c, link_type="relates to")
    assert relates["description"] == "WEB-22 relates to WEB-23"
    dup = await ok(client, tenant, "jira_link_issues", outward_issue_key=c, inward_issue_key=b,
                   link_type="is duplicated by")
    assert dup["description"] == "WEB-22 duplicates WEB-23"

    rows = await fetch(admin_conn, tenant.id, """
        SELECT l.id, l.link_type, o.key AS outward, i.key AS inward, l.created_by
        FROM work_item_links l JOIN work_items o ON o.id = l.outward_id
        JOIN work_items i ON i.id = l.inward_id
        WHERE l.created_by = $1 ORDER BY l.id""", USER)
    assert [tuple(r.values()) for r in rows] == [
        (blocks["id"], "blocks", a, b, USER), (inverse["id"], "blocks", a, c, USER),
        (relates["id"], "relates", b, c, USER), (dup["id"], "duplicates", b, c, USER)]

    # The same link again, in either spelling, is a CONFLICT; "relates" has no direction.
    error = await fails(client, tenant, "jira_link_issues", "CONFLICT", outward_issue_key=b,
                        inward_issue_key=a, link_type="is blocked by")
    assert "WEB-21 blocks WEB-22" in error["message"]
    await fails(client, tenant, "jira_link_issues", "CONFLICT", outward_issue_key=c,
                inward_issue_key=b, link_type="Relates")
    # The reverse of a directed link is a different link.
    await ok(client, tenant, "jira_link_issues", outward_issue_key=b, inward_issue_key=a,
             link_type="blocks")
    audits = await audit_rows(admin_conn, tenant.id, "jira_link_issues")
    assert [a["outcome"] for a in audits if a["outcome"] == "ok"] == ["ok"] * 5
    assert '"description": "WEB-21 blocks WEB-22"' in audits[0]["after"]


async def test_concurrent_symmetric_links_make_one(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    a, b = [(await create(client, tenant, summary=s))["key"] for s in ("A", "B")]
    results = await asyncio.gather(*(
        call(client, tenant, "jira_link_issues", outward_issue_key=x, inward_issue_key=y,
             link_type="relates to") for x, y in [(a, b), (b, a)] * 5))
    assert sum(r["success"] for r in results) == 1
    assert {r["error"]["code"] for r in results if not r["success"]} == {"CONFLICT"}
    rows = await fetch(admin_conn, tenant.id,
                       "SELECT 1 FROM work_item_links WHERE created_by = $1", USER)
    assert len(rows) == 1


@pytest.mark.parametrize(("arguments", "code", "path"), [
    ({"outward_issue_key": "WEB-1", "inward_issue_key": "web-1", "link_type": "blocks"},
     "VALIDATION_ERROR", "/inward_issue_key"),
    ({"outward_issue_key": "WEB-1", "inward_issue_key": "WEB-2", "link_type": "causes"},
     "VALIDATION_ERROR", "/link_type"),
    ({"outward_issue_key": "WEB-1", "inward_issue_key": "WEB-2"}, "VALIDATION_ERROR", "/"),
    ({"outward_issue_key": "WEB-999", "inward_issue_key": "WEB-2", "link_type": "blocks"},
     "NOT_FOUND", None),
    ({"outward_issue_key": "WEB-1", "inward_issue_key": "WEB-999", "link_type": "blocks"},
     "NOT_FOUND", None),
])
async def test_link_issues_errors(client, make_tenant, admin_conn, arguments: dict[str, Any],
                                  code: str, path: str | None) -> None:
    tenant = await make_tenant(demo=True)
    count = len(await fetch(admin_conn, tenant.id, "SELECT 1 FROM work_item_links"))
    error = await fails(client, tenant, "jira_link_issues", code, **arguments)
    if path is not None:
        assert path in [d["path"] for d in error["details"]], error
    if code == "NOT_FOUND":
        assert "WEB-999" in error["message"]
    assert len(await fetch(admin_conn, tenant.id, "SELECT 1 FROM work_item_links")) == count


# --- jira_list_projects ------------------------------------------------------------------------

async def test_list_projects_with_counts(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    other = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(other.id))
        await admin_conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                                 "VALUES ($1, 'SECRET', 'Not yours')", other.id)
    await ok(client, other, "jira_create_issue", project_key="WEB", summary="other's")

    listed = await ok(client, tenant, "jira.list_projects")
    projects = listed["projects"]
    assert [p["key"] for p in projects] == ["API", "OPS", "WEB"]
    web = projects[2]
    assert (web["name"], web["description"], web["lead"]) == (
        "Web storefront", "The customer-facing shop", "alice@example.com")
    assert web["issue_types"] == ["epic", "story", "task", "bug", "subtask", "feature"]
    assert [(s["name"], s["category"], s["is_initial"]) for s in web["statuses"]] == [
        ("To Do", "todo", True), ("In Progress", "in_progress", False),
        ("Blocked", "blocked", False), ("In Review", "in_review", False),
        ("Done", "done", False), ("Cancelled", "cancelled", False)]
    counts = await fetch(admin_conn, tenant.id, "SELECT project_key, status_category, count(*) "
                         "AS n FROM work_items GROUP BY 1, 2")
    for project in projects:
        expected = dict.fromkeys(
            ("todo", "in_progress", "blocked", "in_review", "done", "cancelled"), 0)
        expected.update({r["status_category"]: r["n"] for r in counts
                         if r["project_key"] == project["key"]})
        assert project["counts_by_category"] == expected
        assert project["issue_count"] == 20  # the other tenant's extra WEB item is not counted

    await fails(client, tenant, "jira_list_projects", "VALIDATION_ERROR", project="WEB")
    # A tenant with no projects sees none, never another tenant's.
    empty = await make_tenant()
    assert await ok(client, empty, "jira_list_projects") == {"projects": []}


# --- tenant isolation --------------------------------------------------------------------------

async def test_another_tenants_items_are_not_found_by_any_tool(
        client, make_tenant, admin_conn) -> None:
    owner = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(owner.id))
        await admin_conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                                 "VALUES ($1, 'ALPHA', 'Owner only')", owner.id)
    await ok(client, owner, "jira_create_issue", project_key="ALPHA", summary="Private")
    await ok(client, owner, "jira_create_issue", project_key="ALPHA", summary="Private 2")
    intruder = await make_tenant(demo=True)

    calls: list[tuple[str, dict[str, Any]]] = [
        ("jira_create_issue", {"project_key": "ALPHA", "summary": "Sneaky"}),
        ("jira_update_issue", {"issue_key": "ALPHA-1", "fields": {"summary": "pwned"}}),
        ("jira_update_issue", {"issue_key": "ALPHA-1", "fields": {"summary": "x"},
                               "expected_version": 1}),
        ("jira_transition_issue", {"issue_key": "alpha-1", "status": "In Progress"}),
        ("jira_add_comment", {"issue_key": "ALPHA-1", "body": "pwned"}),
        ("jira_link_issues", {"outward_issue_key": "ALPHA-1", "inward_issue_key": "ALPHA-2",
                              "link_type": "blocks"}),
        ("jira_link_issues", {"outward_issue_key": "WEB-1", "inward_issue_key": "ALPHA-1",
                              "link_type": "relates to"}),
        ("jira_list_transitions", {"issue_key": "ALPHA-1"}),
        ("jira_get_issue", {"issue_key": "ALPHA-1"}),
    ]
    for name, arguments in calls:
        error = await fails(client, intruder, name, "NOT_FOUND", **arguments)
        assert "ALPHA" in error["message"]
    # Setting a foreign item as parent is as unknown as any missing key.
    await fails(client, intruder, "jira_create_issue", "VALIDATION_ERROR", project_key="WEB",
                summary="child", parent_key="ALPHA-1")
    projects = await ok(client, intruder, "jira_list_projects")
    assert "ALPHA" not in [p["key"] for p in projects["projects"]]

    row = await item_row(admin_conn, owner.id, "ALPHA-1")
    assert (row["title"], row["status"], row["version"]) == ("Private", "To Do", 1)
    assert await fetch(admin_conn, owner.id, "SELECT 1 FROM comments WHERE work_item_id = $1",
                       row["id"]) == []
    assert await fetch(admin_conn, owner.id, "SELECT 1 FROM work_item_links WHERE "
                       "outward_id = $1 OR inward_id = $1", row["id"]) == []
    assert await fetch(admin_conn, intruder.id,
                       "SELECT 1 FROM work_items WHERE title IN ('Sneaky', 'child')") == []
    oks = await fetch(admin_conn, intruder.id, "SELECT tool FROM audit_log WHERE outcome = 'ok' "
                      "AND tool LIKE 'jira_%' AND tool <> 'jira_list_projects'")
    assert oks == []


async def test_alias_calls_are_audited_under_the_tools_name(
        client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True)
    await ok(client, tenant, "jira.add_comment", issue_key="WEB-1", body="by alias")
    tools = await fetch(admin_conn, tenant.id, "SELECT tool FROM audit_log WHERE outcome = 'ok'")
    assert [r["tool"] for r in tools] == ["jira_add_comment"]


async def test_racing_transitions_leave_history_in_commit_order(
    aiohttp_client, database_urls, make_tenant
) -> None:
    """Twenty transitions of one item at once: each waits for the item's lock, so they commit
    one after another, and the history (jira_get_issue, sql_get_issue_history) lists them in
    that order: each move starts where the one before ended, the last ends in the item's
    status, and updated_at never goes back. (A move stamped with its transaction's start, taken
    before it waited for the lock, sorted before moves that committed earlier.)"""
    from conftest import make_settings

    from spiral_mcp.server.app import create_app

    tenant = await make_tenant(demo=True)
    settings = make_settings(database_urls, DB_POOL_MAX="10", RATE_LIMIT_WRITE="1000")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    key = (await create(client, tenant))["key"]
    # Each allowed from a status another one leads to: most of the moves go through.
    targets = ["In Progress", "To Do", "In Progress", "Cancelled", "To Do"]
    envelopes = await asyncio.gather(*(
        call(client, tenant, "jira_transition_issue", issue_key=key,
             status=targets[i % len(targets)]) for i in range(20)))
    assert {e["error"]["code"] for e in envelopes if not e["success"]} <= {"VALIDATION_ERROR"}
    moves = sorted((e["data"] for e in envelopes if e["success"]), key=lambda m: m["version"])
    assert len(moves) >= 5, envelopes
    # In commit order (the version counts the moves under the item's lock): a chain, and
    # updated_at only moves forward.
    for before, after in itertools.pairwise(moves):
        assert after["from_status"] == before["to_status"]
        assert dt.datetime.fromisoformat(after["updated_at"]) \
            > dt.datetime.fromisoformat(before["updated_at"]), (before, after)

    issue = await ok(client, tenant, "jira_get_issue", issue_key=key, include_history=True)
    expected = [(None, "To Do")] + [(m["from_status"], m["to_status"]) for m in moves]
    assert [(h["from_status"], h["to_status"]) for h in issue["history"]] == expected
    assert issue["status"] == moves[-1]["to_status"]
    assert issue["updated_at"] == moves[-1]["updated_at"]
    # Each move is stamped with the moment it made, the item's updated_at of that move.
    assert [h["transitioned_at"] for h in issue["history"][1:]] == [
        m["updated_at"] for m in moves]

    history = await call(client, tenant, "sql_get_issue_history", issue_key=key)
    assert history["success"], history
    history = history["data"]
    assert [(r["from_status"], r["to_status"]) for r in history["rows"]] == expected
    assert [r["is_current"] for r in history["rows"]] == [False] * len(moves) + [True]
