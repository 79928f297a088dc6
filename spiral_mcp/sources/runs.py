"""The one way a source instance is synced, whoever asks: the background schedule, the admin API,
the sources_sync tool or the CLI. Under the instance's lock (:func:`sync.instance_lock`), and
recorded in ``sync_runs`` (migration 0019) from start to end.

The run's row is written by the session holding the lock: inserted (running) just after the lock
is taken, its counts moved in each page's own transaction, and ended (ok, failed with a one-line
error, or cancelled) before the lock is let go. A process that dies mid-run leaves its row
running and lets the lock go with its session; the reads show such a row as failed at once
(``sync_runs_page``: a running row whose lock nobody holds), and the instance's next run stores
it so. No timeout is guessed: a source that throttles a sync for an hour is still running.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Final

import asyncpg
import orjson

from ..queries import Queries
from .base import Adapter, SourceAdminError, SourceError
from .secrets import CredentialError
from .sync import SyncError, SyncProgress, instance_lock, lock_key, sync_instance

__all__ = ["ABANDONED", "EXPECTED", "TRIGGERS", "SourceNotFound", "failure_line",
           "recorded_sync", "tenant_source"]

log = logging.getLogger(__name__)

# Who started a run (sync_runs.trigger).
TRIGGERS: Final = ("schedule", "api", "tool", "cli")
# What a run left by a dead process reads as.
ABANDONED: Final = ("the process running this sync stopped before it finished (it was restarted "
                    "or crashed); the next sync resumes from the last page it committed")
# The longest an ending is waited for: a connection the cancellation left unusable must not hold
# up a shutdown (the row then reads as abandoned, see above).
_END_SECONDS: Final = 5.0
_MAX_ERROR: Final = 1000


class SourceNotFound(LookupError):
    """No instance with this id in the tenant."""


# Failures an operator fixes at the source or in its configuration; their messages name the
# failure and never carry a credential, so they are stored and shown as they are.
EXPECTED: Final = (SourceError, SyncError, CredentialError, SourceAdminError, SourceNotFound)


def failure_line(exc: BaseException) -> str:
    """The one line a failed run stores: an expected failure's own words, else only its kind
    (an unexpected error's text may hold anything; the server log has it whole)."""
    if isinstance(exc, EXPECTED):
        text = " ".join(str(exc).split()) or type(exc).__name__
    elif isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresError):
        text = f"the database or the network failed ({type(exc).__name__}); see the server log"
    else:
        text = f"internal error ({type(exc).__name__}); see the server log"
    return text if len(text) <= _MAX_ERROR else text[:_MAX_ERROR - 1] + "…"


async def tenant_source(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
                        instance_id: uuid.UUID) -> asyncpg.Record:
    """The instance as ``tenant_id`` sees it (row-level security); another tenant's, like none at
    all, is :class:`SourceNotFound`."""
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        row = await queries.source_get(conn, instance_id=instance_id)
    if row is None:
        raise SourceNotFound(f"no source with id {instance_id}")
    return row


async def _begin(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
                 instance_id: uuid.UUID, full: bool, trigger: str,
                 task_id: uuid.UUID | None) -> uuid.UUID:
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        # Under the lock no earlier run of the instance can be alive: store the dead as failed.
        await queries.sync_run_abandon(conn, instance_id=instance_id, error=ABANDONED)
        run_id: uuid.UUID = await queries.sync_run_start(
            conn, tenant_id=tenant_id, instance_id=instance_id,
            kind="backfill" if full else "sync", trigger=trigger, task_id=task_id)
    return run_id


