"""The database: one asyncpg pool and the one way to touch tenant data.

Every read or write of tenant data happens inside :meth:`Database.tenant`, a transaction whose first
statement sets ``app.tenant_id`` for that transaction only (``set_config(..., true)``), so a pooled
connection never carries one tenant's context into another's request. Driver failures leave this
module as :class:`~spiral_mcp.errors.ServiceError` with CONNECTION_ERROR or QUERY_TIMEOUT.
How a connection is opened and set up is ``connections.py``'s (its names are re-exported here).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import asyncpg

from .connections import close_pool, connect, create_pool, init_connection, keep_session
from .errors import ErrorCode, ServiceError
from .queries import Queries
from .tracing import Tracer, statement_span

if TYPE_CHECKING:
    from .replica import Replica

__all__ = [
    "Connect", "Database", "TenantTransaction", "close_pool", "connect", "connection_error",
    "create_pool", "init_connection", "keep_session",
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
    # A connection the server ended: its FATAL read while the connection was idle leaves the
    # protocol consuming an error, and until the close arrives (it may lag: a container's port
    # proxy) a statement is refused with "cannot switch to state 15; another operation (2) is in
    # progress" (asyncpg then aborts the connection). Seen during every server restart.
    asyncpg.InternalClientError,
)


def connection_error() -> ServiceError:
    return ServiceError(
        ErrorCode.CONNECTION_ERROR,
        "the database is unreachable at the moment; try again shortly",
        retry_after=1.0,
    )


def _timeout_error() -> ServiceError:
    return ServiceError(ErrorCode.QUERY_TIMEOUT, "the query took too long and was cancelled")


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

    __slots__ = ("_begin", "_conn", "_database", "_lag_ok")

    def __init__(self, database: Database, tenant_id: uuid.UUID, *, readonly: bool,
                 lag_ok: bool = False) -> None:
        # The one value formatted into SQL: a UUID object renders as 36 hex digits and dashes,
        # never as anything a caller typed, so nothing can break out of the literal (injection).
        if not isinstance(tenant_id, uuid.UUID):
            raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
        if lag_ok and not readonly:
            raise ValueError("a transaction that may lag behind the primary must be read-only")
        self._database = database
        self._begin = _BEGIN[readonly].format(tenant_id)
        self._conn: asyncpg.Connection | None = None
        self._lag_ok = lag_ok

    async def __aenter__(self) -> asyncpg.Connection:
        if self._conn is not None:
            raise RuntimeError("cannot enter the tenant transaction; it is already entered")
        replica = self._database.replica if self._lag_ok else None
        if replica is not None:
            if replica.serving:
                try:
                    return await self._enter(replica.database)
                except ServiceError as exc:
                    if exc.code is not ErrorCode.CONNECTION_ERROR:
                        raise
                    # Gone since the last check: this call and the next go to the primary.
                    replica.failed(exc.__cause__ or exc)
            else:
                replica.fell_back()
        return await self._enter(self._database)

    async def _enter(self, database: Database) -> asyncpg.Connection:
        conn = await database.acquire()
        try:
            if (tracer := database.tracer) is None:
                await conn.execute(self._begin)
            else:
                await _traced_command(tracer, conn, self._begin, "BEGIN")
        except BaseException as exc:
            await database.release(conn, settled=False)
            if (error := _service_error(exc)) is not None:
                raise error from exc
            raise
        self._database = database  # released to the pool it came from
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
                    if (tracer := self._database.tracer) is None:
                        await conn.execute("COMMIT")
                    else:
                        await _traced_command(tracer, conn, "COMMIT", "COMMIT")
                    settled = True
                elif not conn.is_closed() and conn.is_in_transaction():
                    # Also when cancelled, as asyncpg's own transactions do; a connection that
                    # cannot even roll back is closed by the pool's release.
                    if (tracer := self._database.tracer) is None:
                        await conn.execute("ROLLBACK")
                    else:
                        await _traced_command(tracer, conn, "ROLLBACK", "ROLLBACK")
                    settled = True
            finally:
                await self._database.release(conn, settled=settled)
        except BaseException as failure:
            if (error := _service_error(failure)) is not None:
                raise error from failure
            raise
        if exc is not None and (error := _service_error(exc)) is not None:
            raise error from exc


async def _traced_command(tracer: Tracer, conn: asyncpg.Connection, sql: str,
                          command: str) -> None:
    """A transaction control statement in a span named ``command`` (BEGIN, COMMIT, ROLLBACK)
    when traced work runs it, as a named statement's (``tracing.statement_span``): a slow
    COMMIT (synchronous commit, a lock) shows. Only the command's name: BEGIN's text holds the
    tenant id."""
    span = statement_span(tracer, command, command)
    if span is None:
        await conn.execute(sql)
        return
    with span:
        await conn.execute(sql)


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
        keep_idle: bool = False, connect: Connect | None = None,
    ) -> None:
        self.pool = pool
        self.queries = queries
        # The tracer of the statements (None: tracing off), for the tenant transactions' own.
        self.tracer: Tracer | None = queries.tracer
        # Opens a connection outside the pool (see detached); None: this database opens none.
        self._connect = connect
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
        # The hot standby for reads that may lag (REPLICA_DATABASE_URL); None: there is none.
        self.replica: Replica | None = None

    def tenant(self, tenant_id: uuid.UUID, *, readonly: bool = False,
               lag_ok: bool = False) -> TenantTransaction:
        """A transaction in which only ``tenant_id``'s rows exist (``async with``).

        Commits when the block ends normally, rolls back when it raises. Driver failures leave
        it as ServiceError: CONNECTION_ERROR, QUERY_TIMEOUT, or VALIDATION_ERROR for a value the
        schema refuses.

        ``lag_ok`` (read-only only): the reads may miss the latest writes, so they go to the hot
        standby (``replica``) while it is in use, else to this database. Never for a read that
        must see a write just made (its own call's, or its client's previous call's).
        """
        return TenantTransaction(self, tenant_id, readonly=readonly, lag_ok=lag_ok)

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


    @asynccontextmanager
    async def detached(self, *, application_name: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, outside the pool, closed when the block ends: for work that
        waits on a third party while it keeps a session (a sync holds its instance's lock
        between pages while the source answers). On a pooled connection that wait would keep
        the connection from every other call, authentication included, for as long as the
        third party takes. CONNECTION_ERROR when it cannot be opened or breaks under the block.
        """
        if self._connect is None:
            raise RuntimeError("cannot open a detached connection; this database was given no "
                               "way to connect outside its pool")
        try:
            conn = await self._connect(application_name=application_name)
        except (TimeoutError, *_UNREACHABLE) as exc:
            raise connection_error() from exc
        try:
            yield conn
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, TimeoutError):
                await self._close(conn)
            else:
                # Cancelled or timed out, maybe mid-statement: end the session at once, which
                # also releases any session lock it holds (nothing else would).
                conn.terminate()
            if isinstance(exc, TimeoutError):
                raise _timeout_error() from exc
            if isinstance(exc, _UNREACHABLE):
                raise connection_error() from exc
            raise
        await self._close(conn)

    async def _close(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=self._acquire_timeout)
        except (TimeoutError, *_UNREACHABLE):
            conn.terminate()


class Connect(Protocol):
    """Opens one connection outside the pool (:func:`connect` with the pool's URL bound)."""

    def __call__(self, *, application_name: str) -> Awaitable[asyncpg.Connection]: ...


class _Waiter(NamedTuple):
    deadline: float  # loop time
    future: asyncio.Future[asyncpg.Connection]


def _is_open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        # A pool proxy detached by asyncpg: its connection closed and went back to the pool.
        return False
