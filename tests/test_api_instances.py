"""The admin API's source instances and sync runs (issue 21), against the fake Jira: add with a
token that never comes back, test, sync as a task polled to its end, the history, failures in
the source's words, CONFLICT, cancel, and another tenant seeing nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from api_fixtures import ApiAnswer, ApiClient, make_api, task_ended

from spiral_mcp.api.auth import AdminPrincipal
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import AUTHENTICATOR, CONSOLE_SESSIONS
from spiral_mcp.sources.sync import lock_key
from tests.conftest import Tenant, make_settings
from tests.fake_jira import FakeJira
from tests.serving import app_clients

SECRET_KEY = "x" * 43 + "="
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "tok-" + "s3cret" * 6


@pytest.fixture
async def api(database_urls: DatabaseUrls) -> AsyncIterator[ApiClient]:
    """The admin API of a server that can open sources, answers checked against its document."""
    settings = make_settings(database_urls, SPIRAL_SECRET_KEY=SECRET_KEY, SYNC_INTERVAL="0")
    async with app_clients() as start:
        client = await start(create_app(settings, database_url=database_urls.runtime,
                                        explorer_url=database_urls.explorer))
        yield await make_api(client)


@pytest.fixture
async def jira(serve_fake) -> FakeJira:
    fake = FakeJira(token=TOKEN)
    for n in range(1, 26):
        fake.add_issue(f"ABC-{n}", summary=f"Issue {n}", status="To Do",
                       updated=T0 - timedelta(hours=30 - n))
    return await serve_fake(fake)


def _body(fake: FakeJira, **extra: Any) -> dict[str, Any]:
    return {"kind": "jira", "name": f"jira {uuid.uuid4().hex[:6]}", "base_url": fake.base_url,
            "email": fake.email, "token": fake.token, "projects": {"ABC": "API"}, **extra}


async def _add(api: ApiClient, tenant: Tenant, fake: FakeJira, **extra: Any) -> str:
    resp = await api.post("/instances", tenant, json=_body(fake, **extra))
    assert resp.status == 201, resp.body
    return resp.data["instance_id"]



def _gated(fake: FakeJira) -> tuple[web.Application, asyncio.Event]:
    """The fake's app with every search held until the event is set."""
    gate = asyncio.Event()

    @web.middleware
    async def hold(request: web.Request, handler: Any) -> web.StreamResponse:
        if "/search" in request.path:
            await gate.wait()
        return await handler(request)

    app = fake.app()
    app.middlewares.insert(0, hold)
    return app, gate


@contextlib.asynccontextmanager
async def _held_lock(conn: asyncpg.Connection, instance_id: str) -> AsyncIterator[None]:
    """The instance's sync lock, held as another process syncing it would hold it."""
    key = lock_key(uuid.UUID(instance_id))
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
    try:
        yield
    finally:
        await conn.fetchval("SELECT pg_advisory_unlock($1)", key)


