"""Running explorer SQL: the pool, the tenant-bound read-only transaction, limits and errors.

Every explorer call takes one pooled connection (logged in as the explorer role) and one
transaction that is bound to the tenant and read-only before any caller SQL runs, and is always
rolled back. A query is one prepared statement (the unnamed one: the statement cache is off, so
nothing named is left on the server) read through a portal, at most ``max_rows + 1`` rows. When the
connection goes back to the pool, DISCARD ALL clears whatever session state could have been left:
settings, prepared statements, cursors, temporary objects, advisory locks, LISTEN.

A SELECT is prepared as written (for its columns, and PostgreSQL's positions in its errors), with
the server showing its analysis of it, which must pass ``resolved``'s check; then it is run
inside a wrapper that sends each row as one record, or NULL when its text is beyond the
result's size limit, so a single huge value never leaves the server; rows are fetched in batches,
and fetching stops at that limit.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..db import Database, create_pool
from ..errors import ErrorCode, ServiceError
from ..queries import Queries
from ..roles import GUARDED_FUNCTIONS
from .catalog import Catalog, load_catalog
from .codecs import init_explorer_connection
from .resolved import Resolution, load_resolution
from .results import Shaper, UnreadableValue, column_type
from .validator import CheckedQuery, QueryValidator

__all__ = ["Explorer", "create_explorer_pool"]

# The JSON of one result stays under this (the MCP result carries it twice: structured + text).
MAX_RESULT_BYTES = 1 << 20
# Each row as one record, NULL when its text is over $1 bytes (defends against one value of
# hundreds of megabytes, built by nested replace(), landing in this process). The statement
# inside is the checked one, verbatim; the newline ends a trailing -- comment.
_CAPPED = "SELECT CASE WHEN octet_length(ROW(r.*)::text) <= $1 THEN ROW(r.*) END FROM (\n{}\n) AS r"
# A column name that needs no quotes in SQL.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


async def _discard_all(conn: asyncpg.Connection) -> None:
    # Pool reset: drops every trace a query could leave on the session (defends against a SET,
    # PREPARE, cursor, temp table or advisory lock reaching the next tenant on this connection).
    await conn.execute("DISCARD ALL")


async def create_explorer_pool(
    url: str, *, min_size: int, max_size: int, connect_timeout: float, query_timeout: float
) -> asyncpg.Pool:
    """A pool logging in as the explorer role: read-only by default, only the explorer schema on
    the search path (before pg_catalog), ``query_timeout`` per statement, no named statements."""
    return await create_pool(
        url, min_size=min_size, max_size=max_size, connect_timeout=connect_timeout,
        statement_timeout=query_timeout, application_name="spiral-mcp-explorer",
        server_settings={
            "search_path": "explorer, pg_catalog",
            "default_transaction_read_only": "on",
        },
        statement_cache_size=0,
        reset=_discard_all,
        init=init_explorer_connection,
    )


def _sql_error(exc: asyncpg.PostgresError) -> ServiceError:
    """PostgreSQL's own words for a mistake in the caller's SQL, so the agent can fix it."""
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


def _cancelled() -> ServiceError:
    # Not our statement_timeout: an operator or a shutdown cancelled the query.
    return ServiceError(ErrorCode.CONNECTION_ERROR,
                        "the query was cancelled on the database before its time limit; "
                        "try again", retry_after=1.0)


class Explorer:
    """The explorer's pool, validator and limits, built once at start-up."""

    def __init__(self, database: Database, validator: QueryValidator, catalog: Catalog,
                 resolution: Resolution, *, timeout: float, max_rows: int) -> None:
        self.database = database
        self.validator = validator
        self.catalog = catalog
        self.resolution = resolution
        self.timeout = timeout
        self.max_rows = max_rows

    @classmethod
    async def start(cls, pool: asyncpg.Pool, queries: Queries, *, acquire_timeout: float,
                    query_timeout: float, max_rows: int) -> Explorer:
        """Read the explorer schema's structure and the allowed OIDs; build the validator over
        the schema's relations."""
        database = Database(pool, queries, acquire_timeout=acquire_timeout)
        async with database.connection() as conn:
            catalog = await load_catalog(conn, queries)
            resolution = await load_resolution(conn, queries)
        validator = QueryValidator(catalog.columns())
        return cls(database, validator, catalog, resolution, timeout=query_timeout,
                   max_rows=max_rows)

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
        async with self.database.connection() as conn:
            try:
                await self.queries.explorer_begin(conn)
                await self.queries.explorer_bind(conn, tenant_id=str(tenant_id))
            except asyncpg.QueryCanceledError as exc:
                raise ServiceError(ErrorCode.QUERY_TIMEOUT, "the database did not answer in time") \
                    from exc
            try:
                yield conn
            finally:
                if not conn.is_closed() and conn.is_in_transaction():
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
            async with self.bound(tenant_id) as conn:
                # Parse/describe then bind/execute through a portal: one statement, never the
                # simple-query protocol that would accept "SELECT 1; DROP ...".
                stmt = await self.resolution.prepare(conn, checked.sql,
                                                     time_limit=self._left(deadline))
                attributes = stmt.get_attributes()
                shaped = await self._fetch(conn, checked, limit, deadline)
        except ServiceError:
            raise
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            if isinstance(exc, asyncpg.QueryCanceledError) \
                    and time.perf_counter() - validated < self.timeout:
                raise _cancelled() from exc
            raise ServiceError(
                ErrorCode.QUERY_TIMEOUT,
                f"the query ran longer than {self.timeout:g} s and was cancelled; narrow it "
                "(filters, LIMIT) or aggregate in SQL",
            ) from exc
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

    async def _fetch(self, conn: asyncpg.Connection, checked: CheckedQuery, limit: int,
                     deadline: float) -> Shaper:
        """Fetch through ``_CAPPED`` in batches until the rows or bytes are enough."""
        shaper = Shaper(max_rows=limit, max_bytes=MAX_RESULT_BYTES)
        stmt = await conn.prepare(_CAPPED.format(checked.statement), timeout=self._left(deadline))
        await self.resolution.check_held(conn, self.queries, checked.sql)
        cursor = await stmt.cursor(MAX_RESULT_BYTES, timeout=self._left(deadline))
        while not shaper.full:
            size = shaper.batch_size()
            batch = await cursor.fetch(size, timeout=self._left(deadline))
            for record in batch:
                shaper.add(record[0])
            if len(batch) < size:
                break
        return shaper

    def _left(self, deadline: float) -> float:
        # The client-side backstop of statement_timeout: a little beyond it, never negative.
        return max(deadline - time.perf_counter(), 0.001) + 0.5
