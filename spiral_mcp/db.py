"""The database: one asyncpg pool and the one way to touch tenant data.

Every read or write of tenant data happens inside :meth:`Database.tenant`, a transaction whose first
statement sets ``app.tenant_id`` for that transaction only (``set_config(..., true)``), so a pooled
connection never carries one tenant's context into another's request. Driver failures leave this
module as :class:`~spiral_mcp.errors.ServiceError` with CONNECTION_ERROR or QUERY_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import asyncpg
import orjson

from .errors import ErrorCode, ServiceError
from .queries import Queries

__all__ = [
    "Database", "TenantTransaction", "connection_error", "create_pool", "init_connection",
    "keep_session",
]

# Failures that mean "the database cannot be reached or went away", not "the query was wrong".
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def connection_error() -> ServiceError:
    return ServiceError(
        ErrorCode.CONNECTION_ERROR,
        "the database is unreachable at the moment; try again shortly",
        retry_after=1.0,
    )


def _timeout_error() -> ServiceError:
    return ServiceError(ErrorCode.QUERY_TIMEOUT, "the query took too long and was cancelled")


def _encode_json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """json and jsonb values travel as Python objects, parsed and written by orjson."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The runtime pool's reset: none. Its statements leave no session state (the tenant is set
    per transaction; nothing LISTENs, locks, opens cursors or SETs for the session), so the
    default reset's round trip (RESET ALL, CLOSE ALL, ...) buys nothing on every release. A
    transaction left open by a cancelled call is still rolled back: asyncpg does that before it
    calls this hook."""


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: float,
    statement_timeout: float,
    application_name: str = "spiral-mcp",
    server_settings: Mapping[str, str] | None = None,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    **pool_options: Any,
) -> asyncpg.Pool:
    """A pool whose connections give up fast: connecting within ``connect_timeout`` and each
    statement within ``statement_timeout`` (server-side, with a client-side backstop).

    ``server_settings`` add to the session settings; ``init`` runs on each new connection after
    the codecs are set; ``pool_options`` go to asyncpg as they are (the explorer pool sets its
    reset and turns the statement cache off)."""

    async def init_all(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        if init is not None:
            await init(conn)

    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        command_timeout=statement_timeout + 1.0,
        max_inactive_connection_lifetime=60.0,
        init=init_all,
        server_settings={
            "application_name": application_name,
            # Our statements are short; JIT compilation cost up to a second on report queries.
            "jit": "off",
            "statement_timeout": str(int(statement_timeout * 1000)),
            # A connection stuck in an open transaction would hold locks; end it server-side.
            "idle_in_transaction_session_timeout": str(int((statement_timeout + 5) * 1000)),
            **(server_settings or {}),
        },
        **pool_options,
    )


async def close_pool(pool: asyncpg.Pool, *, grace: float) -> None:
    """Close gracefully within ``grace`` seconds (connections finish their work), then force."""
    try:
        await asyncio.wait_for(pool.close(), timeout=grace)
    except TimeoutError:
        pool.terminate()


def _service_error(exc: BaseException) -> ServiceError | None:
    """What a driver failure inside a tenant transaction means to the caller; None: not ours to
    name (a ServiceError of the block, a cancellation, a bug), it passes as it is."""
    if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
        # Server-side statement_timeout, or the client-side backstop of it.
        return _timeout_error()
    if isinstance(exc, _UNREACHABLE):
        return connection_error()
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        # A value the schema refuses (a NUL byte, a number out of range, a CHECK): the caller's
        # input, not our failure; nothing was written (the transaction rolled back).
        message = _refused_value(exc)
        return ServiceError(ErrorCode.VALIDATION_ERROR, message,
                            details=[{"path": "/", "message": message}])
    return None


def _refused_value(exc: asyncpg.PostgresError) -> str:
    """What was refused, in the schema's words when the server names them. Never the driver's
    text: it numbers our statement's parameters ($1) and echoes the value."""
    if column := getattr(exc, "column_name", None):
        return f"the database refused the value for {column}"
    if constraint := getattr(exc, "constraint_name", None):
        return f"the database refused a value: it breaks the rule {constraint}"
    return ("the database refused a value (text with a NUL character, a number out of range, "
            "or a value of the wrong type)")


# BEGIN and the tenant's setting in one simple-protocol message: one round trip instead of two
# (BEGIN cannot be pipelined with a bound statement through asyncpg). The protocol runs both in
# order, so the setting is in place before any statement of the transaction reads a row.
# SET LOCAL is set_config(..., true) as a command: the same setting for this transaction only,
# with no result row to send and decode (~10 us less of the caller's CPU per call, measured).
_BEGIN = {
    True: "BEGIN READ ONLY; SET LOCAL app.tenant_id = '{}'",
    False: "BEGIN; SET LOCAL app.tenant_id = '{}'",
}


