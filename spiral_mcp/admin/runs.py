"""The sync history of a tenant's source instances (sync_runs, migration 0019), as its admin
reads it: newest first in keyset pages, a run left by a dead process read as failed."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..queries import Queries
from ..sources.runs import ABANDONED
from .errors import AdminError

__all__ = ["latest_runs", "list_runs", "run_view"]


def run_view(row: asyncpg.Record) -> dict[str, Any]:
    """One run as the API shows it, with its duration once it has ended."""
    out = dict(row)
    finished: datetime | None = out["finished_at"]
    out["duration_ms"] = (None if finished is None else
                          round((finished - out["started_at"]).total_seconds() * 1000))
    return out


def _cursor(row: asyncpg.Record) -> str:
    """The opaque position after ``row``: its start and id."""
    raw = orjson.dumps([row["started_at"].isoformat(), str(row["run_id"])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        started, run_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(started), uuid.UUID(run_id)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise AdminError("cursor is not one this API gave: pass the next_cursor of the page "
                         "before, unchanged") from None


async def list_runs(conn: asyncpg.Connection, queries: Queries, *, limit: int,
                    instance_id: uuid.UUID | None = None, status: str | None = None,
                    cursor: str | None = None) -> dict[str, Any]:
    """A page of the tenant's runs, newest first: ``{"runs": [...], "next_cursor": ...}``
    (``next_cursor`` null on the last page)."""
    started, run_id = _position(cursor) if cursor else (None, None)
    rows = await queries.sync_runs_page(conn, instance_id=instance_id, status=status,
                                        before_started=started, before_run=run_id,
                                        row_limit=limit + 1, abandoned=ABANDONED)
    page = rows[:limit]
    return {"runs": [run_view(row) for row in page],
            "next_cursor": _cursor(page[-1]) if len(rows) > limit else None}


async def latest_runs(conn: asyncpg.Connection,
                      queries: Queries) -> dict[uuid.UUID, dict[str, Any]]:
    """The newest run of each of the tenant's instances, by instance id."""
    return {row["instance_id"]: run_view(row)
            for row in await queries.sync_runs_latest(conn, abandoned=ABANDONED)}
