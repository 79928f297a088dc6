"""Database roles: who owns the schema, who serves requests, who runs explorer queries.

The server never trusts a runtime role that could step around row-level security: it refuses to
start when that role is a superuser, has BYPASSRLS, or owns a tenant table (an owner could ALTER
the table and drop the policies).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "APP_ROLE",
    "EXPLORER_ROLE",
    "OWNER_ROLE",
    "UnsafeRuntimeRole",
    "check_runtime_role",
    "ensure_roles",
    "guard_database",
    "url_for_role",
]

OWNER_ROLE = "spiral_owner"
APP_ROLE = "spiral_app"
EXPLORER_ROLE = "spiral_explorer"

# The tables whose rows belong to a tenant; each is under forced row-level security.
TENANT_TABLES = (
    "tenants", "api_keys", "source_instances", "projects", "workflow_statuses",
    "workflow_transitions", "work_items", "work_item_transitions", "comments", "work_item_links",
    "audit_log", "idempotency_keys", "tenant_counters",
)


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
    # The explorer has the server show it its reading of each query (debug_print_parse, sent
    # as a LOG message): that is for the explorer, not for the server's log.
    await admin.execute(f'ALTER ROLE "{EXPLORER_ROLE}" SET log_min_messages = fatal')


async def guard_database(admin: asyncpg.Connection) -> None:
    """In the database ``admin`` (a superuser) is connected to: take GUARDED_FUNCTIONS and the
    pg_stat_activity view from PUBLIC, so the explorer role cannot use them; give them back to
    the owner and runtime roles and pg_monitor."""
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


def url_for_role(url: str, role: str, *, database: str | None = None) -> str:
    """The same server's URL, logging in as ``role`` (without a password: trust or .pgpass),
    optionally to another ``database``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}@{host}", path=path))
