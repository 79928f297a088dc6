"""What ships beside the code: a non-editable install carries every subpackage and data file
(setup.cfg lists packages by hand, so migrations/ can ship as spiral_mcp.migrations, and a new
one must be listed there too), and the deployment files (docker-compose.yml, docker/) hold what
the tests check. Read from the repository: .ci/check-install runs the suite without them."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

from tests.balancer import haproxy_config

ROOT = Path(__file__).resolve().parent.parent


def _listed_packages() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}


def test_every_package_is_listed_in_setup_cfg() -> None:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "spiral_mcp").rglob("__init__.py")
    }
    assert found - _listed_packages() == set()


def test_every_data_file_matches_a_package_data_pattern() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = {
        package: [p.strip() for p in value.split(",") if p.strip()]
        for package, value in config["options.package_data"].items()
    }
    for package, folder in (("spiral_mcp.sql", ROOT / "spiral_mcp" / "sql"),
                            ("spiral_mcp.schemas", ROOT / "spiral_mcp" / "schemas"),
                            ("spiral_mcp.icons", ROOT / "spiral_mcp" / "icons"),
                            ("spiral_mcp.migrations", ROOT / "migrations")):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".sql", ".json", ".svg"):
                relative = path.relative_to(folder)
                assert any(relative.match(p) for p in patterns[package]), relative


def test_the_first_docker_compose_up_leads_to_a_key() -> None:
    """The server of docker-compose.yml creates a tenant and prints its key on the first start
    (BOOTSTRAP_TENANT, which needs the owner role's URL), and takes SPIRAL_SECRET_KEY from .env;
    the file says where the key is shown. The logic itself: test_first_start."""
    compose = (ROOT / "docker-compose.yml").read_text()
    # `server` (and the `scale` profile's replicas) take their settings from x-server.
    assert "\n  server:\n    <<: *server\n" in compose
    server = compose.split("\nx-server: &server\n", 1)[1]
    environment = server.split("  environment:\n", 1)[1].split("\n  stop_grace_period:", 1)[0]
    assert "    BOOTSTRAP_TENANT: ${BOOTSTRAP_TENANT:-Default}\n" in environment
    assert "    ADMIN_DATABASE_URL: postgresql://spiral_owner:" in environment
    assert "    SPIRAL_SECRET_KEY: ${SPIRAL_SECRET_KEY:-}\n" in environment
    assert "docker compose logs server" in compose


def _make(*args: str, venv: Path) -> list[str]:
    """The commands ``make`` would run (``-n``: nothing runs), with .venv at ``venv``."""
    import subprocess

    done = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), *args, f"VENV={venv}"],
                          capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.splitlines()


def _pip_installs(commands: list[str]) -> list[str]:
    return [c.split(" install ", 1)[1] for c in commands if "-m pip install" in c
            and "--upgrade pip" not in c]


def test_make_run_installs_the_server_alone_and_make_test_adds_the_extras(tmp_path: Path) -> None:
    import os

    venv = tmp_path / "venv"
    # Fresh: run installs the server without the development extras (pytest, mcp, ruff: 245 MB)
    # and says so first; test installs both layers.
    run = _make("run", venv=venv)
    assert _pip_installs(run) == ["--progress-bar on -e ."]
    assert any(line.startswith("echo \"==> installing spiral-mcp") for line in run)
    assert run[-1] == f"{venv}/bin/spiral-mcp serve"
    assert _pip_installs(_make("test", venv=venv)) == ["--progress-bar on -e .",
                                                        "--progress-bar on -e '.[dev]'"]
    # After make run (its stamp only), make test adds the extras and nothing else...
    venv.mkdir()
    (venv / ".installed").touch()
    assert _pip_installs(_make("test", venv=venv)) == ["--progress-bar on -e '.[dev]'"]
    assert _pip_installs(_make("run", venv=venv)) == []
    # ...after make test, make run installs nothing...
    (venv / ".installed-dev").touch()
    assert _pip_installs(_make("run", venv=venv)) == []
    assert _pip_installs(_make("test", venv=venv)) == []
    # ...and a setup.cfg changed since renews both layers.
    before = (ROOT / "setup.cfg").stat().st_mtime - 10
    for stamp in (".installed", ".installed-dev"):
        os.utime(venv / stamp, (before, before))
    assert len(_pip_installs(_make("test", venv=venv))) == 2


def test_make_help_lists_every_target() -> None:
    import re
    import subprocess

    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.*)$", makefile, re.M)
    assert phony is not None
    listed = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True,
                            text=True, check=True, timeout=30).stdout
    shown = {line.split()[0] for line in listed.splitlines()[1:]}
    assert shown == set(phony.group(1).split())
    # `make` alone helps too, rather than installing.
    assert subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True,
                          check=True, timeout=30).stdout == listed


def test_the_compose_balancer_is_configured_as_the_tested_one(haproxy: str, tmp_path: Path) -> None:
    """docker/haproxy.cfg (the `scale` profile) is valid for HAProxy and has what the balancer of
    these tests has for streams and balancing. Docker itself does not run here."""
    config = ROOT / "docker" / "haproxy.cfg"
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True,
                             text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ours = haproxy_config(port=8055, backends=[("s1", 8056)], admin_socket=tmp_path / "a.sock")
    text = config.read_text()
    for setting in ("balance roundrobin", "no option http-buffer-request", "timeout client 1h",
                    "timeout server 1h", "timeout tunnel 1h", "retries 2", "option redispatch 1",
                    "option httpchk", "http-check send meth GET uri /ready",
                    "http-check expect status 200"):
        assert f"    {setting}" in text and f"    {setting}" in ours, setting
    # No stickiness, and nothing that gathers an answer before passing it on.
    assert re.search(r"^\s*(cookie|stick|compression|hash-type)\b", text, re.MULTILINE) is None

    compose = (ROOT / "docker-compose.yml").read_text()
    replica = ("\n  replica:\n    <<: *server\n    profiles: [scale]\n"
               "    deploy:\n      replicas: 3\n")
    assert replica in compose
    assert "    server-template replica 6 replica:8055\n" in text
    balancer = compose.split("\n  balancer:\n", 1)[1].split("\n\n", 1)[0]
    assert "    profiles: [scale]\n" in balancer
    assert "      - ./docker/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro\n" in balancer
