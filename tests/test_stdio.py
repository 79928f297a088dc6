"""``spiral-mcp stdio`` run as a real process against the test database, driven by the official
``mcp`` client's stdio transport (legacy mode: the initialize handshake; auto mode: the
``server/discover`` probe and the stateless 2026-07-28 era) and by raw lines on its pipes.

The shipped tools run in ``python -m spiral_mcp stdio``; progress, cancellation, a tool that asks
the client and calls in flight at shutdown use tests/stdio_server.py, the same command with
test-only tools beside the shipped ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from conftest import Tenant, TenantFactory
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from test_mcp_clients import _elicit, _sample

from spiral_mcp import admin
from spiral_mcp.admin import tenants
from spiral_mcp.admin.operators import CLI_OPERATOR
from spiral_mcp.auth import SUSPENDED, new_key
from spiral_mcp.config import SETTINGS
from spiral_mcp.db import init_connection
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.roles import APP_ROLE, url_for_role
from spiral_mcp.server.shutdown import WIND_DOWN_SECONDS
from spiral_mcp.server.stdio_main import KEY_ENV

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = (sys.executable, "-m", "spiral_mcp", "stdio")
WITH_FIXTURES = (sys.executable, str(ROOT / "tests" / "stdio_server.py"))
MODES = ("legacy", "auto")
SESSION_VERSION = "2025-11-25"
STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture
def environment(database_urls: DatabaseUrls, tmp_path: Path):
    """``environment(tenant, **env)``: what the command sees, none of the caller's settings;
    this tree's code first on the path (the venv's install may be another tree's)."""

    def make(tenant: Tenant | None, **env: str | None) -> dict[str, str]:
        ours = {s.env for s in SETTINGS} | {KEY_ENV}
        base = {k: v for k, v in os.environ.items() if k not in ours}
        base |= {"PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests"))),
                 "DATABASE_URL": database_urls.runtime, "SPIRAL_DATA_DIR": str(tmp_path / "d"),
                 "SYNC_INTERVAL": "0", "AUTH_CACHE_TTL": "0", "DB_POOL_MIN": "1",
                 "DB_POOL_MAX": "4"}
        if tenant is not None:
            base[KEY_ENV] = tenant.key
        return {k: v for k, v in {**base, **env}.items() if v is not None}

    return make


@contextlib.asynccontextmanager
async def connect(command: tuple[str, ...], env: dict[str, str], mode: str, stderr: Path,
                  **callbacks: Any) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=env,
                                   cwd=str(ROOT))
    with stderr.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode, **callbacks) as client:
            yield client


