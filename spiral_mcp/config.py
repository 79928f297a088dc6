"""Settings: one table of environment variables, parsed once, overridable by CLI flags.

A bad value is a :class:`ConfigError` whose message names the variable; the CLI prints it as one
line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS", "TOOLSETS", "ConfigError", "Secret", "Setting", "Settings",
           "load_settings"]

# The toolsets ENABLED_TOOLSETS may name: a tool's toolset is its name up to the first "_"
# (tests/test_config.py keeps this list equal to what the shipped tools declare).
TOOLSETS = ("explorer", "jira", "sources", "sql")


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "spiral-mcp")


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"expected a whole number from {lo} to {hi}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"expected a whole number from {lo} to {hi}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"expected a number from {lo} to {hi}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"expected a number from {lo} to {hi}, got {value}")
        return value

    return parse


def _optional_int(lo: int, hi: int) -> Callable[[str], int | None]:
    parse_int = _int(lo, hi)

    def parse(raw: str) -> int | None:
        return parse_int(raw) if raw.strip() else None

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"expected true or false, got {raw!r}")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        lowered = raw.strip().lower()
        if lowered not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return lowered

    return parse


def _postgres_url(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError("expected a postgresql:// URL")
    return raw


def _redis_url(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _toolsets(raw: str) -> tuple[str, ...]:
    # Names match whatever their case, as every other choice does; an unknown one is refused
    # rather than served as zero tools.
    names = tuple(dict.fromkeys(part.lower() for part in _csv(raw)))
    if unknown := [name for name in names if name not in TOOLSETS]:
        raise ConfigError(f"unknown toolset {', '.join(map(repr, unknown))}; expected some of "
                          f"{', '.join(TOOLSETS)}, comma-separated")
    return names


def _text(raw: str) -> str:
    return raw


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


class Secret(str):
    """A secret setting: its repr never shows the value, so a logged Settings leaks nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


