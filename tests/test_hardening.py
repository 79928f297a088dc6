"""Inputs that once slipped through: a NUL byte, a forged key naming a real key id under another
tenant, odd notification ids, metric labels chosen by clients, template listings and scopes."""

from __future__ import annotations

import asyncio

from conftest import make_settings

from spiral_mcp.auth import parse_key
from spiral_mcp.server.app import create_app


async def _call(client, tenant, name: str, arguments: dict) -> dict:
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert resp.status == 200
    return (await resp.json())["result"]["structuredContent"]


async def _audit_tools(admin_conn, tenant) -> list[str]:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        return [r["tool"] for r in await admin_conn.fetch("SELECT tool FROM audit_log ORDER BY id")]


async def test_a_nul_byte_is_refused_cleanly_and_the_audit_writer_lives_on(
    client, make_tenant, admin_conn
) -> None:
    tenant = await make_tenant(demo=True)
    envelope = await _call(client, tenant, "jira_create_issue",
                           {"project_key": "WEB", "summary": "bad\u0000summary"})
    assert envelope["error"]["code"] == "VALIDATION_ERROR"
    envelope = await _call(client, tenant, "jira_search", {"jql": 'text ~ "a\u0000b"'})
    assert envelope["success"] is False
    # Later calls are still audited: the writer survived the NUL in the arguments above.
    assert (await _call(client, tenant, "jira_get_issue", {"issue_key": "WEB-1"}))["success"]
    for _ in range(50):
        tools = await _audit_tools(admin_conn, tenant)
        if "jira_get_issue" in tools:
            break
        await asyncio.sleep(0.1)
    assert "jira_get_issue" in tools and "jira_search" in tools
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        assert await admin_conn.fetchval(
            "SELECT count(*) FROM work_items WHERE title LIKE 'bad%'") == 0


async def test_a_forged_key_cannot_lock_out_another_tenants_real_key(
    aiohttp_client, database_urls, make_tenant
) -> None:
    victim = await make_tenant(demo=True)
    attacker = await make_tenant()
    settings = make_settings(database_urls, AUTH_CACHE_TTL="60")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime))
    _, victim_key_id = parse_key(victim.key)
    forged = f"spk_{attacker.id.hex}{victim_key_id.hex}{victim.key[-43:]}"
    resp = await client.get("/tools", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    # The lookup under the wrong tenant found nothing; that must not answer for the real key.
    resp = await client.get("/tools", headers=victim.headers)
    assert resp.status == 200


async def test_cancelled_with_an_object_id_is_ignored(client, make_tenant) -> None:
    tenant = await make_tenant()
    headers = {**tenant.headers, "Accept": "application/json, text/event-stream"}
    init = await client.post("/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}})
    session = {**headers, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    resp = await client.post("/mcp", headers=session, json={
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": {"not": "an id"}}})
    assert resp.status == 202
    resp = await client.post("/mcp", headers=session,
                             json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert (await resp.json())["result"] == {}


async def test_unknown_method_names_share_one_metric_label(client, make_tenant) -> None:
    tenant = await make_tenant()
    for i in range(3):
        await client.post("/execute", headers=tenant.headers,
                          json={"jsonrpc": "2.0", "id": i, "method": f"made/up/{i}"})
    metrics = await (await client.get("/metrics")).text()
    assert "made/up" not in metrics
    assert 'mcp_requests_total{method="other",transport="execute"} 3.0' in metrics


async def test_templates_listing_follows_the_keys_scopes(client, make_tenant) -> None:
    reader = await make_tenant(scopes=("read",))
    querier = await make_tenant(scopes=("query",))
    listed = (await (await client.get("/templates", headers=reader.headers)).json())["templates"]
    assert len(listed) == 6
    listed = (await (await client.get("/templates", headers=querier.headers)).json())["templates"]
    assert listed == []
