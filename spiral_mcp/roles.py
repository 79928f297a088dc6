"""Database roles: who owns the schema, who serves requests, who runs explorer queries.

The server never trusts a runtime role that could step around row-level security: it refuses to
start when that role is a superuser, has BYPASSRLS, or owns a tenant table (an owner could ALTER
the table and drop the policies).
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "APP_ROLE",
    "EXPLORER_MEMORY_LIMIT",
    "EXPLORER_ROLE",
    "EXPLORER_SETTINGS",
    "OWNER_ONLY_TABLES",
    "OWNER_ROLE",
    "UnsafeRuntimeRole",
    "check_memory_limit",
    "check_runtime_role",
    "ensure_roles",
    "guard_database",
    "login_at",
    "url_for_role",
]

OWNER_ROLE = "spiral_owner"
APP_ROLE = "spiral_app"
EXPLORER_ROLE = "spiral_explorer"

# The tables whose rows belong to a tenant; each is under forced row-level security.
TENANT_TABLES = (
    "tenants", "api_keys", "source_instances", "projects", "workflow_statuses",
    "workflow_transitions", "work_items", "work_item_transitions", "comments", "work_item_links",
    "audit_log", "idempotency_keys", "tenant_counters", "tasks", "oauth_bindings",
    "console_sessions", "sync_runs",
)

# The owner's alone (0018_operators): operators' credentials and sessions, and the audit of what
# they do. A runtime role holding any privilege on them could read an operator's hash or forge
# or hide an operator's action; the server refuses to start then.
OWNER_ONLY_TABLES = ("operators", "operator_sessions", "operator_audit")


# Built-in functions the explorer role must not run even if a query ever got past the explorer's
# check: every tenant's explorer sessions share that role, and a role may read its own sessions'
# query text and cancel or end them; ts_stat and the *_to_xml functions run SQL given as text;
# pg_sleep* holds a connection; dblink reaches other databases. EXECUTE granted to PUBLIC cannot
# be taken from one role alone, so it is taken from PUBLIC and given back to the roles that may
# need it (pg_monitor: monitoring agents). The same list is in docker/init-roles.sql.
GUARDED_FUNCTIONS = (
    "pg_cancel_backend", "pg_terminate_backend", "pg_stat_get_activity",
    "pg_stat_get_backend_activity", "ts_stat", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
    "database_to_xmlschema", "database_to_xml_and_xmlschema",
)
_GUARDED_GRANTEES = f'"{OWNER_ROLE}", "{APP_ROLE}", pg_monitor'

log = logging.getLogger(__name__)

# The most private memory (heap and anonymous mappings: everything but shared buffers, code and
# stack) one explorer backend may hold: 256 MiB. PostgreSQL has no such setting; the kernel's
# RLIMIT_DATA does it, set on each explorer connection as it opens (explorer_guard.limit_memory,
# below). An allocation past it fails and PostgreSQL answers "out of memory" for that query,
# whatever made the memory: a value built by doubling through subqueries, an aggregate over many
# rows, a hash table, the planner folding constants. Nothing in the query check could bound all
# of those (issue 16: one row of five format() columns held 9.4 GB). The same number is in
# docker/init-roles.sql.
EXPLORER_MEMORY_LIMIT = 256 << 20

# Session defaults of the explorer role (ALTER ROLE ... SET, as the superuser). work_mem and
# hash_mem_multiplier keep sorts and hashes spilling to disk early, well inside the memory limit;
# temp_file_limit bounds that disk; no parallel workers (each is a process of its own, outside
# the backend's memory limit); client_connection_check_interval lets a backend whose client has
# gone (a query abandoned at its time limit) notice and end within a second even while it runs.
# The same lines are in docker/init-roles.sql.
EXPLORER_SETTINGS = {
    # The explorer has the server show it its reading of each query (debug_print_parse, sent as
    # a LOG message): that is for the explorer, not for the server's log.
    "log_min_messages": "fatal",
    "work_mem": "4MB",
    "hash_mem_multiplier": "1",
    "temp_file_limit": "1GB",
    "max_parallel_workers_per_gather": "0",
    "client_connection_check_interval": "1s",
}
# Not every server has it: PostgreSQL before 14, or one on a platform without the check.
_OPTIONAL_SETTINGS = frozenset({"client_connection_check_interval"})

# explorer_guard: functions owned by the superuser that provisioning makes in each database,
# outside the migrations (which run as the owner, who may not run programs or signal the
# explorer's backends). limit_memory sets the calling backend's RLIMIT_DATA with util-linux's
# prlimit, run by COPY ... TO PROGRAM; nothing of the caller reaches the command (the pid is the
# backend's own), and a process may lower its limits but never raise them back. end_backend lets
# the runtime role end an explorer backend of this database that a timed-out call left running,
# only if that backend started no later than a time the caller saw it alive: a newer session that
# reused the pid started after the old one ended, so it is never hit.
_GUARD_FUNCTIONS = f"""
CREATE SCHEMA IF NOT EXISTS explorer_guard;
REVOKE ALL ON SCHEMA explorer_guard FROM PUBLIC;
GRANT USAGE ON SCHEMA explorer_guard TO "{EXPLORER_ROLE}", "{APP_ROLE}";
CREATE OR REPLACE FUNCTION explorer_guard.limit_memory() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('COPY (SELECT WHERE false) TO PROGRAM %L',
                   format('prlimit --pid %s --data=%s:%s', pg_backend_pid(),
                          {EXPLORER_MEMORY_LIMIT}, {EXPLORER_MEMORY_LIMIT}));
    RETURN {EXPLORER_MEMORY_LIMIT};
