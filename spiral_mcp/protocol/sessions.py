"""MCP sessions: created by ``initialize``, bound to the API key that opened them, capped,
expired when idle, and ended by DELETE, by the client going away (legacy SSE) or by shutdown.

A session id alone never routes a message: a lookup needs the id *and* the key that created it,
so a leaked id is useless to another caller (and looks like any unknown id: 404).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import secrets
import time
import uuid
from typing import Any

__all__ = ["Session", "SessionLimitError", "SessionState", "SessionStore"]


class SessionState(enum.Enum):
    OPEN = "open"                # initialize answered, waiting for notifications/initialized
    READY = "ready"              # initialized: every method may flow
    CLOSED = "closed"


class SessionLimitError(Exception):
    """Too many sessions, in all or for one key."""


@dataclasses.dataclass(eq=False)
class Session:
    id: str
    key_id: uuid.UUID
    transport: str                    # "streamable" or "sse"
    protocol_version: str
    max_concurrent_calls: int
    state: SessionState = SessionState.OPEN
    handshake_done: bool = False      # initialize answered; a second one is refused
    log_level: str | None = None      # set by logging/setLevel; None: send no log messages
    client_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_seen: float = dataclasses.field(default_factory=time.monotonic)
    # Requests in flight by JSON-RPC id (the task each runs in), so notifications/cancelled can
    # stop the right one.
    inflight: dict[Any, asyncio.Task[Any]] = dataclasses.field(default_factory=dict)
    # Server-to-client messages waiting for the session's stream (GET /mcp or GET /sse).
    outbox: asyncio.Queue[dict[str, Any] | None] = dataclasses.field(
        default_factory=asyncio.Queue)
    # Events already sent on the GET stream, for Last-Event-ID resumption.
    sent: collections.deque[tuple[int, dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=256))
    next_event_id: int = 1
    stream_open: bool = False
    # Tool calls running now (capped by max_concurrent_calls); a cancelled call counts until it
    # has ended, even once it has left ``inflight``.
    calls_running: int = 0
    # Resource URIs the client subscribed to (resources/subscribe).
    subscriptions: set[str] = dataclasses.field(default_factory=set)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def mark_ready(self) -> None:
        if self.state is SessionState.CLOSED:
            raise RuntimeError("cannot initialize; the session is already closed")
        self.state = SessionState.READY

    def close(self) -> None:
        """End the session: cancel what runs, and tell its stream to finish."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        for request_id in list(self.inflight):
            self.cancel_call(request_id)
        self.outbox.put_nowait(None)

    def cancel_call(self, request_id: Any) -> None:
        """Stop the call in flight with this id, if any; it ends without an answer.

        It leaves ``inflight`` first: the call's task sees it gone and knows the cancellation
        was this one (see Dispatcher._run).
        """
        task = self.inflight.pop(request_id, None)
        if task is not None:
            task.cancel()

    def post(self, message: dict[str, Any]) -> None:
        """Queue a message for the session's stream."""
        if self.state is not SessionState.CLOSED:
            self.outbox.put_nowait(message)

    def record_sent(self, message: dict[str, Any]) -> int:
        event_id = self.next_event_id
        self.next_event_id += 1
        self.sent.append((event_id, message))
        return event_id

    def replay_after(self, event_id: int) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self.sent if i > event_id]


class SessionStore:
    def __init__(self, *, max_sessions: int, max_per_key: int, idle_timeout: float) -> None:
        self._max = max_sessions
        self._max_per_key = max_per_key
        self._idle_timeout = idle_timeout
        self._sessions: dict[str, Session] = {}

    def create(
        self, *, key_id: uuid.UUID, transport: str, protocol_version: str,
        max_concurrent_calls: int,
    ) -> Session:
        self.expire_idle()
        if len(self._sessions) >= self._max:
            raise SessionLimitError("the server has as many sessions open as it allows")
        if sum(1 for s in self._sessions.values() if s.key_id == key_id) >= self._max_per_key:
            raise SessionLimitError("this API key has as many sessions open as it allows")
        # 128 random bits, visible ASCII only, as the transport rules require.
        session = Session(
            id=secrets.token_hex(16), key_id=key_id, transport=transport,
            protocol_version=protocol_version, max_concurrent_calls=max_concurrent_calls,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, key_id: uuid.UUID, *, transport: str) -> Session | None:
        """The live session with this id opened by this key over this transport, or None."""
        session = self._sessions.get(session_id)
        if (session is None or session.key_id != key_id or session.transport != transport
                or session.state is SessionState.CLOSED):
            return None
        if time.monotonic() - session.last_seen > self._idle_timeout and not session.stream_open:
            self.remove(session)
            return None
        session.touch()
        return session

    def remove(self, session: Session) -> None:
        session.close()
        self._sessions.pop(session.id, None)

    def expire_idle(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if (now - session.last_seen > self._idle_timeout and not session.stream_open
                    and not session.inflight):
                self.remove(session)

    def close_all(self) -> None:
        for session in list(self._sessions.values()):
            self.remove(session)

    def count(self, transport: str) -> int:
        return sum(1 for s in self._sessions.values() if s.transport == transport)
