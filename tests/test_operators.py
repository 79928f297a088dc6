"""Operators and what they do to tenants, through the CLI and the domain functions: their
credentials, suspension (keys and OAuth tokens refused, background sync passed by), deletion of a
tenant with every row of it and none of another's, the audit of every action, and what the
runtime and explorer roles may not touch."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from test_cli import Result, cli  # noqa: F401 - the fixture, shared

from spiral_mcp.admin import AdminError, operators, tenants
from spiral_mcp.admin.operators import CLI_OPERATOR
from spiral_mcp.config import load_settings
from spiral_mcp.db import init_connection
from spiral_mcp.oauth import bindings
from spiral_mcp.oauth.identity import _resolution
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries
from spiral_mcp.roles import UnsafeRuntimeRole, check_runtime_role
from spiral_mcp.server.app import create_app

OPERATOR_TABLES = ("operators", "operator_sessions", "operator_audit")


def _ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


@pytest.fixture
async def admin_conn(admin_conn: asyncpg.Connection) -> asyncpg.Connection:
    """The owner's connection, with jsonb as Python values as on the server's pools."""
    await init_connection(admin_conn)
    return admin_conn


@pytest.fixture
async def super_conn(superuser_url: str, database_urls: DatabaseUrls
                     ) -> AsyncIterator[asyncpg.Connection]:
    """The test database as the superuser: sees every tenant's rows, past every policy."""
    assert database_urls.admin is not None
    conn = await asyncpg.connect(superuser_url,
                                 database=urlsplit(database_urls.admin).path.lstrip("/"))
    yield conn
    await conn.close()


async def _audit(conn: asyncpg.Connection, **where: object) -> list[tuple]:
    rows = await conn.fetch(
        "SELECT actor, action, target_tenant_id, outcome, arguments, detail FROM operator_audit "
        "WHERE ($1::uuid IS NULL OR target_tenant_id = $1) AND ($2::text IS NULL OR action = $2) "
        "ORDER BY id", where.get("tenant_id"), where.get("action"))
    return [tuple(r) for r in rows]


async def test_operator_lifecycle_through_the_cli(cli, admin_conn: asyncpg.Connection) -> None:  # noqa: F811
    name = f"ops-{uuid.uuid4().hex[:8]}"
    made = _ok(await cli("operator", "create", "--name", name))
    secret = made.out.strip()
    assert secret.startswith("spo_") and len(secret) == 4 + 32 + 43
    assert "shown once" in made.err
    operator_id = uuid.UUID(made.err.split("operator id: ")[1].split()[0])
    assert secret[4:36] == operator_id.hex

    # A second live operator of that name is refused, in one line.
    again = await cli("operator", "create", "--name", name)
    assert again.code == 1 and "already" in again.err and len(again.err.splitlines()) == 1

    listed = {r["operator_id"]: r for r in _ok(await cli("operator", "list")).json()}
    assert listed[str(operator_id)]["name"] == name
    assert listed[str(operator_id)]["revoked_at"] is None
    assert secret not in str(listed) and "secret_hash" not in listed[str(operator_id)]
    async with admin_conn.transaction():
        assert await operators.verify_operator(admin_conn, Queries.load(), secret) == \
            operators.Operator(operator_id, name)

    assert _ok(await cli("operator", "revoke", str(operator_id))).out.strip() == \
        f"revoked {operator_id}"
    gone = await cli("operator", "revoke", str(operator_id))
    assert gone.code == 1 and f"no live operator with id {operator_id}" in gone.err
    listed = {r["operator_id"]: r for r in _ok(await cli("operator", "list")).json()}
    assert listed[str(operator_id)]["revoked_at"] is not None
    async with admin_conn.transaction():
        assert await operators.verify_operator(admin_conn, Queries.load(), secret) is None
    # The name is free again once its holder is revoked.
    _ok(await cli("operator", "create", "--name", name))

    shown = _ok(await cli("operator", "audit", "--limit", "3")).json()
    assert [(r["actor"].partition(":")[0], r["action"], r["outcome"]) for r in shown] == [
        ("cli", "operators.create", "ok"), ("cli", "operators.revoke", "error"),
        ("cli", "operators.revoke", "ok")]
    assert (await cli("operator", "audit", "--limit", "0")).code == 1
    rows = [r for r in await _audit(admin_conn)
            if r[4].get("name") == name or r[4].get("operator_id") == str(operator_id)]
    assert [(r[0].partition(":")[0], r[1], r[3]) for r in rows] == [
        ("cli", "operators.create", "ok"), ("cli", "operators.create", "error"),
        ("cli", "operators.revoke", "ok"), ("cli", "operators.revoke", "error"),
        ("cli", "operators.create", "ok")]
    assert "already" in rows[1][5]["error"]