class Process:
    """The command on raw pipes: lines in, lines out, stderr kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, command: tuple[str, ...], env: dict[str, str]) -> Process:
        return cls(await asyncio.create_subprocess_exec(
            *command, env=env, cwd=str(ROOT), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))

    async def send(self, *messages: Any) -> None:
        assert self.proc.stdin is not None
        for message in messages:
            self.proc.stdin.write(message if isinstance(message, bytes)
                                  else orjson.dumps(message) + b"\n")
        await self.proc.stdin.drain()

    async def receive(self, timeout: float = 30.0) -> Any:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line.endswith(b"\n"), line
        return orjson.loads(line)

    async def answer(self, request_id: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The answer to ``request_id``; what comes before it must be notifications."""
        while True:
            message = await self.receive(timeout)
            if message.get("id") == request_id and "method" not in message:
                return message
            assert "method" in message and "id" not in message, message

    async def finish(self, timeout: float = 30.0) -> tuple[int, bytes, str]:
        """Close stdin; the exit code, the rest of stdout, and stderr."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, out, err.decode()


def initialize(request_id: int = 1, version: str = SESSION_VERSION,
               capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": capabilities or {},
        "clientInfo": {"name": "test", "version": "1"}}}


def call(request_id: Any, name: str, meta: dict[str, Any] | None = None,
         **arguments: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def audit_rows(admin_conn: asyncpg.Connection, tenant: Tenant, *, tool: str,
                     count: int = 1) -> list[asyncpg.Record]:
    """The tenant's audit rows of ``tool``, once ``count`` are there (reads are written in
    batches, every second)."""
    rows: list[asyncpg.Record] = []
    for _ in range(100):
        async with admin_conn.transaction():
            await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                     str(tenant.id))
            rows = await admin_conn.fetch(
                "SELECT key_id, actor, outcome, error_code, request_id, arguments "
                "FROM audit_log WHERE tool = $1 ORDER BY id", tool)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    return rows


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant(demo=True)


# -- the official client ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_the_official_client_lists_reads_and_writes(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection, tmp_path: Path,
        mode: str) -> None:
    async with connect(PRODUCT, environment(tenant), mode, tmp_path / "err") as client:
        assert client.protocol_version == {"legacy": SESSION_VERSION, "auto": "2026-07-28"}[mode]
        assert client.instructions and "jira_get_issue" in client.instructions

        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"jira_get_issue", "jira_add_comment", "explorer_query", "sources_sync"} <= names
        assert not [n for n in names if n.startswith("test_")]  # the product's tools only

        read = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
        assert read.is_error is False, read
        assert read.structured_content["data"]["key"] == "WEB-1"
        assert read.structured_content["tenant_id"] == str(tenant.id)

        text = f"written over stdio in {mode} mode"
        write = await client.call_tool("jira_add_comment", {"issue_key": "WEB-1", "body": text})
        assert write.is_error is False, write
        assert text in orjson.dumps(write.structured_content["data"]).decode()

        bad = await client.call_tool("jira_get_issue", {"issue_key": "not a key"})
        assert bad.is_error is True
        assert bad.structured_content["error"]["code"] == "VALIDATION_ERROR"
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_tool", {})
        assert unknown.value.error.code == -32602

    # The write is audited in its own transaction, with the key that made it; the read too.
    [written] = await audit_rows(admin_conn, tenant, tool="jira_add_comment")
    assert (written["key_id"], written["actor"], written["outcome"]) == (
        tenant.key_id, "tester@example.com", "ok")
    assert len(written["request_id"]) == 32
    reads = await audit_rows(admin_conn, tenant, tool="jira_get_issue", count=2)
    assert [(r["key_id"], r["error_code"]) for r in reads] == [
        (tenant.key_id, None), (tenant.key_id, "VALIDATION_ERROR")]


async def test_another_tenants_data_is_not_visible(
        environment, tenant: Tenant, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        tmp_path: Path) -> None:
    """The key's tenant only: another tenant (``tenant``, with the demo data) is invisible to a
    key of a tenant with no data, whatever door the call takes."""
    empty = await make_tenant(demo=False)
    async with connect(PRODUCT, environment(empty), "auto", tmp_path / "err") as client:
        item = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
        assert item.structured_content["error"]["code"] == "NOT_FOUND"
        projects = await client.call_tool("jira_list_projects", {})
        assert projects.structured_content["data"]["projects"] == []
        counted = await client.call_tool("explorer_query", {
            "sql": "SELECT (SELECT count(*) FROM work_items) AS items, "
                   "(SELECT count(*) FROM audit_log) AS audited"})
        assert counted.is_error is False, counted
        assert counted.structured_content["data"]["rows"] == [[0, 0]] or \
            counted.structured_content["data"]["rows"] == [{"items": 0, "audited": 0}]
    async with connect(PRODUCT, environment(tenant), "legacy", tmp_path / "err") as client:
        mine = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
        assert mine.structured_content["data"]["key"] == "WEB-1"
    # The empty tenant's calls are audited under it, never under the other.
    assert [r["key_id"] for r in await audit_rows(admin_conn, empty, tool="jira_get_issue")] \
        == [empty.key_id]
    assert [r["key_id"] for r in await audit_rows(admin_conn, tenant, tool="jira_get_issue")] \
        == [tenant.key_id]


async def test_scopes_are_those_of_the_key(environment, make_tenant: TenantFactory,
                                           tmp_path: Path) -> None:
    reader = await make_tenant(scopes=("read",), demo=True)
    async with connect(PRODUCT, environment(reader), "legacy", tmp_path / "err") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "jira_get_issue" in names and "jira_add_comment" not in names
        refused = await client.call_tool("jira_add_comment", {"issue_key": "WEB-1", "body": "x"})
        assert refused.is_error is True
        assert refused.structured_content["error"]["code"] == "PERMISSION_DENIED"
        assert "write" in refused.structured_content["error"]["message"]


async def _three_reads_with_a_budget_of_two(env: dict[str, str], stderr: Path) -> list[Any]:
    async with connect(PRODUCT, {**env, "RATE_LIMIT_READ": "2"}, "auto", stderr) as client:
        codes = []
        for _ in range(3):
            result = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
            codes.append(None if result.structured_content["success"]
                         else result.structured_content["error"]["code"])
    return codes


async def test_rate_limits_in_redis(environment, tenant: Tenant, redis_url: str,
                                    tmp_path: Path) -> None:
    env = environment(tenant, REDIS_URL=redis_url)
    assert await _three_reads_with_a_budget_of_two(env, tmp_path / "err") == [
        None, None, "RATE_LIMITED"]


async def test_rate_limits_in_process_without_redis(environment, tenant: Tenant,
                                                    tmp_path: Path) -> None:
    env = environment(tenant)
    assert await _three_reads_with_a_budget_of_two(env, tmp_path / "err") == [
        None, None, "RATE_LIMITED"]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_concurrency_and_cancellation(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection, tmp_path: Path,
        mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def on_start(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with connect(WITH_FIXTURES, environment(tenant), mode, tmp_path / "err") as client:
        steps = await client.call_tool("test_steps", {}, progress_callback=on_progress)
        assert steps.structured_content["data"] == {"steps": 3}
        for _ in range(50):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]

        # A call that would take a minute holds up no other request ...
        slow = asyncio.ensure_future(
            client.call_tool("test_pause", {"seconds": 60}, progress_callback=on_start))
        await asyncio.wait_for(started.wait(), 20)
        listed = await asyncio.wait_for(client.list_tools(), 5)
        assert "test_pause" in {tool.name for tool in listed.tools}
        # ... and the client's cancel stops it in the server.
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        [row] = await audit_rows(admin_conn, tenant, tool="test_pause")
        assert (row["key_id"], row["error_code"]) == (tenant.key_id, "CANCELLED")
        after = await client.call_tool("jira_get_issue", {"issue_key": "WEB-2"})
        assert after.structured_content["data"]["key"] == "WEB-2"


async def test_a_tool_asks_the_client_on_the_session(environment, tenant: Tenant,
                                                     tmp_path: Path) -> None:
    async with connect(WITH_FIXTURES, environment(tenant), "legacy", tmp_path / "err",
                       sampling_callback=_sample, elicitation_callback=_elicit) as client:
        result = await client.call_tool("test_ask", {})
        assert result.is_error is False, result
        assert result.structured_content["data"] == {
            "sampled": "hi there", "elicited": {"action": "accept", "content": {"name": "Ada"}}}


# -- the key ----------------------------------------------------------------------------------

async def _revoked(make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
                   queries: Queries) -> str:
    tenant = await make_tenant()
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    return tenant.key


@pytest.mark.parametrize(("case", "code", "says"), [
    ("unset", 2, f"{KEY_ENV} is not set"),
    ("empty", 2, f"{KEY_ENV} is not set"),
    ("malformed", 2, f"{KEY_ENV} does not hold a spiral-mcp API key"),
    ("unknown", 1, f"the API key in {KEY_ENV} is not accepted (unknown, revoked or expired"),
    ("revoked", 1, f"the API key in {KEY_ENV} is not accepted (unknown, revoked or expired"),
])
async def test_a_key_that_will_not_do_is_one_line_and_a_non_zero_exit(
        environment, make_tenant: TenantFactory, admin_conn: asyncpg.Connection,
        queries: Queries, case: str, code: int, says: str) -> None:
    key = {"unset": None, "empty": " ", "malformed": "spk_not-a-key",
           "unknown": new_key(uuid.uuid4()).secret,
           "revoked": await _revoked(make_tenant, admin_conn, queries)
           if case == "revoked" else None}[case]
    proc = await Process.start(PRODUCT, environment(None, **{KEY_ENV: key}))
    await proc.send(initialize())
    exit_code, out, err = await proc.finish()
    assert exit_code == code, err
    assert out == b""  # no answer to initialize: the client sees the process end
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("spiral-mcp: error:")] == [lines[-1]]
    assert says in lines[-1]
    assert "Traceback" not in err
    if key is not None and key.strip():
        assert key.strip() not in err


async def test_the_official_client_fails_at_once_on_a_wrong_key(environment,
                                                                  tmp_path: Path) -> None:
    """What a client shows: the connection ends (no hang until a timeout), and the reason is the
    last line of the server's stderr, which Claude Desktop keeps in its log of the server."""
    env = environment(None, **{KEY_ENV: new_key(uuid.uuid4()).secret})
    with pytest.raises(BaseExceptionGroup) as failed:
        async with asyncio.timeout(30), connect(PRODUCT, env, "auto", tmp_path / "err"):
            pass
    assert failed.group_contains(MCPError, match="Connection closed")
    last = (tmp_path / "err").read_text().splitlines()[-1]
    assert last.startswith(f"spiral-mcp: error: the API key in {KEY_ENV} is not accepted")


