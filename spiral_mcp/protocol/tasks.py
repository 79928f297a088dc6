"""The io.modelcontextprotocol/tasks extension (MCP 2026-07-28): tool calls that answer with a
task handle, and tasks/get, tasks/update and tasks/cancel.

A client opts in per request, declaring the extension in the request's client capabilities; a
tool that declares task support (``Tool.task``) then becomes a task where its handler calls
``ctx.become_task()``: the task is stored (``task_store``) before the client gets its handle, and
the rest of the call runs on in this process. Its progress, its questions to the client
(``ctx.ask``: the task waits in input_required until tasks/update brings the answers) and its
outcome go to the stored task, where tasks/get reads them from any process.

While it runs, this process renews the task's lease; a task whose lease lapses (its process died)
reads as failed. The renewal also stops (as failed) a task whose API key has been revoked or has
expired since it started: a task never goes on with rights its key no longer gives. An OAuth
user's task is the user's, as the session is, and outlives the short-lived token it was started
with. tasks/cancel, answered by whichever process gets it, stops the call at once when it runs
here, and otherwise marks the task, which its own process finds at its next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..auth import Principal
from ..errors import ErrorCode, ServiceError
from ..handlers.context import CLIENT_REQUESTS, ToolContext, require_askable
from ..task_store import (
    ACTIVE,
    ORPHAN_CANCELLED,
    ORPHANED_ERROR,
    StoredTask,
    TaskStore,
    task_id_from,
)
from .exchange import Exchange
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    RpcError,
)
from .versions import CLIENT_CAPABILITIES_META, MODERN_VERSIONS

__all__ = ["TASKS_EXTENSION", "TaskRunner", "client_capabilities"]

log = logging.getLogger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
# What a task whose process died reads as: it failed, with no result to give.
ORPHANED = RpcError(ORPHANED_ERROR["code"], ORPHANED_ERROR["message"])
SHUT_DOWN = RpcError(INTERNAL_ERROR, "the server shut down before this task finished; run the "
                                     "call again")
# What a task reads as once the API key that created it no longer authenticates: stopped, as
# every request and stream of that key is.
KEY_GONE = RpcError(INTERNAL_ERROR, "the API key that created this task was revoked or has "
                                    "expired; the task was stopped")
TOKEN_UNBOUND = RpcError(INTERNAL_ERROR, "the user who created this task no longer acts in this "
                                         "tenant (their issuer or claim value was unbound); the "
                                         "task was stopped")
TENANT_SUSPENDED = RpcError(INTERNAL_ERROR, "this tenant was suspended by the server's operator; "
                                            "the task was stopped")
# How often a question of a task looks for an answer that another process took in.
ANSWER_POLL_SECONDS = 1.0
# How often expired tasks of every tenant are deleted.
SWEEP_SECONDS = 60.0

Call = Callable[[ToolContext], Awaitable[dict[str, Any]]]
Method = Callable[[dict[str, Any], Exchange], Awaitable[dict[str, Any]]]


def client_capabilities(params: dict[str, Any], protocol_version: str) -> dict[str, Any]:
    """The client capabilities a stateless-era request declares in its ``_meta`` ({} in the
    handshake eras, where the tasks extension does not exist)."""
    if protocol_version not in MODERN_VERSIONS:
        return {}
    meta = params.get("_meta")
    capabilities = meta.get(CLIENT_CAPABILITIES_META) if isinstance(meta, dict) else None
    return capabilities if isinstance(capabilities, dict) else {}


def _declares_tasks(capabilities: dict[str, Any]) -> bool:
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _missing_capability(what: str) -> RpcError:
    return RpcError(MISSING_REQUIRED_CLIENT_CAPABILITY,
                    f"{what} needs the client capability {TASKS_EXTENSION}: declare it under "
                    f"extensions in the request's client capabilities",
                    {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _task(task: StoredTask) -> dict[str, Any]:
    """The Task every answer about a task carries."""
    wire: dict[str, Any] = {
        "taskId": str(task.task_id),
        "status": task.status,
        "createdAt": _timestamp(task.created_at),
        "lastUpdatedAt": _timestamp(task.updated_at),
        "ttlMs": int((task.expires_at - task.created_at).total_seconds() * 1000),
        "pollIntervalMs": task.poll_interval_ms,
    }
    if task.status_message is not None:
        wire["statusMessage"] = task.status_message
    return wire


def detailed(task: StoredTask) -> dict[str, Any]:
    """tasks/get's answer: the Task with what its status brings (questions, result, error)."""
    wire = _task(task)
    if task.status == "input_required":
        wire["inputRequests"] = task.input_requests
    elif task.status == "completed":
        wire["result"] = task.result
    elif task.status == "failed":
        wire["error"] = task.error
    if task.progress is not None:
        wire["_meta"] = {"spiral-mcp/progress": {"progress": task.progress,
                                                 "total": task.progress_total}}
    return wire


