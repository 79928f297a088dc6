"""The project dashboard: the tenant's projects, a project's flow over a window of days (the
datasets, spiral_mcp.dashboards) and its charts as PNG or SVG (spiral_mcp.charts)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..charts import FLOW_CHARTS
from ..dashboards import FlowWindow, list_projects, project_flow
from ..errors import ErrorCode, ServiceError
from .chart_images import IMAGE_TYPES, chart_response, check_chart
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()

# Whole-value checks use fullmatch: with match, "$" also matches before a trailing newline.
_PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,19}")


@routes.operation("GET", "/projects", summary="List the tenant's projects",
                  response="project_list")
async def get_projects(call: ApiCall) -> dict[str, Any]:
    """Every project of the tenant, by key, with how many items it holds, open and done."""
    async with call.tenant(readonly=True) as conn:
        return {"projects": await list_projects(conn, call.queries)}


@routes.operation("GET", "/projects/{project_key}/flow", summary="A project's flow",
                  query="flow_window", response="project_flow")
async def get_project_flow(call: ApiCall) -> dict[str, Any]:
    """Cumulative flow per day, items done per ISO week, each done item's lead and cycle time
    with p50/p85/p95, work in progress and its age, over UTC days since..until (default: the
    last 30 days); the definitions of the report templates sql_get_project_metrics and
    sql_lead_time_metrics."""
    return await _flow(call)


@routes.operation("GET", "/projects/{project_key}/charts/{chart}.{fmt}",
                  summary="A chart of a project's flow", query="flow_chart_query", raw=True,
                  produces=IMAGE_TYPES)
async def get_project_chart(call: ApiCall) -> web.Response:
    """chart: cfd, throughput, lead_cycle or wip_age; fmt: png or svg. The window as for the
    flow; size=compact for a phone's column. An empty window draws a chart that says so."""
    chart, fmt = call.path["chart"], call.path["fmt"]
    check_chart(chart, fmt, FLOW_CHARTS)
    return await chart_response(chart, fmt, await _flow(call), owner=call.admin.tenant_id,
                                size=call.query.get("size", "full"))


async def _flow(call: ApiCall) -> dict[str, Any]:
    key = call.path["project_key"]
    if not _PROJECT_KEY.fullmatch(key):
        # Not a key any project can have: as not found as another tenant's project.
        raise ServiceError(ErrorCode.NOT_FOUND, f"no project {key[:40]!r}")
    window = FlowWindow.parse(call.query.get("since"), call.query.get("until"))
    async with call.tenant(readonly=True) as conn:
        return await project_flow(conn, call.queries, key, window)