class TenantTransaction:
    """``async with database.tenant(...) as conn``: a pooled connection in a transaction scoped to
    one tenant; commits when the block ends normally, rolls back when it raises.

    A class rather than generator-based context managers: one tool call enters it once, and the
    nested generators it replaced cost more than the rest of the call's dispatch.
    """

    __slots__ = ("_begin", "_conn", "_database")

    def __init__(self, database: Database, tenant_id: uuid.UUID, *, readonly: bool) -> None:
        # The one value formatted into SQL: a UUID object renders as 36 hex digits and dashes,
        # never as anything a caller typed, so nothing can break out of the literal (injection).
        if not isinstance(tenant_id, uuid.UUID):
            raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
        self._database = database
        self._begin = _BEGIN[readonly].format(tenant_id)
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if self._conn is not None:
            raise RuntimeError("cannot enter the tenant transaction; it is already entered")
        conn = await self._database.acquire()
        try:
            await conn.execute(self._begin)
        except BaseException as exc:
            await self._database.release(conn, settled=False)
            if (error := _service_error(exc)) is not None:
                raise error from exc
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        # Whether the connection ended the transaction itself, with nothing left in flight: only
        # then may it serve the next call as it is.
        settled = False
        try:
            try:
                if exc is None:
                    await conn.execute("COMMIT")
                    settled = True
                elif not conn.is_closed() and conn.is_in_transaction():
                    # Also when cancelled, as asyncpg's own transactions do; a connection that
                    # cannot even roll back is closed by the pool's release.
                    await conn.execute("ROLLBACK")
                    settled = True
            finally:
                await self._database.release(conn, settled=settled)
        except BaseException as failure:
            if (error := _service_error(failure)) is not None:
                raise error from failure
            raise
        if exc is not None and (error := _service_error(exc)) is not None:
            raise error from exc


