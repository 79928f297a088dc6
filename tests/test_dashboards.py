"""The project dashboard's datasets against the report templates' own figures, on the demo data:
one meaning of lead time, cycle time, throughput and work in progress. Both run in one tenant
transaction as the runtime role (one now() for both)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from spiral_mcp import demo
from spiral_mcp.dashboards import FlowWindow, list_projects, project_flow
from spiral_mcp.errors import ServiceError
from spiral_mcp.queries import Queries
from spiral_mcp.templates import load_templates, run_template

TEMPLATES = {t.name: t for t in load_templates()}
DAYS = 30


@asynccontextmanager
async def as_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID
                    ) -> AsyncIterator[asyncpg.Connection]:
    async with conn.transaction(readonly=True):
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        yield conn


@pytest.fixture
async def demo_tenant(make_tenant, admin_conn: asyncpg.Connection, queries: Queries) -> Any:
    tenant = await make_tenant()
    async with admin_conn.transaction():
        await demo.load_demo(admin_conn, queries, tenant_id=tenant.id, items_per_project=100)
    return tenant


async def _report(conn: asyncpg.Connection, name: str, **arguments: Any) -> list[dict[str, Any]]:
    return (await run_template(conn, TEMPLATES[name], arguments))["rows"]


@pytest.mark.parametrize("project_key", ["WEB", "API", "OPS"])
async def test_the_datasets_match_the_report_templates(
        demo_tenant, app_conn: asyncpg.Connection, queries: Queries, project_key: str) -> None:
    async with as_tenant(app_conn, demo_tenant.id) as conn:
        today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        window = FlowWindow.parse(None, None, today=today)
        flow = await project_flow(conn, queries, project_key, window)
        metrics = await _report(conn, "sql_get_project_metrics", project_key=project_key,
                                days=DAYS)
        delivery = await _report(conn, "sql_lead_time_metrics", project_key=project_key,
                                 days=DAYS)
    assert (flow["since"], flow["until"]) == (str(today - dt.timedelta(days=DAYS - 1)),
                                              str(today))

    # Work in progress at each day's end: the CFD's three started categories.
    days = [row for row in metrics if row["kind"] == "day"]
    assert [row["day"] for row in flow["cfd"]] == [row["day"] for row in days]
    assert [r["in_progress"] + r["blocked"] + r["in_review"] for r in flow["cfd"]] == \
        [row["wip_end_of_day"] for row in days]
    assert flow["wip"]["items_total"] == days[-1]["wip_end_of_day"]
    assert all(item["status_category"] in {"in_progress", "blocked", "in_review"}
               for item in flow["wip"]["items"])
    ages = [item["age_days"] for item in flow["wip"]["items"]]
    assert ages == sorted(ages, reverse=True) and all(age >= 0 for age in ages)

    # Throughput per ISO week, lead and cycle time: sql_lead_time_metrics's.
    weeks = [row for row in delivery if row["kind"] == "week"]
    assert [(w["week_start"], w["first_day"], w["last_day"], w["resolved"])
            for w in flow["throughput"]] == \
        [(w["week_start"], w["first_day"], w["last_day"], w["resolved"]) for w in weeks]
    period = next(row for row in delivery if row["kind"] == "period")
    times = flow["lead_cycle"]
    assert times["items_total"] == period["resolved"] == len(times["items"]) > 0
    assert times["cycle_time_items"] == period["cycle_time_items"]
    for p in ("p50", "p95"):
        assert times["lead_time"][p] == period[f"lead_time_{p}_days"]
        assert times["cycle_time"][p] == period[f"cycle_time_{p}_days"]
    lead = sorted(item["lead_time_days"] for item in times["items"])
    assert times["lead_time"]["p50"] <= times["lead_time"]["p85"] <= times["lead_time"]["p95"]
    assert lead[0] <= times["lead_time"]["p85"] <= lead[-1]


@pytest.mark.parametrize(("first", "last"), [(99, 0), (40, 10)])
async def test_the_cfd_counts_every_item_that_existed(
        demo_tenant, app_conn: asyncpg.Connection, queries: Queries, first: int,
        last: int) -> None:
    """Days ``first`` to ``last`` days ago: from before the first item, and a window in the
    past that starts with items already there."""
    async with as_tenant(app_conn, demo_tenant.id) as conn:
        today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        flow = await project_flow(conn, queries, "WEB", FlowWindow(
            today - dt.timedelta(days=first), today - dt.timedelta(days=last)))
        created = await conn.fetch("SELECT created_at FROM work_items WHERE project_key = 'WEB'")
    assert len(flow["cfd"]) == first - last + 1
    for row in flow["cfd"][:-1] if last == 0 else flow["cfd"]:  # today ends now, not midnight
        ends = dt.datetime.combine(dt.date.fromisoformat(row["day"]) + dt.timedelta(days=1),
                                   dt.time(), dt.UTC)
        existing = sum(1 for r in created if r["created_at"] < ends)
        assert sum(v for k, v in row.items() if k != "day") == existing, row
    if last == 0:
        assert sum(v for k, v in flow["cfd"][-1].items() if k != "day") == len(created)
    # Work in progress at the window's end: the CFD's last day, item by item.
    end = flow["cfd"][-1]
    assert flow["wip"]["items_total"] == end["in_progress"] + end["blocked"] + end["in_review"]


async def test_another_tenants_project_is_not_found(
        demo_tenant, make_tenant, app_conn: asyncpg.Connection, queries: Queries) -> None:
    other = await make_tenant()
    async with as_tenant(app_conn, other.id) as conn:
        assert await list_projects(conn, queries) == []
        with pytest.raises(ServiceError, match="no project 'WEB'") as missing:
            await project_flow(conn, queries, "WEB", FlowWindow.parse(None, None))
    assert missing.value.code == "NOT_FOUND"
    async with as_tenant(app_conn, demo_tenant.id) as conn:
        projects = await list_projects(conn, queries)
    assert [(p["project_key"], p["items"]) for p in projects] == \
        [("API", 100), ("OPS", 100), ("WEB", 100)]


@pytest.mark.parametrize(("since", "until", "message"), [
    ("2026-13-01", None, "since must be a date as YYYY-MM-DD, not '2026-13-01'"),
    (None, "yesterday", "until must be a date as YYYY-MM-DD, not 'yesterday'"),
    ("2026-02-01", "2026-01-01", "since (2026-02-01) is after until (2026-01-01)"),
    ("2024-01-01", "2026-01-01", "the window holds 732 days; at most 366 are allowed"),
])
def test_a_bad_window_is_named(since: str | None, until: str | None, message: str) -> None:
    with pytest.raises(ServiceError, match=message.replace("(", r"\(").replace(")", r"\)")) \
            as bad:
        FlowWindow.parse(since, until)
    assert bad.value.code == "VALIDATION_ERROR"


def test_the_default_window_is_the_last_30_days() -> None:
    window = FlowWindow.parse(None, None, today=dt.date(2026, 12, 7))
    assert (window.since, window.until) == (dt.date(2026, 11, 8), dt.date(2026, 12, 7))
    window = FlowWindow.parse(None, "2026-03-31")
    assert window.since == dt.date(2026, 3, 2)
