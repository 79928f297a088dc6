"""OAuth issuer bindings in the database (migrations/0015_oauth.sql): how a verified token finds
its tenant through oauth_tenant(), what the runtime role may not do, the rules the trigger keeps
(even against a race), tasks made by OAuth users, and the migration's rollback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from spiral_mcp import migrate
from spiral_mcp.admin import AdminError
from spiral_mcp.db import init_connection
from spiral_mcp.oauth import bindings
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries


def _issuer() -> str:
    # The bindings are global: every test binds issuers of its own.
    return f"https://idp-{uuid.uuid4().hex[:10]}.example.com"


@pytest.fixture
async def explorer_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_urls.explorer)
    yield conn
    await conn.close()


async def _resolve(app_conn: asyncpg.Connection, queries: Queries, issuer: str,
                   claims: dict) -> list[tuple]:
    # As the server does it: the runtime role, no tenant context, claims as jsonb.
    await init_connection(app_conn)
    # (tenant, claim): whether the tenant is suspended is test_operators.py's.
    rows = await queries.oauth_tenant(app_conn, issuer=issuer, claims=claims)
    return [(r["tenant_id"], r["claim"]) for r in rows]


async def test_a_token_finds_the_tenant_its_issuer_or_claim_value_is_bound_to(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries,
) -> None:
    a, b = await make_tenant(name="A"), await make_tenant(name="B")
    whole, per_org = _issuer(), _issuer()
    await bindings.bind(admin_conn, queries, tenant_id=a.id, issuer=whole)
    await bindings.bind(admin_conn, queries, tenant_id=a.id, issuer=per_org, claim="org",
                        value="acme")
    await bindings.bind(admin_conn, queries, tenant_id=b.id, issuer=per_org, claim="org",
                        value="42")
    await bindings.bind(admin_conn, queries, tenant_id=b.id, issuer=per_org, claim="org",
                        value="true")

    assert await _resolve(app_conn, queries, whole, {"sub": "u"}) == [(a.id, None)]
    assert await _resolve(app_conn, queries, per_org, {"org": "acme"}) == [(a.id, "org")]
    # Numbers and booleans match the bound text; a list matches by any of its values.
    assert await _resolve(app_conn, queries, per_org, {"org": 42}) == [(b.id, "org")]
    assert await _resolve(app_conn, queries, per_org, {"org": True}) == [(b.id, "org")]
    assert await _resolve(app_conn, queries, per_org, {"org": ["x", "acme"]}) == [(a.id, "org")]
    # Two tenants at once: both come back, and the caller refuses the token as ambiguous.
    assert sorted(await _resolve(app_conn, queries, per_org, {"org": ["acme", "42"]})) == \
        sorted([(a.id, "org"), (b.id, "org")])
    # Bound per claim, but not this token's value (or it has none, or not a scalar one).
    for claims in ({"org": "initech"}, {}, {"org": None}, {"org": {"id": "acme"}},
                   {"org": [["acme"]]}, {"ORG": "acme"}):
        assert await _resolve(app_conn, queries, per_org, claims) == [(None, "org")], claims
    # Bound nowhere; an issuer is its exact string (a trailing slash is another issuer).
    assert await _resolve(app_conn, queries, _issuer(), {"org": "acme"}) == []
    assert await _resolve(app_conn, queries, whole + "/", {}) == []


async def test_the_runtime_role_resolves_only_through_the_function(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection,
    explorer_conn: asyncpg.Connection, queries: Queries,
) -> None:
    tenant = await make_tenant()
    issuer = _issuer()
    await bindings.bind(admin_conn, queries, tenant_id=tenant.id, issuer=issuer)
    # No list of tenants or of issuers for the server: it may not read the table, in its own
    # tenant's context or none, nor write it.
    for context in ("", str(tenant.id)):
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", context)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await app_conn.fetch("SELECT * FROM oauth_bindings")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await app_conn.execute("INSERT INTO oauth_bindings (tenant_id, issuer) VALUES ($1, $2)",
                               tenant.id, _issuer())
    # The explorer role (tenants' own SQL) may not even resolve.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await explorer_conn.fetch("SELECT * FROM oauth_tenant($1, '{}')", issuer)
    assert await _resolve(app_conn, queries, issuer, {}) == [(tenant.id, None)]


async def test_a_binding_refused_by_the_database_changes_nothing(
    make_tenant, admin_conn: asyncpg.Connection, queries: Queries,
) -> None:
    a, b = await make_tenant(name="A"), await make_tenant(name="B")
    issuer = _issuer()
    await bindings.bind(admin_conn, queries, tenant_id=a.id, issuer=issuer, claim="org",
                        value="acme")
    with pytest.raises(AdminError, match=f"issuer {issuer} is bound per value of claim org; an "
                                         "issuer is bound whole or per claim value, never both"):
        await bindings.bind(admin_conn, queries, tenant_id=b.id, issuer=issuer)
    # Written straight into the table too (no CLI): the trigger is the rule, not the command.
    with pytest.raises(asyncpg.UniqueViolationError, match="already bound to tenant"):
        await admin_conn.execute(
            "INSERT INTO oauth_bindings (tenant_id, issuer, claim, claim_value) "
            "VALUES ($1, $2, 'org', 'acme')", b.id, issuer)
    with pytest.raises(asyncpg.UniqueViolationError, match="all of an issuer's bindings use one"):
        await admin_conn.execute(
            "INSERT INTO oauth_bindings (tenant_id, issuer, claim, claim_value) "
            "VALUES ($1, $2, 'tid', 'x')", b.id, issuer)
    # Nor can an UPDATE turn a binding into a conflicting one.
    other = await bindings.bind(admin_conn, queries, tenant_id=b.id, issuer=issuer, claim="org",
                                value="globex")
    with pytest.raises(asyncpg.UniqueViolationError, match="already bound to tenant"):
        await admin_conn.execute("UPDATE oauth_bindings SET claim_value = 'acme' "
                                 "WHERE binding_id = $1", other)
    await bindings.unbind(admin_conn, queries, tenant_id=b.id, issuer=issuer, claim="org",
                          value="globex")
    with pytest.raises(asyncpg.CheckViolationError):
        await admin_conn.execute("INSERT INTO oauth_bindings (tenant_id, issuer, claim) "
                                 "VALUES ($1, $2, 'org')", b.id, _issuer())
    rows = await bindings.list_bindings(admin_conn, queries)
    assert [(r["tenant_id"], r["claim"], r["value"]) for r in rows if r["issuer"] == issuer] \
        == [(a.id, "org", "acme")]
    # A tenant's end takes its bindings with it.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a.id))
        await admin_conn.execute("DELETE FROM tenants WHERE tenant_id = $1", a.id)
    assert [r for r in await bindings.list_bindings(admin_conn, queries)
            if r["issuer"] == issuer] == []


async def test_two_binds_racing_for_one_issuer_cannot_both_pass(
    make_tenant, database_urls: DatabaseUrls, queries: Queries,
) -> None:
    """Without a unique index across tenants, the trigger's lock is what keeps two concurrent
    binds of one issuer apart: the second waits for the first, then sees its row."""
    a, b = await make_tenant(name="A"), await make_tenant(name="B")
    issuer = _issuer()
    assert database_urls.admin is not None
    first = await asyncpg.connect(database_urls.admin)
    second = await asyncpg.connect(database_urls.admin)
    try:
        tx = first.transaction()
        await tx.start()
        await bindings.bind(first, queries, tenant_id=a.id, issuer=issuer)
        racing = asyncio.create_task(second.execute(
            "INSERT INTO oauth_bindings (tenant_id, issuer) VALUES ($1, $2)", b.id, issuer))
        await asyncio.sleep(0.3)
        assert not racing.done()  # waiting on the first's lock
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError,
                           match=f"issuer {issuer} is already bound whole to tenant {a.id}"):
            await racing
        # A snapshot older than the lock could miss the other's row: refused outright.
        with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED transactions only"):
            async with second.transaction(isolation="repeatable_read"):
                await second.execute("INSERT INTO oauth_bindings (tenant_id, issuer) "
                                     "VALUES ($1, $2)", b.id, _issuer())
    finally:
        await first.close()
        await second.close()


async def _task(conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID,
                credential: str) -> uuid.UUID:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await conn.fetchval(
            "INSERT INTO tasks (tenant_id, task_id, key_id, tool, ttl_ms, poll_interval_ms, "
            "lease_until, expires_at, credential) VALUES ($1, gen_random_uuid(), $2, 't', 60000, "
            "1000, now(), now() + interval '1 hour', $3) RETURNING task_id",
            tenant_id, key_id, credential)


async def test_a_task_stops_with_its_api_key_and_an_oauth_users_task_goes_on(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection, queries: Queries,
) -> None:
    tenant = await make_tenant()
    user = uuid.uuid4()  # an OAuth principal id: no API key has it
    users = await _task(admin_conn, tenant.id, user, "oauth")
    keyed = await _task(admin_conn, tenant.id, tenant.key_id, "api_key")
    orphan = await _task(admin_conn, tenant.id, uuid.uuid4(), "api_key")  # no such key

    async def renew(task_id: uuid.UUID) -> str:
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                   str(tenant.id))
            return await queries.task_renew(app_conn, task_id=task_id, lease_seconds=30)

    assert [await renew(t) for t in (users, keyed, orphan)] == ["go", "go", "credential"]
    await admin_conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1",
                             tenant.key_id)
    assert [await renew(t) for t in (users, keyed)] == ["go", "credential"]
    with pytest.raises(asyncpg.CheckViolationError, match="tasks_credential"):
        await _task(admin_conn, tenant.id, user, "password")


async def test_the_migration_rolls_back_without_oauth_tasks_and_applies_again(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(migrate.apply, fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        tenant_id = await conn.fetchval("INSERT INTO tenants (name) VALUES ('t') "
                                        "RETURNING tenant_id")
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            key_id = await conn.fetchval(
                "INSERT INTO api_keys (tenant_id, name, key_hash, scopes) "
                "VALUES ($1, 'k', sha256('x'::bytea), ARRAY['read']) RETURNING key_id", tenant_id)
        await conn.execute("INSERT INTO oauth_bindings (tenant_id, issuer) VALUES ($1, $2)",
                           tenant_id, _issuer())
        keyed = await _task(conn, tenant_id, key_id, "api_key")
        await _task(conn, tenant_id, uuid.uuid4(), "oauth")

        # With the migrations after it, which come back with it.
        since = tuple(m for m in migrate.head_ids() if m >= "0015_oauth")
        assert await asyncio.to_thread(migrate.rollback, fresh_database,
                                       count=len(since)) == since[::-1]
        assert await conn.fetchval("SELECT to_regclass('oauth_bindings')") is None
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            # The OAuth user's task named no key; the key's task stays, bound to its key again.
            assert await conn.fetchval("SELECT array_agg(task_id) FROM tasks") == [keyed]
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute(
                    "INSERT INTO tasks (tenant_id, task_id, key_id, tool, ttl_ms, "
                    "poll_interval_ms, lease_until, expires_at) VALUES ($1, gen_random_uuid(), "
                    "gen_random_uuid(), 't', 1000, 1000, now(), now())", tenant_id)

        assert await asyncio.to_thread(migrate.apply, fresh_database) == since
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            assert await conn.fetchval("SELECT credential FROM tasks") == "api_key"
        # With the tenant go its tasks, directly now that no key stands between.
        await conn.execute("DELETE FROM tenants WHERE tenant_id = $1", tenant_id)
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
    finally:
        await conn.close()
