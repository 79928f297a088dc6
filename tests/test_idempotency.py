"""Idempotency keys expire: an expired key (or a call abandoned in progress past its lease) is
taken over by a new call, and the reaper removes expired keys — of this tenant only. A call in
progress keeps its key until its lease ends, whatever the TTL, and stores its result only while
the key is still its own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from spiral_mcp.db import Database, create_pool
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.handlers.context import ToolContext
from spiral_mcp.handlers.idempotency import Claim, IdempotencyStore, request_hash
from spiral_mcp.queries import Queries


@pytest.fixture
async def database(database_urls, queries: Queries):
    pool = await create_pool(database_urls.runtime, min_size=0, max_size=2, connect_timeout=5,
                             statement_timeout=10)
    yield Database(pool, queries, acquire_timeout=5)
    await pool.close()


@pytest.fixture
def store(database: Database) -> IdempotencyStore:
    return IdempotencyStore(database, ttl=3600)


async def _insert(admin_conn, tenant_id: uuid.UUID, key: str, *, state: str,
                  expires_in: str, created_ago: str = "0 seconds",
                  digest: bytes = b"\x00") -> None:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await admin_conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, tool, key, request_hash, state, response, "
            "created_at, expires_at) VALUES ($1, 'jira_create_issue', $2, $6, $3, "
            "'{}'::jsonb, now() - $4::text::interval, now() + $5::text::interval)",
            tenant_id, key, state, created_ago, expires_in, digest)


async def _keys(admin_conn, tenant_id: uuid.UUID) -> set[str]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return {r["key"] for r in await admin_conn.fetch("SELECT key FROM idempotency_keys")}


async def test_an_expired_key_is_taken_over(store, make_tenant, admin_conn) -> None:
    tenant = await make_tenant()
    await _insert(admin_conn, tenant.id, "old", state="completed", expires_in="-1 minute")
    # Other arguments than the stored call, yet no IDEMPOTENCY_MISMATCH: the record has expired.
    claimed = await store.claim(tenant.id, "jira_create_issue", "old", {"summary": "new"})
    assert isinstance(claimed, Claim) and (claimed.tool, claimed.key) == (
        "jira_create_issue", "old")


async def test_a_call_abandoned_in_progress_is_taken_over_after_its_lease(
    store, make_tenant, admin_conn
) -> None:
    tenant = await make_tenant()
    await _insert(admin_conn, tenant.id, "stuck", state="in_progress", expires_in="1 hour",
                  created_ago="20 minutes")
    claimed = await store.claim(tenant.id, "jira_create_issue", "stuck", {"summary": "x"})
    assert isinstance(claimed, Claim) and (claimed.tool, claimed.key) == (
        "jira_create_issue", "stuck")


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


async def test_a_call_in_progress_outlives_a_short_ttl(database, make_tenant, admin_conn) -> None:
    """TTL 60 s, lease 600 s: a call running for 5 minutes keeps its key against a retry and
    the reaper, and its result is then kept for the TTL from when it completed."""
    store = IdempotencyStore(database, ttl=60)
    tenant = await make_tenant()
    arguments = {"summary": "slow"}
    await _insert(admin_conn, tenant.id, "slow", state="in_progress", expires_in="-4 minutes",
                  created_ago="5 minutes", digest=request_hash(arguments))
    with pytest.raises(ServiceError) as refused:
        await store.claim(tenant.id, "jira_create_issue", "slow", arguments)
    assert refused.value.code is ErrorCode.IDEMPOTENCY_IN_PROGRESS
    await store.reap()
    assert await _keys(admin_conn, tenant.id) == {"slow"}
    async with database.tenant(tenant.id) as conn:
        claimed_at = await conn.fetchval("SELECT created_at FROM idempotency_keys")
        assert await database.queries.idempotency_complete(
            conn, tool="jira_create_issue", key="slow", claimed_at=claimed_at,
            response={"key": "WEB-1"})
    assert await store.claim(tenant.id, "jira_create_issue", "slow", arguments) == {
        "key": "WEB-1"}
    await store.reap()
    assert await _keys(admin_conn, tenant.id) == {"slow"}


async def test_a_write_whose_key_was_taken_over_rolls_back(
        client, make_tenant, admin_conn, monkeypatch) -> None:
    """The key's record is no longer this call's (its lease ran out and another call claimed
    it): storing the result fails, and the write goes with it."""
    tenant = await make_tenant(demo=True)
    original = ToolContext.commit_write

    async def after_a_takeover(self: ToolContext, conn: Any, **kwargs: Any) -> None:
        async with admin_conn.transaction():
            await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                     str(tenant.id))
            await admin_conn.execute("UPDATE idempotency_keys SET created_at = now()")
        await original(self, conn, **kwargs)

    monkeypatch.setattr(ToolContext, "commit_write", after_a_takeover)
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "jira_add_comment",
            "arguments": {"issue_key": "WEB-1", "body": "late", "idempotency_key": "late-1"}}})
    envelope = (await resp.json())["result"]["structuredContent"]
    assert envelope["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS", envelope
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        assert await admin_conn.fetchval(
            "SELECT count(*) FROM comments WHERE body = 'late'") == 0
        # The other call's claim is untouched by this one's failure.
        assert await admin_conn.fetchval(
            "SELECT state FROM idempotency_keys WHERE key = 'late-1'") == "in_progress"
