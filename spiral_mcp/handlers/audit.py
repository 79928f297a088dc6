"""Audit rows: one per tool call. Writes put theirs in their own transaction; every other call's
row is queued and written in batches off the request path, one statement per tenant per flush.
A graceful shutdown flushes what is queued.

The writer outlives any failure of the database. Rows it cannot write now (the database is away,
or refuses the statement: a revoked grant, a trigger, a read-only replica) stay queued, in order,
and are tried again with a growing pause; a row the database refuses for its values (the one
failure a retry cannot mend) is dropped. Nothing goes without a trace: an outage is logged once
when it starts and once when it ends (with the rows written meanwhile and any dropped), and
failures and drops are counted for the metrics. The queue is bounded; when an outage fills it,
the oldest rows go, counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import operator
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
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


# Why a batch was not written, as the metrics label it: "unreachable" (no connection, or it timed
# out: the rows are kept) or "refused" (the database refused the statement: kept too, it may be
# a grant revoked for a while); a row refused for its values is dropped as "invalid".
Reason = str


def _reason(exc: Exception) -> Reason:
    if isinstance(exc, ServiceError):
        if exc.code in (ErrorCode.CONNECTION_ERROR, ErrorCode.QUERY_TIMEOUT):
            return "unreachable"
        if exc.code is ErrorCode.VALIDATION_ERROR:
            return "invalid"  # db.py: a value the schema refuses (DataError, a constraint)
    return "refused"


def _described(exc: Exception) -> str:
    # Type and message, never a traceback; our SQL text is in neither.
    return f"{type(exc).__name__}: {exc}"


@dataclasses.dataclass(slots=True)
class _Outage:
    """Since when rows could not be written, and what happened meanwhile."""

    started: float
    reason: Reason
    attempts: int = 1
    written: int = 0
    dropped: int = 0


class AuditWriter:
    """Queues entries and writes them every ``interval`` seconds or ``batch_size`` entries.

    While writes fail the writer waits longer between attempts (doubling up to ``retry_max``
    seconds) and ignores the queue's size, so a database that is away is not asked again and
    again. ``on_failure(reason)`` is called for each failed attempt, ``on_dropped(reason, n)``
    for rows given up ("invalid", "queue_full", "shutdown").
    """

    def __init__(
        self, database: Database, *, interval: float = 1.0, batch_size: int = 500,
        max_queued: int = 100_000, retry_max: float = 10.0,
        on_failure: Callable[[Reason], None] = lambda reason: None,
        on_dropped: Callable[[Reason, int], None] = lambda reason, rows: None,
    ) -> None:
        self._db = database
        self._interval = interval
        self._batch_size = batch_size
        self._max_queued = max_queued
        self._retry_max = retry_max
        self._on_failure = on_failure
        self._on_dropped = on_dropped
        self._queue: deque[AuditEntry] = deque()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage: _Outage | None = None
        # Rows dropped from a full queue since it was last written out; logged once per episode.
        self._overflow = 0

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return len(self._queue)

    def enqueue(self, entry: AuditEntry) -> None:
        self._queue.append(entry)
        self._bound()
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def _bound(self) -> None:
        """Memory stays bounded: beyond ``max_queued`` rows the oldest go, counted."""
        excess = len(self._queue) - self._max_queued
        if excess <= 0:
            return
        for _ in range(excess):
            self._queue.popleft()
        self._drop("queue_full", excess)
        if not self._overflow:
            log.error("audit queue full; the oldest rows are dropped until the database takes "
                      "them", extra={"rows": len(self._queue)})
        self._overflow += excess

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop the background writer (a write under way ends first) and write what is queued,
        all within ``grace`` seconds; what still cannot be written is logged and counted as
        lost."""
        self._stopping.set()
        self._wake.set()
        task = self._task
        try:
            async with asyncio.timeout(grace):
                if task is not None:
                    await asyncio.shield(task)
                await self.flush()
        except TimeoutError:
            pass
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._queue:
            lost = len(self._queue)
            self._queue.clear()
            self._drop("shutdown", lost)
            log.error("audit rows could not be written before exit; they are lost",
                      extra={"rows": lost})

    async def _run(self) -> None:
        pause = self._interval
        while not self._stopping.is_set():
            # Failing: wait the pause out whatever the queue holds; else until it is due.
            wait = self._stopping if self._outage is not None else self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait.wait(), pause)
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                written = await self.flush()
            except Exception as exc:  # a bug of ours: the writer must not die of it
                log.error("audit writer failed; it carries on", extra={"error": _described(exc)})
                written = False
            pause = self._interval if written else min(max(pause, self._interval) * 2,
                                                       self._retry_max)

    async def flush(self) -> bool:
        """Write everything queued; False when rows had to stay queued (the database is away or
        refused them), to be tried again later. Raises nothing of the database's."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch_size))]
            by_tenant: dict[uuid.UUID, list[AuditEntry]] = {}
            for entry in batch:
                by_tenant.setdefault(entry.tenant_id, []).append(entry)
            groups = list(by_tenant.items())
            kept: list[AuditEntry] = []
            failure: Exception | None = None
            for i, (tenant_id, entries) in enumerate(groups):
                try:
                    rest, why = await self._write_group(tenant_id, entries)
                except asyncio.CancelledError:
                    # Out of time at shutdown: what is not known written stays queued, so it is
                    # counted if it is lost.
                    self._requeue([*kept, *(e for _, group in groups[i:] for e in group)])
                    raise
                if rest:
                    kept.extend(rest)
                    failure = why
            if kept:
                assert failure is not None
                self._requeue(kept)
                self._failed(failure, len(self._queue))
                return False
        self._recovered()
        return True

    async def _write_group(self, tenant_id: uuid.UUID, entries: list[AuditEntry]
                           ) -> tuple[list[AuditEntry], Exception | None]:
        """Write one tenant's entries: those to keep for later, with why (none: all written, or
        dropped for their values)."""
        try:
            await self._write(tenant_id, entries)
        except Exception as exc:  # whatever it is, the writer goes on
            if _reason(exc) == "invalid":
                return await self._write_one_by_one(tenant_id, entries)
            return entries, exc
        self._written(len(entries))
        return [], None

    def _requeue(self, entries: list[AuditEntry]) -> None:
        self._queue.extendleft(reversed(entries))
        self._bound()

    async def _write_one_by_one(
        self, tenant_id: uuid.UUID, entries: list[AuditEntry]
    ) -> tuple[list[AuditEntry], Exception | None]:
        """Write each entry alone: the rows to keep for later, with why, when the database
        went away or refused more than a row's values meanwhile; a row refused for its own
        values is dropped."""
        refused: list[tuple[AuditEntry, Exception]] = []
        for i, entry in enumerate(entries):
            try:
                await self._write(tenant_id, [entry])
            except Exception as exc:
                if _reason(exc) != "invalid":
                    self._report_refused(refused)
                    return entries[i:], exc
                refused.append((entry, exc))
                continue
            self._written(1)
        self._report_refused(refused)
        return [], None

    def _report_refused(self, refused: list[tuple[AuditEntry, Exception]]) -> None:
        if not refused:
            return
        self._drop("invalid", len(refused))
        entry, exc = refused[0]
        log.error("audit rows refused by the database for their values; dropped",
                  extra={"rows": len(refused), "tool": entry.tool, "error": _described(exc)})

    def _drop(self, reason: Reason, rows: int) -> None:
        self._on_dropped(reason, rows)
        if self._outage is not None:
            self._outage.dropped += rows

    def _written(self, rows: int) -> None:
        if self._outage is not None:
            self._outage.written += rows

    def _failed(self, exc: Exception, waiting: int) -> None:
        reason = _reason(exc)
        self._on_failure(reason)
        if self._outage is not None:
            self._outage.attempts += 1
            return
        self._outage = _Outage(time.monotonic(), reason)
        # Once per outage; its end is logged with what happened meanwhile.
        log.warning("audit rows cannot be written; they are kept and retried",
                    extra={"reason": reason, "error": _described(exc), "rows": waiting})

    def _recovered(self) -> None:
        self._overflow = 0
        outage, self._outage = self._outage, None
        if outage is None:
            return
        log.warning("audit rows are written again", extra={
            "rows_written": outage.written, "rows_dropped": outage.dropped,
            "failed_attempts": outage.attempts,
            "seconds": round(time.monotonic() - outage.started, 1)})

    async def _write(self, tenant_id: uuid.UUID, entries: list[AuditEntry]) -> None:
        # Column by column from the entries' attributes: no dict per row on the way.
        columns = {name: list(map(get, entries)) for name, get in _BATCH_COLUMNS}
        async with self._db.tenant(tenant_id) as conn:
            await self._db.queries.insert_audit_batch(conn, tenant_id=tenant_id, **columns)
