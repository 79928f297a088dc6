"""Links a source no longer reports are pruned from the store (issue 7): each link says where it
lives (work_item_links.source); a sync or a write-through that writes an item deletes the links its
source holds on it and no longer reports for it, and never a local link. Against the fake Jira,
through the real sync."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from spiral_mcp import migrate
from spiral_mcp.queries import Queries
from spiral_mcp.sources import manage
from tests.conftest import TenantFactory
from tests.fake_jira import FakeJira
from tests.test_source_sync_server import BOX, FAST, T0, add_source, backfill
from tests.test_writethrough import Site, serve_spiral, site  # noqa: F401  (fixtures)

LINKS = ("SELECT l.link_type, o.key, i.key, l.source FROM work_item_links l "
         "JOIN work_items o ON o.id = l.outward_id JOIN work_items i ON i.id = l.inward_id")


@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    return await serve_fake(FakeJira())


async def links(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> set[tuple[str, ...]]:
    """(type, outward key, inward key, source) of every link the tenant sees."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return {tuple(row) for row in await conn.fetch(LINKS)}


async def link_locally(conn: asyncpg.Connection, tenant_id: uuid.UUID, link_type: str,
                       outward: str, inward: str) -> None:
    """A link made in the store only, as jira_link_issues makes one that no source holds."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await conn.execute(
            "INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id) "
            "SELECT $1, $2, (SELECT id FROM work_items WHERE key = $3), "
            "(SELECT id FROM work_items WHERE key = $4)", tenant_id, link_type, outward, inward)


async def local_item(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    """LCL-1, an item of a local project."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await conn.execute("INSERT INTO projects (tenant_id, project_key, name) "
                           "VALUES ($1, 'LCL', 'Local')", tenant_id)
        await conn.execute(
            "INSERT INTO work_items (tenant_id, key, project_key, number, title, status, "
            "status_category) VALUES ($1, 'LCL-1', 'LCL', 1, 'Local', 'To Do', 'todo')",
            tenant_id)


def unlink_at_jira(jira: FakeJira, outward: str, inward: str, *, touch: tuple[str, ...],
                   at: timedelta) -> None:
    """Delete "outward <any type> inward" at the fake Jira; ``touch``: the issues whose update
    time moves (Jira moves both ends; a test may move one)."""
    ids = {jira.find(outward)["id"], jira.find(inward)["id"]}  # type: ignore[index]
    jira.links = [link for link in jira.links if {link[2], link[3]} != ids]
    for key in touch:
        jira.update_issue(key, at=T0 + at)


async def sync(admin_conn: asyncpg.Connection, queries: Queries, source_id: uuid.UUID, *,
               full: bool = False) -> None:
    await manage.run_sync(admin_conn, queries, BOX, source_id, full=full, **FAST)


async def test_a_link_removed_at_jira_goes_and_local_links_stay(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, queries) -> None:
    backfill(jira, 6)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0)
    jira.link_issues("ABC-3", "ABC-4", "Relates", at=T0)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    await sync(admin_conn, queries, source_id)
    await local_item(app_conn, tenant.id)
    await link_locally(app_conn, tenant.id, "relates", "LOC-1", "LOC-2")
    await link_locally(app_conn, tenant.id, "blocks", "LCL-1", "LOC-1")
    assert await links(app_conn, tenant.id) == {
        ("blocks", "LOC-1", "LOC-2", "jira"), ("relates", "LOC-3", "LOC-4", "jira"),
        ("relates", "LOC-1", "LOC-2", "local"), ("blocks", "LCL-1", "LOC-1", "local")}

    unlink_at_jira(jira, "ABC-1", "ABC-2", touch=("ABC-1", "ABC-2"), at=timedelta(hours=1))
    # Gone at Jira without moving either end: the items are unchanged, so is their link.
    unlink_at_jira(jira, "ABC-3", "ABC-4", touch=(), at=timedelta(0))
    await sync(admin_conn, queries, source_id)
    expected = {("relates", "LOC-3", "LOC-4", "jira"), ("relates", "LOC-1", "LOC-2", "local"),
                ("blocks", "LCL-1", "LOC-1", "local")}
    assert await links(app_conn, tenant.id) == expected
    # A full sync offers every item again; unchanged ones still keep their links.
    await sync(admin_conn, queries, source_id, full=True)
    assert await links(app_conn, tenant.id) == expected


