"""MCP sessions: created by ``initialize``, bound to the API key that opened them, capped,
expired when idle, and ended by DELETE, by the client going away (legacy SSE) or by shutdown.

Shutdown comes in two steps: :meth:`SessionStore.drain_all` when the server stops accepting
(running calls finish, new ones are refused, idle streams end), then
:meth:`SessionStore.close_all` once the grace period is over (whatever still runs is cancelled).

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
from collections.abc import Callable
from typing import Any

import orjson

from .jsonrpc import INVALID_PARAMS, RpcError

__all__ = ["MAX_CLIENT_DESCRIPTION_BYTES", "ClientError", "Session", "SessionLimitError",
           "SessionState", "SessionStore", "SessionStoreUnavailable", "check_client_description"]

# What initialize tells of the client (clientInfo, capabilities) is kept with its session; shared
# through Redis, every request of the session reads it back. Each is refused beyond this (as
# JSON): no client needs more, and a megabyte read on every ping would load Redis for everyone.
MAX_CLIENT_DESCRIPTION_BYTES = 65_536


def check_client_description(params: dict[str, Any]) -> None:
    """RpcError(-32602) when initialize's clientInfo or capabilities is too large to keep."""
    for name in ("clientInfo", "capabilities"):
        value = params.get(name)
        if isinstance(value, dict) and len(orjson.dumps(value)) > MAX_CLIENT_DESCRIPTION_BYTES:
            raise RpcError(INVALID_PARAMS, f"{name} is too large to keep with the session (at "
                                           f"most {MAX_CLIENT_DESCRIPTION_BYTES} bytes as JSON)")


class SessionState(enum.Enum):
    OPEN = "open"                # initialize answered, waiting for notifications/initialized
    READY = "ready"              # initialized: every method may flow
    CLOSING = "closing"          # shutting down: running calls finish, new ones are refused
    CLOSED = "closed"


class SessionLimitError(Exception):
    """Too many sessions, in all, for one tenant or for one key."""


class SessionStoreUnavailable(Exception):
    """The shared session store (Redis) cannot be reached: the request may be retried."""


class ClientError(Exception):
    """The client answered a request of ours with a JSON-RPC error (its ``error`` object)."""

    def __init__(self, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(message if isinstance(message, str) else "the client refused")
        self.error = error


@dataclasses.dataclass(eq=False)
class Session:
    id: str
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    scopes: frozenset[str]            # its key's: which list changes it hears
    transport: str                    # "streamable" or "sse"
    protocol_version: str
    max_concurrent_calls: int
    state: SessionState = SessionState.OPEN
    handshake_done: bool = False      # initialize answered; a second one is refused
    log_level: str | None = None      # set by logging/setLevel; None: send no log messages
    client_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    client_capabilities: dict[str, Any] = dataclasses.field(default_factory=dict)
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
    # Requests this server sent the client (sampling, elicitation), by id, awaiting its answer.
    asked: dict[str, asyncio.Future[Any]] = dataclasses.field(default_factory=dict)
    next_ask: int = 1

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def mark_ready(self) -> None:
        if self.state is SessionState.CLOSED:
            raise RuntimeError("cannot initialize; the session is already closed")
        if self.state is SessionState.OPEN:
            self.state = SessionState.READY

    @property
    def idle(self) -> bool:
        """No call runs (a cancelled one counts until it has ended)."""
        return self.calls_running == 0

    @property
    def evictable(self) -> bool:
        """Nothing would be lost by ending it: no stream open, no call running."""
        return not self.stream_open and self.idle

    def drain(self) -> None:
        """Shutdown: refuse new calls and let the running ones finish; the stream ends once no
        call runs (see http.session_messages), so what they send still reaches the client."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSING
        if self.idle:
            self.outbox.put_nowait(None)

    def close(self) -> None:
        """End the session: cancel what runs, and tell its stream to finish."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        for request_id in list(self.inflight):
            self.cancel_call(request_id)
        for answer in self.asked.values():
            if not answer.done():
                answer.set_exception(ClientError({"message": "the session ended"}))
        self.asked.clear()
        self.outbox.put_nowait(None)

    def cancel_call(self, request_id: Any) -> None:
        """Stop the call in flight with this id, if any; it ends without an answer.

        It leaves ``inflight`` first: the call's task sees it gone and knows the cancellation
        was this one (see Dispatcher._run).
        """
        task = self.inflight.pop(request_id, None)
        if task is not None:
            task.cancel()

    def expect_answer(self) -> tuple[str, asyncio.Future[Any]]:
        """An id for a request to the client, and the future its answer (or the session's end)
        will settle."""
        if self.state is SessionState.CLOSED:
            raise ClientError({"message": "the session ended"})
        request_id = f"spiral-{self.next_ask}"
        self.next_ask += 1
        answer = self.asked[request_id] = asyncio.get_running_loop().create_future()
        return request_id, answer

    def answer(self, request_id: Any, result: Any, error: Any) -> None:
        """The client's answer to one of this session's requests; others are ignored (only this
        session's key can reach it, and an id it was never sent means nothing)."""
        answer = self.asked.pop(request_id, None) if isinstance(request_id, str) else None
        if answer is None or answer.done():
            return
        if error is not None:
            answer.set_exception(ClientError(error))
        else:
            answer.set_result(result)

    async def claim_call(self, request_id: Any, *, tool: str | None = None,
                         actor: str | None = None, http_request_id: str | None = None
                         ) -> str | None:
        """Whether a tool call with this id may start: None, or why not ("busy": the session
        runs as many calls as it may; "duplicate": a call with this id runs). A shared session
        asks every process's calls, and records what the call is (the tool, who calls, the HTTP
        request) for the audit row another process writes should this one die mid-call
        (shared_sessions.py)."""
        if self.calls_running >= self.max_concurrent_calls:
            return "busy"
        if request_id in self.inflight:
            return "duplicate"
        return None

    async def release_call(self, request_id: Any) -> None:
        """The call claimed with this id has ended (nothing to do when in memory only)."""

    def offer_update(self, uri: str, message: dict[str, Any]) -> None:
        """Post ``message`` (``uri`` was updated) if the client subscribed to ``uri``."""
        if uri in self.subscriptions:
            self.post(message)

    def post(self, message: dict[str, Any]) -> bool:
        """Queue a message for the session's stream; False once the session has ended."""
        if self.state is SessionState.CLOSED:
            return False
        self.outbox.put_nowait(message)
        return True

    def record_sent(self, message: dict[str, Any]) -> int:
        event_id = self.next_event_id
        self.next_event_id += 1
        self.sent.append((event_id, message))
        return event_id

    def replay_after(self, event_id: int) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self.sent if i > event_id]


