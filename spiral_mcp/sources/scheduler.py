"""The background sync: every SYNC_INTERVAL seconds, each source instance of each tenant, in turn.

A round runs on a connection of its own, as the runtime role; ``source_schedule()`` names the
instances (ids only) and each is synced inside its tenant's context under the instance's lock, so
several server processes never sync one instance twice at once: the one that finds it locked
skips it. A failing instance is one log line and the round goes on. Cancelling the task (on
shutdown) stops the sync between or inside pages; committed pages and their cursor stay, so the
next round resumes there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping

import asyncpg

from ..queries import Queries
from .access import SourceAccess, SourceNotFound, SyncBusy
from .base import SourceError
from .manage import SourceAdminError
from .secrets import CredentialError
from .sync import SyncError, SyncProgress

__all__ = ["SyncScheduler"]

log = logging.getLogger(__name__)

# Failures an operator fixes at the source or in its configuration: one line, no traceback.
_EXPECTED = (SourceError, SyncError, CredentialError, SourceAdminError, SourceNotFound)


class SyncScheduler:
    """Syncs every instance of every tenant, one round per :meth:`run_once`."""

    def __init__(self, url: str, queries: Queries, access: SourceAccess, *,
                 connect_timeout: float, statement_timeout: float) -> None:
        self._url = url
        self._queries = queries
        self._access = access
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout

    async def run_forever(self, interval: float) -> None:
        """A round now, then one ``interval`` seconds after each round ends."""
        while True:
            try:
                await self.run_once()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("background sync round failed; retrying next interval",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(interval)

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._url, timeout=self._connect_timeout,
            command_timeout=self._statement_timeout + 1.0,
            server_settings={"application_name": "spiral-mcp sync",
                             "statement_timeout": str(int(self._statement_timeout * 1000))})

    async def run_once(self) -> Mapping[uuid.UUID, SyncProgress | None]:
        """One round: each instance's progress, None for one skipped (locked) or failed."""
        conn = await self._connect()
        try:
            async with conn.transaction():
                schedule = await self._queries.source_schedule(conn)
            results: dict[uuid.UUID, SyncProgress | None] = {}
            for row in schedule:
                results[row["instance_id"]] = await self._sync(conn, row["tenant_id"],
                                                               row["instance_id"])
                if conn.is_closed():  # lost mid-round; the next round reconnects
                    break
        except BaseException:
            # Ends the session at once, which releases an instance lock it may still hold.
            conn.terminate()
            raise
        await conn.close()
        return results

    async def _sync(self, conn: asyncpg.Connection, tenant_id: uuid.UUID,
                    instance_id: uuid.UUID) -> SyncProgress | None:
        fields = {"tenant": str(tenant_id), "source": str(instance_id)}
        try:
            progress = await self._access.sync(conn, self._queries, tenant_id=tenant_id,
                                               instance_id=instance_id)
        except SyncBusy:
            log.debug("source sync skipped: running elsewhere", extra=fields)
            return None
        except _EXPECTED as exc:
            # The messages name the failure and never carry credentials.
            log.warning("source sync failed", extra={**fields, "error": str(exc)})
            return None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("source sync failed", exc_info=exc, extra=fields)
            return None
        log.info("source synced", extra={**fields, "pages": progress.pages,
                                         "items": progress.items, "changed": progress.changed})
        return progress