@dataclasses.dataclass(slots=True, eq=False)
class _Running:
    """A task this process runs."""

    principal: Principal
    capabilities: dict[str, Any]
    task_id: uuid.UUID | None = None
    job: asyncio.Task[Any] | None = None
    cancel_requested: bool = False
    # Why the credential that created it no longer authenticates, once it does not.
    credential_gone: RpcError | None = None
    halted: bool = False
    questions: int = 0
    # Set (and replaced) when answers arrive here: every question waiting wakes and looks.
    answered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def halt(self) -> None:
        """Cancel the call, once: a second cancel would cut the storing of its end."""
        if self.job is not None and not self.halted and not self.job.done():
            self.halted = True
            self.job.cancel()

    def wake(self) -> None:
        self.answered.set()
        self.answered = asyncio.Event()


class TaskRunner:
    """The tasks this process runs, their heartbeat, and the tasks/* methods."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._running: dict[uuid.UUID, _Running] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None
        self._closing = False

    def methods(self) -> dict[str, Method]:
        return {"tasks/get": self._get, "tasks/update": self._update,
                "tasks/cancel": self._cancel}

    # -- running tool calls as tasks ---------------------------------------------------------

    async def call_tool(self, call: Call, ctx: ToolContext, *, support: str | None,
                        capabilities: dict[str, Any]) -> dict[str, Any]:
        """Run a tool call: a plain one, or one that may become a task (``support``: the tool's
        declaration, "optional" or "required"; ``capabilities``: the client's, as declared on
        this request). The CallToolResult, or the CreateTaskResult once it became a task."""
        if support is None:
            return await call(ctx)
        if not _declares_tasks(capabilities):
            if support == "required":
                raise _missing_capability(f"the tool {ctx.tool}")
            return await call(ctx)
        running = _Running(ctx.principal, capabilities)
        created: asyncio.Future[StoredTask] = asyncio.get_running_loop().create_future()

        async def become_task() -> bool:
            return await self._become(ctx, running, created)

        ctx.become_task = become_task
        job = asyncio.ensure_future(self._drive(call, ctx, running))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        try:
            await asyncio.wait((job, created), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if not created.done():
                job.cancel()  # the request was cancelled before it became a task
            raise
        if created.done():
            return {"resultType": "task", **_task(created.result())}
        created.cancel()
        return job.result()

    async def _become(self, ctx: ToolContext, running: _Running,
                      created: asyncio.Future[StoredTask]) -> bool:
        if running.task_id is not None:
            return True
        if self._closing:
            return False  # no new task in a process on its way out: the call finishes inline
        task = await self._store.create(ctx.principal, tool=ctx.tool)
        if task is None:
            return False  # the key keeps as many tasks as it may: this call finishes inline
        running.task_id = task.task_id
        running.job = asyncio.current_task()
        self._running[task.task_id] = running
        ctx.progress = self._progress_writer(running)
        ctx.log = _no_log  # the extension sends no notifications/message for tasks
        ctx.ask = self._asker(running)
        ctx.client_capabilities = running.capabilities
        created.set_result(task)
        return True

    async def _drive(self, call: Call, ctx: ToolContext, running: _Running) -> Any:
        """The call; once it is a task, its outcome goes to the stored task instead."""
        try:
            result = await call(ctx)
        except RpcError as exc:
            if running.task_id is None:
                raise
            await self._end(running, "failed", error=exc.to_dict(), message=exc.message)
            return None
        except asyncio.CancelledError:
            if running.task_id is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if running.cancel_requested:
                await self._end(running, "cancelled", message="cancelled at the client's request")
            elif (gone := running.credential_gone) is not None:
                await self._end(running, "failed", error=gone.to_dict(), message=gone.message)
            else:
                await self._end(running, "failed", error=SHUT_DOWN.to_dict(),
                                message=SHUT_DOWN.message)
            return None
        except Exception:
            if running.task_id is None:
                raise
            log.exception("task failed", extra={"tool": ctx.tool})
            error = RpcError(INTERNAL_ERROR, "internal error")
            await self._end(running, "failed", error=error.to_dict(), message=error.message)
            return None
        if running.task_id is None:
            return result
        await self._end(running, "completed", result=result)
        return None

    async def _end(self, running: _Running, status: str, *, result: Any = None,
                   error: dict[str, Any] | None = None, message: str | None = None) -> None:
        assert running.task_id is not None
        try:
            await self._store.finish(running.principal.tenant_id, running.task_id,
                                     status=status, result=result, error=error, message=message)
        except ServiceError:
            # The database is out of reach: the lease lapses and the task reads as failed.
            log.warning("could not store a task's outcome", extra={"status": status})
        finally:
            self._running.pop(running.task_id, None)

    def _progress_writer(self, running: _Running):
        async def progress(done: float, total: float | None, message: str | None) -> None:
            assert running.task_id is not None
            try:
                await self._store.progress(running.principal.tenant_id, running.task_id,
                                           done=done, total=total, message=message)
            except ServiceError:
                log.warning("could not store a task's progress")  # the next one may pass

        return progress

    def _asker(self, running: _Running):
        async def ask(method: str, params: dict[str, Any], /, *,
                      key: str | None = None) -> dict[str, Any]:
            require_askable(running.capabilities, method, params)
            assert running.task_id is not None
            tenant_id, task_id = running.principal.tenant_id, running.task_id
            # Keys are never reused within a task, as the extension requires: the handler's own
            # name for the question (``key``) would be, when it asks again.
            running.questions += 1
            key = f"{CLIENT_REQUESTS[method]}-{running.questions}"
            await self._store.ask(tenant_id, task_id, key=key,
                                  request={"method": method, "params": params},
                                  message=f"waiting for the client to answer {method}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._store.ttl_ms / 1000
            while (answer := await self._store.answer_for(tenant_id, task_id, key)) is None:
                if loop.time() >= deadline:
                    raise ServiceError(ErrorCode.UPSTREAM_ERROR, f"the client did not answer "
                                       f"{method} within the task's time to live")
                answered = running.answered
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ANSWER_POLL_SECONDS):
                        await answered.wait()
            if not isinstance(answer, dict):
                raise ServiceError(ErrorCode.UPSTREAM_ERROR,
                                   f"the client's answer to {method} is not an object")
            return answer

        return ask

    # -- heartbeat, sweep, shutdown ----------------------------------------------------------

    def start(self, *, heartbeat_seconds: float) -> None:
        self._beat = asyncio.create_task(self._heartbeat(heartbeat_seconds), name="task-heartbeat")

    async def _heartbeat(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            try:
                await self._renew_all()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_SECONDS
                    if gone := await self._store.sweep():
                        log.info("expired tasks deleted", extra={"count": gone})
            except ServiceError:
                pass  # the database is out of reach: missed beats are what the lease allows for
            except Exception:
                log.exception("task heartbeat failed")  # a bug; the next beat tries again
            await asyncio.sleep(interval)

    async def _renew_all(self) -> None:
        for running in list(self._running.values()):
            if running.task_id is None:
                continue
            principal = running.principal
            verdict = await self._store.renew(principal.tenant_id, running.task_id)
            if verdict == "cancel":
                self._stop(running)  # cancelled through another process
            elif verdict in ("credential", "suspended"):
                running.credential_gone = KEY_GONE if verdict == "credential" \
                    else TENANT_SUSPENDED
                running.halt()
            elif principal.still_valid is not None and not await principal.still_valid():
                # The database knows a key's revocation, not a user's binding (oauth.identity
                # does). The token's exp does not count: the task is the user's, as the
                # session is.
                running.credential_gone = TOKEN_UNBOUND
                running.halt()

    def _stop(self, running: _Running) -> None:
        running.cancel_requested = True
        running.halt()

    def stop_all(self) -> None:
        """Shutdown's grace period is over: take no new task and stop every running one; each
        stores itself as failed (the server shut down). Before the registry cuts the other
        calls, which would answer these as plain calls cut short."""
        self._closing = True
        for running in list(self._running.values()):
            running.halt()

    async def close(self, *, grace: float) -> None:
        """Stop the heartbeat and every task still running (stop_all), and wait ``grace``
        seconds at most for them to store their end; one that cannot is left to its lease."""
        self.stop_all()
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=grace)

    # -- tasks/get, tasks/update, tasks/cancel -------------------------------------------------

    def _target(self, method: str, params: dict[str, Any], exchange: Exchange
                ) -> tuple[Principal, uuid.UUID | None]:
        if not exchange.modern:
            # The extension exists in the stateless era only.
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        if not _declares_tasks(client_capabilities(params, exchange.protocol_version)):
            raise _missing_capability(method)
        if not isinstance(params.get("taskId"), str):
            raise RpcError(INVALID_PARAMS, f'{method} needs a string "taskId"')
        return exchange.principal, task_id_from(params["taskId"])

    @staticmethod
    def _not_found(method: str) -> RpcError:
        # Unknown, expired, or another key's: all the same to the caller.
        return RpcError(INVALID_PARAMS, f"{method}: task not found (unknown, expired, or not "
                                        "created with this API key or by this user)")

    async def _get(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        principal, task_id = self._target("tasks/get", params, exchange)
        task = None if task_id is None else await self._store.get(
            principal, task_id, orphan_error=ORPHANED.to_dict())
        if task is None:
            raise self._not_found("tasks/get")
        return detailed(task)

    async def _update(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        principal, task_id = self._target("tasks/update", params, exchange)
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise RpcError(INVALID_PARAMS, 'tasks/update needs an object "inputResponses"')
        status = None if task_id is None else await self._store.answer(principal, task_id,
                                                                       responses)
        if status is None:
            raise self._not_found("tasks/update")
        if (running := self._running.get(task_id)) is not None:  # type: ignore[arg-type]
            running.wake()
        return {}

    async def _cancel(self, params: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        principal, task_id = self._target("tasks/cancel", params, exchange)
        status = None if task_id is None else await self._store.cancel(
            principal, task_id, orphan_message=ORPHAN_CANCELLED)
        if status is None:
            raise self._not_found("tasks/cancel")
        running = self._running.get(task_id)  # type: ignore[arg-type]
        if status in ACTIVE and running is not None:
            self._stop(running)
        return {}


async def _no_log(level: str, data: Any) -> None:
    return None