async def test_add_list_read_change_and_remove_without_the_token(
        api: ApiClient, jira: FakeJira, make_tenant, admin_conn, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = await make_tenant()
    resp = await api.post("/instances", tenant, json=_body(jira, rate="150/min",
                                                           map=["status_categories:Triage=todo"]))
    assert resp.status == 201, resp.body
    created = resp.data
    instance_id = created["instance_id"]
    assert resp.headers["Location"] == f"/api/v1/instances/{instance_id}"
    assert (created["kind"], created["projects"], created["rate"]) == ("jira", {"ABC": "API"},
                                                                       2.5)
    assert created["mappings"] == {"status_categories": {"Triage": "todo"}}
    assert created["has_credentials"] is True and created["last_run"] is None
    listed = (await api.get("/instances", tenant)).data["instances"]
    assert [i["instance_id"] for i in listed] == [instance_id]
    assert (await api.get(f"/instances/{instance_id}", tenant)).data == created

    resp = await api.patch(f"/instances/{instance_id}", tenant, json={
        "name": "renamed", "rate": "default", "map": ["status_categories:Blocked=in_progress"],
        "unmap": ["status_categories:Triage"], "projects": {"XYZ": "XYZ"}})
    assert resp.status == 200, resp.body
    assert resp.data["name"] == "renamed" and resp.data["rate"] == 5.0  # Jira's default
    assert resp.data["mappings"] == {"status_categories": {"Blocked": "in_progress"}}
    assert resp.data["projects"] == {"ABC": "API", "XYZ": "XYZ"}
    resp = await api.patch(f"/instances/{instance_id}", tenant, json={"projects": {"ABC": "NEW"}})
    assert resp.status == 400 and "keeps its key" in resp.error["message"]

    resp = await api.delete(f"/instances/{instance_id}", tenant)
    assert resp.status == 200 and resp.data["name"] == "renamed"
    assert (await api.get(f"/instances/{instance_id}", tenant)).status == 404

    # Nowhere again: no answer, no audit row, no log line carries the token.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        audited = await admin_conn.fetch(
            "SELECT tool, outcome, arguments::text AS arguments, before::text AS before, "
            "after::text AS after FROM audit_log WHERE tool LIKE 'admin:instances.%' ORDER BY id")
    # The refused change (a project's new key) is audited too.
    assert [(r["tool"], r["outcome"]) for r in audited] == [
        ("admin:instances.create", "ok"), ("admin:instances.update", "ok"),
        ("admin:instances.update", "error"), ("admin:instances.delete", "ok")]
    assert '"token": "[redacted]"' in audited[0]["arguments"]
    assert all(TOKEN not in (r[c] or "") for r in audited for c in ("arguments", "before",
                                                                     "after"))
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(("body", "says"), [
    ({"projects": {"abc def": "API"}}, "is not a project reference for jira"),
    ({"projects": {"ABC": "lower"}}, "the local key like ABC"),
    ({"base_url": "http://jira.example.com"}, "must use https"),
    ({"rate": "1000"}, "more than the 100 any source allows"),
    ({"map": ["colours:Red=todo"]}, "map 'colours:Red=todo': jira has no mapping 'colours'"),
    ({"kind": "gitlab"}, "'gitlab' is not one of"),
    ({"token": ""}, "token"),
])
async def test_bad_input_is_one_specific_line(api: ApiClient, jira: FakeJira, make_tenant,
                                              body: dict[str, Any], says: str) -> None:
    tenant = await make_tenant()
    resp = await api.post("/instances", tenant, json={**_body(jira), **body})
    assert resp.status == 400 and resp.error["code"] == "VALIDATION_ERROR"
    assert says in resp.error["message"] and "\n" not in resp.error["message"]
    assert TOKEN not in resp.text


async def test_test_signs_in_and_a_refusal_is_the_sources_words(api: ApiClient, jira: FakeJira,
                                                                make_tenant) -> None:
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira)
    resp = await api.post(f"/instances/{instance_id}/test", tenant)
    assert resp.status == 200 and resp.data == {"instance_id": instance_id, "ok": True,
                                                "signed_in_as": jira.email}, resp.body
    jira.token = "rotated"
    resp = await api.post(f"/instances/{instance_id}/test", tenant)
    assert resp.status == 502 and resp.error["code"] == "UPSTREAM_ERROR"
    assert "refused the credentials" in resp.error["message"] and TOKEN not in resp.text


async def test_a_sync_is_a_task_polled_to_its_end_and_a_run_in_the_history(
        api: ApiClient, jira: FakeJira, make_tenant) -> None:
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira)
    resp = await api.post(f"/instances/{instance_id}/sync", tenant, json={"full": True})
    assert resp.status == 202, resp.body
    task_id, run_id = resp.data["task"]["task_id"], resp.data["run_id"]
    assert resp.headers["Location"] == f"/api/v1/tasks/{task_id}"
    task = await task_ended(api, tenant, task_id)
    assert task["status"] == "completed", task
    assert task["result"]["run_id"] == run_id
    assert (task["result"]["items"], task["result"]["changed"]) == (25, 25)
    assert task["progress"] == task["result"]["pages"] >= 1  # told per page
    [run] = (await api.get(f"/instances/{instance_id}/runs", tenant)).data["runs"]
    assert run["run_id"] == run_id and run["task_id"] == task_id
    assert (run["kind"], run["trigger"], run["status"]) == ("backfill", "api", "ok")
    assert (run["items"], run["changed"], run["error"]) == (25, 25, None)
    assert run["duration_ms"] >= 0
    listed = (await api.get("/runs", tenant)).data
    assert [r["run_id"] for r in listed["runs"]] == [run_id] and listed["next_cursor"] is None
    instance = (await api.get(f"/instances/{instance_id}", tenant)).data
    assert instance["last_run"]["run_id"] == run_id and instance["last_synced_at"]