async def test_each_end_decides_by_its_own_report(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, queries) -> None:
    backfill(jira, 4)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0)
    jira.link_issues("ABC-2", "ABC-3", "Duplicate", at=T0)
    jira.link_issues("ABC-4", "ABC-2", "Cloners", at=T0)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    await sync(admin_conn, queries, source_id)
    synced = {("blocks", "LOC-1", "LOC-2", "jira"), ("duplicates", "LOC-2", "LOC-3", "jira"),
              ("clones", "LOC-4", "LOC-2", "jira")}
    assert await links(app_conn, tenant.id) == synced

    # ABC-2 changes and still reports all three (as outward and as inward end): all stay.
    jira.update_issue("ABC-2", at=T0 + timedelta(hours=1), summary="Renamed")
    await sync(admin_conn, queries, source_id)
    assert await links(app_conn, tenant.id) == synced
    # Only the inward end is synced again: ABC-1's stored page still names the link, ABC-2's
    # report no longer does, and the source is the one to follow.
    unlink_at_jira(jira, "ABC-1", "ABC-2", touch=("ABC-2",), at=timedelta(hours=2))
    await sync(admin_conn, queries, source_id)
    assert await links(app_conn, tenant.id) == synced - {("blocks", "LOC-1", "LOC-2", "jira")}
    # The same from the outward end.
    unlink_at_jira(jira, "ABC-2", "ABC-3", touch=("ABC-2",), at=timedelta(hours=3))
    await sync(admin_conn, queries, source_id)
    assert await links(app_conn, tenant.id) == {("clones", "LOC-4", "LOC-2", "jira")}


async def test_another_tenants_links_are_untouched_and_invisible(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, queries) -> None:
    backfill(jira, 3)
    jira.link_issues("ABC-1", "ABC-2", "Blocks", at=T0)
    mine, other = await make_tenant(), await make_tenant()
    sources = {t.id: await add_source(admin_conn, queries, t.id, jira) for t in (mine, other)}
    for source_id in sources.values():
        await sync(admin_conn, queries, source_id)
    await link_locally(app_conn, other.id, "relates", "LOC-2", "LOC-3")
    theirs = {("blocks", "LOC-1", "LOC-2", "jira"), ("relates", "LOC-2", "LOC-3", "local")}
    assert await links(app_conn, other.id) == theirs

    unlink_at_jira(jira, "ABC-1", "ABC-2", touch=("ABC-1", "ABC-2"), at=timedelta(hours=1))
    await sync(admin_conn, queries, sources[mine.id])
    assert await links(app_conn, mine.id) == set()
    assert await links(app_conn, other.id) == theirs  # until its own sync
    await sync(admin_conn, queries, sources[other.id])
    assert await links(app_conn, other.id) == {("relates", "LOC-2", "LOC-3", "local")}


async def test_write_through_links_are_held_by_the_source(site: Site) -> None:  # noqa: F811
    link = await site.ok("jira_link_issues", outward_issue_key="LOC-1",
                         inward_issue_key="LOC-2", link_type="blocks")
    await local_item(site.conn, site.tenant.id)
    await site.ok("jira_link_issues", outward_issue_key="LOC-3", inward_issue_key="LCL-1",
                  link_type="relates to")
    assert await links(site.conn, site.tenant.id) == {
        ("blocks", "LOC-1", "LOC-2", "jira"), ("relates", "LOC-3", "LCL-1", "local")}
    # Removed at Jira, then LOC-1 written through: Jira's answer names no link, so it goes with
    # the write; the local one stays.
    unlink_at_jira(site.jira, "ABC-1", "ABC-2", touch=(), at=timedelta(0))
    await site.ok("jira_update_issue", issue_key="LOC-1", fields={"summary": "Renamed"})
    assert await site.count("SELECT count(*) FROM work_item_links WHERE id = $1",
                            link["id"]) == 0
    assert await links(site.conn, site.tenant.id) == {("relates", "LOC-3", "LCL-1", "local")}


