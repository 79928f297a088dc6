"""jira_search over real HTTP: JQL, fields, keyset pages that never skip or repeat, totals,
errors, and another tenant's items never matching."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest


async def _call(client, tenant, name: str, **arguments: Any) -> dict:
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert resp.status == 200
    return (await resp.json())["result"]["structuredContent"]


async def _search(client, tenant, **arguments: Any) -> dict:
    return await _call(client, tenant, "jira_search", **arguments)


async def _all_pages(client, tenant, **arguments: Any) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        envelope = await _search(client, tenant, **arguments,
                                 **({"cursor": cursor} if cursor else {}))
        assert envelope["success"], envelope
        items.extend(envelope["data"]["issues"])
        cursor = envelope["data"]["next_cursor"]
        if cursor is None:
            return items


async def _expected_keys(admin_conn, tenant_id, where_sql: str, order_sql: str) -> list[str]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        rows = await admin_conn.fetch(
            f"SELECT key FROM work_items WHERE {where_sql} ORDER BY {order_sql}")
    return [r["key"] for r in rows]


@pytest.mark.parametrize(("jql", "where_sql", "order_sql"), [
    ("", "TRUE", "updated_at DESC, id"),
    ("project = WEB ORDER BY key", "project_key = 'WEB'", "project_key, number, id"),
    ("statusCategory != done ORDER BY priority DESC, created ASC",
     "status_category <> 'done'",
     "CASE priority WHEN 'none' THEN 0 WHEN 'low' THEN 1 WHEN 'medium' THEN 2 "
     "WHEN 'high' THEN 3 WHEN 'critical' THEN 4 END DESC, created_at, id"),
    # resolved_at is NULL for open items: NULLs first when descending, and pages must still
    # neither skip nor repeat them.
    ("project IN (API, OPS) ORDER BY resolved DESC", "project_key IN ('API', 'OPS')",
     "resolved_at DESC, id"),
    ("assignee IS EMPTY ORDER BY assignee", "assignee IS NULL", "assignee, id"),
    # Due dates sort by day, so the key orders each day's items.
    ("due IS NOT EMPTY ORDER BY due, key DESC", "due_at IS NOT NULL",
     "date_trunc('day', due_at, 'UTC'), project_key DESC, number DESC, id"),
])
async def test_pages_walk_the_whole_result_in_order(
    client, make_tenant, admin_conn, jql: str, where_sql: str, order_sql: str
) -> None:
    tenant = await make_tenant(demo=True)
    expected = await _expected_keys(admin_conn, tenant.id, where_sql, order_sql)
    items = await _all_pages(client, tenant, jql=jql, limit=7)
    assert [i["key"] for i in items] == expected
    first = await _search(client, tenant, jql=jql, limit=7)
    assert first["data"]["total"] == len(expected)
    assert first["data"]["total_is_exact"] is True
    if cursor := first["data"]["next_cursor"]:
        second = await _search(client, tenant, jql=jql, limit=7, cursor=cursor)
        assert second["data"]["total"] == len(expected)
    # A first page that holds every match is its own count.
    whole = await _search(client, tenant, jql=jql, limit=len(expected))
    assert len(whole["data"]["issues"]) == whole["data"]["total"] == len(expected)
    assert whole["data"]["next_cursor"] is None


async def test_fields_choose_what_each_item_carries(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    envelope = await _search(client, tenant, jql="project = WEB", fields=["summary", "labels"],
                             limit=3)
    assert envelope["success"]
    assert [set(i) for i in envelope["data"]["issues"]] == [{"key", "summary", "labels"}] * 3


async def test_current_user_is_the_keys_user(client, make_tenant, admin_conn) -> None:
    tenant = await make_tenant(demo=True, user="alice@example.com")
    expected = await _expected_keys(admin_conn, tenant.id, "assignee = 'alice@example.com'",
                                    "updated_at DESC, id")
    items = await _all_pages(client, tenant, jql="assignee = currentUser()", limit=50)
    assert [i["key"] for i in items] == expected and expected


@pytest.mark.parametrize(("arguments", "needle"), [
    ({"jql": "project = WEB AND"}, "position 17"),
    ({"jql": "colour = red"}, "colour"),
    ({"jql": "project = WEB", "cursor": "not-a-cursor"}, "cursor"),
    ({"limit": 0}, "/limit"),
    ({"fields": ["password"]}, "/fields/0"),
])
async def test_bad_input_is_a_validation_error(client, make_tenant, arguments, needle) -> None:
    tenant = await make_tenant(demo=True)
    envelope = await _search(client, tenant, **arguments)
    assert envelope["success"] is False
    assert envelope["error"]["code"] == "VALIDATION_ERROR"
    assert needle in str(envelope["error"])


async def test_a_cursor_only_continues_its_own_query(client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    first = await _search(client, tenant, jql="project = WEB", limit=2)
    envelope = await _search(client, tenant, jql="project = API", limit=2,
                             cursor=first["data"]["next_cursor"])
    assert envelope["error"]["code"] == "VALIDATION_ERROR"


def _tampered(cursor: str, **changes: Any) -> str:
    payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return base64.urlsafe_b64encode(orjson.dumps({**payload, **changes})).decode()


@pytest.mark.parametrize(("jql", "values", "last_id"), [
    ("project = WEB ORDER BY key", [["v", "WEB"], ["v", "2"]], 1),        # text for int4
    ("project = WEB ORDER BY key", [["v", 5], ["v", 2]], 1),              # int for text
    ("project = WEB ORDER BY key", [["v", "WEB"], ["v", 2**40]], 1),      # past int4
    ("project = WEB ORDER BY key", [["v", "W\u0000"], ["v", 2]], 1),      # NUL in text
    ("project = WEB ORDER BY key", [["v", "WEB"], ["v", 2]], 2**63),      # past bigint
    ("project = WEB ORDER BY key", [["v", "WEB"], ["v", 2]], 1.5),
    ("project = WEB", [["v", "2026-01-01T00:00:00+00:00"]], 1),           # text for a time
    ("project = WEB", [["ts", "2026-01-01T00:00:00"]], 1),                 # no time zone
    ("project = WEB", [["ts", "0001-01-01T00:00:00+05:00"]], 1),           # before year 1
    ("project = WEB", [["ts", 7]], 1),
])
async def test_a_tampered_cursor_is_refused_before_the_database_sees_it(
        client, make_tenant, jql, values, last_id) -> None:
    tenant = await make_tenant(demo=True)
    first = await _search(client, tenant, jql=jql, limit=2)
    cursor = _tampered(first["data"]["next_cursor"], v=values, id=last_id)
    envelope = await _search(client, tenant, jql=jql, limit=2, cursor=cursor)
    assert envelope["error"]["code"] == "VALIDATION_ERROR", envelope
    assert envelope["error"]["message"] == "cursor is not valid"


async def _add_project(admin_conn, tenant_id, project_key: str) -> None:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await admin_conn.execute(
            "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, $2, $2)",
            tenant_id, project_key)


async def test_another_tenants_items_never_match(client, make_tenant, admin_conn) -> None:
    mine = await make_tenant(demo=True)
    other = await make_tenant(demo=False)
    await _add_project(admin_conn, other.id, "OWN")
    envelope = await _search(client, other, jql="project = OWN OR key = WEB-1")
    assert envelope["success"]
    assert envelope["data"] == {"issues": [], "total": 0, "total_is_exact": True,
                                "next_cursor": None}
    own = await _search(client, mine, jql="key = WEB-1")
    assert [i["key"] for i in own["data"]["issues"]] == ["WEB-1"]
    # Another tenant's project is as unknown as one that never existed, and the values an
    # error lists are the caller's own.
    theirs = await _search(client, other, jql="key = WEB-1 OR project = WEB")
    assert theirs["error"]["code"] == "VALIDATION_ERROR"
    assert theirs["error"]["message"] == (
        "invalid JQL: at position 25: the value 'WEB' does not exist for the field 'project'; "
        "known values: OWN")
    back = await _search(client, mine, jql="project in (WEB, OWN)")
    assert back["error"]["message"] == (
        "invalid JQL: at position 17: the value 'OWN' does not exist for the field 'project'; "
        "known values: API, OPS, WEB")


STATUSES = "Blocked, Cancelled, Done, In Progress, In Review, To Do"


@pytest.mark.parametrize(("jql", "message"), [
    ("project = NOPE", "at position 10: the value 'NOPE' does not exist for the field "
                       "'project'; known values: API, OPS, WEB"),
    ("project IN (WEB, nope)", "at position 17: the value 'nope' does not exist for the field "
                               "'project'; known values: API, OPS, WEB"),
    # As in Jira, != and NOT IN refuse it too: "everything but a typo" is no answer.
    ("project != NOPE", "at position 11: the value 'NOPE' does not exist"),
    ("assignee = x OR project NOT IN (API, NOPE)", "at position 37: the value 'NOPE'"),
    ("status = 'Nope'", "at position 9: the value 'Nope' does not exist for the field "
                        f"'status'; known values: {STATUSES}"),
    ("NOT status IN (done, 'in progress', Nope)", "at position 36: the value 'Nope'"),
    ("status != ''", "at position 10: the value '' does not exist for the field 'status'"),
    # Types are a fixed set, checked by the compiler, with the same ingredients.
    ("type = Story AND issuetype = Spike",
     "at position 29: found 'Spike', expected a type value: epic, story, task, bug, subtask, "
     "feature"),
])
async def test_a_value_the_tenant_does_not_have_is_refused(
        client, make_tenant, jql: str, message: str) -> None:
    tenant = await make_tenant(demo=True)
    envelope = await _search(client, tenant, jql=jql)
    assert envelope["success"] is False
    assert envelope["error"]["code"] == "VALIDATION_ERROR"
    assert envelope["error"]["message"].startswith(f"invalid JQL: {message}"), envelope
    assert envelope["error"]["details"] == [
        {"path": "/jql", "message": envelope["error"]["message"].removeprefix("invalid JQL: ")}]


async def test_a_status_only_items_still_carry_is_known(client, make_tenant, admin_conn) -> None:
    """A status its source retired leaves the workflow but stays on its items: still findable."""
    tenant = await make_tenant(demo=True)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await admin_conn.execute("UPDATE work_items SET status = 'Legacy' WHERE key = 'WEB-2'")
    found = await _search(client, tenant, jql="status = legacy OR status = 'IN PROGRESS'",
                          fields=["status"], limit=100)
    assert found["success"], found
    assert "WEB-2" in [i["key"] for i in found["data"]["issues"]]
    assert {i["status"] for i in found["data"]["issues"]} <= {"Legacy", "In Progress"}
    refused = await _search(client, tenant, jql="status IN (Legacy, Legacy2)")
    assert refused["error"]["message"] == (
        "invalid JQL: at position 19: the value 'Legacy2' does not exist for the field "
        f"'status'; known values: {STATUSES}, Legacy")


async def test_a_priority_is_found_by_the_name_it_was_written_with(client, make_tenant) -> None:
    """JQL reads Jira's priority names as the writers store them: Lowest and Trivial are none,
    Normal is medium."""
    tenant = await make_tenant(demo=True)
    for name in ("Lowest", "Trivial", "Normal"):
        created = await _call(client, tenant, "jira_create_issue", project_key="WEB",
                              summary=f"A {name} one", priority=name)
        assert created["success"], created
        key = created["data"]["key"]
        found = await _search(client, tenant, jql=f"key = {key} AND priority = {name}")
        assert [i["key"] for i in found["data"]["issues"]] == [key], (name, found)
