"""REDIS_URL naming a Sentinel set (redis+sentinel://): a real set started by the test, a master,
its replica and a sentinel on free ports (never the machine's Redis). Rate limits are kept on
the master the sentinel names; after a failover the server keeps working, against the new
master. A malformed URL stops the start with a line naming REDIS_URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from conftest import make_settings
from faults import OwnRedis
from test_ratelimit import _STEADY, _codes, _hammer
from test_transports import open_session, post, request

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.server.app import create_app

pytestmark = pytest.mark.redis

SERVICE = "spiral"


class SentinelSet:
    def __init__(self, master: OwnRedis, replica: OwnRedis, sentinel: OwnRedis) -> None:
        self.master = master
        self.replica = replica
        self.sentinel = sentinel

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def client(self, server: OwnRedis) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)


async def _until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.2)
    return found


@pytest.fixture
async def sentinel_set(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    if not OwnRedis.available():
        pytest.skip("no redis-server to start")
    for name in ("master", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    master = OwnRedis(tmp_path / "master")
    master.start()
    replica = OwnRedis(tmp_path / "replica", args=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    config = tmp_path / "sentinel" / "sentinel.conf"  # the sentinel rewrites it: its own folder
    config.write_text(f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
                      f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                      f"sentinel failover-timeout {SERVICE} 10000\n")
    sentinel = OwnRedis(tmp_path / "sentinel", config=config, args=["--sentinel"])
    sentinel.start()
    the_set = SentinelSet(master, replica, sentinel)
    watch = the_set.client(sentinel)

    async def replica_known() -> bool:
        replicas = await watch.sentinel_slaves(SERVICE)
        return any(r.get("master-link-status") == "ok" for r in replicas)
    try:
        await _until(replica_known, "the sentinel knows the replica, in sync")
        yield the_set
    finally:
        await watch.aclose()
        for server in (sentinel, replica, master):
            server.stop()


async def test_rate_limits_live_on_the_master_and_survive_a_failover(
        aiohttp_client, database_urls, make_tenant, sentinel_set: SentinelSet) -> None:
    settings = make_settings(database_urls, **_STEADY, REDIS_URL=sentinel_set.url,
                             RATE_LIMIT_READ="10", DB_POOL_MAX="10")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    first = await make_tenant(demo=True)
    codes = _codes(await _hammer(client, first.headers, 15))
    assert codes.count("ok") == 10 and codes.count("RATE_LIMITED") == 5
    master = sentinel_set.client(sentinel_set.master)
    assert await master.keys(f"spiral:rl:read:t:{first.id}")
    assert (await (await client.get("/ready")).json())["checks"]["redis"] == "ok"

    # The sentinel makes the replica the master; the old master becomes its replica.
    watch = sentinel_set.client(sentinel_set.sentinel)
    new_master = await _fail_over(sentinel_set, watch)

    # Calls go on all along; a new tenant's budget ends up on the new master (the limiter asks
    # Redis again within 5 s of losing the old one) and holds exactly.
    second = await make_tenant(demo=True)

    async def on_new_master() -> bool:
        assert _codes(await _hammer(client, second.headers, 1)) in (["ok"], ["RATE_LIMITED"])
        return bool(await new_master.keys(f"spiral:rl:read:t:{second.id}"))
    await _until(on_new_master, "the budget kept on the new master")
    third = await make_tenant(demo=True)
    codes = _codes(await _hammer(client, third.headers, 15))
    assert codes.count("ok") == 10 and codes.count("RATE_LIMITED") == 5
    assert await new_master.keys(f"spiral:rl:read:t:{third.id}")
    assert (await (await client.get("/ready")).json())["checks"]["redis"] == "ok"
    for connection in (master, new_master, watch):
        await connection.aclose()


async def test_sessions_live_on_the_master_and_survive_a_failover(
        aiohttp_client, database_urls, make_tenant, sentinel_set: SentinelSet) -> None:
    # MCP sessions shared through the Sentinel set's master: one opened before a failover goes
    # on after it (the replica had it), and new ones are kept on the new master.
    settings = make_settings(database_urls, REDIS_URL=sentinel_set.url)
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    tenant = await make_tenant(demo=True)
    sid = await open_session(client, tenant)
    master = sentinel_set.client(sentinel_set.master)
    assert await master.keys(f"spiral:t:{tenant.id}:s:{sid}")
    watch = sentinel_set.client(sentinel_set.sentinel)
    new_master = sentinel_set.client(sentinel_set.replica)
    await _until(lambda: _has(new_master, f"spiral:t:{tenant.id}:s:{sid}"), "replicated")
    await watch.execute_command("SENTINEL", "FAILOVER", SERVICE)
    await _until(lambda: _role_is(new_master, "master"), "the new master takes writes")
    # Until the sentinel turns the old master into a replica, it takes writes too (Redis
    # replication is asynchronous: what it takes then is lost), as for any Redis client.
    await _until(lambda: _role_is(master, "slave"), "the old master a replica")

    async def answered() -> bool:
        got = await post(client, tenant, request("tools/call", 2, name="jira_get_issue",
                                                 arguments={"issue_key": "WEB-1"}), sid=sid)
        return got.status == 200 and (await got.json())["result"]["isError"] is False
    await _until(answered, "the session served through the new master")
    later = await open_session(client, tenant)
    assert await new_master.keys(f"spiral:t:{tenant.id}:s:{later}")
    for connection in (master, new_master, watch):
        await connection.aclose()


async def _has(client: redis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _fail_over(sentinel_set: SentinelSet, watch: redis.Redis) -> redis.Redis:
    """The sentinel makes the replica the master; a client of it, once it takes writes."""
    await watch.execute_command("SENTINEL", "FAILOVER", SERVICE)

    async def promoted() -> bool:
        _, port = await watch.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port) == sentinel_set.replica.port
    await _until(promoted, "the replica promoted")
    new_master = sentinel_set.client(sentinel_set.replica)
    await _until(lambda: _role_is(new_master, "master"), "the new master takes writes")
    return new_master


async def _role_is(client: redis.Redis, role: str) -> bool:
    return (await client.info("replication"))["role"] == role


@pytest.mark.parametrize(("url", "message"), [
    ("redis+sentinel:///spiral", "REDIS_URL: no sentinel named"),
    ("redis+sentinel://127.0.0.1:26379", "REDIS_URL: no service name"),
    ("redis+sentinel://127.0.0.1:99999/spiral", "REDIS_URL: sentinel port '99999'"),
    ("redis+sentinel://127.0.0.1/spiral/zero", "REDIS_URL: database 'zero' is not a number"),
    ("redis://127.0.0.1:port/0", "REDIS_URL: Port could not be cast"),
    ("sentinel://127.0.0.1/spiral", "REDIS_URL: expected a redis://, rediss://, unix:// or "
                                    "redis+sentinel://"),
])
def test_a_bad_redis_url_is_refused_naming_it(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"REDIS_URL": url})
    assert str(refused.value).startswith(message)


async def test_a_shared_session_goes_on_after_a_failover(
        aiohttp_client, database_urls, make_tenant, sentinel_set: SentinelSet) -> None:
    """The session store's own line (shared_line.py) follows the master too: the old master,
    now a replica, refuses the lookup's writes, and the line connects again to the new one,
    where the replicated session goes on."""
    settings = make_settings(database_urls, **_STEADY, REDIS_URL=sentinel_set.url)
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    tenant = await make_tenant(demo=True)
    sid = await open_session(client, tenant)
    assert (await post(client, tenant, request("ping", 1), sid=sid)).status == 200
    watch = sentinel_set.client(sentinel_set.sentinel)
    new_master = await _fail_over(sentinel_set, watch)

    async def served() -> bool:
        answer = await post(client, tenant, request("ping", 2), sid=sid)
        assert answer.status in (200, 503), await answer.text()
        return answer.status == 200
    await _until(served, "the session served by the new master")
    assert await new_master.exists(*[k async for k in new_master.scan_iter(match=f"*:s:{sid}")])
    for connection in (new_master, watch):
        await connection.aclose()
