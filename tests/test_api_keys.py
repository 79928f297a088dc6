"""API keys through /api/v1/keys: the lifecycle, the secret shown once, audit rows, and two
tenants that never see each other's keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from api_fixtures import ApiClient


async def _audit(admin_conn: asyncpg.Connection, tenant_id: uuid.UUID, tool: str) -> list:
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await admin_conn.fetch(
            "SELECT key_id, actor, arguments, before, after, outcome FROM audit_log "
            "WHERE tool = $1 ORDER BY id", tool)


async def test_a_key_is_created_used_read_and_revoked(api: ApiClient, tenant,
                                                      admin_conn: asyncpg.Connection) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    created = await api.post("/keys", tenant, json={
        "name": "ci bot", "scopes": ["read", "query"], "user": "ci@example.com",
        "expires_at": expires})
    assert created.status == 201, created.body
    key, secret = created.data["key"], created.data["secret"]
    assert created.headers["Location"] == f"/api/v1/keys/{key['key_id']}"
    assert key["name"] == "ci bot" and key["scopes"] == ["read", "query"]
    assert key["user"] == "ci@example.com" and key["state"] == "live"
    assert datetime.fromisoformat(key["expires_at"]) == datetime.fromisoformat(expires)

    # The new key works on MCP's door at once.
    async with api.client.post("/execute", headers={"Authorization": f"Bearer {secret}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list"}) as resp:
        assert resp.status == 200

    # Shown once: no list, read or audit row carries the secret again.
    listed = await api.get("/keys", tenant)
    read = await api.get(f"/keys/{key['key_id']}", tenant)
    assert read.data == key
    [audit] = await _audit(admin_conn, tenant.id, "admin:keys.create")
    assert audit["key_id"] == tenant.key_id and audit["outcome"] == "ok"
    assert audit["actor"] == "tester@example.com"
    for text in (listed.text, read.text, str(dict(audit))):
        assert secret not in text and secret[4:] not in text

    revoked = await api.delete(f"/keys/{key['key_id']}", tenant)
    assert revoked.status == 200 and revoked.data["state"] == "revoked"
    [audit] = await _audit(admin_conn, tenant.id, "admin:keys.revoke")
    assert orjson.loads(audit["before"])["state"] == "live"
    assert orjson.loads(audit["after"])["state"] == "revoked"
    # Refused at once in this process (AUTH_CACHE_TTL elsewhere).
    async with api.client.post("/execute", headers={"Authorization": f"Bearer {secret}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list"}) as resp:
        assert resp.status == 403
    again = await api.delete(f"/keys/{key['key_id']}", tenant)
    assert again.status == 409
    assert again.error["message"] == f"key {key['key_id']} is already revoked"


async def test_a_revoked_admin_key_is_refused_by_the_api(api: ApiClient, tenant) -> None:
    created = await api.post("/keys", tenant, json={"name": "second admin",
                                                    "scopes": ["admin"]})
    second = {"Authorization": f"Bearer {created.data['secret']}"}
    assert (await api.get("/keys", second)).status == 200
    await api.delete(f"/keys/{created.data['key']['key_id']}", tenant)
    resp = await api.get("/keys", second)
    assert resp.status == 403 and resp.error["code"] == "INVALID_API_KEY"


async def test_malformed_bodies_are_refused_naming_the_field(api: ApiClient, tenant) -> None:
    cases = [
        ({"scopes": ["read"]}, "invalid body for POST /api/v1/keys: /: 'name' is a required "
                               "property"),
        ({"name": "x", "scopes": ["root"]}, "invalid body for POST /api/v1/keys: /scopes/0: "
                                            "'root' is not one of ['read', 'write', 'query', "
                                            "'admin']"),
        ({"name": "x", "scopes": ["read"], "secret": "mine"},
         "invalid body for POST /api/v1/keys: /: Additional properties are not allowed "
         "('secret' was unexpected)"),
        ({"name": "x", "scopes": ["read"], "expires_at": "tomorrow"},
         "expires_at 'tomorrow' is not an ISO 8601 date and time, such as 2030-01-31T12:00:00Z"),
        ({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
         "expires_at '2001-01-01T00:00:00Z' is in the past; a new key must expire later"),
        ({"name": "x", "scopes": ["read"], "expires_at": "2099-01-01T00:00:00"},
         "expires_at '2099-01-01T00:00:00' needs a time zone, such as Z or +02:00"),
    ]
    for body, message in cases:
        resp = await api.post("/keys", tenant, json=body)
        assert resp.status == 400, body
        assert resp.error["code"] == "VALIDATION_ERROR" and resp.error["message"] == message
    resp = await api.post("/keys", tenant, data=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert resp.status == 400 and resp.error["message"].startswith("the body is not valid JSON")
    resp = await api.post("/keys", tenant, data=b"name=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 400 and resp.error["message"] == (
        "the body must be JSON (Content-Type: application/json), not "
        "application/x-www-form-urlencoded")


async def test_another_tenants_key_is_not_found(api: ApiClient, make_tenant) -> None:
    a = await make_tenant(name="tenant A")
    b = await make_tenant(name="tenant B")
    for method in ("GET", "DELETE"):
        resp = await api.call(method, f"/keys/{b.key_id}", a)
        assert resp.status == 404
        assert resp.error == {"code": "NOT_FOUND", "message": f"no key with id {b.key_id}",
                              "details": [], "retry_after": None}
    assert [k["key_id"] for k in (await api.get("/keys", a)).data["keys"]] == [str(a.key_id)]
    # B's key still works: A's DELETE did nothing.
    assert (await api.get(f"/keys/{b.key_id}", b)).data["state"] == "live"


async def test_a_malformed_key_id_is_not_found(api: ApiClient, tenant) -> None:
    resp = await api.get("/keys/not-a-uuid", tenant)
    assert resp.status == 404 and resp.error["message"] == "no key with id 'not-a-uuid'"
