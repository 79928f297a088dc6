"""Fair shares of the pools (issue 16, section 4): one tenant saturating slow work — explorer
queries, report templates, source syncs — leaves the shared pools to everyone else, and its calls
beyond its share are RATE_LIMITED at once with a clear message and ``retry_after``.

Over real HTTP against real PostgreSQL. A slow query is made slow without burning CPU: the test
holds an ACCESS EXCLUSIVE lock on the table it reads, so it holds its pooled connection, waiting,
until the test lets go. A slow source is the fake Jira with every search held until released.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.shares import Share, ShareExhausted, Shares
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients
from tests.test_source_sync_server import SEARCH, SECRET_KEY, add_source, backfill, envelope

# A pool of 4 (each tenant's default share: 2) and a 1 s acquire timeout: without fair shares, a
# call finding the pool taken fails with CONNECTION_ERROR after a second.
POOL = {"DB_POOL_MAX": "4", "DB_POOL_MIN": "1", "DB_CONNECT_TIMEOUT": "1",
        "EXPLORER_TIMEOUT_S": "60", "DB_STATEMENT_TIMEOUT": "60"}
SLOW_CALLS = 6  # more than the pool holds

Serve = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    """``await serve(**env)``: the app, with the small pool above and sources reachable."""
    async with app_clients() as start_client:
        async def start(**env: str) -> TestClient:
            settings = make_settings(database_urls, **{
                **POOL, "SPIRAL_SECRET_KEY": SECRET_KEY, "SYNC_INTERVAL": "0", **env})
            return await start_client(create_app(settings, database_url=database_urls.runtime,
                                                 explorer_url=database_urls.explorer))

        yield start


@asynccontextmanager
async def table_locked(conn: asyncpg.Connection, table: str) -> AsyncIterator[None]:
    """Every statement reading ``table`` waits, holding its connection, until the block ends."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        await transaction.rollback()


async def waiting_on(conn: asyncpg.Connection, table: str) -> int:
    """Sessions waiting for the lock on ``table`` (slow queries holding their connections)."""
    return await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table)


