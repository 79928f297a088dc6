"""Charts: datasets (plain JSON-ready dicts) drawn as PNG (for agents) or SVG (for the console).

Domain code, nothing of HTTP. matplotlib (Agg) is imported on the first drawing only, so the
server's start and every tool that never draws do not pay for it. Output is deterministic: a
fixed size, the fonts matplotlib ships, no dates or versions in the file, a fixed SVG id salt.

Drawing is CPU work: from async code call :func:`render_async`, which runs it in a thread off
the event loop. Every chart bounds the size of what it draws and raises :class:`ChartError` past
that; an empty dataset gives a chart that says "no data in this window".

Charts, by name (see each module for its dataset):
- a project's flow (``flow``): cfd, throughput, lead_cycle, wip_age
- the metrics dashboard (``metrics``): calls, errors, latency
- report tools' figures (``reports``): daily_flow, weekly_delivery
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .canvas import FORMATS, MIME_TYPES, ChartError, drawing
from .flow import FLOW_CHARTS
from .metrics import METRICS_CHARTS
from .reports import REPORT_CHARTS

__all__ = ["FLOW_CHARTS", "FORMATS", "METRICS_CHARTS", "MIME_TYPES", "REPORT_CHARTS",
           "ChartError", "render", "render_async"]

_CHARTS = {**FLOW_CHARTS, **METRICS_CHARTS, **REPORT_CHARTS}


def render(chart: str, data: Mapping[str, Any], *, fmt: str = "png") -> bytes:
    """The chart ``chart`` of ``data`` as ``fmt`` (png or svg) bytes; blocking CPU work."""
    try:
        draw, rows = _CHARTS[chart]
    except KeyError:
        raise ChartError(f"unknown chart {chart!r} (known: {', '.join(sorted(_CHARTS))})") \
            from None
    sink: list[bytes] = []
    with drawing(fmt, sink, rows=rows, sharex=rows > 1) as (_, axes):
        draw(data, axes)
    return sink[0]


async def render_async(chart: str, data: Mapping[str, Any], *, fmt: str = "png") -> bytes:
    """:func:`render` in a worker thread, so the event loop keeps serving while it draws."""
    return await asyncio.to_thread(render, chart, data, fmt=fmt)
