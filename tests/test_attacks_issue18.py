"""Issue #18's new boundaries attacked as a hostile tenant, or a hostile key holder inside one,
would: over real HTTP against real PostgreSQL (and Redis where the rate limiter needs it).

Each test is an attack; those that once broke a boundary name the fix in their docstring, the
others keep a boundary that held and that no other suite pins down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from spiral_mcp import admin
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import DISPATCHER
from tests.conftest import Tenant, TenantFactory, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients
from tests.test_source_sync_server import (
    SECRET_KEY,
    eventually,
    jira,  # noqa: F401  (a fixture)
    scalar,
)
from tests.test_stdio import (
    INITIALIZED,
    PRODUCT,
    Process,
    environment,  # noqa: F401  (a fixture)
    initialize,
)
from tests.test_tasks import MODERN, call, headers_for, rpc, terminal, until
from tests.test_tasks_product import held_sync
from tests.test_transports import (
    headers,
    modern_request,
    open_session,
    post_modern,
    read_event,
)


@pytest.fixture
async def product(database_urls: DatabaseUrls) -> AsyncIterator[TestClient]:
    """The product as shipped, its task heartbeat every half second (TASK_LEASE 1.5 s)."""
    async with app_clients() as start:
        settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0",
                                 TASK_POLL_INTERVAL="0.25", TASK_LEASE="1.5")
        yield await start(create_app(settings, database_url=database_urls.runtime,
                                     explorer_url=database_urls.explorer))


async def test_a_task_stops_when_its_key_is_revoked(
        jira: FakeJira, make_tenant: TenantFactory,  # noqa: F811
        admin_conn, app_conn, product: TestClient, queries) -> None:
    """Broke: a sources_sync started as a task went on writing the tenant's items with the
    rights of a key revoked meanwhile (no request of that key would any longer be served).
    Fixed: the task heartbeat checks the key, and stops the task as failed."""
    tenant, _, task_id = await held_sync(jira, make_tenant, admin_conn, product, queries)
    count = "SELECT count(*) FROM work_items"

    async def two_pages() -> bool:
        return await scalar(app_conn, tenant.id, count) == 199

    await eventually(two_pages)
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    status = "SELECT status FROM tasks WHERE task_id = $1"

    async def stopped() -> bool:
        return await scalar(app_conn, tenant.id, status, uuid.UUID(task_id)) != "working"

    await eventually(stopped, timeout=5)
    jira.watch.release.set()  # type: ignore[attr-defined]
    assert await scalar(app_conn, tenant.id, status, uuid.UUID(task_id)) == "failed"
    message = await scalar(app_conn, tenant.id,
                           "SELECT error->>'message' FROM tasks WHERE task_id = $1",
                           uuid.UUID(task_id))
    assert "revoked" in message
    # Nothing of the held page was written with the revoked key's rights.
    assert await scalar(app_conn, tenant.id, count) == 199


async def _read(client: TestClient, tenant: Tenant, uri: str) -> dict[str, Any]:
    response = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
    return await response.json()


@pytest.mark.redis
async def test_an_explorer_view_read_draws_on_the_query_budget(
        aiohttp_client, database_urls: DatabaseUrls, make_tenant: TenantFactory,
        redis_url: str) -> None:
    """Broke: reading spiral://explorer/views/{view} (the explorer's counts and sample values,
    explorer_describe_table's work) spent the read budget, so RATE_LIMIT_QUERY did not bound
    it. Fixed: a resource names its call class; the views draw on the query budget."""
    settings = make_settings(database_urls, REDIS_URL=redis_url, RATE_LIMIT_WINDOW="3600",
                             RATE_LIMIT_QUERY="2", RATE_LIMIT_READ="100")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime,
                                             explorer_url=database_urls.explorer))
    tenant = await make_tenant(demo=True)
    uri = "spiral://explorer/views/work_items"
    answers = [await _read(client, tenant, uri) for _ in range(3)]
    assert ["result" in a for a in answers] == [True, True, False], answers
    assert "rate limit for query calls" in answers[2]["error"]["message"]
    # The read budget is untouched by them: the JQL reference still reads.
    assert "result" in await _read(client, tenant, "spiral://reference/jql")


@pytest.mark.parametrize(("header", "first", "second"), [
    ("Mcp-Name", "jira_search", "jira_create_issue"),
    ("Mcp-Method", "tools/call", "tools/list"),
    ("MCP-Protocol-Version", MODERN, "2025-11-25"),
])
async def test_a_header_sent_twice_with_different_values_is_refused(
        client: TestClient, make_tenant: TenantFactory, header: str, first: str,
        second: str) -> None:
    """Broke: the server checked the first of two Mcp-Name (or Mcp-Method, or version) headers
    against the body while a gateway may route or limit on the last, or on both joined: a call
    of jira_search let through by a rule about jira_create_issue, or the reverse. Fixed: an
    Mcp-* header repeated with different values is HeaderMismatch (-32020, HTTP 400)."""
    tenant = await make_tenant(demo=True)
    headers = CIMultiDict(headers_for(tenant, "tools/call", "jira_search"))
    headers[header] = first
    headers.add(header, second)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "jira_search", "arguments": {"jql": "project = DEMO"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    response = await client.post("/mcp", json=body, headers=headers)
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == -32020
    assert "sent more than once" in answer["error"]["message"]
    # The same header twice with one value is one value: both sides read the same.
    headers[header] = first
    headers.add(header, first)
    response = await client.post("/mcp", json=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_an_explorer_query_as_a_task_keeps_its_share_and_its_timeout(
        database_urls: DatabaseUrls, make_tenant: TenantFactory) -> None:
    """Held: a task outlives the HTTP request that started it, but the explorer query it runs
    keeps the tenant's place in the explorer share until it ends (another of the tenant's
    explorer calls is RATE_LIMITED meanwhile, another tenant's is served), and the explorer's
    statement timeout ends it."""
    async with app_clients() as start:
        settings = make_settings(database_urls, TASK_POLL_INTERVAL="0.25",
                                 EXPLORER_MAX_PER_TENANT="1", EXPLORER_TIMEOUT_S="1.5")
        client = await start(create_app(settings, database_url=database_urls.runtime,
                                        explorer_url=database_urls.explorer))
        tenant, other = await make_tenant(demo=True), await make_tenant(demo=True)
        started = time.monotonic()
        task = await call(client, tenant, "explorer_query",
                          sql="SELECT count(*) FROM work_items a, work_items b, "
                               "work_items c, work_items d, work_items e, work_items f")
        assert task["resultType"] == "task"
        inline = {"sql": "SELECT 1 AS one"}
        held = await rpc(client, tenant, "tools/call", capabilities={}, name="explorer_query",
                         arguments=inline)
        assert held["result"]["structuredContent"]["error"]["code"] == "RATE_LIMITED", held
        served = await rpc(client, other, "tools/call", capabilities={}, name="explorer_query",
                           arguments=inline)
        assert served["result"]["structuredContent"]["data"]["rows"] == [[1]]
        done = await until(client, tenant, task["taskId"], terminal, timeout=10)
        assert time.monotonic() - started < 8
        envelope = done["result"]["structuredContent"]
        assert envelope["error"]["code"] == "QUERY_TIMEOUT", done
        # Its place is given back with its end.
        again = await rpc(client, tenant, "tools/call", capabilities={}, name="explorer_query",
                          arguments=inline)
        assert again["result"]["structuredContent"]["data"]["rows"] == [[1]]


async def test_a_key_keeps_at_most_task_max_per_key_tasks(
        database_urls: DatabaseUrls, make_tenant: TenantFactory) -> None:
    """Broke: every explorer query a key ran as a task kept its result (up to 1 MiB) in
    PostgreSQL for TASK_TTL, so one key within its query budget (100 a minute) could pile up
    gigabytes an hour in the database every tenant shares. Fixed: a key keeps at most
    TASK_MAX_PER_KEY live tasks; past that a call answers inline, keeping nothing."""
    async with app_clients() as start:
        settings = make_settings(database_urls, TASK_POLL_INTERVAL="0.25", TASK_MAX_PER_KEY="2")
        client = await start(create_app(settings, database_url=database_urls.runtime,
                                        explorer_url=database_urls.explorer))
        tenant, other = await make_tenant(demo=True), await make_tenant(demo=True)
        sql = "SELECT count(*) AS n FROM work_items"
        tasks = [await call(client, tenant, "explorer_query", sql=sql) for _ in range(2)]
        assert [t["resultType"] for t in tasks] == ["task", "task"]
        for task in tasks:
            assert (await until(client, tenant, task["taskId"], terminal))["status"] == \
                "completed"
        # Finished tasks count: their results are what is kept.
        inline = await call(client, tenant, "explorer_query", sql=sql)
        assert "resultType" not in inline or inline["resultType"] == "complete", inline
        assert inline["structuredContent"]["data"]["rows"] == [[60]]
        # Another tenant's key has its own.
        assert (await call(client, other, "explorer_query", sql=sql))["resultType"] == "task"


async def test_the_stdio_key_never_reaches_the_log(
        environment, make_tenant: TenantFactory, admin_conn, queries) -> None:  # noqa: F811
    """Held: spiral-mcp stdio at debug level, through calls that succeed, fail and are refused,
    and its key's revocation, never writes its key to stderr (the log a client such as Claude
    Desktop keeps on disk)."""
    tenant = await make_tenant(demo=True)
    proc = await Process.start(PRODUCT, environment(tenant, LOG_LEVEL="debug"))
    await proc.send(initialize(), INITIALIZED)
    assert "result" in await proc.answer(1)
    calls = [("jira_get_issue", {"issue_key": "WEB-1"}),
             ("jira_get_issue", {"issue_key": "not a key"}),
             ("no_such_tool", {}),
             ("explorer_query", {"sql": "SELECT secret FROM nowhere"})]
    for n, (name, arguments) in enumerate(calls, start=2):
        await proc.send({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}})
        await proc.answer(n)
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    await proc.send({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}})
    code, _, stderr = await proc.finish()
    assert code == 1 and "no longer accepted (revoked or expired)" in stderr, stderr
    secret = tenant.key.removeprefix("spk_")
    for part in (tenant.key, secret[:24], secret[-24:]):
        assert part not in stderr


async def test_a_listen_stream_hears_nothing_its_scopes_do_not_reach(
        client: TestClient, make_tenant: TenantFactory) -> None:
    """Held: a read-only key's listen stream is not subscribed to an explorer view (it may not
    read one; the acknowledgment leaves it out) and does not hear that the query tools
    changed; a key with the query scope gets both."""
    reader = await make_tenant(scopes=("read",))
    querier = await make_tenant(scopes=("read", "query"))
    view = "spiral://explorer/views/work_items"
    wanted = {"toolsListChanged": True,
              "resourceSubscriptions": [view, "spiral://reference/jql"]}
    streams = [await post_modern(client, t, modern_request(
        "subscriptions/listen", "sub", notifications=wanted)) for t in (reader, querier)]
    acks = [orjson.loads((await read_event(s, 5))["data"]) for s in streams]
    assert acks[0]["params"]["notifications"] == {
        "toolsListChanged": True, "resourceSubscriptions": ["spiral://reference/jql"]}
    assert acks[1]["params"]["notifications"]["resourceSubscriptions"] == sorted(
        [view, "spiral://reference/jql"])
    client.server.app[DISPATCHER].changes.tools_changed("query")
    heard = orjson.loads((await read_event(streams[1], 5))["data"])
    assert heard["method"] == "notifications/tools/list_changed"
    with pytest.raises(TimeoutError):
        await read_event(streams[0], 0.6)
    for stream in streams:
        stream.close()


async def test_a_session_hears_no_list_change_of_a_scope_its_key_lacks(
        client: TestClient, make_tenant: TenantFactory) -> None:
    """Broke: a session's GET stream heard every tool list change, also of tools its key may
    not see (a read-only key heard the query tools change), where listen streams heard only
    their scopes'. Fixed: a session keeps its key's scopes, and the hub checks them for both."""
    reader = await make_tenant(scopes=("read",))
    querier = await make_tenant(scopes=("read", "query"))
    streams = []
    for tenant in (reader, querier):
        sid = await open_session(client, tenant)
        stream = await client.get("/mcp", headers=headers(
            tenant, sid=sid, accept="text/event-stream", **{"MCP-Protocol-Version": "2025-11-25"}))
        assert stream.status == 200
        streams.append(stream)
    await asyncio.sleep(0.1)  # the streams are open once their handlers run
    client.server.app[DISPATCHER].changes.tools_changed("query")
    heard = orjson.loads((await read_event(streams[1], 5))["data"])
    assert heard["method"] == "notifications/tools/list_changed"
    with pytest.raises(TimeoutError):
        await read_event(streams[0], 0.6)
    # A change of a scope both hold reaches both.
    client.server.app[DISPATCHER].changes.tools_changed("read")
    for stream in streams:
        assert orjson.loads((await read_event(stream, 5))["data"])["method"] == \
            "notifications/tools/list_changed"
        stream.close()
