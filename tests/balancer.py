"""Several server processes behind a real HAProxy, as an operator runs them (issue #20).

``balanced(...)`` starts K backend processes on free loopback ports, each serving until killed,
and Debian's ``haproxy`` in front of them on another free port: round robin per request, no
stickiness, streams passed through as they come (no request or response buffering, timeouts long
enough for an SSE stream that is quiet for minutes), a health check on ``/ready``. The backends
share whatever their environment names (TEST_DATABASE_URL's database, REDIS_URL,
SPIRAL_SECRET_KEY): the balancer knows nothing of the product.

``Balancer.kill(i)`` ends backend ``i`` with SIGKILL (no drain: what a crash or the OOM killer
does) and waits until HAProxy has marked it down; ``Balancer.restart(i)`` starts it again on the
same port and waits until HAProxy has marked it up. HAProxy's own counters (its admin socket)
tell how many requests each backend served.

No pytest here: tests/conformance_harness.py uses it from the command line too. The config is
written to a temporary folder with the processes' output, shown when a process fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp

__all__ = ["Backend", "Balancer", "balanced", "free_port", "haproxy_binary", "haproxy_config"]

# Debian installs it in /usr/sbin, which is not on a plain user's PATH.
_SBIN_HAPROXY = Path("/usr/sbin/haproxy")

# Long enough for a call whose JSON answer comes only when it ends, and for a client quiet for long
# (an SSE stream carries a comment every 15 s); HAProxy would otherwise cut it, and the client
# would see a stream end it never asked for. Short for connecting: a dead backend is known at
# once (connection refused), and retried.
STREAM_TIMEOUT = "1h"


def haproxy_binary() -> str | None:
    """HAProxy's program: on PATH, else Debian's /usr/sbin/haproxy, else None."""
    found = shutil.which("haproxy")
    if found:
        return found
    return str(_SBIN_HAPROXY) if os.access(_SBIN_HAPROXY, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\\n\r') or not value.isprintable():
        raise ValueError(f"cannot put {value!r} into an HAProxy config")
    return f'"{value}"'


def haproxy_config(*, port: int, backends: Sequence[tuple[str, int]], admin_socket: Path,
                   set_headers: dict[str, str] | None = None) -> str:
    """HAProxy's config: listen on 127.0.0.1:``port``, balance over ``backends`` (name, port).

    ``set_headers`` are set on every request (the conformance suite sends no credentials, so its
    run sets Authorization here rather than in the product).
    """
    headers = "".join(f"    http-request set-header {name} {_quoted(value)}\n"
                      for name, value in (set_headers or {}).items())
    servers = "".join(f"    server {name} 127.0.0.1:{backend_port}\n"
                      for name, backend_port in backends)
    return f"""\
global
    maxconn 2000
    stats socket {admin_socket} mode 600 level admin

defaults
    mode http
    # Each request is balanced anew, whatever connection it came on: no stickiness at all.
    balance roundrobin
    # A request is sent to the backend as it comes, never gathered first.
    no option http-buffer-request
    timeout connect 2s
    timeout client {STREAM_TIMEOUT}
    timeout server {STREAM_TIMEOUT}
    timeout tunnel {STREAM_TIMEOUT}
    timeout http-request 30s
    timeout http-keep-alive 60s
    timeout queue 30s
    # A backend that refused the connection (killed, restarting) never saw the request: try
    # another one. A request that reached a backend is never sent twice (no retry-on beyond
    # conn-failure, HAProxy's default), since a tool call may have run.
    retries 2
    option redispatch 1

frontend mcp
    bind 127.0.0.1:{port}
{headers}    default_backend servers

backend servers
    option httpchk
    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 1
{servers}"""


@dataclasses.dataclass
class Backend:
    """One server process on a fixed loopback port, restartable there after a kill."""

    name: str
    port: int
    command: Sequence[str]
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process wrote (stderr and stdout), the last lines."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])
        except FileNotFoundError:
            return ""

    async def start(self, *, timeout: float = 120.0) -> None:
        """Start the process; return once its /ready answers 200 on its own port."""
        assert self.proc is None or self.proc.returncode is not None, f"{self.name} is running"
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, env={**self.env, "HOST": "127.0.0.1", "PORT": str(self.port)},
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"backend {self.name} exited with {self.proc.returncode}"
                                       f" before it was ready:\n{self.output()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/ready") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backend {self.name} not ready after {timeout} s:\n"
                                       f"{self.output()}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crash."""
        assert self.proc is not None and self.proc.returncode is None, f"{self.name} is stopped"
        self.proc.kill()
        await self.proc.wait()

    async def stop(self, *, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain, as an operator stops it), SIGKILL if it outlives ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


