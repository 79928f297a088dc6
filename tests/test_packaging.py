"""A non-editable install carries every subpackage and data file: setup.cfg lists packages by
hand (so migrations/ can ship as spiral_mcp.migrations), so a new one must be listed there too."""

from __future__ import annotations

import configparser
from pathlib import Path

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
                            ("spiral_mcp.migrations", ROOT / "migrations")):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".sql", ".json"):
                relative = path.relative_to(folder)
                assert any(relative.match(p) for p in patterns[package]), relative


def test_the_first_docker_compose_up_leads_to_a_key() -> None:
    """The server of docker-compose.yml creates a tenant and prints its key on the first start
    (BOOTSTRAP_TENANT, which needs the owner role's URL), and takes SPIRAL_SECRET_KEY from .env;
    the file says where the key is shown. The logic itself: test_first_start."""
    compose = (ROOT / "docker-compose.yml").read_text()
    server = compose.split("\n  server:\n", 1)[1]
    environment = server.split("    environment:\n", 1)[1].split("\n    ports:", 1)[0]
    assert "      BOOTSTRAP_TENANT: ${BOOTSTRAP_TENANT:-Default}\n" in environment
    assert "      ADMIN_DATABASE_URL: postgresql://spiral_owner:" in environment
    assert "      SPIRAL_SECRET_KEY: ${SPIRAL_SECRET_KEY:-}\n" in environment
    assert "docker compose logs server" in compose
