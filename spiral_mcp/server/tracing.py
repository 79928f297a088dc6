"""Tracing's start-up and the span of each HTTP request (see ``spiral_mcp/tracing.py``).

On when OTEL_EXPORTER_OTLP_ENDPOINT is set: a tracer provider of this process, its spans sent in
batches (BatchSpanProcessor, a thread of its own) over OTLP/HTTP to ``<endpoint>/v1/traces``.
The SDK reads the other standard variables itself: OTEL_SERVICE_NAME (here "spiral-mcp" unless
given) and OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
_CERTIFICATE and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL that wins over ours),
OTEL_TRACES_SAMPLER and _ARG, OTEL_BSP_*; OTEL_PROPAGATORS chooses how context is read, and
OTEL_SDK_DISABLED=true keeps tracing off. Off, the tracing SDK is not imported: the app's tracer is
None, and each place that would make a span checks that once.

The provider is the app's, not installed as OpenTelemetry's global one: several apps may run in
one process (tests), and a global provider can be set only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace

from .. import __version__
from ..tracing import INSTRUMENTATION, Span, Tracer, failed, parent_from_headers
from .keys import SETTINGS, SHUTDOWN, TRACER

__all__ = ["end_request_span", "start_request_span", "tracing_context"]

log = logging.getLogger(__name__)

SERVICE_NAME = "spiral-mcp"
_TRACES_PATH = "/v1/traces"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _provider(endpoint: str) -> Any:
    """A tracer provider exporting to ``endpoint`` (imports the SDK: only with tracing on)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    detected = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    ours: dict[str, str] = {}
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        ours["service.name"] = SERVICE_NAME
    if "service.version" not in detected.attributes:
        ours["service.version"] = __version__
    if "service.instance.id" not in detected.attributes:
        # Many processes serve one installation: a trace says which one ran each span.
        ours["service.instance.id"] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=detected.merge(Resource(ours)))
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") \
        or endpoint.rstrip("/") + _TRACES_PATH
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


async def tracing_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context, first of all: the app's tracer (None: off) for what is built after it.
    On the way out, the spans still queued are sent, within the shutdown's time."""
    endpoint = app[SETTINGS].otel_exporter_otlp_endpoint
    if endpoint is None or _disabled():
        app[TRACER] = None
        yield
        return
    provider = _provider(endpoint)
    app[TRACER] = provider.get_tracer(INSTRUMENTATION, __version__)
    parts = urlsplit(endpoint)
    # Where to, without a user or password the URL may hold.
    log.info("tracing on", extra={"otlp_endpoint": f"{parts.scheme}://{parts.hostname}"
                                                   f"{f':{parts.port}' if parts.port else ''}"})
    try:
        yield
    finally:
        # In a thread: the exporter posts synchronously, and must not stop the loop (which may
        # serve the collector itself, in a test) while it does.
        flush = asyncio.ensure_future(asyncio.to_thread(provider.shutdown))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(flush), app[SHUTDOWN].left(5.0))


def start_request_span(tracer: Tracer, request: web.Request) -> tuple[Span, object]:
    """The span of one HTTP request, current until :func:`end_request_span`: a child of the
    ``traceparent`` it carries, if any. HTTP conventions' attributes, without the query string
    or any header's value (a credential, a session id)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
    name = method if method != "_OTHER" else "HTTP"
    attributes: dict[str, Any] = {
        "http.request.method": method, "url.path": request.path, "url.scheme": request.scheme,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}"}
    if route is not None:
        attributes["http.route"] = route
        name = f"{name} {route}"
    if request.remote:
        attributes["client.address"] = request.remote
    span = tracer.start_span(name, context=parent_from_headers(request.headers),
                             kind=trace.SpanKind.SERVER, attributes=attributes)
    return span, otel_context.attach(trace.set_span_in_context(span))


def end_request_span(span: Span, token: object, *, status: int, request_id: str) -> None:
    span.set_attributes({"http.response.status_code": status, "spiral.request_id": request_id})
    if status >= 500:
        failed(span, str(status))  # 4xx are the client's: not this server's failure
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]