@asynccontextmanager
async def in_flight() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """A list to start calls in (``tasks.append(asyncio.create_task(...))``); any still running
    when the block ends (a failed assertion) are cancelled before the server closes."""
    tasks: list[asyncio.Task[Any]] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def settle(tasks: list[asyncio.Task[Any]], running: Callable[[], Awaitable[int]],
                 timeout: float = 15.0) -> None:
    """Wait until every call has either answered or is running (holding what it holds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(t.done() for t in tasks) + await running() < len(tasks):
        assert asyncio.get_running_loop().time() < deadline, "the calls never settled"
        await asyncio.sleep(0.05)


def assert_over_share(results: list[dict[str, Any]], what: str, limit: int) -> None:
    assert results, "no call was refused"
    for result in results:
        error = result.get("error") or {}
        assert error.get("code") == "RATE_LIMITED", result
        assert f"already runs {limit} {what} at once" in error["message"], error
        assert error["retry_after"] > 0
        assert error["details"][0]["limit"] == limit


# --- explorer ---------------------------------------------------------------------------------
async def test_a_tenant_saturating_the_explorer_leaves_its_pool_to_others(
        serve: Serve, make_tenant: TenantFactory, admin_conn: asyncpg.Connection) -> None:
    """The issue's report: tenant B's slow queries took the whole explorer pool, and tenant A's
    `SELECT 1` failed with CONNECTION_ERROR."""
    client = await serve()
    a, b = await make_tenant(name="a"), await make_tenant(name="b")
    slow = "SELECT count(*) FROM work_items"
    async with in_flight() as tasks:
        async with table_locked(admin_conn, "work_items"):
            tasks += [asyncio.create_task(envelope(client, b, "explorer_query", sql=slow))
                      for _ in range(SLOW_CALLS)]
            await settle(tasks, lambda: waiting_on(admin_conn, "work_items"))
            # B holds its share (2 of the 4 connections), waiting; A's query answers.
            answer = await envelope(client, a, "explorer_query", sql="SELECT 1")
            assert answer["success"], answer
            assert answer["data"]["rows"] == [[1]]
            assert await waiting_on(admin_conn, "work_items") == 2
            assert_over_share([t.result() for t in tasks if t.done()], "explorer calls", 2)
            running = [t for t in tasks if not t.done()]
        # Let go: B's running queries end normally, and their places are B's again.
        finished = await asyncio.gather(*running)
    assert len(finished) == 2 and all(r["success"] for r in finished), finished
    again = await envelope(client, b, "explorer_query", sql="SELECT 1")
    assert again["success"], again


async def test_reading_an_explorer_view_takes_a_place_in_the_explorer_share(
        serve: Serve, make_tenant: TenantFactory, admin_conn: asyncpg.Connection) -> None:
    """A view's description (a resource) holds an explorer connection for its samples, as
    explorer_describe_table does: beyond its tenant's share it is refused, another tenant's is
    served."""
    client = await serve()
    a, b = await make_tenant(name="a"), await make_tenant(name="b")

    async def read(tenant: Tenant, view: str) -> dict[str, Any]:
        response = await client.post("/execute", headers=tenant.headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "resources/read",
            "params": {"uri": f"spiral://explorer/views/{view}"}})
        return await response.json()

    async with in_flight() as tasks:
        async with table_locked(admin_conn, "work_items"):
            tasks += [asyncio.create_task(envelope(client, b, "explorer_query",
                                                   sql="SELECT count(*) FROM work_items"))
                      for _ in range(2)]
            await settle(tasks, lambda: waiting_on(admin_conn, "work_items"))
            refused = (await read(b, "projects"))["error"]
            assert refused["code"] == -32603 and refused["data"]["code"] == "RATE_LIMITED"
            assert "already runs 2 explorer calls at once" in refused["message"]
            assert "result" in await read(a, "projects")
        await asyncio.gather(*tasks)
    assert "result" in await read(b, "projects")


# --- report templates -------------------------------------------------------------------------
SLOW_REPORT = """\
-- name: sql_test_comment_count
-- title: Comments counted
-- row_cap: 1
-- description: How many comments the tenant has.
SELECT count(*) AS comments FROM comments
"""


async def test_a_tenant_saturating_reports_leaves_the_runtime_pool_to_others(
        serve: Serve, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        tmp_path: Path) -> None:
    """Reports run on the runtime pool, which every call (authentication included) needs: B's
    slow reports beyond its share are refused, and A is served."""
    (tmp_path / "slow.sql").write_text(SLOW_REPORT)
    client = await serve(SPIRAL_TEMPLATES_DIR=str(tmp_path))
    a, b = await make_tenant(name="a", demo=True), await make_tenant(name="b")
    async with in_flight() as tasks:
        async with table_locked(admin_conn, "comments"):
            tasks += [asyncio.create_task(envelope(client, b, "sql_test_comment_count"))
                      for _ in range(SLOW_CALLS)]
            await settle(tasks, lambda: waiting_on(admin_conn, "comments"))
            answer = await envelope(client, a, "sql_search_issues_by_project",
                                    project_key="WEB")
            assert answer["success"], answer
            assert answer["data"]["row_count"] > 0
            assert await waiting_on(admin_conn, "comments") == 2
            assert_over_share([t.result() for t in tasks if t.done()], "report calls", 2)
            running = [t for t in tasks if not t.done()]
        finished = await asyncio.gather(*running)
    assert [r["data"]["rows"] for r in finished] == [[{"comments": 0}]] * 2


# --- source syncs -----------------------------------------------------------------------------
class HeldSearches:
    """Every search of a fake Jira waits until released: a source answering very slowly."""

    def __init__(self) -> None:
        self.waiting = 0
        self.release = asyncio.Event()

    async def searching(self) -> int:
        return self.waiting

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.method, request.path) == SEARCH:
            self.waiting += 1
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
        return await handler(request)


@pytest.fixture
async def slow_jira(serve_fake) -> AsyncIterator[tuple[FakeJira, HeldSearches]]:
    fake = FakeJira()
    held = HeldSearches()
    app = fake.app()
    app.middlewares.insert(0, held.middleware)
    await serve_fake(fake, app=app)
    backfill(fake, 3)
    yield fake, held
    held.release.set()


@pytest.fixture
async def quick_jira(serve_fake) -> FakeJira:
    fake = await serve_fake(FakeJira())
    backfill(fake, 3)
    return fake


async def sources(admin_conn: asyncpg.Connection, queries: Queries, tenant: Tenant,
                  fake: FakeJira, count: int) -> list[uuid.UUID]:
    return [await add_source(admin_conn, queries, tenant.id, fake,
                             projects={"ABC": f"LOC{n}"}) for n in range(count)]


async def test_a_sync_waiting_on_its_source_holds_no_pool_connection(
        serve: Serve, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        queries: Queries, slow_jira: tuple[FakeJira, HeldSearches]) -> None:
    """The issue's report: B's syncs of as many slow instances as the pool holds emptied it,
    and every tenant's calls, authentication included, were 503 CONNECTION_ERROR. With shares
    wide open, so the pool alone is on trial."""
    jira, held = slow_jira
    client = await serve(SYNC_ON_DEMAND_MAX=str(SLOW_CALLS), SYNC_MAX_PER_TENANT=str(SLOW_CALLS))
    a, b = await make_tenant(name="a", demo=True), await make_tenant(name="b")
    source_ids = await sources(admin_conn, queries, b, jira, SLOW_CALLS)
    async with in_flight() as tasks:
        tasks += [asyncio.create_task(envelope(client, b, "sources_sync", source_id=str(i)))
                  for i in source_ids]
        await settle(tasks, held.searching)
        for name, arguments in (("sources_list", {}), ("jira_search", {"jql": "project = WEB"})):
            answer = await envelope(client, a, name, **arguments)
            assert answer["success"], answer
        assert held.waiting == SLOW_CALLS  # every sync runs, waiting on the source
        held.release.set()
        finished = await asyncio.gather(*tasks)
    assert all(r["success"] and r["data"]["items"] == 3 for r in finished), finished


async def test_a_tenant_over_its_sync_share_is_refused_and_others_still_sync(
        serve: Serve, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        queries: Queries, slow_jira: tuple[FakeJira, HeldSearches],
        quick_jira: FakeJira) -> None:
    """Defaults from a pool of 4: a process runs 2 syncs at once, a tenant 1."""
    jira, held = slow_jira
    client = await serve()
    a, b, c = [await make_tenant(name=n) for n in "abc"]
    b_first, b_second = await sources(admin_conn, queries, b, jira, 2)
    (c_only,) = await sources(admin_conn, queries, c, jira, 1)
    (a_only,) = await sources(admin_conn, queries, a, quick_jira, 1)

    def sync(tenant: Tenant, source_id: uuid.UUID) -> Awaitable[dict[str, Any]]:
        # Bounded: without shares, a sync expected to be refused would wait on the source.
        return asyncio.wait_for(envelope(client, tenant, "sources_sync",
                                         source_id=str(source_id)), 10)

    async with in_flight() as running:
        running.append(asyncio.create_task(sync(b, b_first)))
        await settle(running, held.searching)
        assert_over_share([await sync(b, b_second)], "source syncs", 1)
        # Another tenant syncs as usual while B's sync waits on its source.
        synced = await sync(a, a_only)
        assert synced["success"] and synced["data"]["items"] == 3, synced
        # The process's own cap (SYNC_ON_DEMAND_MAX, here 2): with B's and C's syncs waiting, a
        # third is refused in the server's name, not the tenant's.
        running.append(asyncio.create_task(sync(c, c_only)))
        await settle(running, held.searching)
        full = (await sync(a, a_only))["error"]
        assert full["code"] == "RATE_LIMITED", full
        assert "this server already runs 2 source syncs at once" in full["message"]
        assert full["retry_after"] == 5.0
        held.release.set()
        assert all(r["success"] for r in await asyncio.gather(*running))
    assert (await sync(b, b_second))["success"]  # B's share is free again


# --- the shares themselves --------------------------------------------------------------------
async def test_a_place_is_given_back_however_its_call_ends() -> None:
    shares = Shares({"slow": Share(what="slow calls", per_tenant=1)})
    tenant = uuid.uuid4()

    async def hold(outcome: BaseException | None) -> None:
        with shares.take("slow", tenant):
            await asyncio.sleep(0)
            if outcome is not None:
                raise outcome

    await hold(None)
    with pytest.raises(ValueError):
        await hold(ValueError("the call failed"))
    task = asyncio.create_task(hold(None))
    await asyncio.sleep(0)
    assert shares.running("slow", tenant) == 1
    with pytest.raises(ShareExhausted, match="already runs 1 slow calls"):
        shares.take("slow", tenant)
    assert shares.running("slow", uuid.uuid4()) == 0  # another tenant's share is its own
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shares.running("slow", tenant) == 0
    slot = shares.take("slow", tenant)
    with slot:
        pass
    with pytest.raises(RuntimeError, match="already given back"), slot:
        pass


def test_shares_default_to_half_the_pools_and_cannot_exceed_them() -> None:
    base = {"DATABASE_URL": "postgresql://x@localhost/db", "DB_POOL_MAX": "10"}
    settings = load_settings(environ=base)
    assert (settings.explorer_share, settings.report_share) == (5, 5)
    assert (settings.sync_calls, settings.sync_share) == (5, 2)
    tiny = load_settings(environ={**base, "DB_POOL_MAX": "1", "DB_POOL_MIN": "1"})
    assert (tiny.explorer_share, tiny.report_share, tiny.sync_calls, tiny.sync_share) == \
        (1, 1, 1, 1)
    set_ = load_settings(environ={**base, "EXPLORER_MAX_PER_TENANT": "10",
                                  "SYNC_ON_DEMAND_MAX": "8", "SYNC_MAX_PER_TENANT": "8"})
    assert (set_.explorer_share, set_.sync_calls, set_.sync_share) == (10, 8, 8)
    for env, message in (
            ({"EXPLORER_MAX_PER_TENANT": "11"}, "EXPLORER_MAX_PER_TENANT: 11 is more than "
                                                "DB_POOL_MAX 10"),
            ({"REPORT_MAX_PER_TENANT": "0"}, "REPORT_MAX_PER_TENANT: expected a whole number"),
            ({"SYNC_MAX_PER_TENANT": "6"}, "SYNC_MAX_PER_TENANT: 6 is more than "
                                           "SYNC_ON_DEMAND_MAX 5"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(environ={**base, **env})
