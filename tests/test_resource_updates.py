"""The shipped resources announce their changes (issue 18): a committed write or a source sync
tells the subscribers of the views and the JQL reference that show what it changed, in its own
tenant only, once per URI per sync run, and never for a write that rolled back. Over real HTTP,
on a 2026-07-28 subscriptions/listen stream and on a session's GET stream, against real
PostgreSQL and the fake Jira."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from spiral_mcp import admin
from spiral_mcp.queries import Queries
from tests import test_source_sync_server as sync_server
from tests.conftest import Tenant, TenantFactory
from tests.fake_jira import FakeJira
from tests.test_modern_era import listen, next_message, nothing_arrives
from tests.test_source_sync_server import T0, Serve, add_source, backfill
from tests.test_transports import headers, modern_request, open_session, post, post_modern, request

WORK_ITEMS = "spiral://explorer/views/work_items"
PROJECTS = "spiral://explorer/views/projects"
COMMENTS = "spiral://explorer/views/comments"
AUDIT_LOG = "spiral://explorer/views/audit_log"
JQL = "spiral://reference/jql"
UPDATED = "notifications/resources/updated"

# Its fixtures: the fake Jira, and the product as shipped (its resources, the explorer on) able
# to open sources.
jira, serve = sync_server.jira, sync_server.serve


@pytest.fixture
async def client(serve: Serve) -> TestClient:
    return await serve()


async def subscribed(client: TestClient, tenant: Tenant, *uris: str) -> ClientResponse:
    """A listen stream of ``tenant``'s subscribed to ``uris``, its acknowledgment read."""
    stream = await listen(client, tenant, {"resourceSubscriptions": list(uris)})
    ack = await next_message(stream)
    assert ack["params"]["notifications"] == {"resourceSubscriptions": sorted(uris)}
    return stream


async def updates(stream: ClientResponse, seconds: float = 1.0) -> Counter[str]:
    """How often each URI was announced on ``stream`` until it stays quiet for ``seconds``."""
    heard: Counter[str] = Counter()
    while True:
        try:
            message = await next_message(stream, seconds)
        except TimeoutError:
            return heard
        assert message["method"] == UPDATED, message
        heard[message["params"]["uri"]] += 1


async def call(client: TestClient, tenant: Tenant, name: str, **arguments: Any) -> dict[str, Any]:
    body = modern_request("tools/call", 7, name=name, arguments=arguments)
    answer = await (await post_modern(client, tenant, body)).json()
    return answer["result"]["structuredContent"]


async def second_key(admin_conn: asyncpg.Connection, queries: Queries, tenant: Tenant,
                     scopes: list[str]) -> Tenant:
    async with admin_conn.transaction():
        key_id, secret = await admin.create_api_key(admin_conn, queries, tenant_id=tenant.id,
                                                    name="second", scopes=scopes,
                                                    user="second@example.com")
    return Tenant(tenant.id, secret, key_id)


# -- writes ------------------------------------------------------------------------------------

async def test_a_write_is_announced_to_its_tenant_only(
        client: TestClient, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        queries: Queries) -> None:
    tenant, other = await make_tenant(demo=True), await make_tenant(demo=True, name="other")
    mine = await subscribed(client, tenant, WORK_ITEMS, AUDIT_LOG, COMMENTS, JQL)
    theirs = await subscribed(client, other, WORK_ITEMS)

    created = await call(client, tenant, "jira_create_issue", project_key="WEB", summary="New")
    assert created["success"], created
    # The item's view and the audit row's, once each; not the comments nor the JQL reference.
    assert await updates(mine) == {WORK_ITEMS: 1, AUDIT_LOG: 1}
    await nothing_arrives(theirs)  # the same view of another tenant is another resource

    # Another key of the same tenant (one that may not even read the views) writes its data.
    writer = await second_key(admin_conn, queries, tenant, ["read", "write"])
    key = created["data"]["key"]
    commented = await call(client, writer, "jira_add_comment", issue_key=key, body="Seen.")
    assert commented["success"], commented
    assert await updates(mine) == {WORK_ITEMS: 1, COMMENTS: 1, AUDIT_LOG: 1}

    # The other tenant's write reaches the other tenant alone.
    assert (await call(client, other, "jira_create_issue", project_key="WEB",
                       summary="Theirs"))["success"]
    assert (await next_message(theirs))["params"]["uri"] == WORK_ITEMS
    await nothing_arrives(mine)
    mine.close()
    theirs.close()