async def test_a_failed_sync_is_recorded_with_the_sources_message(
        api: ApiClient, jira: FakeJira, make_tenant) -> None:
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira)
    jira.token = "rotated"  # the stored token is refused from now on
    resp = await api.post(f"/instances/{instance_id}/sync", tenant, json={})
    assert resp.status == 202, resp.body
    task = await task_ended(api, tenant, resp.data["task"]["task_id"])
    assert task["status"] == "failed" and task["error"]["code"] == "UPSTREAM_ERROR"
    assert "refused the credentials" in task["error"]["message"]
    [run] = (await api.get("/runs?status=failed", tenant)).data["runs"]
    assert run["status"] == "failed" and run["error"] == task["error"]["message"]
    assert (await api.get("/runs?status=ok", tenant)).data["runs"] == []


async def test_a_second_sync_while_one_runs_is_a_conflict(
        api: ApiClient, jira: FakeJira, make_tenant, app_conn) -> None:
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira)
    async with _held_lock(app_conn, instance_id):
        resp = await api.post(f"/instances/{instance_id}/sync", tenant, json={})
        assert resp.status == 409 and resp.error["code"] == "CONFLICT", resp.body
        assert "already running" in resp.error["message"]
        resp = await api.delete(f"/instances/{instance_id}", tenant)
        assert resp.status == 409 and "is running" in resp.error["message"]
    assert (await api.get("/runs", tenant)).data["runs"] == []  # nothing ran


async def test_a_running_sync_is_cancelled_through_its_task(
        api: ApiClient, serve_fake, make_tenant) -> None:
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary="One", status="To Do", updated=T0)
    app, gate = _gated(fake)
    await serve_fake(fake, app=app)
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, fake)
    resp = await api.post(f"/instances/{instance_id}/sync", tenant, json={})
    assert resp.status == 202, resp.body
    task_id = resp.data["task"]["task_id"]
    second = await api.post(f"/instances/{instance_id}/sync", tenant, json={})
    assert second.status == 409 and second.error["code"] == "CONFLICT"
    [running] = (await api.get("/runs?status=running", tenant)).data["runs"]
    assert running["run_id"] == resp.data["run_id"] and running["finished_at"] is None
    resp = await api.delete(f"/tasks/{task_id}", tenant)
    assert resp.status == 200, resp.body
    task = await task_ended(api, tenant, task_id)
    gate.set()
    assert task["status"] == "cancelled", task
    [run] = (await api.get(f"/instances/{instance_id}/runs", tenant)).data["runs"]
    assert run["status"] == "cancelled" and run["finished_at"] is not None


async def test_another_tenants_instance_and_runs_are_not_found(
        api: ApiClient, jira: FakeJira, make_tenant) -> None:
    owner, other = await make_tenant(), await make_tenant()
    instance_id = await _add(api, owner, jira)
    resp = await api.post(f"/instances/{instance_id}/sync", owner, json={})
    await task_ended(api, owner, resp.data["task"]["task_id"])
    calls = [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("POST", "/sync"),
             ("GET", "/runs")]
    for method, tail in calls:
        body = {"name": "mine"} if method == "PATCH" else {} if method == "POST" else None
        answer: ApiAnswer = await api.call(method, f"/instances/{instance_id}{tail}", other,
                                           json=body)
        assert answer.status == 404 and answer.error["code"] == "NOT_FOUND", (method, tail)
        assert answer.error["message"] == f"no source instance with id {instance_id}"
    assert (await api.get("/instances", other)).data["instances"] == []
    assert (await api.get("/runs", other)).data["runs"] == []
    assert (await api.get(f"/runs?instance_id={instance_id}", other)).data["runs"] == []
    # The owner's is untouched.
    assert (await api.get(f"/instances/{instance_id}", owner)).data["name"] != "mine"
    assert len((await api.get("/runs", owner)).data["runs"]) == 1
    # A malformed id is not found either, naming the thing.
    resp = await api.get("/instances/not-a-uuid", owner)
    assert resp.status == 404 and "instance" in resp.error["message"]


