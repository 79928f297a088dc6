"""Idempotency keys expire: an expired key (or a call abandoned in progress past its lease) is
taken over by a new call, and the reaper removes expired keys — of this tenant only."""

from __future__ import annotations

import uuid

import pytest

from spiral_mcp.db import Database, create_pool
from spiral_mcp.handlers.idempotency import Claim, IdempotencyStore
from spiral_mcp.queries import Queries


@pytest.fixture
async def store(database_urls, queries: Queries):
    pool = await create_pool(database_urls.runtime, min_size=0, max_size=2, connect_timeout=5,
                             statement_timeout=10)
    yield IdempotencyStore(Database(pool, queries, acquire_timeout=5), ttl=3600)
    await pool.close()


async def _insert(admin_conn, tenant_id: uuid.UUID, key: str, *, state: str,
                  expires_in: str, created_ago: str = "0 seconds") -> None:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await admin_conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, response, "
            "created_at, expires_at) VALUES ($1, 'jira_create_issue', $2, '\\x00'::bytea, $3, "
            "'{}'::jsonb, now() - $4::text::interval, now() + $5::text::interval)",
            tenant_id, key, state, created_ago, expires_in)


async def _keys(admin_conn, tenant_id: uuid.UUID) -> set[str]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return {r["key"] for r in await admin_conn.fetch("SELECT key FROM idempotency_keys")}


async def test_an_expired_key_is_taken_over(store, make_tenant, admin_conn) -> None:
    tenant = await make_tenant()
    await _insert(admin_conn, tenant.id, "old", state="completed", expires_in="-1 minute")
    # Other arguments than the stored call, yet no IDEMPOTENCY_MISMATCH: the record has expired.
    claimed = await store.claim(tenant.id, "jira_create_issue", "old", {"summary": "new"})
    assert claimed == Claim("jira_create_issue", "old")


async def test_a_call_abandoned_in_progress_is_taken_over_after_its_lease(
    store, make_tenant, admin_conn
) -> None:
    tenant = await make_tenant()
    await _insert(admin_conn, tenant.id, "stuck", state="in_progress", expires_in="1 hour",
                  created_ago="20 minutes")
    claimed = await store.claim(tenant.id, "jira_create_issue", "stuck", {"summary": "x"})
    assert claimed == Claim("jira_create_issue", "stuck")


async def test_the_reaper_removes_expired_keys_of_its_tenants_only(
    store, make_tenant, admin_conn
) -> None:
    tenant = await make_tenant()
    other = await make_tenant()
    await store.claim(tenant.id, "jira_create_issue", "live", {"summary": "x"})
    await _insert(admin_conn, tenant.id, "expired", state="completed", expires_in="-1 second")
    await _insert(admin_conn, other.id, "expired", state="completed", expires_in="-1 second")
    assert await store.reap() >= 1
    assert await _keys(admin_conn, tenant.id) == {"live"}
    # The other tenant used no key through this store: its rows are untouched by this reap.
    assert await _keys(admin_conn, other.id) == {"expired"}
