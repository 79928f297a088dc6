"""Settings: each bad value is one ConfigError naming its variable (the CLI prints it as one line,
see test_cli); names that choose among a fixed set match whatever their case."""

from __future__ import annotations

import pytest

from spiral_mcp.config import TOOLSETS, ConfigError, load_settings
from spiral_mcp.handlers import builtin_tools
from spiral_mcp.handlers.sql_templates import template_tools
from spiral_mcp.templates import load_templates


def test_the_toolsets_are_those_of_the_shipped_tools() -> None:
    tools = [*builtin_tools(), *template_tools(load_templates(), observe=lambda *_: None)]
    assert set(TOOLSETS) == {tool.toolset for tool in tools}


def test_enabled_toolsets_match_whatever_their_case() -> None:
    settings = load_settings(environ={"ENABLED_TOOLSETS": " Jira, SQL ,jira"})
    assert settings.enabled_toolsets == ("jira", "sql")
    assert load_settings(environ={}).enabled_toolsets == ()


@pytest.mark.parametrize("raw", ["confluence", "jira,Confluence", "jira_search"])
def test_an_unknown_toolset_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"ENABLED_TOOLSETS": raw})
    message = str(refused.value)
    assert message.startswith("ENABLED_TOOLSETS: unknown toolset ")
    assert "expected some of explorer, jira, sources, sql" in message
