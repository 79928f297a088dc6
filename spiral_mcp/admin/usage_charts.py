"""A usage report (admin/usage.py) as the dataset of the metrics dashboard's charts
(spiral_mcp.charts: calls, errors, latency): one row per bucket and series.

Empty buckets stay in (zero calls draw as zero, not as a line drawn across the gap). The
charts take a bounded number of rows; past it, the quietest series are summed into one
("other tools" / "other keys"), as the calls chart does with the series it does not name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..charts.metrics import MAX_ROWS
from .usage import fold_series

__all__ = ["CHART_TITLES", "usage_chart_data"]

CHART_TITLES = {
    "calls": "Calls per {bucket}, by {by}",
    "errors": "Error rate per {bucket}, by {by}",
    "latency": "Latency p50 / p95 per {bucket}, by {by}",
}


def _shown(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def usage_chart_data(report: dict[str, Any], chart: str) -> dict[str, Any]:
    """The dataset of chart ``chart`` (one of CHART_TITLES) drawn from ``report``."""
    buckets: list[datetime] = report["buckets"]
    keep = max(1, MAX_ROWS // max(1, len(buckets)))
    rows = [
        {"at": start.isoformat(), "name": series["name"], "calls": series["calls"][i],
         "errors": series["errors"][i], "p50_ms": series["p50_ms"][i],
         "p95_ms": series["p95_ms"][i]}
        for series in fold_series(report["series"], keep, report["by"])
        for i, start in enumerate(buckets)]
    return {"title": CHART_TITLES[chart].format(bucket=report["bucket"], by=report["by"]),
            "since": _shown(report["since"]), "until": _shown(report["until"]), "rows": rows}
