"""Audit rows: one per tool call. Writes put theirs in their own transaction; every other call's
row is queued and written in batches off the request path, one statement per tenant per flush.
A graceful shutdown flushes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import operator
import re
import uuid
from collections import deque
from typing import Any

from ..db import Database
from ..errors import ErrorCode, ServiceError

__all__ = ["AuditEntry", "AuditWriter", "redact"]

log = logging.getLogger(__name__)

_SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|api[_-]?key|authorization",
                          re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    # Tools have few argument names; each call's are looked up, not searched again.
    return _SECRET_NAME.search(name) is not None


def redact(value: Any, *, depth: int | None = None) -> Any:
    """``value`` with every member whose name suggests a secret replaced by a marker. With
    ``depth``, a container below that many levels is a marker too: the registry audits arguments
    it refused for their nesting, and this recursion must not be what fails on them."""
    if depth is not None:
        if depth <= 0 and isinstance(value, dict | list):
            return "[nested too deep]"
        depth -= 1
    if isinstance(value, dict):
        return {k: "[redacted]" if _secret_name(str(k)) else redact(v, depth=depth)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, depth=depth) for v in value]
    if isinstance(value, str):
        # PostgreSQL's text and jsonb refuse NUL; an argument carrying one must not cost the row.
        return value.replace("\x00", "\ufffd")
    return value


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 4x
# the cost, and one entry is made per tool call. Entries are not changed once queued.
@dataclasses.dataclass(slots=True, kw_only=True)
class AuditEntry:
    tenant_id: uuid.UUID
    key_id: uuid.UUID | None
    actor: str | None
    tool: str
    arguments: Any
    outcome: str
    error_code: str | None
    duration_ms: float | None
    request_id: str | None
    before: Any = None
    after: Any = None

    def row(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id, "key_id": self.key_id, "actor": self.actor,
            "tool": self.tool, "arguments": self.arguments, "outcome": self.outcome,
            "error_code": self.error_code, "duration_ms": self.duration_ms,
            "request_id": self.request_id, "before": self.before, "after": self.after,
        }


# The columns of a batch besides its tenant, each an array parameter of insert_audit_batch.
_BATCH_COLUMNS = tuple((f.name, operator.attrgetter(f.name))
                       for f in dataclasses.fields(AuditEntry) if f.name != "tenant_id")


class AuditWriter:
    """Queues entries and writes them every ``interval`` seconds or ``batch_size`` entries."""

    def __init__(
        self, database: Database, *, interval: float = 1.0, batch_size: int = 500,
        max_queued: int = 100_000,
    ) -> None:
        self._db = database
        self._interval = interval
        self._batch_size = batch_size
        self._queue: deque[AuditEntry] = deque(maxlen=max_queued)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, entry: AuditEntry) -> None:
        if len(self._queue) == self._queue.maxlen:
            log.error("audit queue full; dropping the oldest entry")
        self._queue.append(entry)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued. Entries of a tenant whose write fails for want of the database
        go back in the queue; a batch the database refuses is written row by row, and a row it
        still refuses is logged and dropped, so no single entry can stop the writer."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch_size))]
            by_tenant: dict[uuid.UUID, list[AuditEntry]] = {}
            for entry in batch:
                by_tenant.setdefault(entry.tenant_id, []).append(entry)
            failed: list[AuditEntry] = []
            for tenant_id, entries in by_tenant.items():
                try:
                    await self._write(tenant_id, entries)
                except ServiceError as exc:
                    if exc.code is ErrorCode.CONNECTION_ERROR:
                        failed.extend(entries)
                    else:
                        failed.extend(await self._write_one_by_one(tenant_id, entries))
            if failed:
                self._queue.extendleft(reversed(failed))
                log.warning("audit rows not written yet; will retry", extra={"rows": len(failed)})
                return

    async def _write_one_by_one(
        self, tenant_id: uuid.UUID, entries: list[AuditEntry]
    ) -> list[AuditEntry]:
        """Write each entry alone; return those to retry (the database went away)."""
        retry = []
        for entry in entries:
            try:
                await self._write(tenant_id, [entry])
            except ServiceError as exc:
                if exc.code is ErrorCode.CONNECTION_ERROR:
                    retry.append(entry)
                else:
                    log.error("audit row refused by the database; dropped",
                              extra={"tool": entry.tool, "error": exc.message})
        return retry

    async def _write(self, tenant_id: uuid.UUID, entries: list[AuditEntry]) -> None:
        # Column by column from the entries' attributes: no dict per row on the way.
        columns = {name: list(map(get, entries)) for name, get in _BATCH_COLUMNS}
        async with self._db.tenant(tenant_id) as conn:
            await self._db.queries.insert_audit_batch(conn, tenant_id=tenant_id, **columns)
