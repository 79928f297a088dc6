"""A project's flow over a window of days: the datasets behind the project dashboard (API, console)
and its charts (``spiral_mcp.charts``: cfd, throughput, lead_cycle, wip_age).

The figures are those the report templates define (sql_get_project_metrics, sql_lead_time_metrics;
the statements in sql/dashboards.sql say how each matches), over UTC days ``since`` to ``until``
(both included) instead of "the last n days". Every function takes the caller's tenant
transaction (``Database.tenant``) and never opens one; nothing here knows HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import asyncpg

from .errors import ErrorCode, ServiceError
from .handlers.rows import row_dict, row_dicts
from .queries import Queries

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "MAX_TIMES", "MAX_WIP", "FlowWindow", "list_projects",
           "project_flow"]

DEFAULT_DAYS = 30
MAX_DAYS = 366  # a year of daily flow: what one chart draws legibly, and a bounded query
MAX_TIMES = 2000  # done items listed one by one (the percentiles cover all of them)
MAX_WIP = 200  # items in progress listed, oldest first (the count covers all of them)


@dataclasses.dataclass(frozen=True, slots=True)
class FlowWindow:
    """UTC days ``since`` to ``until``, both included."""

    since: dt.date
    until: dt.date

    @classmethod
    def parse(cls, since: str | None, until: str | None, *,
              today: dt.date | None = None) -> FlowWindow:
        """From ``YYYY-MM-DD`` texts; ``until`` defaults to today (UTC), ``since`` to
        DEFAULT_DAYS days ending at ``until``. VALIDATION_ERROR, naming the value, otherwise."""
        end = _day("until", until) if until else today or dt.datetime.now(dt.UTC).date()
        start = _day("since", since) if since else end - dt.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ServiceError(ErrorCode.VALIDATION_ERROR,
                               f"since ({start}) is after until ({end})")
        if (days := (end - start).days + 1) > MAX_DAYS:
            raise ServiceError(ErrorCode.VALIDATION_ERROR,
                               f"the window holds {days} days; at most {MAX_DAYS} are allowed")
        return cls(start, end)


def _day(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ServiceError(ErrorCode.VALIDATION_ERROR,
                           f"{name} must be a date as YYYY-MM-DD, not {value!r:.40}") from None


async def list_projects(conn: asyncpg.Connection, queries: Queries) -> list[dict[str, Any]]:
    """The tenant's projects with their item counts (items, open_items, done_items)."""
    return row_dicts(await queries.dashboard_projects(conn))


async def project_flow(conn: asyncpg.Connection, queries: Queries, project_key: str,
                       window: FlowWindow) -> dict[str, Any]:
    """The dashboard's datasets of ``project_key`` over ``window``, JSON-ready; NOT_FOUND when
    the tenant has no such project (another tenant's is not found either)."""
    project = await queries.dashboard_project(conn, project_key=project_key)
    if project is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no project {project_key!r}")
    scope = {"project_key": project_key, "since": window.since, "until": window.until}
    cfd = await queries.dashboard_cfd(conn, **scope)
    weeks = await queries.dashboard_throughput(conn, **scope)
    times = await queries.dashboard_lead_cycle(conn, **scope, max_items=MAX_TIMES)
    wip = await queries.dashboard_wip(conn, project_key=project_key, until=window.until,
                                      max_items=MAX_WIP)
    return {
        "project_key": project_key,
        "name": project["name"],
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "cfd": row_dicts(cfd),
        "throughput": row_dicts(weeks),
        "lead_cycle": _lead_cycle(times),
        "wip": _wip(wip),
    }


_ITEM_FIELDS = ("key", "title", "resolved_at", "lead_time_days", "cycle_time_days")


def _lead_cycle(rows: list[asyncpg.Record]) -> dict[str, Any]:
    first = row_dict(rows[0]) if rows else {}
    total = first.get("items_total", 0)
    return {
        "items": [{f: item[f] for f in _ITEM_FIELDS} for item in map(row_dict, rows)],
        "items_total": total,
        "cycle_time_items": first.get("cycle_items", 0),
        "truncated": total > len(rows),
        "lead_time": {p: first.get(f"lead_{p}") for p in ("p50", "p85", "p95")},
        "cycle_time": {p: first.get(f"cycle_{p}") for p in ("p50", "p85", "p95")},
    }


def _wip(rows: list[asyncpg.Record]) -> dict[str, Any]:
    items = row_dicts(rows, drop=("items_total",))
    total = rows[0]["items_total"] if rows else 0
    return {"items": items, "items_total": total, "truncated": total > len(items)}