async def test_a_key_revoked_while_serving_ends_the_server(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection, queries: Queries) -> None:
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send(initialize(), INITIALIZED)
    assert "result" in await proc.answer(1)
    await admin.revoke_api_key(admin_conn, queries, tenant.key_id)
    await proc.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    refused = await proc.answer(2)
    assert refused["error"]["code"] == -32600
    assert "no longer accepted" in refused["error"]["message"]
    out, err = await asyncio.wait_for(proc.proc.communicate(), 30)  # it ends by itself
    assert proc.proc.returncode == 1 and out == b""
    assert err.decode().splitlines()[-1] == (
        f"spiral-mcp: error: the API key in {KEY_ENV} is no longer accepted (revoked or expired)")



async def test_a_tenant_suspended_while_serving_ends_the_server_saying_so(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection, queries: Queries) -> None:
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send(initialize(), INITIALIZED)
    assert "result" in await proc.answer(1)
    await init_connection(admin_conn)
    async with admin_conn.transaction():
        await tenants.suspend_tenant(admin_conn, queries, CLI_OPERATOR, tenant.id)
    await proc.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert "no longer accepted" in (await proc.answer(2))["error"]["message"]
    _, err = await asyncio.wait_for(proc.proc.communicate(), 30)
    assert proc.proc.returncode == 1
    assert err.decode().splitlines()[-1] == (
        f"spiral-mcp: error: the API key in {KEY_ENV} is no longer accepted: {SUSPENDED}")
    # Nor does it start again while the tenant is suspended.
    proc = await Process.start(PRODUCT, environment(tenant))
    _, err = await asyncio.wait_for(proc.proc.communicate(), 30)
    assert proc.proc.returncode == 1
    assert err.decode().splitlines()[-1] == (
        f"spiral-mcp: error: the API key in {KEY_ENV} is not accepted: {SUSPENDED}")


