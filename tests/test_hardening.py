"""Inputs that once slipped through: a NUL byte, a forged key naming a real key id under another
tenant, odd notification ids, metric labels chosen by clients, template listings and scopes,
integral floats for integers, arguments nested deeper than anything recursive can take."""

from __future__ import annotations

import asyncio

import orjson
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
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "INVALID_API_KEY"
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


async def test_an_integral_float_is_an_integer_wherever_the_schema_says_integer(
    client, make_tenant
) -> None:
    """JSON Schema counts 5.0 as an integer: the handler gets 5, not a float it cannot slice
    with, compare as an id, or bind as an int."""
    tenant = await make_tenant(demo=True)
    found = await _call(client, tenant, "jira_search", {"jql": "project = WEB", "limit": 5.0})
    assert found["success"] and len(found["data"]["issues"]) == 5, found
    listed = await _call(client, tenant, "jira_list_transitions", {"issue_key": "WEB-2"})
    move = listed["data"]["transitions"][0]
    moved = await _call(client, tenant, "jira_transition_issue",
                        {"issue_key": "WEB-2", "transition_id": float(move["id"])})
    assert moved["success"] and moved["data"]["to_status"] == move["to_status"], moved
    report = await _call(client, tenant, "sql_get_project_metrics",
                         {"project_key": "WEB", "days": 30.0})
    assert report["success"], report


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


async def test_arguments_nested_too_deep_are_refused_by_path_and_audited(
    client, make_tenant, admin_conn
) -> None:
    """Refused before validation, audit or hashing recurse into them (Python's stack, orjson's
    255 levels), whatever the depth the JSON decoder let through; the call is still audited."""
    tenant = await make_tenant(demo=True)
    # Written out by hand: json.dumps itself recurses, and orjson stops at 255 levels.
    calls = [("jira_get_issue", '{"issue_key": "WEB-1", "x": ' + _nested(1000) + "}"),
             ("jira_get_issue", '{"issue_key": "WEB-1", "x": ' + _nested(300) + "}"),
             ("jira_add_comment", '{"issue_key": "WEB-1", "idempotency_key": "deep", '
                                  '"body": {"type": "doc", "content": ' + _nested(100) + "}}")]
    for name, arguments in calls:
        body = ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "' + name
                + '", "arguments": ' + arguments + "}}")
        resp = await client.post("/execute", data=body.encode(), headers={
            **tenant.headers, "Content-Type": "application/json"})
        envelope = (await resp.json())["result"]["structuredContent"]
        assert envelope["error"]["code"] == "VALIDATION_ERROR", envelope
        (detail,) = envelope["error"]["details"]
        assert detail["message"] == "nested deeper than 64 levels"
        assert detail["path"].startswith("/x/0/0/" if name == "jira_get_issue"
                                         else "/body/content/0/0/")
    for _ in range(50):
        tools = await _audit_tools(admin_conn, tenant)
        if len(tools) == 3:
            break
        await asyncio.sleep(0.1)
    assert tools == ["jira_get_issue", "jira_get_issue", "jira_add_comment"]
    # 64 levels are fine (the schema, not the depth, decides); 65 are not.
    envelope = await _call(client, tenant, "jira_search", {
        "jql": "key = WEB-1", "fields": [orjson.loads(_nested(62))]})
    assert "nested deeper" not in str(envelope)
    envelope = await _call(client, tenant, "jira_search", {
        "jql": "key = WEB-1", "fields": [orjson.loads(_nested(63))]})
    assert envelope["error"]["details"][0]["message"] == "nested deeper than 64 levels"

