"""The product's long calls as tasks (io.modelcontextprotocol/tasks), over real HTTP: sources_sync
against the fake Jira (its progress read through tasks/get, a cancel that stops it and leaves the
store as whole pages), an explorer query and a report."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.sources.sync import lock_key
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients
from tests.test_source_sync_server import (
    SECRET_KEY,
    add_source,
    backfill,
    eventually,
    jira,  # noqa: F401  (a fixture)
    scalar,
)
from tests.test_tasks import call, get, rpc, terminal, until, without_meta


@pytest.fixture
async def client(database_urls: DatabaseUrls) -> AsyncIterator[TestClient]:
    """The product as shipped (its tools and report templates), able to open sources."""
    async with app_clients() as start:
        settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0",
                                 TASK_POLL_INTERVAL="0.25")
        yield await start(create_app(settings, database_url=database_urls.runtime,
                                     explorer_url=database_urls.explorer))


async def held_sync(jira: FakeJira, make_tenant: TenantFactory,  # noqa: F811
                    admin_conn, client: TestClient, queries) -> tuple[Tenant, uuid.UUID, str]:
    """A sync of 250 issues started as a task, whose third page waits at the source until
    released: the tenant, the source and the task's id."""
    backfill(jira, 250)
    jira.watch.hold_search = 3  # type: ignore[attr-defined]
    tenant = await make_tenant()
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    created = await call(client, tenant, "sources_sync", source_id=str(source_id))
    assert created["resultType"] == "task" and created["status"] == "working"
    return tenant, source_id, created["taskId"]


async def test_a_sync_runs_as_a_task_with_its_progress_in_tasks_get(
        jira: FakeJira, make_tenant: TenantFactory,  # noqa: F811
        admin_conn, app_conn, client: TestClient, queries) -> None:
    tenant, _, task_id = await held_sync(jira, make_tenant, admin_conn, client, queries)
    # Page 3 waits at the source: pages 1 and 2 are done, and tasks/get says so.
    midway = await until(client, tenant, task_id, lambda t: t.get("_meta", {}).get(
        "spiral-mcp/progress", {}).get("progress") == 2)
    assert midway["status"] == "working"
    assert midway["statusMessage"].startswith("pages 2, items 199 (199 new or changed)")
    jira.watch.release.set()  # type: ignore[attr-defined]
    done = await until(client, tenant, task_id, terminal)
    assert done["status"] == "completed", done
    data = done["result"]["structuredContent"]["data"]
    assert (data["pages"], data["items"], data["changed"]) == (3, 250, 250)
    assert done["statusMessage"].startswith("pages 3, items 250 (250 new or changed)")
    assert await scalar(app_conn, tenant.id, "SELECT count(*) FROM work_items") == 250


async def test_cancelling_a_sync_stops_it_and_leaves_whole_pages_to_resume_from(
        jira: FakeJira, make_tenant: TenantFactory,  # noqa: F811
        admin_conn, app_conn, client: TestClient, queries) -> None:
    tenant, source_id, task_id = await held_sync(jira, make_tenant, admin_conn, client,
                                                 queries)
    count = "SELECT count(*) FROM work_items"

    async def two_pages() -> bool:
        # Page 2 is searched from the minute of page 1's last issue, which it skips.
        return await scalar(app_conn, tenant.id, count) == 199

    await eventually(two_pages)
    started = time.monotonic()
    ack = await rpc(client, tenant, "tasks/cancel", taskId=task_id)
    assert without_meta(ack["result"]) == {"resultType": "complete"}
    cancelled = await until(client, tenant, task_id, terminal, timeout=5)
    assert cancelled["status"] == "cancelled" and time.monotonic() - started < 5
    assert "result" not in cancelled and "error" not in cancelled
    # The pages written stay, each with the cursor it moved; nothing of page 3 was written.
    assert await scalar(app_conn, tenant.id, count) == 199
    cursor = await scalar(app_conn, tenant.id, "SELECT sync_cursor::text FROM source_instances")
    assert orjson.loads(cursor)["updated"] is not None
    # The sync's session let go of the instance's lock: the next sync runs, from the cursor.
    assert await app_conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(source_id))
    await app_conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(source_id))
    jira.watch.release.set()  # type: ignore[attr-defined]
    again = await rpc(client, tenant, "tools/call", capabilities={}, name="sources_sync",
                      arguments={"source_id": str(source_id)})
    data = again["result"]["structuredContent"]["data"]
    assert data["items"] < 250
    assert await scalar(app_conn, tenant.id, count) == 250


async def test_another_key_cannot_cancel_a_sync(
        jira: FakeJira, make_tenant: TenantFactory,  # noqa: F811
        admin_conn, client: TestClient, queries) -> None:
    backfill(jira, 150)
    jira.watch.hold_search = 2  # type: ignore[attr-defined]
    owner, stranger = await make_tenant(), await make_tenant()
    source_id = await add_source(admin_conn, queries, owner.id, jira)
    task_id = (await call(client, owner, "sources_sync", source_id=str(source_id)))["taskId"]
    await until(client, owner, task_id, lambda t: "spiral-mcp/progress" in t["_meta"])
    refused = await rpc(client, stranger, "tasks/cancel", taskId=task_id)
    assert refused["error"]["code"] == -32602
    jira.watch.release.set()  # type: ignore[attr-defined]
    assert (await until(client, owner, task_id, terminal))["status"] == "completed"


async def test_an_explorer_query_and_a_report_run_as_tasks(
        make_tenant: TenantFactory, client: TestClient) -> None:
    tenant = await make_tenant(demo=True)
    query = await call(client, tenant, "explorer_query",
                       sql="SELECT count(*) AS n FROM work_items")
    assert query["resultType"] == "task"
    done = await until(client, tenant, query["taskId"], terminal)
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"]["data"]["rows"] == [[60]]
    report = await call(client, tenant, "sql_lead_time_metrics")
    assert report["resultType"] == "task"
    finished = await until(client, tenant, report["taskId"], terminal)
    assert finished["result"]["structuredContent"]["success"] is True
    # A client that does not declare the extension gets the same call answered inline.
    inline = await rpc(client, tenant, "tools/call", capabilities={}, name="explorer_query",
                       arguments={"sql": "SELECT 1 AS one"})
    assert inline["result"]["structuredContent"]["data"]["rows"] == [[1]]
    # The task lives under the key's tenant: the explorer's tenant came with the call.
    uuid.UUID(query["taskId"])
    assert (await get(client, tenant, query["taskId"]))["taskId"] == query["taskId"]
