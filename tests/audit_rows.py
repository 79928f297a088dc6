"""Audit rows a test writes itself, at the times it chooses: what GET /audit and GET /usage must
then give back, computed again in Python."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

__all__ = ["BASE", "Row", "percentile_cont", "write_rows"]

# A fixed hour in the past: windows of the tests never reach the rows of the test's own calls.
BASE = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


@dataclasses.dataclass
class Row:
    at: datetime
    tool: str = "jira_search"
    key_id: uuid.UUID | None = None
    outcome: str = "ok"
    duration_ms: float | None = 10.0
    arguments: Any = dataclasses.field(default_factory=dict)
    id: int | None = None  # the tenant's id of the row, once written


async def write_rows(admin_conn: asyncpg.Connection, tenant_id: uuid.UUID,
                     rows: Iterable[Row]) -> list[Row]:
    """Write ``rows`` for ``tenant_id`` as the owner (under its row-level security, as the
    tenant), each numbered by the tenant's audit counter; return them with their ids."""
    rows = list(rows)
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        for row in rows:
            row.id = await admin_conn.fetchval(
                "INSERT INTO audit_log (tenant_id, at, key_id, actor, tool, arguments, outcome, "
                "error_code, duration_ms, request_id) VALUES ($1, $2, $3, 'tester', $4, $5, $6, "
                "$7, $8, 'req') RETURNING id",
                tenant_id, row.at, row.key_id, row.tool, orjson.dumps(row.arguments).decode(),
                row.outcome, "VALIDATION_ERROR" if row.outcome == "error" else None,
                row.duration_ms)
    return rows


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