async def _end(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
               instance_id: uuid.UUID, run_id: uuid.UUID, status: str,
               error: str | None) -> None:
    async def record() -> None:
        async with conn.transaction():
            await queries.set_tenant(conn, tenant_id=str(tenant_id))
            await queries.sync_run_finish(conn, run_id=run_id, status=status, error=error)

    try:
        async with asyncio.timeout(_END_SECONDS):
            # The session is settled only when a cancel left it unusable: settling lets the
            # lock go for a moment, in which the run reads as abandoned.
            if status == "cancelled" and conn.is_in_transaction() \
                    and not await _settle(conn, queries, instance_id):
                return  # another run began meanwhile and stored this one as abandoned
            try:
                await record()
            except (asyncpg.NoActiveSQLTransactionError, asyncpg.InterfaceError):
                # A cancel that landed while a page's BEGIN was on its way: asyncpg holds a
                # block the server never entered (the next one was a savepoint of nothing), or
                # the server entered one asyncpg never saw begin (asyncpg refuses a transaction
                # inside it). A settled session records it.
                if not await _settle(conn, queries, instance_id):
                    log.warning("a sync run's end was not recorded: another run took its lock",
                                extra={"run": str(run_id), "status": status})
                    return
                await record()
    except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        # The row stays running and reads as abandoned once the lock is gone.
        log.warning("could not record the end of a sync run",
                    extra={"run": str(run_id), "status": status,
                           "error": f"{type(exc).__name__}: {exc}"})


async def _settle(conn: asyncpg.Connection, queries: Queries, instance_id: uuid.UUID) -> bool:
    """The session made usable after a cancellation, with the instance's lock held again
    (False: another session took it meanwhile). A cancel that lands while a page's BEGIN runs
    leaves asyncpg holding a transaction whose block was never entered, so never left: every
    later ``conn.transaction()`` would be a savepoint of it. Resetting the session ends it, and
    lets every advisory lock go with it (asyncpg's reset runs pg_advisory_unlock_all)."""
    await conn.reset()
    return bool(await queries.source_try_lock(conn, lock_key=lock_key(instance_id)))


async def recorded_sync(
    conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID, instance_id: uuid.UUID,
    adapter_of: Callable[[asyncpg.Record], Adapter], trigger: str, full: bool = False,
    task_id: uuid.UUID | None = None, on_page: Callable[[SyncProgress], None] | None = None,
    on_commit: Callable[[frozenset[str]], None] | None = None,
    on_start: Callable[[uuid.UUID], None] | None = None,
) -> SyncProgress:
    """Sync one instance of ``tenant_id`` under its lock and record the run.

    ``trigger``: one of :data:`TRIGGERS`; ``task_id``: the task following it, if any;
    ``on_start`` hears the run's id once its row is written; ``adapter_of`` makes the adapter
    of the instance's row. ``conn`` must be outside a transaction (each page commits on its
    own). :class:`SyncBusy` when a sync of it runs elsewhere (no run is recorded), and
    :class:`SourceNotFound` for an instance the tenant does not have; any failure after the
    lock is recorded, then raised."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown sync trigger {trigger!r}")
    # Seen by the tenant before its lock is tried: the lock is keyed on the id alone, so a busy
    # answer for another tenant's id would tell that its instance exists and is syncing.
    await tenant_source(conn, queries, tenant_id=tenant_id, instance_id=instance_id)
    async with instance_lock(conn, queries, instance_id):
        run_id = await _begin(conn, queries, tenant_id=tenant_id, instance_id=instance_id,
                              full=full, trigger=trigger, task_id=task_id)
        if on_start is not None:
            on_start(run_id)
        try:
            # Read again under the lock: a sync that just finished elsewhere moved the cursor.
            row = await tenant_source(conn, queries, tenant_id=tenant_id,
                                      instance_id=instance_id)
            adapter = adapter_of(row)
            try:
                progress = await sync_instance(
                    conn, queries, adapter, tenant_id=tenant_id, instance_id=instance_id,
                    projects=orjson.loads(row["config"]).get("projects", {}),
                    cursor=row["sync_cursor"], full=full, on_page=on_page,
                    on_commit=on_commit, run_id=run_id)
            finally:
                await adapter.close()
        except asyncio.CancelledError:
            await _end(conn, queries, tenant_id=tenant_id, instance_id=instance_id,
                       run_id=run_id, status="cancelled", error=None)
            raise
        except Exception as exc:
            await _end(conn, queries, tenant_id=tenant_id, instance_id=instance_id,
                       run_id=run_id, status="failed", error=failure_line(exc))
            raise
        await _end(conn, queries, tenant_id=tenant_id, instance_id=instance_id, run_id=run_id,
                   status="ok", error=None)
        return progress
