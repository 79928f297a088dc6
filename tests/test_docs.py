"""The README stays true: every setting and every shipped tool is documented there."""

from __future__ import annotations

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
