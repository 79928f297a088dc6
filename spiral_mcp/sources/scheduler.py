"""The background sync: each source instance of each tenant, again every SYNC_INTERVAL seconds.

Instances are synced side by side, up to SYNC_CONCURRENCY at once, each on a connection of its
own as the runtime role, so one slow instance (a backfill, a source that throttles for an hour)
holds up no other tenant's: each instance comes due ``interval`` seconds after its own last sync
ended. ``source_schedule()`` names the instances (ids only); each is synced inside its tenant's
context under the instance's lock, so several server processes never sync one instance twice at
once: the one that finds it locked skips it. A failing instance is one log line. Cancelling the
task (on shutdown) stops the syncs between or inside pages; committed pages and their cursor
stay, so the next start resumes there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping

import asyncpg

from ..db import connect
from ..queries import Queries
from ..tracing import background_span
from .access import SourceAccess, SyncBusy
from .runs import EXPECTED
from .sync import SyncProgress

__all__ = ["SyncScheduler"]

log = logging.getLogger(__name__)

# The database being away: the schedule is read again at the next look.
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError)
# The shortest sleep between looks at the schedule (instances due within it start together).
_MIN_LOOK = 0.05


class SyncScheduler:
    """Syncs every instance of every tenant: once each per :meth:`run_once`, or forever."""

    def __init__(self, url: str, queries: Queries, access: SourceAccess, *,
                 connect_timeout: float, statement_timeout: float, concurrency: int = 4) -> None:
        self._url = url
        self._queries = queries
        self._access = access
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def run_forever(self, interval: float) -> None:
        """Start each instance's sync when it is due (now, then ``interval`` seconds after its
        last one ended) and no sync of it is running here. The schedule is read again when the
        next instance comes due, and at least every ``interval`` (for sources added meanwhile),
        on one connection kept for it."""
        loop = asyncio.get_running_loop()
        running: dict[uuid.UUID, asyncio.Task[SyncProgress | None]] = {}
        due: dict[uuid.UUID, float] = {}
        conn: asyncpg.Connection | None = None

        def ended(instance_id: uuid.UUID, task: asyncio.Task[SyncProgress | None]) -> None:
            running.pop(instance_id, None)
            due[instance_id] = loop.time() + interval
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("source sync failed", exc_info=exc,
                          extra={"source": str(instance_id)})

        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    schedule = await self._read_schedule(conn)
                except _UNREACHABLE as exc:
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    log.warning("background sync cannot read its schedule; retrying next "
                                "interval", extra={"error": f"{type(exc).__name__}: {exc}"})
                    await asyncio.sleep(interval)
                    continue
                # Forget instances removed since (their ids never come back).
                for gone in due.keys() - {instance_id for _, instance_id in schedule}:
                    del due[gone]
                for tenant_id, instance_id in schedule:
                    if instance_id in running or due.get(instance_id, 0.0) > loop.time():
                        continue
                    task = asyncio.create_task(self._sync(tenant_id, instance_id),
                                               name=f"source-sync {instance_id}")
                    task.add_done_callback(lambda done, i=instance_id: ended(i, done))
                    running[instance_id] = task
                now = loop.time()
                waits = [at - now for i, at in due.items() if i not in running]
                await asyncio.sleep(max(_MIN_LOOK, min([interval, *waits])))
        finally:
            if conn is not None:
                conn.terminate()
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def run_once(self) -> Mapping[uuid.UUID, SyncProgress | None]:
        """Sync every instance once, side by side within the concurrency; each instance's
        progress, None for one skipped (locked) or failed."""
        async with asyncio.TaskGroup() as group:
            tasks = {instance_id: group.create_task(self._sync(tenant_id, instance_id))
                     for tenant_id, instance_id in await self._schedule()}
        return {instance_id: task.result() for instance_id, task in tasks.items()}

    async def _connect(self) -> asyncpg.Connection:
        # Never the request pool's: a sync waits on its source while it holds the connection.
        return await connect(self._url, connect_timeout=self._connect_timeout,
                             statement_timeout=self._statement_timeout,
                             application_name="spiral-mcp sync")

    async def _schedule(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        conn = await self._connect()
        try:
            return await self._read_schedule(conn)
        finally:
            await conn.close()

    async def _read_schedule(self, conn: asyncpg.Connection) -> list[tuple[uuid.UUID, uuid.UUID]]:
        async with conn.transaction():
            rows = await self._queries.source_schedule(conn)
        return [(row["tenant_id"], row["instance_id"]) for row in rows]

    async def _sync(self, tenant_id: uuid.UUID, instance_id: uuid.UUID) -> SyncProgress | None:
        async with self._slots:
            try:
                conn = await self._connect()
            except _UNREACHABLE as exc:
                log.warning("source sync failed", extra={"tenant": str(tenant_id),
                                                         "source": str(instance_id),
                                                         "error": f"{type(exc).__name__}: {exc}"})
                return None
            try:
                # A trace of its own per sync (tracing on), its statements inside it.
                with background_span(self._queries.tracer, "source sync", {
                        "spiral.tenant_id": str(tenant_id),
                        "spiral.source_instance": str(instance_id)}):
                    progress = await self._sync_on(conn, tenant_id, instance_id)
            except BaseException:
                # Cancelled, or a bug: end the session at once, which releases an instance lock
                # it may still hold.
                conn.terminate()
                raise
            try:
                await conn.close(timeout=self._connect_timeout)
            except _UNREACHABLE:
                conn.terminate()
            return progress

    async def _sync_on(self, conn: asyncpg.Connection, tenant_id: uuid.UUID,
                       instance_id: uuid.UUID) -> SyncProgress | None:
        fields = {"tenant": str(tenant_id), "source": str(instance_id)}
        try:
            progress = await self._access.sync(conn, self._queries, tenant_id=tenant_id,
                                               instance_id=instance_id, trigger="schedule")
        except SyncBusy:
            log.debug("source sync skipped: running elsewhere", extra=fields)
            return None
        except EXPECTED as exc:
            # Failures an operator fixes at the source or in its configuration: one line, no
            # traceback (recorded in the run's history too).
            log.warning("source sync failed", extra={**fields, "error": str(exc)})
            return None
        except (asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            log.error("source sync failed", exc_info=exc, extra=fields)
            return None
        log.info("source synced", extra={**fields, "pages": progress.pages,
                                         "items": progress.items, "changed": progress.changed})
        return progress
