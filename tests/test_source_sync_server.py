"""Sources in the server (issue 7): the background sync (one sync per instance at a time across
processes, interval runs, a failing instance beside a good one, shutdown mid-sync) and the admin
tools sources_list and sources_sync over real HTTP, against the fake Jira."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.sources import manage
from spiral_mcp.sources.access import SourceAccess
from spiral_mcp.sources.scheduler import SyncScheduler
from spiral_mcp.sources.secrets import SecretBox
from spiral_mcp.sources.sync import lock_key
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients

SECRET_KEY = "x" * 43 + "="
BOX = SecretBox(SECRET_KEY)
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SEARCH = ("POST", "/rest/api/3/search/jql")


# --- the fake Jira, watched -------------------------------------------------------------------
class Watched:
    """The fake Jira's HTTP side with a watch on it: requests in flight (most at once), an
    optional delay per request, and a search page that waits until released."""

    def __init__(self, fake: FakeJira) -> None:
        self.fake = fake
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.searches = 0
        self.hold_search: int | None = None   # this search (1-based) waits for `release`
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if (request.method, request.path) == SEARCH:
                self.searches += 1
                if self.searches == self.hold_search:
                    self.held.set()
                    await self.release.wait()
            await asyncio.sleep(self.delay)
            return await handler(request)
        finally:
            self.in_flight -= 1


async def watched_jira(serve_fake) -> FakeJira:
    fake = FakeJira()
    fake.watch = Watched(fake)  # type: ignore[attr-defined]
    app = fake.app()
    app.middlewares.insert(0, fake.watch.middleware)  # type: ignore[attr-defined]
    return await serve_fake(fake, app=app)


@pytest.fixture
async def jira(serve_fake) -> AsyncIterator[FakeJira]:
    fake = await watched_jira(serve_fake)
    yield fake
    fake.watch.release.set()  # type: ignore[attr-defined]


@pytest.fixture
async def other_jira(serve_fake) -> AsyncIterator[FakeJira]:
    fake = await watched_jira(serve_fake)
    yield fake
    fake.watch.release.set()  # type: ignore[attr-defined]


def backfill(fake: FakeJira, count: int, *, prefix: str = "ABC") -> None:
    for n in range(1, count + 1):
        fake.add_issue(f"{prefix}-{n}", summary=f"Issue {n}",
                       updated=T0 - timedelta(minutes=count - n))


async def add_source(admin_conn: asyncpg.Connection, queries: Queries, tenant_id: uuid.UUID,
                     fake: FakeJira, *, projects: dict[str, str] | None = None,
                     token: str | None = None, base_url: str | None = None) -> uuid.UUID:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="jira",
            name=f"jira {os.urandom(3).hex()}", base_url=base_url or fake.base_url,  # type: ignore[attr-defined]
            projects=projects or {"ABC": "LOC"}, email=fake.email, token=token or fake.token)


async def scalar(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str, *args: Any) -> Any:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetchval(sql, *args)


async def runs_of(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    """The tenant's sync history, newest first."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetch("SELECT * FROM sync_runs ORDER BY started_at DESC, run_id DESC")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


def scheduler(database_urls: DatabaseUrls, queries: Queries, **options: Any) -> SyncScheduler:
    return SyncScheduler(database_urls.runtime, queries, SourceAccess(BOX, **{**FAST, **options}),
                         connect_timeout=5.0, statement_timeout=30.0)


Serve = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def serve(database_urls: DatabaseUrls) -> AsyncIterator[Serve]:
    """``await serve(**env)``: an app that can open sources (SPIRAL_SECRET_KEY set)."""
    async with app_clients() as start_client:
        async def start(**env: str) -> TestClient:
            settings = make_settings(database_urls, **{"SPIRAL_SECRET_KEY": SECRET_KEY,
                                                       "SYNC_INTERVAL": "0", **env})
            return await start_client(create_app(settings, database_url=database_urls.runtime,
                                                 explorer_url=database_urls.explorer))

        yield start


