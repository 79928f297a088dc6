"""Running explorer SQL: the pool, the tenant-bound read-only transaction, limits and errors.

Every explorer call takes one pooled connection (logged in as the explorer role) and one
transaction that is bound to the tenant and read-only before any caller SQL runs, and is always
rolled back. A query is one statement (prepared unnamed: the statement cache is off, so nothing
named is left on the server) read through a cursor, at most ``max_rows + 1`` rows. When the
connection goes back to the pool, DISCARD ALL clears whatever session state could have been left:
settings, prepared statements, cursors, temporary objects, advisory locks, LISTEN.

A query is checked as PostgreSQL reads it (``resolved``: its analysis, and the relations it
locks), prepared as written (for its columns, and PostgreSQL's positions in its errors), then
opened as a cursor and read by server-side functions
(migration 0013): rows come as one record
each, in batches, and only while their sizes add up to the result's byte cap, so nothing beyond
it is ever read here; an error raised while planning or running comes with its text capped (it
can hold a whole value). What one query may take on the database is bounded there too: each
explorer backend's private memory (``roles.EXPLORER_MEMORY_LIMIT``, set as its connection opens),
and a call that gives up at its time limit closes its connection and has the runtime role end
the backend, which therefore never runs on past the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import asyncpg

from ..db import Database, create_pool
from ..errors import ErrorCode, ServiceError
from ..queries import Queries
from ..roles import EXPLORER_MEMORY_LIMIT, GUARDED_FUNCTIONS
from .catalog import Catalog, load_catalog
from .codecs import init_explorer_connection
from .resolved import Resolution, load_resolution
from .results import Shaper, UnreadableValue, column_type
from .standby import Standby, StandbyRefused
from .validator import CheckedQuery, QueryValidator

__all__ = ["MAX_RESULT_BYTES", "Explorer", "create_explorer_pool"]

log = logging.getLogger(__name__)

# The rows of one result, as read from the database and as JSON, stay under this (the MCP result
# carries them twice: structured + text).
MAX_RESULT_BYTES = 1 << 20
# The cursor a query is read through; it lives until the transaction rolls back.
_PORTAL = "explorer_rows"
# A column name that needs no quotes in SQL.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
# What the database says when a query outgrew what an explorer query may take there.
_TOO_LARGE = {
    "53200": f"the query needed more than the {EXPLORER_MEMORY_LIMIT >> 20} MiB of database "
             "memory an explorer query may use",
    "53400": "the query needed more temporary disk space than an explorer query may use",
}


async def _discard_all(conn: asyncpg.Connection) -> None:
    # Pool reset: drops every trace a query could leave on the session (defends against a SET,
    # PREPARE, cursor, temp table or advisory lock reaching the next tenant on this connection).
    await conn.execute("DISCARD ALL")


async def create_explorer_pool(
    url: str, *, min_size: int, max_size: int, connect_timeout: float, query_timeout: float,
    queries: Queries | None = None,
) -> asyncpg.Pool:
    """A pool logging in as the explorer role: read-only by default, only the explorer schema on
    the search path (before pg_catalog), ``query_timeout`` per statement, no named statements,
    and each backend's private memory limited as its connection opens (when provisioning could
    install the limit; ``Explorer.unguarded`` names it otherwise)."""
    limit_memory = (queries or Queries.load()).explorer_limit_memory

    async def limited(conn: asyncpg.Connection) -> None:
        await init_explorer_connection(conn)
        # Not provisioned here: the start-up warns. Any other failure refuses the connection.
        with contextlib.suppress(asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError,
                                 asyncpg.InsufficientPrivilegeError):
            await limit_memory(conn)

    return await create_pool(
        url, min_size=min_size, max_size=max_size, connect_timeout=connect_timeout,
        statement_timeout=query_timeout, application_name="spiral-mcp-explorer",
        server_settings={
            "search_path": "explorer, pg_catalog",
            "default_transaction_read_only": "on",
        },
        init=limited,
        statement_cache_size=0,
        reset=_discard_all,
    )


def _sql_error(exc: asyncpg.PostgresError) -> ServiceError:
    """PostgreSQL's own words for a mistake in the caller's SQL, so the agent can fix it."""
    if exc.sqlstate in _TOO_LARGE:
        # Not its detail: which memory context failed is ours, not the caller's.
        return ServiceError(
            ErrorCode.VALIDATION_ERROR,
            f"{_TOO_LARGE[exc.sqlstate]}; filter first, aggregate into fewer or smaller values, "
            "or return fewer rows",
            details=[{"sqlstate": exc.sqlstate, "construct": "query size"}])
    detail: dict[str, Any] = {"sqlstate": exc.sqlstate}
    for field in ("position", "detail", "hint"):
        if getattr(exc, field, None):
            detail[field] = int(exc.position) if field == "position" else getattr(exc, field)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError | asyncpg.ReadOnlySQLTransactionError):
        return ServiceError(ErrorCode.PERMISSION_DENIED,
                            f"not allowed: {exc.args[0] if exc.args else exc}", details=[detail])
    return ServiceError(ErrorCode.VALIDATION_ERROR, f"the query failed: {exc}", details=[detail])


def _unreadable(column: str, what: str) -> ServiceError:
    """A value PostgreSQL holds but the explorer cannot return, in ``column``."""
    name = column if _PLAIN_NAME.fullmatch(column) else '"{}"'.format(column.replace('"', '""'))
    return ServiceError(
        ErrorCode.VALIDATION_ERROR,
        f"column {column} holds {what}, which the explorer cannot return; cast it to text "
        f"({name}::text) or filter such rows out",
        details=[{"construct": "unreadable value", "column": column}],
    )


def _open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False  # closed and given back already (an abandoned query: ``Explorer._abandon``)


def _replay_conflict(exc: asyncpg.PostgresError) -> bool:
    """Whether a hot standby gave up the statement for a conflict with replay (40001). In a
    subtransaction, as every read of rows is (``fetch_rows`` catches errors), the server cannot
    cancel the statement alone and ends the session instead: its reason is the lost
    connection's cause."""
    return isinstance(exc, asyncpg.SerializationError) \
        or isinstance(exc.__cause__, asyncpg.SerializationError)