class Database:
    """The runtime pool and the named statements, built once at start-up.

    With ``keep_idle``, a connection a call gave back settled (its transaction ended, nothing in
    flight) is handed straight to a call waiting for one, or kept checked out for the next call,
    instead of going back through the pool: the pool's release costs a task and a timer every
    time, and its acquire a queue, a proxy and a future. Only for a pool whose reset does nothing
    (:func:`keep_session`), since kept connections skip it; connections unused for
    ``IDLE_SECONDS`` go back to the pool, whose own inactivity limit then applies.
    """

    IDLE_SECONDS = 5.0

    def __init__(
        self, pool: asyncpg.Pool, queries: Queries, *, acquire_timeout: float,
        keep_idle: bool = False,
    ) -> None:
        self.pool = pool
        self.queries = queries
        self._acquire_timeout = acquire_timeout
        self._keep_idle = keep_idle
        # Kept connections with the loop time each came back, oldest first; taken newest first,
        # so under light load the oldest age out.
        self._idle: collections.deque[tuple[asyncpg.Connection, float]] = collections.deque()
        # Calls waiting for a connection while every one the pool may open is out, first first,
        # each with the loop time it gives up at; as they all wait as long, the first gives up
        # first, and one timer (for the first) serves them all instead of a timer per call.
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._waiters_expiry: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Calls inside the pool's own acquire (while it opens connections, some may wait there).
        self._in_pool_acquire = 0

    def tenant(self, tenant_id: uuid.UUID, *, readonly: bool = False) -> TenantTransaction:
        """A transaction in which only ``tenant_id``'s rows exist (``async with``).

        Commits when the block ends normally, rolls back when it raises. Driver failures leave
        it as ServiceError: CONNECTION_ERROR, QUERY_TIMEOUT, or VALIDATION_ERROR for a value the
        schema refuses.
        """
        return TenantTransaction(self, tenant_id, readonly=readonly)

    def sizes(self) -> tuple[int, int]:
        """Open connections and idle ones (in the pool or kept here), for the metrics."""
        return self.pool.get_size(), self.pool.get_idle_size() + len(self._idle)

    async def acquire(self) -> asyncpg.Connection:
        """A connection (give it back with :meth:`release`), or CONNECTION_ERROR within the
        acquire timeout."""
        while self._idle:
            conn, _ = self._idle.pop()
            if _is_open(conn):
                return conn
            # Closed while kept (the server ended it): asyncpg has already taken it back.
        pool = self.pool
        if self._keep_idle and not pool.get_idle_size() \
                and pool.get_size() >= pool.get_max_size():
            return await self._wait_for_release()
        # With a connection idle the acquire cannot wait (opening a replacement for one closed
        # while idle is bounded by the connect timeout): no timer to arm and cancel, for the
        # acquire and again for the release's reset, which asyncpg bounds by the same timeout.
        timeout = None if pool.get_idle_size() else self._acquire_timeout
        self._in_pool_acquire += 1
        try:
            return await pool.acquire(timeout=timeout)
        except (TimeoutError, *_UNREACHABLE) as exc:
            raise connection_error() from exc
        finally:
            self._in_pool_acquire -= 1

    async def _wait_for_release(self) -> asyncpg.Connection:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.time() + self._acquire_timeout, loop.create_future())
        self._waiters.append(waiter)
        if self._waiters_expiry is None:
            self._waiters_expiry = loop.call_at(waiter.deadline, self._expire_waiters)
        try:
            return await waiter.future
        except TimeoutError as exc:
            raise connection_error() from exc
        except BaseException:
            self._abandon(waiter)
            raise

    def _expire_waiters(self) -> None:
        """Timer: calls that waited the acquire timeout give up (CONNECTION_ERROR)."""
        loop = asyncio.get_running_loop()
        self._waiters_expiry = None
        now = loop.time()
        while self._waiters and self._waiters[0].deadline <= now:
            future = self._waiters.popleft().future
            if not future.done():
                future.set_exception(TimeoutError())
        if self._waiters:
            self._waiters_expiry = loop.call_at(self._waiters[0].deadline, self._expire_waiters)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiting call was cancelled: out of the queue, and a connection handed to it in that
        very turn goes on to the next call."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self._hand_over(future.result())
        else:
            future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _hand_over(self, conn: asyncpg.Connection) -> None:
        """A settled connection to the first waiting call, else kept for the next one (or, once
        closing, back to the pool)."""
        while self._waiters:
            future = self._waiters.popleft().future
            if not future.done():
                future.set_result(conn)
                return
        if not self._keep_idle:
            self._spawn(self.pool.release(conn))
            return
        loop = asyncio.get_running_loop()
        self._idle.append((conn, loop.time()))
        if self._expiry is None:
            self._expiry = loop.call_later(self.IDLE_SECONDS, self._return_unused)

    async def release(self, conn: asyncpg.Connection, *, settled: bool) -> None:
        """Give a connection back. ``settled``: the caller's last statement finished and no
        transaction is open, so the connection may serve another call as it is; otherwise the
        pool's release cleans it up (rolls back, waits out a cancelled query, or closes it)."""
        if settled and not self._in_pool_acquire and (self._waiters or self._keep_idle) \
                and _is_open(conn) and not conn.is_in_transaction():
            # Kept only while no call is inside the pool's acquire, where it could be waiting
            # for a release that would otherwise never come.
            self._hand_over(conn)
            return
        try:
            await self.pool.release(conn)
        finally:
            if self._waiters:
                # That connection went to the pool (or was closed): fetch one for a waiter.
                self._spawn(self._acquire_for_waiter())

    async def _acquire_for_waiter(self) -> None:
        try:
            conn = await self.pool.acquire(timeout=self._acquire_timeout)
        except Exception:
            return  # the waiter's own timeout answers it; the pool reports its own failures
        if not self._waiters and self._in_pool_acquire:
            await self.pool.release(conn)  # a call inside the pool's acquire may need it
        else:
            self._hand_over(conn)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _return_unused(self) -> None:
        """Timer: connections kept longer than IDLE_SECONDS unused go back to the pool."""
        loop = asyncio.get_running_loop()
        self._expiry = None
        horizon = loop.time() - self.IDLE_SECONDS
        while self._idle and self._idle[0][1] <= horizon:
            conn, _ = self._idle.popleft()
            if _is_open(conn):
                self._spawn(self.pool.release(conn))
        if self._idle:
            self._expiry = loop.call_at(self._idle[0][1] + self.IDLE_SECONDS,
                                        self._return_unused)

    async def close(self) -> None:
        """Give every kept connection back to the pool; call before the pool closes. Calls that
        end later give theirs straight back."""
        self._keep_idle = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._idle:
            conn, _ = self._idle.popleft()
            if _is_open(conn):
                await self.pool.release(conn)
        while self._tasks:  # a task may start another (a connection fetched, then returned)
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or CONNECTION_ERROR within the acquire timeout; the connection
        breaking under the block (a server restart, a network cut) is CONNECTION_ERROR too."""
        conn = await self.acquire()
        settled = False
        try:
            yield conn
            settled = True
        except TimeoutError as exc:
            # The client-side backstop of statement_timeout fired.
            raise _timeout_error() from exc
        except _UNREACHABLE as exc:
            raise connection_error() from exc
        finally:
            await self.release(conn, settled=settled)


class _Waiter(NamedTuple):
    deadline: float  # loop time
    future: asyncio.Future[asyncpg.Connection]


def _is_open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        # A pool proxy detached by asyncpg: its connection closed and went back to the pool.
        return False
