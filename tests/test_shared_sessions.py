"""Sessions shared through Redis: two server processes (two apps, each on its own real socket,
sharing the test database and a Redis of this module's own) serve one session's requests in
turn, as a load balancer without stickiness would send them.

The module starts its own ``redis-server`` on a free port (the machine's Redis is shared with
other test runs, and the outage test stops this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory, make_settings
from faults import OwnRedis
from serving import app_clients
from test_transports import (
    Slow,
    error_of,
    headers,
    open_session,
    post,
    read_event,
    request,
)

from spiral_mcp import admin
from spiral_mcp.handlers import Tool, builtin_tools
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import DISPATCHER

_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
STREAM = "text/event-stream"


@pytest.fixture
async def redis_client(module_redis: OwnRedis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(module_redis.url)
    await client.flushall()  # each test starts with no session of another
    yield client
    await client.aclose()


class Chatty:
    """Test tools: one logs a message, one asks the client (elicitation)."""

    async def log(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.log("info", "hello from the call")
        return {}

    async def ask(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        answer = await ctx.ask("elicitation/create", {
            "message": "name?", "requestedSchema": {
                "type": "object", "properties": {"name": {"type": "string"}}}})
        return {"answer": answer}

    def tools(self) -> list[Tool]:
        return [Tool(name=f"test_{name}", title=name, description="test only",
                     handler=getattr(self, name), scope="read", call_class="read",
                     input_schema=_OBJECT, output_schema={"type": "object"})
                for name in ("log", "ask")]


Pair = Callable[..., Awaitable[tuple[TestClient, TestClient]]]


@pytest.fixture
async def pair(database_urls: DatabaseUrls, module_redis: OwnRedis,
               redis_client: redis.Redis) -> AsyncIterator[Pair]:
    """``await pair(slow=..., **env)``: two processes' apps sharing the database and Redis."""
    async with app_clients() as start_client:
        async def start(slow: Slow | None = None, **env: str) -> tuple[TestClient, TestClient]:
            tools = [*builtin_tools(), *Chatty().tools(), *([slow.tool()] if slow else [])]
            settings = make_settings(database_urls, REDIS_URL=module_redis.url, **env)
            return tuple([await start_client(create_app(  # type: ignore[return-value]
                settings, database_url=database_urls.runtime, tools=tools))
                for _ in range(2)])

        yield start


def call(rid: Any, name: str, **arguments: Any) -> dict[str, Any]:
    return request("tools/call", rid, name=name, arguments=arguments)


async def stream_of(client: TestClient, tenant: Tenant, sid: str,
                    **extra: str) -> ClientResponse:
    return await client.get("/mcp", headers=headers(tenant, sid=sid, accept=STREAM, **extra))


def order(event_id: str) -> tuple[int, int]:
    """A Redis entry id (the SSE event id) as what orders it."""
    milliseconds, sequence = event_id.split("-")
    return int(milliseconds), int(sequence)


