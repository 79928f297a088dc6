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


def test_bootstrap_tenant_needs_the_owner_role_with_your_own_postgresql() -> None:
    runtime = "postgresql://spiral_app@db/spiral"
    with pytest.raises(ConfigError, match=r"^BOOTSTRAP_TENANT: needs ADMIN_DATABASE_URL"):
        load_settings(environ={"DATABASE_URL": runtime, "BOOTSTRAP_TENANT": "Acme"})
    settings = load_settings(environ={
        "DATABASE_URL": runtime, "ADMIN_DATABASE_URL": "postgresql://spiral_owner@db/spiral",
        "BOOTSTRAP_TENANT": " Acme "})
    assert settings.bootstrap_tenant == "Acme"
    # The embedded database has its owner's URL itself.
    assert load_settings(environ={"BOOTSTRAP_TENANT": "Acme"}).bootstrap_tenant == "Acme"
    with pytest.raises(ConfigError, match=r"^BOOTSTRAP_TENANT: a tenant name has 1 to 200"):
        load_settings(environ={"BOOTSTRAP_TENANT": "x" * 201})


def test_session_store_follows_redis_url_unless_memory_is_asked() -> None:
    redis = "redis://127.0.0.1:6379/0"
    assert load_settings(environ={"REDIS_URL": redis}).shares_sessions
    assert load_settings(environ={"REDIS_URL": redis, "SESSION_STORE": " Redis"}).shares_sessions
    assert load_settings(environ={"REDIS_URL": redis, "SESSION_STORE": ""}).shares_sessions
    kept = load_settings(environ={"REDIS_URL": redis, "SESSION_STORE": "MEMORY"})
    assert kept.session_store == "memory" and not kept.shares_sessions
    assert kept.redis_url == redis  # rate limits stay in Redis
    assert not load_settings(environ={}).shares_sessions
    assert not load_settings(environ={"SESSION_STORE": "memory"}).shares_sessions


@pytest.mark.parametrize(("env", "message"), [
    ({"SESSION_STORE": "postgres"},
     r"^SESSION_STORE: expected one of redis, memory, got 'postgres'$"),
    ({"SESSION_STORE": "redis"}, r"^SESSION_STORE: redis needs REDIS_URL"),
    ({"SESSION_STORE": "memory", "WORKERS": "2", "REDIS_URL": "redis://127.0.0.1:6379/0"},
     r"^SESSION_STORE: memory keeps each session in one process, but WORKERS is 2"),
])
def test_a_bad_session_store_is_refused_naming_the_variable(env: dict[str, str],
                                                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


_ISSUERS = {"OAUTH_ISSUERS": "https://a.example.com,https://b.example.com",
            "OAUTH_RESOURCE": "https://mcp.example.com/mcp"}


def test_the_console_signs_in_with_the_only_issuer_unless_told() -> None:
    one = {"OAUTH_ISSUERS": "https://a.example.com", "OAUTH_RESOURCE": "https://m.example.com/mcp"}
    settings = load_settings(environ={**one, "CONSOLE_OAUTH_CLIENT_ID": "console"})
    assert settings.console_oauth and settings.console_oauth_issuer == "https://a.example.com"
    assert repr(load_settings(environ={**one, "CONSOLE_OAUTH_CLIENT_ID": "console",
                                       "CONSOLE_OAUTH_CLIENT_SECRET": "s3cret"})
                ).count("s3cret") == 0
    chosen = load_settings(environ={**_ISSUERS, "CONSOLE_OAUTH_CLIENT_ID": "console",
                                    "CONSOLE_OAUTH_ISSUER": "https://b.example.com"})
    assert chosen.console_oauth_issuer == "https://b.example.com"
    assert not load_settings(environ={}).console_oauth


@pytest.mark.parametrize(("env", "message"), [
    ({"CONSOLE_OAUTH_CLIENT_ID": "console"},
     r"^CONSOLE_OAUTH_CLIENT_ID: needs OAUTH_ISSUERS and OAUTH_RESOURCE"),
    ({**_ISSUERS, "CONSOLE_OAUTH_CLIENT_ID": "console"},
     r"^CONSOLE_OAUTH_ISSUER: needed when OAUTH_ISSUERS names more than one issuer"),
    ({**_ISSUERS, "CONSOLE_OAUTH_CLIENT_ID": "console",
      "CONSOLE_OAUTH_ISSUER": "https://c.example.com"},
     r"^CONSOLE_OAUTH_ISSUER: https://c.example.com is not one of OAUTH_ISSUERS"),
    ({**_ISSUERS, "CONSOLE_OAUTH_CLIENT_SECRET": "s"},
     r"^CONSOLE_OAUTH_CLIENT_SECRET: needs CONSOLE_OAUTH_CLIENT_ID"),
    ({**_ISSUERS, "CONSOLE_OAUTH_ISSUER": "https://a.example.com"},
     r"^CONSOLE_OAUTH_ISSUER: needs CONSOLE_OAUTH_CLIENT_ID"),
])
def test_a_console_oauth_setting_that_cannot_work_is_refused(env: dict[str, str],
                                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)