# -- the pipes --------------------------------------------------------------------------------

async def test_stdout_carries_only_json_rpc_lines(environment, tenant: Tenant) -> None:
    """Everything on stdout is a JSON-RPC message on a line of its own, at LOG_LEVEL=debug too;
    the logs are JSON lines on stderr. Malformed and oversized lines are answered and reading
    goes on; a 2025-03-26 session takes batches; the stateless era is served beside it."""
    proc = await Process.start(PRODUCT, environment(tenant, LOG_LEVEL="debug",
                                                    MAX_BODY_BYTES="4096"))
    await proc.send(
        initialize(version="2025-03-26"), INITIALIZED, b"\n",
        b'{"jsonrpc": "2.0", "id": 2, "method": \n',  # not JSON
        b'{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"pad": "'
        + b"x" * 5000 + b'"}}\n',  # over MAX_BODY_BYTES
        [{"jsonrpc": "2.0", "id": 4, "method": "ping"},
         {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}],
        call(6, "jira_get_issue", issue_key="WEB-1"),
        {"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {
            "_meta": STATELESS_META}},
        call(8, "jira_get_issue", meta={**STATELESS_META, "io.modelcontextprotocol/"
                                        "protocolVersion": "2099-01-01"}, issue_key="WEB-1"),
        call(9, "jira_get_issue", meta=STATELESS_META, issue_key="WEB-2"),
        b'{"jsonrpc": "2.0", "id": 10, "method": "tools/list"}')  # the last line, no newline
    code, out, err = await proc.finish()
    assert code == 0, err
    assert out.endswith(b"\n")
    answers: dict[Any, Any] = {}
    for line in out.decode().split("\n")[:-1]:
        message = orjson.loads(line)
        if isinstance(message, list):
            assert all(m["jsonrpc"] == "2.0" for m in message)
            answers["batch"] = message
        else:
            assert message["jsonrpc"] == "2.0" and ("result" in message or "error" in message)
            answers[message["id"] if message["id"] is not None
                    else message["error"]["code"]] = message
    assert answers[1]["result"]["protocolVersion"] == "2025-03-26"
    assert answers[-32700]["error"]["message"] == "the body is not valid JSON"
    assert "at most 4096 bytes" in answers[-32600]["error"]["message"]
    assert [m["id"] for m in answers["batch"]] == [4, 5]
    assert answers["batch"][1]["result"]["tools"]
    assert "result" in answers[6], answers[6]
    assert answers[6]["result"]["structuredContent"]["data"]["key"] == "WEB-1"
    assert "2026-07-28" in answers[7]["result"]["supportedVersions"]
    assert answers[7]["result"]["resultType"] == "complete"
    assert answers[8]["error"]["code"] == -32022
    assert answers[8]["error"]["data"]["supported"] == ["2026-07-28"]
    assert answers[9]["result"]["structuredContent"]["data"]["key"] == "WEB-2"
    assert answers[10]["result"]["tools"]
    assert set(answers) == {1, -32700, -32600, "batch", 6, 7, 8, 9, 10}
    logs = [orjson.loads(line) for line in err.splitlines()]  # JSON log lines only
    assert any(entry["msg"] == "serving MCP on stdin and stdout" for entry in logs)


