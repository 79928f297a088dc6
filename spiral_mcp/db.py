"""The database: one asyncpg pool and the one way to touch tenant data.

Every read or write of tenant data happens inside :meth:`Database.tenant`, a transaction whose first
statement sets ``app.tenant_id`` for that transaction only (``set_config(..., true)``), so a pooled
connection never carries one tenant's context into another's request. Driver failures leave this
module as :class:`~spiral_mcp.errors.ServiceError` with CONNECTION_ERROR or QUERY_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from .errors import ErrorCode, ServiceError
from .queries import Queries

__all__ = [
    "Database", "connection_error", "create_pool", "init_connection", "keep_session",
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
    **pool_options: Any,
) -> asyncpg.Pool:
    """A pool whose connections give up fast: connecting within ``connect_timeout`` and each
    statement within ``statement_timeout`` (server-side, with a client-side backstop).

    ``server_settings`` add to the session settings; ``pool_options`` go to asyncpg as they are
    (the explorer pool sets its reset and turns the statement cache off)."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        command_timeout=statement_timeout + 1.0,
        max_inactive_connection_lifetime=60.0,
        init=init_connection,
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


# BEGIN and the tenant's setting in one simple-protocol message: one round trip instead of two
# (BEGIN cannot be pipelined with a bound statement through asyncpg). The protocol runs both in
# order, so the setting is in place before any statement of the transaction reads a row.
_BEGIN = {
    True: "BEGIN READ ONLY; SELECT set_config('app.tenant_id', '{}', true)",
    False: "BEGIN; SELECT set_config('app.tenant_id', '{}', true)",
}


@asynccontextmanager
async def _tenant_transaction(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, *, readonly: bool
) -> AsyncIterator[None]:
    # The one value formatted into SQL: a UUID object renders as 36 hex digits and dashes, never
    # as anything a caller typed, so nothing can break out of the literal (SQL injection).
    if not isinstance(tenant_id, uuid.UUID):
        raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
    await conn.execute(_BEGIN[readonly].format(tenant_id))
    try:
        yield
    except BaseException:
        # Also when cancelled, as asyncpg's own transactions do; a connection that cannot even
        # roll back is closed by the pool's release.
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


class Database:
    """The runtime pool and the named statements, built once at start-up."""

    def __init__(
        self, pool: asyncpg.Pool, queries: Queries, *, acquire_timeout: float
    ) -> None:
        self.pool = pool
        self.queries = queries
        self._acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def tenant(
        self, tenant_id: uuid.UUID, *, readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which only ``tenant_id``'s rows exist.

        Commits when the block ends normally, rolls back when it raises.
        """
        try:
            async with self.connection() as conn, _tenant_transaction(conn, tenant_id,
                                                                      readonly=readonly):
                yield conn
        except ServiceError:
            raise
        except asyncpg.QueryCanceledError as exc:
            raise _timeout_error() from exc
        except _UNREACHABLE as exc:
            raise connection_error() from exc
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            # A value the schema refuses (a NUL byte, a number out of range, a CHECK): the
            # caller's input, not our failure; nothing was written (the transaction rolled back).
            raise ServiceError(
                ErrorCode.VALIDATION_ERROR, f"the database refused a value: {exc.args[0]}",
                details=[{"path": "/", "message": str(exc.args[0])}],
            ) from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or CONNECTION_ERROR within the acquire timeout."""
        # With a connection idle the acquire cannot wait (opening a replacement for one closed
        # while idle is bounded by the connect timeout): no timer to arm and cancel, for the
        # acquire and again for the release's reset, which asyncpg bounds by the same timeout.
        timeout = None if self.pool.get_idle_size() else self._acquire_timeout
        try:
            conn = await self.pool.acquire(timeout=timeout)
        except (TimeoutError, *_UNREACHABLE) as exc:
            raise connection_error() from exc
        try:
            yield conn
        except TimeoutError as exc:
            # The client-side backstop of statement_timeout fired.
            raise _timeout_error() from exc
        finally:
            await self.pool.release(conn)