async def test_a_failed_or_replayed_write_announces_nothing(client: TestClient,
                                                           make_tenant: TenantFactory) -> None:
    tenant = await make_tenant(demo=True)
    stream = await subscribed(client, tenant, WORK_ITEMS, AUDIT_LOG)
    # Refused inside its transaction (the version moved on): rolled back, nothing changed.
    stale = await call(client, tenant, "jira_update_issue", issue_key="WEB-1",
                       fields={"summary": "Stale"}, expected_version=999)
    assert not stale["success"] and stale["error"]["code"] == "CONFLICT", stale
    # A link to an item that does not exist: refused, rolled back.
    missing = await call(client, tenant, "jira_link_issues", outward_issue_key="WEB-1",
                         inward_issue_key="WEB-999", link_type="blocks")
    assert not missing["success"], missing
    await nothing_arrives(stream)

    first = await call(client, tenant, "jira_create_issue", project_key="WEB", summary="Once",
                       idempotency_key="create-once")
    assert first["success"]
    assert await updates(stream) == {WORK_ITEMS: 1, AUDIT_LOG: 1}
    replayed = await call(client, tenant, "jira_create_issue", project_key="WEB",
                          summary="Once", idempotency_key="create-once")
    assert replayed["replayed"] is True
    await nothing_arrives(stream)  # the stored answer of a write already announced
    stream.close()


async def test_a_session_subscriber_hears_a_write_on_its_get_stream(
        client: TestClient, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant(demo=True)
    sid = await open_session(client, tenant)
    subscribe = request("resources/subscribe", 1, uri=WORK_ITEMS)
    assert (await (await post(client, tenant, subscribe, sid=sid)).json())["result"] == {}
    stream = await client.get("/mcp", headers=headers(tenant, sid=sid, accept="text/event-stream",
                                                      **{"MCP-Protocol-Version": "2025-11-25"}))
    assert stream.status == 200
    await asyncio.sleep(0.1)  # the stream is open once its handler runs
    create = request("tools/call", 2, name="jira_create_issue",
                     arguments={"project_key": "WEB", "summary": "Heard"})
    answer = await (await post(client, tenant, create, sid=sid)).json()
    assert answer["result"]["structuredContent"]["success"], answer
    assert await next_message(stream) == {"jsonrpc": "2.0", "method": UPDATED,
                                          "params": {"uri": WORK_ITEMS}}
    await nothing_arrives(stream)  # once, though the write touched several tables
    stream.close()


# -- syncs -------------------------------------------------------------------------------------

async def test_a_sync_announces_each_resource_once_per_run(
        jira: FakeJira, client: TestClient, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    backfill(jira, 250)  # three pages
    tenant, other = await make_tenant(), await make_tenant(name="other")
    source_id = await add_source(admin_conn, queries, tenant.id, jira)
    mine = await subscribed(client, tenant, WORK_ITEMS, PROJECTS, JQL, AUDIT_LOG)
    theirs = await subscribed(client, other, WORK_ITEMS, PROJECTS, JQL)

    synced = await call(client, tenant, "sources_sync", source_id=str(source_id))
    assert synced["success"] and synced["data"]["changed"] == 250, synced
    # The items, once for the three pages; the new project LOC and its workflow, once.
    assert await updates(mine) == {WORK_ITEMS: 1, PROJECTS: 1, JQL: 1}
    await nothing_arrives(theirs)

    # Nothing new at the source: nothing changed, nothing announced.
    again = await call(client, tenant, "sources_sync", source_id=str(source_id))
    assert again["success"] and again["data"]["changed"] == 0, again
    await nothing_arrives(mine)

    # One item changed there: its view alone (the project and the workflow are as they were).
    jira.update_issue("ABC-7", at=T0 + timedelta(hours=1), status="In Progress")
    changed = await call(client, tenant, "sources_sync", source_id=str(source_id))
    assert changed["data"]["changed"] == 1, changed
    assert await updates(mine) == {WORK_ITEMS: 1}
    mine.close()
    theirs.close()


async def test_the_background_sync_announces_what_it_changed(
        jira: FakeJira, serve: Serve, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    backfill(jira, 30)
    client = await serve(SYNC_INTERVAL="0.2")
    tenant = await make_tenant()
    stream = await subscribed(client, tenant, WORK_ITEMS, JQL)
    # Added once the stream listens: the scheduler finds it at its next look.
    await add_source(admin_conn, queries, tenant.id, jira)
    first = await next_message(stream, timeout=15.0)
    heard = await updates(stream, seconds=1.5)
    heard[first["params"]["uri"]] += 1
    # One run changed the items, the project and its statuses; the runs after it, nothing.
    assert heard == {WORK_ITEMS: 1, JQL: 1}
    stream.close()
