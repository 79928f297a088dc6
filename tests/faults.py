"""Faults made for real in tests: a network path that lags, a Redis of the test's own.

Nothing here stands in for PostgreSQL or Redis; these put real servers behind the faults
production meets (a connection whose end arrives late, a Redis that stops and comes back empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LaggingProxy", "OwnRedis"]


class LaggingProxy:
    """A TCP proxy to ``host:port`` that passes bytes both ways at once but passes the server's
    end of a connection on only ``lag`` seconds later, as a network path (a container's port
    proxy, a load balancer) may: the client has read the server's last words (PostgreSQL's
    FATAL when it ends a backend) yet its socket is still open."""

    def __init__(self, host: str, port: int, *, lag: float = 0.0) -> None:
        self._target = (host, port)
        self._lag = lag
        self._server: asyncio.Server | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Local ports of the proxy's own connections to the server, as pg_stat_activity's
        # client_port shows them: which backends are behind this proxy.
        self.upstream_ports: list[int] = []

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> LaggingProxy:
        """Listen (again, on the same port after :meth:`close`)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and cut every connection: the database is unreachable."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
            self.upstream_ports.append(server_w.get_extra_info("sockname")[1])
            up = asyncio.ensure_future(self._pipe(client_r, server_w, lag=0))
            try:
                await self._pipe(server_r, client_w, lag=self._lag)
            finally:
                up.cancel()
                with contextlib.suppress(BaseException):
                    await up
                server_w.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    lag: float) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        await asyncio.sleep(lag)  # the end, late
        writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A redis-server of the test's own on a free port, without persistence, that the test may
    stop and start again (empty, as a restarted Redis without persistence is). The machine's
    Redis is shared and is never stopped."""

    def __init__(self, directory: Path, *, config: Path | None = None,
                 args: Sequence[str] = ()) -> None:
        """``config``: a configuration file (a sentinel's, with ``args`` ``--sentinel``);
        ``args``: more options (``--replicaof host port``)."""
        self.port = _free_port()
        self._directory = directory
        self._config = config
        self._args = tuple(args)
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", *([str(self._config)] if self._config else []), *self._args,
             "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("the test's own redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