async def test_tenant_suspend_resume_delete_through_the_cli(
    cli, admin_conn: asyncpg.Connection, super_conn: asyncpg.Connection,  # noqa: F811
) -> None:
    name = f"Cli {uuid.uuid4().hex[:6]}"
    tenant_id = uuid.UUID(_ok(await cli("tenant", "create", name)).out.strip())
    assert _ok(await cli("tenant", "suspend", str(tenant_id))).out.strip() == \
        f"suspended {tenant_id}"
    listed = {r["tenant_id"]: r for r in _ok(await cli("tenant", "list")).json()}
    assert listed[str(tenant_id)]["suspended_at"] is not None
    _ok(await cli("tenant", "resume", str(tenant_id)))
    listed = {r["tenant_id"]: r for r in _ok(await cli("tenant", "list")).json()}
    assert listed[str(tenant_id)]["suspended_at"] is None

    wrong = await cli("tenant", "delete", str(tenant_id), "--confirm", name.upper())
    assert wrong.code == 1
    assert f"confirm with its exact name, {name!r}" in wrong.err
    missing = await cli("tenant", "delete", str(tenant_id))
    assert missing.code == 2 and "--confirm" in missing.err
    assert _ok(await cli("tenant", "delete", str(tenant_id), "--confirm", name)).out.startswith(
        f"deleted {tenant_id}")
    assert str(tenant_id) not in {r["tenant_id"] for r in _ok(await cli("tenant", "list")).json()}
    unknown = await cli("tenant", "suspend", str(tenant_id))
    assert unknown.code == 1 and f"no tenant with id {tenant_id}" in unknown.err

    shown = _ok(await cli("operator", "audit", "--tenant", str(tenant_id))).json()
    assert [r["action"] for r in shown][-2:] == ["tenants.suspend", "tenants.create"]
    assert {r["tenant_id"] for r in shown} == {str(tenant_id)}
    # The CLI names itself and the system user running it.
    assert {r[0] for r in await _audit(admin_conn, tenant_id=tenant_id)} == \
        {f"cli:{getpass.getuser()}"}
    assert [(r[0].partition(":")[0], r[1], r[3])
            for r in await _audit(admin_conn, tenant_id=tenant_id)] == [
        ("cli", "tenants.create", "ok"), ("cli", "tenants.suspend", "ok"),
        ("cli", "tenants.resume", "ok"), ("cli", "tenants.delete", "error"),
        ("cli", "tenants.delete", "ok"), ("cli", "tenants.suspend", "error")]
    # The tenant's own audit log had its rows too, gone with it.
    assert await super_conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant_id) == 0


async def _tenant_tables(conn: asyncpg.Connection) -> list[str]:
    """Every table holding tenant rows: a tenant_id column, under forced row-level security."""
    return [r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "AND a.attname = 'tenant_id' WHERE c.relnamespace = 'public'::regnamespace "
        "AND c.relkind = 'r' AND c.relforcerowsecurity ORDER BY 1")]


