"""``spiral-mcp serve --workers N`` as a real process: its workers share the port and each
answers, one killed is replaced while the port keeps answering, SIGTERM drains them all (a call in
flight is answered) and nothing is left running, the supervisor's death takes its workers with
it, a worker that dies at once again and again stops the server with the reason, and N workers
without Redis are refused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import ROOT, make_settings
from prometheus_client.parser import text_string_to_metric_families
from serving import app_clients
from test_first_start import (  # noqa: F401 - empty_database: a fixture
    COMMAND,
    Server,
    _tenants,
    banner_key,
    empty_database,
    environment,
    free_port,
    serving,
    tool_call,
)
from test_mrtr import _OK, ELICIT, _first_state, call, refused

from spiral_mcp.handlers import builtin_tools
from spiral_mcp.server.app import create_app
from tests.conformance_mrtr import mrtr_prompts, mrtr_tools

pytestmark = pytest.mark.slow

# Heavy enough to be in flight for a while on the demo data (as test_shutdown.py's).
SLOW_SQL = ("SELECT count(*) AS n FROM work_items a, work_items b, work_items c, work_items d "
            "WHERE a.priority <> d.priority")


def _env(database_urls, redis_url: str | None, port: int, **settings: str) -> dict[str, str]:
    env = environment(DATABASE_URL=database_urls.runtime,
                      EXPLORER_DATABASE_URL=database_urls.explorer or "", PORT=str(port),
                      SYNC_INTERVAL="0", LOG_LEVEL="info", **settings,
                      PYTHONPATH=os.pathsep.join(filter(None, [
                          str(ROOT), os.environ.get("PYTHONPATH")])))
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def children(pid: int) -> set[int]:
    """The processes ``pid`` started and that still run (its workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(child) for child in text.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


async def eventually(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.1)
    return found


def ready_workers(server: Server) -> dict[int, int]:
    """pid -> worker number, of every "worker ready" line so far."""
    return {e["pid"]: e["worker"] for e in server.log if e.get("msg") == "worker ready"}


def answered_by(server: Server) -> set[int]:
    return {e["pid"] for e in server.log if e.get("msg") == "request" and "pid" in e}


async def health(base: str) -> int:
    # A connection of its own each time: new connections are what the workers share.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.get(f"{base}/health", timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return resp.status


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_workers_share_the_port_are_replaced_and_drain_together(
        database_urls, redis_url, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    port = free_port()
    env = _env(database_urls, redis_url, port, SHUTDOWN_TIMEOUT="20", EXPLORER_TIMEOUT_S="30")
    async with serving(env, "--workers", "2") as server:
        base = await server.listening()
        pid = server.proc.pid
        workers = await eventually(lambda: len(children(pid)) == 2 and children(pid),
                                   "two workers")
        # Log lines are written in batches: the workers' may come after the supervisor's line.
        await eventually(lambda: set(ready_workers(server)) == workers, "their ready lines")
        assert sorted(ready_workers(server).values()) == [1, 2]
        assert sum("serving MCP at" in line for line in server.err) == 1

        # Both answer: each new connection goes to one of them; every log line names its pid.
        checks = 0

        async def both_answered() -> None:
            nonlocal checks
            while not workers <= answered_by(server):
                assert set(await asyncio.gather(*(health(base) for _ in range(8)))) == {200}
                checks += 8
                await asyncio.sleep(0.2)  # log lines are written in batches
        await asyncio.wait_for(both_answered(), 60)

        # /metrics, whichever worker a scrape reaches, counts the whole server's requests.
        for _ in range(6):
            figures = await scrape(base)
            assert figures[("workers_reporting", ())] == 2
            assert figures[("http_requests_total", (
                ("method", "GET"), ("route", "/health"), ("status", "200")))] == checks

        # One killed is replaced in its slot; the port answers all along.
        killed = min(workers)
        number = ready_workers(server)[killed]
        os.kill(killed, signal.SIGKILL)
        replacement = await eventually(
            lambda: [p for p, n in ready_workers(server).items() if n == number and p != killed
                     and p in children(pid)], "a replacement")
        for _ in range(10):
            assert await health(base) == 200
        assert children(pid) == (workers - {killed}) | set(replacement)
        died = [e for e in server.log if e.get("msg") == "worker died; starting another"]
        assert died and died[0]["reason"] == "killed by SIGKILL" and died[0]["worker"] == number

        # SIGTERM with a call in flight: it is answered, then everything exits 0.
        survivors = children(pid)
        async with aiohttp.ClientSession() as http:
            call = asyncio.ensure_future(http.post(f"{base}/execute", headers=tenant.headers,
                                                   json={"jsonrpc": "2.0", "id": 1,
                                                         "method": "tools/call", "params": {
                                                             "name": "explorer_query",
                                                             "arguments": {"sql": SLOW_SQL}}}))
            await asyncio.sleep(0.5)  # the query is running
            assert not call.done()
            server.proc.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(call, 40)
            assert answer.status == 200
            envelope = (await answer.json())["result"]["structuredContent"]
            assert envelope["success"] is True, envelope
        assert await server.stop() == 0
    assert not [p for p in survivors if alive(p)]
    with pytest.raises(aiohttp.ClientConnectionError):
        await health(base)
    stopped = {e["pid"] for e in server.log if e.get("msg") == "stopped" and "pid" in e}
    assert stopped == survivors


async def test_the_database_is_prepared_once_and_the_key_printed_once(
        empty_database: tuple[str, str], redis_url, tmp_path: Path) -> None:  # noqa: F811
    """docker compose up with WORKERS=2: the supervisor migrates the empty database and creates
    the BOOTSTRAP_TENANT tenant, printing its key once; the workers only serve."""
    runtime_url, owner_url = empty_database
    env = environment(DATABASE_URL=runtime_url, ADMIN_DATABASE_URL=owner_url,
                      PORT=str(free_port()), BOOTSTRAP_TENANT="Acme", SYNC_INTERVAL="0",
                      REDIS_URL=redis_url, WORKERS="2", SPIRAL_DATA_DIR=str(tmp_path / "data"))
    async with serving(env) as server:
        base = await server.listening(timeout=60)
        key = banner_key(server)  # at most one, or it fails
        assert key is not None, "\n".join(server.err)
        assert sum("first start - created" in line for line in server.err) == 1
        for _ in range(4):
            listed = await tool_call(base, key, "jira_list_projects")
            assert listed["success"] is True and listed["data"]["projects"] == []
    migrated = [e for e in server.log if e.get("msg") == "applied migrations"]
    assert len(migrated) == 1 and "pid" not in migrated[0]  # the supervisor's line
    assert await _tenants(owner_url) == ["Acme"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_sigint_or_sigterm_stops_everything(database_urls, redis_url, signum) -> None:
    env = _env(database_urls, redis_url, free_port())
    async with serving(env, "--workers", "2") as server:
        await server.listening()
        workers = children(server.proc.pid)
        server.proc.send_signal(signum)
        assert await asyncio.wait_for(server.proc.wait(), 60) == 0
    assert not [p for p in workers if alive(p)]


async def test_workers_end_with_their_supervisor(database_urls, redis_url) -> None:
    env = _env(database_urls, redis_url, free_port())
    async with serving(env, "--workers", "2") as server:
        await server.listening()
        workers = children(server.proc.pid)
        assert len(workers) == 2
        server.proc.kill()
        await server.proc.wait()
        await eventually(lambda: not [p for p in workers if alive(p)], "workers gone", 30)


async def test_a_worker_dying_at_once_again_and_again_stops_the_server(
        database_urls, redis_url, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    env = _env(database_urls, redis_url, free_port(), SPIRAL_TEMPLATES_DIR=str(templates),
               WORKERS="2")
    # On the first start a worker that cannot start is a startup error, said once.
    (templates / "broken.sql").write_text("DELETE FROM work_items;\n")
    async with serving(env) as server:
        assert await asyncio.wait_for(server.proc.wait(), 60) == 1
        await server.stop()
    errors = [line for line in server.err if line.startswith("spiral-mcp: error:")]
    assert len(errors) == 1 and "broken.sql: missing '-- name:'" in errors[0], server.err

    # Serving, then a replacement cannot start (a broken template deployed meanwhile): it is
    # tried again with a backoff, then everything stops with the reason.
    (templates / "broken.sql").unlink()
    async with serving(env) as server:
        await server.listening()
        workers = children(server.proc.pid)
        (templates / "broken.sql").write_text("DELETE FROM work_items;\n")
        os.kill(min(workers), signal.SIGKILL)
        assert await asyncio.wait_for(server.proc.wait(), 90) == 1
        await server.stop()
    errors = [line for line in server.err if line.startswith("spiral-mcp: error:")]
    assert len(errors) == 1, server.err
    assert "died 5 times in a row within 10 s of its start; last: " in errors[0]
    assert "broken.sql: missing '-- name:'" in errors[0]
    assert not [p for p in workers if alive(p)]


@pytest.mark.parametrize("reuse_port", [False, True])
async def test_a_busy_port_is_one_line_before_any_work(redis_url, reuse_port: bool) -> None:
    """Held by any process, even by another server's SO_REUSEPORT group, which the workers'
    sockets could otherwise join."""
    port = free_port()
    with socket.socket() as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        proc = await asyncio.create_subprocess_exec(
            *COMMAND, "serve", "--workers", "2", env=environment(
                DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", REDIS_URL=redis_url,
                PORT=str(port)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err.decode().count("\n") == 1 and "set PORT to a free one" in err.decode(), err


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "2"], {}, "WORKERS: 2 processes need REDIS_URL"),
    ([], {"WORKERS": "auto"}, None),
    (["--workers", "many"], {"REDIS_URL": "redis://127.0.0.1:1/0"},
     "WORKERS: expected a whole number from 1 to 256, got 'many' (or auto)"),
    (["--workers", "0"], {"REDIS_URL": "redis://127.0.0.1:1/0"},
     "WORKERS: expected a whole number from 1 to 256, got 0 (or auto)"),
])
async def test_bad_workers_settings_are_refused(args, env, message) -> None:
    if message is None:
        if len(os.sched_getaffinity(0)) == 1:
            pytest.skip("auto is one worker on one CPU, which needs no Redis")
        message = "processes need REDIS_URL"
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "serve", *args, env=environment(
            DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    text = err.decode()
    assert text.startswith("spiral-mcp: error: ") and message in text and text.count("\n") == 1


async def test_workers_take_each_others_questions_without_spiral_secret_key(
        database_urls, make_tenant) -> None:
    """What one worker asks a stateless client (its requestState), another opens: they share
    the supervisor's secret when SPIRAL_SECRET_KEY is not set. Another server's workers do not;
    nor does another tenant's key."""
    tenant, stranger = await make_tenant(), await make_tenant()
    settings = make_settings(database_urls)
    assert settings.spiral_secret_key is None
    shared = os.urandom(32)

    def worker(secret: bytes) -> web.Application:
        return create_app(settings, database_url=database_urls.runtime, shared_secret=secret,
                          tools=[*builtin_tools(), *mrtr_tools()], prompts=mrtr_prompts())

    name = "test_input_required_result_tampered_state"
    async with app_clients() as start:
        one, other = await start(worker(shared)), await start(worker(shared))
        elsewhere = await start(worker(os.urandom(32)))
        state = await _first_state(one, tenant)
        done = await call(other, tenant, name, {}, capabilities=ELICIT, requestState=state,
                          inputResponses=_OK)
        assert done["resultType"] == "complete"
        error = await refused(elsewhere, tenant, name, {}, requestState=state, inputResponses=_OK)
        assert error["data"] == {"reason": "tampered"}
        error = await refused(other, stranger, name, {}, requestState=state, inputResponses=_OK)
        assert error["data"] == {"reason": "other_key"}
