"""Sessions shared through Redis: any process serves any request of any session.

What a session *is* lives in Redis (shared_scripts.py names the keys): its key binding, era,
state, log level, client's info and capabilities, subscriptions, the events of its stream, the
tool calls running on it (by request id → process) and which process holds its stream. What only
a process can hold stays in its memory, in a local :class:`SharedSession` per session it serves:
the tasks of the calls it runs (to cancel them), the futures of what it asked the client (to
resolve them), the HTTP stream it holds. A message for one of those reaches the process on its
channel (``spiral:p:<process>``); a session's end goes to every process on the broadcast
channel (shared_bus.py runs both); a change is written into the streams of the sessions that
should hear it by the process where it happens.

The dispatcher mutates the local object as it does in memory; the transport then ``save``s it,
which writes the shared fields that changed. Messages for the session's stream (``post``) are
added to its Redis stream, in order per process, and the process holding the stream (any one)
reads them there; entry ids are the SSE event ids, so a client resumes on any process.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp import web
from redis.exceptions import RedisError

from . import shared_scripts as lua
from .sessions import (
    UNINITIALIZED_TIMEOUT,
    Session,
    SessionLimitError,
    SessionState,
    SessionStore,
    SessionStoreUnavailable,
)
from .shared_bus import Bus
from .shared_line import RedisLine
from .shared_local import SharedSession, shared_fields
from .shared_posts import PostStream, checked_event_id
from .shared_reaper import Reaper
from .shared_streams import SessionStreams

__all__ = ["EVENTS_KEPT", "SharedSessionStore"]

log = logging.getLogger(__name__)

# Events kept per session stream for a resumption (Redis trims to about this many).
EVENTS_KEPT = 256
# How often every process looks for dead ones (a dead one is noticed within the heartbeat's TTL
# and this).
REAP_SECONDS = 2.0
# A local session nothing runs on is forgotten after this long (it stays in Redis); the local
# copies are looked after this often.
LOCAL_IDLE_SECONDS = 60.0
LOCAL_TEND_SECONDS = 30.0
# The TTLs and the LRU order of a session are refreshed by a lookup at most this often (less
# for a short idle timeout: a tenth of it).
_REFRESH_MS = 2000
_LINE_CHECK_SECONDS = 0.25
# What ``create`` makes (token_hex(16)). An id is part of Redis key names: anything else (a
# client's "<id>:subs", say, naming a companion key of another type) is no session, not a
# Redis error.
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_REFUSALS = {
    "key": "this API key (or user) has as many sessions open as it allows",
    "tenant": "this tenant has as many sessions open as it allows",
    "all": "the server has as many sessions open as it allows",
}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class SharedSessionStore(SessionStore):
    """Sessions in Redis, capped across processes, served by any of them."""

    shares_streams = True

    def __init__(self, client: redis.Redis, blocking: redis.Redis, *, max_sessions: int,
                 max_per_tenant: int, max_per_key: int, idle_timeout: float,
                 max_concurrent_calls: int) -> None:
        super().__init__(max_sessions=max_sessions, max_per_tenant=max_per_tenant,
                         max_per_key=max_per_key, idle_timeout=idle_timeout)
        self._max_calls = max_concurrent_calls
        self._client = client
        self.bus = Bus(client, blocking, on_message=self._on_message)
        # The lookup and the release, which every request makes, go on a line of their own.
        pool = client.connection_pool
        self._line = RedisLine(pool, timeout=pool.connection_kwargs.get("socket_timeout") or 1.0)
        self._create = client.register_script(lua.CREATE)
        self._lookup = client.register_script(lua.LOOKUP)
        self._save = client.register_script(lua.SAVE)
        self._claim = client.register_script(lua.CLAIM)
        self.reaper = Reaper(client, client.register_script(lua.LOST_CALL),
                             process_id=self.bus.process_id, events_kept=EVENTS_KEPT,
                             events_ttl_ms=_ms(idle_timeout))
        self._streams = SessionStreams(client, blocking, process_id=self.bus.process_id,
                                       ttl_ms=_ms(idle_timeout))
        self._process_calls = lua.process_calls(self.bus.process_id)
        self._ttl_ready = _ms(idle_timeout)
        self._ttl_open = _ms(min(idle_timeout, UNINITIALIZED_TIMEOUT))
        self._refresh_ms = min(_REFRESH_MS, self._ttl_open // 10)
        self.bus.events_kept = EVENTS_KEPT
        self.bus.events_ttl_ms = _ms(idle_timeout)
        # The local copies, by their Redis key.
        self._local: dict[str, SharedSession] = {}
        self._draining = False
        self._changes: Any = None

    # -- start and stop --------------------------------------------------------------------

    def start(self) -> None:
        self.bus.start()
        # Often enough to renew a running call's session well within its TTL.
        self.bus.every(min(LOCAL_TEND_SECONDS, self._idle_timeout / 3), self._tend_local)
        self.bus.every(REAP_SECONDS, lambda: self.reaper.reap(steady=self.bus.steady))
        self.bus.every(_LINE_CHECK_SECONDS, self._line.check)

    async def stop(self, *, grace: float = 1.0) -> None:
        await self.bus.stop(grace)
        await self._line.close()

    def bind(self, *, changes: Any, audit: Any) -> None:
        """Changes made here go to every process (their listeners), theirs come here, and
        those for sessions go straight to their Redis streams (shared_bus.py); the audit rows
        of a dead process's calls are written with ``audit``."""
        self._changes = changes
        changes.relay = self.bus.relay_change
        changes.announce = self.bus.announce
        self.reaper.audit = audit.enqueue

    # -- the session's life ----------------------------------------------------------------

    def _ttl_ms(self, ready: bool) -> int:
        return self._ttl_ready if ready else self._ttl_open

    async def create(
        self, *, key_id: uuid.UUID, tenant_id: uuid.UUID, scopes: frozenset[str], transport: str,
        protocol_version: str, max_concurrent_calls: int,
    ) -> Session:
        session_id = secrets.token_hex(16)  # 128 random bits, as in memory
        key = lua.session_key(tenant_id, session_id)
        session = self._local_copy(key, session_id, key_id=key_id, tenant_id=tenant_id,
                                   scopes=scopes, transport=transport,
                                   protocol_version=protocol_version,
                                   max_concurrent_calls=max_concurrent_calls)
        fields = {"key_id": str(key_id), "tenant_id": str(tenant_id), "transport": transport,
                  "scopes": orjson.dumps(sorted(scopes)).decode(),
                  "created": str(time.time()), **shared_fields(session)}
        try:
            outcome = await self._create(
                keys=[lua.SESSIONS_ALL, lua.tenant_sessions(tenant_id),
                      lua.key_sessions(tenant_id, key_id), key],
                args=[_ms(time.time()), self._max, self._max_per_tenant, self._max_per_key,
                      self._ttl_ms(ready=False), orjson.dumps(fields)])
        except RedisError as exc:
            raise SessionStoreUnavailable(str(exc)) from exc
        verdict = outcome[0].decode()
        if verdict != "ok":
            raise SessionLimitError(_REFUSALS[verdict])
        for ended in outcome[1:]:
            self.bus.broadcast({"type": "closed", "key": ended.decode()})
        session.mark_saved(fields, session.shared_values(), frozenset(session.subscriptions))
        session.rev = "1"
        self._local[key] = session
        return session

    def _local_copy(self, key: str, session_id: str, **values: Any) -> SharedSession:
        return SharedSession(id=session_id, store=self, key=key, **values)

    async def get(self, session_id: str, key_id: uuid.UUID, *, tenant_id: uuid.UUID,
                  transport: str, calls: list[tuple[Any, dict[str, Any]]] | None = None
                  ) -> Session | None:
        if not _SESSION_ID.fullmatch(session_id):
            return None
        tenant_set, key_set, key_name, tenant_name = lua.cap_sets(tenant_id, key_id)
        key = lua.session_key(tenant_name, session_id)
        local = self._local.get(key)
        # The revision of this copy's fields: Redis answers them only if they moved since.
        # The binding (key, tenant, transport) is checked in Redis all the same: a copy here
        # says nothing of whether the session still exists, or is the caller's.
        known = ("" if local is None or local.state is SessionState.CLOSED
                 or local.key_id != key_id or local.transport != transport else local.rev)
        keys = [lua.SESSIONS_ALL, tenant_set, key_set, key]
        args: list[Any] = [key_name, transport, self._ttl_ready, self._ttl_open,
                           int(time.time() * 1000), known, self._refresh_ms]
        fields_of_calls = []
        if calls:
            keys.append(self._process_calls)
            args += [self._max_calls, self.bus.process_id]
            for request_id, about in calls:
                field = orjson.dumps(request_id)
                fields_of_calls.append(field)
                args += [field, lua.call_field(session_id, request_id), orjson.dumps(
                    {"session": key, "id": request_id, "tenant": tenant_name,
                     "key": key_name, **about})]
        try:
            found = await self._line.script(self._lookup.sha, lua.LOOKUP, keys, args)
        except BaseException as exc:
            # Redis may have claimed the calls' places all the same (the lookup written, its
            # answer overdue or no longer awaited): given back, else they stay taken as long
            # as the session lives (its lookups renew them) and its calls are refused as busy.
            for request_id, _ in calls or ():
                self._release(key, session_id, request_id)
            if isinstance(exc, RedisError):
                raise SessionStoreUnavailable(str(exc)) from exc
            raise
        if found is None:
            # Ended elsewhere (or expired): so is this copy, if it is the caller's. A copy of
            # another transport is not: the caller named it through the wrong door (an /mcp
            # session's id in a GET /sse's Last-Event-ID), which must not end it here.
            if local is not None and local.key_id == key_id and local.transport == transport:
                self._forget(key)
            return None
        rev, raw, subscriptions, stream_open, verdicts = found
        rev = rev.decode()
        # Fields of the revision the copy has are not applied again: another lookup's answer
        # brought them, and a request may have changed the copy since (its save on its way),
        # which they would undo, here and then in Redis at its next save.
        has_them = (known and local is not None and local.state is not SessionState.CLOSED
                    and rev == local.rev)
        if (raw or not known or local is None) and not has_them:
            fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
            if local is None or local.state is SessionState.CLOSED:
                local = self._local[key] = self._local_copy(
                    key, session_id, key_id=key_id, tenant_id=tenant_id,
                    scopes=frozenset(orjson.loads(fields.get("scopes", "[]"))),
                    transport=transport, protocol_version=fields.get("protocol_version", ""),
                    max_concurrent_calls=self._max_calls)
            self._apply(local, fields, {s.decode() for s in subscriptions})
            local.rev = rev
        elif self._draining:
            local.drain()
        local.stream_open = bool(stream_open) or local.stream_token is not None
        for field, verdict in zip(fields_of_calls, verdicts, strict=True):
            local.claimed[field] = None if verdict == b"ok" else verdict.decode()
        local.touch()
        return local

    def release_unclaimed(self, session: Session, request_ids: list[Any]) -> None:
        assert isinstance(session, SharedSession)
        for request_id in request_ids:
            if session.claimed.pop(orjson.dumps(request_id), False) is None:
                self._release(session.key, session.id, request_id)

    def _apply(self, session: SharedSession, fields: dict[str, str],
               subscriptions: set[str]) -> None:
        session.protocol_version = fields.get("protocol_version", session.protocol_version)
        session.handshake_done = fields.get("handshake_done") == "1"
        session.log_level = fields.get("log_level") or None
        # Parsed again only when the JSON changed (another process's initialize).
        info = fields.get("client_info", "{}")
        if info != session.saved.get("client_info"):
            session.client_info = orjson.loads(info)
        capabilities = fields.get("client_capabilities", "{}")
        if capabilities != session.saved.get("client_capabilities"):
            session.client_capabilities = orjson.loads(capabilities)
        if session.state is not SessionState.CLOSING:
            session.state = (SessionState.READY if fields.get("state") == "ready"
                             else SessionState.OPEN)
        if self._draining:
            session.drain()
        session.subscriptions = subscriptions
        session.mark_saved(shared_fields(session), session.shared_values(),
                           frozenset(subscriptions))

    async def save(self, session: Session) -> None:
        assert isinstance(session, SharedSession)
        if session.unchanged():
            return
        values = session.shared_values()
        now = shared_fields(session)
        changed = {k: v for k, v in now.items() if session.saved.get(k) != v}
        subscriptions = frozenset(session.subscriptions)
        added = subscriptions - session.saved_subscriptions
        removed = session.saved_subscriptions - subscriptions
        if not (changed or added or removed):
            session.mark_saved(session.saved, values, subscriptions)  # equal, not the same
            return
        change = {"fields": changed, "add": sorted(added), "remove": sorted(removed)}
        known = session.rev
        try:
            rev = await self._line.script(
                self._save.sha, lua.SAVE, [session.key],
                [self._ttl_ms(now.get("state") == "ready"), orjson.dumps(change)])
        except RedisError as exc:
            session.rev = ""  # the next lookup reads the fields whole
            raise SessionStoreUnavailable(str(exc)) from exc
        session.mark_saved({**session.saved, **changed}, values, subscriptions)
        # This copy is current only if no other process saved since it last read the session
        # (else the next lookup reads the fields whole).
        session.rev = str(rev) if known and rev == int(known) + 1 else ""

    async def remove(self, session: Session) -> None:
        """End the session everywhere: its keys go, every process closes its copy (its stream
        ends, its calls are cancelled)."""
        assert isinstance(session, SharedSession)
        self._forget(session.key)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.eval(lua.END_POSTS, 1, f"{session.key}:postids", session.key)
                pipe.delete(*lua.session_keys(session.key))
                for cap_set in (lua.SESSIONS_ALL, lua.tenant_sessions(session.tenant_id),
                                lua.key_sessions(session.tenant_id, session.key_id)):
                    pipe.zrem(cap_set, session.key)
                pipe.publish(lua.BROADCAST, orjson.dumps({"type": "closed",
                                                          "key": session.key}))
                await pipe.execute()
        except RedisError as exc:
            raise SessionStoreUnavailable(str(exc)) from exc

    def _forget(self, key: str) -> None:
        local = self._local.pop(key, None)
        if local is not None:
            local.close()

    # -- calls -----------------------------------------------------------------------------

    async def claim_call(self, session: SharedSession, request_id: Any,
                         about: dict[str, Any]) -> str | None:
        """The call's place among the session's (across processes), and its record among this
        process's calls, for the reaper should this process die (shared_reaper.py)."""
        if session.calls_running >= session.max_concurrent_calls:
            return "busy"
        record = {"session": session.key, "id": request_id, "tenant": str(session.tenant_id),
                  "key": str(session.key_id), **about}
        try:
            verdict = await self._claim(
                keys=[f"{session.key}:calls", self._process_calls],
                args=[orjson.dumps(request_id), self.bus.process_id,
                      session.max_concurrent_calls, self._ttl_ms(ready=True),
                      lua.call_field(session.id, request_id), orjson.dumps(record)])
        except RedisError:
            return "unavailable"
        return None if verdict == b"ok" else verdict.decode()

    async def release_call(self, session: SharedSession, request_id: Any) -> None:
        self._release(session.key, session.id, request_id)

    def _release(self, key: str, session_id: str, request_id: Any) -> None:
        # On the line (no reply awaited), else through the bus's queue: either way written to
        # Redis in the next turn of the event loop, right after the call's answer, as the
        # bus's queue alone did (so a client's next call seldom finds the place still taken,
        # and then it is refused only at the cap). Should Redis be away, the place expires
        # with the session's calls hash.
        field = orjson.dumps(request_id)
        if self._line.send(("HDEL", f"{key}:calls", field),
                           ("HDEL", self._process_calls, lua.call_field(session_id, request_id))):
            return
        self.bus.delete_fields({f"{key}:calls": field,
                                self._process_calls: lua.call_field(session_id, request_id)})

    # -- the stream (shared_streams.py) -------------------------------------------------

    async def open_stream(self, session: Session, *, after: str | None) -> bool:
        assert isinstance(session, SharedSession)
        return await self._streams.open(session, after=after)

    async def close_stream(self, session: Session) -> bool:
        assert isinstance(session, SharedSession)
        return await self._streams.close(session)

    def event_id(self, header: str) -> str | None:
        return checked_event_id(header)

    def post_stream(self, session: Session, request_ids: list[Any]) -> PostStream:
        assert isinstance(session, SharedSession)
        return PostStream(self.bus, session.key, request_ids)

    def events(
        self, request: web.Request, session: Session, *, after: str | None,
        key_still_valid: Callable[[], Awaitable[bool]] | None,
    ) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
        assert isinstance(session, SharedSession)
        return self._streams.events(request, session, after=after,
                                    key_still_valid=key_still_valid)

    # -- messages from other processes -----------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "change":
            if self._changes is not None:
                self._changes.receive(message["change"])
            return
        local = self._local.get(message.get("key", ""))
        if kind == "closed":
            self._forget(message["key"])
        elif local is None:
            return
        elif kind == "cancel":
            Session.cancel_call(local, message["id"])
        elif kind == "answer":
            # Resolved only if this very session asked it (its own ``asked``).
            Session.answer(local, message["id"], message.get("result"), message.get("error"))

    # -- this process ----------------------------------------------------------------------

    async def _tend_local(self) -> None:
        """Local copies nothing runs on and no stream holds go (the session stays in Redis); a
        session with a call running here does not expire under it (as in memory), however long
        the call waits (an elicitation a person answers)."""
        cutoff = time.monotonic() - LOCAL_IDLE_SECONDS
        running = []
        for key, local in list(self._local.items()):
            if not local.idle:
                running.append(local)
            elif (local.last_seen < cutoff and not local.inflight and not local.asked
                    and local.stream_token is None):
                del self._local[key]
        if running:
            async with self._client.pipeline(transaction=False) as pipe:
                for local in running:
                    for key in lua.session_keys(local.key)[:4]:  # not its stream's mark
                        pipe.pexpire(key, self._ttl_ms(ready=True))
                await pipe.execute()

    def drain_all(self) -> None:
        """SIGTERM: this process's calls finish and its streams end; the sessions stay (their
        clients go on through another process)."""
        self._draining = True
        for session in self._local.values():
            session.drain()

    def close_all(self) -> None:
        """The grace is over: what still runs here is cancelled; the sessions stay in Redis."""
        for session in list(self._local.values()):
            session.close()
        self._local.clear()

    def live(self) -> list[Session]:
        """The sessions whose stream this process holds (the change hub leaves them to the
        process announcing a change: shared_bus.Bus.announce)."""
        return [s for s in self._local.values()
                if s.stream_token is not None and s.state is not SessionState.CLOSED]

    def count(self, transport: str) -> int:
        return sum(1 for s in self._local.values() if s.transport == transport)
