"""Rate limits: GCRA buckets per tenant and per key, for each class of call (read, write, query).

With Redis, both buckets of a call are checked and taken in one atomic script on Redis's clock, so
several server processes share one budget: exactly for small limits, and for large ones with
tokens leased ahead, so most calls need no round trip (the bound is in :class:`RedisBuckets`).
Without Redis, or while Redis cannot be reached, the same algorithm runs in process: the server
keeps serving and says so in logs and a metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import ErrorCode, ServiceError

__all__ = ["Decision", "LocalBuckets", "RateLimiter", "RedisBuckets"]

log = logging.getLogger(__name__)

# KEYS: the buckets of every entry, in order; ARGV: per entry, its number of keys, its emission
# interval and window in microseconds, the calls waiting on it (need) and the tokens it would like
# on top (extra), then per key a floor and a flag. A bucket stores its theoretical arrival time
# (TAT); token j of a take is there when max(TAT, now) + j * interval - now <= window for each of
# the entry's buckets. An entry is granted min(need + extra, tokens there) and its TATs advance by
# that many intervals: exactly what ``need`` separate calls would get one after another (the
# first ones pass, and once one is refused so is every later one), plus what is left of
# ``extra``. The floor is how far ahead of now the caller last knew the bucket's TAT (from this
# script's replies, and its own takes while Redis was away): a bucket Redis does not hold (it
# restarted empty, or evicted it) starts from there instead of full, and with the flag set (the
# caller took from it while Redis was away) Redis's TAT is raised to it. Reply per entry: the
# grant, the wait for the next token when the grant is short of need, and per key how far ahead
# of now its TAT is after the take. Entries run in order, so a later one sees what an earlier one
# took.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local replies = {}
local first = 1
local c = 1
while c <= #ARGV do
  local count = tonumber(ARGV[c])
  local interval = tonumber(ARGV[c + 1])
  local window = tonumber(ARGV[c + 2])
  local need = tonumber(ARGV[c + 3])
  local grant = need + tonumber(ARGV[c + 4])
  local tats = {}
  local raised = {}
  for i = 1, count do
    local stored = redis.call('GET', KEYS[first + i - 1])
    local floor = now + tonumber(ARGV[c + 3 + 2 * i])
    local tat = tonumber(stored or 0)
    if (not stored or ARGV[c + 4 + 2 * i] == '1') and floor > tat then
      tat = floor
      raised[i] = true
    end
    if tat < now then tat = now end
    tats[i] = tat
    local room = math.floor((window - (tat - now)) / interval)
    if room < grant then grant = room end
  end
  if grant < 0 then grant = 0 end
  local wait = 0
  replies[#replies + 1] = grant
  replies[#replies + 1] = 0
  local waits = #replies
  for i = 1, count do
    local next_tat = tats[i] + grant * interval
    if (grant > 0 or raised[i]) and next_tat > now then
      redis.call('SET', KEYS[first + i - 1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
    end
    if grant < need and next_tat + interval - now - window > wait then
      wait = next_tat + interval - now - window
    end
    replies[#replies + 1] = next_tat - now
  end
  replies[waits] = wait
  first = first + count
  c = c + 5 + 2 * count
end
return replies
"""


_MAX_CACHED_KEYS = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds


_ALLOWED = Decision(True)


class LocalBuckets:
    """GCRA in this process; exact because the event loop runs one check at a time.

    Beside Redis it is also the process's picture of the buckets Redis keeps: each script reply
    sets a bucket's TAT here (:meth:`observe`), so when Redis goes away the checks carry on from
    each tenant's recent use instead of full buckets, and the keys taken from here meanwhile are
    marked (:meth:`take_unshared`) until Redis has been told (see :class:`RedisBuckets`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._unshared: set[str] = set()
        self._next_sweep = 0.0

    def _sweep(self, now: float, window: float) -> None:
        # Buckets full again are forgotten: their absence means as much.
        if now >= self._next_sweep:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
            self._unshared &= self._tats.keys()
            self._next_sweep = now + window

    def take(self, keys: Sequence[str], *, interval: float, window: float) -> Decision:
        now = self._clock()
        self._sweep(now, window)
        # Plain loops: this runs on every call without Redis, and the comprehension, generator
        # and zip they replace cost three times as much for a call's two buckets.
        tats = self._tats
        next_tats = []
        wait = 0.0
        for key in keys:
            tat = tats.get(key, now)
            next_tat = (tat if tat > now else now) + interval
            next_tats.append(next_tat)
            if next_tat - now - window > wait:
                wait = next_tat - now - window
        if wait > 1e-9:
            return Decision(False, wait)
        for key, next_tat in zip(keys, next_tats, strict=True):
            tats[key] = next_tat
        return _ALLOWED

    def take_unshared(self, keys: Sequence[str], *, interval: float, window: float) -> Decision:
        """:meth:`take` while Redis is away: what is taken is marked for Redis to be told."""
        decision = self.take(keys, interval=interval, window=window)
        if decision.allowed:
            self._unshared.update(keys)
        return decision

    def observe(self, key: str, ahead: float, *, window: float) -> None:
        """Redis reports ``key``'s TAT ``ahead`` seconds ahead of now."""
        now = self._clock()
        self._sweep(now, window)
        self._tats[key] = now + ahead
        self._unshared.discard(key)

    def ahead(self, key: str) -> tuple[float, bool]:
        """How far ahead of now ``key``'s TAT is known to be (0: full or unknown), and whether
        it was taken from here since Redis last reported it."""
        tat = self._tats.get(key)
        if tat is None:
            return 0.0, False
        return max(tat - self._clock(), 0.0), key in self._unshared


