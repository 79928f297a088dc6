"""Tasks through /api/v1/tasks: polled and cancelled by their creator only."""

from __future__ import annotations

import uuid

from api_fixtures import ApiClient

from spiral_mcp.server.keys import AUTHENTICATOR, TASK_STORE


async def _task(api: ApiClient, who) -> uuid.UUID:
    """A working task of ``who``'s key, as a sync started from the API makes one."""
    app = api.client.server.app
    principal = await app[AUTHENTICATOR].authenticate(who.key)
    task = await app[TASK_STORE].create(principal, tool="admin:sync")
    assert task is not None
    await app[TASK_STORE].progress(who.id, task.task_id, done=3, total=10, message="page 3")
    return task.task_id


async def test_a_task_is_polled_cancelled_and_read_once_ended(api: ApiClient, tenant) -> None:
    task_id = await _task(api, tenant)
    polled = await api.get(f"/tasks/{task_id}", tenant)
    assert polled.status == 200
    assert polled.data["status"] == "working" and polled.data["progress"] == 3
    assert polled.data["progress_total"] == 10 and polled.data["status_message"] == "page 3"
    assert polled.data["result"] is None and polled.data["poll_interval_ms"] > 0

    # Asked to stop: the process running it sees the request at its next heartbeat.
    cancelled = await api.delete(f"/tasks/{task_id}", tenant)
    assert cancelled.status == 200 and cancelled.data["task_id"] == str(task_id)
    store = api.client.server.app[TASK_STORE]
    assert await store.renew(tenant.id, task_id) == "cancel"
    await store.finish(tenant.id, task_id, status="cancelled", result=None, error=None,
                       message="cancelled by the admin")
    ended = await api.get(f"/tasks/{task_id}", tenant)
    assert ended.data["status"] == "cancelled"


async def test_another_key_or_tenant_finds_no_task(api: ApiClient, make_tenant) -> None:
    a = await make_tenant(name="tenant A")
    b = await make_tenant(name="tenant B")
    task_id = await _task(api, a)
    other_key = await api.post("/keys", a, json={"name": "other admin", "scopes": ["admin"]})
    same_tenant = {"Authorization": f"Bearer {other_key.data['secret']}"}
    for who in (b, same_tenant):
        for method in ("GET", "DELETE"):
            resp = await api.call(method, f"/tasks/{task_id}", who)
            assert resp.status == 404
            assert resp.error["message"] == f"no task with id {task_id}"
    assert (await api.get(f"/tasks/{task_id}", a)).data["status"] == "working"
    resp = await api.get("/tasks/42", a)
    assert resp.status == 404 and resp.error["message"] == "no task with id '42'"
