"""What a process of the shared session store sends and hears through Redis.

Sends go through one queue pumped by one task, so a session's messages reach its Redis stream in
the order this process posted them (``session.post`` cannot wait: the change hub and a call's
senders post from synchronous code). One pub/sub connection hears this process's own channel
(a cancel or a client's answer for a call running here) and the broadcast channel (a session
ended, a change to tell listeners); it subscribes again by itself after Redis comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from .changes import PROMPTS_CHANGED, RESOURCE_UPDATED, TOOLS_CHANGED
from .shared_scripts import (
    ANNOUNCE_LIST,
    ANNOUNCE_UPDATES,
    BROADCAST,
    PROCESSES,
    SESSIONS_ALL,
    TRACK_POST,
    process_alive,
    process_calls,
    process_channel,
    tenant_namespace,
)

__all__ = ["HEARTBEAT_SECONDS", "HEARTBEAT_TTL_SECONDS", "Bus"]

log = logging.getLogger(__name__)

# At most this many queued sends go to Redis in one round trip.
_BATCH = 256
# Sends waiting beyond this many (Redis is away) are dropped, oldest kept: memory stays bounded.
_MAX_QUEUED = 10_000
_RECONNECT_SECONDS = 1.0
# A process renews its heartbeat every second; one not renewed for 5 s is dead (SIGKILL, a lost
# host), and another process answers the calls it was running.
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TTL_SECONDS = 5.0

_Op = Callable[[Any], object]


class Bus:
    """This process's sends to Redis and its pub/sub listener."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis, *,
                 on_message: Callable[[dict[str, Any]], None]) -> None:
        self._client = client
        self._blocking = blocking
        self._on_message = on_message
        # Random, so a restarted process is a new one (its predecessor's calls are not its own).
        self.process_id = secrets.token_hex(6)
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.events_kept = 256
        self._beating_since: float | None = None
        self.events_ttl_ms = 1_800_000

    def start(self) -> None:
        self._spawn(self._pump(), "shared-sessions-pump")
        self._spawn(self._listen(), "shared-sessions-listen")
        self.every(HEARTBEAT_SECONDS, self._beat, first=0.0)

    @property
    def steady(self) -> bool:
        """Whether this process's heartbeat has been renewed without a miss for longer than a
        heartbeat lives: only then may it judge another dead (after an outage of Redis, every
        heartbeat is gone until each process renews its own)."""
        return (self._beating_since is not None
                and time.monotonic() - self._beating_since > HEARTBEAT_TTL_SECONDS + 1.0)

    def every(self, seconds: float, work: Callable[[], Awaitable[None] | None], *,
              first: float | None = None) -> None:
        """Run ``work`` every ``seconds`` (the first time after ``first``), whatever it raised
        the last time (Redis away: it tries again)."""
        async def periodically() -> None:
            await asyncio.sleep(seconds if first is None else first)
            while True:
                try:
                    outcome = work()
                    if inspect.isawaitable(outcome):
                        await outcome
                except (RedisError, OSError) as exc:
                    log.debug("periodic work of the session store failed",
                              extra={"error": str(exc)})
                except Exception:
                    log.exception("periodic work of the session store failed")
                await asyncio.sleep(seconds)

        self._spawn(periodically(), "shared-sessions-periodic")

    async def _beat(self) -> None:
        """This process runs: its heartbeat, renewed well within its TTL."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(process_alive(self.process_id), b"1",
                         px=round(HEARTBEAT_TTL_SECONDS * 1000))
                pipe.sadd(PROCESSES, self.process_id)
                await pipe.execute()
        except BaseException:
            self._beating_since = None
            raise
        if self._beating_since is None:
            self._beating_since = time.monotonic()

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 1.0) -> None:
        """Send what is queued (within ``grace``), then stop listening."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._queue.join()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        # Stopped in good order: its calls have ended (or were cut, and answered by it), so
        # there is nothing for another process to answer.
        with contextlib.suppress(RedisError, OSError):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(process_alive(self.process_id), process_calls(self.process_id))
                pipe.srem(PROCESSES, self.process_id)
                await pipe.execute()

    # -- sends -----------------------------------------------------------------------------

    def _put(self, op: _Op) -> None:
        if self._queue.qsize() >= _MAX_QUEUED:
            log.warning("dropped a message for the session store: too many wait for Redis")
            return
        self._queue.put_nowait(op)

    def add_event(self, key: str, message: dict[str, Any]) -> None:
        """Append a message to the session's stream (read by the process holding it)."""
        events, data = f"{key}:events", orjson.dumps(message)

        def op(pipe: Any) -> None:
            pipe.xadd(events, {"m": data}, maxlen=self.events_kept, approximate=True)
            pipe.pexpire(events, self.events_ttl_ms)

        self._put(op)

    def add_entry(self, key: str, entry_id: str, fields: dict[str, bytes]) -> None:
        """Append an entry to a POST's stream with the id its event was sent with."""
        def op(pipe: Any) -> None:
            pipe.xadd(key, fields, id=entry_id, maxlen=self.events_kept, approximate=True)
            pipe.pexpire(key, self.events_ttl_ms)

        self._put(op)

    def map_requests(self, posts: str, request_ids: list[bytes], stream_id: str) -> None:
        """Which POST stream answers these requests (for a reaper: shared_reaper.py)."""
        def op(pipe: Any) -> None:
            pipe.hset(posts, mapping=dict.fromkeys(request_ids, stream_id))
            pipe.pexpire(posts, self.events_ttl_ms)

        self._put(op)

    def track_post(self, session_key: str, stream_id: str, kept: int) -> None:
        """A new POST stream of the session's: the oldest beyond ``kept`` go."""
        args = (session_key, stream_id, kept, self.events_ttl_ms)
        self._put(lambda pipe: pipe.eval(TRACK_POST, 1, f"{session_key}:postids", *args))

    def end_entries(self, key: str, posts: str, request_ids: list[bytes]) -> None:
        """A POST's stream is complete: a resumed one ends at this mark."""
        def op(pipe: Any) -> None:
            pipe.xadd(key, {"end": b"1"})
            pipe.pexpire(key, self.events_ttl_ms)
            if request_ids:
                pipe.hdel(posts, *request_ids)

        self._put(op)

    def announce(self, change: dict[str, Any]) -> None:
        """Post a change made here to the streams of the shared sessions that should hear it,
        whichever process holds them (or held them: one killed, its client resumes elsewhere
        with nothing missed). One script per change: a session is not a round trip."""
        # EVAL, not EVALSHA: a Redis restarted meanwhile has forgotten its scripts, and a
        # pipeline cannot load one again halfway (Redis caches the script by its text anyway).
        kept, ttl = self.events_kept, self.events_ttl_ms
        if change["kind"] == "resource":
            pairs = [part for uri in change["uris"] for part in (uri, orjson.dumps(
                {"jsonrpc": "2.0", "method": RESOURCE_UPDATED, "params": {"uri": uri}}))]
            namespace = tenant_namespace(uuid.UUID(change["tenant"]))
            self._put(lambda pipe: pipe.eval(ANNOUNCE_UPDATES, 0, namespace, kept, ttl, *pairs))
            return
        method = TOOLS_CHANGED if change["kind"] == "tools" else PROMPTS_CHANGED
        data = orjson.dumps({"jsonrpc": "2.0", "method": method})
        self._put(lambda pipe: pipe.eval(ANNOUNCE_LIST, 1, SESSIONS_ALL, change["scope"], data,
                                         kept, ttl))

    def delete_fields(self, fields: dict[str, bytes]) -> None:
        """Delete one field of each of these hashes."""
        def op(pipe: Any) -> None:
            for key, field in fields.items():
                pipe.hdel(key, field)

        self._put(op)

    def send(self, process_id: str, message: dict[str, Any]) -> None:
        data = orjson.dumps(message)
        self._put(lambda pipe: pipe.publish(process_channel(process_id), data))

    def broadcast(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message)
        self._put(lambda pipe: pipe.publish(BROADCAST, data))

    def relay_change(self, change: dict[str, Any]) -> None:
        self.broadcast({"type": "change", "from": self.process_id, "change": change})

    def forward_cancel(self, key: str, request_id: Any) -> None:
        """notifications/cancelled for a call this process does not run: to the one that does."""
        self._spawn(self._forward_cancel(key, request_id), "shared-sessions-cancel")

    async def _forward_cancel(self, key: str, request_id: Any) -> None:
        try:
            owner = await self._client.hget(f"{key}:calls", orjson.dumps(request_id))
            if owner is not None and owner.decode() != self.process_id:
                await self._client.publish(process_channel(owner.decode()), orjson.dumps(
                    {"type": "cancel", "key": key, "id": request_id}))
        except RedisError:
            log.warning("could not pass a cancel on: the session store is unreachable")

    async def _pump(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < _BATCH:
                batch.append(self._queue.get_nowait())
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for op in batch:
                        op(pipe)
                    await pipe.execute()
            except RedisError as exc:
                log.warning("messages for the session store were lost: Redis is unreachable",
                            extra={"messages": len(batch), "error": str(exc)})
            for _ in batch:
                self._queue.task_done()

    # -- the listener ----------------------------------------------------------------------

    async def _listen(self) -> None:
        channels = (BROADCAST, process_channel(self.process_id))
        while True:
            pubsub = self._blocking.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._hear(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("lost the session store's channel; subscribing again",
                            extra={"error": str(exc)})
                await asyncio.sleep(_RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _hear(self, data: bytes) -> None:
        try:
            self._on_message(orjson.loads(data))
        except Exception:
            # One bad message must not stop the listener.
            log.exception("could not handle a message of the session store")
