"""The stream of a session shared through Redis (shared_sessions.py): held by one process at a
time, read from the session's Redis stream, resumable on any process.

A process that opens a session's stream marks it as its own (``<key>:stream``) and renews the
mark while it serves it; a mark not renewed for STREAM_MARK_MS (its process died) no longer
keeps another process from opening the stream, and a client resuming with ``Last-Event-ID``
takes it over at once. Events are the session stream's entries (``<key>:events``): their ids are
the SSE event ids. A POST's own stream (shared_posts.py) is resumed by its reader.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp import web
from redis.exceptions import RedisError

from . import shared_scripts as lua
from .http import STREAM_POLL_SECONDS, KeyNoLongerValid, client_gone
from .sessions import SessionState, SessionStoreUnavailable
from .shared_local import SharedSession
from .shared_posts import POST_EVENT_ID, PostStreamReader

__all__ = ["READ_BLOCK_MS", "SessionStreams"]

# The holder renews its mark every STREAM_KEEP_SECONDS; the mark lasts STREAM_MARK_MS.
STREAM_MARK_MS = 10_000
STREAM_KEEP_SECONDS = 3.0
# A stream waits at most this long on Redis between its checks (client gone, drain, key).
READ_BLOCK_MS = 1000


class SessionStreams:
    """Opening, keeping, reading and closing sessions' streams for one process."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis, *, process_id: str,
                 ttl_ms: int) -> None:
        # XREAD BLOCK waits longer than the commands' socket timeout allows.
        self._blocking = blocking
        self._process_id = process_id
        self._ttl_ms = ttl_ms  # of a ready session's keys
        self._open = client.register_script(lua.OPEN_STREAM)
        self._keep_mark = client.register_script(lua.KEEP_STREAM)
        self._release = client.register_script(lua.RELEASE_STREAM)
        self._posts = PostStreamReader(
            client, blocking, client.register_script(lua.RESUME_POST),
            mark_ms=STREAM_MARK_MS, block_ms=READ_BLOCK_MS)

    async def open(self, session: SharedSession, *, after: str | None) -> bool:
        """Take the session's stream (with ``after``, over from whoever holds it: that holder
        may be dead). Resuming a POST's stream takes nothing: it is not the session's."""
        if after is not None and POST_EVENT_ID.match(after):
            return True
        resuming = after is not None
        token = f"{self._process_id}:{secrets.token_hex(4)}"
        try:
            verdict = await self._open(
                keys=[f"{session.key}:stream", session.key],
                args=[token, STREAM_MARK_MS, "1" if resuming else "0", self._ttl_ms])
        except RedisError as exc:
            raise SessionStoreUnavailable(str(exc)) from exc
        if verdict[0] != b"ok":
            return False
        session.stream_start = verdict[1].decode()
        session.stream_token = token
        # The request serving the stream, as its task: a resumption on this very process
        # shares the local copy, so the token alone would not tell the streams apart.
        session.stream_holder = asyncio.current_task()
        session.stream_open = True
        return True

    async def close(self, session: SharedSession) -> bool:
        """Let the stream's mark go; whether it still was this stream's (not taken over)."""
        session.touch()
        if session.stream_holder is not asyncio.current_task():
            # Taken over by a resumption here (or never held: a POST's stream): the mark and
            # the token are the newer stream's, which must not end with this one.
            return False
        token, session.stream_token = session.stream_token, None
        session.stream_holder = None
        session.stream_open = False
        if token is None:
            return False
        try:
            return bool(await self._release(keys=[f"{session.key}:stream"], args=[token]))
        except RedisError as exc:
            raise SessionStoreUnavailable(str(exc)) from exc

    async def events(
        self, request: web.Request, session: SharedSession, *, after: str | None,
        key_still_valid: Callable[[], Awaitable[bool]] | None,
    ) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
        """The session's events after ``after`` (or from now), until the session ends, the
        client leaves, another process takes the stream over, or this one drains."""
        if after is not None and (post := POST_EVENT_ID.match(after)) is not None:
            async for item in self._posts.events(request, session, post[1], post[2],
                                                 key_still_valid=key_still_valid):
                yield item
            return
        events = f"{session.key}:events"
        last = after or session.stream_start
        now = time.monotonic()
        next_keep, next_check = now + STREAM_KEEP_SECONDS, now + STREAM_POLL_SECONDS
        while not client_gone(request) and session.state is not SessionState.CLOSED:
            if session.state is SessionState.CLOSING and session.idle:
                return  # this process drains: the client resumes elsewhere
            now = time.monotonic()
            if key_still_valid is not None and now >= next_check:
                if not await key_still_valid():
                    raise KeyNoLongerValid(f"the credential of session {session.id} is no "
                                           "longer valid")
                next_check = now + STREAM_POLL_SECONDS
            try:
                if now >= next_keep:
                    if not await self._keep(session):
                        return  # taken over by another process, or ended
                    next_keep = now + STREAM_KEEP_SECONDS
                read = await self._blocking.xread({events: last}, count=100,
                                                  block=READ_BLOCK_MS)
            except RedisError as exc:
                raise SessionStoreUnavailable(str(exc)) from exc
            for _, entries in read:
                for entry_id, values in entries:
                    last = entry_id.decode()
                    yield last, orjson.loads(values[b"m"])

    async def _keep(self, session: SharedSession) -> bool:
        if session.stream_token is None or session.stream_holder is not asyncio.current_task():
            return False
        kept = await self._keep_mark(
            keys=[f"{session.key}:stream", session.key],
            args=[session.stream_token, STREAM_MARK_MS, self._ttl_ms])
        if not kept:
            session.stream_token = None  # the mark is another process's now (or gone)
        return bool(kept)
