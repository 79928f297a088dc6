"""The metrics dashboard: tool calls over time, error rate and latency, per tool (or per key).

The dataset is plain rows, one per bucket and series, as a usage query gives them::

    {"title": "Tool calls", "since": "...", "until": "...",
     "rows": [{"at": "2026-12-07T06:00:00+00:00", "name": "jira_get_issue",
               "calls": 12, "errors": 1, "p50_ms": 8.5, "p95_ms": 40.2}, ...]}

``name`` is the series (a tool, or a key); ``at`` the bucket's start (ISO 8601). A bucket with no
calls may be left out. The busiest series get their own line; the rest are summed as "other"
(calls) or left out (latency, whose percentiles do not add up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from .canvas import PALETTE, ChartError, no_data, parse_instant, time_axis

__all__ = ["METRICS_CHARTS", "draw_calls", "draw_errors", "draw_latency"]

MAX_ROWS = 20_000
_LINES = 7  # series drawn by name; one colour each (the palette's eighth is "other")


def _rows(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = list(data.get("rows") or ())
    if len(rows) > MAX_ROWS:
        raise ChartError(f"metrics: {len(rows)} rows, more than the {MAX_ROWS} a chart draws")
    return rows


def _title(data: Mapping[str, Any], what: str) -> str:
    window = f", {data['since']} to {data['until']}" if data.get("since") else ""
    return f"{data.get('title') or what}{window}"


def _busiest(rows: list[Mapping[str, Any]], field: str) -> list[str]:
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[str(row.get("name"))] += row.get(field) or 0
    return [name for name, total in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
            if total > 0][:_LINES]


def _series(rows: list[Mapping[str, Any]], name: str, field: str) -> tuple[list[Any], list[Any]]:
    points = sorted((parse_instant(row["at"]), row.get(field)) for row in rows
                    if str(row.get("name")) == name and row.get(field) is not None)
    return [p[0] for p in points], [p[1] for p in points]


def _legend(ax: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _span(rows: list[Mapping[str, Any]]) -> list[Any] | None:
    """The first and last bucket of the window, so that a chart whose lines skip empty
    buckets (error rate, latency) still spans the whole window, not the few points it has."""
    instants = sorted({parse_instant(row["at"]) for row in rows})
    return [instants[0], instants[-1]] if len(instants) > 1 else None


def draw_calls(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Lines: calls per bucket of the busiest series, the rest summed as "other"."""
    ax, rows = axes[0], _rows(data)
    title = _title(data, "Calls")
    names = _busiest(rows, "calls")
    if not names:
        no_data(axes, title)
        return
    for colour, name in zip(PALETTE, names, strict=False):
        ax.plot(*_series(rows, name, "calls"), marker="o", markersize=3, color=colour,
                label=name)
    rest: dict[Any, float] = defaultdict(float)
    for row in rows:
        if str(row.get("name")) not in names:
            rest[parse_instant(row["at"])] += row.get("calls") or 0
    if rest:
        at = sorted(rest)
        ax.plot(at, [rest[t] for t in at], color=PALETTE[7], linestyle="--", label="other")
    ax.set_title(title, loc="left")
    ax.set_ylabel("calls")
    ax.set_ylim(bottom=0)
    time_axis(ax)
    _legend(ax)


def draw_errors(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Lines: the share of calls that failed per bucket, all together (thick) and for the
    series with the most errors."""
    ax, rows = axes[0], _rows(data)
    title = _title(data, "Error rate")
    calls: dict[Any, float] = defaultdict(float)
    errors: dict[Any, float] = defaultdict(float)
    for row in rows:
        at = parse_instant(row["at"])
        calls[at] += row.get("calls") or 0
        errors[at] += row.get("errors") or 0
    if not any(calls.values()):
        no_data(axes, title)
        return
    at = sorted(t for t in calls if calls[t])
    # Markers: a bucket between empty ones is a point, not a line.
    ax.plot(at, [100 * errors[t] / calls[t] for t in at], color=PALETTE[7], linewidth=2.2,
            marker="o", markersize=4, label="all calls")
    # A few series only: a rate over few calls swings, and more lines hide the total.
    for colour, name in zip(PALETTE, _busiest(rows, "errors")[:4], strict=False):
        points = sorted((parse_instant(row["at"]), 100 * (row.get("errors") or 0) / row["calls"])
                        for row in rows if str(row.get("name")) == name and row.get("calls"))
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, marker="o",
                markersize=3, linewidth=1, label=name)
    ax.set_title(title, loc="left")
    ax.set_ylabel("errors (% of calls)")
    ax.set_ylim(bottom=0, top=max(5.0, ax.get_ylim()[1]))
    time_axis(ax, _span(rows))
    _legend(ax)


def draw_latency(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Lines: p95 (solid) and p50 (dotted) duration of the busiest series per bucket."""
    ax, rows = axes[0], _rows(data)
    title = _title(data, "Latency p50 / p95")
    names = [n for n in _busiest(rows, "calls")
             if _series(rows, n, "p95_ms")[0] or _series(rows, n, "p50_ms")[0]][:5]
    if not names:
        no_data(axes, title)
        return
    for colour, name in zip(PALETTE, names, strict=False):
        ax.plot(*_series(rows, name, "p95_ms"), color=colour, marker="o", markersize=3,
                label=name)
        ax.plot(*_series(rows, name, "p50_ms"), color=colour, linestyle=":")
    ax.set_title(title, loc="left")
    ax.set_ylabel("duration (ms): p95 solid, p50 dotted")
    ax.set_ylim(bottom=0)
    time_axis(ax, _span(rows))
    _legend(ax)


# name: (draw function, number of stacked axes)
METRICS_CHARTS = {
    "calls": (draw_calls, 1),
    "errors": (draw_errors, 1),
    "latency": (draw_latency, 1),
}
