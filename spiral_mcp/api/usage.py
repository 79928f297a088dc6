"""Usage of the tenant's tools over time, from its audit log (GET /usage)."""

from __future__ import annotations

from typing import Any

from ..admin.usage import UsageWindow, usage_report
from .routing import ApiCall, ApiRoutes

__all__ = ["routes"]

routes = ApiRoutes()


@routes.operation("GET", "/usage", summary="Calls, errors and latency of the tenant's tools",
                  query="usage_query", response="usage_report")
async def get_usage(call: ApiCall) -> dict[str, Any]:
    """Per hour or day of [since, until) and per tool (or per key with by=key): calls, errors,
    error rate and p50/p95/p99 duration in ms, and the same over the whole window; one list
    per figure, aligned with buckets."""
    query = call.query
    window = UsageWindow.parse(since=query.get("since"), until=query.get("until"),
                               bucket=query.get("bucket", "hour"))
    async with call.tenant(readonly=True) as conn:
        return await usage_report(conn, call.queries, window=window,
                                  by=query.get("by", "tool"), tool=query.get("tool"),
                                  key_id=query.get("key_id"))
