"""Source instances of the caller's tenant: list, add (the token in the body, never echoed,
logged or audited), read, change, remove, test the connection, and sync or backfill as a task.

A sync runs in this process as a stored task (task_jobs.py) on a connection of its own, through
the same path as every other sync (sources/runs.py: the instance's lock and its history); the
202 comes once the run has begun, so a sync already running is a 409 here and not a task that
fails later. Its progress is the task's, per page; DELETE /api/v1/tasks/{task_id} cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from ..admin import instances
from ..errors import ErrorCode, ServiceError
from ..handlers.sources import sync_now, unusable_source, upstream_error
from ..server.keys import BACKGROUND, DISPATCHER, SOURCES, TASK_STORE
from ..sources.access import SourceAccess
from ..sources.base import SourceAdminError, SourceError
from ..sources.secrets import CredentialError
from ..sources.sync import lock_key
from ..task_jobs import Progress, run_task_job
from .routing import ApiCall, ApiRoutes
from .tasks import task_view

__all__ = ["routes"]

routes = ApiRoutes()

# A connection test gives up sooner than a sync: a person is waiting for it.
_TEST_OPTIONS = {"retries": 1, "timeout": 15.0}


def _access(call: ApiCall) -> SourceAccess:
    return call.request.config_dict[SOURCES]


def _box(call: ApiCall):
    try:
        return _access(call).secret_box()
    except CredentialError as exc:
        raise unusable_source(exc) from None


def _tenant_id(call: ApiCall) -> uuid.UUID:
    tenant_id = call.admin.tenant_id
    assert tenant_id is not None  # a tenant admin's route
    return tenant_id


def _rate(raw: str | float | None) -> str | None:
    # The CLI's --rate reads text (2.5, 150/min, 5000/h); a number is requests a second.
    return None if raw is None else str(raw)


@routes.operation("GET", "/instances", summary="List the tenant's source instances",
                  response="instance_list")
async def list_instances(call: ApiCall) -> dict[str, Any]:
    """Every source instance (Jira, GitHub, Asana) of the tenant with its mappings, rate and
    last run; never its credentials."""
    async with call.tenant(readonly=True) as conn:
        return {"instances": await instances.list_instances(conn, call.queries)}


@routes.operation("POST", "/instances", summary="Add a source instance", body="instance_create",
                  response="instance", status=201,
                  audit="instances.create")
async def create_instance(call: ApiCall) -> dict[str, Any]:
    """Registers a source with its token (sealed with the server's key; never shown, logged or
    audited again). Checked as ``spiral-mcp source add`` checks it."""
    body = call.body
    box = _box(call)
    async with call.tenant(readonly=False) as conn:
        created = await instances.create_instance(
            conn, call.queries, box, tenant_id=_tenant_id(call), kind=body["kind"],
            name=body["name"], base_url=body.get("base_url"), token=body["token"],
            email=body.get("email"), projects=body["projects"],
            rate=_rate(body.get("rate")), mappings=body.get("map", []),
            networks=_access(call).networks)
        await call.audit(conn, "instances.create", arguments=body, after=created)
    call.headers["Location"] = f"/api/v1/instances/{created['instance_id']}"
    return created


@routes.operation("GET", "/instances/{instance_id}", summary="Read a source instance",
                  response="instance")
async def get_instance(call: ApiCall) -> dict[str, Any]:
    async with call.tenant(readonly=True) as conn:
        return await instances.get_instance(conn, call.queries, call.path["instance_id"])


@routes.operation("PATCH", "/instances/{instance_id}", summary="Change a source instance",
                  body="instance_update", response="instance",
                  audit="instances.update")
async def update_instance(call: ApiCall) -> dict[str, Any]:
    """Rename it, set its request rate, set (``map``) or remove (``unmap``) mapping overrides,
    or map further source projects; all or nothing. Stored items keep their old mapping until
    the source changes them or a backfill (``{"full": true}`` sync) re-applies it."""
    body = call.body
    instance_id = call.path["instance_id"]
    async with call.tenant(readonly=False) as conn:
        before = await instances.get_instance(conn, call.queries, instance_id)
        after = await instances.update_instance(
            conn, call.queries, instance_id, tenant_id=_tenant_id(call), name=body.get("name"),
            rate=_rate(body.get("rate")), mapped=body.get("map", []),
            unmapped=body.get("unmap", []), projects=body.get("projects"))
        await call.audit(conn, "instances.update",
                         arguments={"instance_id": instance_id, **body}, before=before,
                         after=after)
    return after


@routes.operation("DELETE", "/instances/{instance_id}", summary="Remove a source instance",
                  response="instance", audit="instances.delete")
async def delete_instance(call: ApiCall) -> dict[str, Any]:
    """Removes the instance and its sync history; its projects and items stay, as local data.
    While a sync of it runs: 409 CONFLICT."""
    instance_id = call.path["instance_id"]
    async with call.tenant(readonly=False) as conn:
        try:
            gone = await instances.delete_instance(conn, call.queries, instance_id)
        except instances.InstanceBusy as exc:
            raise ServiceError(ErrorCode.CONFLICT, str(exc), retry_after=5.0) from None
        await call.audit(conn, "instances.delete", arguments={"instance_id": instance_id},
                         before=gone)
    return gone


@routes.operation("POST", "/instances/{instance_id}/test", summary="Test a source's connection",
                  response="instance_test")
async def test_instance(call: ApiCall) -> dict[str, Any]:
    """Signs in to the source with the stored credentials: whom it knows us as, or 502
    UPSTREAM_ERROR with the source's own words."""
    instance_id = call.path["instance_id"]
    async with call.tenant(readonly=True) as conn:
        await instances.get_instance(conn, call.queries, instance_id)  # NOT_FOUND first
        row = await call.queries.source_get(conn, instance_id=instance_id)
    try:
        adapter = _access(call).adapter(row, **_TEST_OPTIONS)
    except (CredentialError, SourceAdminError) as exc:
        raise unusable_source(exc) from None
    try:
        # Outside the transaction: no pooled connection waits on the source.
        who = await adapter.check()
    except SourceError as exc:
        raise upstream_error(exc) from None
    finally:
        await adapter.close()
    return {"instance_id": instance_id, "ok": True, "signed_in_as": who}


