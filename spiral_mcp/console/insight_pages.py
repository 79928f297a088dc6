"""The audit log and usage pages: filtered keyset pages of the audit log, and the metrics
dashboard (calls, error rate and latency per tool and per key, sync health per source) with
charts the admin API draws (``/api/v1/usage/charts/{chart}.svg``)."""

from __future__ import annotations

import re
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..admin import instances as instance_domain
from ..admin.audit import AuditFilters, audit_page
from ..admin.keys import KEY_PAGE_MAX, key_page
from ..admin.runs import list_runs
from ..admin.usage import UsageWindow, usage_report
from ..errors import ErrorCode, ServiceError
from ..server.keys import DATABASE
from .access import tenant_admin, tenant_reads
from .views import render

__all__ = ["routes"]

routes = web.RouteTableDef()

OUTCOMES = ("ok", "error")
# A usage window: (its query value, its label, how long, its buckets).
WINDOWS = (("24h", "the last 24 hours", timedelta(hours=24), "hour"),
           ("7d", "the last 7 days", timedelta(days=7), "hour"),
           ("30d", "the last 30 days", timedelta(days=30), "day"))
_CHARTS = (("calls", "Tool calls", "calls per tool over time"),
           ("errors", "Error rate", "the share of calls that failed, per tool over time"),
           ("latency", "Latency", "p50, p95 and p99 call duration over time"))
_RUNS_READ = 200
# A datetime-local field's value ("2026-12-07T06:30"): read as UTC, as the page says.
_LOCAL_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _as_utc(value: str | None) -> str | None:
    if not value:
        return None
    return f"{value}:00Z" if _LOCAL_MINUTE.fullmatch(value) else value


@routes.get("/audit")
async def audit(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    query = request.query
    shown = {name: query.get(name, "") for name in ("key_id", "tool", "outcome", "since",
                                                      "until")}
    queries = request.config_dict[DATABASE].queries
    problem = None
    entries: list[dict[str, Any]] = []
    next_url = None
    async with tenant_reads(request, admin) as conn:
        # The filter's choices: the newest keys of any state (a page: revoked keys pile up).
        keys = (await key_page(conn, queries, state="all", limit=KEY_PAGE_MAX))["keys"]
        try:
            filters = AuditFilters.parse(
                key_id=shown["key_id"] or None, tool=shown["tool"].strip() or None,
                outcome=shown["outcome"] if shown["outcome"] in OUTCOMES else None,
                since=_as_utc(shown["since"]), until=_as_utc(shown["until"]))
            page = await audit_page(conn, queries, filters=filters,
                                    cursor=query.get("cursor") or None)
        except ServiceError as exc:
            if exc.code is not ErrorCode.VALIDATION_ERROR:
                raise
            problem = exc.message
        else:
            entries = page["items"]
            if page["next_cursor"]:
                kept = {name: value for name, value in shown.items() if value}
                next_url = "/admin/audit?" + urlencode({**kept, "cursor": page["next_cursor"]})
    return render(request, "audit.html", {
        "title": "Audit log", "keys": keys, "filters": shown, "outcomes": OUTCOMES,
        # A call of a key that acts for nobody has no actor: the key's name says whose it was.
        "key_names": {str(key["key_id"]): key["name"] for key in keys},
        "entries": entries, "next_url": next_url, "problem": problem,
        "filtered": any(shown.values())})


def _health(runs: list[dict[str, Any]], sources: list[dict[str, Any]],
            since: datetime) -> list[dict[str, Any]]:
    """Per source: its runs in the window, how many failed, the last one, the median
    duration."""
    rows = []
    for source in sources:
        own = [run for run in runs if run["instance_id"] == source["instance_id"]
               and run["started_at"] >= since]
        durations = [run["duration_ms"] for run in own if run["duration_ms"] is not None]
        rows.append({
            "instance_id": source["instance_id"], "name": source["name"], "runs": len(own),
            "failed": sum(1 for run in own if run["status"] == "failed"),
            "last_started_at": own[0]["started_at"] if own else None,
            "last_status": own[0]["status"] if own else None,
            "p50_ms": statistics.median(durations) if durations else None})
    return rows


@routes.get("/usage")
async def usage(request: web.Request) -> web.Response:
    admin = tenant_admin(request)
    choice = request.query.get("window", WINDOWS[0][0])
    value, _, span, bucket = next((w for w in WINDOWS if w[0] == choice), WINDOWS[0])
    until = datetime.now(UTC).replace(microsecond=0)
    since = until - span
    window = UsageWindow.parse(since=since.isoformat(), until=until.isoformat(),
                               bucket=bucket)
    queries = request.config_dict[DATABASE].queries
    async with tenant_reads(request, admin) as conn:
        per_tool = await usage_report(conn, queries, window=window, by="tool")
        per_key = await usage_report(conn, queries, window=window, by="key")
        sources = await instance_domain.list_instances(conn, queries)
        runs = (await list_runs(conn, queries, limit=_RUNS_READ))["runs"]
    totals = per_tool["totals"]
    scope = urlencode({"since": window.since.isoformat(), "until": window.until.isoformat(),
                       "bucket": bucket})
    return render(request, "usage.html", {
        "title": "Usage", "window": value, "windows": [(w[0], w[1]) for w in WINDOWS],
        "totals": {"calls": totals["calls"], "tools": len(per_tool["series"]),
                   "error_rate": "—" if totals["error_rate"] is None
                   else f"{totals['error_rate']:.1%}",
                   "p95": totals["p95_ms"]},
        "charts": [{"title": title, "alt": f"{title}: {alt}",
                    "src": f"/api/v1/usage/charts/{chart}.svg?{scope}"}
                   for chart, title, alt in _CHARTS],
        "tools": [{"tool": s["name"], "calls": s["totals"]["calls"],
                   "errors": s["totals"]["errors"], "p50": s["totals"]["p50_ms"],
                   "p95": s["totals"]["p95_ms"], "p99": s["totals"]["p99_ms"]}
                  for s in per_tool["series"]],
        "per_key": [{"name": s["name"], "calls": s["totals"]["calls"],
                     "errors": s["totals"]["errors"], "p95": s["totals"]["p95_ms"]}
                    for s in per_key["series"]],
        "health": _health(runs, sources, since),
    })