@dataclasses.dataclass(slots=True)
class _Lease:
    """Tokens of one set of buckets taken from Redis ahead of the calls that will spend them."""

    tokens: int = 0
    expires: float = 0.0
    # How many tokens to ask for on top of the calls waiting, the next time: doubled when a
    # lease is spent before it expires, halved when it expires unspent, 0 after a refusal.
    size: int = 0


@dataclasses.dataclass(slots=True)
class _Entry:
    """The checks of one set of buckets waiting for the next script call."""

    interval_us: int
    window_us: int
    max_lease: int
    waiting: list[asyncio.Future[Decision]] = dataclasses.field(default_factory=list)


class RedisBuckets:
    """GCRA on Redis, shared by every process, with few round trips.

    Checks that arrive while a script call is on its way wait for it to return and go together
    in the next one, those of one set of buckets as one entry. An entry also asks for tokens
    ahead of need (a lease), spent by later calls of this process without a round trip; a lease
    holds at most ``lease_share`` of the limit and expires ``lease_seconds`` after it was taken.
    Tokens are only ever taken in Redis, so all processes together never take more than the
    limit allows; what leasing changes is when a token is spent: up to ``lease_seconds`` after
    Redis granted it. So in any stretch of time the calls admitted are at most what the limit
    allows over a stretch ``lease_seconds`` longer, and never more than one lease per process
    beyond the limit; tokens a lease did not spend are lost (other processes may be refused
    meanwhile, by at most as many). Limits under ``1 / lease_share`` calls per window are not
    leased: every call is checked in Redis, exactly.

    Every reply's bucket states are kept in ``local`` (a :class:`LocalBuckets`), the buckets
    the process falls back on while Redis is away; each check tells Redis how far ahead its
    buckets were last known, so a Redis back empty (restarted without persistence) starts them
    from there, and those taken in process meanwhile are raised to it.
    """

    def __init__(self, client: redis.Redis, *, max_batch: int = 256, lease_share: float = 0.01,
                 lease_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.local = LocalBuckets(clock)
        self._client = client
        self._script = client.register_script(_GCRA)
        # A bound on one script's run time: Redis serves nothing else while it runs.
        self._max_batch = max_batch
        self._lease_share = lease_share
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._leases: dict[tuple[str, ...], _Lease] = {}
        self._pending: dict[tuple[str, ...], _Entry] = {}
        self._sender: asyncio.Task[None] | None = None

    async def take(self, keys: Sequence[str], *, interval: float, window: float) -> Decision:
        keys = tuple(keys)
        lease = self._leases.get(keys)
        if lease is not None and lease.tokens and self._clock() < lease.expires:
            lease.tokens -= 1
            return _ALLOWED
        entry = self._pending.get(keys)
        if entry is None:
            entry = self._pending[keys] = _Entry(
                math.ceil(interval * 1e6), math.ceil(window * 1e6),
                math.floor(window / interval * self._lease_share + 1e-9))
        decision = asyncio.get_running_loop().create_future()
        entry.waiting.append(decision)
        if self._sender is None:
            # A task of its own: a caller that is cancelled must not take the batch down with it.
            self._sender = asyncio.create_task(self._send(), name="rate-limit-checks")
        return await decision

    def _lease_size(self, keys: tuple[str, ...], entry: _Entry) -> int:
        """Tokens to ask for on top of the waiting calls."""
        lease = self._leases.get(keys)
        if entry.max_lease < 1 or lease is None:
            return 0
        if lease.tokens:  # expired unspent: ask for less
            return lease.size // 2
        return min(entry.max_lease, max(1, 2 * lease.size))

    async def _send(self) -> None:
        batch: list[tuple[tuple[str, ...], _Entry, int]] = []
        try:
            while self._pending:
                batch = [(keys, entry, self._lease_size(keys, entry))
                         for keys, entry in itertools.islice(self._pending.items(),
                                                             self._max_batch)]
                for keys, _, _ in batch:
                    del self._pending[keys]
                try:
                    replies = await self._script(
                        keys=[key for keys, _, _ in batch for key in keys],
                        args=[n for keys, entry, extra in batch
                              for n in self._arguments(keys, entry, extra)])
                except Exception as exc:
                    # Each caller sees the failure and falls back to the local buckets.
                    for _, entry, _ in batch:
                        for waiter in entry.waiting:
                            if not waiter.done():
                                waiter.set_exception(exc)
                    continue
                now = self._clock()
                at = 0
                for keys, entry, extra in batch:
                    ahead = replies[at + 2:at + 2 + len(keys)]
                    for key, ahead_us in zip(keys, ahead, strict=True):
                        self.local.observe(key, ahead_us / 1e6, window=entry.window_us / 1e6)
                    self._settle(keys, entry, extra, replies[at], replies[at + 1], now)
                    at += 2 + len(keys)
            batch = []
        except asyncio.CancelledError:
            for waiter in (*(w for _, e, _ in batch for w in e.waiting),
                           *(w for e in self._pending.values() for w in e.waiting)):
                waiter.cancel()
            self._pending.clear()
            raise
        finally:
            self._sender = None

    def _arguments(self, keys: tuple[str, ...], entry: _Entry, extra: int) -> list[int]:
        """One entry's ARGV: its numbers, then per key the floor (µs) and whether to raise a
        stored TAT to it (see _GCRA)."""
        arguments = [len(keys), entry.interval_us, entry.window_us, len(entry.waiting), extra]
        for key in keys:
            ahead, unshared = self.local.ahead(key)
            arguments += (math.floor(ahead * 1e6), int(unshared))
        return arguments

    def _settle(self, keys: tuple[str, ...], entry: _Entry, extra: int, granted: int,
                wait_us: int, now: float) -> None:
        """Answer an entry's waiting calls in arrival order and keep the rest as its lease."""
        short = granted < len(entry.waiting)
        refused = Decision(False, wait_us / 1e6)
        for waiter in entry.waiting:
            if waiter.done():
                continue  # cancelled: its token, if any, goes to the lease
            if granted:
                granted -= 1
                waiter.set_result(_ALLOWED)
            else:
                waiter.set_result(refused)
        if entry.max_lease < 1:
            return
        if keys not in self._leases and len(self._leases) >= _MAX_CACHED_KEYS:
            self._leases.clear()  # unspent tokens are lost: fewer calls pass, never more
        # Refused: ask for nothing ahead until calls pass again.
        self._leases[keys] = _Lease(granted, now + self._lease_seconds, 0 if short else extra)


class RateLimiter:
    """Budgets of ``limits[call_class]`` calls per ``window`` seconds, per tenant and per key.

    With Redis, checks go there; when it cannot be reached they run on in-process buckets
    (starting from the state Redis last reported) for ``retry_backend_after`` seconds at a time
    until Redis answers again. Each failed check is counted (``on_backend_error``); the outage
    is logged once as it starts and once as it ends.
    """

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
        self._local = redis_buckets.local if redis_buckets is not None else LocalBuckets()
        self._on_backend_error = on_backend_error
        self._retry_backend_after = retry_backend_after
        self._backend_down_until = 0.0
        # Since when Redis is away (monotonic), and the checks run in process since; None: up.
        self._down_since: float | None = None
        self._up_since = 0.0
        self._checked_locally = 0
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
        if self._redis is None:
            return self._local.take(keys, interval=interval, window=self._window)
        asked = time.monotonic()
        if asked >= self._backend_down_until:
            try:
                decision = await self._redis.take(keys, interval=interval, window=self._window)
            except (RedisError, OSError) as exc:
                # Keep serving in process for a while rather than failing every call or waiting
                # on a dead connection each time.
                self._backend_failed(exc, asked)
            else:
                if self._down_since is not None and asked >= self._down_since:
                    self._backend_back()
                return decision
        self._checked_locally += 1
        return self._local.take_unshared(keys, interval=interval, window=self._window)

    async def admit(self, *, tenant_id: uuid.UUID, key_id: uuid.UUID, call_class: str) -> None:
        """Spend one call of ``call_class`` from the key's budget, or RATE_LIMITED saying when
        to retry: what every door that takes a key's calls (tools, the admin API) asks."""
        decision = await self.check(tenant_id=tenant_id, key_id=key_id, call_class=call_class)
        if not decision.allowed:
            raise ServiceError(
                ErrorCode.RATE_LIMITED,
                f"rate limit for {call_class} calls reached; retry after "
                f"{decision.retry_after:.1f} s",
                retry_after=round(decision.retry_after, 3),
            )

    def _backend_failed(self, exc: Exception, asked: float) -> None:
        now = time.monotonic()
        self._backend_down_until = now + self._retry_backend_after
        self._on_backend_error()
        # Calls in flight when Redis went away, or sent before it came back, fail too: each
        # is counted, the outage is logged once.
        if self._down_since is None and asked >= self._up_since:
            self._down_since = now
            self._checked_locally = 0
            log.warning("Redis unreachable; rate limits are kept in process for now",
                        extra={"error": f"{type(exc).__name__}: {exc}"})

    def _backend_back(self) -> None:
        assert self._down_since is not None
        now = time.monotonic()
        log.info("Redis reachable again; rate limits are shared again", extra={
            "seconds": round(now - self._down_since, 1),
            "checked_in_process": self._checked_locally})
        self._down_since = None
        self._up_since = now
