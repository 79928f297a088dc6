"""Settings: one table of environment variables, parsed once, overridable by CLI flags.

A bad value is a :class:`ConfigError` whose message names the variable; the CLI prints it as one
line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config_values import (
    DEFAULT_SCOPE_MAP,
    JWT_ALGORITHMS,
    TOOLSETS,
    ConfigError,
    Secret,
    algorithms,
    boolean,
    choice,
    claim_names,
    csv,
    default_data_dir,
    fernet_key,
    networks,
    number,
    optional_choice,
    optional_text,
    optional_whole_number,
    otlp_endpoint,
    postgres_url,
    redis_url,
    scope_map,
    secret,
    text,
    toolsets,
    web_url,
    web_urls,
    whole_number,
    workers,
)

__all__ = ["SETTINGS", "TOOLSETS", "ConfigError", "Secret", "Setting", "Settings",
           "load_settings"]



@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its parser, default and the line the README shows for it."""

    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", postgres_url, None,
            "PostgreSQL URL of the runtime role; unset: an embedded PostgreSQL under "
            "SPIRAL_DATA_DIR"),
    Setting("ADMIN_DATABASE_URL", postgres_url, None,
            "PostgreSQL URL of the owner role, for migrations and admin commands "
            "(default: DATABASE_URL)"),
    Setting("REDIS_URL", redis_url, None,
            "Redis URL for rate limits (redis://, rediss://, unix://, or "
            "redis+sentinel://host:port[,host:port...]/service_name[/db] for a Sentinel set); "
            "unset: limits are kept in process"),
    Setting("SESSION_STORE", optional_choice("redis", "memory"), None,
            "where MCP sessions live: `redis` (the default with REDIS_URL: any process serves "
            "any session) or `memory` (this process only, as without REDIS_URL; only with "
            "WORKERS=1)"),
    Setting("HOST", text, "127.0.0.1", "address to listen on"),
    Setting("WORKERS", workers, 1,
            "server processes sharing PORT on this host (`auto`: one per CPU), supervised by "
            "`spiral-mcp serve`; more than 1 needs REDIS_URL"),
    Setting("PORT", whole_number(1, 65535), 8055, "port to listen on"),
    Setting("LOG_LEVEL", choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("SPIRAL_DATA_DIR", text, default_data_dir(),
            "where the embedded PostgreSQL keeps its data"),
    Setting("DB_POOL_MIN", whole_number(0, 1000), 2, "connections the pool keeps open"),
    Setting("DB_POOL_MAX", whole_number(1, 1000), 10, "connections the pool may open"),
    Setting("DB_CONNECT_TIMEOUT", number(0.1, 120), 5.0,
            "seconds to wait for a database connection before CONNECTION_ERROR"),
    Setting("DB_STATEMENT_TIMEOUT", number(0.1, 3600), 30.0,
            "seconds one statement may run before QUERY_TIMEOUT"),
    Setting("AUTH_CACHE_TTL", number(0, 3600), 10.0,
            "seconds a verified API key is trusted before it is checked again "
            "(a revoked key stops working within this time, and its open streams end)"),
    Setting("ALLOWED_ORIGINS", csv, (),
            "extra browser origins allowed to call the server (loopback origins always are)"),
    Setting("MAX_BODY_BYTES", whole_number(1024, 1 << 30), 1 << 20,
            "largest request body accepted (413 beyond)"),
    Setting("SHUTDOWN_TIMEOUT", number(0, 600), 10.0,
            "seconds in-flight requests get to finish on SIGTERM"),
    Setting("RATE_LIMIT_DEFAULT", whole_number(1, 1_000_000), 100,
            "calls per window for each tenant and each key, per class of call"),
    Setting("RATE_LIMIT_WINDOW", number(1, 86400), 60.0, "rate-limit window in seconds"),
    Setting("RATE_LIMIT_READ", optional_whole_number(1, 1_000_000), None,
            "budget of read calls (default RATE_LIMIT_DEFAULT)"),
    Setting("RATE_LIMIT_WRITE", optional_whole_number(1, 1_000_000), None,
            "budget of write calls (default RATE_LIMIT_DEFAULT)"),
    Setting("RATE_LIMIT_QUERY", optional_whole_number(1, 1_000_000), None,
            "budget of query calls (default RATE_LIMIT_DEFAULT)"),
    Setting("SESSION_MAX", whole_number(1, 1_000_000), 1000, "MCP sessions open at once, in all"),
    Setting("SESSION_MAX_PER_TENANT", whole_number(1, 1_000_000), 200,
            "MCP sessions open at once per tenant (its least recently used idle one gives way)"),
    Setting("SESSION_MAX_PER_KEY", whole_number(1, 100_000), 50,
            "MCP sessions open at once per API key (its least recently used idle one gives way)"),
    Setting("SESSION_IDLE_TIMEOUT", number(1, 86400), 1800.0,
            "seconds after which an idle MCP session ends (60 at most for one never "
            "initialized)"),
    Setting("SESSION_MAX_CONCURRENT_CALLS", whole_number(1, 1000), 16,
            "tool calls running at once on one MCP session"),
    Setting("CONSOLE_SESSION_TTL", number(60, 30 * 86400), 43200.0,
            "seconds a web console sign-in lasts at most (it also ends once its key is revoked, "
            "expires or loses the admin scope)"),
    Setting("CONSOLE_SESSION_IDLE", number(60, 30 * 86400), 3600.0,
            "seconds without a request after which a web console session ends"),
    Setting("ENABLED_TOOLSETS", toolsets, (),
            f"toolsets to serve, comma-separated, from {', '.join(TOOLSETS)} (default: all)"),
    Setting("READ_ONLY", boolean, False, "hide and refuse every tool that writes"),
    Setting("IDEMPOTENCY_TTL", number(60, 30 * 86400), 86400.0,
            "seconds an idempotency key is remembered"),
    Setting("REQUEST_STATE_TTL", number(10, 86400), 600.0,
            "seconds a tool's question to a stateless (2026-07-28) client stays open: the "
            "requestState it is sent with expires then"),
    Setting("TASK_TTL", number(10, 30 * 86400), 3600.0,
            "seconds a task (a tool call run as a task) and its result stay readable after its "
            "last change; then it is deleted"),
    Setting("TASK_POLL_INTERVAL", number(0.1, 3600), 1.0,
            "seconds a client is told to wait between two tasks/get of a task"),
    Setting("TASK_LEASE", number(1, 3600), 30.0,
            "seconds without a heartbeat after which a task whose server process died reads as "
            "failed (the process renews it every third of this)"),
    Setting("TASK_MAX_PER_KEY", whole_number(1, 100_000), 100,
            "tasks (running or finished, until TASK_TTL after their last change) one API key "
            "keeps; past it a call a client would take as a task is answered inline, keeping "
            "nothing (each task keeps its result, up to 1 MiB, in the database)"),
    Setting("SPIRAL_TEMPLATES_DIR", optional_text, None,
            "a folder of your own report templates, served beside the built-in ones"),
    Setting("EXPLORER_DATABASE_URL", postgres_url, None,
            "PostgreSQL URL of the explorer role, for explorer_query (default: DATABASE_URL's "
            "server and database, logging in as spiral_explorer)"),
    Setting("EXPLORER_TIMEOUT_S", number(0.1, 600), 10.0,
            "seconds one explorer query may run before QUERY_TIMEOUT"),
    Setting("EXPLORER_MAX_ROWS", whole_number(1, 100_000), 1000,
            "most rows one explorer query returns"),
    Setting("REPLICA_DATABASE_URL", postgres_url, None,
            "PostgreSQL URL of the runtime role on a hot standby of DATABASE_URL's server: the "
            "data explorer and the report templates read there (unset: on the primary)"),
    Setting("REPLICA_EXPLORER_DATABASE_URL", postgres_url, None,
            "PostgreSQL URL of the explorer role on that standby (default: "
            "EXPLORER_DATABASE_URL's login, else spiral_explorer, at REPLICA_DATABASE_URL's "
            "server and database)"),
    Setting("REPLICA_MAX_LAG", number(0, 86_400), 30.0,
            "seconds the replica may be behind the primary; past it, or unreachable, its reads "
            "go to the primary until it has caught up"),
    Setting("REPLICA_CHECK_INTERVAL", number(0.1, 60), 2.0,
            "seconds between two background checks of the replica (reachable, lag)"),
    Setting("DEMO_DATA", boolean, True,
            "with the embedded database: create a demo tenant, key and data on first start"),
    Setting("BOOTSTRAP_TENANT", optional_text, None,
            "on a start with no tenant in the database: create a tenant of this name and an API "
            "key with every scope, and print the key once (needs ADMIN_DATABASE_URL with your "
            "own PostgreSQL)"),
    Setting("SPIRAL_SECRET_KEY", fernet_key, None,
            "Fernet key that encrypts source credentials; unset with the embedded database: "
            "generated once in SPIRAL_DATA_DIR/secret.key"),
    Setting("SYNC_INTERVAL", number(0, 7 * 86400), 300.0,
            "seconds between background syncs of every source instance; 0 turns them off"),
    Setting("SYNC_CONCURRENCY", whole_number(1, 64), 4,
            "source instances one server process syncs at once in the background"),
    # Shares of slow work (see shares.py): what one tenant may hold at once in one process, so
    # another tenant's calls still find a connection. Unset: derived from the pool sizes.
    Setting("EXPLORER_MAX_PER_TENANT", optional_whole_number(1, 1000), None,
            "explorer calls one tenant runs at once in a server process (default: half of "
            "DB_POOL_MAX, the explorer pool's size); more are RATE_LIMITED"),
    Setting("REPORT_MAX_PER_TENANT", optional_whole_number(1, 1000), None,
            "report template (sql_) calls one tenant runs at once in a server process "
            "(default: half of DB_POOL_MAX); more are RATE_LIMITED"),
    Setting("SYNC_ON_DEMAND_MAX", optional_whole_number(1, 1000), None,
            "sources_sync calls one server process runs at once, each on a database connection "
            "of its own outside the pool (default: half of DB_POOL_MAX); more are RATE_LIMITED"),
    Setting("SYNC_MAX_PER_TENANT", optional_whole_number(1, 1000), None,
            "sources_sync calls one tenant runs at once in a server process (default: half of "
            "SYNC_ON_DEMAND_MAX); more are RATE_LIMITED"),
    Setting("SOURCE_PRIVATE_NETWORKS", networks, (),
            "private networks (CIDRs, comma-separated) sources may be reached at besides public "
            "addresses, like an on-premises Jira's; unset: public addresses only. Loopback is "
            "private too (127.0.0.0/8,::1/128), the only place plain http is allowed"),
    Setting("OAUTH_ISSUERS", web_urls, (),
            "OAuth: authorization servers (issuer URLs, comma-separated) whose access tokens "
            "are accepted beside API keys; unset: API keys only. Bind each issuer to a tenant "
            "with `spiral-mcp oauth bind`"),
    Setting("OAUTH_RESOURCE", web_url, None,
            "OAuth: this server's canonical URI as clients reach it (for example "
            "https://mcp.example.com/mcp); a token's audience must be exactly this"),
    Setting("OAUTH_USER_CLAIMS", claim_names, ("email", "sub"),
            "OAuth: the claims naming the user writes act for, the first present wins"),
    Setting("OAUTH_SCOPE_MAP", scope_map, DEFAULT_SCOPE_MAP,
            "OAuth: the token scope granting each of read, write, query and admin, as "
            "read=spiral:read,write=... (unnamed ones keep spiral:<scope>)"),
    Setting("OAUTH_ALGORITHMS", algorithms, JWT_ALGORITHMS,
            "OAuth: JWT signature algorithms accepted (asymmetric only)"),
    Setting("OAUTH_LEEWAY", number(0, 300), 60.0,
            "OAuth: seconds of clock skew allowed on a token's exp and nbf"),
    Setting("OAUTH_JWKS_TTL", number(60, 86400), 3600.0,
            "OAuth: seconds an issuer's metadata and signing keys are cached"),
    Setting("OAUTH_JWKS_MIN_REFRESH", number(1, 3600), 30.0,
            "OAuth: least seconds between two fetches of an issuer's keys prompted by a token "
            "signed with a key id not seen yet"),
    Setting("OAUTH_INTROSPECTION_URL", web_url, None,
            "OAuth: token introspection endpoint (RFC 7662) for opaque access tokens; unset: "
            "only JWT access tokens are accepted"),
    Setting("OAUTH_INTROSPECTION_CLIENT_ID", optional_text, None,
            "OAuth: client id this server authenticates with at the introspection endpoint"),
    Setting("OAUTH_INTROSPECTION_CLIENT_SECRET", secret, None,
            "OAuth: that client's secret"),
    Setting("CONSOLE_OAUTH_CLIENT_ID", optional_text, None,
            "OAuth: the web console's client id at CONSOLE_OAUTH_ISSUER (registered with the "
            "redirect URI <OAUTH_RESOURCE's origin>/admin/oauth/callback); set: the console's "
            "sign-in page offers \"Sign in with\" that issuer"),
    Setting("CONSOLE_OAUTH_CLIENT_SECRET", secret, None,
            "OAuth: the console client's secret (a confidential client); unset: a public client "
            "(PKCE protects its codes either way)"),
    Setting("CONSOLE_OAUTH_ISSUER", web_url, None,
            "OAuth: the issuer the console signs in with, one of OAUTH_ISSUERS (default: the "
            "only one)"),
    Setting("CONSOLE_OAUTH_NAME", optional_text, None,
            "OAuth: the issuer's name on the console's sign-in button (default: its host)"),
    Setting("OPERATOR_API", boolean, False,
            "serve the operator routes of the admin API (/api/v1/tenants, /api/v1/usage/tenants) "
            "to operator credentials (spiral-mcp operator create), on a small pool of the owner "
            "role (ADMIN_DATABASE_URL, or the embedded database's owner); off: spo_ credentials "
            "are refused"),
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint, None,
            "OpenTelemetry collector (OTLP/HTTP) to send traces to, such as "
            "http://collector:4318 (spans go to its /v1/traces); unset: tracing off. The other "
            "OTEL_ variables are read as the OpenTelemetry SDK defines them (see Tracing)"),
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The parsed configuration of one process; fields are the lower-cased variable names."""

    database_url: str | None
    admin_database_url: str | None
    redis_url: str | None
    session_store: str | None
    host: str
    workers: int
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
    console_session_ttl: float
    console_session_idle: float
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
    replica_database_url: str | None
    replica_explorer_database_url: str | None
    replica_max_lag: float
    replica_check_interval: float
    demo_data: bool
    bootstrap_tenant: str | None
    spiral_secret_key: Secret | None
    sync_interval: float
    sync_concurrency: int
    explorer_max_per_tenant: int | None
    report_max_per_tenant: int | None
    sync_on_demand_max: int | None
    sync_max_per_tenant: int | None
    source_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    oauth_issuers: tuple[str, ...]
    oauth_resource: str | None
    oauth_user_claims: tuple[str, ...]
    oauth_scope_map: tuple[tuple[str, str], ...]
    oauth_algorithms: tuple[str, ...]
    oauth_leeway: float
    oauth_jwks_ttl: float
    oauth_jwks_min_refresh: float
    oauth_introspection_url: str | None
    oauth_introspection_client_id: str | None
    oauth_introspection_client_secret: Secret | None
    console_oauth_client_id: str | None
    console_oauth_client_secret: Secret | None
    console_oauth_issuer: str | None
    console_oauth_name: str | None
    operator_api: bool
    otel_exporter_otlp_endpoint: str | None

    @property
    def shares_sessions(self) -> bool:
        """Whether MCP sessions live in Redis (any process serves any session)."""
        return self.redis_url is not None and self.session_store != "memory"

    @property
    def oauth(self) -> bool:
        """Whether access tokens of an authorization server are accepted."""
        return bool(self.oauth_issuers)

    @property
    def console_oauth(self) -> bool:
        """Whether the web console offers signing in with an OAuth issuer."""
        return self.console_oauth_client_id is not None

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
    if settings.workers > 1 and settings.redis_url is None:
        # Each process would keep its own sessions, session caps and rate-limit buckets: a
        # session opened on one process would be unknown to the next, and every limit N times
        # what it says.
        raise ConfigError(f"WORKERS: {settings.workers} processes need REDIS_URL, where they "
                          "share sessions, session caps and rate limits; set REDIS_URL or "
                          "WORKERS=1")
    if settings.session_store == "redis" and settings.redis_url is None:
        raise ConfigError("SESSION_STORE: redis needs REDIS_URL, the Redis that holds the "
                          "sessions; set REDIS_URL or SESSION_STORE=memory")
    if settings.session_store == "memory" and settings.workers > 1:
        # Each worker would know only the sessions it opened: the next request of a session
        # lands on another worker (the kernel spreads connections) and is refused.
        raise ConfigError(f"SESSION_STORE: memory keeps each session in one process, but "
                          f"WORKERS is {settings.workers}; set SESSION_STORE=redis (with "
                          "REDIS_URL) or WORKERS=1")
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
    _check_replica(settings)
    if settings.operator_api and settings.database_url is not None \
            and settings.admin_database_url is None:
        # Operators act across tenants as the owner role; the runtime role must never do that.
        raise ConfigError("OPERATOR_API: needs ADMIN_DATABASE_URL, the owner role's URL, which "
                          "operator requests run as (the runtime role cannot act across tenants)")
    if settings.oauth and settings.oauth_resource is None:
        raise ConfigError("OAUTH_RESOURCE: needed with OAUTH_ISSUERS: tokens are accepted only "
                          "when minted for this server's URI")
    if settings.oauth_introspection_url and not (settings.oauth_introspection_client_id
                                                 and settings.oauth_introspection_client_secret):
        raise ConfigError("OAUTH_INTROSPECTION_URL: needs OAUTH_INTROSPECTION_CLIENT_ID and "
                          "OAUTH_INTROSPECTION_CLIENT_SECRET")
    if settings.oauth_introspection_url and not settings.oauth:
        raise ConfigError("OAUTH_INTROSPECTION_URL: needs OAUTH_ISSUERS, the issuers whose "
                          "tokens it answers for")
    return _check_console_oauth(settings)


def _check_console_oauth(settings: Settings) -> Settings:
    """The console's OAuth client settings; CONSOLE_OAUTH_ISSUER filled in when it is implied."""
    if not settings.console_oauth:
        for env, value in (("CONSOLE_OAUTH_CLIENT_SECRET", settings.console_oauth_client_secret),
                           ("CONSOLE_OAUTH_ISSUER", settings.console_oauth_issuer)):
            if value is not None:
                raise ConfigError(f"{env}: needs CONSOLE_OAUTH_CLIENT_ID, the console's client "
                                  "id at the issuer")
        return settings
    if not settings.oauth:
        raise ConfigError("CONSOLE_OAUTH_CLIENT_ID: needs OAUTH_ISSUERS and OAUTH_RESOURCE: the "
                          "console's tokens are verified as /mcp's are")
    issuer = settings.console_oauth_issuer
    if issuer is None:
        if len(settings.oauth_issuers) > 1:
            raise ConfigError("CONSOLE_OAUTH_ISSUER: needed when OAUTH_ISSUERS names more than "
                              "one issuer: which one the console signs in with")
        issuer = settings.oauth_issuers[0]
    elif issuer not in settings.oauth_issuers:
        raise ConfigError(f"CONSOLE_OAUTH_ISSUER: {issuer} is not one of OAUTH_ISSUERS, whose "
                          "tokens alone are accepted")
    return dataclasses.replace(settings, console_oauth_issuer=issuer)


def _check_replica(settings: Settings) -> None:
    if settings.replica_explorer_database_url and not settings.replica_database_url:
        raise ConfigError("REPLICA_EXPLORER_DATABASE_URL: needs REPLICA_DATABASE_URL, the "
                          "runtime role's URL on the same standby")
    if settings.replica_database_url is None:
        return
    if settings.database_url is None:
        raise ConfigError("REPLICA_DATABASE_URL: needs DATABASE_URL: the embedded PostgreSQL "
                          "has no standby")
    if settings.replica_database_url == settings.database_url:
        raise ConfigError("REPLICA_DATABASE_URL: is DATABASE_URL itself; name the standby's "
                          "server")
