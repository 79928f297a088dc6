"""One process of ``spiral-mcp serve --workers N``, started by the supervisor (``workers.py``).

It is handed its listening sockets (inherited file descriptors) and a control socket. Over the
control socket it reads its orders (the settings and the database URLs the supervisor prepared:
a worker never provisions, migrates or bootstraps), says ``ready`` once it serves or ``error
<reason>`` when it cannot start, and learns that the supervisor is gone when the socket closes:
then it shuts down as on SIGTERM. On Linux the kernel also sends it SIGTERM when the supervisor
dies (PR_SET_PDEATHSIG), so no worker outlives a supervisor killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from pathlib import Path

from aiohttp import web

from ..config import Settings
from ..provision import DatabaseUrls
from .app import create_app
from .logs import configure_logging
from .run import STARTUP_ERRORS, new_event_loop, settle_heap
from .shutdown import WIND_DOWN_SECONDS
from .worker_metrics import serve_own_metrics

__all__ = ["WorkerOrders", "main", "read_orders", "send_orders"]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOrders:
    """What a worker is told at its start."""

    settings: Settings
    urls: DatabaseUrls
    number: int  # its slot, 1..N; a replacement takes the slot of the worker it replaces
    listeners: tuple[int, ...]  # inherited file descriptors of its listening sockets
    supervisor: int  # the supervisor's pid
    metrics_dir: str  # where the workers serve their own metrics to each other
    # Random, made by the supervisor for this run: the workers seal the stateless era's
    # requestState with it when SPIRAL_SECRET_KEY is not set, so any worker takes the answer.
    shared_secret: bytes = dataclasses.field(repr=False)


def send_orders(control: socket.socket, orders: WorkerOrders) -> None:
    # Pickle between two processes of one installation, over a socket pair only they hold.
    data = pickle.dumps(orders)
    control.sendall(_LENGTH.pack(len(data)) + data)


def read_orders(control: socket.socket) -> WorkerOrders:
    def exactly(size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = control.recv(size - len(chunks))
            if not chunk:
                raise SystemExit("spiral-mcp worker: the supervisor went away before its orders")
            chunks += chunk
        return bytes(chunks)

    (size,) = _LENGTH.unpack(exactly(_LENGTH.size))
    orders = pickle.loads(exactly(size))  # noqa: S301 - written by our supervisor, see send_orders
    assert isinstance(orders, WorkerOrders)
    return orders


def _terminate_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent (the supervisor) dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere the control socket's end says it, once the loop runs
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _tell(control: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):  # a supervisor gone hears nothing
        control.sendall(line.replace("\n", " ").encode() + b"\n")


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    _terminate_with_parent()
    orders = read_orders(control)
    if os.getppid() != orders.supervisor:
        sys.exit(1)  # the supervisor died before the kernel was told to signal its death
    settings = orders.settings
    configure_logging(settings.log_level, worker=orders.number)
    listeners = [socket.socket(fileno=fd) for fd in orders.listeners]
    loop = new_event_loop()

    def supervisor_gone() -> None:
        loop.remove_reader(control.fileno())
        log.warning("the supervisor is gone; shutting down")
        os.kill(os.getpid(), signal.SIGTERM)  # aiohttp's graceful shutdown, as on SIGTERM

    def listening(_banner: str) -> None:
        # Called by run_app once the app has started and accepts: the cleanup contexts have run.
        settle_heap()
        log.info("worker ready")
        _tell(control, "ready")
        # The supervisor writes nothing more: the control socket turns readable at its end.
        loop.add_reader(control.fileno(), supervisor_gone)

    try:
        app = create_app(settings, database_url=orders.urls.runtime,
                         explorer_url=orders.urls.explorer, owner_url=orders.urls.admin,
                         shared_secret=orders.shared_secret)
        app.cleanup_ctx.append(serve_own_metrics(Path(orders.metrics_dir), orders.number))
        web.run_app(app, loop=loop, sock=listeners,
                    shutdown_timeout=settings.shutdown_timeout + WIND_DOWN_SECONDS,
                    access_log=None, print=listening, handle_signals=True)
    except STARTUP_ERRORS as exc:
        _tell(control, f"error {exc}")
        sys.exit(1)
    log.info("stopped")
