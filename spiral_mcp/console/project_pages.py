"""The projects list and a project's dashboard: its flow's figures, and the four charts (cumulative
flow, throughput per week, lead and cycle times, work in progress and its age) as images the
admin API draws (``/api/v1/projects/{key}/charts/{chart}.svg``)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from ..dashboards import FlowWindow, list_projects, project_flow
from ..errors import ErrorCode, ServiceError
from ..server.keys import DATABASE
from .access import not_found, tenant_admin, tenant_reads
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

WINDOWS = (("30", "the last 30 days"), ("90", "the last 90 days"),
           ("180", "the last 180 days"), ("365", "the last year"))
_CHARTS = (
    ("cfd", "Cumulative flow", "items per status category at each day's end"),
    ("throughput", "Throughput per week", "items done each week"),
    ("lead_cycle", "Lead and cycle time", "each done item's lead and cycle time"),
    ("wip_age", "Work in progress and its age", "items in progress, and since when"),
)


def _days(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f} d"


def figures(flow: dict[str, Any]) -> list[dict[str, str]]:
    """The dashboard's headline numbers from a project's flow (dashboards.project_flow)."""
    weeks = flow["throughput"]
    done = sum(week["resolved"] for week in weeks)
    lead, cycle, wip = flow["lead_cycle"]["lead_time"], flow["lead_cycle"]["cycle_time"], \
        flow["wip"]
    oldest = wip["items"][0]["age_days"] if wip["items"] else None
    return [
        {"label": "done in the window", "value": str(done)},
        {"label": "done per week (mean)", "value": f"{done / len(weeks):.1f}" if weeks else "—"},
        {"label": "lead time p50", "value": _days(lead["p50"])},
        {"label": "lead time p85", "value": _days(lead["p85"])},
        {"label": "lead time p95", "value": _days(lead["p95"])},
        {"label": "cycle time p85", "value": _days(cycle["p85"])},
        {"label": "in progress now", "value": str(wip["items_total"])},
        {"label": "oldest in progress", "value": _days(oldest)},
    ]


@routes.get("/projects")
async def projects(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    async with tenant_reads(request, admin) as conn:
        found = await list_projects(conn, request.config_dict[DATABASE].queries)
    return render(request, "projects.html", {"title": "Projects", "projects": found})


@routes.get("/projects/{project_key}")
async def project(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    key = request.match_info["project_key"]
    window = request.query.get("window", WINDOWS[0][0])
    if window not in dict(WINDOWS):
        window = WINDOWS[0][0]
    until = dt.datetime.now(dt.UTC).date()
    flow_window = FlowWindow(until - dt.timedelta(days=int(window) - 1), until)
    try:
        async with tenant_reads(request, admin) as conn:
            flow = await project_flow(conn, request.config_dict[DATABASE].queries, key,
                                      flow_window)
    except ServiceError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise not_found("project with this key") from None
        raise
    scope = urlencode({"since": flow_window.since.isoformat(),
                       "until": flow_window.until.isoformat()})
    base = f"/api/v1/projects/{quote(key, safe='')}/charts"
    return render(request, "project.html", {
        "title": f"{key} dashboard", "project": {"key": key, "name": flow["name"]},
        "window": window, "windows": WINDOWS, "window_label": dict(WINDOWS)[window],
        "figures": figures(flow),
        "charts": [{"title": title, "alt": f"{title} of {key}: {alt}",
                    "src": f"{base}/{chart}.svg?{scope}"} for chart, title, alt in _CHARTS],
    })
