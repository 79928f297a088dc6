"""Usage of the tenant's tools over time, from its audit log: the figures (GET /usage) and the
metrics dashboard's charts of them (GET /usage/charts/{chart}.{fmt})."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..admin.usage import UsageWindow, usage_report
from ..admin.usage_charts import usage_chart_data
from ..charts import METRICS_CHARTS
from .chart_images import IMAGE_TYPES, chart_response, check_chart
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()


@routes.operation("GET", "/usage", summary="Calls, errors and latency of the tenant's tools",
                  query="usage_query", response="usage_report")
async def get_usage(call: ApiCall) -> dict[str, Any]:
    """Per hour or day of [since, until) and per tool (or per key with by=key): calls, errors,
    error rate and p50/p95/p99 duration in ms, and the same over the whole window; one list
    per figure, aligned with buckets."""
    return await _report(call)


@routes.operation("GET", "/usage/charts/{chart}.{fmt}",
                  summary="A chart of the tenant's usage", query="usage_chart_query", raw=True,
                  produces=IMAGE_TYPES)
async def get_usage_chart(call: ApiCall) -> web.Response:
    """chart: calls (per series), errors (error rate, all calls and the series with most
    errors) or latency (p50 and p95 of the busiest series); fmt: png or svg. The window and
    series as for GET /usage; size=compact for a phone's column. An empty window draws a
    chart that says so."""
    chart, fmt = call.path["chart"], call.path["fmt"]
    check_chart(chart, fmt, METRICS_CHARTS)
    return await chart_response(chart, fmt, usage_chart_data(await _report(call), chart),
                                owner=call.admin.tenant_id, size=call.query.get("size", "full"))


async def _report(call: ApiCall) -> dict[str, Any]:
    query = call.query
    window = UsageWindow.parse(since=query.get("since"), until=query.get("until"),
                               bucket=query.get("bucket", "hour"))
    async with call.tenant(readonly=True) as conn:
        return await usage_report(conn, call.queries, window=window,
                                  by=query.get("by", "tool"), tool=query.get("tool"),
                                  key_id=query.get("key_id"))
