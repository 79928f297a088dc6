"""A process killed mid-call (SIGKILL, a lost host) must not leave its calls unanswered.

Each process registers the session tool calls it runs in ``spiral:p:<process>:calls`` (what the
call was, and on which session its answer must travel) and renews a heartbeat every second
(shared_bus.py). Every process looks, every few seconds, for registered processes whose heartbeat
is gone; one of them wins the dead process (SET NX) and answers each of its calls as failed: a
JSON-RPC error on the session's Redis stream (the GET or /sse stream delivers it, live or on
resumption), and an audit row with the error code PROCESS_LOST. Then the records go.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as redis
from redis.commands.core import AsyncScript

from ..handlers.audit import AuditEntry
from .jsonrpc import INTERNAL_ERROR, RpcError, error_message
from .shared_scripts import PROCESSES, process_alive, process_calls, process_reaper

__all__ = ["LOST_MESSAGE", "PROCESS_LOST", "Reaper"]

log = logging.getLogger(__name__)

LOST_MESSAGE = "the server process running this call stopped before it finished"
# The audit row's error code of such a call.
PROCESS_LOST = "PROCESS_LOST"
# Long enough for one process to answer every call of the dead one.
_CLAIM_MS = 60_000


class Reaper:
    """Answers the calls of dead processes (run periodically by every process)."""

    def __init__(self, client: redis.Redis, lost_call: AsyncScript, *, process_id: str,
                 events_kept: int, events_ttl_ms: int) -> None:
        self._client = client
        self._lost_call = lost_call
        self._process_id = process_id
        self._events_kept = events_kept
        self._events_ttl_ms = events_ttl_ms
        # Writes a call's audit row (the app's audit writer, once bound).
        self.audit: Callable[[AuditEntry], None] | None = None

    async def reap(self, *, steady: bool = True) -> None:
        if not steady:
            return  # this process's own heartbeat is just back: others' may be too, soon
        for raw in await self._client.smembers(PROCESSES):
            dead = raw.decode()
            if dead == self._process_id or await self._client.exists(process_alive(dead)):
                continue
            if await self._client.set(process_reaper(dead), self._process_id, nx=True,
                                      px=_CLAIM_MS):
                await self._answer_calls_of(dead)

    async def _answer_calls_of(self, dead: str) -> None:
        calls = await self._client.hgetall(process_calls(dead))
        for record in calls.values():
            call = orjson.loads(record)
            answer = error_message(call["id"], RpcError(INTERNAL_ERROR, LOST_MESSAGE))
            await self._lost_call(keys=[call["session"]],
                                  args=[orjson.dumps(call["id"]), orjson.dumps(answer),
                                        self._events_kept, self._events_ttl_ms])
            if self.audit is not None:
                self.audit(_entry(call))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(process_calls(dead))
            pipe.srem(PROCESSES, dead)
            await pipe.execute()
        if calls:
            log.warning("a server process stopped with calls running; they were answered as "
                        "failed", extra={"process": dead, "calls": len(calls)})


def _entry(call: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        tenant_id=uuid.UUID(call["tenant"]), key_id=uuid.UUID(call["key"]),
        actor=call.get("actor"), tool=call.get("tool") or "?", arguments=None, outcome="error",
        error_code=PROCESS_LOST, duration_ms=None, request_id=call.get("request"))
