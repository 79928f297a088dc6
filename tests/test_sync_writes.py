"""How a sync writes: statistics refreshed as a backfill outgrows them (refresh_sync_statistics,
migration 0006), so the plans its session caches are not made for an empty table; lz4 for the
large columns; the next page read from the source while this one is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import asyncpg
import pytest

from spiral_mcp.queries import Queries
from spiral_mcp.sources import sync
from spiral_mcp.sources.base import Page, SourceError
from tests.conftest import TenantFactory


async def _analyses(conn: asyncpg.Connection, table: str) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchval(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = $1::regclass", table)


@pytest.fixture(autouse=True)
async def no_autovacuum(admin_conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Autovacuum off on the moves while a test counts analyses: its vacuum after many inserts
    updates the row estimate, after which the moves no longer count as stale."""
    await admin_conn.execute(
        "ALTER TABLE work_item_transitions SET (autovacuum_enabled = false)")
    try:
        yield
    finally:
        await admin_conn.execute("ALTER TABLE work_item_transitions RESET (autovacuum_enabled)")


async def _make_stale(conn: asyncpg.Connection, tenant_id, table_rows: float) -> None:
    """Add more moves than the function's threshold (500 plus the table's size) and publish
    this session's counters, which PostgreSQL otherwise sends at most once a second."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        item = await conn.fetchval("SELECT id FROM work_items LIMIT 1")
        # Ids taken as one block, as the product's bulk writes take them: row by row, the
        # counter's one row would be updated once per row in this transaction, each update
        # slower than the last (minutes, once the shared test database has grown).
        await conn.execute(
            """WITH block AS MATERIALIZED (SELECT take_ids($1, 'work', $3) AS first)
               INSERT INTO work_item_transitions (tenant_id, id, work_item_id, to_status,
                                                  to_category, transitioned_at)
               SELECT $1, block.first + n - 1, $2, 'Done', 'done',
                      timestamptz '2020-01-01' + n * interval '1 second'
               FROM block, generate_series(1, $3::int) AS n""",
            tenant_id, item, 600 + int(max(table_rows, 0)))
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")  # the flush happens at the end of a transaction


async def _table_rows(conn: asyncpg.Connection, table: str) -> float:
    return await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = $1::regclass", table)


async def test_a_stale_table_is_analysed_once(
    app_conn: asyncpg.Connection, queries: Queries, make_tenant: TenantFactory,
) -> None:
    tenant = await make_tenant(demo=True)
    await queries.source_refresh_statistics(app_conn)  # whatever other tests left stale
    before = await _analyses(app_conn, "work_item_transitions")

    await _make_stale(app_conn, tenant.id, await _table_rows(app_conn, "work_item_transitions"))
    await queries.source_refresh_statistics(app_conn)
    assert await _analyses(app_conn, "work_item_transitions") == before + 1

    # Fresh statistics: nothing to do.
    await queries.source_refresh_statistics(app_conn)
    assert await _analyses(app_conn, "work_item_transitions") == before + 1


async def test_a_table_being_analysed_elsewhere_is_skipped_not_waited_for(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, queries: Queries,
    make_tenant: TenantFactory,
) -> None:
    tenant = await make_tenant(demo=True)
    await queries.source_refresh_statistics(app_conn)
    await _make_stale(app_conn, tenant.id, await _table_rows(app_conn, "work_item_transitions"))
    before = await _analyses(app_conn, "work_item_transitions")

    # The lock ANALYZE itself takes, held as autovacuum or another sync would hold it.
    async with admin_conn.transaction():
        await admin_conn.execute(
            "LOCK TABLE work_item_transitions IN SHARE UPDATE EXCLUSIVE MODE")
        await asyncio.wait_for(queries.source_refresh_statistics(app_conn), timeout=30)
        assert await _analyses(app_conn, "work_item_transitions") == before

    await queries.source_refresh_statistics(app_conn)
    assert await _analyses(app_conn, "work_item_transitions") == before + 1


async def test_the_runtime_role_gets_no_other_rights_from_it(app_conn: asyncpg.Connection) -> None:
    # ANALYZE itself stays the owner's: as the runtime role it is skipped with a warning, which
    # depends on the server version: PostgreSQL 16 reworded it (15 said who could analyze).
    warnings: list[str] = []
    app_conn.add_log_listener(lambda _c, message: warnings.append(str(message)))
    await app_conn.execute("ANALYZE work_items")
    await asyncio.sleep(0)
    skipped = ('permission denied to analyze "work_items", skipping it'
               if app_conn.get_server_version().major >= 16
               else 'skipping "work_items" --- only table or database owner can analyze it')
    assert any(skipped in w for w in warnings), warnings


async def test_raw_and_descriptions_are_compressed_with_lz4_where_the_server_has_it(
    app_conn: asyncpg.Connection,
) -> None:
    methods = await app_conn.fetchval(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    rows = await app_conn.fetch(
        "SELECT attname, attcompression FROM pg_attribute "
        "WHERE attrelid = 'work_items'::regclass AND attname IN ('raw', 'description')")
    expected = b"l" if "lz4" in methods else b"\0"
    assert {r["attname"]: r["attcompression"] for r in rows} == {
        "raw": expected, "description": expected}


class _Source:
    """Pages 0..n-1 as an adapter yields them, recording what was asked for and when it closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.asked: list[int] = []
        self.closed = False

    async def pages(self) -> AsyncGenerator[Page, None]:
        try:
            for number in range(self.n):
                self.asked.append(number)
                await asyncio.sleep(0.01)  # the source's round trip
                if number == self.fail_at:
                    raise SourceError("unavailable", "HTTP 503 from the source", status=503)
                yield Page([])
        finally:
            self.closed = True


async def test_the_next_page_is_read_while_this_one_is_written() -> None:
    source = _Source(3)
    seen = []
    async with aclosing(sync._read_ahead(source.pages())) as pages:
        async for _ in pages:
            seen.append(len(seen))
            await asyncio.sleep(0.005)  # the page's write, shorter than a read
            # While this page was written, the next one was already asked for.
            assert source.asked == list(range(min(len(seen) + 1, 3)))
    assert seen == [0, 1, 2] and source.closed


async def test_a_source_failure_arrives_after_the_pages_before_it() -> None:
    source = _Source(5, fail_at=2)
    seen = 0
    with pytest.raises(SourceError, match="503"):
        async with aclosing(sync._read_ahead(source.pages())) as pages:
            async for _ in pages:
                seen += 1
    assert seen == 2 and source.closed


async def test_a_write_failure_drops_the_page_read_ahead_and_closes_the_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _Source(5, fail_at=1)  # the page read ahead of the failed write fails too
    with pytest.raises(RuntimeError, match="store"):
        async with aclosing(sync._read_ahead(source.pages())) as pages:
            async for _ in pages:
                await asyncio.sleep(0.05)  # meanwhile the page read ahead fails
                raise RuntimeError("the store refused the page")
    assert source.closed and source.asked == [0, 1]
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
