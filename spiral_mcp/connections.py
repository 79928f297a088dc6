"""Opening PostgreSQL connections: the session settings every connection of the product runs
with, the json/jsonb codecs, pools and a connection outside any pool.

The tenant transactions and the pool's hand-over of connections are ``db.py``'s, which re-exports
these names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson

__all__ = ["close_pool", "connect", "create_pool", "init_connection", "keep_session"]


def _encode_json(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value, default=str)


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"jsonb in an unknown binary format (version {data[:1]!r})")
    return orjson.loads(memoryview(data)[1:])


# jsonb's binary form: a version byte, then the JSON text.
_JSONB_VERSION = b"\x01"


async def init_connection(conn: asyncpg.Connection) -> None:
    """json and jsonb values travel as Python objects, parsed and written by orjson.

    In the binary format: asyncpg decodes a value inside a record or array in that format with
    whatever codec its type has, so a text-format codec would be handed binary jsonb (a version
    byte first) and fail on every jsonb value in a ``ROW(...)`` or whole-row reference."""
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_encode_json,
                              decoder=orjson.loads, format="binary")
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=_encode_jsonb,
                              decoder=_decode_jsonb, format="binary")


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
    init: Callable[[asyncpg.Connection], Awaitable[None]] = init_connection,
    **pool_options: Any,
) -> asyncpg.Pool:
    """A pool whose connections give up fast: connecting within ``connect_timeout`` and each
    statement within ``statement_timeout`` (server-side, with a client-side backstop).

    ``server_settings`` add to the session settings; ``init`` sets up each new connection (by
    default: :func:`init_connection`); ``pool_options`` go to asyncpg as they are (the explorer
    pool sets its reset and turns the statement cache off)."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        command_timeout=statement_timeout + 1.0,
        max_inactive_connection_lifetime=60.0,
        init=init,
        server_settings=_session_settings(statement_timeout, application_name, server_settings),
        **pool_options,
    )


async def connect(url: str, *, connect_timeout: float, statement_timeout: float,
                  application_name: str) -> asyncpg.Connection:
    """One connection outside any pool, set up as a pooled one is (see :func:`create_pool`)."""
    conn = await asyncpg.connect(
        url, timeout=connect_timeout, command_timeout=statement_timeout + 1.0,
        server_settings=_session_settings(statement_timeout, application_name, None))
    try:
        await init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


def _session_settings(statement_timeout: float, application_name: str,
                      extra: Mapping[str, str] | None) -> dict[str, str]:
    return {
        "application_name": application_name,
        # Our statements are short; JIT compilation cost up to a second on report queries.
        "jit": "off",
        "statement_timeout": str(int(statement_timeout * 1000)),
        # A connection stuck in an open transaction would hold locks; end it server-side.
        "idle_in_transaction_session_timeout": str(int((statement_timeout + 5) * 1000)),
        **(extra or {}),
    }


async def close_pool(pool: asyncpg.Pool, *, grace: float) -> None:
    """Close gracefully within ``grace`` seconds (connections finish their work), then force."""
    try:
        await asyncio.wait_for(pool.close(), timeout=grace)
    except TimeoutError:
        pool.terminate()
