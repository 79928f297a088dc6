"""Redis stopped and started while two processes serve steady load: every request is answered
(never a 500, never a hang): a session's with 503 and Retry-After while Redis is away, the
stateless era's and /execute's as usual (rate limits fall back to each process); once Redis is
back, clients that initialize again are served on either process without anyone restarting."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import Tenant
from faults import OwnRedis
from test_shared_sessions import Pair, call, initialize_soon, pair, redis_client  # noqa: F401
from test_transports import headers, open_session, post, post_modern, request

pytestmark = pytest.mark.slow

CLIENTS = 8
MODERN = "2026-07-28"


async def test_redis_stopped_and_started_under_load(pair: Pair, tenant: Tenant,  # noqa: F811
                                                     module_redis: OwnRedis) -> None:
    # Budgets the load never reaches: this is about the session store, not the limits.
    a, b = await pair(RATE_LIMIT_READ="1000000")
    outcomes: collections.Counter[tuple[str, str, int]] = collections.Counter()
    phase = "before"
    stop = asyncio.Event()
    ids = itertools.count(10)

    async def session_client(number: int) -> None:
        sid: str | None = None
        processes = itertools.cycle((a, b) if number % 2 else (b, a))
        while not stop.is_set():
            client: TestClient = next(processes)
            if sid is None:
                made = await post(client, tenant, request(
                    "initialize", 0, protocolVersion="2025-11-25", capabilities={},
                    clientInfo={"name": "load", "version": "1"}))
                outcomes[(phase, "initialize", made.status)] += 1
                if made.status == 200:
                    sid = made.headers["Mcp-Session-Id"]
                    await post(client, tenant, {"jsonrpc": "2.0",
                                                "method": "notifications/initialized"}, sid=sid)
                else:
                    assert made.status == 503 and made.headers["Retry-After"]
                    await asyncio.sleep(0.05)
                continue
            got = await post(client, tenant, call(next(ids), "jira_get_issue",
                                                  issue_key="WEB-1"), sid=sid)
            outcomes[(phase, "session call", got.status)] += 1
            if got.status == 200:
                result = (await got.json())["result"]
                assert result["isError"] is False, result
            elif got.status == 404:
                sid = None  # Redis came back empty: the session is gone; initialize again
            else:
                assert got.status == 503, await got.text()
                assert "session store (Redis) is unreachable" in (await got.json())["error"][
                    "message"]
                await asyncio.sleep(0.05)

    async def stateless_client(number: int) -> None:
        client = a if number % 2 else b
        while not stop.is_set():
            body = {**call(next(ids), "jira_get_issue", issue_key="WEB-2")}
            body["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                                       "io.modelcontextprotocol/clientCapabilities": {}}
            got = await post_modern(client, tenant, body, version=MODERN)
            outcomes[(phase, "stateless call", got.status)] += 1
            assert got.status == 200, await got.text()
            executed = await client.post("/execute", data=orjson.dumps(
                call(next(ids), "jira_get_issue", issue_key="WEB-3")), headers=headers(tenant))
            outcomes[(phase, "execute", executed.status)] += 1
            assert executed.status == 200

    workers = [asyncio.create_task(session_client(n)) for n in range(CLIENTS)] + [
        asyncio.create_task(stateless_client(n)) for n in range(2)]
    try:
        async with asyncio.timeout(120):
            await asyncio.sleep(1.5)
            phase = "away"
            module_redis.stop()
            await asyncio.sleep(3.0)
            phase = "back"
            module_redis.start()
            await initialize_soon(a, tenant)
            deadline = time.monotonic() + 20
            while outcomes[("back", "session call", 200)] < 5 * CLIENTS:
                assert time.monotonic() < deadline, dict(outcomes)
                for task in workers:
                    if task.done():
                        task.result()  # an assertion failed inside: raise it here
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        results = await asyncio.gather(*workers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    statuses = {status for (_, _, status) in outcomes}
    assert statuses <= {200, 202, 404, 503}, dict(outcomes)
    assert outcomes[("before", "session call", 200)] > 0
    assert outcomes[("away", "session call", 503)] + outcomes[("away", "initialize", 503)] > 0
    assert outcomes[("away", "stateless call", 200)] > 0 and outcomes[("away", "execute", 200)]
    # Sessions opened again after the outage are served by both processes.
    sid = await open_session(b, tenant)
    for client in (a, b):
        got = await post(client, tenant, call(1, "jira_get_issue", issue_key="WEB-1"), sid=sid)
        assert got.status == 200
