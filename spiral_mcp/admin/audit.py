"""The tenant's audit log, read back: filtered pages, newest first, behind a keyset cursor.

Rows are read under the caller's tenant transaction (row-level security hides every other
tenant's, so a key id of another tenant simply matches nothing). Arguments were redacted when
the row was written (handlers/audit.py), and are returned as stored.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from ..queries import Queries
from .cursors import decode_cursor, encode_cursor
from .times import parse_key_id, parse_window

__all__ = ["AUDIT_PAGE_DEFAULT", "AUDIT_PAGE_MAX", "MAX_ARGUMENT_BYTES", "AuditFilters",
           "audit_page"]

AUDIT_PAGE_DEFAULT = 50
AUDIT_PAGE_MAX = 200
# Arguments longer than this (as JSON) are shown by their size: a page stays a few megabytes.
MAX_ARGUMENT_BYTES = 16_384

_SCOPE = "audit"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilters:
    """Which rows a listing shows; every filter is optional."""

    key_id: uuid.UUID | None = None
    tool: str | None = None
    outcome: str | None = None  # "ok" | "error" (the caller's schema checks the value)
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, *, key_id: str | None = None, tool: str | None = None,
              outcome: str | None = None, since: str | None = None,
              until: str | None = None) -> AuditFilters:
        """From query parameters as they arrive; VALIDATION_ERROR naming the bad one."""
        start, end = parse_window(since, until)
        return cls(key_id=parse_key_id(key_id), tool=tool, outcome=outcome, since=start,
                   until=end)

    def fingerprinted(self) -> dict[str, Any]:
        # What a cursor is bound to: a cursor of one listing is refused by another.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


async def audit_page(conn: asyncpg.Connection, queries: Queries, *, filters: AuditFilters,
                     limit: int = AUDIT_PAGE_DEFAULT, cursor: str | None = None,
                     ) -> dict[str, Any]:
    """One page: ``{"items": [...], "next_cursor": str | None}``; ``next_cursor`` is None on
    the last page. Rows inserted while a caller pages are never shown twice, and never shift
    the rows it has yet to see (a keyset, not an offset)."""
    before_at, before_id = (decode_cursor(_SCOPE, filters.fingerprinted(), cursor)
                            if cursor is not None else (None, None))
    await queries.audit_plan_per_call(conn)
    # One row more than the page: whether another page follows, without a count.
    rows = await queries.audit_page(
        conn, key_id=filters.key_id, tool=filters.tool, outcome=filters.outcome,
        since=filters.since, until=filters.until, before_at=before_at, before_id=before_id,
        page_size=limit + 1, max_argument_bytes=MAX_ARGUMENT_BYTES)
    items = [dict(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(_SCOPE, filters.fingerprinted(), (last["at"], last["id"]))
    return {"items": items, "next_cursor": next_cursor}