async def initialize_soon(client: TestClient, tenant: Tenant) -> ClientResponse:
    """An initialize retried until it succeeds (a stream's end, Redis's return, take a moment
    to be seen), or its last refusal after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        made = await post(client, tenant, request("initialize", 0, protocolVersion="2025-11-25"))
        if made.status == 200 or time.monotonic() > deadline:
            return made
        await asyncio.sleep(0.2)


async def next_message(stream: ClientResponse, timeout: float = 5.0) -> tuple[str, Any]:
    """The next message and its event id (a POST stream's priming event, no data, skipped)."""
    while not (event := await read_event(stream, timeout))["data"]:
        pass
    return event.get("id", ""), orjson.loads(event["data"])


# -- one session, two processes ------------------------------------------------------------


async def test_a_session_opened_on_one_process_is_served_by_the_other(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    answer = await post(b, tenant, call(1, "jira_get_issue", issue_key="WEB-1"), sid=sid)
    assert (await answer.json())["result"]["isError"] is False



async def test_the_handshake_is_shared(pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    made = await post(a, tenant, request("initialize", 0, protocolVersion="2025-06-18",
                                         capabilities={}))
    sid = made.headers["Mcp-Session-Id"]
    # The handshake done on A counts on B (B would answer "send initialize first").
    early = await post(b, tenant, request("tools/list", 1), sid=sid, version="2025-06-18")
    assert "tools" in (await early.json())["result"]
    await post(b, tenant, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid=sid,
               version="2025-06-18")
    listed = await post(a, tenant, request("tools/list", 2), sid=sid, version="2025-06-18")
    assert "tools" in (await listed.json())["result"]


async def test_level_set_on_one_process_and_a_log_of_a_call_on_the_other(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    stream = await stream_of(a, tenant, sid)
    assert stream.status == 200
    assert (await post(a, tenant, request("logging/setLevel", 1, level="info"),
                       sid=sid)).status == 200
    answer = await post(b, tenant, call(2, "test_log"), sid=sid)
    assert (await answer.json())["result"]["isError"] is False
    event_id, message = await next_message(stream)
    assert message["method"] == "notifications/message"
    assert message["params"]["data"] == "hello from the call"
    assert event_id.count("-") == 1  # a Redis entry id: resumable on any process
    stream.close()


async def test_one_stream_per_session_across_processes_and_resumption(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    first = await stream_of(a, tenant, sid)
    assert first.status == 200
    # Held on A: another plain GET, on B, is refused.
    assert (await stream_of(b, tenant, sid)).status == 409
    await post(a, tenant, request("logging/setLevel", 1, level="info"), sid=sid)
    for rid in (2, 3):
        await post(b, tenant, call(rid, "test_log"), sid=sid)
    one, _ = await next_message(first)
    two, _ = await next_message(first)
    # A GET with Last-Event-ID takes the stream over (its holder may have died), replaying what
    # came after that event; the old stream ends.
    resumed = await stream_of(b, tenant, sid, **{"Last-Event-ID": one})
    assert resumed.status == 200
    replayed, message = await next_message(resumed)
    assert replayed == two and message["method"] == "notifications/message"
    async with asyncio.timeout(10):
        while await first.content.readany():
            pass
    await post(a, tenant, call(4, "test_log"), sid=sid)
    three, _ = await next_message(resumed)
    assert order(three) > order(two)
    resumed.close()


async def test_a_malformed_last_event_id_is_refused(pair: Pair, tenant: Tenant) -> None:
    a, _ = await pair()
    sid = await open_session(a, tenant)
    for bad in ("12", "1-2-3", "x-1", "1" * 30 + "-0"):
        refused = await stream_of(a, tenant, sid, **{"Last-Event-ID": bad})
        assert "Last-Event-ID must be" in (await error_of(refused, 400))["message"]


async def test_legacy_stream_on_one_process_and_messages_to_the_other(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    stream = await a.get("/sse", headers={**tenant.headers, "Accept": STREAM})
    endpoint = (await read_event(stream))["data"]
    plain = {**tenant.headers, "Content-Type": "application/json"}
    accepted = await b.post(endpoint, data=orjson.dumps(request(
        "initialize", 1, protocolVersion="2024-11-05", capabilities={},
        clientInfo={"name": "t", "version": "1"})), headers=plain)
    assert accepted.status == 202
    _, answer = await next_message(stream)
    assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2024-11-05"
    await a.post(endpoint, data=orjson.dumps(
        {"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=plain)
    await b.post(endpoint, data=orjson.dumps(call(2, "jira_get_issue", issue_key="OPS-1")),
                 headers=plain)
    _, answer = await next_message(stream)
    assert answer["id"] == 2
    assert answer["result"]["structuredContent"]["data"]["key"] == "OPS-1"
    stream.close()
    # The legacy session ends with its stream, for every process.
    deadline = time.monotonic() + 5
    while True:
        gone = await b.post(endpoint, data=orjson.dumps(request("ping", 3)), headers=plain)
        if gone.status == 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert gone.status == 404


async def test_asked_on_one_process_answered_through_the_other(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=sid)
    assert running.headers["Content-Type"].startswith(STREAM)
    _, asked = await next_message(running)
    assert asked["method"] == "elicitation/create"
    # The client's answer reaches A, which passes it to B (the id names B).
    answered = await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                                      "result": {"action": "accept",
                                                 "content": {"name": "Ada"}}}, sid=sid)
    assert answered.status == 202
    _, final = await next_message(running)
    data = final["result"]["structuredContent"]["data"]
    assert data["answer"] == {"action": "accept", "content": {"name": "Ada"}}


async def test_an_answer_for_another_session_is_not_taken(pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant, capabilities={"elicitation": {}})
    other = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=sid)
    _, asked = await next_message(running)
    await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                           "result": {"action": "decline"}}, sid=other)
    with pytest.raises(TimeoutError):
        await next_message(running, timeout=1.0)
    await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                           "result": {"action": "accept", "content": {"name": "Bo"}}}, sid=sid)
    _, final = await next_message(running)
    assert final["result"]["structuredContent"]["data"]["answer"]["action"] == "accept"


async def test_cancel_on_one_process_of_a_call_on_the_other(pair: Pair, tenant: Tenant) -> None:
    slow = Slow()
    a, b = await pair(slow)
    sid = await open_session(a, tenant)
    running = asyncio.ensure_future(post(b, tenant, call(7, "test_slow"), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    cancel = await post(a, tenant, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                    "params": {"requestId": 7}}, sid=sid)
    assert cancel.status == 202
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    cancelled = await error_of(await asyncio.wait_for(running, 5), 200)
    assert "cancelled" in cancelled["message"]


async def test_a_session_with_a_call_running_does_not_expire(pair: Pair,
                                                              tenant: Tenant) -> None:
    slow = Slow()
    a, b = await pair(slow, SESSION_IDLE_TIMEOUT="1")
    sid = await open_session(a, tenant)
    running = asyncio.ensure_future(post(b, tenant, call(1, "test_slow"), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    await asyncio.sleep(1.5)
    assert (await post(a, tenant, request("ping", 2), sid=sid)).status == 200
    assert not slow.cancelled.is_set() and not running.done()
    running.cancel()


async def test_the_call_cap_of_a_session_holds_across_processes(
        pair: Pair, tenant: Tenant) -> None:
    slow = Slow()
    a, b = await pair(slow, SESSION_MAX_CONCURRENT_CALLS="1")
    sid = await open_session(a, tenant)
    running = asyncio.ensure_future(post(a, tenant, call(1, "test_slow"), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    refused = await post(b, tenant, call(2, "jira_get_issue", issue_key="WEB-1"), sid=sid)
    assert "too many calls" in (await refused.json())["error"]["message"]
    running.cancel()


async def test_a_call_refused_before_it_runs_gives_its_place_back(
        pair: Pair, tenant: Tenant) -> None:
    # The lookup claims a tool call's place; a request refused before the call runs (here, not
    # JSON-RPC 2.0) must not keep it.
    slow = Slow()
    a, b = await pair(slow, SESSION_MAX_CONCURRENT_CALLS="1")
    sid = await open_session(a, tenant)
    for client in (a, b):
        refused = await post(client, tenant, {**call(1, "test_slow"), "jsonrpc": "1.0"},
                             sid=sid)
        assert refused.status == 400
    running = asyncio.ensure_future(post(b, tenant, call(1, "test_slow"), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    running.cancel()


async def test_delete_on_one_process_ends_the_stream_and_calls_on_the_other(
        pair: Pair, tenant: Tenant) -> None:
    slow = Slow()
    a, b = await pair(slow)
    sid = await open_session(a, tenant)
    stream = await stream_of(a, tenant, sid)
    running = asyncio.ensure_future(post(a, tenant, call(1, "test_slow"), sid=sid))
    await asyncio.wait_for(slow.started.wait(), 5)
    assert (await b.delete("/mcp", headers=headers(tenant, sid=sid))).status == 204
    async with asyncio.timeout(10):
        while await stream.content.readany():
            pass
    ended = await error_of(await asyncio.wait_for(running, 5), 200)
    assert ended["message"] == "the session ended before the call finished"
    for client in (a, b):
        await error_of(await post(client, tenant, request("ping", 2), sid=sid), 404)


JQL = "spiral://reference/jql"


async def streaming_subscriber(a: TestClient, b: TestClient,
                               tenant: Tenant) -> tuple[str, ClientResponse]:
    """A session whose stream A holds, subscribed to ``JQL`` through B."""
    sid = await open_session(a, tenant)
    stream = await stream_of(a, tenant, sid)
    assert (await post(b, tenant, request("resources/subscribe", 1, uri=JQL),
                       sid=sid)).status == 200
    return sid, stream


async def test_changes_reach_a_stream_held_by_another_process(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    # Subscribed through B; the resource changes in B's process, the stream is A's.
    sid, stream = await streaming_subscriber(a, b, tenant)
    uri = JQL
    b.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
    _, message = await next_message(stream)
    assert message == {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                       "params": {"uri": uri}}
    b.app[DISPATCHER].changes.tools_changed("read")
    _, message = await next_message(stream)
    assert message["method"] == "notifications/tools/list_changed"
    # Unsubscribed through A: an update is no longer told (the list change after it is).
    await post(a, tenant, request("resources/unsubscribe", 2, uri=uri), sid=sid)
    b.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
    b.app[DISPATCHER].changes.prompts_changed("read")
    _, message = await next_message(stream)
    assert message["method"] == "notifications/prompts/list_changed"
    stream.close()


def subscribers(tenant: Tenant, uri: str) -> str:
    """The Redis index of ``tenant``'s sessions subscribed to ``uri`` (shared_scripts.py)."""
    return f"spiral:t:{tenant.id}:r:{hashlib.sha1(uri.encode(), usedforsecurity=False).hexdigest()}"


async def test_a_change_reaches_a_stream_once_whichever_process_makes_it(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    a, b = await pair()
    _, stream = await streaming_subscriber(a, b, tenant)
    uri = JQL
    assert len(await redis_client.smembers(subscribers(tenant, uri))) == 1
    # The holder makes one change, the other process the next: each is heard once (the holder
    # no longer posts what it hears relayed, nor what it makes itself besides the announcement).
    for maker in (a, b, a):
        maker.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
        maker.app[DISPATCHER].changes.prompts_changed("read")
        assert (await next_message(stream))[1]["method"] == "notifications/resources/updated"
        assert (await next_message(stream))[1]["method"] == "notifications/prompts/list_changed"
    # A key without the scope hears no list change of it.
    a.app[DISPATCHER].changes.tools_changed("no-such-scope")
    a.app[DISPATCHER].changes.tools_changed("read")
    assert (await next_message(stream))[1]["method"] == "notifications/tools/list_changed"
    stream.close()


async def test_a_subscriber_that_ended_is_pruned_from_the_index(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    uri = "spiral://reference/jql"
    await post(a, tenant, request("resources/subscribe", 1, uri=uri), sid=sid)
    index = subscribers(tenant, uri)
    assert await redis_client.pttl(index) > 0  # it expires with the sessions
    assert (await a.delete("/mcp", headers=headers(tenant, sid=sid))).status == 204
    b.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
    deadline = time.monotonic() + 5
    while await redis_client.exists(index) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await redis_client.exists(index)


async def test_a_uri_too_long_to_subscribe_is_refused(pair: Pair, tenant: Tenant,
                                                       redis_client: redis.Redis) -> None:
    a, _ = await pair()
    sid = await open_session(a, tenant)
    uri = "spiral://reference/" + "j" * 3000
    error = await error_of(await post(a, tenant, request("resources/subscribe", 1, uri=uri),
                                      sid=sid), 200)
    assert error["code"] == -32602
    assert "at most 2048 characters" in error["message"]
    assert not [k async for k in redis_client.scan_iter(f"spiral:t:{tenant.id}:r:*")]


# -- isolation -----------------------------------------------------------------------------


async def test_another_tenants_subscriber_of_the_same_uri_hears_nothing(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        redis_client: redis.Redis) -> None:
    a, b = await pair()
    stranger = await make_tenant(name="stranger")
    uri, other = "spiral://reference/jql", "spiral://explorer/views/work_items"
    mine, theirs = await open_session(a, tenant), await open_session(a, stranger)
    for who, sid, uris in ((tenant, mine, (uri,)), (stranger, theirs, (uri, other))):
        for n, subscribed in enumerate(uris):
            assert (await post(b, who, request("resources/subscribe", n, uri=subscribed),
                               sid=sid)).status == 200
    my_stream, their_stream = await stream_of(a, tenant, mine), await stream_of(a, stranger,
                                                                              theirs)
    b.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
    _, message = await next_message(my_stream)
    assert message["params"] == {"uri": uri}
    # The stranger's first message is its own tenant's later update: the other went by it.
    b.app[DISPATCHER].changes.resource_updated(stranger.id, other)
    _, message = await next_message(their_stream)
    assert message["params"] == {"uri": other}
    # Each tenant's index names its own sessions only, under its own namespace.
    assert await redis_client.smembers(subscribers(tenant, uri)) == {
        f"spiral:t:{tenant.id}:s:{mine}".encode()}
    assert await redis_client.smembers(subscribers(stranger, uri)) == {
        f"spiral:t:{stranger.id}:s:{theirs}".encode()}
    my_stream.close()
    their_stream.close()




async def _another_key(admin_conn: asyncpg.Connection, queries: Queries,
                       tenant: Tenant) -> Tenant:
    async with admin_conn.transaction():
        key_id, secret = await admin.create_api_key(
            admin_conn, queries, tenant_id=tenant.id, name="another key", scopes=["read"],
            user=None)
    return Tenant(tenant.id, secret, key_id)


async def test_another_key_or_tenant_cannot_address_the_session(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Queries,
        redis_client: redis.Redis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    stranger = await make_tenant(name="stranger")
    colleague = await _another_key(admin_conn, queries, tenant)
    for caller in (stranger, colleague):
        for client in (a, b):
            await error_of(await post(client, caller, request("ping", 1), sid=sid), 404)
            assert (await stream_of(client, caller, sid)).status == 404
            assert (await client.delete("/mcp", headers=headers(caller, sid=sid))).status == 404
    # Nothing of the session is named under the other tenant's keys in Redis.
    assert not [k async for k in redis_client.scan_iter(f"spiral:t:{stranger.id}:*")]
    assert (await post(b, tenant, request("ping", 2), sid=sid)).status == 200


# -- caps ----------------------------------------------------------------------------------


async def test_sessions_per_key_are_capped_across_processes(pair: Pair, tenant: Tenant) -> None:
    a, b = await pair(SESSION_MAX_PER_KEY="2")
    first = await open_session(a, tenant)
    second = await open_session(b, tenant)
    streams = [await stream_of(a, tenant, first), await stream_of(b, tenant, second)]
    # Both hold a stream: neither may be ended for a newcomer.
    refused = await post(b, tenant, request("initialize", 0, protocolVersion="2025-11-25"))
    assert (await error_of(refused, 429))["message"].startswith("this API key")
    for stream in streams:
        stream.close()
    # Once idle, the least recently used one gives way, whichever process opened it.
    assert (await initialize_soon(a, tenant)).status == 200
    await error_of(await post(b, tenant, request("ping", 1), sid=first), 404)
    assert (await post(a, tenant, request("ping", 1), sid=second)).status == 200


async def test_tenant_and_server_caps_hold_across_processes(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Queries) -> None:
    a, b = await pair(SESSION_MAX="3", SESSION_MAX_PER_TENANT="2")
    colleague = await _another_key(admin_conn, queries, tenant)
    third = await _another_key(admin_conn, queries, tenant)
    await open_session(a, tenant)
    await open_session(b, colleague)
    # Another key's idle sessions are never ended for a newcomer.
    refused = await post(b, third, request("initialize", 0, protocolVersion="2025-11-25"))
    assert (await error_of(refused, 429))["message"].startswith("this tenant")
    other = await make_tenant(name="neighbour")
    await open_session(a, other)
    refused = await post(b, await make_tenant(name="late"),
                         request("initialize", 0, protocolVersion="2025-11-25"))
    assert (await error_of(refused, 429))["message"].startswith("the server")


# -- Redis away ----------------------------------------------------------------------------


async def test_redis_away_is_a_503_and_recovery_is_automatic(
        pair: Pair, tenant: Tenant, module_redis: OwnRedis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    held = await stream_of(a, tenant, sid)
    assert held.status == 200
    module_redis.stop()
    try:
        # The open stream ends (its client may come back once Redis does).
        async with asyncio.timeout(10):
            while await held.content.readany():
                pass
        for client in (a, b):
            away = await post(client, tenant, request("ping", 1), sid=sid)
            assert away.status == 503 and away.headers["Retry-After"]
            error = (await away.json())["error"]
            assert "session store (Redis) is unreachable" in error["message"]
            made = await post(client, tenant, request("initialize", 0,
                                                      protocolVersion="2025-11-25"))
            assert made.status == 503
        # /execute needs no session, and works on.
        executed = await a.post("/execute", data=orjson.dumps(
            call(1, "jira_get_issue", issue_key="WEB-1")), headers=headers(tenant))
        assert executed.status == 200
    finally:
        module_redis.start()
    # An empty Redis again (no persistence): the old session is unknown, a new one works, and
    # the processes hear each other again (their listeners subscribed anew).
    assert (await initialize_soon(b, tenant)).status == 200
    fresh = await open_session(b, tenant)
    stream = await stream_of(a, tenant, fresh)
    # Told again until heard: the listeners subscribe anew within a moment.
    async with asyncio.timeout(15):
        while True:
            b.app[DISPATCHER].changes.tools_changed("read")
            with contextlib.suppress(TimeoutError):
                _, message = await next_message(stream, timeout=1.0)
                if message["method"] == "notifications/tools/list_changed":
                    break
    stream.close()


# -- one process stops -----------------------------------------------------------------------


async def test_a_process_that_stops_leaves_its_sessions_to_the_others(
        pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    await post(a, tenant, request("logging/setLevel", 1, level="info"), sid=sid)
    stream = await stream_of(a, tenant, sid)
    await post(b, tenant, call(2, "test_log"), sid=sid)
    seen, _ = await next_message(stream)
    # A drains and stops (SIGTERM): its stream ends, the session lives on.
    await a.close()
    answer = await post(b, tenant, call(3, "jira_get_issue", issue_key="WEB-1"), sid=sid)
    assert (await answer.json())["result"]["isError"] is False
    # The client reconnects to B, from its last event: nothing is replayed twice, and the
    # stream carries on (the mark of A's stream was released, so no takeover is needed).
    resumed = await stream_of(b, tenant, sid, **{"Last-Event-ID": seen})
    assert resumed.status == 200
    await post(b, tenant, call(4, "test_log"), sid=sid)
    later, message = await next_message(resumed)
    assert order(later) > order(seen) and message["params"]["data"] == "hello from the call"
    resumed.close()


# -- a POST's stream, resumed ----------------------------------------------------------------


async def test_a_posts_stream_resumes_on_the_other_process(pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=sid)
    priming = await read_event(running)
    assert priming["data"] == "" and "_" in priming["id"]  # resumable from the start
    asked_id, asked = await next_message(running)
    assert asked["method"] == "elicitation/create"
    running.close()  # the client loses the stream; the call runs on, on B
    await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                           "result": {"action": "accept", "content": {"name": "Ada"}}}, sid=sid)
    # Resumed on A from the question's event: the answer, then the stream ends.
    resumed = await stream_of(a, tenant, sid, **{"Last-Event-ID": asked_id})
    assert resumed.status == 200
    answer_id, final = await next_message(resumed)
    assert final["id"] == 1 and final["result"]["structuredContent"]["data"]["answer"] == {
        "action": "accept", "content": {"name": "Ada"}}
    assert answer_id.split("_")[0] == asked_id.split("_")[0]
    with pytest.raises(EOFError):
        await read_event(resumed)
    # Resuming a POST's stream is not the session's GET stream: that one is still free.
    stream = await stream_of(b, tenant, sid)
    assert stream.status == 200
    stream.close()
    # A stream id nobody made ends at once.
    unknown = await stream_of(a, tenant, sid, **{"Last-Event-ID": "0123456789abcdef_0-1"})
    assert unknown.status == 200
    with pytest.raises(EOFError):
        await read_event(unknown)


async def test_session_store_memory_keeps_sessions_in_the_process(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    """SESSION_STORE=memory with REDIS_URL: rate limits in Redis, sessions in each process (a
    session opened on one is unknown to the other, and nothing of it is written to Redis)."""
    a, b = await pair(SESSION_STORE="memory")
    sid = await open_session(a, tenant)
    answer = await post(a, tenant, call(1, "jira_get_issue", issue_key="WEB-1"), sid=sid)
    assert (await answer.json())["result"]["isError"] is False
    assert (await post(b, tenant, call(2, "jira_get_issue", issue_key="WEB-1"),
                       sid=sid)).status == 404
    assert not [k async for k in redis_client.scan_iter(match=f"spiral:t:*:s:{sid}*")]


# -- what a process keeps of a session, and its own line to Redis ----------------------------


async def test_a_copy_follows_what_another_process_changed(pair: Pair, tenant: Tenant) -> None:
    """b keeps a copy of the session from its first request; the level a sets after it reaches
    b's next request (the lookup answers the fields again once their revision moved)."""
    a, b = await pair()
    sid = await open_session(a, tenant)
    stream = await stream_of(a, tenant, sid)
    assert stream.status == 200
    assert (await post(b, tenant, call(1, "test_log"), sid=sid)).status == 200
    assert (await post(a, tenant, request("logging/setLevel", 2, level="info"),
                       sid=sid)).status == 200
    assert (await post(b, tenant, call(3, "test_log"), sid=sid)).status == 200
    _, message = await next_message(stream)
    assert message["params"]["data"] == "hello from the call"
    stream.close()


async def test_a_copy_is_no_proof_the_session_lives(pair: Pair, tenant: Tenant,
                                                    redis_client: redis.Redis) -> None:
    """A session gone from Redis without a word to the processes (a lost broadcast, an expiry)
    is refused by the process that still holds a current copy of it."""
    a, _ = await pair()
    sid = await open_session(a, tenant)
    assert (await post(a, tenant, request("ping", 1), sid=sid)).status == 200
    keys = [k async for k in redis_client.scan_iter(match=f"spiral:t:*:s:{sid}*")]
    assert keys
    await redis_client.delete(*keys)
    await error_of(await post(a, tenant, request("ping", 2), sid=sid), 404)


async def test_the_line_survives_redis_forgetting_scripts_and_connections(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    assert (await post(b, tenant, call(1, "jira_get_issue", issue_key="WEB-1"),
                       sid=sid)).status == 200
    await redis_client.script_flush()
    for rid in (2, 3):  # the script is loaded again
        answer = await post(b, tenant, call(rid, "jira_get_issue", issue_key="WEB-1"), sid=sid)
        assert (await answer.json())["result"]["isError"] is False
    await redis_client.client_kill_filter(_type="normal", skipme=True)
    # The connection cut is noticed by the next command at the latest: at most that one is
    # refused (503), and the one after it is served.
    statuses = [(await post(b, tenant, call(rid, "jira_get_issue", issue_key="WEB-1"),
                            sid=sid)).status for rid in (4, 5)]
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