@dataclasses.dataclass
class Balancer:
    """HAProxy in front of the backends: its URL, the backends, and HAProxy's view of them."""

    port: int
    backends: list[Backend]
    admin_socket: Path
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _admin(self, command: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.admin_socket))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()

    async def _stats(self) -> dict[str, dict[str, str]]:
        text = (await self._admin("show stat")).lstrip("# ")
        rows = csv.DictReader(line for line in text.splitlines() if line)
        return {row["svname"]: row for row in rows if row["pxname"] == "servers"
                and row["svname"] not in ("BACKEND", "FRONTEND")}

    async def states(self) -> dict[str, str]:
        """Each backend's state as HAProxy's health check sees it: UP, DOWN, ..."""
        return {name: row["status"].split()[0] for name, row in (await self._stats()).items()}

    async def served(self) -> dict[str, int]:
        """How many requests HAProxy has sent each backend so far."""
        return {name: int(row["stot"] or 0) for name, row in (await self._stats()).items()}

    async def wait_state(self, name: str, state: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := (await self.states()).get(name)) != state:
            if time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy still sees {name} as {seen}, not {state}")
            await asyncio.sleep(0.1)

    async def kill(self, index: int) -> None:
        """SIGKILL backend ``index``; return once HAProxy has marked it down."""
        backend = self.backends[index]
        await backend.kill()
        await self.wait_state(backend.name, "DOWN")

    async def restart(self, index: int) -> None:
        """Start backend ``index`` again on its port; return once HAProxy has marked it up."""
        backend = self.backends[index]
        await backend.start()
        await self.wait_state(backend.name, "UP")


async def _start_haproxy(binary: str, config: Path, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        # -db: in the foreground, not as a daemon, so it is this process and ends with it.
        return await asyncio.create_subprocess_exec(
            binary, "-db", "-f", str(config), stdout=log, stderr=log, start_new_session=True)


@contextlib.asynccontextmanager
async def balanced(count: int, command: Sequence[str], env: dict[str, str], *,
                   set_headers: dict[str, str] | None = None) -> AsyncIterator[Balancer]:
    """``count`` processes of ``command`` (each given HOST and PORT) behind HAProxy, all UP.

    Every process is stopped with SIGTERM when the block ends, then HAProxy.
    """
    binary = haproxy_binary()
    if binary is None:
        raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
    with tempfile.TemporaryDirectory(prefix="spiral-balancer-") as folder:
        root = Path(folder)
        backends = [Backend(name=f"s{i + 1}", port=free_port(), command=command, env=env,
                            log_path=root / f"s{i + 1}.log") for i in range(count)]
        proxy_port = free_port()
        admin_socket = root / "admin.sock"
        config = root / "haproxy.cfg"
        config.write_text(haproxy_config(
            port=proxy_port, backends=[(b.name, b.port) for b in backends],
            admin_socket=admin_socket, set_headers=set_headers))
        proxy: asyncio.subprocess.Process | None = None
        try:
            # Together: each start is mostly waiting (imports, the pool, the first checks).
            await asyncio.gather(*(backend.start() for backend in backends))
            proxy = await _start_haproxy(binary, config, root / "haproxy.log")
            balancer = Balancer(port=proxy_port, backends=backends, admin_socket=admin_socket,
                                proc=proxy, log_path=root / "haproxy.log")
            await _until_up(balancer)
            yield balancer
        finally:
            await asyncio.gather(*(backend.stop() for backend in backends))
            if proxy is not None and proxy.returncode is None:
                proxy.terminate()
                await proxy.wait()


async def _until_up(balancer: Balancer, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        if balancer.proc.returncode is not None:
            raise RuntimeError(f"haproxy exited with {balancer.proc.returncode}:\n"
                               f"{balancer.log_path.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            states = await balancer.states()
            if states and all(state == "UP" for state in states.values()):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy never saw every backend up: {states}")
        await asyncio.sleep(0.1)
