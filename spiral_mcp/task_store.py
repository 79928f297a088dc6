"""The tasks of the io.modelcontextprotocol/tasks extension, as PostgreSQL keeps them.

Every read and write is a tenant transaction (row-level security) and names the task's id; the
reads and writes a client asks for name its principal too (an API key's id, or an OAuth user's
principal id), so another principal's task, of the same tenant or another, is not found. The
process running a task writes its progress, questions, heartbeat and outcome by id alone, inside
the same tenant's transaction (see 0014_tasks and 0015_oauth for the table).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from .auth import Principal
from .db import Database

__all__ = ["ACTIVE", "ORPHANED_ERROR", "ORPHAN_CANCELLED", "TERMINAL", "StoredTask", "TaskStore"]

ACTIVE = frozenset({"working", "input_required"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# What a task whose server process died reads as, whoever reads it first (an MCP client or the
# admin API): a JSON-RPC error object (-32603), as tasks/result answers with it.
ORPHANED_ERROR = {"code": -32603, "message": "the server process running this task stopped "
                  "before it finished (it was restarted or it crashed); run the call again"}
ORPHAN_CANCELLED = "cancelled; the server process running it had already stopped"


@dataclasses.dataclass(frozen=True, slots=True)
class StoredTask:
    """One task as a client may read it."""

    task_id: uuid.UUID
    status: str
    status_message: str | None
    progress: float | None
    progress_total: float | None
    input_requests: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    poll_interval_ms: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    # Unfinished, and no process has renewed its lease in time.
    orphaned: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredTask:
        return cls(**dict(row.items()))


def task_id_from(text: Any) -> uuid.UUID | None:
    """The task id a client sent, or None when it cannot be one of ours (then it is not found)."""
    if not isinstance(text, str) or len(text) != 36:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class TaskStore:
    """Reads and writes of tasks; each call is one tenant transaction."""

    def __init__(self, database: Database, *, ttl_ms: int, poll_interval_ms: int,
                 lease_seconds: float, max_per_key: int) -> None:
        self._db = database
        self._queries = database.queries
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self.lease_seconds = lease_seconds
        self.max_per_key = max_per_key

    async def create(self, principal: Principal, *, tool: str) -> StoredTask | None:
        """A new working task of ``principal``'s key, durable once this returns (a tasks/get
        for it finds it, in any process); None when the key already keeps ``max_per_key``
        tasks that have not expired."""
        async with self._db.tenant(principal.tenant_id) as conn:
            row = await self._queries.task_create(
                conn, tenant_id=principal.tenant_id, task_id=uuid.uuid4(),
                key_id=principal.key_id, tool=tool, ttl_ms=self.ttl_ms,
                poll_interval_ms=self.poll_interval_ms, lease_seconds=self.lease_seconds,
                max_per_key=self.max_per_key, credential=principal.credential)
        return StoredTask.from_row(row) if row is not None else None

    async def get(self, principal: Principal, task_id: uuid.UUID, *,
                  orphan_error: dict[str, Any]) -> StoredTask | None:
        """The key's task, or None; an orphan (its process died) is failed with
        ``orphan_error`` first, so it never reads as working forever."""
        async with self._db.tenant(principal.tenant_id, readonly=True) as conn:
            row = await self._queries.task_get(conn, task_id=task_id, key_id=principal.key_id)
        if row is None or not row["orphaned"]:
            return StoredTask.from_row(row) if row is not None else None
        async with self._db.tenant(principal.tenant_id) as conn:
            failed = await self._queries.task_fail_orphan(
                conn, task_id=task_id, key_id=principal.key_id, error=orphan_error,
                message=orphan_error["message"])
            if failed is None:  # finished or renewed meanwhile: read it as it is now
                row = await self._queries.task_get(conn, task_id=task_id,
                                                   key_id=principal.key_id)
                return StoredTask.from_row(row) if row is not None else None
        return StoredTask.from_row(failed)

    async def answer(self, principal: Principal, task_id: uuid.UUID,
                     responses: dict[str, Any]) -> str | None:
        """Deliver the client's answers (tasks/update); the task's status, or None when the key
        has no such task."""
        async with self._db.tenant(principal.tenant_id) as conn:
            return await self._queries.task_answer(conn, task_id=task_id,
                                                   key_id=principal.key_id, responses=responses)

    async def cancel(self, principal: Principal, task_id: uuid.UUID, *,
                     orphan_message: str) -> str | None:
        """Ask for the task to be cancelled (tasks/cancel); its status, or None when the key has
        no such task."""
        async with self._db.tenant(principal.tenant_id) as conn:
            return await self._queries.task_cancel(conn, task_id=task_id,
                                                   key_id=principal.key_id,
                                                   message=orphan_message)

    # -- what the process running a task writes ----------------------------------------------

    async def renew(self, tenant_id: uuid.UUID, task_id: uuid.UUID) -> str | None:
        """Heartbeat: "cancel" (a cancel was asked for), "credential" (its API key was revoked
        or has expired, or its OAuth token's exp has passed), "suspended" (its tenant was) or
        "go"; None once the task has ended."""
        async with self._db.tenant(tenant_id) as conn:
            return await self._queries.task_renew(conn, task_id=task_id,
                                                  lease_seconds=self.lease_seconds)

    async def progress(self, tenant_id: uuid.UUID, task_id: uuid.UUID, *, done: float,
                       total: float | None, message: str | None) -> None:
        async with self._db.tenant(tenant_id) as conn:
            await self._queries.task_progress(conn, task_id=task_id, progress=done,
                                              progress_total=total, message=message)

    async def ask(self, tenant_id: uuid.UUID, task_id: uuid.UUID, *, key: str,
                  request: dict[str, Any], message: str) -> bool:
        """Open a question to the client; False once the task has ended."""
        async with self._db.tenant(tenant_id) as conn:
            return bool(await self._queries.task_ask(conn, task_id=task_id, input_key=key,
                                                     request=request, message=message))

    async def answer_for(self, tenant_id: uuid.UUID, task_id: uuid.UUID, key: str) -> Any:
        """The client's answer to question ``key``, or None while it has not come."""
        async with self._db.tenant(tenant_id, readonly=True) as conn:
            return await self._queries.task_answer_for(conn, task_id=task_id, input_key=key)

    async def finish(self, tenant_id: uuid.UUID, task_id: uuid.UUID, *, status: str,
                     result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                     message: str | None = None) -> bool:
        """End the task; False when it had already ended."""
        async with self._db.tenant(tenant_id) as conn:
            return bool(await self._queries.task_finish(
                conn, task_id=task_id, status=status, result=result, error=error,
                message=message))

    async def sweep(self) -> int:
        """Delete every tenant's expired tasks; how many."""
        async with self._db.connection() as conn:
            return await self._queries.task_sweep(conn)
