"""A project's flow, drawn from the dashboard dataset (``spiral_mcp.dashboards.project_flow``):
cumulative flow, throughput per week, lead and cycle times with their percentiles, work in
progress and its age.

Each function takes the whole dataset (a JSON-ready dict) and the axes to draw on; it reads only
its part of it. Sizes are bounded here too, whoever built the dataset.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .canvas import (
    CATEGORY_COLOURS,
    PALETTE,
    ChartError,
    is_compact,
    no_data,
    parse_day,
    parse_instant,
    time_axis,
)

__all__ = ["FLOW_CHARTS", "draw_cfd", "draw_lead_cycle", "draw_throughput", "draw_wip_age"]

# Bottom to top: what is finished lies under what is still moving, arrivals on top.
CFD_LAYERS = ("cancelled", "done", "in_review", "blocked", "in_progress", "todo")
_LABELS = {"todo": "To do", "in_progress": "In progress", "blocked": "Blocked",
           "in_review": "In review", "done": "Done", "cancelled": "Cancelled"}
MAX_DAYS = 400
MAX_WEEKS = 60
MAX_POINTS = 5000
# Bars beyond this many stop being readable at a phone's width.
WIP_BARS = 20
PERCENTILES = ("p50", "p85", "p95")
_PERCENTILE_STYLES = {"p50": ":", "p85": "--", "p95": "-."}


def _title(data: Mapping[str, Any], what: str) -> str:
    return f"{data.get('project_key', '')} {what}, {data.get('since')} to {data.get('until')}"


def _bounded(rows: list[Any], limit: int, what: str) -> list[Any]:
    if len(rows) > limit:
        raise ChartError(f"{what}: {len(rows)} points, more than the {limit} a chart draws")
    return rows


def draw_cfd(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Stacked areas: how many items were in each status category at each day's end."""
    ax = axes[0]
    rows = _bounded(list(data.get("cfd") or ()), MAX_DAYS, "cumulative flow")
    title = _title(data, "cumulative flow")
    if not rows or not any(row.get(c) for row in rows for c in CFD_LAYERS):
        no_data(axes, title)
        return
    days = [parse_day(row["day"]) for row in rows]
    layers = [c for c in CFD_LAYERS if any(row.get(c) for row in rows)]
    ax.stackplot(days, *[[row.get(c) or 0 for row in rows] for c in layers],
                 labels=[_LABELS[c] for c in layers],
                 colors=[CATEGORY_COLOURS[c] for c in layers], linewidth=0.4,
                 edgecolor="white")
    ax.set_title(title, loc="left")
    ax.set_ylabel("items")
    time_axis(ax, days)
    handles, labels = ax.get_legend_handles_labels()
    # Legend top to bottom as the layers lie.
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0))


