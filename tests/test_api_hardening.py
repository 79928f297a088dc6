"""Hardening of the admin API's keys, refusals and charts: key pages by state, the live-key cap
and the last admin key held under concurrency, refused changes audited, whole-value checks,
compact charts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from api_fixtures import ApiClient
from test_api_sessions import sign_in

from spiral_mcp.api import keys as api_keys

ALL_SCOPES = ["read", "write", "query", "admin"]


async def _audit_rows(admin_conn, tenant_id: uuid.UUID, tool: str) -> list:
    async with admin_conn.transaction():  # forced row-level security binds the owner too
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return await admin_conn.fetch(
            "SELECT actor, key_id, outcome, error_code, arguments FROM audit_log "
            "WHERE tool = $1 ORDER BY at, id", tool)


# --- GET /keys: pages by state -----------------------------------------------------------


async def test_keys_are_listed_by_state_in_pages(api: ApiClient, tenant) -> None:
    made = [await api.post("/keys", tenant, json={"name": f"k{i}", "scopes": ["read"]})
            for i in range(5)]
    revoked = made[0].data["key"]["key_id"]
    assert (await api.delete(f"/keys/{revoked}", tenant)).status == 200
    live = await api.get("/keys", tenant)
    ids = [key["key_id"] for key in live.data["keys"]]
    assert revoked not in ids and str(tenant.key_id) in ids and len(ids) == 5
    # Newest first.
    assert ids[0] == made[-1].data["key"]["key_id"]
    assert live.data["next_cursor"] is None
    only_revoked = await api.get("/keys?state=revoked", tenant)
    assert [key["key_id"] for key in only_revoked.data["keys"]] == [revoked]
    assert (await api.get("/keys?state=expired", tenant)).data["keys"] == []
    # Pages of two: every key once, in order, across pages.
    seen, cursor = [], None
    while True:
        page = await api.get("/keys?state=all&limit=2" + (f"&cursor={cursor}" if cursor else ""),
                             tenant)
        assert page.status == 200 and len(page.data["keys"]) <= 2
        seen += [key["key_id"] for key in page.data["keys"]]
        cursor = page.data["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    # A cursor of one state is refused by another; a damaged one is named.
    first = await api.get("/keys?state=all&limit=2", tenant)
    other = await api.get(f"/keys?state=live&cursor={first.data['next_cursor']}", tenant)
    assert other.status == 400 and "other filters" in other.error["message"]
    damaged = await api.get("/keys?cursor=abc", tenant)
    assert damaged.status == 400 and "cursor is not valid" in damaged.error["message"]
    unknown = await api.get("/keys?state=old", tenant)
    assert unknown.status == 400


async def test_another_tenants_keys_are_in_no_page(api: ApiClient, tenant, make_tenant) -> None:
    other = await make_tenant()
    await api.post("/keys", other, json={"name": "theirs", "scopes": ["read"]})
    for state in ("live", "revoked", "expired", "all"):
        page = await api.get(f"/keys?state={state}", tenant)
        assert all(key["name"] != "theirs" for key in page.data["keys"])
        assert str(other.key_id) not in {key["key_id"] for key in page.data["keys"]}
    mine = await api.get("/keys?state=all", tenant)
    assert {key["key_id"] for key in mine.data["keys"]} == {str(tenant.key_id)}


# --- creation: the live-key cap under concurrency ----------------------------------------


async def test_the_live_key_cap_is_exact_under_concurrency(api: ApiClient, tenant,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(api_keys, "MAX_LIVE_KEYS", 4)  # the tenant's own key is the first
    answers = await asyncio.gather(*[
        api.post("/keys", tenant, json={"name": f"k{i}", "scopes": ["read"]}) for i in range(8)])
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [201] * 3 + [409] * 5
    assert len((await api.get("/keys", tenant)).data["keys"]) == 4


# --- the last admin key ------------------------------------------------------------------


async def test_the_last_admin_key_cannot_be_revoked(api: ApiClient, tenant, admin_conn) -> None:
    refused = await api.delete(f"/keys/{tenant.key_id}", tenant)
    assert refused.status == 409
    assert refused.error["message"] == ("this is the tenant's last admin key (no other lasts "
                                        "as long); create another "
                                        "admin key first")
    assert (await api.get(f"/keys/{tenant.key_id}", tenant)).data["state"] == "live"
    # A key without admin goes as before; with another admin key, the first may go too.
    reader = await api.post("/keys", tenant, json={"name": "reader", "scopes": ["read"]})
    assert (await api.delete(f"/keys/{reader.data['key']['key_id']}", tenant)).status == 200
    second = await api.post("/keys", tenant, json={"name": "admin 2", "scopes": ALL_SCOPES})
    second_headers = {"Authorization": f"Bearer {second.data['secret']}"}
    assert (await api.delete(f"/keys/{tenant.key_id}", tenant)).status == 200
    last = await api.delete(f"/keys/{second.data['key']['key_id']}", second_headers)
    assert last.status == 409
    rows = await _audit_rows(admin_conn, tenant.id, "admin:keys.revoke")
    assert [(row["outcome"], row["error_code"]) for row in rows] == [
        ("error", "CONFLICT"), ("ok", None), ("ok", None), ("error", "CONFLICT")]


async def test_two_admins_revoking_each_other_leave_one(api: ApiClient, tenant,
                                                        admin_conn) -> None:
    second = await api.post("/keys", tenant, json={"name": "admin 2", "scopes": ALL_SCOPES})
    second_headers = {"Authorization": f"Bearer {second.data['secret']}"}
    first, other = await asyncio.gather(
        api.delete(f"/keys/{second.data['key']['key_id']}", tenant),
        api.delete(f"/keys/{tenant.key_id}", second_headers))
    # One goes; the other is refused (409, or its own key just revoked under it).
    statuses = sorted([first.status, other.status])
    assert statuses[0] == 200 and statuses[1] in (401, 403, 409), (first.text, other.text)
    live_admins = await admin_conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL "
        "AND 'admin' = ANY (scopes)", tenant.id)
    assert live_admins == 1


async def test_the_console_says_why_the_last_admin_key_stays(api: ApiClient, tenant) -> None:
    """The keys page's Revoke button calls the API with the session; console.js shows the
    refusal's message in the list's error box."""
    _, header, csrf = await sign_in(api, tenant.key)
    refused = await api.delete(f"/keys/{tenant.key_id}", {**header, "X-CSRF-Token": csrf})
    assert refused.status == 409
    assert refused.error["message"].startswith("this is the tenant's last admin key")
    async with api.client.get("/admin/keys", headers=header) as resp:
        page = await resp.text()
    assert f'data-api="DELETE /api/v1/keys/{tenant.key_id}"' in page
    assert 'id="keys-list" data-refresh data-scope' in page and 'class="form-error"' in page


# --- refused changes are audited ---------------------------------------------------------


async def test_refused_changes_are_audited_without_secrets(api: ApiClient, tenant,
                                                           admin_conn) -> None:
    bad = await api.post("/keys", tenant, json={"name": "x", "scopes": ["root"]})
    assert bad.status == 400
    ghost = uuid.uuid4()
    assert (await api.delete(f"/keys/{ghost}", tenant)).status == 404
    token = "super-secret-token-value-123"
    refused = await api.post("/instances", tenant, json={
        "name": "bad", "kind": "jira", "token": token, "projects": {"ABC": "ABC"},
        "base_url": "ftp://nowhere"})
    assert refused.status >= 400  # whichever refusal: its code is audited
    created = await _audit_rows(admin_conn, tenant.id, "admin:keys.create")
    assert [(r["outcome"], r["error_code"]) for r in created] == [("error", "VALIDATION_ERROR")]
    assert created[0]["key_id"] == tenant.key_id and created[0]["actor"] == "tester@example.com"
    revoked = await _audit_rows(admin_conn, tenant.id, "admin:keys.revoke")
    assert [(r["outcome"], r["error_code"]) for r in revoked] == [("error", "NOT_FOUND")]
    assert str(ghost) in revoked[0]["arguments"]
    instances = await _audit_rows(admin_conn, tenant.id, "admin:instances.create")
    assert [(r["outcome"], r["error_code"]) for r in instances] == [("error",
                                                                     refused.error["code"])]
    assert token not in instances[0]["arguments"]


async def test_a_refusal_is_audited_in_the_callers_tenant_only(api: ApiClient, tenant,
                                                               make_tenant, admin_conn) -> None:
    other = await make_tenant()
    assert (await api.delete(f"/keys/{other.key_id}", tenant)).status == 404
    assert await _audit_rows(admin_conn, other.id, "admin:keys.revoke") == []
    assert len(await _audit_rows(admin_conn, tenant.id, "admin:keys.revoke")) == 1


# --- whole values ------------------------------------------------------------------------


async def test_a_project_key_with_a_trailing_newline_is_no_key(api: ApiClient, tenant) -> None:
    answer = await api.get("/projects/WEB%0A/flow", tenant)
    assert answer.status == 404
    assert answer.error["message"] == "no project 'WEB\\n'"


# --- compact charts ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/usage/charts/calls.png", "/projects/WEB/charts/cfd.png"])
async def test_charts_come_compact_for_phones(api: ApiClient, make_tenant, path) -> None:
    demo = await make_tenant(demo=True)
    sizes = {}
    for size in ("full", "compact"):
        async with api.client.get(f"/api/v1{path}?size={size}", headers=demo.headers) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            png = await resp.read()
        sizes[size] = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))
    assert sizes == {"full": (1280, 720), "compact": (640, 520)}
    wrong = await api.get(f"{path}?size=tiny", demo)
    assert wrong.status == 400


async def test_console_charts_offer_the_compact_size(api: ApiClient, make_tenant) -> None:
    demo = await make_tenant(demo=True)
    _, header, _ = await sign_in(api, demo.key)
    for page in ("/admin/usage", "/admin/projects/WEB"):
        async with api.client.get(page, headers=header) as resp:
            html = await resp.text()
        assert '<source media="(max-width: 640px)" srcset="' in html, page
        assert "size=compact" in html


async def test_the_console_lists_live_keys_and_links_the_others(api: ApiClient, tenant) -> None:
    gone = await api.post("/keys", tenant, json={"name": "gone-key", "scopes": ["read"]})
    await api.delete(f"/keys/{gone.data['key']['key_id']}", tenant)
    await api.post("/keys", tenant, json={"name": "kept-key", "scopes": ["read"]})
    _, header, _ = await sign_in(api, tenant.key)

    async def page(query: str) -> str:
        async with api.client.get(f"/admin/keys{query}", headers=header) as resp:
            assert resp.status == 200
            return await resp.text()

    live = await page("")
    assert "kept-key" in live and "gone-key" not in live
    assert 'href="/admin/keys?state=revoked"' in live and 'href="/admin/keys?state=all"' in live
    revoked = await page("?state=revoked")
    assert "gone-key" in revoked and "kept-key" not in revoked
    damaged = await page("?cursor=abc")
    assert "cursor is not valid" in damaged
