"""One connection of the shared session store's own to Redis, for what every request sends: the
session's lookup and the release of a tool call's place (shared_sessions.py).

redis-py's client takes a connection from its pool per command (a lock, a check that the
connection has nothing unread, its observability hooks, a timeout context per read): ~85 us of
this process's CPU for one EVALSHA, more than the script costs Redis. Here commands are written
at once, in order, on one connection that redis-py made (so TLS, unix sockets, AUTH, the
database and Sentinel's master all work as for the client), and one task reads the replies in
the same order: concurrent requests pipeline by themselves. Once the connection is open, the
line takes over its transport's protocol: replies are parsed by hiredis as the bytes arrive and
handed straight to their waiters, with no reading task and no stream between (a task's wake-up
and redis-py's parser per reply were a third of what a lookup cost this process). A reply not
come within the client's socket timeout fails every waiting command (``check``), as a lost
connection does; the next command connects again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from hiredis import Reader, pack_command
from redis._parsers import BaseParser
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    InvalidResponse,
    NoScriptError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RedisLine"]

log = logging.getLogger(__name__)

# What hiredis answers while a reply is incomplete (False, its default, is a RESP3 reply).
_INCOMPLETE = object()


class RedisLine:
    """Pipelined commands on one connection: ``call`` waits for the reply, ``send`` does not."""

    def __init__(self, pool: ConnectionPool, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Task[Any] | None = None
        # What waits for each reply, in the order the commands were written: a future (None
        # for a reply nobody waits for) and when it was written.
        self._waiting: collections.deque[tuple[asyncio.Future[Any] | None, float]] = (
            collections.deque())
        self._closing: set[asyncio.Task[Any]] = set()
        self._out: list[bytes] = []
        self._flush_soon = False

    async def call(self, *args: Any) -> Any:
        """Send a command and return its reply (a RedisError for an error reply or a lost
        connection)."""
        conn = self._conn if self._conn is not None else await self._connect()
        answer = asyncio.get_running_loop().create_future()
        self._write(conn, args, answer)
        return await answer

    async def script(self, sha: str, text: str, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if Redis has forgotten it (a restart)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", text)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    def send(self, *commands: tuple[Any, ...]) -> bool:
        """Send commands whose replies nobody waits for, in this turn of the event loop's
        write; False when not connected (the caller falls back on the client)."""
        if self._conn is None:
            return False
        for args in commands:
            self._write(self._conn, args, None)
        return True

    def _write(self, conn: Any, args: tuple[Any, ...],
               answer: asyncio.Future[Any] | None) -> None:
        if conn is not self._conn:
            # Lost since the caller had it (while it waited for the connection): written on
            # the next one, the command would take the reply of the first command written
            # there, another request's.
            raise RedisConnectionError("lost the connection to Redis")
        # The commands of one turn of the event loop go out in one write (one system call for
        # every request that looked its session up meanwhile).
        self._out.append(pack_command(args))
        self._waiting.append((answer, time.monotonic()))
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if not self._out:
            return
        data, self._out = b"".join(self._out), []
        conn, transport = self._conn, self._transport
        if conn is None or transport is None:
            return  # lost meanwhile: its commands have failed already
        try:
            transport.write(data)
        except Exception as exc:
            self._lost(conn, RedisConnectionError(f"writing to Redis failed: {exc}"))

    async def _connect(self) -> Any:
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open())
            # Forgotten as it ends, not as a caller takes its connection: when every caller
            # has gone (cancelled), a later one must not be handed this connection, lost by
            # then maybe, or its old failure.
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, connecting: asyncio.Task[Any]) -> None:
        if self._connecting is connecting:
            self._connecting = None

    async def _open(self) -> Any:
        conn = self._pool.make_connection()
        try:
            async with asyncio.timeout(self._timeout):
                await conn.connect()
        except (TimeoutError, OSError) as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise RedisConnectionError(f"connecting to Redis failed: {exc}") from exc
        # Replies come to the line from here on (the handshake's were read by redis-py).
        transport = conn._writer.transport
        transport.set_protocol(_Replies(self, conn))
        if transport.is_closing() or conn._reader.at_eof():
            # Ended between the handshake and the line taking over: the new protocol would
            # never hear of it, and commands would wait out the timeout.
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise RedisConnectionError("Redis closed the connection as it opened")
        self._conn, self._transport = conn, transport
        return conn

    def _answer(self, conn: Any, reply: Any) -> None:
        answer, _ = self._waiting.popleft()
        # Every error Redis answers fails its command, not only a ResponseError: LOADING parses
        # as a ConnectionError (redis-py's client raises those, as a lost connection).
        if answer is None:
            if isinstance(reply, RedisError):
                log.warning("Redis refused a command of the session store",
                            extra={"error": str(reply)})
        elif answer.done():
            pass  # its caller was cancelled
        elif isinstance(reply, RedisError):
            answer.set_exception(reply)
        else:
            answer.set_result(reply)
        if isinstance(reply, ReadOnlyError | RedisConnectionError):
            # A Sentinel failover made this server a replica (READONLY), or one loading the
            # new master's data (LOADING; or Redis restarted): connect again (to the master).
            self._lost(conn, RedisConnectionError(f"Redis answered {reply}"))

    def _lost(self, conn: Any, error: RedisError) -> None:
        """Every command waiting on ``conn`` fails; the next one connects again."""
        if self._conn is not conn:
            return
        self._conn = self._transport = None
        self._out = []
        waiting, self._waiting = self._waiting, collections.deque()
        for answer, _ in waiting:
            if answer is not None and not answer.done():
                answer.set_exception(error)
        closing = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def check(self) -> None:
        """A reply overdue beyond the socket timeout: Redis is as good as away."""
        if (self._conn is not None and self._waiting
                and time.monotonic() - self._waiting[0][1] > self._timeout):
            self._lost(self._conn, RedisTimeoutError("Redis did not answer in time"))

    async def close(self) -> None:
        if self._connecting is not None:
            # Else a connection made after the close would be left open.
            with contextlib.suppress(RedisError):
                await self._connecting
        if self._conn is not None:
            self._lost(self._conn, RedisConnectionError("the session store's line closed"))
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task


class _Replies(asyncio.Protocol):
    """The line's connection once open: each reply parsed as its bytes arrive and given to the
    command written first among those waiting (Redis answers in order)."""

    def __init__(self, line: RedisLine, conn: Any) -> None:
        self._line = line
        self._conn = conn
        self._parser = Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error,
                              notEnoughData=_INCOMPLETE)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not _INCOMPLETE:
                if self._line._conn is not self._conn:
                    return  # lost (a replica's refusal, say): the rest is nobody's
                self._line._answer(self._conn, reply)
        except (InvalidResponse, IndexError) as exc:
            self._line._lost(self._conn, RedisConnectionError(f"Redis's reply is unreadable: "
                                                              f"{exc}"))

    def eof_received(self) -> bool:
        self._line._lost(self._conn, RedisConnectionError("Redis closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._line._lost(self._conn, RedisConnectionError(
            f"lost the connection to Redis: {exc or 'closed'}"))
