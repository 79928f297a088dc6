"""The sync history (issue 21, migration 0019): every sync, whoever starts it, is one sync_runs
row, from its start (running) through its pages to its end (ok, failed with the source's words,
cancelled); a run left by a process that died reads as failed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from spiral_mcp.sources import manage
from spiral_mcp.sources.access import SourceAccess
from spiral_mcp.sources.base import SourceError
from spiral_mcp.sources.runs import ABANDONED, failure_line
from spiral_mcp.sources.secrets import SecretBox
from spiral_mcp.sources.sync import SyncBusy, lock_key
from tests.fake_jira import FakeJira

BOX = SecretBox(b"x" * 43 + b"=")
FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 1000.0, "timeout": 5.0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    fake = await serve_fake(FakeJira())
    for n in range(1, 26):
        fake.add_issue(f"ABC-{n}", summary=f"Issue {n}", status="To Do",
                       updated=T0 - timedelta(hours=30 - n))
    return fake


async def _add(admin_conn: asyncpg.Connection, queries, tenant_id, fake: FakeJira) -> uuid.UUID:
    async with admin_conn.transaction():
        return await manage.add_source(
            admin_conn, queries, BOX, tenant_id=tenant_id, kind="jira",
            name=f"jira {uuid.uuid4().hex[:6]}", base_url=fake.base_url,
            projects={"ABC": "RUN"}, email=fake.email, token=fake.token)


async def _runs(conn: asyncpg.Connection, queries, tenant_id, **filters) -> list[dict]:
    arguments = {"instance_id": None, "status": None, "before_started": None,
                 "before_run": None, "row_limit": 50, "abandoned": ABANDONED, **filters}
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        return [dict(row) for row in await queries.sync_runs_page(conn, **arguments)]


async def test_a_run_is_recorded_with_its_counts(jira, make_tenant, admin_conn, app_conn,
                                                 queries) -> None:
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    progress = await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=10, **FAST)
    await manage.run_sync(admin_conn, queries, BOX, source_id, full=True, page_size=10, **FAST)
    full, first = await _runs(app_conn, queries, tenant.id)
    assert (first["kind"], first["trigger"], first["status"]) == ("sync", "cli", "ok")
    assert (first["pages"], first["items"], first["changed"]) == (
        progress.pages, progress.items, progress.changed) == (3, 25, 25)
    assert first["error"] is None and first["task_id"] is None
    assert first["started_at"] <= first["finished_at"] <= full["started_at"]
    assert (full["kind"], full["status"], full["items"], full["changed"]) == (
        "backfill", "ok", 25, 0)
    assert await _runs(app_conn, queries, tenant.id, instance_id=uuid.uuid4()) == []
    # Another tenant sees none of them.
    other = await make_tenant()
    assert await _runs(app_conn, queries, other.id) == []


async def test_a_failure_is_recorded_with_the_sources_words_and_the_pages_it_kept(
        jira, make_tenant, admin_conn, app_conn, queries) -> None:
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    jira.broken_search = 3
    with pytest.raises(SourceError, match="500") as info:
        await manage.run_sync(admin_conn, queries, BOX, source_id, page_size=10, retries=1,
                              **FAST)
    [run] = await _runs(app_conn, queries, tenant.id, status="failed")
    assert run["error"] == " ".join(str(info.value).split()) and "500" in run["error"]
    assert (run["pages"], run["items"]) == (2, 20)  # the two pages committed
    assert jira.token not in run["error"]


async def test_a_refused_token_is_recorded_and_the_server_sync_is_recorded_as_the_tools(
        jira, make_tenant, admin_conn, app_conn, queries) -> None:
    """The runtime role records runs too (SourceAccess: the schedule, the tool, the API)."""
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    access = SourceAccess(BOX, **FAST)
    task_id = uuid.uuid4()
    await access.sync(app_conn, queries, tenant_id=tenant.id, instance_id=source_id,
                      trigger="api", task_id=task_id)
    jira.token = "rotated"  # the stored token is refused from now on
    with pytest.raises(SourceError, match="refused the credentials"):
        await access.sync(app_conn, queries, tenant_id=tenant.id, instance_id=source_id,
                          trigger="tool")
    failed, ok = await _runs(app_conn, queries, tenant.id, instance_id=source_id)
    assert (ok["trigger"], ok["status"], ok["task_id"]) == ("api", "ok", task_id)
    assert (failed["trigger"], failed["status"]) == ("tool", "failed")
    assert "refused the credentials" in failed["error"]
    with pytest.raises(ValueError, match="unknown sync trigger"):
        await access.sync(app_conn, queries, tenant_id=tenant.id, instance_id=source_id,
                          trigger="webhook")


async def test_a_cancelled_run_is_recorded_as_cancelled(jira, make_tenant, admin_conn,
                                                       app_conn, queries) -> None:
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)

    def stop_after_first(progress) -> None:
        if progress.pages == 1:
            sync.cancel()

    sync = asyncio.create_task(manage.run_sync(admin_conn, queries, BOX, source_id,
                                               page_size=10, on_page=stop_after_first, **FAST))
    with pytest.raises(asyncio.CancelledError):
        await sync
    [run] = await _runs(app_conn, queries, tenant.id)
    assert (run["status"], run["pages"], run["items"], run["error"]) == ("cancelled", 1, 10, None)
    assert run["finished_at"] is not None
    # The lock was let go: the next sync runs, from the page the cancelled one committed.
    assert (await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)).changed == 15


async def test_a_run_left_by_a_dead_process_reads_as_failed_and_is_stored_so_by_the_next(
        jira, make_tenant, admin_conn, app_conn, queries, database_urls) -> None:
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    # A process that took the lock, began its run, and died (its session ended).
    dying = await asyncpg.connect(database_urls.runtime)
    try:
        assert await dying.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
        async with dying.transaction():
            await queries.set_tenant(dying, tenant_id=str(tenant.id))
            run_id = await queries.sync_run_start(dying, tenant_id=tenant.id,
                                                  instance_id=source_id, kind="sync",
                                                  trigger="schedule", task_id=None)
        [alive] = await _runs(app_conn, queries, tenant.id)
        assert (alive["status"], alive["error"], alive["finished_at"]) == ("running", None, None)
        assert await _runs(app_conn, queries, tenant.id, status="failed") == []
        # Its lock is what shows it alive: a second sync is refused meanwhile.
        with pytest.raises(SyncBusy):
            await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    finally:
        dying.terminate()
    # Its backend ends (and lets the lock go) a moment after the socket closes.
    for _ in range(100):
        if dead_runs := await _runs(app_conn, queries, tenant.id, status="failed"):
            break
        await asyncio.sleep(0.05)
    [dead] = dead_runs
    assert (dead["run_id"], dead["error"]) == (run_id, ABANDONED)
    assert dead["finished_at"] is not None
    assert await _runs(app_conn, queries, tenant.id, status="running") == []
    await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    async with admin_conn.transaction():
        await queries.set_tenant(admin_conn, tenant_id=str(tenant.id))
        stored = await admin_conn.fetchrow("SELECT status, error FROM sync_runs "
                                           "WHERE run_id = $1", run_id)
    assert tuple(stored) == ("failed", ABANDONED)


async def test_keyset_pages_walk_the_history_newest_first(jira, make_tenant, admin_conn,
                                                         app_conn, queries) -> None:
    tenant = await make_tenant()
    source_id = await _add(admin_conn, queries, tenant.id, jira)
    for _ in range(3):
        await manage.run_sync(admin_conn, queries, BOX, source_id, **FAST)
    everything = await _runs(app_conn, queries, tenant.id)
    first = await _runs(app_conn, queries, tenant.id, row_limit=2)
    last = first[-1]
    rest = await _runs(app_conn, queries, tenant.id, before_started=last["started_at"],
                       before_run=last["run_id"])
    assert [r["run_id"] for r in first + rest] == [r["run_id"] for r in everything]
    assert len(everything) == 3


def test_a_failure_line_is_one_line_and_says_nothing_of_an_unexpected_error() -> None:
    assert failure_line(SourceError("server", "Jira answered\n500")) == "Jira answered 500"
    assert failure_line(KeyError("token=abc")) == "internal error (KeyError); see the server log"
    assert len(failure_line(SourceError("server", "x" * 5000))) == 1000

