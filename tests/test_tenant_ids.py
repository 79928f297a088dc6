"""Ids a tenant can see count only its own rows (issue 16, migration 0011_tenant_ids): another
tenant's comments, tool calls and items leave no gap in mine; a write's ids come from the tenant's
own counter, a bulk insert's in one block; writes take that counter in an order that cannot
deadlock with a sync page; and the migration numbers existing rows per tenant, references and
stored results moved along, and rolls back."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from spiral_mcp import migrate
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.sources.base import Comment, Item, Link, Transition
from spiral_mcp.sources.sync import write_items
from tests.conftest import TenantFactory
from tests.test_jira_write import call, ok

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

# What a tenant's explorer shows of its ids: all of them, and whether they run 1..n unbroken.
WORK_IDS = ("SELECT count(*), min(id), max(id) FROM ("
            "SELECT id FROM work_items UNION ALL SELECT id FROM work_item_transitions "
            "UNION ALL SELECT id FROM comments UNION ALL SELECT id FROM work_item_links) ids")


async def explore(client, tenant, sql: str) -> list[list[Any]]:
    """Rows of an explorer query: what the tenant's own key can see."""
    envelope = await call(client, tenant, "explorer_query", sql=sql)
    assert envelope["success"], envelope
    return envelope["data"]["rows"]


async def owner_fetch(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str,
                      *args: Any) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch(sql, *args)


async def my_writes(client, tenant) -> dict[str, int]:
    """One of each write that adds rows, on a new item: the ids they were given (the item's own
    from the explorer, as jira_create_issue returns none)."""
    key = (await ok(client, tenant, "jira_create_issue", project_key="WEB", summary="mine"))["key"]
    moved = await ok(client, tenant, "jira_transition_issue", issue_key=key,
                     status="In Progress", comment="started")
    comment = await ok(client, tenant, "jira_add_comment", issue_key=key, body="a note")
    link = await ok(client, tenant, "jira_link_issues", outward_issue_key=key,
                    inward_issue_key="WEB-1", link_type="blocks")
    return {"key": key, "move_comment": moved["comment_id"], "comment": comment["id"],
            "link": link["id"]}


async def their_activity(client, make_tenant: TenantFactory, other) -> None:
    """A lot of another tenant's activity: items, moves, comments, links, reads (audit rows
    written in batches), and a whole demo loaded into a third tenant (bulk inserts)."""
    for n in range(8):
        key = (await ok(client, other, "jira_create_issue", project_key="WEB",
                        summary=f"theirs {n}"))["key"]
        await ok(client, other, "jira_transition_issue", issue_key=key, status="In Progress",
                 comment="theirs too")
        await ok(client, other, "jira_add_comment", issue_key=key, body="theirs")
        await ok(client, other, "jira_link_issues", outward_issue_key=key,
                 inward_issue_key="WEB-2", link_type="relates to")
        await ok(client, other, "jira_get_issue", issue_key="WEB-3")
    await make_tenant(demo=True, name="a third")


async def test_another_tenants_activity_leaves_no_gap_in_my_ids(
    client, make_tenant: TenantFactory
) -> None:
    mine = await make_tenant(demo=True, name="mine")
    other = await make_tenant(demo=True, name="other")
    before = await my_writes(client, mine)
    await their_activity(client, make_tenant, other)
    after = await my_writes(client, mine)

    # A create takes two ids (the item, its first move), a move with a comment two, a comment
    # one, a link one: six per round, whatever anyone else did in between.
    for name in ("move_comment", "comment", "link"):
        assert after[name] == before[name] + 6, name
    items = dict(await explore(client, mine, "SELECT key, id FROM work_items WHERE key IN "
                                             f"('{before['key']}', '{after['key']}')"))
    assert items[after["key"]] == items[before["key"]] + 6
    assert before["move_comment"] == items[before["key"]] + 3
    # My audit rows: my eight writes, numbered 1..8 (the explorer's own rows come after).
    assert await explore(client, mine, "SELECT id, tool FROM audit_log "
                                        "WHERE tool <> 'explorer_query' ORDER BY id") == [
        [n + 1 + 4 * r, tool] for r in range(2) for n, tool in enumerate(
            ("jira_create_issue", "jira_transition_issue", "jira_add_comment",
             "jira_link_issues"))]


