"""The chart renderer on its own: every chart as PNG and SVG, the same bytes for the same data,
"no data in this window" for an empty dataset, bounded input, matplotlib loaded only to draw."""

from __future__ import annotations

import datetime
import io
import subprocess
import sys
from typing import Any

import pytest

from spiral_mcp import charts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DAYS = [datetime.date(2026, 11, 2) + datetime.timedelta(days=i) for i in range(21)]


def flow_dataset() -> dict[str, Any]:
    return {
        "project_key": "WEB", "since": str(DAYS[0]), "until": str(DAYS[-1]),
        "cfd": [{"day": str(d), "todo": 9, "in_progress": 3, "blocked": 1, "in_review": 1,
                 "done": i, "cancelled": 0} for i, d in enumerate(DAYS)],
        "throughput": [
            {"week_start": "2026-11-02", "first_day": "2026-11-02", "last_day": "2026-11-08",
             "resolved": 4},
            {"week_start": "2026-11-09", "first_day": "2026-11-09", "last_day": "2026-11-15",
             "resolved": 6},
            {"week_start": "2026-11-16", "first_day": "2026-11-16", "last_day": "2026-11-22",
             "resolved": 0}],
        "lead_cycle": {
            "items": [{"key": f"WEB-{i}", "title": "x", "resolved_at": f"{d}T12:00:00+00:00",
                       "lead_time_days": 1.5 * i, "cycle_time_days": i if i % 3 else None}
                      for i, d in enumerate(DAYS)],
            "items_total": len(DAYS), "truncated": False,
            "lead_time": {"p50": 15.0, "p85": 25.5, "p95": 28.5},
            "cycle_time": {"p50": 10.0, "p85": 17.0, "p95": 19.0}},
        "wip": {"items": [{"key": f"WEB-{i}", "title": "x", "status": "In Progress",
                           "status_category": "in_progress", "age_days": float(i)}
                          for i in range(30)], "items_total": 30, "truncated": False},
    }


def metrics_dataset() -> dict[str, Any]:
    rows = []
    for hour in range(12):
        at = datetime.datetime(2026, 12, 6, hour, tzinfo=datetime.UTC).isoformat()
        for n, name in enumerate(("jira_get_issue", "jira_search", "sql_lead_time_metrics")):
            rows.append({"at": at, "name": name, "calls": 10 + n + hour, "errors": hour % 2,
                         "p50_ms": 5.0 + n, "p95_ms": 30.0 + n + hour})
    return {"title": "Tool calls", "since": "2026-12-06", "until": "2026-12-07", "rows": rows}


def report_dataset(kind: str) -> dict[str, Any]:
    if kind == "daily_flow":
        rows = [{"kind": "period", "created": 5, "resolved": 4, "lead_time_p50_days": 3.2,
                 "lead_time_p90_days": 9.1}]
        rows += [{"kind": "day", "day": str(d), "created": i % 3, "resolved": i % 2,
                  "wip_end_of_day": 4 + i % 4} for i, d in enumerate(DAYS)]
    else:
        rows = [{"kind": "period", "resolved": 10, "lead_time_p50_days": 4.0,
                 "lead_time_p95_days": 12.0, "cycle_time_p50_days": 2.0,
                 "cycle_time_p95_days": 6.5}]
        rows += [{"kind": "week", "week_start": f"2026-11-{2 + 7 * i:02d}", "resolved": 3 + i,
                  "lead_time_p50_days": 4.0 + i, "lead_time_p95_days": 9.0 + i,
                  "cycle_time_p50_days": 2.0, "cycle_time_p95_days": 5.0} for i in range(3)]
    return {"subject": "WEB, last 21 days", "columns": [], "rows": rows}


def dataset(chart: str) -> dict[str, Any]:
    if chart in charts.FLOW_CHARTS:
        return flow_dataset()
    if chart in charts.METRICS_CHARTS:
        return metrics_dataset()
    return report_dataset(chart)


ALL = [*charts.FLOW_CHARTS, *charts.METRICS_CHARTS, *charts.REPORT_CHARTS]


def png_size(data: bytes) -> tuple[int, int]:
    from matplotlib import image

    assert data.startswith(PNG_SIGNATURE)
    pixels = image.imread(io.BytesIO(data), format="png")
    return pixels.shape[1], pixels.shape[0]


