"""Row-level security, proved against the real database.

Every tenant table is checked with the runtime role (what the server uses) inside transactions
that set ``app.tenant_id`` the way the server does. Where the runtime role lacks a privilege, the
permission error is asserted, and isolation is proved again with a role that holds every
privilege but is still bound by the policies: the grants are one wall, RLS is another.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web

from spiral_mcp.config import load_settings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.roles import (
    APP_ROLE,
    EXPLORER_ROLE,
    OWNER_ROLE,
    TENANT_TABLES,
    UnsafeRuntimeRole,
    check_runtime_role,
    url_for_role,
)
from spiral_mcp.server.app import create_app

# The registry tables the owner may see across tenants (policy owner_admin); every other tenant
# table binds the owner too (FORCE ROW LEVEL SECURITY).
OWNER_ADMIN_TABLES = frozenset({"tenants", "api_keys", "oauth_bindings"})


@dataclasses.dataclass(frozen=True, slots=True)
class Seed:
    """One tenant's seeded rows: the ids children refer to."""

    tenant_id: uuid.UUID
    item_ids: tuple[int, int]
    key_id: uuid.UUID | None = None  # the tenant's API key (a task's creator)
    instance_id: uuid.UUID | None = None  # the tenant's source instance (a sync run's)


InsertBuilder = Callable[[uuid.UUID, Seed], tuple[Any, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class TableSpec:
    """How to probe one table, and which privileges the migration grants the runtime role."""

    runtime: frozenset[str]  # of select, insert, update (the ``update_set`` below), delete, move
    update_set: str  # a harmless SET clause; for api_keys the one column the runtime may update
    insert: InsertBuilder


def _ins(sql: str, *extra: Callable[[Seed], Any]) -> InsertBuilder:
    """An INSERT whose $1 is the tenant id and whose further parameters come from a seed;
    built as ``(sql, *args)`` for ``conn.execute``."""
    return lambda tenant_id, seed: (sql, tenant_id, *(get(seed) for get in extra))


_ALL = frozenset({"select", "insert", "update", "delete", "move"})
SPECS: dict[str, TableSpec] = {
    "tenants": TableSpec(
        frozenset({"select"}), "name = 'hijacked'",
        _ins("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'intruder')")),
    # 0017: a tenant admin creates and revokes its tenant's keys (UPDATE of revoked_at and
    # last_used_at only).
    "api_keys": TableSpec(
        frozenset({"select", "insert", "update"}), "last_used_at = now()",
        _ins("INSERT INTO api_keys (tenant_id, name, key_hash, scopes) "
             "VALUES ($1, 'intruder', sha256('x'::bytea), ARRAY['admin'])")),
    "source_instances": TableSpec(
        _ALL, "name = name || '-hijacked'",
        _ins("INSERT INTO source_instances (tenant_id, kind, name, base_url) "
             "VALUES ($1, 'github', 'intruder', 'https://github.example.com')")),
    "projects": TableSpec(
        _ALL, "name = 'hijacked'",
        _ins("INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, 'NEW', 'New')")),
    "workflow_statuses": TableSpec(
        _ALL, "position = position + 10",
        _ins("INSERT INTO workflow_statuses (tenant_id, project_key, status, category) "
             "VALUES ($1, 'ISO', 'Parked', 'todo')")),
    "workflow_transitions": TableSpec(
        _ALL, "name = 'hijacked'",
        _ins("INSERT INTO workflow_transitions "
             "(tenant_id, project_key, transition_id, name, from_status, to_status) "
             "VALUES ($1, 'ISO', '99', 'Skip', 'To Do', 'Done')")),
    "work_items": TableSpec(
        _ALL, "title = 'hijacked'",
        _ins("INSERT INTO work_items "
             "(tenant_id, key, project_key, number, title, status, status_category) "
             "VALUES ($1, 'ISO-3', 'ISO', 3, 'third', 'To Do', 'todo')")),
    "work_item_transitions": TableSpec(
        _ALL, "actor = 'hijacked'",
        _ins("INSERT INTO work_item_transitions (tenant_id, work_item_id, to_status, to_category) "
             "VALUES ($1, $2, 'Done', 'done')", lambda s: s.item_ids[0])),
    "comments": TableSpec(
        _ALL, "body = 'hijacked'",
        _ins("INSERT INTO comments (tenant_id, work_item_id, body) VALUES ($1, $2, 'intruder')",
             lambda s: s.item_ids[1])),
    "work_item_links": TableSpec(
        _ALL, "created_by = 'hijacked'",
        _ins("INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id) "
             "VALUES ($1, 'relates', $2, $3)", lambda s: s.item_ids[1], lambda s: s.item_ids[0])),
    # 0017: a tenant admin reads its tenant's audit log.
    "audit_log": TableSpec(
        frozenset({"insert", "select"}), "actor = 'hijacked'",
        _ins("INSERT INTO audit_log (tenant_id, tool, outcome) VALUES ($1, 'intruder', 'ok')")),
    "idempotency_keys": TableSpec(
        _ALL, "state = 'completed'",
        _ins("INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, expires_at) "
             "VALUES ($1, 'intruder', 'k2', '\\x00'::bytea, 'in_progress', "
             "now() + interval '1 hour')")),
    # 0011: the counters that number a tenant's rows; the seed's inserts made both of A's.
    # 0014: tasks of the tasks extension, each bound to its tenant and the key that made it.
    "tasks": TableSpec(
        _ALL, "status_message = 'hijacked'",
        _ins("INSERT INTO tasks (tenant_id, task_id, key_id, tool, ttl_ms, poll_interval_ms, "
             "lease_until, expires_at) VALUES ($1, gen_random_uuid(), $2, 'intruder', 1000, "
             "1000, now(), now() + interval '1 hour')", lambda s: s.key_id)),
    # 0015: which tenant an OAuth issuer's tokens act in; the runtime role reads them only
    # through oauth_tenant() (test_oauth_bindings.py), never the table.
    "oauth_bindings": TableSpec(
        frozenset(), "created_at = created_at",
        _ins("INSERT INTO oauth_bindings (tenant_id, issuer) "
             "VALUES ($1, 'https://' || gen_random_uuid() || '.example.com')")),
    # 0019: the history of source syncs; a run's progress and outcome columns only are updated.
    "sync_runs": TableSpec(
        frozenset({"select", "insert", "update"}), "pages = pages + 1",
        _ins("INSERT INTO sync_runs (tenant_id, instance_id, kind, trigger) "
             "VALUES ($1, $2, 'sync', 'api')", lambda s: s.instance_id)),
    # 0017: the console's sessions, each bound to the admin key that opened it.
    "console_sessions": TableSpec(
        frozenset({"select", "insert", "update", "delete"}), "last_seen_at = now()",
        _ins("INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, key_id, "
             "expires_at) VALUES ($1, sha256(gen_random_uuid()::text::bytea), "
             "repeat('c', 43), $2, now() + interval '1 hour')", lambda s: s.key_id)),
    "tenant_counters": TableSpec(
        frozenset({"select", "insert", "update"}), "last_id = last_id + 1",
        _ins("INSERT INTO tenant_counters AS c (tenant_id, counter, last_id) "
             "VALUES ($1, 'work', 1) "
             "ON CONFLICT (tenant_id, counter) DO UPDATE SET last_id = c.last_id + 1")),
}

tables = pytest.mark.parametrize("table", TENANT_TABLES)


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _with_database(url: str, database: str) -> str:
    """``url`` (credentials kept) pointed at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@asynccontextmanager
async def in_tenant(
    conn: asyncpg.Connection, tenant_id: uuid.UUID | str | None
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction scoped like the server's (``set_config(..., true)``), always rolled back so
    a probe that succeeds changes nothing. ``None``: the setting is never touched."""
    tx = conn.transaction()
    await tx.start()
    try:
        if tenant_id is not None:
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        yield conn
    finally:
        await tx.rollback()


async def _seed(conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID) -> Seed:
    """A row in every tenant table for ``tenant_id``, written by the owner in that tenant's
    context (the owner is under FORCE RLS too). The same project and item keys in every tenant."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        instance_id = await conn.fetchval(
            "INSERT INTO source_instances (tenant_id, kind, name, base_url) "
            "VALUES ($1, 'jira', 'iso', 'https://jira.example.com') RETURNING instance_id",
            tenant_id)
        # The trigger adds the default workflow: statuses and transitions.
        await conn.execute(
            "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, 'ISO', 'Isolation')",
            tenant_id)
        rows = await conn.fetch(
            "INSERT INTO work_items "
            "(tenant_id, key, project_key, number, title, status, status_category) "
            "VALUES ($1, 'ISO-1', 'ISO', 1, 'first', 'To Do', 'todo'), "
            "($1, 'ISO-2', 'ISO', 2, 'second', 'To Do', 'todo') RETURNING id", tenant_id)
        first, second = (r["id"] for r in rows)
        await conn.execute(
            "INSERT INTO work_item_transitions (tenant_id, work_item_id, to_status, to_category) "
            "VALUES ($1, $2, 'To Do', 'todo')", tenant_id, first)
        await conn.execute(
            "INSERT INTO comments (tenant_id, work_item_id, body) VALUES ($1, $2, 'hello')",
            tenant_id, first)
        await conn.execute(
            "INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id) "
            "VALUES ($1, 'blocks', $2, $3)", tenant_id, first, second)
        await conn.execute(
            "INSERT INTO audit_log (tenant_id, tool, outcome) VALUES ($1, 'seed', 'ok')",
            tenant_id)
        await conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, expires_at) "
            "VALUES ($1, 'seed', 'k1', '\\x00'::bytea, 'completed', now() + interval '1 day')",
            tenant_id)
        await conn.execute(
            "INSERT INTO tasks (tenant_id, task_id, key_id, tool, ttl_ms, poll_interval_ms, "
            "lease_until, expires_at) VALUES ($1, gen_random_uuid(), $2, 'seed', 60000, 1000, "
            "now(), now() + interval '1 hour')", tenant_id, key_id)
        await conn.execute(
            "INSERT INTO oauth_bindings (tenant_id, issuer, claim, claim_value) "
            "VALUES ($1, 'https://isolation.example.com', 'org', $2)", tenant_id, str(tenant_id))
        await conn.execute(
            "INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, key_id, "
            "expires_at) VALUES ($1, sha256(gen_random_uuid()::text::bytea), repeat('c', 43), $2, "
            "now() + interval '1 hour')", tenant_id, key_id)
        await conn.execute(
            "INSERT INTO sync_runs (tenant_id, instance_id, kind, trigger, status, finished_at) "
            "VALUES ($1, $2, 'backfill', 'cli', 'ok', now())", tenant_id, instance_id)
    return Seed(tenant_id, (first, second), key_id, instance_id)


@pytest.fixture
async def two_tenants(make_tenant, admin_conn: asyncpg.Connection) -> tuple[Seed, Seed]:
    a = await make_tenant(name="tenant A")
    b = await make_tenant(name="tenant B")
    return await _seed(admin_conn, a.id, a.key_id), await _seed(admin_conn, b.id, b.key_id)


@pytest.fixture(scope="module")
async def superuser(superuser_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(superuser_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def full_role_url(
    superuser: asyncpg.Connection, superuser_url: str, database_urls: DatabaseUrls
) -> AsyncIterator[str]:
    """A throwaway role with every privilege on every tenant table, but no BYPASSRLS and no
    ownership: what the runtime role would be if its grants were too wide."""
    assert database_urls.admin is not None
    role = f"spiral_test_full_{uuid.uuid4().hex[:8]}"
    await superuser.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOBYPASSRLS')
    owner = await asyncpg.connect(database_urls.admin)
    table_list = ", ".join(TENANT_TABLES)
    try:
        await owner.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {table_list} TO "{role}"')
        yield url_for_role(superuser_url, role, database=_database_name(database_urls.admin))
    finally:
        await owner.execute(f'REVOKE ALL ON {table_list} FROM "{role}"')
        await owner.close()
        await superuser.execute(f'DROP ROLE "{role}"')


@pytest.fixture
async def full_conn(full_role_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(full_role_url)
    yield conn
    await conn.close()


async def _snapshot(conn: asyncpg.Connection, table: str, tenant_id: uuid.UUID) -> list[str]:
    """Every row of ``table`` for ``tenant_id``, as text, in a stable order."""
    async with in_tenant(conn, tenant_id):
        rows = await conn.fetch(
            f"SELECT to_jsonb(t)::text AS row FROM {table} t WHERE tenant_id = $1 ORDER BY 1",
            tenant_id)
    return [r["row"] for r in rows]


def _rows_affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def test_every_tenant_table_has_a_probe() -> None:
    assert set(SPECS) == set(TENANT_TABLES)


@tables
async def test_runtime_grants_are_exactly_the_migrations(
    table: str, app_conn: asyncpg.Connection
) -> None:
    """The probes below rely on these grants; TRUNCATE would bypass RLS, so never granted."""
    spec = SPECS[table]
    for privilege in ("SELECT", "INSERT", "DELETE"):
        granted = await app_conn.fetchval(
            "SELECT has_table_privilege($1, $2, $3)", APP_ROLE, table, privilege)
        assert granted is (privilege.lower() in spec.runtime), privilege
    full_update = await app_conn.fetchval(
        "SELECT has_table_privilege($1, $2, 'UPDATE')", APP_ROLE, table)
    assert full_update is ("move" in spec.runtime)
    can_move = await app_conn.fetchval(
        "SELECT has_column_privilege($1, $2, 'tenant_id', 'UPDATE')", APP_ROLE, table)
    assert can_move is ("move" in spec.runtime)
    for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER"):
        assert not await app_conn.fetchval(
            "SELECT has_table_privilege($1, $2, $3)", APP_ROLE, table, privilege), privilege
    forced = await app_conn.fetchrow(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE oid = ('public.' || $1)::regclass", table)
    assert forced["relrowsecurity"] and forced["relforcerowsecurity"]


async def test_every_table_with_a_tenant_id_is_a_guarded_tenant_table(
    app_conn: asyncpg.Connection,
) -> None:
    """A new tenant table missing from TENANT_TABLES would escape the role check and these
    probes; and every key leads with tenant_id (DESIGN.md, invariant 1)."""
    with_tenant_id = await app_conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
        "AND NOT a.attisdropped WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')")
    assert {r["relname"] for r in with_tenant_id} == set(TENANT_TABLES)
    not_leading = await app_conn.fetch(
        "SELECT i.indexrelid::regclass::text AS index FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'tenant_id' "
        "WHERE i.indrelid = ANY(SELECT ('public.' || t)::regclass FROM unnest($1::text[]) t) "
        "AND i.indisunique AND i.indkey[0] <> a.attnum", list(TENANT_TABLES))
    assert [r["index"] for r in not_leading] == []
    policies = await app_conn.fetch(
        "SELECT tablename, policyname, roles::text[] AS roles, qual, with_check FROM pg_policies "
        "WHERE schemaname = 'public' ORDER BY tablename, policyname")
    by_table: dict[str, set[str]] = {}
    for policy in policies:
        by_table.setdefault(policy["tablename"], set()).add(policy["policyname"])
        if policy["policyname"] == "tenant_isolation":
            assert "app.tenant_id" in policy["qual"] and "app.tenant_id" in policy["with_check"]
        elif policy["policyname"] == "explorer_bound":
            # 0003_explorer: a further (restrictive) condition for the explorer role's reads.
            assert policy["roles"] == [EXPLORER_ROLE]
            assert "bound_tenant()" in policy["qual"] and policy["with_check"] is None
        else:  # the registry's admin policy is for the owner alone
            assert policy["policyname"] == "owner_admin"
            assert policy["roles"] == [OWNER_ROLE]
    assert {t: names - {"explorer_bound"} for t, names in by_table.items()} == {
        table: {"tenant_isolation", "owner_admin"} if table in OWNER_ADMIN_TABLES
        else {"tenant_isolation"} for table in TENANT_TABLES}


async def _assert_reads_only_own(conn: asyncpg.Connection, table: str, a: Seed, b: Seed) -> None:
    async with in_tenant(conn, a.tenant_id):
        total = await conn.fetchval(f"SELECT count(*) FROM {table}")
        own = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                                  a.tenant_id)
        other = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                                    b.tenant_id)
    assert other == 0
    assert total == own > 0  # A's rows are there, and nothing else is


@tables
async def test_a_tenant_reads_only_its_own_rows(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    full_conn: asyncpg.Connection, admin_conn: asyncpg.Connection,
) -> None:
    a, b = two_tenants
    if "select" in SPECS[table].runtime:
        await _assert_reads_only_own(app_conn, table, a, b)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with in_tenant(app_conn, a.tenant_id):
                await app_conn.fetchval(f"SELECT count(*) FROM {table}")
    await _assert_reads_only_own(full_conn, table, a, b)
    # The owner is bound too (FORCE), except on the registry tables the CLI administers.
    async with in_tenant(admin_conn, a.tenant_id):
        owner_sees_b = await admin_conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE tenant_id = $1", b.tenant_id)
    assert (owner_sees_b > 0) is (table in OWNER_ADMIN_TABLES)


@tables
async def test_a_tenant_cannot_update_another_tenants_rows(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    full_conn: asyncpg.Connection,
) -> None:
    a, b = two_tenants
    spec = SPECS[table]
    update = f"UPDATE {table} SET {spec.update_set} WHERE tenant_id = $1"
    before = await _snapshot(full_conn, table, b.tenant_id)
    connections = [full_conn]
    if "update" in spec.runtime:
        connections.append(app_conn)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with in_tenant(app_conn, a.tenant_id):
                await app_conn.execute(update, b.tenant_id)
    for conn in connections:
        async with in_tenant(conn, a.tenant_id):
            assert _rows_affected(await conn.execute(update, b.tenant_id)) == 0
            # The same statement does work on A's own rows: the zero above is the policy's.
            assert _rows_affected(await conn.execute(update, a.tenant_id)) > 0
    assert await _snapshot(full_conn, table, b.tenant_id) == before


@tables
async def test_a_tenant_cannot_delete_another_tenants_rows(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    full_conn: asyncpg.Connection,
) -> None:
    a, b = two_tenants
    delete = f"DELETE FROM {table} WHERE tenant_id = $1"
    before = await _snapshot(full_conn, table, b.tenant_id)
    connections = [full_conn]
    if "delete" in SPECS[table].runtime:
        connections.append(app_conn)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with in_tenant(app_conn, a.tenant_id):
                await app_conn.execute(delete, b.tenant_id)
    for conn in connections:
        async with in_tenant(conn, a.tenant_id):
            assert _rows_affected(await conn.execute(delete, b.tenant_id)) == 0
            assert _rows_affected(await conn.execute(delete, a.tenant_id)) > 0
    assert before and await _snapshot(full_conn, table, b.tenant_id) == before


@tables
async def test_a_tenant_cannot_insert_rows_for_another_tenant(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    full_conn: asyncpg.Connection,
) -> None:
    a, b = two_tenants
    spec = SPECS[table]
    # A positive control proves each INSERT is otherwise valid. A new tenant row can only be
    # written in its own (fresh) context, since A already exists.
    own = uuid.uuid4() if table == "tenants" else a.tenant_id
    connections = [full_conn]
    if "insert" in spec.runtime:
        connections.append(app_conn)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with in_tenant(app_conn, own):
                await app_conn.execute(*spec.insert(own, a))
    for conn in connections:
        async with in_tenant(conn, own):
            await conn.execute(*spec.insert(own, a))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with in_tenant(conn, a.tenant_id):
                await conn.execute(*spec.insert(b.tenant_id, b))
        # No context at all: the row matches no tenant, so it is refused as well.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with in_tenant(conn, None):
                await conn.execute(*spec.insert(a.tenant_id, a))


@tables
async def test_a_tenant_cannot_move_its_rows_to_another_tenant(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    full_conn: asyncpg.Connection,
) -> None:
    a, b = two_tenants
    move = f"UPDATE {table} SET tenant_id = $2 WHERE tenant_id = $1"
    connections = [full_conn]
    if "move" in SPECS[table].runtime:
        connections.append(app_conn)
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with in_tenant(app_conn, a.tenant_id):
                await app_conn.execute(move, a.tenant_id, b.tenant_id)
    for conn in connections:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with in_tenant(conn, a.tenant_id):
                await conn.execute(move, a.tenant_id, b.tenant_id)
    before = await _snapshot(full_conn, table, a.tenant_id)
    assert before  # A's rows are all still A's


@tables
@pytest.mark.parametrize("context", [None, ""], ids=["unset", "empty"])
async def test_no_tenant_context_sees_and_changes_nothing(
    table: str, context: str | None, two_tenants: tuple[Seed, Seed],
    app_conn: asyncpg.Connection, full_conn: asyncpg.Connection, admin_conn: asyncpg.Connection,
) -> None:
    spec = SPECS[table]
    readers = [full_conn] + ([app_conn] if "select" in spec.runtime else [])
    if table not in OWNER_ADMIN_TABLES:
        readers.append(admin_conn)
    for conn in readers:
        async with in_tenant(conn, context):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    async with in_tenant(full_conn, context):
        assert _rows_affected(await full_conn.execute(
            f"UPDATE {table} SET {spec.update_set}")) == 0
        assert _rows_affected(await full_conn.execute(f"DELETE FROM {table}")) == 0


async def test_the_context_ends_with_its_transaction(
    two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection
) -> None:
    """``set_config(..., true)`` is transaction-local: a pooled connection carries no tenant
    from one request into the next."""
    a, _ = two_tenants
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a.tenant_id))
        assert await app_conn.fetchval("SELECT count(*) FROM work_items") == 2
    assert await app_conn.fetchval("SELECT count(*) FROM work_items") == 0


@pytest.mark.parametrize("table", ["work_item_transitions", "comments", "work_item_links"])
async def test_a_tenant_cannot_attach_rows_to_another_tenants_items(
    table: str, two_tenants: tuple[Seed, Seed], app_conn: asyncpg.Connection,
    admin_conn: asyncpg.Connection,
) -> None:
    """Foreign keys lead with tenant_id: ids B's items have and A's do not name nothing under
    A's tenant id. (Ids are numbered per tenant since 0011, so the seeded items have the same ids
    in both tenants, and under A's tenant id each names A's own item.)"""
    a, b = two_tenants
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(b.tenant_id))
        only_b = tuple(r["id"] for r in await admin_conn.fetch(
            "INSERT INTO work_items "
            "(tenant_id, key, project_key, number, title, status, status_category) "
            "VALUES ($1, 'ISO-3', 'ISO', 3, 'third', 'To Do', 'todo'), "
            "($1, 'ISO-4', 'ISO', 4, 'fourth', 'To Do', 'todo') RETURNING id", b.tenant_id))
    async with in_tenant(app_conn, a.tenant_id):
        assert await app_conn.fetchval(
            "SELECT count(*) FROM work_items WHERE id = ANY($1::bigint[])", list(only_b)) == 0
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with in_tenant(app_conn, a.tenant_id):
            await app_conn.execute(*SPECS[table].insert(a.tenant_id, Seed(b.tenant_id, only_b)))


async def test_a_tenant_cannot_key_its_items_on_another_tenants_instance(
    two_tenants: tuple[Seed, Seed], admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    """Items carry their source instance (0009); that foreign key leads with tenant_id too."""
    a, b = two_tenants
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(b.tenant_id))
        theirs = await admin_conn.fetchval(
            "INSERT INTO source_instances (tenant_id, kind, name, base_url) VALUES "
            "($1, 'jira', 'theirs', 'https://jira.example.com') RETURNING instance_id",
            b.tenant_id)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with in_tenant(app_conn, a.tenant_id):
            await app_conn.execute(
                "INSERT INTO work_items (tenant_id, key, project_key, number, title, status, "
                "status_category, source, source_id, source_instance_id) VALUES "
                "($1, 'ISO-3', 'ISO', 3, 'third', 'To Do', 'todo', 'jira', '10001', $2)",
                a.tenant_id, theirs)


async def test_keys_are_unique_per_tenant_not_globally(
    make_tenant, app_conn: asyncpg.Connection
) -> None:
    a = await make_tenant()
    b = await make_tenant()

    async def create(tenant_id: uuid.UUID) -> None:
        async with app_conn.transaction():
            await app_conn.execute(
                "SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            await app_conn.execute(
                "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, 'UNQ', 'U')",
                tenant_id)
            await app_conn.execute(
                "INSERT INTO work_items "
                "(tenant_id, key, project_key, number, title, status, status_category) "
                "VALUES ($1, 'UNQ-1', 'UNQ', 1, 'same key', 'To Do', 'todo')", tenant_id)

    await create(a.id)
    await create(b.id)  # the same project key and item key in another tenant: fine
    for tenant_id in (a.id, b.id):
        async with in_tenant(app_conn, tenant_id):
            assert await app_conn.fetchval(
                "SELECT tenant_id FROM work_items WHERE key = 'UNQ-1'") == tenant_id
    with pytest.raises(asyncpg.UniqueViolationError):  # ...but not twice in one tenant
        await create(a.id)


# --- the runtime role check -------------------------------------------------------------------


@pytest.fixture
async def throwaway_role(superuser: asyncpg.Connection) -> AsyncIterator[Callable[..., Any]]:
    """``await throwaway_role("BYPASSRLS")``: a new login role with those options; dropped after."""
    created: list[str] = []

    async def make(options: str = "") -> str:
        role = f"spiral_test_role_{uuid.uuid4().hex[:8]}"
        await superuser.execute(f'CREATE ROLE "{role}" LOGIN {options}')
        created.append(role)
        return role

    yield make
    for role in created:
        await superuser.execute(f'DROP ROLE IF EXISTS "{role}"')


async def _check_as(superuser_url: str, database_urls: DatabaseUrls, role: str) -> None:
    assert database_urls.admin is not None
    url = url_for_role(superuser_url, role, database=_database_name(database_urls.admin))
    conn = await asyncpg.connect(url)
    try:
        await check_runtime_role(conn)
    finally:
        await conn.close()


async def test_the_runtime_role_passes_the_check(
    app_conn: asyncpg.Connection, superuser_url: str, database_urls: DatabaseUrls,
    throwaway_role: Callable[..., Any],
) -> None:
    await check_runtime_role(app_conn)
    await _check_as(superuser_url, database_urls, await throwaway_role("NOSUPERUSER"))


@pytest.mark.parametrize(("options", "reason"), [
    ("SUPERUSER", "is a superuser"),
    ("NOSUPERUSER BYPASSRLS", "has BYPASSRLS"),
])
async def test_check_refuses_a_role_that_skips_rls(
    options: str, reason: str, superuser_url: str, database_urls: DatabaseUrls,
    throwaway_role: Callable[..., Any],
) -> None:
    role = await throwaway_role(options)
    with pytest.raises(UnsafeRuntimeRole, match=reason):
        await _check_as(superuser_url, database_urls, role)


async def test_check_refuses_a_member_of_the_owner_role(
    superuser: asyncpg.Connection, superuser_url: str, database_urls: DatabaseUrls,
    throwaway_role: Callable[..., Any],
) -> None:
    """Membership in the owner role is ownership: it could ALTER the tables."""
    role = await throwaway_role()
    await superuser.execute(f'GRANT "{OWNER_ROLE}" TO "{role}"')
    with pytest.raises(UnsafeRuntimeRole, match="owns tenant tables") as caught:
        await _check_as(superuser_url, database_urls, role)
    assert "work_items" in str(caught.value)


async def test_check_refuses_a_role_owning_one_tenant_table(
    superuser_url: str, database_urls: DatabaseUrls, throwaway_role: Callable[..., Any]
) -> None:
    # The ownership change lives in a transaction that is rolled back, so the shared test
    # database is never altered; SET LOCAL ROLE makes the check run as that role.
    assert database_urls.admin is not None
    role = await throwaway_role()
    conn = await asyncpg.connect(
        _with_database(superuser_url, _database_name(database_urls.admin)))
    try:
        with pytest.raises(UnsafeRuntimeRole, match=r"owns tenant tables \(idempotency_keys\)"):
            async with conn.transaction():
                await conn.execute(f'ALTER TABLE idempotency_keys OWNER TO "{role}"')
                await conn.execute(f'SET LOCAL ROLE "{role}"')
                await check_runtime_role(conn)
        owner = await conn.fetchval(
            "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'idempotency_keys'")
        assert owner == OWNER_ROLE
    finally:
        await conn.close()


async def test_the_server_will_not_start_as_a_superuser(
    superuser_url: str, database_urls: DatabaseUrls
) -> None:
    assert database_urls.admin is not None
    url = _with_database(superuser_url, _database_name(database_urls.admin))
    settings = load_settings(environ={"DATABASE_URL": url, "DB_POOL_MIN": "1"})
    runner = web.AppRunner(create_app(settings, database_url=url))
    try:
        with pytest.raises(UnsafeRuntimeRole, match="superuser"):
            await runner.setup()  # runs the start-up contexts
    finally:
        await runner.cleanup()