async def test_my_key_sees_only_my_rows_numbered_from_one(
    client, make_tenant: TenantFactory
) -> None:
    other = await make_tenant(demo=True, name="other")
    await their_activity(client, make_tenant, other)
    secret = (await ok(client, other, "jira_create_issue", project_key="WEB",
                       summary="their secret"))["key"]
    mine = await make_tenant(demo=True, name="mine")
    await my_writes(client, mine)

    # Nothing of theirs: not their item (their key is past any of mine), not their titles.
    envelope = await call(client, mine, "jira_get_issue", issue_key=secret)
    assert envelope["error"]["code"] == "NOT_FOUND"
    assert await explore(client, mine, "SELECT count(*) FROM work_items "
                                        "WHERE title LIKE 'their%'") == [[0]]
    # My ids count my rows only: every table's run 1..n without a gap (all four tables share
    # one counter), and so do my audit ids. With sequences shared by every tenant they would
    # start past the other tenants' rows.
    [[count, first, last]] = await explore(client, mine, WORK_IDS)
    assert (first, last) == (1, count)
    for table in ("work_items", "work_item_transitions", "comments", "work_item_links"):
        [[unique, total]] = await explore(client, mine,
                                          f"SELECT count(DISTINCT id), count(*) FROM {table}")
        assert unique == total, table
    [[count, first, last]] = await explore(client, mine,
                                           "SELECT count(*), min(id), max(id) FROM audit_log")
    assert (first, last) == (1, count) and count >= 4
    # The counters themselves are not the explorer's to show.
    envelope = await call(client, mine, "explorer_query", sql="SELECT * FROM tenant_counters")
    assert not envelope["success"]


async def test_concurrent_writes_of_one_tenant_get_consecutive_ids_of_their_own(
    client, make_tenant: TenantFactory
) -> None:
    mine = await make_tenant(demo=True, name="mine")
    other = await make_tenant(demo=True, name="other")
    calls = [ok(client, tenant, "jira_add_comment", issue_key=f"WEB-{1 + n % 3}", body=f"c{n}")
             for n in range(12) for tenant in (mine, other)]
    results = await asyncio.gather(*calls)
    for tenant_results in (results[0::2], results[1::2]):
        ids = sorted(r["id"] for r in tenant_results)
        assert ids == list(range(ids[0], ids[0] + 12))


async def _ensure_source_project(conn: asyncpg.Connection, queries: Queries,
                                 tenant_id: uuid.UUID) -> uuid.UUID:
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        instance_id = await conn.fetchval(
            "INSERT INTO source_instances (tenant_id, kind, name, base_url) "
            "VALUES ($1, 'jira', 'site', 'https://jira.example.invalid') RETURNING instance_id",
            tenant_id)
        await queries.source_ensure_project(conn, tenant_id=tenant_id, project_key="LOC",
                                            name="LOC", instance_id=instance_id,
                                            source_ref="ABC")
    return instance_id


def _page(count: int) -> list[Item]:
    """``count`` new items, each with a comment, two moves and a link to the next one (the last
    one's other end is not stored: the link waits for that item's page)."""
    return [Item(source_id=str(n), key=f"LOC-{n}", project_key="LOC", number=n, title=f"item {n}",
                 description=None, type="task", status="In Progress",
                 status_category="in_progress", priority="none", assignee=None, reporter=None,
                 labels=[], parent_key=None, created=T0, updated=T0 + timedelta(minutes=n),
                 resolved=None, due=None, raw={},
                 comments=[Comment(f"c{n}", "ann", f"comment {n}", T0, T0)],
                 transitions=[Transition(None, "To Do", None, "todo", "ann", T0),
                              Transition("To Do", "In Progress", "todo", "in_progress", "ann",
                                         T0 + timedelta(seconds=n))],
                 links=[Link("blocks", f"LOC-{n + 1}", True)])
            for n in range(1, count + 1)]


async def _counter_writes(conn: asyncpg.Connection) -> int:
    """Rows this session has inserted or updated in tenant_counters and not yet reported to the
    statistics (so: compare two readings within one transaction)."""
    return await conn.fetchval(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_xact_user_tables "
        "WHERE relid = 'public.tenant_counters'::regclass")


