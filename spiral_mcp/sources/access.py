"""The server's way to its tenants' sources: credentials opened with this process's secret key,
and a sync that runs at most once per instance at a time, whichever process starts it.

The guard is the instance's advisory lock (:func:`sync.instance_lock`), which the CLI's
``source sync`` takes too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from ..changed_data import DataChanged, nothing_listens
from ..config import Settings
from ..queries import Queries
from .base import Adapter
from .manage import make_adapter
from .secrets import CredentialError, SecretBox, load_secret_box
from .sync import SyncBusy, SyncProgress, instance_lock, sync_instance

__all__ = ["SourceAccess", "SourceNotFound", "SyncBusy"]


class SourceNotFound(LookupError):
    """No instance with this id in the tenant."""


async def _tenant_source(conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
                         instance_id: uuid.UUID) -> asyncpg.Record:
    """The instance as ``tenant_id`` sees it (row-level security); another tenant's, like none at
    all, is :class:`SourceNotFound`."""
    async with conn.transaction():
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        row = await queries.source_get(conn, instance_id=instance_id)
    if row is None:
        raise SourceNotFound(f"no source with id {instance_id}")
    return row


class SourceAccess:
    """The secret box of this process, when it has one, and the HTTP options of its adapters."""

    def __init__(self, box: SecretBox | None, *, unavailable: str | None = None,
                 **client_options: Any) -> None:
        self._box = box
        self.unavailable = unavailable if box is None else None
        self._client_options = client_options
        # Told once per sync run, after its commits, what of its tenant's data the run changed
        # (the server announces it to the resources' subscribers; set by the app).
        self.on_change: DataChanged = nothing_listens

    @classmethod
    def from_settings(cls, settings: Settings, **client_options: Any) -> SourceAccess:
        """Without a usable key the server still starts; sources are then out of reach."""
        try:
            return cls(load_secret_box(settings), **client_options)
        except CredentialError as exc:
            return cls(None, unavailable=str(exc), **client_options)

    def adapter(self, row: asyncpg.Record) -> Adapter:
        """The adapter of a stored instance (``source_get``'s row); CredentialError without a
        key or when the stored credentials do not open with it."""
        if self._box is None:
            raise CredentialError(f"source credentials cannot be opened: {self.unavailable}")
        return make_adapter(row, self._box, **self._client_options)

    async def sync(
        self, conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
        instance_id: uuid.UUID, full: bool = False,
        on_page: Callable[[SyncProgress], None] | None = None,
    ) -> SyncProgress:
        """Sync one instance of ``tenant_id`` under its lock; ``conn`` must be outside a
        transaction (each page commits on its own) and runs as the runtime role."""
        # Seen by the tenant before its lock is tried: the lock is keyed on the id alone, so a
        # busy answer for another tenant's id would tell that its instance exists and is syncing.
        await _tenant_source(conn, queries, tenant_id=tenant_id, instance_id=instance_id)
        async with instance_lock(conn, queries, instance_id):
            # Read again under the lock: a sync that just finished elsewhere has moved the cursor.
            row = await _tenant_source(conn, queries, tenant_id=tenant_id,
                                       instance_id=instance_id)
            adapter = self.adapter(row)
            # Gathered over the run and told once: a backfill of a thousand pages is one
            # announcement per resource. Told too when the run fails: its committed pages stay.
            changed: set[str] = set()
            try:
                return await sync_instance(
                    conn, queries, adapter, tenant_id=tenant_id, instance_id=instance_id,
                    projects=orjson.loads(row["config"]).get("projects", {}),
                    cursor=row["sync_cursor"], full=full, on_page=on_page,
                    on_commit=changed.update)
            finally:
                if changed:
                    self.on_change(tenant_id, frozenset(changed))
                await adapter.close()
