"""SIGTERM on a real `spiral-mcp serve`: stop accepting, let the call in flight finish, end open
streams cleanly, write the queued audit rows, close the pool, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

pytestmark = pytest.mark.slow

# Heavy enough to be in flight for a while on the demo data, light enough for the time limit.
SLOW_SQL = ("SELECT count(*) AS n FROM work_items a, work_items b, work_items c, work_items d "
            "WHERE a.priority <> d.priority")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    database_urls, make_tenant, admin_conn
) -> None:
    tenant = await make_tenant(demo=True)
    port = _free_port()
    script = Path(sys.executable).with_name("spiral-mcp")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "spiral_mcp"]
    env = {**os.environ, "DATABASE_URL": database_urls.runtime,
           "EXPLORER_DATABASE_URL": database_urls.explorer or "", "PORT": str(port),
           "SHUTDOWN_TIMEOUT": "20", "EXPLORER_TIMEOUT_S": "30", "LOG_LEVEL": "info"}
    env.pop("ADMIN_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        *command, "serve", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the server did not become ready")

            stream = await http.get(f"{base}/sse", headers=tenant.headers)
            assert (await stream.content.readline()).startswith(b"event: endpoint")

            call = asyncio.ensure_future(http.post(f"{base}/execute", headers=tenant.headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "explorer_query", "arguments": {"sql": SLOW_SQL}}}))
            await asyncio.sleep(0.5)  # the query is running
            assert not call.done()
            process.send_signal(signal.SIGTERM)

            answer = await asyncio.wait_for(call, 30)
            assert answer.status == 200
            envelope = (await answer.json())["result"]["structuredContent"]
            assert envelope["success"] is True, envelope

            # The open stream ends instead of being cut off or left hanging.
            rest = await asyncio.wait_for(stream.content.read(), 10)
            assert b"Traceback" not in rest
            stream.release()

            assert await asyncio.wait_for(process.wait(), 30) == 0
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(f"{base}/health")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    logs = (await process.stdout.read()).decode()
    assert '"msg":"stopped"' in logs
    # Access lines are written in batches: the last ones are flushed on the way out.
    access = [orjson.loads(line) for line in logs.splitlines() if '"msg":"request"' in line]
    assert {"path": "/execute", "status": 200} in [
        {"path": a["path"], "status": a["status"]} for a in access]

    # The audit row of the call in flight was written before the pool closed.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        tools = [r["tool"] for r in await admin_conn.fetch("SELECT tool FROM audit_log")]
    assert "explorer_query" in tools
