"""Rate limits: GCRA buckets per tenant and per key, for each class of call (read, write, query).

With Redis, both buckets of a call are checked and taken in one atomic script on Redis's clock, so
several server processes share one budget exactly. Without Redis, or while Redis cannot be reached,
the same algorithm runs in process: the server keeps serving and says so in logs and a metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as redis
from redis.exceptions import RedisError

__all__ = ["Decision", "LocalBuckets", "RateLimiter", "RedisBuckets"]

log = logging.getLogger(__name__)

# KEYS: the buckets of every check, in order; ARGV: per check, its number of keys and its
# emission interval and window in microseconds. A bucket stores its theoretical arrival time
# (TAT). A check is allowed when, for each of its buckets, max(TAT, now) + interval - now <=
# window; only then are its TATs advanced. Checks run one after another, exactly as separate
# calls would, so a later check of the batch sees what an earlier one took.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local replies = {}
local first = 1
for c = 1, #ARGV, 3 do
  local count = tonumber(ARGV[c])
  local interval = tonumber(ARGV[c + 1])
  local window = tonumber(ARGV[c + 2])
  local wait = 0
  local next_tats = {}
  for i = 1, count do
    local tat = tonumber(redis.call('GET', KEYS[first + i - 1]) or now)
    if tat < now then tat = now end
    local next_tat = tat + interval
    if next_tat - now > window and next_tat - now - window > wait then
      wait = next_tat - now - window
    end
    next_tats[i] = next_tat
  end
  if wait > 0 then
    replies[#replies + 1] = 0
  else
    for i = 1, count do
      redis.call('SET', KEYS[first + i - 1], next_tats[i], 'PX',
                 math.ceil((next_tats[i] - now) / 1000) + 1)
    end
    replies[#replies + 1] = 1
  end
  replies[#replies + 1] = wait
  first = first + count
end
return replies
"""


_MAX_CACHED_KEYS = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds


class LocalBuckets:
    """GCRA in this process; exact because the event loop runs one check at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._next_sweep = 0.0

    def take(self, keys: Sequence[str], *, interval: float, window: float) -> Decision:
        now = self._clock()
        if now >= self._next_sweep:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
            self._next_sweep = now + window
        next_tats = [max(self._tats.get(k, now), now) + interval for k in keys]
        wait = max((t - now - window for t in next_tats), default=0.0)
        if wait > 1e-9:
            return Decision(False, wait)
        self._tats.update(zip(keys, next_tats, strict=True))
        return Decision(True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Check:
    keys: Sequence[str]
    interval_us: int
    window_us: int
    decision: asyncio.Future[Decision]


class RedisBuckets:
    """GCRA on Redis, one script call for many checks.

    Checks that arrive while a script call is on its way wait for it to return and then go
    together in the next one: at concurrency 1 every check is sent at once, under load a round
    trip (and Redis's and the client's work per command) serves many calls. Exactness is kept:
    the script evaluates the checks one by one, in arrival order, on Redis's clock.
    """

    def __init__(self, client: redis.Redis, *, max_batch: int = 256) -> None:
        self._client = client
        self._script = client.register_script(_GCRA)
        # A bound on one script's run time: Redis serves nothing else while it runs.
        self._max_batch = max_batch
        self._pending: list[_Check] = []
        self._sender: asyncio.Task[None] | None = None

    async def take(self, keys: Sequence[str], *, interval: float, window: float) -> Decision:
        check = _Check(keys, math.ceil(interval * 1e6), math.ceil(window * 1e6),
                       asyncio.get_running_loop().create_future())
        self._pending.append(check)
        if self._sender is None:
            # A task of its own: a caller that is cancelled must not take the batch down with it.
            self._sender = asyncio.create_task(self._send(), name="rate-limit-checks")
        return await check.decision

    async def _send(self) -> None:
        batch: list[_Check] = []
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                try:
                    replies = await self._script(
                        keys=[key for c in batch for key in c.keys],
                        args=[n for c in batch for n in (len(c.keys), c.interval_us, c.window_us)])
                except Exception as exc:
                    # Each caller sees the failure and falls back to the local buckets.
                    for c in batch:
                        if not c.decision.done():
                            c.decision.set_exception(exc)
                    continue
                for i, c in enumerate(batch):
                    if not c.decision.done():
                        c.decision.set_result(Decision(bool(replies[2 * i]),
                                                       replies[2 * i + 1] / 1e6))
        except asyncio.CancelledError:
            for c in (*batch, *self._pending):
                c.decision.cancel()
            self._pending.clear()
            raise
        finally:
            self._sender = None


class RateLimiter:
    """Budgets of ``limits[call_class]`` calls per ``window`` seconds, per tenant and per key."""

    def __init__(
        self,
        *,
        limits: Mapping[str, int],
        window: float,
        redis_buckets: RedisBuckets | None = None,
        on_backend_error: Callable[[], None] = lambda: None,
        retry_backend_after: float = 5.0,
    ) -> None:
        self._limits = dict(limits)
        self._window = window
        self._redis = redis_buckets
        self._local = LocalBuckets()
        self._on_backend_error = on_backend_error
        self._retry_backend_after = retry_backend_after
        self._backend_down_until = 0.0
        # The bucket names of each (class, tenant, key), rendered once rather than per call.
        self._keys: dict[tuple[str, uuid.UUID, uuid.UUID], tuple[str, ...]] = {}

    async def check(
        self, *, tenant_id: uuid.UUID, key_id: uuid.UUID, call_class: str
    ) -> Decision:
        limit = self._limits[call_class]
        interval = self._window / limit
        keys = self._keys.get((call_class, tenant_id, key_id))
        if keys is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            keys = (f"spiral:rl:{call_class}:t:{tenant_id}", f"spiral:rl:{call_class}:k:{key_id}")
            self._keys[call_class, tenant_id, key_id] = keys
        if self._redis is not None and time.monotonic() >= self._backend_down_until:
            try:
                return await self._redis.take(keys, interval=interval, window=self._window)
            except (RedisError, OSError):
                # Keep serving on the local buckets for a while rather than failing every call
                # or waiting on a dead connection each time. Calls already in flight fail too:
                # each is counted, the outage is logged once.
                if time.monotonic() >= self._backend_down_until:
                    log.warning("Redis unreachable; rate limits are kept in process for now")
                self._backend_down_until = time.monotonic() + self._retry_backend_after
                self._on_backend_error()
        return self._local.take(keys, interval=interval, window=self._window)
