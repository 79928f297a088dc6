"""The server's way to its tenants' sources: credentials opened with this process's secret key,
and a sync that runs at most once per instance at a time, whichever process starts it, recorded
in the sync history (:func:`runs.recorded_sync`, which the CLI's ``source sync`` runs too).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from ..changed_data import DataChanged, nothing_listens
from ..config import Settings
from ..queries import Queries
from .base import Adapter
from .manage import make_adapter
from .networks import SourceNetworks, from_setting
from .runs import SourceNotFound, recorded_sync
from .secrets import CredentialError, SecretBox, load_secret_box
from .sync import SyncBusy, SyncProgress

__all__ = ["SourceAccess", "SourceNotFound", "SyncBusy"]


class SourceAccess:
    """The secret box of this process, when it has one, the private networks its sources may be
    in, and the HTTP options of its adapters."""

    def __init__(self, box: SecretBox | None, *, unavailable: str | None = None,
                 networks: SourceNetworks | None = None, **client_options: Any) -> None:
        self._box = box
        self.unavailable = unavailable if box is None else None
        self.networks = networks
        self._client_options = {"networks": networks, **client_options}
        # Told once per sync run, after its commits, what of its tenant's data the run changed
        # (the server announces it to the resources' subscribers; set by the app).
        self.on_change: DataChanged = nothing_listens

    @classmethod
    def from_settings(cls, settings: Settings, **client_options: Any) -> SourceAccess:
        """Without a usable key the server still starts; sources are then out of reach."""
        networks = from_setting(settings.source_private_networks)
        try:
            return cls(load_secret_box(settings), networks=networks, **client_options)
        except CredentialError as exc:
            return cls(None, unavailable=str(exc), networks=networks, **client_options)

    def secret_box(self) -> SecretBox:
        """The box sealing and opening credentials; CredentialError without a key."""
        if self._box is None:
            raise CredentialError(f"source credentials cannot be opened: {self.unavailable}")
        return self._box

    def adapter(self, row: asyncpg.Record, **client_options: Any) -> Adapter:
        """The adapter of a stored instance (``source_get``'s row), with ``client_options``
        over this process's; CredentialError without a key or when the stored credentials do not
        open with it."""
        return make_adapter(row, self.secret_box(), **{**self._client_options, **client_options})

    async def sync(
        self, conn: asyncpg.Connection, queries: Queries, *, tenant_id: uuid.UUID,
        instance_id: uuid.UUID, trigger: str, full: bool = False,
        task_id: uuid.UUID | None = None,
        on_page: Callable[[SyncProgress], None] | None = None,
        on_start: Callable[[uuid.UUID], None] | None = None,
    ) -> SyncProgress:
        """Sync one instance of ``tenant_id`` under its lock, recorded as started by ``trigger``
        (runs.TRIGGERS; ``on_start`` hears the run's id); ``conn`` must be outside a transaction
        (each page commits on its own) and runs as the runtime role."""
        # Gathered over the run and told once: a backfill of a thousand pages is one
        # announcement per resource. Told too when the run fails: its committed pages stay.
        changed: set[str] = set()
        try:
            return await recorded_sync(
                conn, queries, tenant_id=tenant_id, instance_id=instance_id,
                adapter_of=self.adapter, trigger=trigger, full=full, task_id=task_id,
                on_page=on_page, on_commit=changed.update, on_start=on_start)
        finally:
            if changed:
                self.on_change(tenant_id, frozenset(changed))
