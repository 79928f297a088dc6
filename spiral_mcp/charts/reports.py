"""The figures of two report tools, drawn for a person reading an agent's answer.

The dataset is the tool's own result (``columns``, ``rows``: see the templates
sql_get_project_metrics and sql_lead_time_metrics) plus a ``subject`` naming what it covers
("WEB, last 30 days"): the picture shows exactly the numbers the agent got, no second query.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .canvas import PALETTE, ChartError, no_data, parse_day, time_axis

__all__ = ["REPORT_CHARTS", "draw_daily_flow", "draw_weekly_delivery"]

MAX_ROWS = 400  # both templates' row caps are below this


def _rows(data: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    rows = list(data.get("rows") or ())
    if len(rows) > MAX_ROWS:
        raise ChartError(f"report: {len(rows)} rows, more than the {MAX_ROWS} a chart draws")
    return [row for row in rows if row.get("kind") == kind]


def _period(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((row for row in data.get("rows") or () if row.get("kind") == "period"), {})


def _days(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1f} d"


def draw_daily_flow(data: Mapping[str, Any], axes: list[Any]) -> None:
    """sql_get_project_metrics: items created and resolved per day (bars, top) and work in
    progress at each day's end (line, bottom); the period's lead time in the title."""
    days = _rows(data, "day")
    period = _period(data)
    title = (f"{data.get('subject', '')}: lead time p50 "
             f"{_days(period.get('lead_time_p50_days'))}, p90 "
             f"{_days(period.get('lead_time_p90_days'))}")
    if not days or not any(row.get(f) for row in days
                           for f in ("created", "resolved", "wip_end_of_day")):
        no_data(axes, title)
        return
    x = [parse_day(row["day"]) for row in days]
    width = 0.4
    shift = datetime.timedelta(days=width / 2)
    axes[0].bar([d - shift for d in x], [row.get("created") or 0 for row in days], width=width,
                color=PALETTE[5], label=f"created ({period.get('created', 0)})")
    axes[0].bar([d + shift for d in x], [row.get("resolved") or 0 for row in days],
                width=width, color=PALETTE[2], label=f"resolved ({period.get('resolved', 0)})")
    axes[0].set_ylabel("items per day")
    axes[0].legend(loc="upper left")
    axes[0].set_title(title, loc="left")
    axes[1].plot(x, [row.get("wip_end_of_day") or 0 for row in days], color=PALETTE[0],
                 marker="o", markersize=3, label="in progress at day's end")
    axes[1].set_ylabel("items in progress")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="upper left")
    time_axis(axes[1], [x[0] - shift * 2, x[-1] + shift * 2])


def draw_weekly_delivery(data: Mapping[str, Any], axes: list[Any]) -> None:
    """sql_lead_time_metrics: items done per ISO week (bars, top) and each week's lead and cycle
    time p50/p95 (lines, bottom); the period's figures in the title."""
    weeks = _rows(data, "week")
    period = _period(data)
    title = (f"{data.get('subject', '')}: {period.get('resolved', 0)} done, lead p50 "
             f"{_days(period.get('lead_time_p50_days'))} / p95 "
             f"{_days(period.get('lead_time_p95_days'))}, cycle p50 "
             f"{_days(period.get('cycle_time_p50_days'))} / p95 "
             f"{_days(period.get('cycle_time_p95_days'))}")
    if not weeks or not any(row.get("resolved") for row in weeks):
        no_data(axes, title)
        return
    labels = [f"W{parse_day(row['week_start']).isocalendar().week:02d}" for row in weeks]
    x = range(len(weeks))
    bars = axes[0].bar(x, [row.get("resolved") or 0 for row in weeks], color=PALETTE[2],
                       width=0.7, label="done per week")
    axes[0].bar_label(bars, fontsize=8, padding=2)
    axes[0].set_ylabel("items done")
    axes[0].margins(y=0.2)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].set_title(title, loc="left", fontsize=10)
    for field, colour in (("lead_time", PALETTE[0]), ("cycle_time", PALETTE[1])):
        for name, style in (("p50", ":"), ("p95", "-")):
            values = [row.get(f"{field}_{name}_days") for row in weeks]
            axes[1].plot([i for i, v in zip(x, values, strict=True) if v is not None],
                         [v for v in values if v is not None], color=colour, linestyle=style,
                         marker="o", markersize=3, label=f"{field.split('_')[0]} {name}")
    axes[1].set_ylabel("days")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1].set_xticks(list(x), labels, fontsize=8)
    for ax in axes:
        ax.grid(axis="x", visible=False)


# name: (draw function, number of stacked axes)
REPORT_CHARTS = {
    "daily_flow": (draw_daily_flow, 2),
    "weekly_delivery": (draw_weekly_delivery, 2),
}
