"""The session store's line (shared_line.py) under a hostile environment: every reply reaches
the command it answers, or that command fails; never another's (each is another request's
session lookup: a reply to the wrong waiter would cross tenants). Against a redis-server of
the module's own (conftest's ``module_redis``), killed, restarted and loading as production's
is.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from faults import OwnRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from spiral_mcp.protocol.sessions import SessionStoreUnavailable
from spiral_mcp.protocol.shared_line import RedisLine
from spiral_mcp.protocol.shared_local import SharedSession
from spiral_mcp.protocol.shared_sessions import SharedSessionStore

pytestmark = pytest.mark.redis

LINE = "the-line"


@pytest.fixture
async def admin(module_redis: OwnRedis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(module_redis.url)
    await client.flushall()
    await client.mset({"a": "A", "b": "B", "c": "C"})
    yield client
    await client.aclose()


@pytest.fixture
async def line(module_redis: OwnRedis) -> AsyncIterator[RedisLine]:
    client = redis.Redis.from_url(module_redis.url, client_name=LINE)
    line = RedisLine(client.connection_pool, timeout=1.0)
    yield line
    await line.close()
    await client.aclose()


async def _line_ids(admin: redis.Redis) -> list[str]:
    return [c["id"] for c in await admin.client_list() if c.get("name") == LINE]


async def _kill_line(admin: redis.Redis) -> None:
    """Redis drops the line's connection (as a restart, a proxy or `CLIENT KILL` does)."""
    for _ in range(100):
        if ids := await _line_ids(admin):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the line never connected")
    for client_id in ids:
        await admin.client_kill_filter(_id=client_id)
    await asyncio.sleep(0.1)  # the end reaches the line


async def _both(line: RedisLine, *keys: str) -> list[object]:
    tasks = [asyncio.ensure_future(line.call("GET", key)) for key in keys]
    done = await asyncio.gather(*(asyncio.wait_for(t, 3) for t in tasks), return_exceptions=True)
    return list(done)


async def test_a_caller_cancelled_while_connecting_leaves_no_stale_connection(
        admin: redis.Redis, line: RedisLine) -> None:
    """The only request that made the line connect goes (its client left); the connection
    comes up all the same, and is lost later. The next requests must connect again, not write
    on the lost connection: a command written there never gets its reply, and the reply to the
    next command on the new connection went to it, another request's lookup."""
    first = asyncio.ensure_future(line.call("GET", "a"))
    await asyncio.sleep(0)  # it waits for the connection
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await _kill_line(admin)

    assert await _both(line, "a", "b") == [b"A", b"B"]
    assert await line.call("GET", "c") == b"C"


async def test_replies_reach_their_commands_through_errors_cancellations_and_split_reads(
        admin: redis.Redis, line: RedisLine) -> None:
    """Many commands in one write (replies come several per read), a reply of 4 MB (one reply
    over many reads), error replies among them, and callers cancelled while their reply is on
    its way: each reply goes to its own command."""
    big = b"x" * (4 << 20)
    await admin.set("big", big)
    assert await line.call("PING") == b"PONG"  # connected: the cancelled below are written
    calls = []
    for i in range(300):
        if i % 50 == 7:
            calls.append((asyncio.ensure_future(line.call("GET", "big")), big))
        elif i % 10 == 3:
            calls.append((asyncio.ensure_future(line.call("INCR", "a")), ResponseError))
        elif i % 10 == 5:
            calls.append((asyncio.ensure_future(line.call("EVALSHA", "0" * 40, 0)),
                          ResponseError))
        else:
            key = "abc"[i % 3]
            calls.append((asyncio.ensure_future(line.call("GET", key)), key.upper().encode()))
    await asyncio.sleep(0)
    for task, _ in calls[1::4]:
        task.cancel()
    for task, expected in calls:
        if task.cancelled():
            continue
        if expected is ResponseError:
            with pytest.raises(ResponseError):
                await asyncio.wait_for(task, 5)
        else:
            assert await asyncio.wait_for(task, 5) == expected
    assert await line.call("GET", "b") == b"B"


async def test_commands_in_flight_when_redis_restarts_fail_and_the_next_ones_reconnect(
        admin: redis.Redis, line: RedisLine, module_redis: OwnRedis) -> None:
    assert await line.call("GET", "a") == b"A"
    # Commands Redis holds (a blocking pop) and one after them, on the line when Redis goes.
    held = [asyncio.ensure_future(line.call("BLPOP", "nothing", 5)) for _ in range(3)]
    after = asyncio.ensure_future(line.call("GET", "a"))
    await asyncio.sleep(0.2)
    module_redis.stop()
    module_redis.start()  # empty, as without persistence
    for task in [*held, after]:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(task, 3)
    fresh = redis.Redis.from_url(module_redis.url)
    try:
        await fresh.mset({"a": "A2", "b": "B2"})
    finally:
        await fresh.aclose()
    assert await _both(line, "a", "b", "nothing") == [b"A2", b"B2", None]