def draw_throughput(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Bars: items done per ISO week (first and last week may be partial)."""
    ax = axes[0]
    rows = _bounded(list(data.get("throughput") or ()), MAX_WEEKS, "throughput")
    title = _title(data, "throughput per week")
    if not rows or not any(row.get("resolved") for row in rows):
        no_data(axes, title)
        return
    labels = [_week_label(row) for row in rows]
    counts = [row.get("resolved") or 0 for row in rows]
    bars = ax.bar(range(len(rows)), counts, color=PALETTE[2], width=0.7)
    ax.bar_label(bars, fontsize=8, padding=2)
    # Labels side by side while they fit: half as many on a compact chart.
    crowded = len(rows) > (4 if is_compact(ax.figure) else 8)
    ax.set_xticks(range(len(rows)), labels, rotation=45 if crowded else 0,
                  ha="right" if crowded else "center", fontsize=8)
    ax.set_title(title, loc="left")
    ax.set_ylabel("items done")
    ax.grid(axis="x", visible=False)
    ax.margins(y=0.15)


def _week_label(row: Mapping[str, Any]) -> str:
    """"W48 23 Nov", with a star when the window clips the week."""
    start = parse_day(row["week_start"])
    whole = (parse_day(row["first_day"]) == start
             and (parse_day(row["last_day"]) - start).days == 6)
    return f"W{start.isocalendar().week:02d} {start:%d %b}" + ("" if whole else "*")


def draw_lead_cycle(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Two scatters sharing the time axis: each done item's lead time (top) and cycle time
    (bottom) at the moment it was done, with the p50/p85/p95 lines of each."""
    times = data.get("lead_cycle") or {}
    items = _bounded(list(times.get("items") or ()), MAX_POINTS, "lead and cycle times")
    title = _title(data, "lead and cycle time")
    if not items:
        no_data(axes, title)
        return
    done = [parse_instant(item["resolved_at"]) for item in items]
    for ax, field, label, colour, marker in (
            (axes[0], "lead_time", "lead time", PALETTE[0], "o"),
            (axes[1], "cycle_time", "cycle time", PALETTE[1], "^")):
        points = [(at, item[f"{field}_days"]) for at, item in zip(done, items, strict=True)
                  if item.get(f"{field}_days") is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=16, color=colour,
                   marker=marker, alpha=0.8, clip_on=False, zorder=3)
        marks = [(name, value) for name in PERCENTILES
                 if (value := (times.get(field) or {}).get(name)) is not None]
        for name, value in marks:
            ax.axhline(value, color="#333333", linestyle=_PERCENTILE_STYLES[name],
                       linewidth=1.1)
        ax.set_ylabel(f"{label}, days\n({len(points)} items)")
        ax.set_ylim(bottom=0)
        _label_lines(ax, marks)
    axes[0].set_title(title, loc="left")
    if data.get("since") and data.get("until"):
        # The whole window, its last day to its end: items done today are not cut in half.
        first = parse_day(data["since"])
        last = parse_day(data["until"]) + datetime.timedelta(days=1)
        limits = [datetime.datetime.combine(d, datetime.time(), datetime.UTC)
                  for d in (first, last)]
    else:
        limits = [min(done), max(done)]
    time_axis(axes[1], limits)


def _label_lines(ax: Any, marks: list[tuple[str, float]]) -> None:
    """Each percentile line named on the right edge ("p85 14.3 d"), as ticks of a right-hand
    axis (so the layout keeps them in the figure); lines too close to be told apart share one
    label ("p85 10.1 / p95 10.7 d") instead of printing over each other."""
    low, high = ax.get_ylim()
    groups: list[list[tuple[str, float]]] = []
    for mark in sorted(marks, key=lambda m: m[1]):
        if groups and mark[1] - groups[-1][-1][1] < 0.07 * (high - low):
            groups[-1].append(mark)
        else:
            groups.append([mark])
    # Stacked on a compact chart: side by side they would take half its width.
    joint = "\n" if is_compact(ax.figure) else " / "
    right = ax.secondary_yaxis("right")
    right.set_yticks([sum(v for _, v in g) / len(g) for g in groups],
                     [joint.join(f"{n} {v:.1f}" for n, v in g) + " d" for g in groups],
                     fontsize=8)
    right.tick_params(length=0)
    right.spines["right"].set_visible(False)


def draw_wip_age(data: Mapping[str, Any], axes: list[Any]) -> None:
    """Horizontal bars: the oldest items in progress (in_progress, blocked, in_review) and how
    many days since each started, coloured by its status category."""
    ax = axes[0]
    wip = data.get("wip") or {}
    items = list(wip.get("items") or ())[:WIP_BARS]
    total = wip.get("items_total", len(items))
    title = f"{data.get('project_key', '')} work in progress on {data.get('until')} by age"
    if not items:
        no_data(axes, title)
        return
    items = sorted(items, key=lambda item: item.get("age_days") or 0)
    ages = [item.get("age_days") or 0 for item in items]
    colours = [CATEGORY_COLOURS.get(item.get("status_category"), PALETTE[7]) for item in items]
    labels = [f"{item['key']} {item.get('status', '')}" for item in items]
    bars = ax.barh(range(len(items)), ages, color=colours, height=0.7)
    ax.bar_label(bars, labels=[f"{age:.1f} d" for age in ages], fontsize=7, padding=2)
    ax.set_yticks(range(len(items)), labels, fontsize=7 if len(items) > 12 else 8)
    ax.set_xlabel("days since started")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.12)
    shown = f"{len(items)} oldest of {total}" if total > len(items) else f"{total} items"
    ax.set_title(f"{title} ({shown})", loc="left")
    present = [c for c in ("in_progress", "blocked", "in_review")
               if any(item.get("status_category") == c for item in items)]
    from matplotlib.patches import Patch  # matplotlib is loaded by the time a chart is drawn

    ax.legend(handles=[Patch(facecolor=CATEGORY_COLOURS[c], label=_LABELS[c]) for c in present],
              loc="lower right")


# name: (draw function, number of stacked axes)
FLOW_CHARTS = {
    "cfd": (draw_cfd, 1),
    "throughput": (draw_throughput, 1),
    "lead_cycle": (draw_lead_cycle, 2),
    "wip_age": (draw_wip_age, 1),
}