async def test_a_request_before_initialize_is_told_what_is_missing(environment,
                                                                   tenant: Tenant) -> None:
    proc = await Process.start(PRODUCT, environment(tenant))
    await proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    {"jsonrpc": "2.0", "id": 2, "method": "ping"},
                    [{"jsonrpc": "2.0", "id": 3, "method": "ping"}])
    answers = {m["id"]: m for m in [await proc.receive() for _ in range(3)]}
    assert answers[1]["error"]["code"] == -32602
    assert "send initialize first" in answers[1]["error"]["message"]
    assert answers[2]["result"] == {}  # a ping before initialize, as the handshake eras allow
    assert answers[None]["error"]["message"] == "JSON-RPC batches are not allowed here"
    code, out, _ = await proc.finish()
    assert code == 0 and out == b""


async def test_concurrent_calls_write_whole_lines(environment, tenant: Tenant) -> None:
    """Thirty calls at once, each sending progress as it goes: every line on stdout is one whole
    message, and each call's progress comes before its answer."""
    proc = await Process.start(WITH_FIXTURES, environment(tenant))
    calls = 30
    await proc.send(*(call(n, "test_steps", meta={**STATELESS_META, "progressToken": f"t{n}"})
                      for n in range(calls)))
    seen: dict[Any, list[str]] = {n: [] for n in range(calls)}
    for _ in range(calls * 4):
        message = await proc.receive()
        if message.get("method") == "notifications/progress":
            seen[int(message["params"]["progressToken"][1:])].append("progress")
        else:
            assert message["result"]["structuredContent"]["data"] == {"steps": 3}, message
            seen[message["id"]].append("answer")
    assert all(kinds == ["progress"] * 3 + ["answer"] for kinds in seen.values()), seen
    code, out, err = await proc.finish()
    assert code == 0 and out == b"", err


@pytest.mark.parametrize("stop", ("eof", "sigterm"))
async def test_calls_in_flight_finish_when_the_client_leaves(
        environment, tenant: Tenant, stop: str) -> None:
    proc = await Process.start(WITH_FIXTURES, environment(tenant))
    await proc.send(initialize(), INITIALIZED)
    await proc.answer(1)
    await proc.send(call(2, "test_pause", meta={"progressToken": "p"}, seconds=1.5))
    progress = await proc.receive()
    assert progress["method"] == "notifications/progress"
    if stop == "eof":
        code, out, err = await proc.finish()
        lines = [orjson.loads(line) for line in out.splitlines()]
    else:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.stderr is not None
        while b"stopping: no new requests" not in await asyncio.wait_for(
                proc.proc.stderr.readline(), 10):
            pass
        # A new request is refused; the call in flight still answers.
        await proc.send(call(3, "jira_get_issue", issue_key="WEB-1"))
        refused = await proc.answer(3)
        assert "shutting down" in refused["error"]["message"]
        code, out, err = await proc.finish()
        lines = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0, err
    [answer] = [m for m in lines if m.get("id") == 2]
    assert answer["result"]["structuredContent"]["data"] == {"paused": 1.5}


