"""Charts: datasets (plain JSON-ready dicts) drawn as PNG (for agents) or SVG (for the console).

Domain code, nothing of HTTP. matplotlib (Agg) is imported on the first drawing only, so the
server's start and every tool that never draws do not pay for it. Output is deterministic: a
fixed size, the fonts matplotlib ships, no dates or versions in the file, a fixed SVG id salt.

Drawing is CPU work: from async code call :func:`render_async`, which runs it off the event loop
on the charts' own thread (never the loop's default executor, which DNS lookups and other
threads' work wait on), one at a time; what waits for it is bounded per owner (a tenant) and in
all, past which a drawing is refused as RATE_LIMITED. Every chart bounds the size of what it
draws and raises :class:`ChartError` past that; an empty dataset gives a chart that says "no
data in this window".

Charts, by name (see each module for its dataset):
- a project's flow (``flow``): cfd, throughput, lead_cycle, wip_age
- the metrics dashboard (``metrics``): calls, errors, latency
- report tools' figures (``reports``): daily_flow, weekly_delivery
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ErrorCode, ServiceError
from .canvas import FORMATS, MIME_TYPES, SIZES, ChartError, drawing
from .flow import FLOW_CHARTS
from .metrics import METRICS_CHARTS
from .reports import REPORT_CHARTS

__all__ = ["FLOW_CHARTS", "FORMATS", "MAX_WAITING", "MAX_WAITING_EACH", "METRICS_CHARTS",
           "MIME_TYPES", "REPORT_CHARTS", "SIZES", "ChartError", "render", "render_async"]

_CHARTS = {**FLOW_CHARTS, **METRICS_CHARTS, **REPORT_CHARTS}
# Drawings waiting or under way: a dashboard's page asks for a handful at once; past these a
# tenant (or all of them) is asking faster than one thread draws.
MAX_WAITING_EACH = 8
MAX_WAITING = 32
_RETRY_SECONDS = 2.0
# One thread: Agg draws one figure at a time anyway (canvas._LOCK).
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spiral-charts")
_waiting: collections.Counter[Hashable] = collections.Counter()


def render(chart: str, data: Mapping[str, Any], *, fmt: str = "png",
           size: str = "full") -> bytes:
    """The chart ``chart`` of ``data`` as ``fmt`` (png or svg) bytes of ``size`` (full or
    compact, see canvas.SIZES); blocking CPU work."""
    try:
        draw, rows = _CHARTS[chart]
    except KeyError:
        raise ChartError(f"unknown chart {chart!r} (known: {', '.join(sorted(_CHARTS))})") \
            from None
    sink: list[bytes] = []
    with drawing(fmt, sink, rows=rows, sharex=rows > 1, size=size) as (_, axes):
        draw(data, axes)
    return sink[0]


async def render_async(chart: str, data: Mapping[str, Any], *, fmt: str = "png",
                       size: str = "full", owner: Hashable = None) -> bytes:
    """:func:`render` on the charts' thread, so the event loop keeps serving while it draws;
    RATE_LIMITED when ``owner`` (the tenant) already has MAX_WAITING_EACH drawings waiting or
    everyone MAX_WAITING."""
    if _waiting[owner] >= MAX_WAITING_EACH or _waiting.total() >= MAX_WAITING:
        who = "this tenant" if _waiting[owner] >= MAX_WAITING_EACH else "this server"
        raise ServiceError(ErrorCode.RATE_LIMITED,
                           f"too many charts are being drawn for {who}; retry in a few seconds",
                           retry_after=_RETRY_SECONDS)
    _waiting[owner] += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _EXECUTOR, functools.partial(render, chart, data, fmt=fmt, size=size))
    finally:
        _waiting[owner] -= 1
        if not _waiting[owner]:
            del _waiting[owner]
