"""The answer of a POST on a shared session that is an SSE stream (progress, a question to the
client): its events are kept in Redis as well, in a stream of their own, so that a GET with the
Last-Event-ID of one of them resumes that POST's stream on any process, as the 2025-11-25
transport allows, with what the call sends after the client lost it, its answer included (or the
failure answer a reaper posts when the process running the call died: shared_reaper.py).

An event id of such a stream is ``<stream id>_<entry id>``: the first part tells which stream,
the second where in it. The stream begins with a priming entry and ends with an entry marking its
end (neither is a message).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp import web
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .http import STREAM_POLL_SECONDS, KeyNoLongerValid, client_gone
from .sessions import SessionState, SessionStoreUnavailable
from .shared_bus import Bus
from .shared_local import SharedSession

__all__ = ["POST_EVENT_ID", "POST_STREAMS_KEPT", "PostStream", "PostStreamReader",
           "checked_event_id", "post_stream_key"]

# A session's newest POST streams kept for a resumption; an older one is gone (as an expired
# one is: its resumption ends at once). Without a bound, a client asking for a streamed answer
# on every request would keep one stream per request in Redis for the idle timeout.
POST_STREAMS_KEPT = 64

# A POST stream's event id (Last-Event-ID): which stream, and the Redis entry id in it. ASCII
# digits only (``\d`` takes any script's), and ``\Z``: ``$`` would take a trailing newline.
POST_EVENT_ID = re.compile(r"^([0-9a-f]{16})_([0-9]{1,20}-[0-9]{1,20})\Z")


# A session stream's event id: a Redis entry id. Each half is a 64-bit unsigned number: a
# larger one Redis refuses (an error that must be the client's 400, not an outage's 503).
_EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")
_ENTRY_PART_MAX = 2**64 - 1


def checked_event_id(header: str) -> str | None:
    """A Last-Event-ID header as the event id it names (None: none given); ValueError for one
    this server never sends."""
    if not header:
        return None
    entry = (header if _EVENT_ID.match(header)
             else post[2] if (post := POST_EVENT_ID.match(header)) else None)
    if entry is None or any(int(part) > _ENTRY_PART_MAX for part in entry.split("-")):
        raise ValueError("Last-Event-ID must be an event id this server sent "
                         "(<digits>-<digits>, or <stream>_<digits>-<digits>)")
    return header


def post_stream_key(session_key: str, stream_id: str) -> str:
    return f"{session_key}:post:{stream_id}"


class PostStream:
    """Records one POST's SSE answer: each event in order (through the bus's one queue), and
    which of the session's requests it answers (``<session>:posts``: request id → stream), so a
    reaper answering one of them knows to answer on this stream."""

    def __init__(self, bus: Bus, session_key: str, request_ids: list[Any]) -> None:
        self.id = secrets.token_hex(8)
        self._bus = bus
        self._key = post_stream_key(session_key, self.id)
        self._posts = f"{session_key}:posts"
        self._requests = [orjson.dumps(r) for r in request_ids]
        self._count = 0
        bus.track_post(session_key, self.id, POST_STREAMS_KEPT)
        if self._requests:
            bus.map_requests(self._posts, self._requests, self.id)

    def prime(self) -> str:
        """The id of the stream's first event, sent with no data (the 2025-11-25 transport's
        priming event): a client that loses the stream before anything else was sent resumes
        from it. Its entry makes the stream exist in Redis from the start."""
        return self._add({"p": b"1"})

    def record(self, message: dict[str, Any]) -> str:
        """Keep ``message``; the event id to send it with."""
        return self._add({"m": orjson.dumps(message)})

    def _add(self, fields: dict[str, bytes]) -> str:
        self._count += 1
        entry = f"0-{self._count}"
        self._bus.add_entry(self._key, entry, fields)
        return f"{self.id}_{entry}"

    def finish(self) -> None:
        """Every answer is recorded: a resumed stream ends after them."""
        self._bus.end_entries(self._key, self._posts, self._requests)


class PostStreamReader:
    """A POST's stream resumed on any process (GET with the Last-Event-ID of one of its events):
    read from Redis, with at most as many readers of a session's POST streams at once, across
    processes, as the calls it may run."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis, resume: AsyncScript, *,
                 mark_ms: int, block_ms: int) -> None:
        self._client = client
        self._blocking = blocking  # a connection of its own for each blocking read
        self._resume = resume
        self._mark_ms = mark_ms
        self._block_ms = block_ms

    async def events(
        self, request: web.Request, session: SharedSession, stream_id: str, last: str, *,
        key_still_valid: Callable[[], Awaitable[bool]] | None,
    ) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
        """A POST's stream, resumed: its events after ``last``, until its end mark (its
        answers sent), the session's end, or the stream's expiry."""
        key = post_stream_key(session.key, stream_id)
        # As many readers at once, across processes, as the calls the session may run (each
        # a POST stream at most): a reader beyond them ends at once, as an unknown stream does.
        resuming, reader = f"{session.key}:resuming", secrets.token_hex(8)
        next_check = time.monotonic()
        try:
            while not client_gone(request) and session.state is not SessionState.CLOSED:
                try:
                    if time.monotonic() >= next_check:
                        if key_still_valid is not None and not await key_still_valid():
                            raise KeyNoLongerValid(f"the credential of session {session.id} is "
                                                   "no longer valid")
                        if not await self._client.exists(key):
                            return  # unknown, or expired: nothing more will come
                        if not await self._resume(
                                keys=[resuming, session.key],
                                args=[reader, round(time.time() * 1000), self._mark_ms,
                                      session.max_concurrent_calls]):
                            return
                        next_check = time.monotonic() + STREAM_POLL_SECONDS
                    read = await self._blocking.xread({key: last}, count=100,
                                                      block=self._block_ms)
                except RedisError as exc:
                    raise SessionStoreUnavailable(str(exc)) from exc
                for _, entries in read:
                    for entry_id, values in entries:
                        last = entry_id.decode()
                        if b"end" in values:
                            return  # every answer has been sent
                        if b"m" in values:  # not the priming entry
                            yield f"{stream_id}_{last}", orjson.loads(values[b"m"])
        finally:
            with contextlib.suppress(RedisError):
                await self._client.zrem(resuming, reader)
