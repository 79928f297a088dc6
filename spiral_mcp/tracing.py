"""Traces (OpenTelemetry): where a span's parent comes from, and the spans of the lower layers.

Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; then ``server/tracing.py`` builds a
tracer provider for the process and hands its tracer to what makes spans (the request
middleware, the tool registry, the named statements, the source sync). When off, each of them
holds None instead of a tracer and checks that once: no provider, no span object, no context
lookup on the request path.

What a span may carry is decided here and in its callers, never by a library: names of things
(route, tool, statement), ids (tenant, key id, request id), outcomes and error codes. Never a
header's value, a body, a tool's arguments, SQL text or a bind parameter.

Trace context comes from two places (see ``meta_parent``): the W3C ``traceparent`` and
``tracestate`` HTTP headers, the parent of the HTTP request's span; and the same keys in a
request's ``params._meta``, which the MCP specification (2026-07-28, "OpenTelemetry trace
context") reserves for this, the parent of that MCP request's span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, Tracer

__all__ = ["INSTRUMENTATION", "Span", "Tracer", "background_span", "current_ids", "failed",
           "mcp_span", "meta_parent", "parent_from_headers", "statement_span", "traced_sql"]

# The instrumentation scope named on every span of the product.
INSTRUMENTATION = "spiral_mcp"

# The keys of a carrier the propagators read (W3C trace context and baggage, the defaults of
# OTEL_PROPAGATORS); nothing else of a request's headers or _meta is handed to them.
_CONTEXT_KEYS = ("traceparent", "tracestate", "baggage")


def _extract(carrier: Mapping[str, Any]) -> Context | None:
    """The context a carrier's trace keys give, or None without a valid remote span in it."""
    picked = {key: value for key in _CONTEXT_KEYS
              if isinstance(value := carrier.get(key), str) and len(value) <= 8192}
    if "traceparent" not in picked:
        return None
    context = propagate.extract(picked)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None  # malformed: ignored, as W3C Trace Context says, never a failed request
    return context


def parent_from_headers(headers: Mapping[str, str]) -> Context | None:
    """The parent an HTTP request names in ``traceparent``/``tracestate``, or None."""
    if "traceparent" not in headers:
        return None
    return _extract({key: headers[key] for key in _CONTEXT_KEYS if key in headers})


def meta_parent(params: Mapping[str, Any]) -> Context | None:
    """The parent an MCP request names in ``params._meta`` (``traceparent``, ``tracestate``,
    ``baggage``; unprefixed, as the 2026-07-28 specification reserves them), or None.

    It wins over the HTTP request's context for the MCP request's own span (a tool call, a
    resource read, a prompt), which then links to the HTTP span. The specification gives no
    order between the two; the OpenTelemetry MCP conventions do: the receiver uses the _meta
    context as the parent and links the ambient (transport) one, because the two are
    independent: one MCP request may travel in several HTTP requests (a retry, the stateless
    era's rounds, a balancer sending them to different processes) and one HTTP request may
    carry several MCP requests (a batch), so only the context in the message names the
    client's span for that message. The HTTP span keeps the header's context.
    """
    meta = params.get("_meta")
    if not isinstance(meta, dict) or "traceparent" not in meta:
        return None
    return _extract(meta)


def current_ids() -> tuple[str, str] | None:
    """The trace id and span id (hex) of the span current in this task, or None: for the log
    line written now."""
    span = trace.get_current_span()
    if span is INVALID_SPAN:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def failed(span: Span, error_type: str) -> None:
    """Mark ``span`` failed with a low-cardinality ``error.type`` (an error code, an exception's
    class name). The description is the same word: an error's message may quote what a caller
    sent (an argument, a value the database refused), and a span carries none of that."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


@contextlib.contextmanager
def _current(span: Span, expected: tuple[type[BaseException], ...] = ()) -> Iterator[Span]:
    """``span`` current for the block and ended after it; an exception passing through marks it
    failed by its error code (a ServiceError's) or class name, unless it is one of
    ``expected`` (not a failure: a question for the client). No exception event: its message
    and stack may hold values."""
    with trace.use_span(span, end_on_exit=True, record_exception=False,
                        set_status_on_exception=False):
        try:
            yield span
        except expected as exc:
            span.set_attribute("spiral.outcome", type(exc).__name__)
            raise
        except BaseException as exc:
            code = getattr(exc, "code", None)
            failed(span, code if isinstance(code, str) else type(exc).__name__)
            raise


def mcp_span(tracer: Tracer, method: str, target: str | None, *, parent: Context | None,
             attributes: dict[str, Any], expected: tuple[type[BaseException], ...] = ()
             ) -> contextlib.AbstractContextManager[Span]:
    """The span of one MCP request (``tools/call <tool>``, ``resources/read``,
    ``prompts/get <prompt>``), current for the block. With a ``parent`` from the request's
    _meta it is that span's child and links to the HTTP request's span (see meta_parent);
    without, the HTTP request's span is its parent."""
    links = None
    if parent is not None:
        ambient = trace.get_current_span().get_span_context()
        if ambient.is_valid:
            links = [Link(ambient, {"spiral.link": "http.request"})]
    name = method if target is None else f"{method} {target}"
    span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, links=links,
                             attributes={"mcp.method.name": method, **attributes})
    return _current(span, expected)


# What every statement span says of the database (OpenTelemetry database conventions: the
# older db.system beside db.system.name, which backends still read).
_POSTGRESQL = {"db.system.name": "postgresql", "db.system": "postgresql"}


def statement_span(tracer: Tracer, name: str, operation: str
                   ) -> contextlib.AbstractContextManager[Span] | None:
    """The span of one database statement named ``name`` (a named statement of the .sql
    files; "explorer_query" for an explorer query), current for the block; None when no span
    is recording in this task, which makes it the caller's to run the statement untraced.

    Only a statement inside traced work gets a span: the periodic flushes and batch writes of
    the background, with no span of their own, would otherwise each be a trace of one span.
    Never the SQL text or a parameter: the name says which statement of the code it was.
    """
    if not trace.get_current_span().is_recording():
        return None
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes={
        **_POSTGRESQL, "db.operation.name": operation, "db.query.summary": name})
    return _current(span)


def traced_sql(tracer: Tracer | None, name: str, operation: str = "SELECT"
               ) -> contextlib.AbstractContextManager[Span | None]:
    """``statement_span`` for SQL that is not a named statement (JQL compiled to SQL, a report
    template, an explorer query), named by what it is; a do-nothing block when tracing is off
    or no span records here."""
    if tracer is None:
        return contextlib.nullcontext()
    return statement_span(tracer, name, operation) or contextlib.nullcontext()


def background_span(tracer: Tracer | None, name: str, attributes: dict[str, Any]
                    ) -> contextlib.AbstractContextManager[Span | None]:
    """A root span for work of the server's own (a source's background sync), current for the
    block, so its statements form one trace; a do-nothing block when tracing is off."""
    if tracer is None:
        return contextlib.nullcontext()
    return _current(tracer.start_span(name, context=Context(), kind=SpanKind.INTERNAL,
                                      attributes=attributes))
