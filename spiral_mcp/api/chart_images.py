"""Chart images as HTTP answers: the chart and format a route names checked (unknown: 404 naming
the known ones), the drawing done off the event loop, the headers an image of a tenant's data
needs."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from typing import Any

from aiohttp import web

from ..charts import FORMATS, MIME_TYPES, render_async
from ..errors import ErrorCode, ServiceError

__all__ = ["IMAGE_TYPES", "chart_response", "check_chart"]

IMAGE_TYPES = tuple(MIME_TYPES[fmt] for fmt in FORMATS)
_HEADERS = {
    # A tenant's data: a browser may keep it a minute, no shared cache may keep it at all.
    "Cache-Control": "private, max-age=60",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened on its own is a document: no script, nothing fetched (its style is inline).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def check_chart(chart: str, fmt: str, known: Collection[str]) -> None:
    """NOT_FOUND naming what exists when ``chart`` or ``fmt`` is not one of them."""
    if chart not in known:
        raise ServiceError(ErrorCode.NOT_FOUND,
                           f"no chart {chart[:40]!r}; the charts are {', '.join(known)}")
    if fmt not in FORMATS:
        raise ServiceError(ErrorCode.NOT_FOUND,
                           f"no image format {fmt[:10]!r}; the formats are {', '.join(FORMATS)}")


async def chart_response(chart: str, fmt: str, data: Mapping[str, Any], *,
                         owner: Hashable, size: str = "full") -> web.Response:
    """``chart`` of ``data`` drawn as ``fmt`` in ``size``, as the answer (check_chart first);
    ``owner`` (the tenant) bounds how many of its drawings may wait."""
    image = await render_async(chart, data, fmt=fmt, size=size, owner=owner)
    return web.Response(body=image, content_type=MIME_TYPES[fmt], headers=_HEADERS)
