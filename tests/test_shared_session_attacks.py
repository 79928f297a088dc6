"""A hostile principal against sessions shared through Redis: a tenant, a second key of the
same tenant, each with a valid credential, try to read, resume, take over, end, cancel into,
answer into or starve another principal's session, with two processes (two apps) sharing one
Redis and one database. Every attack here fails (those that once worked are regressions).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import redis.asyncio as redis
import test_shared_sessions as shared
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import Tenant, TenantFactory
from test_shared_sessions import STREAM, Pair, _another_key, call, next_message, stream_of
from test_transports import Slow, error_of, headers, open_session, post, read_event, request

from spiral_mcp.protocol.dispatcher import MAX_SUBSCRIPTIONS
from spiral_mcp.server.keys import DISPATCHER

# The shared-session tests' fixtures: two apps sharing the database and a Redis of the module's.
pair = shared.pair
redis_client = shared.redis_client


async def _logging_session(client: TestClient, tenant: Tenant) -> tuple[str, ClientResponse]:
    """A session at log level info with its GET stream open."""
    sid = await open_session(client, tenant)
    assert (await post(client, tenant, request("logging/setLevel", 1, level="info"),
                       sid=sid)).status == 200
    stream = await stream_of(client, tenant, sid)
    assert stream.status == 200
    return sid, stream


async def _nothing_comes(stream: ClientResponse, timeout: float = 1.0) -> None:
    """No message arrives on ``stream`` within ``timeout`` (it may end, or stay silent)."""
    try:
        await next_message(stream, timeout=timeout)
    except (TimeoutError, EOFError):
        return
    raise AssertionError("a message arrived")


# -- Last-Event-ID ----------------------------------------------------------------------------


async def test_crafted_last_event_ids_replay_nothing_of_another_session(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory) -> None:
    a, b = await pair()
    victim_sid, victim_stream = await _logging_session(a, tenant)
    await post(b, tenant, call(2, "test_log"), sid=victim_sid)
    victim_event, _ = await next_message(victim_stream)
    # A POST stream of the victim's (its event ids name the stream).
    victim_ask = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(3, "test_ask"), sid=victim_ask)
    post_event, _ = await next_message(running)
    attacker = await make_tenant(name="attacker")
    own = await open_session(b, attacker)
    for client in (a, b):
        for crafted in ("0-0", victim_event, post_event, "1-0", "0-1"):
            resumed = await stream_of(client, attacker, own, **{"Last-Event-ID": crafted})
            assert resumed.status == 200
            await _nothing_comes(resumed)
            resumed.close()
    victim_stream.close()
    running.close()


# Each refused by the header's check, before Redis is asked (HTTP strips surrounding blanks, so
# "0-0 " is "0-0").
MALFORMED_EVENT_IDS = [
    "+", "-", "$", ">", "*", "-1-0", "1--1", "1-2-3",
    "99999999999999999999-0",                     # past 2**64: Redis refuses the id
    "0-99999999999999999999",
    "\u0663-\u0663",                              # Arabic-Indic digits: \d matches them
    "0123456789abcdef_\u0661-\u0661",
    "0123456789abcdef_99999999999999999999-1",
    "0123456789ABCDEF_0-1", "x" * 4000,
]


async def test_a_malformed_last_event_id_is_a_400_never_a_503(pair: Pair, tenant: Tenant) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    for crafted in MALFORMED_EVENT_IDS:
        for client in (a, b):
            refused = await client.get("/mcp", headers=headers(
                tenant, sid=sid, accept=STREAM, **{"Last-Event-ID": crafted}))
            assert refused.status == 400, (crafted, refused.status)
            assert "Last-Event-ID must be" in (await error_of(refused, 400))["message"]
    # The session is unharmed.
    assert (await post(b, tenant, request("ping", 9), sid=sid)).status == 200


async def test_the_largest_entry_id_only_waits(pair: Pair, tenant: Tenant) -> None:
    # Valid for Redis: the stream waits for entries after it (there are none), it is not an
    # outage.
    a, _ = await pair()
    sid = await open_session(a, tenant)
    top = f"{2**64 - 1}-{2**64 - 1}"
    resumed = await stream_of(a, tenant, sid, **{"Last-Event-ID": top})
    assert resumed.status == 200
    await _nothing_comes(resumed)
    resumed.close()


# -- session ids --------------------------------------------------------------------------------


async def test_session_ids_naming_redis_keys_are_a_404(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Any, redis_client: redis.Redis) -> None:
    a, b = await pair()
    victim_sid, victim_stream = await _logging_session(a, tenant)
    uri = "spiral://reference/jql"
    await post(a, tenant, request("resources/subscribe", 2, uri=uri), sid=victim_sid)
    await post(b, tenant, call(3, "test_log"), sid=victim_sid)
    await next_message(victim_stream)
    colleague = await _another_key(admin_conn, queries, tenant)
    own = await open_session(b, colleague)
    names = [f"{victim_sid}:subs", f"{victim_sid}:events", f"{victim_sid}:stream",
             f"{own}:events", f"{own}:subs", "*", "spiral:sessions", f"{own}*", own.upper(),
             f"../{own}", "x" * 4000]
    for client in (a, b):
        for name in names:
            for method in ("POST", "GET", "DELETE"):
                if method == "POST":
                    answer = await post(client, colleague, request("ping", 1), sid=name)
                elif method == "GET":
                    answer = await stream_of(client, colleague, name)
                else:
                    answer = await client.delete("/mcp", headers=headers(colleague, sid=name))
                assert answer.status in (400, 404), (name, method, answer.status)
    # The legacy door is no different.
    for client in (a, b):
        assert (await client.post(f"/messages?session_id={victim_sid}:subs", data=b"{}",
                                   headers=headers(colleague))).status in (400, 404)
    assert await redis_client.exists(f"spiral:t:{tenant.id}:s:{victim_sid}:subs")
    victim_stream.close()


# -- other principals ---------------------------------------------------------------------------


async def test_another_key_or_tenant_cannot_end_take_over_or_post_to_a_session(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Any) -> None:
    a, b = await pair()
    victim_sid, victim_stream = await _logging_session(a, tenant)
    await post(b, tenant, call(2, "test_log"), sid=victim_sid)
    seen, _ = await next_message(victim_stream)
    legacy = await b.get("/sse", headers={**tenant.headers, "Accept": STREAM})
    endpoint = (await read_event(legacy))["data"]
    stranger = await make_tenant(name="stranger")
    colleague = await _another_key(admin_conn, queries, tenant)
    for caller in (stranger, colleague):
        for client in (a, b):
            # Take the stream over (a Last-Event-ID makes a takeover), replay, end, post.
            for after in (seen, "0-0"):
                taken = await stream_of(client, caller, victim_sid, **{"Last-Event-ID": after})
                assert taken.status == 404
            assert (await client.delete("/mcp", headers=headers(caller, sid=victim_sid))
                    ).status == 404
            await error_of(await post(client, caller, request("ping", 1), sid=victim_sid), 404)
            assert (await client.post(endpoint, data=orjson.dumps(request("ping", 1)),
                                      headers=headers(caller))).status == 404
    # The victim's stream still carries its session's events, and its legacy session lives.
    await post(b, tenant, call(3, "test_log"), sid=victim_sid)
    _, message = await next_message(victim_stream)
    assert message["params"]["data"] == "hello from the call"
    assert (await a.post(endpoint, data=orjson.dumps(request("ping", 4)),
                         headers=headers(tenant))).status == 202
    victim_stream.close()
    legacy.close()


async def test_an_answer_from_another_principal_does_not_reach_the_question(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Any) -> None:
    a, b = await pair()
    victim = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=victim)
    _, asked = await next_message(running)
    assert asked["id"].startswith("spiral-")
    stranger = await make_tenant(name="stranger")
    colleague = await _another_key(admin_conn, queries, tenant)
    forged = {"jsonrpc": "2.0", "id": asked["id"],
              "result": {"action": "accept", "content": {"name": "Mallory"}}}
    for caller in (stranger, colleague):
        own = await open_session(a, caller, capabilities={"elicitation": {}})
        for client in (a, b):
            await post(client, caller, forged, sid=own)
            # Through the legacy door too.
            legacy = await client.get("/sse", headers={**caller.headers, "Accept": STREAM})
            endpoint = (await read_event(legacy))["data"]
            await client.post(endpoint, data=orjson.dumps(forged), headers=headers(caller))
            legacy.close()
    await _nothing_comes(running)
    await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                           "result": {"action": "accept", "content": {"name": "Ada"}}},
               sid=victim)
    _, final = await next_message(running)
    assert final["result"]["structuredContent"]["data"]["answer"]["content"] == {"name": "Ada"}


async def test_a_cancel_from_another_principal_does_not_reach_the_call(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Any) -> None:
    slow = Slow()
    a, b = await pair(slow)
    victim = await open_session(a, tenant)
    running = asyncio.ensure_future(post(b, tenant, call(7, "test_slow"), sid=victim))
    await asyncio.wait_for(slow.started.wait(), 5)
    stranger = await make_tenant(name="stranger")
    colleague = await _another_key(admin_conn, queries, tenant)
    for caller in (stranger, colleague):
        own = await open_session(a, caller)
        for client in (a, b):
            for rid in (7, "7", 7.0):
                cancel = await post(client, caller, {
                    "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": rid}}, sid=own)
                assert cancel.status == 202
    await asyncio.sleep(1.0)
    assert not slow.cancelled.is_set() and not running.done()
    running.cancel()


# -- caps ---------------------------------------------------------------------------------------


async def test_filling_the_caps_never_ends_another_principals_session(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory,
        admin_conn: asyncpg.Connection, queries: Any) -> None:
    a, b = await pair(SESSION_MAX="6", SESSION_MAX_PER_TENANT="3", SESSION_MAX_PER_KEY="2")
    colleague = await _another_key(admin_conn, queries, tenant)
    neighbour = await make_tenant(name="neighbour")
    kept = [(colleague, await open_session(a, colleague)),
            (neighbour, await open_session(b, neighbour))]
    attacker = tenant
    # The attacker opens sessions over and over, through both processes: only its own give way.
    for n in range(12):
        made = await post((a, b)[n % 2], attacker, request("initialize", 0,
                                                          protocolVersion="2025-11-25"))
        assert made.status == 200
    for owner, sid in kept:
        for client in (a, b):
            assert (await post(client, owner, request("ping", 1), sid=sid)).status == 200
    # And another tenant can still open one.
    assert (await post(b, await make_tenant(name="late"),
                       request("initialize", 0, protocolVersion="2025-11-25"))).status == 200


# -- changes ------------------------------------------------------------------------------------


async def test_changes_do_not_cross_tenants_or_scopes_between_processes(
        pair: Pair, tenant: Tenant, make_tenant: TenantFactory) -> None:
    a, b = await pair()
    reader = await make_tenant(name="reader", scopes=("read",), demo=True)
    sid = await open_session(a, reader)
    stream = await stream_of(a, reader, sid)
    uri = "spiral://reference/jql"
    assert (await post(b, reader, request("resources/subscribe", 1, uri=uri),
                       sid=sid)).status == 200
    # Another tenant's data changes, in the other process; a scope the key lacks changes.
    b.app[DISPATCHER].changes.resource_updated(tenant.id, uri)
    b.app[DISPATCHER].changes.tools_changed("admin")
    await _nothing_comes(stream)
    # Its own tenant's change comes (the relay works).
    b.app[DISPATCHER].changes.resource_updated(reader.id, uri)
    _, message = await next_message(stream)
    assert message["params"]["uri"] == uri
    stream.close()


# -- values a client controls, in Redis ---------------------------------------------------------


async def test_client_info_and_capabilities_are_bounded(pair: Pair, tenant: Tenant,
                                                        redis_client: redis.Redis) -> None:
    # Every request of the session reads its hash: a huge one costs Redis (and every other
    # tenant) on each ping.
    a, _ = await pair()
    huge = {"name": "x" * 600_000, "version": "1"}
    for params in ({"clientInfo": huge, "capabilities": {}},
                   {"clientInfo": {"name": "t", "version": "1"}, "capabilities": {"x": huge}}):
        made = await post(a, tenant, request("initialize", 0, protocolVersion="2025-11-25",
                                             **params))
        if made.status == 200:
            sid = made.headers["Mcp-Session-Id"]
            key = f"spiral:t:{tenant.id}:s:{sid}"
            assert await redis_client.hstrlen(key, "client_info") <= 65536
            assert await redis_client.hstrlen(key, "client_capabilities") <= 65536
        else:
            error = await error_of(made, 400)
            assert "too large" in error["message"]


async def test_subscriptions_stay_capped_across_processes(pair: Pair, tenant: Tenant,
                                                          redis_client: redis.Redis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant, version="2025-03-26")
    # Every URI the key may subscribe to: the resources, and each tool's output schema.
    listed = await post(a, tenant, request("resources/list", 1), sid=sid, version="2025-03-26")
    tools = await post(a, tenant, request("tools/list", 2), sid=sid, version="2025-03-26")
    uris = [r["uri"] for r in (await listed.json())["result"]["resources"]] + [
        f"spiral://tools/{t['name']}/output-schema"
        for t in (await tools.json())["result"]["tools"]]
    halves = [uris[: len(uris) // 2], uris[len(uris) // 2:]]
    batches = [[request("resources/subscribe", f"{side}-{n}", uri=uri)
                for n, uri in enumerate(half)] for side, half in zip("ab", halves, strict=True)]
    await asyncio.gather(post(a, tenant, batches[0], sid=sid, version="2025-03-26"),
                         post(b, tenant, batches[1], sid=sid, version="2025-03-26"))
    count = await redis_client.scard(f"spiral:t:{tenant.id}:s:{sid}:subs")
    assert count <= MAX_SUBSCRIPTIONS


async def test_post_streams_of_a_session_are_bounded(pair: Pair, tenant: Tenant,
                                                     redis_client: redis.Redis) -> None:
    # A request with a progress token is answered as a recorded SSE stream: each one is a
    # Redis stream kept for the idle timeout; a client must not grow them without bound.
    a, b = await pair()
    sid = await open_session(a, tenant)
    for n in range(150):
        listed = await post((a, b)[n % 2], tenant, {**request("tools/list", n),
                                                    "params": {"_meta": {"progressToken": n}}},
                            sid=sid)
        assert listed.headers["Content-Type"].startswith(STREAM)
        await listed.read()
    await asyncio.sleep(0.5)  # the bus's queue reaches Redis
    kept = [k async for k in redis_client.scan_iter(f"spiral:t:{tenant.id}:s:{sid}:post:*")]
    assert len(kept) <= 64
    # And they go with their session.
    assert (await a.delete("/mcp", headers=headers(tenant, sid=sid))).status == 204
    await asyncio.sleep(0.5)
    assert not [k async for k in redis_client.scan_iter(f"spiral:t:{tenant.id}:s:{sid}*")]


# -- forged answers, odd request ids ------------------------------------------------------------


async def test_forged_answer_ids_are_harmless(pair: Pair, tenant: Tenant,
                                              make_tenant: TenantFactory) -> None:
    a, b = await pair()
    victim = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=victim)
    _, asked = await next_message(running)
    asker = asked["id"].split("-")[1]
    attacker = await make_tenant(name="attacker")
    own = await open_session(a, attacker, capabilities={"elicitation": {}})
    for rid in (f"spiral-{asker}-0", f"spiral-{asker}-999", "spiral-b-1", "spiral--1",
                f"spiral-{'z' * 10_000}-1", "spiral-spiral:b-1", "spiral-\n-1", 0, None,
                {"id": asked["id"]}, [asked["id"]]):
        for client in (a, b):
            answered = await post(client, attacker, {"jsonrpc": "2.0", "id": rid,
                                                     "result": {"action": "accept"}}, sid=own)
            assert answered.status in (202, 400)
    await _nothing_comes(running)
    # Both processes still serve, and the real answer still reaches the question.
    await post(a, tenant, {"jsonrpc": "2.0", "id": asked["id"],
                           "result": {"action": "decline"}}, sid=victim)
    _, final = await next_message(running)
    assert final["result"]["structuredContent"]["data"]["answer"] == {"action": "decline"}


async def test_odd_request_ids_leave_nothing_behind_in_redis(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    a, b = await pair()
    sid = await open_session(a, tenant)
    for rid in ("x" * 200_000, "a\nb:c*{}", "spiral:b", -1, 2**53):
        answer = await post(b, tenant, call(rid, "jira_get_issue", issue_key="WEB-1"), sid=sid)
        assert (await answer.json())["id"] == rid
    await asyncio.sleep(0.5)  # releases go through the bus's queue
    key = f"spiral:t:{tenant.id}:s:{sid}"
    assert await redis_client.hlen(f"{key}:calls") == 0
    for process in await redis_client.smembers("spiral:processes"):
        assert await redis_client.hlen(f"spiral:p:{process.decode()}:calls") == 0


async def test_resumptions_of_post_streams_are_capped_per_session(
        pair: Pair, tenant: Tenant, redis_client: redis.Redis) -> None:
    # Each resumption waits on Redis with a connection of its own, and a POST stream has no
    # 409 as the GET stream has: resumed over and over, it took Redis's connections.
    a, b = await pair(SESSION_MAX_CONCURRENT_CALLS="2")
    sid = await open_session(a, tenant, capabilities={"elicitation": {}})
    running = await post(b, tenant, call(1, "test_ask"), sid=sid)
    asked_id, _ = await next_message(running)  # the call waits for its answer: the stream lives
    before = len(await redis_client.client_list())
    resumed = [await stream_of((a, b)[n % 2], tenant, sid, **{"Last-Event-ID": asked_id})
               for n in range(8)]
    assert all(r.status == 200 for r in resumed)
    await asyncio.sleep(1.5)
    still_open = 0
    for stream in resumed:
        try:
            await read_event(stream, timeout=0.2)
        except EOFError:
            continue  # refused: it ended at once
        except TimeoutError:
            still_open += 1
    assert still_open <= 2
    assert len(await redis_client.client_list()) - before <= 4
    for stream in resumed:
        stream.close()
    running.close()