async def _counts(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    # Table names from the catalog; as the superuser, past every policy.
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t} WHERE tenant_id = $1", tenant_id)
            for t in await _tenant_tables(conn)}


async def test_delete_takes_every_row_of_the_tenant_and_none_of_another(
    make_tenant, admin_conn: asyncpg.Connection, super_conn: asyncpg.Connection,
    queries: Queries, database_urls: DatabaseUrls,
) -> None:
    doomed = await make_tenant(demo=True, name="Doomed")
    kept = await make_tenant(demo=True, name="Kept")
    async with admin_conn.transaction():
        await bindings.bind(admin_conn, queries, tenant_id=doomed.id,
                            issuer=f"https://{uuid.uuid4().hex}.example.com")
        # Rows of the tables no foreign key ties to the tenant: audit and idempotency records.
        await queries.set_tenant(admin_conn, tenant_id=str(doomed.id))
        await admin_conn.execute(
            "INSERT INTO audit_log (tenant_id, tool, outcome) VALUES ($1, 't', 'ok')", doomed.id)
        await admin_conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, "
            "expires_at) VALUES ($1, 't', 'k', '\\x00', 'completed', now())", doomed.id)
    before = await _counts(super_conn, doomed.id)
    assert before["work_items"] > 0 and before["comments"] > 0 and before["api_keys"] == 1
    assert before["audit_log"] >= 1 and before["idempotency_keys"] == 1
    assert before["oauth_bindings"] == 1 and before["tenants"] == 1
    kept_before = await _counts(super_conn, kept.id)

    with pytest.raises(AdminError, match="confirm with its exact name, 'Doomed'"):
        async with admin_conn.transaction():
            await tenants.delete_tenant(admin_conn, queries, CLI_OPERATOR, doomed.id,
                                        confirm=None)
    assert await _counts(super_conn, doomed.id) == before
    async with admin_conn.transaction():
        done = await tenants.delete_tenant(admin_conn, queries, CLI_OPERATOR, doomed.id,
                                           confirm="Doomed")
    assert done["deleted"]["tenants"] == 1 and done["deleted"]["work_items"] == \
        before["work_items"]
    assert await _counts(super_conn, doomed.id) == dict.fromkeys(before, 0)
    assert await _counts(super_conn, kept.id) == kept_before
    # The key of a deleted tenant is unknown at once.
    runtime = await asyncpg.connect(database_urls.runtime)
    try:
        async with runtime.transaction():
            await queries.set_tenant(runtime, tenant_id=str(doomed.id))
            assert await queries.get_api_key(runtime, key_id=doomed.key_id) is None
    finally:
        await runtime.close()


