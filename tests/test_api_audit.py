"""GET /api/v1/audit over real HTTP: each filter alone and together, keyset pages that see every
row once while rows keep arriving, every refusal in its own words, and another tenant's rows
never."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from api_fixtures import ApiClient
from audit_rows import BASE, Row, write_rows

OTHER_KEY = uuid.UUID("00000000-0000-4000-8000-00000000000b")
TOOLS = ("jira_search", "jira_get_issue", "sql_run_template")


def _rows(key_id: uuid.UUID) -> list[Row]:
    # Three rows share each time: the id alone orders them (the cursor's tie-break).
    return [Row(at=BASE + timedelta(minutes=i // 3), tool=TOOLS[i % 3],
                key_id=key_id if i % 2 else OTHER_KEY if i % 5 else None,
                outcome="error" if i % 4 == 0 else "ok", duration_ms=float(i),
                arguments={"n": i}) for i in range(60)]


@pytest.fixture
async def written(make_tenant, admin_conn) -> tuple[Any, list[Row]]:
    tenant = await make_tenant()
    return tenant, await write_rows(admin_conn, tenant.id, _rows(tenant.key_id))


def _newest_first(rows: list[Row]) -> list[int]:
    return [r.id for r in sorted(rows, key=lambda r: (r.at, r.id), reverse=True)]


async def _page(api: ApiClient, tenant: Any, **query: Any) -> dict[str, Any]:
    resp = await api.get("/audit?" + urlencode(query), tenant)
    assert resp.status == 200, resp.body
    return resp.data


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Each filter alone, then together; the expected rows are picked in Python from those written.
FILTERS = {
    "key": (lambda t: {"key_id": str(t.key_id)}, lambda r, t: r.key_id == t.key_id),
    "tool": (lambda t: {"tool": "jira_get_issue"}, lambda r, t: r.tool == "jira_get_issue"),
    "errors": (lambda t: {"outcome": "error"}, lambda r, t: r.outcome == "error"),
    "oks": (lambda t: {"outcome": "ok"}, lambda r, t: r.outcome == "ok"),
    "since": (lambda t: {"since": _time(BASE + timedelta(minutes=7))},
              lambda r, t: r.at >= BASE + timedelta(minutes=7)),
    "until": (lambda t: {"until": _time(BASE + timedelta(minutes=7))},
              lambda r, t: r.at < BASE + timedelta(minutes=7)),
    "together": (lambda t: {"key_id": str(t.key_id), "tool": "sql_run_template",
                            "outcome": "ok", "since": _time(BASE + timedelta(minutes=2)),
                            "until": "2026-11-02T11:15:00+01:00"},  # 10:15 UTC
                 lambda r, t: r.key_id == t.key_id and r.tool == "sql_run_template"
                 and r.outcome == "ok" and BASE + timedelta(minutes=2) <= r.at
                 < BASE + timedelta(minutes=15)),
}


@pytest.mark.parametrize("name", FILTERS)
async def test_each_filter_alone_and_together(api: ApiClient, written, name: str) -> None:
    tenant, rows = written
    query, keep = FILTERS[name]
    expected = _newest_first([r for r in rows if keep(r, tenant)])
    assert expected, "the filter must keep some rows"
    assert len(expected) < len(rows), "and leave some out"
    page = await _page(api, tenant, limit=200, **query(tenant))
    assert [item["id"] for item in page["items"]] == expected
    assert page["next_cursor"] is None


async def test_rows_carry_what_was_audited(api: ApiClient, written) -> None:
    tenant, rows = written
    page = await _page(api, tenant, limit=1)
    [item] = page["items"]
    [row] = [r for r in rows if r.id == item["id"]]
    assert item == {
        "id": row.id, "at": row.at.isoformat(), "key_id": str(tenant.key_id) if row.key_id
        == tenant.key_id else (str(row.key_id) if row.key_id else None), "actor": "tester",
        "tool": row.tool, "outcome": row.outcome,
        "error_code": "VALIDATION_ERROR" if row.outcome == "error" else None,
        "duration_ms": row.duration_ms, "request_id": "req", "arguments": row.arguments}
    assert page["next_cursor"]


async def test_keyset_pages_see_every_row_once_while_rows_arrive(api: ApiClient, written,
                                                                 admin_conn) -> None:
    tenant, rows = written
    seen: list[tuple[datetime, int]] = []
    ahead: list[int] = []  # rows written where the walk has yet to go: it must find them
    behind: list[int] = []  # rows written where it has been: it must not show them
    cursor = None
    while True:
        page = await _page(api, tenant, limit=7, **({"cursor": cursor} if cursor else {}))
        seen += [(datetime.fromisoformat(item["at"]), item["id"]) for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # Between two pages, as a busy log grows: a row newer than all (an offset would then
        # show a row twice), one at the very time the page ended on (after it in (at, id)
        # order, as its id is higher), and one older than the page's last row.
        last_at = seen[-1][0]
        newer, tie, older = await write_rows(admin_conn, tenant.id, [
            Row(at=BASE + timedelta(hours=1)), Row(at=last_at),
            Row(at=last_at - timedelta(microseconds=1))])
        behind += [newer.id, tie.id]
        ahead.append(older.id)
    ids = [row_id for _, row_id in seen]
    assert len(ids) == len(set(ids)), "a row was shown twice"
    assert {r.id for r in rows} <= set(ids), "a row there from the start was skipped"
    assert set(ahead) <= set(ids) and not set(behind) & set(ids)
    assert seen == sorted(seen, reverse=True), "pages are not newest first"


@pytest.mark.parametrize(("query", "message"), [
    ({"since": "yesterday"},
     "since must be an RFC 3339 time with an offset, such as 2026-12-07T06:00:00Z, not "
     "'yesterday'"),
    ({"until": "2026-11-02T10:00:00"},
     "until must be an RFC 3339 time with an offset, such as 2026-12-07T06:00:00Z, not "
     "'2026-11-02T10:00:00'"),
    ({"since": "2026-11-02T10:00:00 01:00"},
     "(in a URL, write the + of an offset as %2B)"),
    ({"since": "2026-02-30T10:00:00Z"}, "since must be an RFC 3339 time"),
    ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-02T09:00:00Z"},
     "until (2026-11-02T09:00:00+00:00) must be after since (2026-11-02T10:00:00+00:00)"),
    ({"limit": "0"}, "invalid query for GET /api/v1/audit: /limit: 0 is less than the minimum "
                     "of 1"),
    ({"limit": "201"}, "invalid query for GET /api/v1/audit: /limit: 201 is greater than the "
                       "maximum of 200"),
    ({"limit": "ten"}, "invalid query for GET /api/v1/audit: /limit: 'ten' is not of type "
                       "'integer'"),
    ({"outcome": "failed"}, "invalid query for GET /api/v1/audit: /outcome: 'failed' is not one "
                            "of ['ok', 'error']"),
    ({"key_id": "abc"}, "key_id must be a key's id (a UUID), not 'abc'"),
    ({"cursor": "not-a-cursor"}, "cursor is not valid: pass next_cursor exactly as a page gave "
                                 "it, or leave it out for the first page"),
    ({"colour": "red"}, "invalid query for GET /api/v1/audit: /: Additional properties are not "
                        "allowed ('colour' was unexpected)"),
])
async def test_refusals_say_what_is_wrong(api: ApiClient, tenant, query: dict[str, str],
                                          message: str) -> None:
    resp = await api.get("/audit?" + urlencode(query), tenant)
    assert resp.status == 400, resp.body
    assert resp.error["code"] == "VALIDATION_ERROR"
    assert message in resp.error["message"]


async def test_a_cursor_is_refused_when_tampered_with_or_used_with_other_filters(
        api: ApiClient, written) -> None:
    tenant, _ = written
    cursor = (await _page(api, tenant, limit=5, tool="jira_search"))["next_cursor"]
    # Another filter set: the cursor does not carry over.
    resp = await api.get("/audit?" + urlencode({"limit": 5, "cursor": cursor}), tenant)
    assert resp.status == 400
    assert resp.error["message"] == ("cursor belongs to a listing with other filters: pass the "
                                     "same key_id, outcome, since, tool, until as the call that "
                                     "gave it")
    # A character changed: it no longer decodes, or no longer matches its filters.
    for tampered in (cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],
                     cursor[:10], cursor + "!!"):
        resp = await api.get("/audit?" + urlencode(
            {"limit": 5, "tool": "jira_search", "cursor": tampered}), tenant)
        assert resp.status == 400, (tampered, resp.body)
        assert resp.error["message"].startswith("cursor "), resp.error


async def test_another_tenants_rows_never_appear(api: ApiClient, written, make_tenant,
                                                 admin_conn) -> None:
    tenant, rows = written
    other = await make_tenant(name="other")
    theirs = await write_rows(admin_conn, other.id, [
        Row(at=BASE + timedelta(minutes=m), key_id=other.key_id, tool="their_tool")
        for m in range(5)])
    page = await _page(api, tenant, limit=200)
    assert [item["id"] for item in page["items"]] == _newest_first(rows)
    assert "their_tool" not in str(page)
    # Their key, their tool: nothing, not an error.
    for query in ({"key_id": str(other.key_id)}, {"tool": "their_tool"}):
        assert await _page(api, tenant, **query) == {"items": [], "next_cursor": None}
    # And they see only theirs.
    page = await _page(api, other, limit=200)
    assert [item["id"] for item in page["items"]] == _newest_first(theirs)


async def test_a_refused_tool_call_is_found_with_its_secret_redacted(api: ApiClient,
                                                                     tenant) -> None:
    resp = await api.client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "jira_search", "arguments": {"jql": "project = WEB",
                                                 "api_token": "s3cret-value"}}})
    assert resp.status == 200
    for _ in range(100):  # reads are audited in the background, about once a second
        page = await _page(api, tenant, tool="jira_search", outcome="error")
        if page["items"]:
            break
        await asyncio.sleep(0.1)
    [item] = page["items"]
    assert item["key_id"] == str(tenant.key_id)
    assert item["error_code"] == "VALIDATION_ERROR"
    assert item["arguments"] == {"jql": "project = WEB", "api_token": "[redacted]"}
    assert "s3cret-value" not in str(page)


async def test_admin_changes_are_found_by_their_action(api: ApiClient, tenant) -> None:
    created = await api.post("/keys", tenant, json={"name": "ci", "scopes": ["read"]})
    assert created.status == 201, created.body
    key_id = created.data["key"]["key_id"]
    assert (await api.delete(f"/keys/{key_id}", tenant)).status == 200
    page = await _page(api, tenant, key_id=str(tenant.key_id))
    assert [item["tool"] for item in page["items"]] == ["admin:keys.revoke", "admin:keys.create"]
    assert page["items"][0]["arguments"] == {"key_id": key_id}
    assert created.data["secret"] not in str(page)
    [found] = (await _page(api, tenant, tool="admin:keys.create"))["items"]
    assert found["arguments"]["name"] == "ci" and found["outcome"] == "ok"