# --- the background sync ----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def held_lock(conn: asyncpg.Connection, source_id: uuid.UUID) -> AsyncIterator[None]:
    """The instance's sync lock, held by ``conn``'s session as another process syncing it."""
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
    try:
        yield
    finally:
        assert await conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(source_id))


async def test_a_held_lock_makes_a_round_skip_the_instance(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, database_urls,
        queries) -> None:
    backfill(jira, 5)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    async with held_lock(app_conn, source_id):
        results = await scheduler(database_urls, queries).run_once()
    assert results[source_id] is None
    assert jira.log == []
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 0
    results = await scheduler(database_urls, queries).run_once()
    assert results[source_id] is not None and results[source_id].items == 5
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 5


async def test_two_schedulers_sync_an_instance_once_at_a_time(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, database_urls,
        queries) -> None:
    backfill(jira, 60)
    jira.watch.delay = 0.02  # type: ignore[attr-defined]
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    first, second = (scheduler(database_urls, queries, page_size=10) for _ in range(2))
    results = await asyncio.gather(first.run_once(), second.run_once())
    synced = [r[source_id] for r in results if r[source_id] is not None]
    assert len(synced) == 1 and synced[0].items == 60 and synced[0].pages == 6
    # One sync's requests and no other's: six search pages, never two requests at once.
    assert jira.log.count(SEARCH) == 6
    assert jira.watch.most_in_flight == 1  # type: ignore[attr-defined]
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 60
    # The lock was released: a probe takes it.
    assert await app_conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
    await app_conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(source_id))


