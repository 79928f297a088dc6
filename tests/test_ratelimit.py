"""Rate limits: exact under concurrency against real Redis, kept in process without Redis, and a
Redis that goes away never turns into a 500."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_settings

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