END
$$;
REVOKE ALL ON FUNCTION explorer_guard.limit_memory() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explorer_guard.limit_memory() TO "{EXPLORER_ROLE}";
CREATE OR REPLACE FUNCTION explorer_guard.end_backend(pid integer, alive_at timestamptz)
RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(bool_or(pg_terminate_backend(a.pid)), false) FROM pg_stat_activity a
    WHERE a.pid = end_backend.pid AND a.usename = '{EXPLORER_ROLE}'
      AND a.datname = current_database() AND a.backend_start <= end_backend.alive_at
$$;
REVOKE ALL ON FUNCTION explorer_guard.end_backend(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explorer_guard.end_backend(integer, timestamptz) TO "{APP_ROLE}";
"""


class UnsafeRuntimeRole(RuntimeError):
    """The runtime role could bypass row-level security; the server must not start."""


async def ensure_roles(admin: asyncpg.Connection) -> None:
    """Create the three roles when missing (needs CREATEROLE), and make sure the runtime and
    explorer roles carry no power that would let them step around row-level security."""
    for role in (OWNER_ROLE, APP_ROLE, EXPLORER_ROLE):
        exists = await admin.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role)
        if not exists:
            # Role names are constants of this module, never input.
            await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    for role in (APP_ROLE, EXPLORER_ROLE):
        await admin.execute(f'ALTER ROLE "{role}" NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB')
    # Explorer sessions publish no query text: another tenant's would otherwise be readable
    # (pg_stat_activity) by any session of the shared role.
    await admin.execute(f'ALTER ROLE "{EXPLORER_ROLE}" SET track_activities = off')
    for name, value in EXPLORER_SETTINGS.items():
        try:
            # Names and values are constants of this module.
            await admin.execute(f"ALTER ROLE \"{EXPLORER_ROLE}\" SET {name} = '{value}'")
        except asyncpg.PostgresError as exc:
            if name not in _OPTIONAL_SETTINGS:
                raise
            log.warning("the explorer role's %s cannot be set on this server", name,
                        extra={"error": str(exc)})


async def guard_database(admin: asyncpg.Connection) -> None:
    """In the database ``admin`` (a superuser) is connected to: take GUARDED_FUNCTIONS and the
    pg_stat_activity view from PUBLIC, so the explorer role cannot use them; give them back to
    the owner and runtime roles and pg_monitor. Make the explorer_guard functions."""
    signatures = await admin.fetch(
        "SELECT oid::regprocedure::text AS signature FROM pg_catalog.pg_proc "
        "WHERE proname = ANY($1::name[]) OR proname LIKE 'dblink%' ORDER BY 1",
        list(GUARDED_FUNCTIONS),
    )
    # Signatures come from the catalog, quoted by regprocedure; role names are constants.
    statements = [
        f"REVOKE EXECUTE ON FUNCTION {r['signature']} FROM PUBLIC; "
        f"GRANT EXECUTE ON FUNCTION {r['signature']} TO {_GUARDED_GRANTEES}"
        for r in signatures
    ]
    statements.append("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC; "
                      f"GRANT SELECT ON pg_catalog.pg_stat_activity TO {_GUARDED_GRANTEES}")
    await admin.execute("; ".join(statements))
    await admin.execute(_GUARD_FUNCTIONS)


async def check_memory_limit(admin: asyncpg.Connection) -> bool:
    """Whether explorer_guard.limit_memory works on this server (it needs prlimit on the server's
    machine, and Linux); if not, it is dropped, so explorer connections open without it and the
    server warns at start-up. Call on a connection of its own: the limit stays on its backend."""
    try:
        await admin.execute("SELECT explorer_guard.limit_memory()")
    except asyncpg.PostgresError as exc:
        log.warning("explorer backends get no memory limit on this server (prlimit failed)",
                    extra={"error": str(exc)[:200]})
        await admin.execute("DROP FUNCTION IF EXISTS explorer_guard.limit_memory()")
        return False
    return True


async def check_runtime_role(conn: asyncpg.Connection) -> None:
    """Raise :class:`UnsafeRuntimeRole` with a one-line reason if ``conn``'s role is unsafe."""
    role = await conn.fetchrow(
        "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    if role["rolsuper"]:
        raise UnsafeRuntimeRole(
            f"runtime role {role['rolname']!r} is a superuser; row-level security would not apply"
        )
    if role["rolbypassrls"]:
        raise UnsafeRuntimeRole(
            f"runtime role {role['rolname']!r} has BYPASSRLS; row-level security would not apply"
        )
    owned = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname = ANY($1::text[]) "
        "AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname",
        list(TENANT_TABLES),
    )
    if owned:
        names = ", ".join(r["relname"] for r in owned)
        raise UnsafeRuntimeRole(
            f"runtime role {role['rolname']!r} owns tenant tables ({names}); "
            "it could disable their row-level security"
        )
    # Tables a schema before 0018 lacks are skipped (to_regclass is null): readiness says so.
    reachable = await conn.fetch(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass('public.' || t) IS NOT NULL "
        "AND has_table_privilege(current_user, to_regclass('public.' || t), "
        "'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') ORDER BY 1",
        list(OWNER_ONLY_TABLES),
    )
    if reachable:
        names = ", ".join(r["t"] for r in reachable)
        raise UnsafeRuntimeRole(
            f"runtime role {role['rolname']!r} has privileges on the operators' tables ({names}); "
            "they are the owner's alone"
        )


def login_at(login: str, server: str) -> str:
    """``login``'s user (and password) at ``server``'s host, port, database and options: the
    same role on another server of the same cluster (a physical standby has the same roles)."""
    parts = urlsplit(server)
    user = urlsplit(login).netloc.rsplit("@", 1)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user[0]}@{host}" if len(user) == 2 else host
    return urlunsplit(parts._replace(netloc=netloc))


def url_for_role(url: str, role: str, *, database: str | None = None) -> str:
    """The same server's URL, logging in as ``role`` (without a password: trust or .pgpass),
    optionally to another ``database``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}@{host}", path=path))
