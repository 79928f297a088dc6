"""Tasks of the caller (a sync or backfill started from the API or the console): poll one,
cancel one. The same store as MCP's tasks (task_store.py); a task is its creator's alone, as in
MCP: another key or user of the tenant, and any other tenant, finds nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..server.keys import TASK_STORE
from ..task_store import ORPHAN_CANCELLED, ORPHANED_ERROR, StoredTask
from .routing import ApiCall, ApiRoutes, not_found

__all__ = ["routes", "task_view"]

routes = ApiRoutes()

_FIELDS = ("task_id", "status", "status_message", "progress", "progress_total", "result",
           "error", "poll_interval_ms", "created_at", "updated_at", "expires_at")


def task_view(task: StoredTask) -> dict[str, Any]:
    """A task as the API shows it (what a resource module answers a 202 with, too)."""
    values = dataclasses.asdict(task)
    return {name: values[name] for name in _FIELDS}


@routes.operation("GET", "/tasks/{task_id}", summary="Poll a task", response="task")
async def get_task(call: ApiCall) -> dict[str, Any]:
    """The task's status, progress, and once it has ended its result or error; poll again after
    ``poll_interval_ms``."""
    task_id = call.path["task_id"]
    task = await call.request.config_dict[TASK_STORE].get(
        call.tenant_principal, task_id, orphan_error=ORPHANED_ERROR)
    if task is None:
        raise not_found("task", task_id)
    return task_view(task)


@routes.operation("DELETE", "/tasks/{task_id}", summary="Cancel a task", response="task")
async def cancel_task(call: ApiCall) -> dict[str, Any]:
    """Asks the task to stop: the process running it stops it within a third of TASK_LEASE
    (its status then reads cancelled). A task that has ended is left as it is."""
    task_id = call.path["task_id"]
    store = call.request.config_dict[TASK_STORE]
    principal = call.tenant_principal
    if await store.cancel(principal, task_id, orphan_message=ORPHAN_CANCELLED) is None:
        raise not_found("task", task_id)
    task = await store.get(principal, task_id, orphan_error=ORPHANED_ERROR)
    if task is None:  # expired in between
        raise not_found("task", task_id)
    return task_view(task)