async def test_suspension_refuses_the_tenants_keys_and_resume_restores_them(
    client, make_tenant, admin_conn: asyncpg.Connection, queries: Queries,
) -> None:
    tenant, other = await make_tenant(), await make_tenant()
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    resp = await client.post("/execute", json=call, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    async with admin_conn.transaction():
        suspended = await tenants.suspend_tenant(admin_conn, queries, CLI_OPERATOR, tenant.id)
    assert suspended["suspended"] is True

    resp = await client.post("/execute", json=call, headers=tenant.headers)
    assert resp.status == 403
    assert (await resp.json())["error"] == {
        "code": "INVALID_API_KEY",
        "message": "this API key's tenant is suspended by the server's operator; its keys work "
                   "again once an operator resumes it"}
    # Only the holder of the right secret learns of the suspension.
    forged = tenant.key[:-4] + ("AAAA" if not tenant.key.endswith("AAAA") else "BBBB")
    resp = await client.post("/execute", json=call, headers={"Authorization": f"Bearer {forged}"})
    assert "suspended" not in (await resp.json())["error"]["message"]
    # Another tenant is untouched.
    assert (await client.post("/execute", json=call, headers=other.headers)).status == 200

    async with admin_conn.transaction():
        await tenants.resume_tenant(admin_conn, queries, CLI_OPERATOR, tenant.id)
    assert (await client.post("/execute", json=call, headers=tenant.headers)).status == 200

    # The tenant's own audit log says who suspended and resumed it.
    async with admin_conn.transaction():
        await queries.set_tenant(admin_conn, tenant_id=str(tenant.id))
        tools = [r["tool"] for r in await admin_conn.fetch(
            "SELECT tool, actor FROM audit_log WHERE tool LIKE 'admin:%' ORDER BY id")]
    assert tools == ["admin:tenants.suspend", "admin:tenants.resume"]


async def test_suspension_refuses_oauth_tokens_and_skips_the_background_sync(
    make_tenant, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection,
    queries: Queries,
) -> None:
    tenant = await make_tenant()
    issuer = f"https://{uuid.uuid4().hex}.example.com"
    async with admin_conn.transaction():
        await bindings.bind(admin_conn, queries, tenant_id=tenant.id, issuer=issuer)
        await queries.set_tenant(admin_conn, tenant_id=str(tenant.id))
        await admin_conn.execute(
            "INSERT INTO source_instances (tenant_id, kind, name, base_url) "
            "VALUES ($1, 'jira', 's', 'http://127.0.0.1:1/retired')", tenant.id)
    await init_connection(app_conn)

    async def resolution() -> uuid.UUID | str:
        return _resolution(issuer, await queries.oauth_tenant(app_conn, issuer=issuer,
                                                              claims={"sub": "u"}))

    async def scheduled() -> bool:
        return tenant.id in {r["tenant_id"] for r in await queries.source_schedule(app_conn)}

    assert await resolution() == tenant.id and await scheduled()
    async with admin_conn.transaction():
        await tenants.suspend_tenant(admin_conn, queries, CLI_OPERATOR, tenant.id)
    assert await resolution() == (
        "the tenant this token acts in is suspended by the server's operator; its tokens work "
        "again once an operator resumes it")
    assert not await scheduled()
    async with admin_conn.transaction():
        await tenants.resume_tenant(admin_conn, queries, CLI_OPERATOR, tenant.id)
    assert await resolution() == tenant.id and await scheduled()


@pytest.mark.parametrize("role", ["runtime", "explorer"])
async def test_only_the_owner_reaches_operators_their_sessions_and_audit(
    role: str, database_urls: DatabaseUrls, make_tenant,
) -> None:
    url = database_urls.runtime if role == "runtime" else database_urls.explorer
    assert url is not None
    conn = await asyncpg.connect(url)
    try:
        for table in OPERATOR_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO operator_audit (actor, action, outcome) "
                               "VALUES ('x', 'y', 'ok')")
        tenant = await make_tenant()
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT delete_tenant_rows($1)", tenant.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM tenant_usage(now() - interval '1 day', now())")
        if role == "runtime":
            # Nor may it suspend or resume, not even its own tenant.
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                   str(tenant.id))
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("UPDATE tenants SET suspended_at = NULL")
    finally:
        await conn.close()