async def test_runs_are_pages_newest_first(api: ApiClient, jira: FakeJira, make_tenant) -> None:
    tenant = await make_tenant()
    instance_id = await _add(api, tenant, jira)
    for _ in range(3):
        resp = await api.post(f"/instances/{instance_id}/sync", tenant, json={})
        await task_ended(api, tenant, resp.data["task"]["task_id"])
    first = (await api.get("/runs?limit=2", tenant)).data
    assert len(first["runs"]) == 2 and first["next_cursor"]
    rest = (await api.get(f"/runs?limit=2&cursor={first['next_cursor']}", tenant)).data
    assert len(rest["runs"]) == 1 and rest["next_cursor"] is None
    runs = first["runs"] + rest["runs"]
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs),
                                                     reverse=True)
    resp = await api.get("/runs?cursor=garbage", tenant)
    assert resp.status == 400 and "cursor" in resp.error["message"]


async def test_a_sync_stops_when_the_key_that_started_it_is_revoked(
        api: ApiClient, serve_fake, make_tenant, admin_conn) -> None:
    fake = FakeJira(token=TOKEN)
    fake.add_issue("ABC-1", summary="One", status="To Do", updated=T0)
    app, gate = _gated(fake)
    await serve_fake(fake, app=app)
    tenant = await make_tenant()
    created = await api.post("/keys", tenant, json={"name": "syncer", "scopes": ["admin"]})
    syncer = {"Authorization": f"Bearer {created.data['secret']}"}
    instance_id = await _add(api, tenant, fake)
    resp = await api.post(f"/instances/{instance_id}/sync", syncer, json={})
    assert resp.status == 202, resp.body
    task_id = resp.data["task"]["task_id"]
    await api.delete(f"/keys/{created.data['key']['key_id']}", tenant)
    # Its task is its key's: the owner polls it by the run's history instead.
    deadline = time.monotonic() + 30
    while (run := (await api.get("/runs", tenant)).data["runs"][0])["status"] == "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    gate.set()
    assert run["status"] == "cancelled" and run["task_id"] == task_id
    # The run is recorded as the sync unwinds, the task's end a moment after (its own write).
    while True:
        async with admin_conn.transaction():
            await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                     str(tenant.id))
            task = await admin_conn.fetchrow("SELECT status, error FROM tasks WHERE task_id = $1",
                                             uuid.UUID(task_id))
            audited = await admin_conn.fetchval(
                "SELECT after::text FROM audit_log WHERE tool = 'admin:instances.sync'")
        if task["status"] != "working":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert task["status"] == "failed" and "was revoked or has expired" in task["error"]
    assert task_id in audited and resp.data["run_id"] in audited


@pytest.mark.parametrize("token", ["s3cret" * 2000, 12345678])
async def test_a_refused_token_is_not_echoed_in_the_error(api: ApiClient, jira: FakeJira,
                                                          make_tenant, token: Any) -> None:
    tenant = await make_tenant()
    resp = await api.post("/instances", tenant, json={**_body(jira), "token": token})
    assert resp.status == 400 and resp.error["code"] == "VALIDATION_ERROR"
    assert "/token" in resp.error["message"] and str(token) not in resp.text


async def test_the_console_session_adds_and_syncs_with_its_csrf_token(
        api: ApiClient, jira: FakeJira, make_tenant) -> None:
    """What the console does: the cookie and the session's CSRF token on every change; the
    cookie alone changes nothing."""
    tenant = await make_tenant()
    app = api.client.server.app
    principal = await app[AUTHENTICATOR].authenticate(tenant.key)
    cookie, csrf = await app[CONSOLE_SESSIONS].create(AdminPrincipal.tenant_admin(principal))
    session = {"Cookie": f"spiral_console={cookie}"}
    refused = await api.post("/instances", session, json=_body(jira))
    assert refused.status == 403 and "CSRF" in refused.error["message"]
    changing = {**session, "X-CSRF-Token": csrf}
    created = await api.post("/instances", changing, json=_body(jira))
    assert created.status == 201, created.body
    instance_id = created.data["instance_id"]
    refused = await api.post(f"/instances/{instance_id}/sync", session, json={})
    assert refused.status == 403
    resp = await api.post(f"/instances/{instance_id}/sync", changing, json={})
    assert resp.status == 202, resp.body
    task = await task_ended(api, session, resp.data["task"]["task_id"])
    assert task["status"] == "completed" and task["result"]["items"] == 25
    [run] = (await api.get(f"/instances/{instance_id}/runs", session)).data["runs"]
    assert (run["status"], run["trigger"]) == ("ok", "api")