@pytest.mark.parametrize("chart", ALL)
def test_every_chart_draws_png_and_svg_the_same_each_time(chart: str) -> None:
    png = charts.render(chart, dataset(chart), fmt="png")
    assert png_size(png) == (1280, 720)
    assert png == charts.render(chart, dataset(chart), fmt="png")
    svg = charts.render(chart, dataset(chart), fmt="svg")
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert svg == charts.render(chart, dataset(chart), fmt="svg")
    # No creation date, no software version in either file.
    assert b"<dc:date>" not in svg and b"Matplotlib v" not in svg
    assert b"matplotlib" not in png.lower()
    assert b'id="no-data"' not in svg


@pytest.mark.parametrize("chart", ALL)
def test_an_empty_dataset_says_so(chart: str) -> None:
    for empty in ({}, {"rows": [], "cfd": [], "throughput": [], "lead_cycle": {"items": []},
                       "wip": {"items": []}, "project_key": "WEB"}):
        svg = charts.render(chart, empty, fmt="svg")
        assert b'id="no-data"' in svg
        assert png_size(charts.render(chart, empty)) == (1280, 720)


def test_unknown_chart_and_format_are_named() -> None:
    with pytest.raises(charts.ChartError, match="unknown chart 'pie' \\(known: calls, cfd,"):
        charts.render("pie", {})
    with pytest.raises(charts.ChartError, match="unknown image format 'gif' \\(known: png, svg\\)"):
        charts.render("cfd", {}, fmt="gif")


def test_input_sizes_are_bounded() -> None:
    many = {"cfd": [{"day": "2026-01-01", "todo": 1}] * 401}
    with pytest.raises(charts.ChartError, match="cumulative flow: 401 points, more than the 400"):
        charts.render("cfd", many)
    rows = metrics_dataset()["rows"] * 600
    with pytest.raises(charts.ChartError, match="metrics: 21600 rows, more than the 20000"):
        charts.render("calls", {"rows": rows})


async def test_render_async_draws_off_the_event_loop() -> None:
    png = await charts.render_async("throughput", flow_dataset())
    assert png == charts.render("throughput", flow_dataset())


def test_matplotlib_is_loaded_only_to_draw() -> None:
    code = ("import sys; import spiral_mcp.server.app, spiral_mcp.charts, "
            "spiral_mcp.handlers.sql_templates; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _last_hour_only() -> dict[str, Any]:
    """Calls in the window's last bucket only: the error-rate and latency charts' one point
    lies on the window's end."""
    end = datetime.datetime(2026, 12, 7, 7, tzinfo=datetime.UTC)
    rows = [{"at": (end - datetime.timedelta(hours=23 - i)).isoformat(), "name": "jira_search",
             "calls": 4 if i == 23 else 0, "errors": 1 if i == 23 else 0,
             "p50_ms": 5.0 if i == 23 else None, "p95_ms": 9.0 if i == 23 else None}
            for i in range(24)]
    return {"title": "Usage", "rows": rows}


@pytest.mark.parametrize("chart", ["errors", "latency"])
def test_a_point_at_the_windows_end_is_drawn_whole(chart: str) -> None:
    from spiral_mcp.charts import canvas
    from spiral_mcp.charts.metrics import METRICS_CHARTS

    draw, rows = METRICS_CHARTS[chart]
    sink: list[bytes] = []
    data = _last_hour_only()
    with canvas.drawing("png", sink, rows=rows) as (_, axes):
        draw(data, axes)
        left, right = axes[0].get_xlim()
        first, last = (canvas.parse_instant(data["rows"][i]["at"]) for i in (0, -1))
        dates = canvas._matplotlib()[2]
        assert left < dates.date2num(first) and right > dates.date2num(last)


@pytest.mark.parametrize("chart", ["calls", "errors", "latency"])
def test_the_compact_size_is_640_by_520(chart: str) -> None:
    png = charts.render(chart, _last_hour_only(), fmt="png", size="compact")
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (640, 520)
    svg = charts.render(chart, _last_hour_only(), fmt="svg", size="compact").decode()
    assert 'width="288pt" height="234pt"' in svg
    # The full size keeps its bytes: the same data draws the same image as before compact.
    assert charts.render(chart, _last_hour_only(), fmt="png") == charts.render(
        chart, _last_hour_only(), fmt="png", size="full")


def test_an_unknown_size_is_refused() -> None:
    with pytest.raises(charts.ChartError, match="unknown chart size 'huge'"):
        charts.render("calls", _last_hour_only(), size="huge")