@routes.operation("POST", "/instances/{instance_id}/sync", summary="Sync or backfill a source",
                  body="instance_sync", response="sync_accepted", status=202,
                  audit="instances.sync")
async def sync_instance(call: ApiCall) -> dict[str, Any]:
    """Starts a sync (``{"full": true}``: a backfill, which also re-applies the mappings) as a
    task: 202 with the task to poll (GET /api/v1/tasks/{task_id}: progress per page, then the
    counts) and the run's id in the history. A sync already running: 409 CONFLICT."""
    instance_id = call.path["instance_id"]
    full = bool(call.body.get("full", False))
    admin = call.admin
    assert admin.principal is not None  # a tenant admin's route
    async with call.tenant(readonly=True) as conn:
        await instances.get_instance(conn, call.queries, instance_id)  # NOT_FOUND first
        # One already running is CONFLICT, said before the tenant's share of syncs is counted
        # (a race past this check meets the sync's own lock, CONFLICT too).
        if not await call.queries.source_try_xact_lock(conn, lock_key=lock_key(instance_id)):
            raise ServiceError(ErrorCode.CONFLICT, f"a sync of source {instance_id} is already "
                               "running; wait for it to finish", retry_after=5.0)
    _box(call)  # no task for a sync that cannot open credentials
    with contextlib.ExitStack() as refused:
        # The tenant's share of syncs, MCP's sources_sync and these together (each holds a
        # connection of its own for as long as its source takes): RATE_LIMITED at once past it.
        refused.enter_context(call.request.config_dict[DISPATCHER].registry.take_share(
            "sync", admin.principal))
        store = call.request.config_dict[TASK_STORE]
        task = await store.create(admin.principal, tool="admin:instances.sync")
        if task is None:
            raise ServiceError(ErrorCode.RATE_LIMITED,
                               f"this key keeps {store.max_per_key} tasks already; wait for "
                               "some to expire (TASK_TTL after they end)", retry_after=60.0)
        share = refused.pop_all()  # the job holds the place from here to its end
    started: asyncio.Future[uuid.UUID] = asyncio.get_running_loop().create_future()

    def begun(run_id: uuid.UUID) -> None:
        if not started.done():
            started.set_result(run_id)

    async def work(progress: Progress) -> dict[str, Any]:
        try:
            counts = await sync_now(
                call.database, _access(call), tenant_id=_tenant_id(call),
                instance_id=instance_id, full=full, trigger="api", progress=progress,
                task_id=task.task_id, on_start=begun)
        except ServiceError as exc:
            if not started.done():
                started.set_exception(exc)  # the run never began: the request answers it
            raise
        return {**counts, "run_id": str(started.result())}

    async def in_share() -> None:
        with share:
            await run_task_job(store, admin.principal, task.task_id, work)

    job = call.request.config_dict[BACKGROUND].spawn(in_share())
    await asyncio.wait((job, started), return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        raise ServiceError(ErrorCode.INTERNAL_ERROR, f"the sync stopped before it began; its "
                           f"task {task.task_id} says why")
    run_id = started.result()  # the run's failure to begin (409, 404, 502) is raised here
    async with call.tenant(readonly=False) as conn:
        await call.audit(conn, "instances.sync",
                         arguments={"instance_id": instance_id, "full": full},
                         after={"task_id": task.task_id, "run_id": run_id})
    call.headers["Location"] = f"/api/v1/tasks/{task.task_id}"
    return {"task": task_view(task), "run_id": run_id}
