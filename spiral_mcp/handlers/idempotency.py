"""Idempotency keys: a write with the same key runs once, whatever the retries and races.

The first call claims the key in a transaction of its own (state ``in_progress``), so concurrent
calls with the same key see it at once and get IDEMPOTENCY_IN_PROGRESS. The handler stores its
result in the transaction of its write (``ToolContext.commit_write``), so the change, its audit row
and the stored result commit together or not at all. A later call with the same key and the same
arguments replays the stored result; with other arguments it is IDEMPOTENCY_MISMATCH. A call that
fails releases the key. A completed key expires IDEMPOTENCY_TTL after it completed and is reaped
per tenant; a key in progress is freed only by its call or its lease, however short the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..db import Database
from ..errors import ErrorCode, ServiceError

__all__ = ["Claim", "IdempotencyStore"]

log = logging.getLogger(__name__)

# A call still "in progress" after this long was abandoned (its process died): take it over.
# Longer than any statement may run, so a live call is never overtaken.
_LEASE_SECONDS = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A key held for one call; ``claimed_at`` (the record's created_at) tells it from a later
    call's claim of the same key, after the lease ran out."""

    tool: str
    key: str
    claimed_at: datetime


def request_hash(arguments: dict[str, Any]) -> bytes:
    canonical = {k: v for k, v in arguments.items() if k != "idempotency_key"}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


class IdempotencyStore:
    def __init__(self, database: Database, *, ttl: float) -> None:
        self._db = database
        self._ttl = ttl
        # Tenants by when they last used a key: reaped until all their keys have expired.
        self._last_use: dict[uuid.UUID, float] = {}

    async def claim(
        self, tenant_id: uuid.UUID, tool: str, key: str, arguments: dict[str, Any]
    ) -> Claim | Any:
        """A :class:`Claim` to run the call, or the stored result of the earlier call."""
        self._last_use[tenant_id] = time.monotonic()
        digest = request_hash(arguments)
        queries = self._db.queries
        async with self._db.tenant(tenant_id) as conn:
            claimed = await queries.idempotency_claim(
                conn, tenant_id=tenant_id, tool=tool, key=key, request_hash=digest,
                expires_at=datetime.now(UTC) + timedelta(seconds=self._ttl),
                lease_seconds=_LEASE_SECONDS,
            )
            if claimed is not None:
                return Claim(tool, key, claimed)
            record = await queries.idempotency_get(conn, tool=tool, key=key)
        if record is None:  # reaped between the two statements: as good as new, try again
            return await self.claim(tenant_id, tool, key, arguments)
        if bytes(record["request_hash"]) != digest:
            raise ServiceError(
                ErrorCode.IDEMPOTENCY_MISMATCH,
                f"idempotency key {key!r} was used with other arguments; use a new key",
            )
        if record["state"] != "completed":
            raise ServiceError(
                ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                f"a call with idempotency key {key!r} is still running; retry shortly",
                retry_after=1.0,
            )
        return record["response"]

    async def release(self, tenant_id: uuid.UUID, claim: Claim) -> None:
        try:
            async with self._db.tenant(tenant_id) as conn:
                await self._db.queries.idempotency_release(conn, tool=claim.tool, key=claim.key,
                                                           claimed_at=claim.claimed_at)
        except ServiceError:
            log.warning("could not release an idempotency key; it frees itself after its lease")

    async def reap(self) -> int:
        """Delete expired keys of every tenant that used keys within the last TTL and more."""
        removed = 0
        started = time.monotonic()
        for tenant_id, last_use in list(self._last_use.items()):
            try:
                async with self._db.tenant(tenant_id) as conn:
                    removed += await self._db.queries.idempotency_reap(
                        conn, lease_seconds=_LEASE_SECONDS)
            except ServiceError:
                continue
            if started - last_use > self._ttl:
                # Every key it made has expired and is now gone.
                self._last_use.pop(tenant_id, None)
        return removed

    async def reap_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(ServiceError):
                await self.reap()