# --- the migration ---------------------------------------------------------------------------


SEED = """
CREATE TEMP TABLE seed AS SELECT current_setting('app.tenant_id')::uuid AS t,
    gen_random_uuid() AS jira, gen_random_uuid() AS asana;
INSERT INTO tenants (tenant_id, name) SELECT t, 't' FROM seed;
INSERT INTO source_instances (tenant_id, instance_id, kind, name, base_url)
SELECT t, jira, 'jira', 'j', 'https://j.example.com' FROM seed
UNION ALL SELECT t, asana, 'asana', 'a', 'https://app.asana.com/api/1.0' FROM seed;
INSERT INTO projects (tenant_id, project_key, name, source_instance_id, source_ref)
SELECT t, 'LOC', 'Jira', jira, 'ABC' FROM seed
UNION ALL SELECT t, 'ASA', 'Asana', asana, '12' FROM seed
UNION ALL SELECT t, 'LCL', 'Local', NULL, NULL FROM seed;
INSERT INTO work_items (tenant_id, key, project_key, number, title, status, status_category,
                        source, source_id)
SELECT seed.t, x.* FROM seed, (VALUES
    ('LOC-1', 'LOC', 1, 'a', 'To Do', 'todo', 'jira', '1'),
    ('LOC-2', 'LOC', 2, 'b', 'To Do', 'todo', 'jira', '2'),
    ('ASA-1', 'ASA', 1, 'c', 'To Do', 'todo', 'asana', '11'),
    ('ASA-2', 'ASA', 2, 'd', 'To Do', 'todo', 'asana', '12'),
    ('LCL-1', 'LCL', 1, 'e', 'To Do', 'todo', 'local', NULL)) AS x;
INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id)
SELECT seed.t, x.l, (SELECT id FROM work_items WHERE key = x.o),
       (SELECT id FROM work_items WHERE key = x.i)
FROM seed, (VALUES ('blocks', 'LOC-1', 'LOC-2'), ('relates', 'LOC-2', 'LOC-1'),
                   ('blocks', 'ASA-1', 'ASA-2'), ('relates', 'ASA-1', 'ASA-2'),
                   ('blocks', 'LOC-1', 'LCL-1'), ('blocks', 'LOC-1', 'ASA-1')) AS x(l, o, i);
DROP TABLE seed;
"""


async def test_the_migration_marks_existing_links_and_rolls_back(fresh_database: str) -> None:
    await asyncio.to_thread(migrate.apply, fresh_database)
    # 0007 out (and what came after it), the links as they were.
    after = migrate.head_ids()[migrate.head_ids().index("0007_link_origin"):]
    await asyncio.to_thread(migrate.rollback, fresh_database, count=len(after))
    tenant_id = uuid.uuid4()
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            await conn.execute(SEED)
        assert await asyncio.to_thread(migrate.apply, fresh_database) == after
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            # Held where one instance mirrors both ends and its source can hold the type.
            assert {tuple(r) for r in await conn.fetch(LINKS)} == {
                ("blocks", "LOC-1", "LOC-2", "jira"), ("relates", "LOC-2", "LOC-1", "jira"),
                ("blocks", "ASA-1", "ASA-2", "asana"), ("relates", "ASA-1", "ASA-2", "local"),
                ("blocks", "LOC-1", "LCL-1", "local"), ("blocks", "LOC-1", "ASA-1", "local")}
        assert await asyncio.to_thread(migrate.rollback, fresh_database,
                                       count=len(after)) == after[::-1]
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            assert await conn.fetchval("SELECT count(*) FROM work_item_links") == 6
        assert await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = "
            "'work_item_links' AND column_name = 'source'") == 0
    finally:
        await conn.close()