# A session whose client never sent notifications/initialized is abandoned much sooner than an
# idle one: a client that opens sessions it never uses must not hold places for half an hour.
UNINITIALIZED_TIMEOUT = 60.0


class SessionStore:
    """The sessions of this process, in its memory (one process, or stdio). The transports use
    the async interface (create, get, save, remove, open_stream, close_stream) that the
    Redis-backed store (shared_sessions.py) implements too."""

    # Whether a session's stream reads its messages from the store (Redis) rather than from
    # the session's outbox: see http.stream_events.
    shares_streams = False

    def __init__(self, *, max_sessions: int, max_per_tenant: int, max_per_key: int,
                 idle_timeout: float) -> None:
        self._max = max_sessions
        self._max_per_tenant = max_per_tenant
        self._max_per_key = max_per_key
        self._idle_timeout = idle_timeout
        # In order of last use, least recent first (``get`` moves a session to the end), so the
        # session a full key or tenant gives up is found from the front.
        self._sessions: dict[str, Session] = {}

    async def create(
        self, *, key_id: uuid.UUID, tenant_id: uuid.UUID, scopes: frozenset[str], transport: str,
        protocol_version: str, max_concurrent_calls: int,
    ) -> Session:
        return self.open_session(key_id=key_id, tenant_id=tenant_id, scopes=scopes,
                                 transport=transport, protocol_version=protocol_version,
                                 max_concurrent_calls=max_concurrent_calls)

    def open_session(
        self, *, key_id: uuid.UUID, tenant_id: uuid.UUID, scopes: frozenset[str], transport: str,
        protocol_version: str, max_concurrent_calls: int,
    ) -> Session:
        """A new session. At the key's or the tenant's cap, the key's own least recently used
        session with no stream and no call is ended to make room (never another key's: one
        client looping ``initialize`` must not end its neighbours' sessions); SessionLimitError
        when none can be."""
        self.expire_idle()
        self._make_room(lambda s: s.key_id == key_id, key_id, self._max_per_key,
                        "this API key (or user) has as many sessions open as it allows")
        # Per tenant too: one tenant's keys must not fill the server and lock every other
        # tenant out.
        self._make_room(lambda s: s.tenant_id == tenant_id, key_id, self._max_per_tenant,
                        "this tenant has as many sessions open as it allows")
        if len(self._sessions) >= self._max:
            raise SessionLimitError("the server has as many sessions open as it allows")
        # 128 random bits, visible ASCII only, as the transport rules require.
        session = Session(
            id=secrets.token_hex(16), key_id=key_id, tenant_id=tenant_id, scopes=scopes,
            transport=transport, protocol_version=protocol_version,
            max_concurrent_calls=max_concurrent_calls,
        )
        self._sessions[session.id] = session
        return session

    def _make_room(self, owned: Callable[[Session], bool], key_id: uuid.UUID, cap: int,
                   refusal: str) -> None:
        owned_now = [s for s in self._sessions.values() if owned(s)]
        if len(owned_now) < cap:
            return
        victim = next((s for s in owned_now if s.key_id == key_id and s.evictable), None)
        if victim is None:
            raise SessionLimitError(refusal)
        self._drop(victim)

    async def get(self, session_id: str, key_id: uuid.UUID, *, tenant_id: uuid.UUID,
                  transport: str, calls: list[tuple[Any, dict[str, Any]]] | None = None
                  ) -> Session | None:
        """The live session with this id opened by this key (or user) of this tenant over this
        transport, or None. The tenant is checked beside the key: a second wall, should two
        tenants' principals ever share an id.

        ``calls``: the tool calls (request id, what claim_call is told of it) the request
        brings, whose places a shared store claims in the same round trip; the transport gives
        back with ``release_unclaimed`` those the dispatcher did not take (here: nothing)."""
        session = self._sessions.get(session_id)
        if (session is None or session.key_id != key_id or session.tenant_id != tenant_id
                or session.transport != transport or session.state is SessionState.CLOSED):
            return None
        if self._expired(session, time.monotonic()):
            self._drop(session)
            return None
        session.touch()
        # Most recently used last: see _make_room.
        self._sessions[session_id] = self._sessions.pop(session_id)
        return session

    def release_unclaimed(self, session: Session, request_ids: list[Any]) -> None:
        """The places ``get`` claimed for these calls that no call took (refused before it
        ran): free them."""

    async def save(self, session: Session) -> None:
        """A request ran on ``session``: keep what it changed (here it lives in memory)."""

    async def remove(self, session: Session) -> None:
        self._drop(session)

    def _drop(self, session: Session) -> None:
        session.close()
        self._sessions.pop(session.id, None)

    async def open_stream(self, session: Session, *, after: str | None) -> bool:
        """Mark the session's stream as open (``after``: the Last-Event-ID it resumes from);
        False when one is open already (409)."""
        if session.stream_open:
            return False
        session.stream_open = True
        return True

    async def close_stream(self, session: Session) -> bool:
        """The stream ends; whether it still was the session's (not taken over elsewhere)."""
        session.stream_open = False
        session.touch()
        return True

    def event_id(self, header: str) -> str | None:
        """The Last-Event-ID to resume after, or None; ValueError when malformed. Here an id is
        a number (one process's count); anything else is ignored, as before."""
        return header if header.isascii() and header.isdigit() and len(header) <= 18 else None

    def post_stream(self, session: Session, request_ids: list[Any]) -> Any:
        """What records a POST's SSE answer for a resumption elsewhere (shared_posts.py); None:
        in one process, a POST's stream is not resumed."""
        return None

    def bind(self, *, changes: Any, audit: Any) -> None:
        """The change hub and the audit writer, for a store that relays changes between
        processes and answers the calls of a dead one (none here)."""

    def _expired(self, session: Session, now: float) -> bool:
        timeout = self._idle_timeout
        if session.state is SessionState.OPEN:
            timeout = min(timeout, UNINITIALIZED_TIMEOUT)
        return now - session.last_seen > timeout and session.evictable

    def expire_idle(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if self._expired(session, now):
                self._drop(session)

    def drain_all(self) -> None:
        """Shutdown has begun: every session finishes what runs and takes no new calls."""
        for session in self._sessions.values():
            session.drain()

    def close_all(self) -> None:
        """The grace period is over: end every session, cancelling what still runs."""
        for session in list(self._sessions.values()):
            self._drop(session)

    def live(self) -> list[Session]:
        """Every session not yet ended."""
        return [s for s in self._sessions.values() if s.state is not SessionState.CLOSED]

    def count(self, transport: str) -> int:
        return sum(1 for s in self._sessions.values() if s.transport == transport)
