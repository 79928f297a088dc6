"""A process's copy of a session shared through Redis (shared_sessions.py): the session's
fields as the last lookup found them, and what only this process holds of it (the calls it
runs, what they asked the client, the stream it holds). What it posts, claims or passes on goes
through its store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from .sessions import Session, SessionState

__all__ = ["SharedSession", "shared_fields"]


@dataclasses.dataclass(eq=False)
class SharedSession(Session):
    """A process's copy of a shared session, and what only this process holds of it."""

    store: Any = None                      # its SharedSessionStore
    key: str = ""                          # its Redis hash
    saved: dict[str, str] = dataclasses.field(default_factory=dict)
    saved_subscriptions: frozenset[str] = frozenset()
    # The values ``saved`` was made from (see ``unchanged``).
    saved_values: tuple[Any, ...] = ()
    rev: str = ""                          # the revision ``saved`` is of ('' unknown)
    stream_token: str | None = None        # set while this process holds its stream
    stream_holder: asyncio.Task[Any] | None = None  # the request serving it (shared_streams.py)
    stream_start: str = "0-0"              # the newest event when it opened the stream
    # Calls whose places the lookup claimed (request id as JSON → None, or why refused), for
    # claim_call to take.
    claimed: dict[bytes, str | None] = dataclasses.field(default_factory=dict)

    @property
    def _store(self) -> Any:
        assert self.store is not None
        return self.store

    def shared_values(self) -> tuple[Any, ...]:
        # The objects themselves, not copies: a request that changes the client's info or
        # capabilities assigns new ones (the dispatcher's initialize), and tuple equality
        # compares by identity first, so an unchanged session costs no JSON here.
        return (self.protocol_version, self.handshake_done, self.log_level, self.state,
                self.client_info, self.client_capabilities)

    def mark_saved(self, fields: dict[str, str], values: tuple[Any, ...],
                   subscriptions: frozenset[str]) -> None:
        """Redis holds ``fields``, made from ``values`` (shared_values), and ``subscriptions``."""
        self.saved = fields
        self.saved_values = values
        self.saved_subscriptions = subscriptions

    def unchanged(self) -> bool:
        """Nothing to save: what every request but a handful (initialize, setLevel,
        subscribe) finds, without building the fields."""
        return (self.saved_values == self.shared_values()
                and self.subscriptions == self.saved_subscriptions)

    def post(self, message: dict[str, Any]) -> bool:
        if self.state is SessionState.CLOSED:
            return False
        self._store.bus.add_event(self.key, message)
        return True

    async def claim_call(self, request_id: Any, *, tool: str | None = None,
                         actor: str | None = None, http_request_id: str | None = None
                         ) -> str | None:
        claimed = self.claimed.pop(orjson.dumps(request_id), False)
        if claimed is not False:
            return claimed
        return await self._store.claim_call(self, request_id, {
            "tool": tool, "actor": actor, "request": http_request_id})

    async def release_call(self, request_id: Any) -> None:
        await self._store.release_call(self, request_id)

    def expect_answer(self) -> tuple[str, asyncio.Future[Any]]:
        # The id names this process: the client's answer may reach another one, which sends
        # it here.
        if self.state is SessionState.CLOSED:
            return super().expect_answer()
        request_id = f"spiral-{self._store.bus.process_id}-{self.next_ask}"
        self.next_ask += 1
        answer = self.asked[request_id] = asyncio.get_running_loop().create_future()
        return request_id, answer

    def answer(self, request_id: Any, result: Any, error: Any) -> None:
        if request_id in self.asked or not isinstance(request_id, str):
            super().answer(request_id, result, error)
            return
        asker = request_id.split("-")[1] if request_id.count("-") == 2 else None
        if asker is not None and asker != self._store.bus.process_id:
            self._store.bus.send(asker, {"type": "answer", "key": self.key, "id": request_id,
                                         "result": result, "error": error})

    def cancel_call(self, request_id: Any) -> None:
        if request_id in self.inflight:
            super().cancel_call(request_id)
        elif self.state is not SessionState.CLOSED:
            self._store.bus.forward_cancel(self.key, request_id)


def shared_fields(session: Session) -> dict[str, str]:
    """What a request may change of a session, as the hash holds it."""
    fields = {
        "protocol_version": session.protocol_version,
        "handshake_done": "1" if session.handshake_done else "0",
        "log_level": session.log_level or "",
        "client_info": orjson.dumps(session.client_info).decode(),
        "client_capabilities": orjson.dumps(session.client_capabilities).decode(),
    }
    # CLOSING is this process's drain, not the session's: it is not written.
    if session.state is SessionState.READY:
        fields["state"] = "ready"
    elif session.state is SessionState.OPEN:
        fields["state"] = "open"
    return fields