async def test_usage_by_tenant_counts_calls_errors_and_percentiles(
    make_tenant, admin_conn: asyncpg.Connection, queries: Queries,
) -> None:
    busy, quiet = await make_tenant(name="Busy"), await make_tenant(name="Quiet")
    now = datetime.now(UTC)
    async with admin_conn.transaction():
        await queries.set_tenant(admin_conn, tenant_id=str(busy.id))
        for i in range(1, 21):
            await admin_conn.execute(
                "INSERT INTO audit_log (tenant_id, tool, outcome, duration_ms, at) "
                "VALUES ($1, 't', $2, $3, $4)", busy.id, "error" if i % 5 == 0 else "ok",
                float(i), now - timedelta(minutes=1))
        # Outside the window.
        await admin_conn.execute("INSERT INTO audit_log (tenant_id, tool, outcome, at) "
                                 "VALUES ($1, 't', 'ok', $2)", busy.id, now - timedelta(days=3))
    async with admin_conn.transaction():
        rows = await tenants.usage_by_tenant(admin_conn, queries, since=now - timedelta(hours=1),
                                             until=now + timedelta(minutes=1))
    by_id = {r["tenant_id"]: r for r in rows}
    assert by_id[busy.id]["calls"] == 20 and by_id[busy.id]["errors"] == 4
    assert by_id[busy.id]["p50_ms"] == pytest.approx(10.5)
    assert by_id[busy.id]["p95_ms"] == pytest.approx(19.05)
    assert by_id[quiet.id]["calls"] == 0 and by_id[quiet.id]["p95_ms"] is None
    with pytest.raises(AdminError, match="since must be before until"):
        await tenants.usage_by_tenant(admin_conn, queries, since=now, until=now)


async def test_operator_sessions_end_with_their_operator(
    admin_conn: asyncpg.Connection, queries: Queries,
) -> None:
    async with admin_conn.transaction():
        operator_id, secret = await operators.create_operator(
            admin_conn, queries, f"s-{uuid.uuid4().hex[:6]}")
        operator = await operators.verify_operator(admin_conn, queries, secret)
        assert operator is not None and operator.operator_id == operator_id
        cookie, csrf = await operators.open_session(admin_conn, queries, operator, ttl=60)
        found = await operators.find_session(admin_conn, queries, cookie, idle=60)
        assert found is not None and found.operator == operator and found.csrf_token == csrf
        # The table holds the cookie's hash, never the cookie.
        assert await admin_conn.fetchval(
            "SELECT count(*) FROM operator_sessions WHERE session_hash = $1",
            cookie.encode()) == 0
        assert await operators.find_session(admin_conn, queries, cookie + "x", idle=60) is None
        await operators.revoke_operator(admin_conn, queries, operator_id)
        assert await operators.find_session(admin_conn, queries, cookie, idle=60) is None


async def test_the_server_refuses_a_runtime_role_with_a_privilege_on_operators(
    super_conn: asyncpg.Connection, app_conn: asyncpg.Connection,
) -> None:
    await check_runtime_role(app_conn)  # the real one passes
    role = f"spiral_test_{uuid.uuid4().hex[:8]}"
    # All in a transaction rolled back: the shared test database is never altered.
    with pytest.raises(UnsafeRuntimeRole,
                       match=r"privileges on the operators' tables \(operator_audit\)"):
        async with super_conn.transaction():
            await super_conn.execute(f'CREATE ROLE "{role}"')
            await super_conn.execute(f'GRANT INSERT ON operator_audit TO "{role}"')
            await super_conn.execute(f'SET LOCAL ROLE "{role}"')
            await check_runtime_role(super_conn)
    assert not await super_conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role)


async def test_suspension_and_resumption_take_effect_within_the_cache_ttl(
    aiohttp_client, database_urls: DatabaseUrls, make_tenant,
    admin_conn: asyncpg.Connection, queries: Queries,
) -> None:
    ttl = 1.0
    settings = load_settings(environ={"DATABASE_URL": database_urls.runtime, "DB_POOL_MIN": "1",
                                      "AUTH_CACHE_TTL": str(ttl)})
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    tenant = await make_tenant()
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

    async def status() -> int:
        return (await client.post("/execute", json=call, headers=tenant.headers)).status

    for change, expected in ((tenants.suspend_tenant, 403), (tenants.resume_tenant, 200)):
        assert await status() == (403 if expected == 200 else 200)  # now cached
        started = time.monotonic()
        async with admin_conn.transaction():
            await change(admin_conn, queries, CLI_OPERATOR, tenant.id)
        while await status() != expected:
            assert time.monotonic() - started < ttl + 2.0, f"{change.__name__} not seen"
            await asyncio.sleep(0.05)
