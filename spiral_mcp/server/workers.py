"""``spiral-mcp serve --workers N``: N worker processes serving one port, and their supervisor.

The supervisor (the ``serve`` process) checks the address, binds the listening sockets, prepares
the database once (the embedded server started and provisioned, or migrations and the first
start's tenant: the key banner is printed once, here), then starts N workers (``worker.py``) that
each run the app on the sockets it hands them, and prints the listening line once all are ready.

Why the supervisor binds, and how: a worker must never bind for itself, or a replacement could
find the port taken, and a bind error would be said N times after the database work. On Linux
each worker slot gets sockets of its own in one SO_REUSEPORT group: the kernel spreads new
connections evenly over them, where one shared socket lets whichever worker wakes first accept a
whole burst of connections (asyncio and libuv accept until the queue is empty), leaving the other
cores idle on long-lived keep-alive connections. The supervisor keeps every slot's sockets open,
so a worker that dies loses none of the connections queued for it: its replacement accepts them.
Elsewhere (SO_REUSEPORT does not balance there) all workers share one socket.

Supervision: a worker that dies is replaced, after a backoff when it died soon after its start;
one that dies at once again and again stops everything (exit status 1, with the reason) rather
than looping forever. A worker that cannot start on the server's first start is a startup error,
said as a single process says it. SIGTERM or SIGINT: each worker gets one SIGTERM and drains as a
single process does (calls get SHUTDOWN_TIMEOUT), then the supervisor exits 0; the embedded
PostgreSQL stops when the supervisor exits, after the last worker. Workers run in a process group
of their own, so a terminal's Ctrl+C reaches them only as the supervisor's one SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile

from ..config import Settings
from ..provision import DatabaseUrls
from ..sources.secrets import CredentialError, load_secret_key
from .first_start import print_listening
from .logs import configure_logging
from .run import (
    STARTUP_ERRORS,
    ListenError,
    check_address,
    listening_sockets,
    prepare_database,
)
from .shutdown import WIND_DOWN_SECONDS
from .worker import WorkerOrders, send_orders

__all__ = ["QUICK_DEATHS_MAX", "QUICK_DEATH_SECONDS", "supervise"]

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start "died at once"; this many such deaths in a
# row of one slot stop the server.
QUICK_DEATH_SECONDS = 10.0
QUICK_DEATHS_MAX = 5
_BACKOFF_MAX = 8.0
# Imported rather than run with -m: the orders' classes must be those of the package, not of
# a module named __main__.
_WORKER_MAIN = "from spiral_mcp.server.worker import main; main()"
# Beyond a worker's own bound (SHUTDOWN_TIMEOUT + the wind-down), before it is killed.
_STOP_MARGIN = 5.0


class _Worker:
    """One worker process and what it said over its control socket."""

    def __init__(self, number: int, proc: asyncio.subprocess.Process, started: float) -> None:
        self.number = number
        self.proc = proc
        self.started = started
        self.ready = False
        self.error: str | None = None
        self.heard: asyncio.Task[None] | None = None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _bind_slots(settings: Settings) -> list[list[socket.socket]]:
    """Each worker slot's listening sockets (see the module's docstring)."""
    # First a plain bind, as a single process checks: it fails on a port any process holds,
    # also one held by another server's SO_REUSEPORT group, which would otherwise let us join it.
    check_address(settings)
    count = settings.workers
    if sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT"):
        slots: list[list[socket.socket]] = []
        try:
            for _ in range(count):
                slots.append(listening_sockets(settings, reuse_port=True))
        except BaseException:
            for sockets in slots:
                for sock in sockets:
                    sock.close()
            raise
        return slots
    shared = listening_sockets(settings)
    return [shared] * count


class Supervisor:
    """Starts the workers, replaces those that die, and stops them together."""

    def __init__(self, settings: Settings, slots: list[list[socket.socket]], *,
                 metrics_dir: str) -> None:
        self._settings = settings
        self._metrics_dir = metrics_dir
        self._slots = slots
        self._workers: dict[int, _Worker] = {}
        self._stopping = asyncio.Event()
        self._failure: str | None = None
        self._announced = False
        self._shared_secret = os.urandom(32)

    def stop(self) -> None:
        """SIGTERM or SIGINT: drain every worker, then exit 0."""
        if not self._stopping.is_set():
            log.info("stopping the workers")
            self._stopping.set()

    def _fail(self, reason: str) -> None:
        if self._failure is None and not self._stopping.is_set():
            self._failure = reason
            self._stopping.set()

    async def run(self, urls: DatabaseUrls) -> int:
        """Serve until stopped; the exit status (1 after a failure, said on stderr)."""
        keepers = [asyncio.create_task(self._keep(number, urls), name=f"worker-{number}")
                   for number in range(1, len(self._slots) + 1)]
        await self._stopping.wait()
        for worker in self._workers.values():
            worker.signal(signal.SIGTERM)
        bound = self._settings.shutdown_timeout + WIND_DOWN_SECONDS + _STOP_MARGIN
        _, late = await asyncio.wait(keepers, timeout=bound)
        if late:
            log.error("workers still running after the shutdown's bound; killing them",
                      extra={"pids": [w.proc.pid for w in self._workers.values()
                                      if w.proc.returncode is None]})
            for worker in self._workers.values():
                worker.signal(signal.SIGKILL)
            await asyncio.wait(late)
        if self._failure is not None:
            print(f"spiral-mcp: error: {self._failure}", file=sys.stderr, flush=True)
            return 1
        return 0

    async def _keep(self, number: int, urls: DatabaseUrls) -> None:
        """Keep slot ``number`` served until the server stops."""
        try:
            await self._keep_serving(number, urls)
        except Exception as exc:
            log.exception("cannot keep a worker running", extra={"worker": number})
            self._fail(f"cannot keep worker {number} running: {exc}")

    async def _keep_serving(self, number: int, urls: DatabaseUrls) -> None:
        loop = asyncio.get_running_loop()
        quick_deaths = 0
        while not self._stopping.is_set():
            worker = await self._spawn(number, urls)
            if self._stopping.is_set():
                worker.signal(signal.SIGTERM)  # stopped while it was being started
            code = await worker.proc.wait()
            if worker.heard is not None:
                await worker.heard  # what it said before it died (its socket ends with it)
            if self._stopping.is_set():
                return
            reason = worker.error or _exit_reason(code)
            if not worker.ready and not self._announced:
                # Never served yet: a startup error, said once as a single process says it.
                self._fail(reason if worker.error else f"worker {number} could not start: "
                           f"{reason}")
                return
            lived = loop.time() - worker.started
            # One that never served (its database out of reach, say) died at once too.
            died_at_once = lived < QUICK_DEATH_SECONDS or not worker.ready
            quick_deaths = quick_deaths + 1 if died_at_once else 0
            if quick_deaths >= QUICK_DEATHS_MAX:
                self._fail(f"worker {number} died {quick_deaths} times in a row within "
                           f"{QUICK_DEATH_SECONDS:g} s of its start; last: {reason}")
                return
            delay = min(0.5 * 2 ** (quick_deaths - 1), _BACKOFF_MAX) if quick_deaths else 0.0
            log.warning("worker died; starting another", extra={
                "worker": number, "worker_pid": worker.proc.pid, "reason": reason,
                "restart_in": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _spawn(self, number: int, urls: DatabaseUrls) -> _Worker:
        listeners = self._slots[number - 1]
        ours, theirs = socket.socketpair()
        fds = tuple(sock.fileno() for sock in listeners)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno()),
                pass_fds=(theirs.fileno(), *fds), stdin=asyncio.subprocess.DEVNULL,
                process_group=0)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = self._workers[number] = _Worker(number, proc, asyncio.get_running_loop().time())
        # Blocking, before the stream takes the socket: a few kilobytes, within its buffer.
        try:
            send_orders(ours, WorkerOrders(settings=self._settings, urls=urls, number=number,
                                           listeners=fds, supervisor=os.getpid(),
                                           metrics_dir=self._metrics_dir,
                                           shared_secret=self._shared_secret))
        except OSError:
            ours.close()  # it died at once; its exit says how
            return worker
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker.heard = asyncio.create_task(self._hear(worker, reader, writer))
        return worker

    async def _hear(self, worker: _Worker, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while line := (await reader.readline()).decode(errors="replace").rstrip("\n"):
                if line == "ready":
                    worker.ready = True
                    self._announce()
                elif line.startswith("error "):
                    worker.error = line.removeprefix("error ")
        except OSError:
            pass
        finally:
            writer.close()

    def _announce(self) -> None:
        """The listening line, once, when every worker serves for the first time."""
        if not self._announced and all(
                number in self._workers and self._workers[number].ready
                for number in range(1, len(self._slots) + 1)):
            self._announced = True
            log.info("workers ready", extra={"workers": len(self._slots), "pids": [
                w.proc.pid for w in self._workers.values()]})
            print_listening(self._settings)


async def _supervise(settings: Settings, slots: list[list[socket.socket]]) -> int:
    loop = asyncio.get_running_loop()
    # The workers' metrics sockets (worker_metrics.py): a folder only this user may enter.
    with tempfile.TemporaryDirectory(prefix="spiral-mcp-workers-") as metrics_dir:
        supervisor = Supervisor(settings, slots, metrics_dir=metrics_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, supervisor.stop)
        urls = await prepare_database(settings)
        if settings.embedded:
            # The embedded installation's key file is made here, once: workers starting
            # together could otherwise read it between its creation and its writing.
            with contextlib.suppress(CredentialError):
                load_secret_key(settings)
        return await supervisor.run(urls)


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT; the process's exit status."""
    configure_logging(settings.log_level)
    try:
        slots = _bind_slots(settings)
    except ListenError as exc:
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        return 1
    log.info("starting", extra={"host": settings.host, "port": settings.port,
                                "workers": settings.workers})
    # The standard loop: the supervisor has no request path, and uvloop's subprocesses take no
    # process_group.
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(_supervise(settings, slots))
    except STARTUP_ERRORS as exc:  # preparing the database
        print(f"spiral-mcp: error: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
        for sock in {sock for sockets in slots for sock in sockets}:
            sock.close()
    log.info("stopped")
    return code