async def test_a_page_and_an_audit_batch_take_their_ids_in_one_block(
    admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries,
    make_tenant: TenantFactory,
) -> None:
    """The bulk paths keep their cost: one update of the tenant's counter per statement batch,
    however many rows, never one per row."""
    tenant = await make_tenant()
    instance_id = await _ensure_source_project(admin_conn, queries, tenant.id)
    async with app_conn.transaction():
        await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
        before = await _counter_writes(app_conn)
        assert await write_items(app_conn, queries, tenant_id=tenant.id, source="jira",
                                 instance_id=instance_id, items=_page(50)) == 50
        assert await _counter_writes(app_conn) == before + 1
    # Items, then comments, moves and links, each a run of the one block; one link's id goes
    # unused (its other end is not stored), a gap in this tenant's own ids.
    runs = {}
    for table in ("work_items", "comments", "work_item_transitions", "work_item_links"):
        [row] = await owner_fetch(admin_conn, tenant.id,
                                  f"SELECT count(*), min(id), max(id) FROM {table}")
        runs[table] = tuple(row)
    links = runs.pop("work_item_links")
    assert runs == {"work_items": (50, 1, 50), "comments": (50, 51, 100),
                    "work_item_transitions": (100, 101, 200)}
    assert links[0] == 49 and links[1] >= 201 and links[2] <= 250
    [counter] = await owner_fetch(admin_conn, tenant.id,
                                  "SELECT last_id FROM tenant_counters WHERE counter = 'work'")
    assert counter["last_id"] == 250

    # The page again, changed: stored items keep their ids and take none; new moves do.
    changed = [dataclasses.replace(i, updated=i.updated + timedelta(hours=1))
               for i in _page(3)]
    async with app_conn.transaction():
        await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
        await write_items(app_conn, queries, tenant_id=tenant.id, source="jira",
                          instance_id=instance_id, items=changed)
    rows = await owner_fetch(admin_conn, tenant.id,
                             "SELECT key, id FROM work_items WHERE key = ANY($1::text[])",
                             [i.key for i in changed])
    assert {r["key"]: r["id"] for r in rows} == {"LOC-1": 1, "LOC-2": 2, "LOC-3": 3}

    columns = {"key_id": [], "actor": [], "tool": [], "arguments": [], "outcome": [],
               "error_code": [], "duration_ms": [], "request_id": [], "before": [], "after": []}
    for n in range(30):
        for name, value in (("key_id", None), ("actor", "ann"), ("tool", f"tool_{n}"),
                            ("arguments", None), ("outcome", "ok"), ("error_code", None),
                            ("duration_ms", 1.0), ("request_id", None), ("before", None),
                            ("after", None)):
            columns[name].append(value)
    async with app_conn.transaction():
        await queries.set_tenant(app_conn, tenant_id=str(tenant.id))
        before = await _counter_writes(app_conn)
        await queries.insert_audit_batch(app_conn, tenant_id=tenant.id, **columns)
        assert await _counter_writes(app_conn) == before + 1
    audit = await owner_fetch(admin_conn, tenant.id, "SELECT id, tool FROM audit_log ORDER BY id")
    assert [(r["id"], r["tool"]) for r in audit] == [(n + 1, f"tool_{n}") for n in range(30)]


async def _until_waiting_for_a_lock(conn: asyncpg.Connection) -> None:
    """Until another session of this database waits for a lock (the tool call, queued)."""
    for _ in range(200):
        if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call never waited for the counter")


@pytest.mark.parametrize("tool", ["jira_add_comment", "jira_transition_issue",
                                  "jira_link_issues"])
async def test_a_write_queues_behind_a_page_holding_the_counter_without_deadlock(
    tool: str, client, make_tenant: TenantFactory, database_urls: DatabaseUrls,
    app_conn: asyncpg.Connection, queries: Queries,
) -> None:
    """A sync page takes its tenant's counter, then locks the items it writes. A write that
    locked its item first and took the counter after would deadlock with it (PostgreSQL would
    end one of them after a second): writes take the counter first, and queue."""
    tenant = await make_tenant(demo=True)
    key = (await ok(client, tenant, "jira_create_issue", project_key="WEB",
                    summary="contended"))["key"]
    arguments = {
        "jira_add_comment": {"issue_key": key, "body": "queued"},
        "jira_transition_issue": {"issue_key": key, "status": "In Progress"},
        "jira_link_issues": {"outward_issue_key": key, "inward_issue_key": "WEB-1",
                             "link_type": "blocks"},
    }[tool]
    page = await asyncpg.connect(database_urls.runtime)
    try:
        tx = page.transaction()
        await tx.start()
        await queries.set_tenant(page, tenant_id=str(tenant.id))
        await queries.take_work_ids(page, tenant_id=tenant.id, count=1)
        write = asyncio.create_task(call(client, tenant, tool, **arguments))
        await _until_waiting_for_a_lock(app_conn)
        # The page's item: locked as its upsert locks a stored item.
        await asyncio.wait_for(
            page.execute("SELECT 1 FROM work_items WHERE key = $1 FOR UPDATE", key), 10)
        await tx.commit()
        envelope = await asyncio.wait_for(write, 30)
    finally:
        await page.close()
    assert envelope["success"], envelope


