"""The runtime Database keeps settled connections for the next call (``keep_idle``): what it keeps
carries no tenant, what it must not keep goes back through the pool, unused ones age out, and
closing hands everything back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from spiral_mcp.db import Database, _is_open, create_pool, keep_session
from spiral_mcp.errors import ServiceError
from spiral_mcp.queries import Queries


@pytest.fixture
async def pool(database_urls):
    pool = await create_pool(database_urls.runtime, min_size=1, max_size=2, connect_timeout=5,
                             statement_timeout=10, reset=keep_session)
    yield pool
    pool.terminate()


@pytest.fixture
async def database(pool, queries: Queries):
    database = Database(pool, queries, acquire_timeout=5, keep_idle=True)
    yield database
    await database.close()


async def _backend(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT pg_backend_pid()")


async def test_a_kept_connection_serves_the_next_tenant_with_nothing_of_the_last(
        database, make_tenant) -> None:
    a, b = await make_tenant(demo=True), await make_tenant()
    async with database.tenant(a.id, readonly=True) as conn:
        first = await _backend(conn)
        key = await conn.fetchval("SELECT min(key) FROM work_items")
        assert await conn.fetchval("SELECT count(*) FROM work_items") > 0
    # The same connection, kept rather than released: the tenant went with the transaction.
    async with database.connection() as conn:
        assert await _backend(conn) == first
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
        assert await conn.fetchval("SELECT count(*) FROM work_items") == 0
    async with database.tenant(b.id, readonly=True) as conn:
        assert await _backend(conn) == first
        assert await conn.fetchval("SELECT count(*) FROM work_items") == 0
        assert await conn.fetchrow("SELECT * FROM work_items WHERE key = $1", key) is None


async def test_a_failed_block_is_rolled_back_and_its_connection_still_serves(
        database, make_tenant) -> None:
    a = await make_tenant(demo=True)
    with pytest.raises(RuntimeError):
        async with database.tenant(a.id) as conn:
            backend = await _backend(conn)
            key, title = await conn.fetchrow("SELECT key, title FROM work_items LIMIT 1")
            await conn.execute("UPDATE work_items SET title = 'changed' WHERE key = $1", key)
            raise RuntimeError("the handler failed")
    async with database.tenant(a.id, readonly=True) as conn:
        assert await _backend(conn) == backend
        assert await conn.fetchval("SELECT title FROM work_items WHERE key = $1", key) == title


async def test_a_cancelled_call_s_connection_serves_the_next_call_clean(
        database, make_tenant) -> None:
    a = await make_tenant()

    async def slow() -> None:
        async with database.tenant(a.id, readonly=True) as conn:
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # asyncpg waits out the cancelled statement before the rollback runs; a connection whose
    # rollback went through is idle and may be kept.
    async with database.connection() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
            " AND state = 'active'")


async def test_a_connection_the_server_ended_while_kept_is_not_handed_out(
        database, make_tenant, superuser_url) -> None:
    a = await make_tenant()
    async with database.tenant(a.id, readonly=True) as conn:
        ended = await _backend(conn)
    superuser = await asyncpg.connect(superuser_url)
    try:
        assert await superuser.fetchval("SELECT pg_terminate_backend($1)", ended)
    finally:
        await superuser.close()
    for _ in range(100):  # the kept connection learns of its end when its socket closes
        if not _is_open(database._idle[-1][0]):
            break
        await asyncio.sleep(0.02)
    async with database.tenant(a.id, readonly=True) as conn:
        assert await _backend(conn) != ended
        assert await conn.fetchval("SELECT 1") == 1


async def test_unused_connections_go_back_to_the_pool(database, pool, make_tenant,
                                                      monkeypatch) -> None:
    monkeypatch.setattr(Database, "IDLE_SECONDS", 0.1)
    a = await make_tenant()
    async with database.tenant(a.id, readonly=True):
        pass
    assert database.sizes() == (pool.get_size(), 1) and pool.get_idle_size() == 0
    await asyncio.sleep(0.4)
    assert len(database._idle) == 0
    assert pool.get_idle_size() == 1
    assert database.sizes() == (pool.get_size(), 1)


async def test_close_hands_every_kept_connection_back(pool, queries, make_tenant) -> None:
    database = Database(pool, queries, acquire_timeout=5, keep_idle=True)
    a = await make_tenant()

    async def call() -> None:
        async with database.tenant(a.id, readonly=True) as conn:
            await conn.execute("SELECT pg_sleep(0.05)")

    await asyncio.gather(call(), call())
    assert len(database._idle) == 2
    await database.close()
    assert len(database._idle) == 0
    # A call ending after close gives its connection straight back.
    async with database.tenant(a.id, readonly=True):
        pass
    assert len(database._idle) == 0
    await asyncio.wait_for(pool.close(), 5)


async def test_without_keep_idle_every_connection_goes_back(pool, queries, make_tenant) -> None:
    database = Database(pool, queries, acquire_timeout=5)
    a = await make_tenant()
    async with database.tenant(a.id, readonly=True):
        pass
    assert len(database._idle) == 0 and pool.get_idle_size() == 1


async def test_a_timeout_is_a_service_error_and_the_connection_still_serves(
        database_urls, queries, make_tenant) -> None:
    short = await create_pool(database_urls.runtime, min_size=0, max_size=1, connect_timeout=5,
                              statement_timeout=0.2, reset=keep_session)
    database = Database(short, queries, acquire_timeout=5, keep_idle=True)
    a = await make_tenant()
    try:
        with pytest.raises(ServiceError) as caught:
            async with database.tenant(a.id, readonly=True) as conn:
                await conn.execute("SELECT pg_sleep(2)")
        assert caught.value.code == "QUERY_TIMEOUT"
        async with database.tenant(a.id, readonly=True) as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()
        await short.close()


async def test_a_connection_lost_under_a_block_is_a_connection_error(
        database: Database, superuser_url: str) -> None:
    superuser = await asyncpg.connect(superuser_url)
    try:
        with pytest.raises(ServiceError) as caught:
            async with database.connection() as conn:
                await superuser.execute("SELECT pg_terminate_backend($1)", await _backend(conn))
                await _until(conn.is_closed)  # the server's goodbye has arrived
                await conn.fetchval("SELECT 1")
    finally:
        await superuser.close()
    assert caught.value.code == "CONNECTION_ERROR"
    async with database.connection() as conn:  # a fresh one serves the next call
        assert await conn.fetchval("SELECT 1") == 1


async def test_calls_waiting_for_a_connection_get_the_released_ones(
        pool, queries, make_tenant) -> None:
    # More calls than connections: those waiting in the pool's acquire must be handed the
    # connections the others give back, not wait out their timeout while those are kept.
    database = Database(pool, queries, acquire_timeout=2, keep_idle=True)
    a = await make_tenant()

    async def call() -> int:
        async with database.tenant(a.id, readonly=True) as conn:
            await conn.execute("SELECT pg_sleep(0.05)")
            return await _backend(conn)

    try:
        backends = await asyncio.wait_for(asyncio.gather(*(call() for _ in range(8))), 1.5)
        assert len(backends) == 8 and len(set(backends)) <= pool.get_max_size()
    finally:
        await database.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Polls ``condition`` until it holds (a loaded machine may take its time), at most 5 s."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def _hold(database: Database, tenant_id, release: asyncio.Event) -> int:
    async with database.tenant(tenant_id, readonly=True) as conn:
        backend = await _backend(conn)
        await release.wait()
        return backend


async def test_a_call_waiting_longer_than_the_acquire_timeout_is_told_so(
        pool, queries, make_tenant) -> None:
    database = Database(pool, queries, acquire_timeout=0.3, keep_idle=True)
    a = await make_tenant()
    release = asyncio.Event()
    holders = [asyncio.create_task(_hold(database, a.id, release)) for _ in range(2)]
    await _until(lambda: pool.get_size() == 2 and not pool.get_idle_size()
                 and not database._in_pool_acquire)
    try:
        with pytest.raises(ServiceError) as caught:
            async with database.tenant(a.id, readonly=True):
                pass
        assert caught.value.code == "CONNECTION_ERROR"
        assert not database._waiters
        # A waiter cancelled meanwhile leaves nothing behind either.
        waiting = asyncio.create_task(_hold(database, a.id, asyncio.Event()))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not database._waiters
    finally:
        release.set()
        await asyncio.gather(*holders)
    # Both connections serve again.
    async with database.tenant(a.id, readonly=True) as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await database.close()


async def test_a_waiting_call_gets_a_connection_when_one_in_use_is_lost(
        pool, queries, make_tenant, superuser_url) -> None:
    # A lost connection goes back through the pool, not to the waiting call, which must still
    # be served: by a connection the pool opens in its place.
    database = Database(pool, queries, acquire_timeout=3, keep_idle=True)
    a = await make_tenant()
    go_on = asyncio.Event()
    backends: dict[int, int] = {}  # by holder, in whatever order their queries finish

    async def hold_then_query(holder: int) -> None:
        async with database.tenant(a.id, readonly=True) as conn:
            backends[holder] = await _backend(conn)
            await go_on.wait()
            await conn.fetchval("SELECT 1")

    holders = [asyncio.create_task(hold_then_query(holder)) for holder in range(2)]
    await _until(lambda: len(backends) == 2)

    async def waiting_call() -> int:
        async with database.tenant(a.id, readonly=True) as conn:
            return await _backend(conn)

    waiter = asyncio.create_task(waiting_call())
    await _until(lambda: len(database._waiters) == 1)
    superuser = await asyncpg.connect(superuser_url)
    try:
        assert await superuser.fetchval("SELECT pg_terminate_backend($1)", backends[0])
    finally:
        await superuser.close()
    await asyncio.sleep(0.1)
    go_on.set()
    outcomes = await asyncio.gather(*holders, return_exceptions=True)
    assert isinstance(outcomes[0], ServiceError) and outcomes[0].code == "CONNECTION_ERROR"
    assert outcomes[1] is None
    served = await asyncio.wait_for(waiter, 3)
    assert served != backends[0]
    assert not database._waiters
    await database.close()


async def test_a_call_queued_in_the_pool_while_it_opens_a_connection_is_served(
        database, pool, make_tenant) -> None:
    # One connection open of two: the next two calls both enter the pool's acquire, one opening
    # the second connection, the other queued there for a release. The connection given back
    # meanwhile must go to the pool for the queued call, not be kept.
    a = await make_tenant()
    first_done, second_done, at_once = asyncio.Event(), asyncio.Event(), asyncio.Event()
    at_once.set()
    first = asyncio.create_task(_hold(database, a.id, first_done))
    await asyncio.sleep(0.1)
    assert pool.get_size() == 1
    second = asyncio.create_task(_hold(database, a.id, second_done))
    queued = asyncio.create_task(_hold(database, a.id, at_once))
    try:
        await _until(lambda: pool.get_size() == 2)
        await asyncio.sleep(0.05)
        assert database._in_pool_acquire == 1 and not queued.done()
        first_done.set()
        await first
        assert await asyncio.wait_for(queued, 1.5)
    finally:
        first_done.set()
        second_done.set()
        await asyncio.gather(first, second, queued, return_exceptions=True)


async def test_a_waiting_call_is_served_when_the_releasing_call_is_cancelled(
        database, make_tenant) -> None:
    # The pool's release is shielded: cancelled, it still returns the connection to the pool,
    # and a waiting call must then be given one from there.
    a = await make_tenant()
    held = [await database.acquire(), await database.acquire()]

    async def waiting_call() -> int:
        async with database.tenant(a.id, readonly=True) as conn:
            return await _backend(conn)

    waiter = asyncio.create_task(waiting_call())
    await _until(lambda: len(database._waiters) == 1)
    await held[0].execute("BEGIN")  # unsettled: it goes back through the pool's release
    releasing = asyncio.create_task(database.release(held[0], settled=False))
    await asyncio.sleep(0)
    releasing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await releasing
    try:
        assert await asyncio.wait_for(waiter, 1.5)
    finally:
        await database.release(held[1], settled=True)


async def test_each_waiting_call_waits_its_own_timeout(pool, queries, make_tenant) -> None:
    # One timer serves every waiting call: set for the first, it must not end a later one early
    # when the first was served before its time ran out.
    database = Database(pool, queries, acquire_timeout=0.6, keep_idle=True)
    a = await make_tenant()
    loop = asyncio.get_running_loop()
    ends = [asyncio.Event() for _ in range(3)]
    holders = [asyncio.create_task(_hold(database, a.id, ends[i])) for i in range(2)]
    await _until(lambda: pool.get_size() == 2 and not pool.get_idle_size()
                 and not database._in_pool_acquire)
    first = asyncio.create_task(_hold(database, a.id, ends[2]))
    await _until(lambda: len(database._waiters) == 1)
    await asyncio.sleep(0.3)
    second_started = loop.time()
    second = asyncio.create_task(_hold(database, a.id, asyncio.Event()))
    await _until(lambda: len(database._waiters) == 2)
    ends[0].set()  # the first waiting call is served; the second waits on
    try:
        with pytest.raises(ServiceError) as caught:
            await second
        assert caught.value.code == "CONNECTION_ERROR"
        assert loop.time() - second_started >= 0.59
        assert not database._waiters and not first.done()
    finally:
        for end in ends:
            end.set()
        await asyncio.gather(*holders, first)
        await database.close()


@pytest.mark.parametrize(("statement", "value", "message"), [
    ("SELECT $1::integer", "x", "the database refused a value (text with a NUL character"),
    ("SELECT $1::integer", 2**40, "the database refused a value (text with a NUL character"),
    ("SELECT $1::text", "a\x00b", "the database refused a value (text with a NUL character"),
    ("INSERT INTO projects (tenant_id, project_key, name) "
     "VALUES (current_setting('app.tenant_id')::uuid, 'P', $1)", None,
     "the database refused the value for name"),
])
async def test_a_refused_value_is_named_without_the_drivers_words(
        pool, queries, make_tenant, statement, value, message) -> None:
    """The driver's text numbers our statement's parameters ($1) and echoes the value: the
    caller gets the column when the server names it, else a plain sentence."""
    database = Database(pool, queries, acquire_timeout=5)
    a = await make_tenant()
    with pytest.raises(ServiceError) as caught:
        async with database.tenant(a.id) as conn:
            await conn.fetchval(statement, value)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.message.startswith(message), caught.value.message
    assert "$" not in str(caught.value.to_dict())
