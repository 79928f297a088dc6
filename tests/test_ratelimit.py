"""Rate limits: exact under concurrency against real Redis, kept in process without Redis, and a
Redis that goes away never turns into a 500."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import redis.asyncio as redis
from conftest import make_settings
from faults import OwnRedis

from spiral_mcp.ratelimit import Decision, LocalBuckets, RateLimiter, RedisBuckets
from spiral_mcp.server.app import create_app

# Keys verified once and a patient pool: the 100-call bursts measure the limiter, not how fast
# ten connections can authenticate a hundred requests.
# A budget refills one call every window/limit seconds: with an hour, however slow the machine,
# no refill lands inside a burst.
_STEADY = {"AUTH_CACHE_TTL": "60", "DB_CONNECT_TIMEOUT": "30", "RATE_LIMIT_WINDOW": "3600"}


def _call(i: int) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "jira_get_issue", "arguments": {"issue_key": "WEB-1"}}}


async def _hammer(client, headers: dict, count: int) -> list[dict]:
    responses = await asyncio.gather(*(
        client.post("/execute", json=_call(i), headers=headers) for i in range(count)))
    return [(await r.json())["result"]["structuredContent"] for r in responses]


def _codes(envelopes: list[dict]) -> list[str]:
    return [e["error"]["code"] if not e["success"] else "ok" for e in envelopes]


@pytest.mark.redis
async def test_budget_of_ten_lets_exactly_ten_of_a_hundred_through(
    aiohttp_client, database_urls, make_tenant, redis_url
) -> None:
    tenant = await make_tenant(demo=True)
    settings = make_settings(database_urls, **_STEADY, REDIS_URL=redis_url, RATE_LIMIT_READ="10",
                             DB_POOL_MAX="10")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    envelopes = await _hammer(client, tenant.headers, 100)
    codes = _codes(envelopes)
    assert codes.count("ok") == 10
    assert codes.count("RATE_LIMITED") == 90
    refused = next(e for e in envelopes if not e["success"])
    assert 0 < refused["error"]["retry_after"] <= 3600
    metrics = await (await client.get("/metrics")).text()
    assert "rate_limit_backend_errors_total 0.0" in metrics


@pytest.mark.redis
async def test_two_processes_share_one_budget_through_redis(
    aiohttp_client, database_urls, make_tenant, redis_url
) -> None:
    tenant = await make_tenant(demo=True)
    settings = make_settings(database_urls, **_STEADY, REDIS_URL=redis_url, RATE_LIMIT_READ="6")
    first = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    second = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    envelopes = [*await _hammer(first, tenant.headers, 10),
                 *await _hammer(second, tenant.headers, 10)]
    assert _codes(envelopes).count("ok") == 6


async def test_without_redis_limits_are_kept_in_process(
    aiohttp_client, database_urls, make_tenant
) -> None:
    tenant = await make_tenant(demo=True)
    other = await make_tenant(demo=True)
    settings = make_settings(database_urls, **_STEADY, RATE_LIMIT_READ="5")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    assert _codes(await _hammer(client, tenant.headers, 20)).count("ok") == 5
    # Budgets are per tenant and key: another tenant is not affected.
    assert _codes(await _hammer(client, other.headers, 3)).count("ok") == 3


async def test_unreachable_redis_keeps_serving_on_local_buckets(
    aiohttp_client, database_urls, make_tenant
) -> None:
    tenant = await make_tenant(demo=True)
    # Nothing listens on port 1: every Redis call fails at once.
    settings = make_settings(database_urls, **_STEADY, REDIS_URL="redis://127.0.0.1:1/0",
                             RATE_LIMIT_READ="4")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    envelopes = await _hammer(client, tenant.headers, 10)
    assert _codes(envelopes).count("ok") == 4
    assert set(_codes(envelopes)) == {"ok", "RATE_LIMITED"}
    metrics = await (await client.get("/metrics")).text()
    failures = next(line for line in metrics.splitlines()
                    if line.startswith("rate_limit_backend_errors_total "))
    assert float(failures.split()[1]) >= 1
    ready = await client.get("/ready")
    assert ready.status == 503
    assert (await ready.json())["checks"]["redis"] == "unreachable"


# -- RedisBuckets alone: several limiters (processes) on one Redis ------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _buckets(client, **options) -> tuple[RedisBuckets, list[list]]:
    """RedisBuckets whose script calls are recorded: the args of each."""
    buckets = RedisBuckets(client, **options)
    script, calls = buckets._script, []

    async def recorded(*, keys, args):
        calls.append(list(args))
        return await script(keys=keys, args=args)

    buckets._script = recorded
    return buckets, calls


def _bucket_keys() -> tuple[str, str]:
    run = uuid.uuid4().hex
    return (f"spiral:rl:test:t:{run}", f"spiral:rl:test:k:{run}")


@pytest.mark.redis
async def test_checks_of_one_bucket_in_a_batch_are_one_entry_and_exact(redis_client) -> None:
    keys = _bucket_keys()
    # 50 per hour: too small a limit to lease (under 1 / lease_share), so every check is exact.
    first, first_calls = _buckets(redis_client)
    second, second_calls = _buckets(redis_client)
    decisions = await asyncio.gather(*(
        b.take(keys, interval=3600 / 50, window=3600) for _ in range(80)
        for b in (first, second)))
    assert [d.allowed for d in decisions].count(True) == 50
    assert all(0 < d.retry_after <= 3600 for d in decisions if not d.allowed)
    # The 80 checks each limiter received in one turn of the loop went as one entry (5
    # arguments: key count, interval, window, calls waiting, tokens asked for ahead).
    # Then per bucket how far ahead the limiter knew it (nothing yet) and whether it was taken
    # in process since Redis last said (no).
    assert first_calls == second_calls == [[2, 72_000_000, 3_600_000_000, 80, 0, 0, 0, 0, 0]]
    # Exhausted: a later check is refused too.
    assert not (await first.take(keys, interval=3600 / 50, window=3600)).allowed


@pytest.mark.redis
async def test_leases_spare_round_trips_and_never_pass_more_than_the_limit(redis_client) -> None:
    keys = _bucket_keys()
    clock = _Clock()
    # 1,000 per hour: a lease holds at most 10 tokens.
    limiters = [_buckets(redis_client, clock=clock) for _ in range(2)]

    async def round_robin(rounds: int) -> int:
        allowed = 0
        for _ in range(rounds):
            for buckets, _ in limiters:
                allowed += (await buckets.take(keys, interval=3.6, window=3600)).allowed
        return allowed

    # Well within the budget, every call passes, most without a round trip.
    assert await round_robin(450) == 900
    for _, calls in limiters:
        assert len(calls) < 450 / 5
        assert max(args[4] for args in calls) == 10
    # Every token was taken in Redis: no more than the limit passed (one more may have refilled
    # while the test ran); a lease left unspent is all that may be missing.
    assert 1000 - 2 * 10 <= 900 + await round_robin(100) <= 1001


@pytest.mark.redis
async def test_a_lease_expires(redis_client) -> None:
    keys = _bucket_keys()
    clock = _Clock()
    buckets, calls = _buckets(redis_client, clock=clock, lease_seconds=1.0)
    for _ in range(3):  # the first takes nothing ahead, the second one token, the third spends it
        assert (await buckets.take(keys, interval=3.6, window=3600)).allowed
    assert len(calls) == 2
    assert (await buckets.take(keys, interval=3.6, window=3600)).allowed
    assert len(calls) == 3  # spent: the lease doubles to 2
    clock.now += 1.5
    assert (await buckets.take(keys, interval=3.6, window=3600)).allowed
    assert len(calls) == 4  # expired with 2 unspent: asks for 1
    assert calls[-1][3:5] == [1, 1]


def test_local_buckets_refuse_with_the_wait_and_refill() -> None:
    clock = _Clock()
    buckets = LocalBuckets(clock)
    keys = ("spiral:rl:read:t:1", "spiral:rl:read:k:1")
    assert [buckets.take(keys, interval=10, window=20).allowed for _ in range(2)] == [True, True]
    assert buckets.take(keys, interval=10, window=20) == Decision(False, 10)
    # Another key of the tenant shares the tenant's bucket, and is refused by it alone.
    assert not buckets.take((keys[0], "spiral:rl:read:k:2"), interval=10, window=20).allowed
    clock.now += 10
    assert buckets.take(keys, interval=10, window=20).allowed
    assert not buckets.take(keys, interval=10, window=20).allowed


# -- Redis going away and coming back empty ------------------------------------------------------

@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, which it may stop: the machine's Redis is shared."""
    if not OwnRedis.available():
        pytest.skip("no redis-server to start")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("limit", [20, 200])  # checked in Redis each time / leased ahead