# --- the migration ---------------------------------------------------------------------------


async def _in(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str, *args: Any) -> Any:
    """One statement as the owner in the tenant's context (FORCE binds the owner too)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch(sql, *args)


async def _seed_interleaved(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> None:
    """Two tenants' rows written turn about, as shared sequences numbered them: A's ids have
    gaps where B's rows went in."""
    for t in (a, b):
        await _in(conn, t, "INSERT INTO tenants (tenant_id, name) VALUES ($1, 't')", t)
        await _in(conn, t, "INSERT INTO projects (tenant_id, project_key, name) "
                           "VALUES ($1, 'P', 'P')", t)
    for n in (1, 2, 3):
        for t in (a, b):
            await _in(conn, t, "INSERT INTO work_items (tenant_id, key, project_key, number, "
                               "title, status, status_category) VALUES ($1, $2, 'P', $3, $2, "
                               "'To Do', 'todo')", t, f"P-{n}", n)
            await _in(conn, t, "INSERT INTO work_item_transitions (tenant_id, work_item_id, "
                               "to_status, to_category, transitioned_at) SELECT $1, id, "
                               "'To Do', 'todo', now() - interval '1 day' FROM work_items "
                               "WHERE key = $2", t, f"P-{n}")
            await _in(conn, t, "INSERT INTO audit_log (tenant_id, tool, outcome) "
                               "VALUES ($1, $2, 'ok')", t, f"call {n}")
    for t, body, key in ((a, "a on 2", "P-2"), (b, "b on 1", "P-1"), (a, "a on 1", "P-1"),
                         (b, "b on 3", "P-3"), (a, "a on 3", "P-3")):
        await _in(conn, t, "INSERT INTO comments (tenant_id, work_item_id, body) "
                           "SELECT $1, id, $2 FROM work_items WHERE key = $3", t, body, key)
    for t, link_type, outward, inward in ((a, "blocks", "P-1", "P-3"),
                                          (b, "relates", "P-2", "P-1"),
                                          (a, "blocks", "P-2", "P-3")):
        await _in(conn, t, "INSERT INTO work_item_links (tenant_id, link_type, outward_id, "
                           "inward_id) SELECT $1, $2, o.id, i.id FROM work_items o, work_items i "
                           "WHERE o.key = $3 AND i.key = $4", t, link_type, outward, inward)
    # Stored results and audit rows that carry a comment's or a link's id, as the tools write
    # them (a tool called by an alias is audited under the alias).
    [[a_comment]] = await _in(conn, a, "SELECT id FROM comments WHERE body = 'a on 1'")
    [[b_comment]] = await _in(conn, b, "SELECT id FROM comments WHERE body = 'b on 3'")
    [[a_link]] = await _in(conn, a, "SELECT l.id FROM work_item_links l JOIN work_items o "
                                    "ON o.id = l.outward_id WHERE o.key = 'P-2'")
    for t, tool, response in ((a, "jira_add_comment", {"issue_key": "P-1", "id": a_comment}),
                              (a, "jira_link_issues", {"id": a_link, "link_type": "blocks"}),
                              (b, "jira_transition_issue", {"key": "P-3",
                                                            "comment_id": b_comment})):
        await _in(conn, t, "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, "
                           "state, response, expires_at) VALUES ($1, $2, 'k', '\\x00'::bytea, "
                           "'completed', $3::text::jsonb, now() + interval '1 day')",
                  t, tool, orjson.dumps(response).decode())
    await _in(conn, a, "INSERT INTO audit_log (tenant_id, tool, outcome, after) "
                       "VALUES ($1, 'jira.add_comment', 'ok', $2::text::jsonb)",
              a, orjson.dumps({"issue_key": "P-1", "id": a_comment}).decode())