async def test_two_servers_never_sync_one_instance_at_once(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    backfill(jira, 250)  # three pages of 100
    jira.watch.delay = 0.05  # type: ignore[attr-defined]
    tenant = await make_tenant()
    await add_source(admin_conn, queries, tenant.id, jira)
    await asyncio.gather(serve(SYNC_INTERVAL="0.1"), serve(SYNC_INTERVAL="0.1"))

    async def synced() -> bool:
        return await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 250

    await eventually(synced)
    await asyncio.sleep(0.5)  # more rounds of both servers, each skipping or finding nothing new
    assert jira.watch.most_in_flight == 1  # type: ignore[attr-defined]


async def test_interval_runs_pick_up_changes(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    backfill(jira, 3)
    tenant = await make_tenant()
    await add_source(admin_conn, queries, tenant.id, jira)
    await serve(SYNC_INTERVAL="0.2")

    async def has(sql: str, expected: Any) -> bool:
        return await scalar(app_conn, tenant.id, sql) == expected

    await eventually(lambda: has("SELECT count(*) FROM work_items", 3))
    later = T0 + timedelta(hours=1)
    jira.update_issue("ABC-2", at=later, summary="Renamed at the source")
    jira.add_issue("ABC-4", summary="New at the source", updated=later + timedelta(minutes=1))
    await eventually(lambda: has("SELECT title FROM work_items WHERE key = 'LOC-2'",
                                 "Renamed at the source"))
    await eventually(lambda: has("SELECT count(*) FROM work_items", 4))


@pytest.mark.parametrize("concurrency", [4, 1])
async def test_a_slow_instance_holds_up_no_other_tenants(
        concurrency: int, jira: FakeJira, other_jira: FakeJira, make_tenant: TenantFactory,
        admin_conn, app_conn, serve: Serve, queries) -> None:
    backfill(jira, 150)
    jira.watch.hold_search = 2  # type: ignore[attr-defined]  # the slow one's second page waits
    backfill(other_jira, 3)
    slow, quick = await make_tenant(), await make_tenant()
    await add_source(admin_conn, queries, slow.id, jira)
    await add_source(admin_conn, queries, quick.id, other_jira)
    count = "SELECT count(*) FROM work_items"
    await serve(SYNC_INTERVAL="0.1", SYNC_CONCURRENCY=str(concurrency))
    await asyncio.wait_for(jira.watch.held.wait(), 15)  # type: ignore[attr-defined]
    other_jira.update_issue("ABC-2", at=T0 + timedelta(hours=1), summary="Renamed meanwhile")
    renamed = "SELECT count(*) FROM work_items WHERE title = 'Renamed meanwhile'"

    async def quick_is_current() -> bool:
        return (await scalar(app_conn, quick.id, count) == 3
                and await scalar(app_conn, quick.id, renamed) == 1)

    if concurrency > 1:
        # The other tenant's instance is synced, and synced again at its interval, while the
        # slow one waits on its source.
        await eventually(quick_is_current)
    else:
        # One at a time: the slow sync holds the only slot (the change waits for it).
        await asyncio.sleep(1.0)
        assert not await quick_is_current()
    assert await scalar(app_conn, slow.id, count) == 100  # its first page, committed
    jira.watch.release.set()  # type: ignore[attr-defined]

    async def slow_is_done() -> bool:
        return await scalar(app_conn, slow.id, count) == 150

    await eventually(slow_is_done)
    await eventually(quick_is_current)
    # Side by side, each tenant's sync wrote into its own store only.
    assert await scalar(app_conn, slow.id, renamed) == 0
    assert await scalar(app_conn, quick.id, count) == 3


async def test_a_failing_instance_does_not_stop_the_others(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, database_urls,
        queries, caplog: pytest.LogCaptureFixture) -> None:
    backfill(jira, 4)
    bad_tenant, good_tenant = await make_tenant(), await make_tenant()
    refused = await add_source(admin_conn, queries, bad_tenant.id, jira, token="wrong-token")
    unreachable = await add_source(admin_conn, queries, bad_tenant.id, jira,
                                   base_url="http://127.0.0.1:9", projects={"ABC": "OTHER"})
    good = await add_source(admin_conn, queries, good_tenant.id, jira)
    caplog.set_level(logging.INFO, logger="spiral_mcp.sources.scheduler")
    results = await scheduler(database_urls, queries).run_once()
    assert results[refused] is None and results[unreachable] is None
    assert results[good] is not None and results[good].items == 4
    assert await scalar(app_conn, good_tenant.id, "SELECT count(*) FROM work_items") == 4
    # (Instances other tests left behind fail too, against their closed fakes.)
    mine = {str(refused), str(unreachable)}
    failures = [r for r in caplog.records
                if r.getMessage() == "source sync failed" and r.source in mine]
    assert sorted(r.source for r in failures) == sorted(mine)
    assert all("\n" not in r.error and "wrong-token" not in r.error for r in failures)
    assert any("401" in r.error for r in failures)
    # Each is in its tenant's sync history, as the schedule's, the failures in one line.
    runs = await runs_of(app_conn, bad_tenant.id)
    assert {(r["instance_id"], r["trigger"], r["status"]) for r in runs} == {
        (refused, "schedule", "failed"), (unreachable, "schedule", "failed")}
    assert all(r["error"] and "wrong-token" not in r["error"] for r in runs)
    [ok] = await runs_of(app_conn, good_tenant.id)
    assert (ok["instance_id"], ok["status"], ok["items"]) == (good, "ok", 4)


async def test_shutdown_mid_sync_keeps_committed_pages_and_resumes(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        database_urls, queries) -> None:
    backfill(jira, 250)
    jira.watch.hold_search = 3  # type: ignore[attr-defined]
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    client = await serve(SYNC_INTERVAL="0.1")
    await asyncio.wait_for(jira.watch.held.wait(), 15)  # type: ignore[attr-defined]
    count = "SELECT count(*) FROM work_items"

    async def two_pages() -> bool:
        # Page 3 is asked for while page 2 is written (read-ahead): let that write end. Page 2
        # is searched from the minute of page 1's last issue, which it skips: 99 new of 100.
        return await scalar(app_conn, tenant.id, count) == 199

    await eventually(two_pages)
    started = time.monotonic()
    await client.close()  # the cleanup cancels the sync waiting on page 3
    assert time.monotonic() - started < 5
    assert await scalar(app_conn, tenant.id, count) == 199  # pages 1 and 2 stay
    [cut] = await runs_of(app_conn, tenant.id)
    assert (cut["status"], cut["trigger"], cut["pages"]) == ("cancelled", "schedule", 2)
    cursor = await scalar(app_conn, tenant.id, "SELECT sync_cursor::text FROM source_instances")
    assert orjson.loads(cursor)["updated"] is not None
    # The cancelled session let go of the lock, and the next sync resumes from the cursor.
    assert await app_conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
    await app_conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(source_id))
    jira.watch.release.set()  # type: ignore[attr-defined]
    results = await scheduler(database_urls, queries).run_once()
    assert results[source_id] is not None and results[source_id].items < 250
    assert await scalar(app_conn, tenant.id, count) == 250


async def test_without_a_secret_key_the_server_starts_without_background_sync(
        database_urls, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spiral_mcp.server.app")
    settings = make_settings(database_urls, SYNC_INTERVAL="0.1")  # no SPIRAL_SECRET_KEY
    client = TestClient(TestServer(create_app(settings, database_url=database_urls.runtime)))
    await client.start_server()
    try:
        assert (await client.get("/health")).status == 200
    finally:
        await client.close()
    off = [r for r in caplog.records if r.getMessage() == "background source sync off"]
    assert len(off) == 1 and "SPIRAL_SECRET_KEY" in off[0].reason


# --- sources_list and sources_sync over HTTP --------------------------------------------------
async def call(client: TestClient, tenant: Tenant, name: str, **arguments: Any) -> dict[str, Any]:
    response = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert response.status == 200
    return await response.json()


async def envelope(client: TestClient, tenant: Tenant, name: str,
                   **arguments: Any) -> dict[str, Any]:
    answer = await call(client, tenant, name, **arguments)
    assert "result" in answer, answer
    return answer["result"]["structuredContent"]


async def test_sources_list_shows_the_tenants_instances_and_no_credentials(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, serve: Serve, queries) -> None:
    backfill(jira, 2)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await add_source(admin_conn, queries, owner.id, jira)
    client = await serve()
    mine = await envelope(client, owner, "sources_list")
    assert mine["success"], mine
    (listed,) = mine["data"]["sources"]
    assert listed["id"] == str(source_id) and listed["kind"] == "jira"
    assert listed["base_url"] == jira.base_url  # type: ignore[attr-defined]
    assert listed["projects"] == {"ABC": "LOC"}
    assert listed["last_synced_at"] is None and listed["cursor"] is None
    text = orjson.dumps(mine).decode()
    assert jira.token not in text and jira.email not in text and "credentials" not in text
    theirs = await envelope(client, other, "sources_list")
    assert theirs["data"] == {"sources": []}


async def test_sources_sync_syncs_and_lists_the_new_cursor(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    backfill(jira, 120)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    client = await serve()
    result = await envelope(client, tenant, "sources_sync", source_id=str(source_id))
    assert result["success"], result
    data = result["data"]
    assert (data["pages"], data["items"], data["changed"]) == (2, 120, 120)
    assert data["source_id"] == str(source_id) and data["items_per_second"] > 0
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 120
    again = await envelope(client, tenant, "sources_sync", source_id=str(source_id))
    assert again["data"]["changed"] == 0 and again["data"]["items"] < 120  # from the cursor
    full = await envelope(client, tenant, "sources_sync", source_id=str(source_id), full=True)
    assert (full["data"]["items"], full["data"]["changed"]) == (120, 0)
    runs = await runs_of(app_conn, tenant.id)
    assert [(r["kind"], r["trigger"], r["status"], r["changed"]) for r in runs] == [
        ("backfill", "tool", "ok", 0), ("sync", "tool", "ok", 0), ("sync", "tool", "ok", 120)]
    (listed,) = (await envelope(client, tenant, "sources_list"))["data"]["sources"]
    assert listed["last_synced_at"] is not None
    assert listed["cursor"]["updated"].startswith("2025-03-01T")


async def test_sources_sync_sends_a_progress_notification_per_page(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, serve: Serve, queries) -> None:
    backfill(jira, 250)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    client = await serve()
    headers = {**tenant.headers, "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    init = await client.post("/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}})
    assert init.status == 200
    headers |= {"Mcp-Session-Id": init.headers["Mcp-Session-Id"],
                "MCP-Protocol-Version": "2025-11-25"}
    await client.post("/mcp", headers=headers,
                      json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    response = await client.post("/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "sources_sync", "arguments": {"source_id": str(source_id)},
            "_meta": {"progressToken": "sync-1"}}})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    messages = [orjson.loads(line[len("data: "):])
                for line in (await response.text()).splitlines() if line.startswith("data: ")]
    progress = [m["params"] for m in messages if m.get("method") == "notifications/progress"]
    assert [p["progress"] for p in progress] == [1, 2, 3]
    assert all(p["progressToken"] == "sync-1" and "items" in p["message"] for p in progress)
    assert messages[-1]["id"] == 1
    assert messages[-1]["result"]["structuredContent"]["data"]["pages"] == 3