async def test_an_outage_and_an_empty_redis_let_no_burst_through(
    own_redis, caplog, limit: int
) -> None:
    """The budget spent through Redis stays spent when Redis goes away (the in-process buckets
    start from what Redis last said, not full) and when it comes back empty (its buckets are
    started from the process's): a burst passed both times, 653 calls in a second against
    60/s. The outage is logged once, and once when it ends."""
    caplog.set_level(logging.INFO, logger="spiral_mcp.ratelimit")
    clients = [redis.Redis.from_url(own_redis.url, socket_timeout=0.5,
                                    socket_connect_timeout=0.5) for _ in range(2)]
    failures: list[int] = []
    limiter = RateLimiter(limits={"read": limit}, window=3600,
                          redis_buckets=RedisBuckets(clients[0]),
                          on_backend_error=lambda: failures.append(1), retry_backend_after=0.2)
    tenant_id, key_id = uuid.uuid4(), uuid.uuid4()

    async def burst(calls: int, *, of=limiter, key: uuid.UUID = key_id) -> int:
        return sum([(await of.check(tenant_id=tenant_id, key_id=key, call_class="read")).allowed
                    for _ in range(calls)])

    try:
        assert await burst(limit + 10) == limit
        own_redis.stop()
        assert await burst(limit + 10) == 0
        await asyncio.sleep(0.3)  # Redis is asked again, and fails again
        assert await burst(10, key=uuid.uuid4()) == 0  # the tenant's bucket is spent too
        assert len(failures) >= 2
        own_redis.start()  # empty
        await asyncio.sleep(0.3)
        assert await burst(limit + 10) == 0
        # Redis holds the spent buckets again: another process is refused as well.
        other = RateLimiter(limits={"read": limit}, window=3600,
                            redis_buckets=RedisBuckets(clients[1]))
        assert await burst(10, of=other) == 0
    finally:
        for client in clients:
            await client.aclose()
    assert [r.getMessage() for r in caplog.records if r.name == "spiral_mcp.ratelimit"] == [
        "Redis unreachable; rate limits are kept in process for now",
        "Redis reachable again; rate limits are shared again"]