async def test_a_call_past_shutdown_timeout_is_cut_and_answered(
        environment, tenant: Tenant, admin_conn: asyncpg.Connection) -> None:
    proc = await Process.start(WITH_FIXTURES, environment(tenant, SHUTDOWN_TIMEOUT="1"))
    await proc.send(initialize(), INITIALIZED)
    await proc.answer(1)
    await proc.send(call(2, "test_pause", meta={"progressToken": 1}, seconds=60))
    await proc.receive()  # the progress that says it runs
    started = asyncio.get_running_loop().time()
    code, out, err = await proc.finish(timeout=20)
    assert code == 0, err
    # Cut when SHUTDOWN_TIMEOUT (1 s) is over, and gone within the wind-down after it.
    assert 0.5 <= asyncio.get_running_loop().time() - started <= 1 + WIND_DOWN_SECONDS + 2
    answer = orjson.loads(out)
    assert answer["id"] == 2 and answer["result"]["isError"] is True
    assert answer["result"]["structuredContent"]["error"]["code"] == "CONNECTION_ERROR"
    [row] = await audit_rows(admin_conn, tenant, tool="test_pause")
    assert row["error_code"] == "CONNECTION_ERROR"


# -- the first start --------------------------------------------------------------------------

@pytest.fixture
async def empty_database(database_urls: DatabaseUrls, fresh_database: str,
                         superuser_url: str) -> tuple[str, str]:
    """An empty database (the roles exist): its runtime and owner URLs."""
    name = urlsplit(fresh_database).path.lstrip("/")
    return url_for_role(superuser_url, APP_ROLE, database=name), fresh_database


async def test_a_first_start_is_quiet_on_stdout(environment, empty_database: tuple[str, str],
                                                tmp_path: Path) -> None:
    """The first start on an empty database (BOOTSTRAP_TENANT; the embedded database's demo
    tenant is made the same way) migrates it and shows the new key on stderr; stdout stays
    the protocol's. A key the database does not know is then refused; the new one serves."""
    runtime_url, owner_url = empty_database
    env = environment(None, DATABASE_URL=runtime_url, ADMIN_DATABASE_URL=owner_url,
                      BOOTSTRAP_TENANT="Acme", **{KEY_ENV: new_key(uuid.uuid4()).secret})
    proc = await Process.start(PRODUCT, env)
    code, out, err = await proc.finish(timeout=120)
    assert code == 1 and out == b"", err
    keys = [line.split(": ")[-1] for line in err.splitlines()
            if "API key (shown once, store it now)" in line]
    assert len(keys) == 1, err
    async with connect(PRODUCT, {**env, KEY_ENV: keys[0]}, "legacy", tmp_path / "err") as client:
        projects = await client.call_tool("jira_list_projects", {})
        assert projects.structured_content["success"] is True


async def test_the_first_start_banner_gives_claude_desktop_a_working_stdio_entry(
        environment, tenant: Tenant, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``make run``'s first start shows Claude Desktop an entry that starts this installation's
    ``spiral-mcp stdio`` on the same embedded data: run as shown (its DATABASE_URL pointed at
    the test database, as the embedded one is not started here), it serves the key."""
    from spiral_mcp.config import load_settings
    from spiral_mcp.server import first_start

    settings = load_settings(environ={"SPIRAL_DATA_DIR": str(tmp_path / "data")})
    first_start._print_banner(settings, name="Demo", tenant_id=tenant.id, secret=tenant.key,
                              summary={"work_items": 20, "projects": 3})
    banner = capsys.readouterr().err.splitlines()
    start = next(i for i, line in enumerate(banner) if line.startswith("  Claude Desktop"))
    end = next(i for i, line in enumerate(banner) if line.startswith("  MCP Inspector"))
    assert "no Node needed" in banner[start]
    entry = orjson.loads("\n".join(banner[start + 1:end]))["mcpServers"]["spiral"]
    assert entry["args"] == ["stdio"] and Path(entry["command"]).is_absolute()
    assert entry["env"] == {KEY_ENV: tenant.key, "SPIRAL_DATA_DIR": str(tmp_path / "data")}
    env = {**environment(None), **entry["env"]}
    async with connect((entry["command"], *entry["args"]), env, "legacy",
                       tmp_path / "err") as client:
        item = await client.call_tool("jira_get_issue", {"issue_key": "WEB-1"})
        assert item.structured_content["tenant_id"] == str(tenant.id)