async def test_sources_sync_while_a_sync_runs_is_a_conflict(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    backfill(jira, 2)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    client = await serve()
    async with held_lock(app_conn, source_id):
        busy = await envelope(client, tenant, "sources_sync", source_id=str(source_id))
    assert busy["error"]["code"] == "CONFLICT" and "already running" in busy["error"]["message"]
    assert jira.log == []
    assert (await envelope(client, tenant, "sources_sync", source_id=str(source_id)))["success"]


async def test_sources_sync_of_another_tenants_instance_is_not_found(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    backfill(jira, 3)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await add_source(admin_conn, queries, owner.id, jira)
    client = await serve()
    for tenant, wanted in ((other, str(source_id)), (owner, str(uuid.uuid4()))):
        result = await envelope(client, tenant, "sources_sync", source_id=wanted)
        assert result["error"]["code"] == "NOT_FOUND", result
    assert jira.log == []
    for tenant in (owner, other):
        assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 0


async def test_another_tenants_instance_syncing_is_not_found_not_a_conflict(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, app_conn, serve: Serve,
        queries) -> None:
    """The lock is keyed on the id alone: tried before the tenant's lookup, a CONFLICT would
    tell another tenant that the instance exists and is syncing right now."""
    backfill(jira, 3)
    owner, other = await make_tenant(), await make_tenant()
    source_id = await add_source(admin_conn, queries, owner.id, jira)
    client = await serve()
    async with held_lock(app_conn, source_id):
        result = await envelope(client, other, "sources_sync", source_id=str(source_id))
    assert result["error"]["code"] == "NOT_FOUND", result
    assert "already running" not in orjson.dumps(result).decode()
    assert jira.log == []
    assert await scalar(app_conn, other.id, "SELECT count(*) FROM work_items") == 0
    assert (await envelope(client, other, "sources_list"))["data"] == {"sources": []}


async def test_a_refusing_source_is_upstream_error_without_the_token(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, serve: Serve, queries) -> None:
    backfill(jira, 1)
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira, token="wrong-token")
    client = await serve()
    result = await envelope(client, tenant, "sources_sync", source_id=str(source_id))
    error = result["error"]
    assert error["code"] == "UPSTREAM_ERROR"
    assert error["details"] == [{"kind": "auth", "status": 401, "ambiguous": False}]
    assert "401" in error["message"] and "wrong-token" not in orjson.dumps(result).decode()


async def test_keys_without_admin_scope_do_not_see_the_sources_tools(
        jira: FakeJira, make_tenant: TenantFactory, admin_conn, serve: Serve, queries) -> None:
    tenant = await make_tenant(scopes=("read", "write", "query"))
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    client = await serve()
    listed = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    names = {t["name"] for t in (await listed.json())["result"]["tools"]}
    assert "jira_search" in names and not names & {"sources_list", "sources_sync"}
    for name, arguments in (("sources_list", {}), ("sources_sync", {"source_id": str(source_id)})):
        answer = await call(client, tenant, name, **arguments)
        error = answer["result"]["structuredContent"]["error"]
        assert error["code"] == "PERMISSION_DENIED"
        assert error["message"].startswith(f"{name} needs the API-key scope 'admin'")
    assert jira.log == []
