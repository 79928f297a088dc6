"""Work of the admin API that outlives its request (a sync started from the console), run in this
process as a stored task: the same store and meanings as MCP's tasks (protocol/tasks.py), without
the protocol.

Its progress and outcome go to the task, which any process reads (GET /api/v1/tasks/{id}). While
it runs its heartbeat renews the task's lease (a task whose process died reads as failed) and
reads what the store says of it: a cancel asked through any process (DELETE /api/v1/tasks/{id}
marks the task) or an API key revoked since stops the work at once. Errors are stored as the
envelope's error object (code, message, details, retry_after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .auth import Principal
from .errors import ErrorCode, ServiceError
from .task_store import TaskStore

__all__ = ["KEY_GONE", "SHUT_DOWN", "TENANT_SUSPENDED", "Progress", "run_task_job"]

log = logging.getLogger(__name__)

# How often a job's heartbeat renews its lease and looks for a cancel: a cancel asked in another
# process takes at most this long to stop the work.
HEARTBEAT_SECONDS: Final = 1.0
SHUT_DOWN: Final = ServiceError(ErrorCode.INTERNAL_ERROR, "the server shut down before this "
                                "task finished; start it again")
KEY_GONE: Final = ServiceError(ErrorCode.PERMISSION_DENIED, "the API key that started this task "
                               "was revoked or has expired; the task was stopped")
TENANT_SUSPENDED: Final = ServiceError(ErrorCode.PERMISSION_DENIED, "this tenant was suspended "
                                       "by the server's operator; the task was stopped")
# Why the heartbeat stops the work, but a cancel: the error the task ends with.
_STOPPED: Final = {"credential": KEY_GONE, "suspended": TENANT_SUSPENDED}

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Work = Callable[[Progress], Awaitable[dict[str, Any]]]


async def run_task_job(store: TaskStore, principal: Principal, task_id: uuid.UUID,
                       work: Work) -> None:
    """Run ``work`` as the stored task ``task_id`` of ``principal`` (created by the caller), to
    its end: completed with what ``work`` returns, failed with a ServiceError's error object
    (anything else: INTERNAL_ERROR, logged), or cancelled. ``work`` is given the task's progress
    writer. Cancelling this coroutine from outside (shutdown) stores the task as failed."""
    tenant_id = principal.tenant_id
    job = asyncio.current_task()
    assert job is not None
    stopped: list[str] = []  # why the heartbeat stopped the work: "cancel" or a _STOPPED key

    async def progress(done: float, total: float | None, message: str | None) -> None:
        try:
            await store.progress(tenant_id, task_id, done=done, total=total, message=message)
        except ServiceError:
            log.warning("could not store a task's progress")  # the next one may pass

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                verdict = await store.renew(tenant_id, task_id)
            except ServiceError:
                continue  # the database is out of reach: missed beats are what the lease allows
            if verdict == "cancel" or verdict in _STOPPED:
                stopped.append(verdict)
                job.cancel()
                return
            if verdict is None:
                return  # ended elsewhere (read as orphaned by a slow beat): nothing to renew

    beat = asyncio.create_task(heartbeat(), name=f"task-heartbeat {task_id}")
    try:
        result = await work(progress)
    except asyncio.CancelledError:
        if not stopped:
            await _finish(store, tenant_id, task_id, "failed", error=SHUT_DOWN)
            raise
        job.uncancel()
        if stopped[0] == "cancel":
            await _finish(store, tenant_id, task_id, "cancelled",
                          message="cancelled at the caller's request")
        else:
            await _finish(store, tenant_id, task_id, "failed", error=_STOPPED[stopped[0]])
        return
    except ServiceError as exc:
        await _finish(store, tenant_id, task_id, "failed", error=exc)
        return
    except Exception:
        log.exception("task failed", extra={"task": str(task_id)})
        await _finish(store, tenant_id, task_id, "failed",
                      error=ServiceError(ErrorCode.INTERNAL_ERROR, "internal error"))
        return
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    await _finish(store, tenant_id, task_id, "completed", result=result)


async def _finish(store: TaskStore, tenant_id: uuid.UUID, task_id: uuid.UUID, status: str, *,
                  result: dict[str, Any] | None = None, error: ServiceError | None = None,
                  message: str | None = None) -> None:
    try:
        await store.finish(tenant_id, task_id, status=status, result=result,
                           error=None if error is None else error.to_dict(),
                           message=message if error is None else error.message)
    except ServiceError:
        # The database is out of reach: the lease lapses and the task reads as failed.
        log.warning("could not store a task's outcome", extra={"status": status})