def _fernet_key(raw: str) -> Secret | None:
    import base64
    import binascii

    raw = raw.strip()
    if not raw:
        return None
    try:
        ok = len(base64.urlsafe_b64decode(raw.encode("ascii"))) == 32
    except (binascii.Error, UnicodeEncodeError, ValueError):
        ok = False
    if not ok:
        # The value itself is never echoed: it is a secret.
        raise ConfigError("expected a Fernet key (32 bytes, url-safe base64, 44 characters)")
    return Secret(raw)


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its parser, default and the line the README shows for it."""

    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", _postgres_url, None,
            "PostgreSQL URL of the runtime role; unset: an embedded PostgreSQL under "
            "SPIRAL_DATA_DIR"),
    Setting("ADMIN_DATABASE_URL", _postgres_url, None,
            "PostgreSQL URL of the owner role, for migrations and admin commands "
            "(default: DATABASE_URL)"),
    Setting("REDIS_URL", _redis_url, None,
            "Redis URL for rate limits; unset: limits are kept in process"),
    Setting("HOST", _text, "127.0.0.1", "address to listen on"),
    Setting("PORT", _int(1, 65535), 8055, "port to listen on"),
    Setting("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("SPIRAL_DATA_DIR", _text, _default_data_dir(),
            "where the embedded PostgreSQL keeps its data"),
    Setting("DB_POOL_MIN", _int(0, 1000), 2, "connections the pool keeps open"),
    Setting("DB_POOL_MAX", _int(1, 1000), 10, "connections the pool may open"),
    Setting("DB_CONNECT_TIMEOUT", _float(0.1, 120), 5.0,
            "seconds to wait for a database connection before CONNECTION_ERROR"),
    Setting("DB_STATEMENT_TIMEOUT", _float(0.1, 3600), 30.0,
            "seconds one statement may run before QUERY_TIMEOUT"),
    Setting("AUTH_CACHE_TTL", _float(0, 3600), 10.0,
            "seconds a verified API key is trusted before it is checked again "
            "(a revoked key stops working within this time, and its open streams end)"),
    Setting("ALLOWED_ORIGINS", _csv, (),
            "extra browser origins allowed to call the server (loopback origins always are)"),
    Setting("MAX_BODY_BYTES", _int(1024, 1 << 30), 1 << 20,
            "largest request body accepted (413 beyond)"),
    Setting("SHUTDOWN_TIMEOUT", _float(0, 600), 10.0,
            "seconds in-flight requests get to finish on SIGTERM"),
    Setting("RATE_LIMIT_DEFAULT", _int(1, 1_000_000), 100,
            "calls per window for each tenant and each key, per class of call"),
    Setting("RATE_LIMIT_WINDOW", _float(1, 86400), 60.0, "rate-limit window in seconds"),
    Setting("RATE_LIMIT_READ", _optional_int(1, 1_000_000), None,
            "budget of read calls (default RATE_LIMIT_DEFAULT)"),
    Setting("RATE_LIMIT_WRITE", _optional_int(1, 1_000_000), None,
            "budget of write calls (default RATE_LIMIT_DEFAULT)"),
    Setting("RATE_LIMIT_QUERY", _optional_int(1, 1_000_000), None,
            "budget of query calls (default RATE_LIMIT_DEFAULT)"),
    Setting("SESSION_MAX", _int(1, 1_000_000), 1000, "MCP sessions open at once, in all"),
    Setting("SESSION_MAX_PER_TENANT", _int(1, 1_000_000), 200,
            "MCP sessions open at once per tenant (its least recently used idle one gives way)"),
    Setting("SESSION_MAX_PER_KEY", _int(1, 100_000), 50,
            "MCP sessions open at once per API key (its least recently used idle one gives way)"),
    Setting("SESSION_IDLE_TIMEOUT", _float(1, 86400), 1800.0,
            "seconds after which an idle MCP session ends (60 at most for one never "
            "initialized)"),
    Setting("SESSION_MAX_CONCURRENT_CALLS", _int(1, 1000), 16,
            "tool calls running at once on one MCP session"),
    Setting("ENABLED_TOOLSETS", _toolsets, (),
            f"toolsets to serve, comma-separated, from {', '.join(TOOLSETS)} (default: all)"),
    Setting("READ_ONLY", _bool, False, "hide and refuse every tool that writes"),
    Setting("IDEMPOTENCY_TTL", _float(60, 30 * 86400), 86400.0,
            "seconds an idempotency key is remembered"),
    Setting("REQUEST_STATE_TTL", _float(10, 86400), 600.0,
            "seconds a tool's question to a stateless (2026-07-28) client stays open: the "
            "requestState it is sent with expires then"),
    Setting("TASK_TTL", _float(10, 30 * 86400), 3600.0,
            "seconds a task (a tool call run as a task) and its result stay readable after its "
            "last change; then it is deleted"),
    Setting("TASK_POLL_INTERVAL", _float(0.1, 3600), 1.0,
            "seconds a client is told to wait between two tasks/get of a task"),
    Setting("TASK_LEASE", _float(1, 3600), 30.0,
            "seconds without a heartbeat after which a task whose server process died reads as "
            "failed (the process renews it every third of this)"),
    Setting("TASK_MAX_PER_KEY", _int(1, 100_000), 100,
            "tasks (running or finished, until TASK_TTL after their last change) one API key "
            "keeps; past it a call a client would take as a task is answered inline, keeping "
            "nothing (each task keeps its result, up to 1 MiB, in the database)"),
    Setting("SPIRAL_TEMPLATES_DIR", _optional_text, None,
            "a folder of your own report templates, served beside the built-in ones"),
    Setting("EXPLORER_DATABASE_URL", _postgres_url, None,
            "PostgreSQL URL of the explorer role, for explorer_query (default: DATABASE_URL's "
            "server and database, logging in as spiral_explorer)"),
    Setting("EXPLORER_TIMEOUT_S", _float(0.1, 600), 10.0,
            "seconds one explorer query may run before QUERY_TIMEOUT"),
    Setting("EXPLORER_MAX_ROWS", _int(1, 100_000), 1000, "most rows one explorer query returns"),
    Setting("DEMO_DATA", _bool, True,
            "with the embedded database: create a demo tenant, key and data on first start"),
    Setting("BOOTSTRAP_TENANT", _optional_text, None,
            "on a start with no tenant in the database: create a tenant of this name and an API "
            "key with every scope, and print the key once (needs ADMIN_DATABASE_URL with your "
            "own PostgreSQL)"),
    Setting("SPIRAL_SECRET_KEY", _fernet_key, None,
            "Fernet key that encrypts source credentials; unset with the embedded database: "
            "generated once in SPIRAL_DATA_DIR/secret.key"),
    Setting("SYNC_INTERVAL", _float(0, 7 * 86400), 300.0,
            "seconds between background syncs of every source instance; 0 turns them off"),
    Setting("SYNC_CONCURRENCY", _int(1, 64), 4,
            "source instances one server process syncs at once in the background"),
    # Shares of slow work (see shares.py): what one tenant may hold at once in one process, so
    # another tenant's calls still find a connection. Unset: derived from the pool sizes.
    Setting("EXPLORER_MAX_PER_TENANT", _optional_int(1, 1000), None,
            "explorer calls one tenant runs at once in a server process (default: half of "
            "DB_POOL_MAX, the explorer pool's size); more are RATE_LIMITED"),
    Setting("REPORT_MAX_PER_TENANT", _optional_int(1, 1000), None,
            "report template (sql_) calls one tenant runs at once in a server process "
            "(default: half of DB_POOL_MAX); more are RATE_LIMITED"),
    Setting("SYNC_ON_DEMAND_MAX", _optional_int(1, 1000), None,
            "sources_sync calls one server process runs at once, each on a database connection "
            "of its own outside the pool (default: half of DB_POOL_MAX); more are RATE_LIMITED"),
    Setting("SYNC_MAX_PER_TENANT", _optional_int(1, 1000), None,
            "sources_sync calls one tenant runs at once in a server process (default: half of "
            "SYNC_ON_DEMAND_MAX); more are RATE_LIMITED"),
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The parsed configuration of one process; fields are the lower-cased variable names."""

    database_url: str | None
    admin_database_url: str | None
    redis_url: str | None
    host: str
    port: int
    log_level: str
    spiral_data_dir: str
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout: float
    db_statement_timeout: float
    auth_cache_ttl: float
    allowed_origins: tuple[str, ...]
    max_body_bytes: int
    shutdown_timeout: float
    rate_limit_default: int
    rate_limit_window: float
    rate_limit_read: int | None
    rate_limit_write: int | None
    rate_limit_query: int | None
    session_max: int
    session_max_per_tenant: int
    session_max_per_key: int
    session_idle_timeout: float
    session_max_concurrent_calls: int
    enabled_toolsets: tuple[str, ...]
    read_only: bool
    idempotency_ttl: float
    request_state_ttl: float
    task_ttl: float
    task_poll_interval: float
    task_lease: float
    task_max_per_key: int
    spiral_templates_dir: str | None
    explorer_database_url: str | None
    explorer_timeout_s: float
    explorer_max_rows: int
    demo_data: bool
    bootstrap_tenant: str | None
    spiral_secret_key: Secret | None
    sync_interval: float
    sync_concurrency: int
    explorer_max_per_tenant: int | None
    report_max_per_tenant: int | None
    sync_on_demand_max: int | None
    sync_max_per_tenant: int | None

    @property
    def rate_limits(self) -> dict[str, int]:
        """Calls per window for each class of call."""
        return {
            "read": self.rate_limit_read or self.rate_limit_default,
            "write": self.rate_limit_write or self.rate_limit_default,
            "query": self.rate_limit_query or self.rate_limit_default,
        }

    @property
    def explorer_share(self) -> int:
        """Explorer calls one tenant runs at once: about half of the explorer pool (DB_POOL_MAX
        connections) at most, so no one tenant can take the whole pool from the others."""
        return self.explorer_max_per_tenant or max(1, self.db_pool_max // 2)

    @property
    def report_share(self) -> int:
        """Report template calls one tenant runs at once (they hold runtime pool connections
        for up to DB_STATEMENT_TIMEOUT each)."""
        return self.report_max_per_tenant or max(1, self.db_pool_max // 2)

    @property
    def sync_calls(self) -> int:
        """sources_sync calls one process runs at once, each on a connection of its own."""
        return self.sync_on_demand_max or max(1, self.db_pool_max // 2)

    @property
    def sync_share(self) -> int:
        """sources_sync calls one tenant runs at once."""
        return self.sync_max_per_tenant or max(1, self.sync_calls // 2)

    @property
    def data_dir(self) -> Path:
        return Path(self.spiral_data_dir).expanduser()

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Parse settings from ``environ`` (default: the process environment).

    ``overrides`` maps variable names to raw values from CLI flags; ``None`` means not given.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.env)
        if raw is None:
            raw = environ.get(setting.env)
        if raw is None:
            value = setting.default
        else:
            try:
                value = setting.parse(raw)
            except ConfigError as exc:
                raise ConfigError(f"{setting.env}: {exc}") from None
        values[setting.env.lower()] = value
    settings = Settings(**values)
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError(
            f"DB_POOL_MIN: {settings.db_pool_min} is more than DB_POOL_MAX {settings.db_pool_max}"
        )
    if settings.bootstrap_tenant is not None:
        if len(settings.bootstrap_tenant.strip()) > 200:
            raise ConfigError("BOOTSTRAP_TENANT: a tenant name has 1 to 200 characters")
        if settings.database_url is not None and settings.admin_database_url is None:
            # The runtime role may not create tenants or keys; the owner role does.
            raise ConfigError("BOOTSTRAP_TENANT: needs ADMIN_DATABASE_URL, the owner role's URL, "
                              "to create the tenant")
    # A share larger than what it is a share of would bound nothing.
    for env, share, whole, of in (
            ("EXPLORER_MAX_PER_TENANT", settings.explorer_max_per_tenant, settings.db_pool_max,
             "DB_POOL_MAX"),
            ("REPORT_MAX_PER_TENANT", settings.report_max_per_tenant, settings.db_pool_max,
             "DB_POOL_MAX"),
            ("SYNC_MAX_PER_TENANT", settings.sync_max_per_tenant, settings.sync_calls,
             "SYNC_ON_DEMAND_MAX"),
    ):
        if share is not None and share > whole:
            raise ConfigError(f"{env}: {share} is more than {of} {whole}")
    return settings
