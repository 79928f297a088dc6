"""Demo data: loaded as the CLI does (owner role, one transaction), read back as the server would
(runtime role, in the tenant's context)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import asyncpg
import pytest

from spiral_mcp import demo
from spiral_mcp.queries import Queries

PROJECTS = {"WEB", "API", "OPS"}


async def _load(
    conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID
) -> dict[str, int]:
    async with conn.transaction():
        return await demo.load_demo(conn, queries, tenant_id=tenant_id)


@asynccontextmanager
async def _as_tenant(
    conn: asyncpg.Connection, tenant_id: uuid.UUID
) -> AsyncIterator[asyncpg.Connection]:
    async with conn.transaction(readonly=True):
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        yield conn


async def _counts(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    async with _as_tenant(conn, tenant_id):
        return {
            name: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for name, table in [("projects", "projects"), ("work_items", "work_items"),
                                ("transitions", "work_item_transitions"),
                                ("comments", "comments"), ("links", "work_item_links")]
        }


async def test_demo_data_is_a_believable_tracker(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries
) -> None:
    tenant = await make_tenant()
    started = datetime.now(UTC)
    summary = await _load(admin_conn, queries, tenant.id)
    finished = datetime.now(UTC)

    assert summary == await _counts(app_conn, tenant.id)
    assert summary["projects"] == 3 and summary["work_items"] == 300
    assert summary["transitions"] >= 300 and summary["comments"] > 0 and summary["links"] > 0

    async with _as_tenant(app_conn, tenant.id):
        projects = await app_conn.fetch(
            "SELECT project_key, next_number FROM projects ORDER BY project_key")
        items = await app_conn.fetch("SELECT * FROM work_items ORDER BY id")
        moves = await app_conn.fetch(
            "SELECT * FROM work_item_transitions ORDER BY work_item_id, transitioned_at, id")
        comments = await app_conn.fetch(
            "SELECT c.created_at, w.created_at AS item_created FROM comments c "
            "JOIN work_items w ON w.id = c.work_item_id")
        links = await app_conn.fetch("SELECT outward_id, inward_id FROM work_item_links")
        statuses = await app_conn.fetchval("SELECT count(*) FROM workflow_statuses")

    assert {p["project_key"]: p["next_number"] for p in projects} == dict.fromkeys(PROJECTS, 101)
    assert statuses == 3 * 6  # the default workflow, once per project
    per_project = Counter(item["project_key"] for item in items)
    assert per_project == dict.fromkeys(PROJECTS, 100)
    assert {item["key"] for item in items} == {f"{p}-{n}" for p in PROJECTS for n in range(1, 101)}
    assert len({item["status"] for item in items}) >= 5  # a spread of states, not one

    history: dict[int, list[asyncpg.Record]] = {}
    for move in moves:
        history.setdefault(move["work_item_id"], []).append(move)
    by_key = {item["key"]: item for item in items}
    oldest = started - timedelta(days=90)
    for item in items:
        path = history[item["id"]]
        # A path through the workflow: starts in To Do, each move from where the last one ended,
        # and ends where the item is now.
        assert path[0]["from_status"] is None and path[0]["to_status"] == "To Do"
        for prev, move in pairwise(path):
            assert move["from_status"] == prev["to_status"]
            assert move["from_category"] == prev["to_category"]
        assert path[-1]["to_status"] == item["status"]
        assert path[-1]["to_category"] == item["status_category"]
        resolved = item["status_category"] in ("done", "cancelled")
        assert (item["resolved_at"] is not None) is resolved, item["key"]
        if resolved:
            assert item["resolved_at"] == path[-1]["transitioned_at"]
        # Every date lies in the last 90 days (the due date alone may be ahead).
        assert oldest <= item["created_at"] <= path[0]["transitioned_at"] <= finished
        assert item["created_at"] <= item["updated_at"] <= finished
        assert all(oldest <= m["transitioned_at"] <= finished for m in path)
        if item["parent_key"] is not None:
            parent = by_key[item["parent_key"]]
            assert parent["type"] == "epic" and parent["project_key"] == item["project_key"]
    assert all(c["item_created"] <= c["created_at"] <= finished for c in comments)
    ids = {item["id"] for item in items}
    assert all(link["outward_id"] in ids and link["inward_id"] in ids
               and link["outward_id"] != link["inward_id"] for link in links)


async def test_loading_twice_is_refused_and_changes_nothing(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries
) -> None:
    tenant = await make_tenant()
    await _load(admin_conn, queries, tenant.id)
    before = await _counts(app_conn, tenant.id)
    with pytest.raises(demo.DemoPresent, match=r"already has the project\(s\) API, OPS, WEB; .*"
                                               r"nothing was loaded"):
        await _load(admin_conn, queries, tenant.id)
    assert await _counts(app_conn, tenant.id) == before


async def test_a_tenant_with_a_project_of_a_demo_name_is_refused(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries
) -> None:
    # The demo never mixes its items into a project of the tenant's own.
    tenant = await make_tenant()
    async with admin_conn.transaction():
        await queries.set_tenant(admin_conn, tenant_id=str(tenant.id))
        await queries.demo_insert_project(admin_conn, tenant_id=tenant.id, project_key="OPS",
                                          name="Ours", description="", lead=None)
    with pytest.raises(demo.DemoPresent, match=r"the project\(s\) OPS;"):
        await _load(admin_conn, queries, tenant.id)
    counts = await _counts(app_conn, tenant.id)
    assert counts["projects"] == 1 and counts["work_items"] == 0


async def test_another_tenant_sees_none_of_it(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries
) -> None:
    loaded = await make_tenant()
    other = await make_tenant()
    await _load(admin_conn, queries, loaded.id)
    assert await _counts(app_conn, other.id) == dict.fromkeys(
        ("projects", "work_items", "transitions", "comments", "links"), 0)
    # And the other tenant can have the very same demo keys of its own.
    summary = await _load(admin_conn, queries, other.id)
    assert await _counts(app_conn, other.id) == summary
    async with _as_tenant(app_conn, other.id):
        assert await app_conn.fetchval("SELECT count(*) FROM work_items WHERE key = 'WEB-1'") == 1


async def test_no_item_moves_twice_at_one_moment(
    make_tenant, admin_conn: asyncpg.Connection, queries: Queries
) -> None:
    # Moves that would run past now are kept a second apart: a move is unique by item, moment
    # and target, and a large demo (3,000 items) clamped several of them onto now itself.
    tenant = await make_tenant()
    async with admin_conn.transaction():
        summary = await demo.load_demo(admin_conn, queries, tenant_id=tenant.id,
                                       items_per_project=1000)
    assert summary["work_items"] == 3000