async def _picture(conn: asyncpg.Connection, t: uuid.UUID) -> dict[str, Any]:
    """A tenant's rows by what they are, not by their ids."""
    return {
        "items": [tuple(r) for r in await _in(
            conn, t, "SELECT key FROM work_items ORDER BY id")],
        "moves": [tuple(r) for r in await _in(
            conn, t, "SELECT w.key FROM work_item_transitions m JOIN work_items w "
                     "ON w.id = m.work_item_id ORDER BY m.id")],
        "comments": [tuple(r) for r in await _in(
            conn, t, "SELECT c.body, w.key FROM comments c JOIN work_items w "
                     "ON w.id = c.work_item_id ORDER BY c.id")],
        "links": [tuple(r) for r in await _in(
            conn, t, "SELECT l.link_type, o.key, i.key FROM work_item_links l JOIN work_items o "
                     "ON o.id = l.outward_id JOIN work_items i ON i.id = l.inward_id "
                     "ORDER BY l.id")],
        "audit": [tuple(r) for r in await _in(conn, t, "SELECT tool FROM audit_log ORDER BY id")],
        # What each stored id names: a comment's body, or a link's ends.
        "stored": sorted([tuple(r) for r in await _in(
            conn, t, "SELECT k.tool, coalesce(c.body, o.key || ' ' || i.key) FROM "
                     "idempotency_keys k LEFT JOIN comments c ON c.id = coalesce("
                     "(k.response ->> 'comment_id')::bigint, CASE WHEN k.tool <> "
                     "'jira_link_issues' THEN (k.response ->> 'id')::bigint END) "
                     "LEFT JOIN work_item_links l ON k.tool = 'jira_link_issues' AND "
                     "l.id = (k.response ->> 'id')::bigint LEFT JOIN work_items o ON "
                     "o.id = l.outward_id LEFT JOIN work_items i ON i.id = l.inward_id")]),
        "audited": [tuple(r) for r in await _in(
            conn, t, "SELECT c.body FROM audit_log a JOIN comments c "
                     "ON c.id = (a.after ->> 'id')::bigint WHERE a.tool = 'jira.add_comment'")],
    }


# 0011 and the migrations after it, rolled back and applied again together.
_SINCE = tuple(m for m in migrate.head_ids() if m >= "0011_tenant_ids")


async def _ids(conn: asyncpg.Connection, t: uuid.UUID, table: str) -> list[int]:
    return [r["id"] for r in await _in(conn, t, f"SELECT id FROM {table} ORDER BY id")]


async def test_the_migration_numbers_existing_rows_per_tenant_and_rolls_back(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(migrate.apply, fresh_database)
    assert await asyncio.to_thread(migrate.rollback, fresh_database,
                                       count=len(_SINCE)) == _SINCE[::-1]
    a, b = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(fresh_database)
    try:
        await _seed_interleaved(conn, a, b)
        assert await _ids(conn, a, "work_items") == [1, 3, 5]  # shared: B's rows in between
        pictures = {t: await _picture(conn, t) for t in (a, b)}

        assert await asyncio.to_thread(migrate.apply, fresh_database) == _SINCE
        # Each tenant's rows numbered 1..n in their old order; each still what it was: the same
        # items, comments on the same items, links between the same items, and the ids stored
        # results and audit rows carry naming the same comment or link.
        for t, counts in ((a, (3, 3, 3, 2, 4)), (b, (3, 3, 2, 1, 3))):
            assert await _picture(conn, t) == pictures[t]
            for table, count in zip(("work_items", "work_item_transitions", "comments",
                                     "work_item_links", "audit_log"), counts, strict=True):
                assert await _ids(conn, t, table) == list(range(1, count + 1)), (t, table)
            counters = dict(await _in(conn, t, "SELECT counter, last_id FROM tenant_counters"))
            assert counters == {"work": 3, "audit": counts[4]}
        # New rows continue from there, numbered by their own tenant's counter.
        [[comment]] = await _in(conn, b, "INSERT INTO comments (tenant_id, work_item_id, body) "
                                         "VALUES ($1, 1, 'new') RETURNING id", b)
        assert comment == 4

        # Back to shared sequences: the rows keep their per-tenant ids, a new row goes past
        # the highest of any tenant.
        assert await asyncio.to_thread(migrate.rollback, fresh_database,
                                       count=len(_SINCE)) == _SINCE[::-1]
        assert await conn.fetchval("SELECT to_regclass('tenant_counters')") is None
        [[comment]] = await _in(conn, a, "INSERT INTO comments (tenant_id, work_item_id, body) "
                                         "VALUES ($1, 1, 'after') RETURNING id", a)
        assert comment == 5
        assert await asyncio.to_thread(migrate.apply, fresh_database) == _SINCE
        assert await _ids(conn, a, "comments") == [1, 2, 3, 4]
        assert dict(await _in(conn, a, "SELECT counter, last_id FROM tenant_counters")) == {
            "work": 4, "audit": 4}
    finally:
        await conn.close()