@pytest.fixture
async def loading_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """A Redis that takes about a second to load its dataset again (read slowly: Redis's own
    test settings), answering LOADING meanwhile on the connections it already has, as a
    demoted master does while it loads the new master's data after a Sentinel failover."""
    server = OwnRedis(tmp_path, args=["--key-load-delay", "25000",
                                      "--loading-process-events-interval-bytes", "1024",
                                      "--enable-debug-command", "yes"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _loading(server: OwnRedis) -> AsyncIterator[None]:
    """Redis loads its dataset again (DEBUG RELOAD) within the block."""
    admin = redis.Redis.from_url(server.url)
    await admin.mset({f"filler{i}": "v" * 1500 for i in range(40)})
    reload = asyncio.ensure_future(admin.execute_command("DEBUG", "RELOAD"))
    try:
        await asyncio.sleep(0.3)  # saved, now loading
        yield
    finally:
        await reload
        await admin.aclose()


async def test_a_loading_redis_fails_the_command_rather_than_answering_it(
        loading_redis: OwnRedis) -> None:
    """A loading Redis answers LOADING, which redis-py parses as BusyLoadingError, a
    ConnectionError rather than a ResponseError. It must reach the caller as an error, not as
    the command's value (a lookup's unpacking failed on it, a 500)."""
    client = redis.Redis.from_url(loading_redis.url)
    line = RedisLine(client.connection_pool, timeout=1.0)
    try:
        assert await line.call("PING") == b"PONG"
        async with _loading(loading_redis):
            with pytest.raises(RedisError, match="loading"):
                await line.call("GET", "filler1")
        assert await line.call("GET", "filler1") == b"v" * 1500
    finally:
        await line.close()
        await client.aclose()


async def test_a_save_refused_by_a_loading_redis_is_made_again(
        loading_redis: OwnRedis) -> None:
    """logging/setLevel saved while Redis loads: the save fails (the request says the store
    is unavailable) and the next save writes the level. Taken for written, it never was: every
    later save found the session unchanged, and other processes served the old level."""
    client = redis.Redis.from_url(loading_redis.url)
    store = SharedSessionStore(client, client, max_sessions=10, max_per_tenant=10,
                               max_per_key=10, idle_timeout=60.0, max_concurrent_calls=4)
    try:
        session = await store.create(
            key_id=uuid.uuid4(), tenant_id=uuid.uuid4(), scopes=frozenset({"read"}),
            transport="streamable", protocol_version="2025-06-18", max_concurrent_calls=4)
        assert isinstance(session, SharedSession)
        await store.get(session.id, session.key_id, tenant_id=session.tenant_id,
                        transport="streamable")  # the line is connected
        session.log_level = "debug"
        async with _loading(loading_redis):
            with pytest.raises(SessionStoreUnavailable):
                await store.save(session)
        await store.save(session)
        assert await client.hget(session.key, "log_level") == b"debug"
    finally:
        await store.stop(grace=0)
        await client.aclose()



async def test_a_line_closed_while_it_connects_leaves_no_connection(
        admin: redis.Redis, module_redis: OwnRedis) -> None:
    """The app stops while the line connects (its first request in flight): the connection,
    made after the close, is closed too, not left open to Redis."""
    client = redis.Redis.from_url(module_redis.url, client_name=LINE)
    line = RedisLine(client.connection_pool, timeout=1.0)
    first = asyncio.ensure_future(line.call("GET", "a"))
    await asyncio.sleep(0)  # it waits for the connection
    await line.close()
    with contextlib.suppress(RedisError):
        await asyncio.wait_for(first, 3)
    await asyncio.sleep(0.2)
    assert await _line_ids(admin) == []
    await client.aclose()


async def test_a_connection_redis_ends_as_it_opens_fails_the_command_at_once() -> None:
    """The peer answers the connection's handshake and closes it with its last reply: the end
    arrives as redis-py finishes connecting and the line takes the connection over (before it,
    the line checks the transport; after it, its protocol hears of it). Either way a command
    fails at once, never waiting for a reply that cannot come. (No real Redis ends a connection
    at that instant on demand; this peer speaks just enough RESP for redis-py's handshake:
    HELLO 3, CLIENT commands, the last two of them the library's name and version.)"""

    async def answer_then_close(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        setinfo = 0
        while data := await reader.read(65536):
            commands = data.count(b"*")  # no argument of the handshake holds one
            if b"HELLO" in data:
                writer.write(b"%1\r\n+proto\r\n:3\r\n")
                commands -= 1
            writer.write(b"+OK\r\n" * commands)
            setinfo += data.count(b"SETINFO")
            if setinfo == 2:  # the library's name and version: the handshake's last commands
                await writer.drain()
                writer.close()
                return

    peer = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port)
    line = RedisLine(client.connection_pool, timeout=30.0)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(line.call("GET", "a"), 5)
    finally:
        await line.close()
        await client.aclose()
        peer.close()
        await peer.wait_closed()