def _cancelled() -> ServiceError:
    # Not our statement_timeout: an operator or a shutdown cancelled the query.
    return ServiceError(ErrorCode.CONNECTION_ERROR,
                        "the query was cancelled on the database before its time limit; "
                        "try again", retry_after=1.0)


class _Session(NamedTuple):
    """An explorer transaction: its connection, a time its backend was alive, when its server
    started (which names it), the runtime role's database on the same server (None: none to end
    it with), and whether that is the standby."""

    conn: asyncpg.Connection
    alive_at: dt.datetime
    server_started: dt.datetime
    runtime: Database | None
    on_standby: bool


class Explorer:
    """The explorer's pool, validator and limits, built once at start-up. ``runtime``: the
    runtime role's database, which ends backends that timed-out calls left running."""

    def __init__(self, database: Database, validator: QueryValidator, catalog: Catalog,
                 resolution: Resolution, *, timeout: float, max_rows: int,
                 runtime: Database | None = None) -> None:
        self.database = database
        # The hot standby that serves explorer reads while it is in use (REPLICA_DATABASE_URL).
        self.standby: Standby | None = None
        self.validator = validator
        self.catalog = catalog
        self.resolution = resolution
        self.timeout = timeout
        self.max_rows = max_rows
        self.runtime = runtime
        self._endings: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, pool: asyncpg.Pool, queries: Queries, *, acquire_timeout: float,
                    query_timeout: float, max_rows: int, runtime: Database | None = None
                    ) -> Explorer:
        """Read the explorer schema's structure and the allowed OIDs; build the validator over
        the schema's relations."""
        database = Database(pool, queries, acquire_timeout=acquire_timeout)
        async with database.connection() as conn:
            catalog = await load_catalog(conn, queries)
            resolution = await load_resolution(conn, queries)
        validator = QueryValidator(catalog.columns())
        return cls(database, validator, catalog, resolution, timeout=query_timeout,
                   max_rows=max_rows, runtime=runtime)

    async def close(self) -> None:
        """Wait for backends being ended (before the runtime pool closes)."""
        if self._endings:
            await asyncio.wait(self._endings, timeout=5)

    @property
    def queries(self) -> Queries:
        return self.database.queries

    async def unguarded(self) -> list[str]:
        """What the explorer role may still do that provisioning takes from it (see
        ``roles.guard_database``): the validator is the first wall, this the second."""
        async with self.database.connection() as conn:
            rows = await self.queries.explorer_unguarded(conn, functions=list(GUARDED_FUNCTIONS))
        return [row["exposed"] for row in rows]

    @asynccontextmanager
    async def bound(self, tenant_id: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
        """A read-only transaction in which only ``tenant_id``'s rows exist; always rolled back."""
        async with self._session(tenant_id) as session:
            yield session.conn

    @asynccontextmanager
    async def _session(self, tenant_id: uuid.UUID, *, standby_ok: bool = True
                       ) -> AsyncIterator[_Session]:
        """``bound``, with the transaction's start (a time its backend was alive) and the
        runtime role's database on the same server. On the standby while it is in use and
        ``standby_ok``; on the primary otherwise, or when the standby fails before the block."""
        standby = self.standby
        if standby is not None and standby_ok and standby.replica.serving:
            entered = False
            try:
                async with self._bound_on(standby.database, tenant_id, standby) as session:
                    entered = True
                    yield session
                return
            except ServiceError as exc:
                if entered or exc.code is not ErrorCode.CONNECTION_ERROR:
                    raise
                standby.replica.failed(exc.__cause__ or exc)
            except StandbyRefused as exc:
                log.warning("the standby refused the explorer's binding; served by the "
                            "primary", extra={"error": str(exc)[:200]})
                standby.replica.fell_back("refused")
        elif standby is not None:
            standby.replica.fell_back()
        async with self._bound_on(self.database, tenant_id, None) as session:
            yield session

    @asynccontextmanager
    async def _bound_on(self, database: Database, tenant_id: uuid.UUID, standby: Standby | None
                        ) -> AsyncIterator[_Session]:
        async with database.connection() as conn:
            try:
                if standby is None:
                    await self.queries.explorer_begin(conn)
                    bound = await self.queries.explorer_bind(conn, tenant_id=str(tenant_id))
                else:
                    bound = await standby.bind(conn, self.queries, tenant_id)
            except asyncpg.QueryCanceledError as exc:
                raise ServiceError(ErrorCode.QUERY_TIMEOUT, "the database did not answer in time") \
                    from exc
            try:
                yield _Session(conn, bound["alive_at"], bound["server_started"],
                               self.runtime if standby is None else standby.replica.database,
                               standby is not None)
            finally:
                if _open(conn) and conn.is_in_transaction():
                    # On failure the pool's reset rolls back or drops the connection.
                    with contextlib.suppress(OSError, asyncpg.PostgresError,
                                             asyncpg.InterfaceError,
                                             asyncpg.InternalClientError):
                        await self.queries.explorer_rollback(conn)

    async def query(self, tenant_id: uuid.UUID, sql: str, *, max_rows: int | None = None
                    ) -> dict[str, Any]:
        """Check and run one query for the tenant; the result is data for the tool envelope."""
        limit = min(max_rows or self.max_rows, self.max_rows)
        started = time.perf_counter()
        checked = self.validator.check(sql)
        validated = time.perf_counter()
        deadline = validated + self.timeout
        attributes: list[Any] = []
        try:
            standby_ok = True
            while True:
                async with self._session(tenant_id, standby_ok=standby_ok) as session:
                    conn = session.conn
                    try:
                        # Parse/describe (one statement, never the simple-query protocol that
                        # would accept "SELECT 1; DROP ..."), then the cursor.
                        await self.resolution.check(conn, self.queries, checked.statement,
                                                    sql=checked.sql,
                                                    time_limit=self._left(deadline))
                        stmt = await conn.prepare(checked.sql, timeout=self._left(deadline))
                        attributes = stmt.get_attributes()
                        shaped = await self._fetch(conn, checked, limit, deadline)
                        break
                    except TimeoutError as exc:
                        # The server did not stop at its statement_timeout: it may still run.
                        self._abandon(session)
                        raise self._timed_out() from exc
                    except asyncio.CancelledError:
                        self._abandon(session)
                        raise
                    except (asyncpg.SerializationError,
                            asyncpg.ConnectionDoesNotExistError) as exc:
                        # On a standby: cancelled by a conflict with replay (rows it read were
                        # vacuumed on the primary, a lock it held was taken there). Once more,
                        # on the primary, in the time left.
                        if not session.on_standby or not _replay_conflict(exc) \
                                or time.perf_counter() >= deadline:
                            raise
                assert self.standby is not None
                self.standby.replica.fell_back("conflict")
                standby_ok = False
        except ServiceError:
            raise
        except asyncpg.QueryCanceledError as exc:
            if time.perf_counter() - validated < self.timeout:
                raise _cancelled() from exc
            raise self._timed_out() from exc
        except asyncpg.PostgresError as exc:
            raise _sql_error(exc) from exc
        except UnreadableValue as exc:
            raise _unreadable(attributes[exc.column].name, exc.what) from None
        executed = time.perf_counter()
        return {
            "columns": [{"name": a.name, "type": column_type(a.type)} for a in attributes],
            "rows": shaped.rows,
            "row_count": len(shaped.rows),
            "truncated": shaped.full,
            "truncated_by": shaped.truncated_by,
            "max_rows": limit,
            "sql": checked.sql,
            "timing": {
                "validate_ms": round((validated - started) * 1000, 3),
                "execute_ms": round((executed - validated) * 1000, 3),
            },
        }

    def _timed_out(self) -> ServiceError:
        return ServiceError(
            ErrorCode.QUERY_TIMEOUT,
            f"the query ran longer than {self.timeout:g} s and was cancelled; narrow it "
            "(filters, LIMIT) or aggregate in SQL",
        )

    async def _fetch(self, conn: asyncpg.Connection, checked: CheckedQuery, limit: int,
                     deadline: float) -> Shaper:
        """Open the statement as a cursor and fetch in batches until the rows or bytes are
        enough. The server sends a row only while the rows so far and it fit MAX_RESULT_BYTES
        (in the binary form they travel in), so no more than that is read here; a row that does
        not fit ends the result (``truncated_by: max_bytes``)."""
        shaper = Shaper(max_rows=limit, max_bytes=MAX_RESULT_BYTES)
        opened = self.queries.explorer_open
        await conn.fetchval(opened.sql, *opened.bind({"portal": _PORTAL,
                                                      "statement": checked.statement}),
                            timeout=self._left(deadline))
        fetch = self.queries.explorer_fetch
        left = MAX_RESULT_BYTES
        while not shaper.full:
            size = shaper.batch_size()
            batch = await conn.fetch(
                fetch.sql, *fetch.bind({"portal": _PORTAL, "how_many": size, "max_bytes": left}),
                timeout=self._left(deadline))
            for row in batch:
                if row["bytes"] is None:
                    shaper.add(None)  # the next row would pass the cap: never sent
                    break
                left -= row["bytes"]
                shaper.add(row["r"])
            if len(batch) < size:
                break
        return shaper

    def _abandon(self, session: _Session) -> None:
        """A call gives up on a query the server may still be running: its connection is closed
        now (never reused; the backend sees its client gone within a second, at its next
        interrupt check) and, as the runtime role on the same server (the standby's backends
        can be signalled only there), the backend is ended. By pid and a time it was alive, so
        that a session that reused the pid is never hit, and only on the server it ran on (the
        runtime pool may reach another: two standbys behind one name), where the pid could be
        another tenant's session."""
        pid = session.conn.get_server_pid()
        session.conn.terminate()
        if session.runtime is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._end_backend(session.runtime, pid, session.alive_at, session.server_started))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _end_backend(self, runtime: Database, pid: int, alive_at: dt.datetime,
                           server_started: dt.datetime) -> bool:
        """Whether the backend was signalled."""
        try:
            async with runtime.connection() as conn:
                return bool(await self.queries.explorer_end_backend(
                    conn, pid=pid, alive_at=alive_at, server_started=server_started))
        except (ServiceError, asyncpg.PostgresError) as exc:
            # Without explorer_guard (not provisioned) the closed connection still ends it.
            log.warning("could not end an abandoned explorer backend",
                        extra={"pid": pid, "error": str(exc)[:200]})
            return False

    def _left(self, deadline: float) -> float:
        # The client-side backstop of statement_timeout: a little beyond it, never negative.
        return max(deadline - time.perf_counter(), 0.001) + 0.5
