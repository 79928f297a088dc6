"""Running explorer SQL: the pool, the tenant-bound read-only transaction, limits and errors.

Every explorer call takes one pooled connection (logged in as the explorer role) and one
transaction that is bound to the tenant and read-only before any caller SQL runs, and is always
rolled back. A query is one prepared statement (the unnamed one: the statement cache is off, so
nothing named is left on the server) read through a portal, at most ``max_rows + 1`` rows. When the
connection goes back to the pool, DISCARD ALL clears whatever session state could have been left:
settings, prepared statements, cursors, temporary objects, advisory locks, LISTEN.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..db import Database, connection_error, create_pool
from ..errors import ErrorCode, ServiceError
from ..queries import Queries
from .catalog import Catalog, load_catalog
from .results import column_type, shape_rows
from .validator import QueryValidator

__all__ = ["Explorer", "create_explorer_pool"]

# The JSON of one result stays under this (the MCP result carries it twice: structured + text).
MAX_RESULT_BYTES = 1 << 20


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


class Explorer:
    """The explorer's pool, validator and limits, built once at start-up."""

    def __init__(self, database: Database, validator: QueryValidator, catalog: Catalog, *,
                 timeout: float, max_rows: int) -> None:
        self.database = database
        self.validator = validator
        self.catalog = catalog
        self.timeout = timeout
        self.max_rows = max_rows

    @classmethod
    async def start(cls, pool: asyncpg.Pool, queries: Queries, *, acquire_timeout: float,
                    query_timeout: float, max_rows: int) -> Explorer:
        """Read the explorer schema's structure and build the validator over its relations."""
        database = Database(pool, queries, acquire_timeout=acquire_timeout)
        async with database.connection() as conn:
            catalog = await load_catalog(conn, queries)
        return cls(database, QueryValidator(catalog.names), catalog, timeout=query_timeout,
                   max_rows=max_rows)

    @property
    def queries(self) -> Queries:
        return self.database.queries

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
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                raise connection_error() from exc
            try:
                yield conn
            finally:
                if not conn.is_closed() and conn.is_in_transaction():
                    # On failure the pool's reset rolls back or drops the connection.
                    with contextlib.suppress(OSError, asyncpg.PostgresError,
                                             asyncpg.InterfaceError):
                        await self.queries.explorer_rollback(conn)

    async def query(self, tenant_id: uuid.UUID, sql: str, *, max_rows: int | None = None
                    ) -> dict[str, Any]:
        """Check and run one query for the tenant; the result is data for the tool envelope."""
        limit = min(max_rows or self.max_rows, self.max_rows)
        started = time.perf_counter()
        checked = self.validator.check(sql)
        validated = time.perf_counter()
        deadline = validated + self.timeout
        try:
            async with self.bound(tenant_id) as conn:
                # Parse/describe then bind/execute through a portal: one statement, never the
                # simple-query protocol that would accept "SELECT 1; DROP ...".
                stmt = await conn.prepare(checked.sql, timeout=self._left(deadline))
                attributes = stmt.get_attributes()
                cursor = await stmt.cursor(timeout=self._left(deadline))
                records = await cursor.fetch(limit + 1, timeout=self._left(deadline))
        except ServiceError:
            raise
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise ServiceError(
                ErrorCode.QUERY_TIMEOUT,
                f"the query ran longer than {self.timeout:g} s and was cancelled; narrow it "
                "(filters, LIMIT) or aggregate in SQL",
            ) from exc
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise connection_error() from exc
        except asyncpg.PostgresError as exc:
            raise _sql_error(exc) from exc
        executed = time.perf_counter()
        shaped = shape_rows(records, max_rows=limit, max_bytes=MAX_RESULT_BYTES)
        return {
            "columns": [{"name": a.name, "type": column_type(a.type)} for a in attributes],
            "rows": shaped.rows,
            "row_count": len(shaped.rows),
            "truncated": shaped.truncated,
            "truncated_by": shaped.truncated_by,
            "max_rows": limit,
            "sql": checked.sql,
            "explain": checked.explain,
            "timing": {
                "validate_ms": round((validated - started) * 1000, 3),
                "execute_ms": round((executed - validated) * 1000, 3),
            },
        }

    def _left(self, deadline: float) -> float:
        # The client-side backstop of statement_timeout: a little beyond it, never negative.
        return max(deadline - time.perf_counter(), 0.001) + 0.5
