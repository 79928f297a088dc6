"""Traces (OpenTelemetry), over real HTTP, exported over the real OTLP/HTTP wire format to a
collector served by the test: the chain of spans of a tool call, the trace context taken from
``traceparent`` and from a stateless request's ``_meta``, what a span never carries, the trace id
in the log line, and nothing at all with tracing off."""

from __future__ import annotations

import gzip
import logging
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Tenant, TenantFactory, make_settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from serving import app_clients

from spiral_mcp.config import ConfigError, load_settings
from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.provision import DatabaseUrls
from spiral_mcp.queries import Queries, Query
from spiral_mcp.server.app import create_app
from spiral_mcp.server.keys import DATABASE, DISPATCHER, TRACER
from spiral_mcp.server.logs import JsonFormatter
from tests.test_transports import (
    _legacy_stream,
    modern_request,
    open_session,
    post,
    post_modern,
    read_event,
    request,
)

# Distinctive values sent as tool arguments: they reach SQL as bind parameters, and must reach
# no span.
SEARCHED = "zqx-searched-7731"
EXPLORED = "zqx-explored-5521"


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def receive(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        self.headers.append(dict(request.headers))
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            self.resources.append({a.key: _value(a.value)
                                   for a in resource_spans.resource.attributes})
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self.receive)
        return app

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def children(self, parent: Span) -> list[Span]:
        return [s for s in self.spans
                if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id]


def in_order(spans: list[Span]) -> list[Span]:
    return sorted(spans, key=lambda span: span.start_time_unix_nano)


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def attributes(span: Span) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


class Lines(logging.Handler):
    """The JSON log lines of a logger, formatted when written (inside the request's span)."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter = JsonFormatter()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    logger = logging.getLogger("spiral_mcp.http")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    receiver = Collector()
    server = TestServer(receiver.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def traceparent() -> tuple[str, str, str]:
    """A fresh W3C traceparent and its trace and span ids (hex)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def call_tool(client: TestClient, tenant: Tenant, sid: str, name: str,
                    **extra: str) -> dict[str, Any]:
    arguments = {"jira_search": {"jql": f'summary ~ "{SEARCHED}"'},
                 "explorer_query": {"sql": f"SELECT '{EXPLORED}' AS marker"}}[name]
    response = await post(client, tenant, request("tools/call", 2, name=name,
                                                  arguments=arguments),
                          sid=sid, version="2025-11-25", **extra)
    assert response.status == 200, await response.text()
    result = (await response.json())["result"]
    assert not result["isError"], result
    return result


async def test_a_tool_call_is_one_chain_of_spans_and_carries_no_value(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str],
        access_lines: Lines) -> None:
    receiver, endpoint = collector
    header, header_trace, header_span = traceparent()
    in_meta, meta_trace, meta_span = traceparent()
    both_header, both_header_trace, _ = traceparent()
    async with app_clients() as start:
        app = create_app(make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                                       SYNC_INTERVAL="0"),
                         database_url=database_urls.runtime, explorer_url=database_urls.explorer)
        client = await start(app)
        assert app[TRACER] is not None
        sid = await open_session(client, tenant)
        # A session era call, its context in the traceparent header.
        await call_tool(client, tenant, sid, "jira_search", traceparent=header,
                        tracestate="vendor=opaque")
        # The explorer's user SQL: a span, never its text.
        await call_tool(client, tenant, sid, "explorer_query")
        # A malformed traceparent is ignored: a trace of the server's own, no failure.
        await call_tool(client, tenant, sid, "jira_search", traceparent="00-zz-not-a-context")
        # The stateless era, its context in _meta and another in the header.
        body = modern_request("tools/call", 3, name="jira_search",
                              arguments={"jql": f'summary ~ "{SEARCHED}"'})
        body["params"]["_meta"]["traceparent"] = in_meta
        response = await post_modern(client, tenant, body, traceparent=both_header)
        assert response.status == 200, await response.text()
        assert not (await response.json())["result"]["isError"]
    # The app has stopped: its spans were flushed to the collector on the way out.
    # Named statements, and the SQL of the code's own that is not one, named for what it is.
    statements = {*app[DATABASE].queries._queries, "jql_search_page", "jql_search_count"}

    # The session call: HTTP span (child of the header's) -> tool span -> statement spans.
    http, = [s for s in receiver.named("POST /mcp") if s.trace_id.hex() == header_trace]
    assert http.parent_span_id.hex() == header_span
    assert http.kind == Span.SPAN_KIND_SERVER
    assert attributes(http) | {"client.address": None} == {
        "http.request.method": "POST", "http.route": "/mcp", "url.path": "/mcp",
        "url.scheme": "http", "network.protocol.version": "1.1", "client.address": None,
        "http.response.status_code": 200, "spiral.request_id": attributes(http)[
            "spiral.request_id"]}
    tool, = [s for s in receiver.children(http) if s.name.startswith("tools/call")]
    assert tool.name == "tools/call jira_search"
    assert attributes(tool) == {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "jira_search",
        "gen_ai.operation.name": "execute_tool", "spiral.tenant_id": str(tenant.id),
        "spiral.key_id": str(tenant.key_id), "spiral.credential": "api_key",
        "spiral.request_id": attributes(http)["spiral.request_id"], "spiral.outcome": "ok"}
    # The tool's transaction: BEGIN (with the tenant's setting), its statements, COMMIT, in
    # that order, each a span named by the command alone.
    begin, *queries, commit = in_order(receiver.children(tool))
    assert (begin.name, commit.name) == ("BEGIN", "COMMIT")
    assert queries and {q.name for q in queries} <= statements
    for span in (begin, *queries, commit):
        assert span.kind == Span.SPAN_KIND_CLIENT
        operation = span.name if span in (begin, commit) else "SELECT"
        assert attributes(span) == {
            "db.system.name": "postgresql", "db.system": "postgresql",
            "db.operation.name": operation, "db.query.summary": span.name}
    # Whatever else ran under the HTTP span (authentication, with no key cached) is statements.
    assert {s.name for s in receiver.children(http) if s is not tool} <= statements | {
        "BEGIN", "COMMIT"}

    # The explorer: a span named explorer_query under its tool's, the explorer's own named
    # statements under it.
    explorer_tool, = receiver.named("tools/call explorer_query")
    explored, = [s for s in receiver.children(explorer_tool) if s.name == "explorer_query"]
    assert attributes(explored)["db.system.name"] == "postgresql"
    assert {s.name for s in receiver.children(explored)} <= statements

    # The stateless call: its tool span is the child of _meta's context and links to the HTTP
    # request's span, which is the child of the header's.
    modern_tool, = [s for s in receiver.named("tools/call jira_search")
                    if s.trace_id.hex() == meta_trace]
    assert modern_tool.parent_span_id.hex() == meta_span
    modern_http, = [s for s in receiver.named("POST /mcp")
                    if s.trace_id.hex() == both_header_trace]
    assert [(link.trace_id, link.span_id) for link in modern_tool.links] == [
        (modern_http.trace_id, modern_http.span_id)]
    assert receiver.children(modern_tool), "its statements are in _meta's trace"

    # The malformed traceparent: served, in a trace of its own.
    known = {header_trace, meta_trace, both_header_trace}
    assert len([s for s in receiver.named("tools/call jira_search")
                if s.trace_id.hex() not in known]) == 1

    # Nothing exported holds the key, an argument, a bind parameter or SQL text.
    exported = b"".join(receiver.bodies)
    for secret in (tenant.key.encode(), SEARCHED.encode(), EXPLORED.encode(), b"SELECT ",
                   b"Bearer", sid.encode()):
        assert secret not in exported
    # The tenant id is an attribute of the tool's span only: never of a statement's (BEGIN's
    # text sets it, and no text of it is exported).
    for span in receiver.spans:
        if span.kind == Span.SPAN_KIND_CLIENT:
            assert str(tenant.id) not in str(attributes(span).values())
    for text in (b"SET LOCAL", b"app.tenant_id", b"READ ONLY"):
        assert text not in exported
    assert receiver.resources[0]["service.name"] == "spiral-mcp"

    # The access line of the call leads to its trace.
    line, = [line for line in access_lines.lines if line.get("trace_id") == header_trace]
    assert line["span_id"] == http.span_id.hex() and line["path"] == "/mcp"
    assert line["request_id"] == attributes(http)["spiral.request_id"]


async def test_a_tool_error_a_resource_read_and_a_prompt_are_spans_too(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str]) -> None:
    receiver, endpoint = collector
    in_meta, meta_trace, meta_span = traceparent()
    async with app_clients() as start:
        client = await start(create_app(
            make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint + "/",
                          SYNC_INTERVAL="0"), database_url=database_urls.runtime))
        sid = await open_session(client, tenant)
        response = await post(client, tenant, request(
            "tools/call", 2, name="jira_get_issue", arguments={"issue_key": "NOPE-404"}),
            sid=sid, version="2025-11-25")
        assert (await response.json())["result"]["isError"]
        listed = await post(client, tenant, request("resources/list", 3), sid=sid,
                            version="2025-11-25")
        uri = (await listed.json())["result"]["resources"][0]["uri"]
        read = await post(client, tenant, request("resources/read", 4, uri=uri), sid=sid,
                          version="2025-11-25")
        assert "result" in await read.json()
        # A prompt from a client in the stateless era, its context in _meta.
        prompt = modern_request("prompts/get", 5, name="backlog_triage",
                                arguments={"project_key": "WEB"})
        prompt["params"]["_meta"]["traceparent"] = in_meta
        got = await post_modern(client, tenant, prompt, **{"Mcp-Name": "backlog_triage"})
        assert "result" in await got.json()
    failed, = receiver.named("tools/call jira_get_issue")
    assert attributes(failed)["spiral.outcome"] == "error"
    assert attributes(failed)["spiral.error_code"] == "NOT_FOUND"
    assert attributes(failed)["error.type"] == "tool_error"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    assert b"NOPE-404" not in b"".join(receiver.bodies)
    read_span, = receiver.named("resources/read")
    assert attributes(read_span)["spiral.resource"] == uri
    assert attributes(read_span)["spiral.tenant_id"] == str(tenant.id)
    prompt_span, = receiver.named("prompts/get backlog_triage")
    assert prompt_span.trace_id.hex() == meta_trace and prompt_span.parent_span_id.hex() == \
        meta_span
    assert attributes(prompt_span)["gen_ai.prompt.name"] == "backlog_triage"


async def test_a_failed_write_rolls_back_in_a_span_and_a_failed_commit_is_marked(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str]) -> None:
    receiver, endpoint = collector
    async with app_clients() as start:
        app = create_app(make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                                       SYNC_INTERVAL="0"), database_url=database_urls.runtime)
        client = await start(app)
        sid = await open_session(client, tenant)
        response = await post(client, tenant, request(
            "tools/call", 2, name="jira_update_issue",
            arguments={"issue_key": "NOPE-404", "fields": {"summary": "Never written"}}),
            sid=sid, version="2025-11-25")
        assert (await response.json())["result"]["isError"]
        # A COMMIT the server refuses: a deferred unique constraint is checked only then.
        with app[TRACER].start_as_current_span("deferred check"), \
                pytest.raises(ServiceError) as refused:
            async with app[DATABASE].tenant(tenant.id) as conn:
                await conn.execute("CREATE TEMP TABLE zqx_once (n int UNIQUE DEFERRABLE "
                                   "INITIALLY DEFERRED) ON COMMIT DROP")
                await conn.execute("INSERT INTO zqx_once VALUES (1), (1)")
        assert refused.value.code is ErrorCode.VALIDATION_ERROR
    write, = receiver.named("tools/call jira_update_issue")
    begin, *queries, rollback = in_order(receiver.children(write))
    assert (begin.name, rollback.name) == ("BEGIN", "ROLLBACK")
    assert queries and "COMMIT" not in {q.name for q in queries}
    assert attributes(rollback) == {
        "db.system.name": "postgresql", "db.system": "postgresql",
        "db.operation.name": "ROLLBACK", "db.query.summary": "ROLLBACK"}
    # Rolling back went well: the tool failed, not the statement.
    assert rollback.status.code == rollback.status.STATUS_CODE_UNSET

    check, = receiver.named("deferred check")
    begin, commit = in_order(receiver.children(check))
    assert (begin.name, commit.name) == ("BEGIN", "COMMIT")
    assert begin.status.code == begin.status.STATUS_CODE_UNSET
    assert commit.status.code == commit.status.STATUS_CODE_ERROR
    assert attributes(commit)["error.type"] == commit.status.message == "UniqueViolationError"
    assert b"zqx_once" not in b"".join(receiver.bodies)


async def test_another_tenants_calls_are_traced_under_its_own_ids(
        database_urls: DatabaseUrls, tenant: Tenant, make_tenant: TenantFactory,
        collector: tuple[Collector, str]) -> None:
    receiver, endpoint = collector
    other = await make_tenant()
    async with app_clients() as start:
        client = await start(create_app(
            make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                          SYNC_INTERVAL="0"), database_url=database_urls.runtime))
        for who in (tenant, other):
            sid = await open_session(client, who)
            await call_tool(client, who, sid, "jira_search")
    spans = receiver.named("tools/call jira_search")
    assert sorted(attributes(s)["spiral.tenant_id"] for s in spans) == sorted(
        [str(tenant.id), str(other.id)])
    exported = b"".join(receiver.bodies)
    assert tenant.key.encode() not in exported and other.key.encode() not in exported


async def test_tracing_off_exports_nothing_and_builds_nothing(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str],
        access_lines: Lines) -> None:
    receiver, _ = collector
    header, _, _ = traceparent()
    async with app_clients() as start:
        app = create_app(make_settings(database_urls, SYNC_INTERVAL="0"),
                         database_url=database_urls.runtime)
        client = await start(app)
        assert app[TRACER] is None
        assert app[DISPATCHER].registry.tracer is None
        # Plain statements, no span machinery on their path.
        assert type(app[DATABASE].queries.get_issue) is Query
        assert app[DATABASE].tracer is None  # BEGIN and COMMIT run bare, too
        sid = await open_session(client, tenant)
        await call_tool(client, tenant, sid, "jira_search", traceparent=header)
    assert receiver.bodies == []
    assert all("trace_id" not in line for line in access_lines.lines)
    assert access_lines.lines


async def test_a_legacy_sse_call_is_traced_under_its_post(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str]) -> None:
    """Over /sse + /messages the call runs after the POST is answered 202; its span is still
    the POST's child, and the session id in the POST's query string is exported nowhere."""
    receiver, endpoint = collector
    header, header_trace, _ = traceparent()
    async with app_clients() as start:
        client = await start(create_app(
            make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                          SYNC_INTERVAL="0"), database_url=database_urls.runtime))
        stream, messages = await _legacy_stream(client, tenant)
        json_headers = {**tenant.headers, "Content-Type": "application/json"}
        for body in (request("initialize", 1, protocolVersion="2024-11-05", capabilities={},
                             clientInfo={"name": "t", "version": "1"}),
                     {"jsonrpc": "2.0", "method": "notifications/initialized"}):
            await client.post(messages, data=orjson.dumps(body), headers=json_headers)
        await read_event(stream)  # initialize's answer
        await client.post(messages, data=orjson.dumps(request(
            "tools/call", 2, name="jira_search", arguments={"jql": f'summary ~ "{SEARCHED}"'})),
            headers={**json_headers, "traceparent": header})
        answer = orjson.loads((await read_event(stream))["data"])
        assert answer["id"] == 2 and not answer["result"]["isError"]
        stream.close()
    post_span, = [s for s in receiver.named("POST /messages")
                  if s.trace_id.hex() == header_trace]
    assert attributes(post_span)["url.path"] == "/messages"
    tool, = [s for s in receiver.children(post_span) if s.name == "tools/call jira_search"]
    assert receiver.children(tool)
    session_id = messages.partition("session_id=")[2]
    exported = b"".join(receiver.bodies)
    assert session_id.encode() not in exported and SEARCHED.encode() not in exported
    assert receiver.named("GET /sse")


async def test_the_sdks_own_variables_are_honoured(
        database_urls: DatabaseUrls, tenant: Tenant, collector: tuple[Collector, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, endpoint = collector
    monkeypatch.setenv("OTEL_SERVICE_NAME", "spiral-eu-1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=abc123")
    async with app_clients() as start:
        client = await start(create_app(
            make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                          SYNC_INTERVAL="0"), database_url=database_urls.runtime))
        sid = await open_session(client, tenant)
        await call_tool(client, tenant, sid, "jira_search")
    assert receiver.resources and {r["service.name"] for r in receiver.resources} == {
        "spiral-eu-1"}
    assert receiver.headers and {h.get("x-collector-token") for h in receiver.headers} == {
        "abc123"}

    # OTEL_SDK_DISABLED=true keeps tracing off even with an endpoint.
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    receiver.bodies.clear()
    async with app_clients() as start:
        app = create_app(make_settings(database_urls, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                                       SYNC_INTERVAL="0"), database_url=database_urls.runtime)
        client = await start(app)
        assert app[TRACER] is None
        sid = await open_session(client, tenant)
        await call_tool(client, tenant, sid, "jira_search")
    assert receiver.bodies == []


def test_the_tracing_sdk_is_not_loaded_by_the_product_itself() -> None:
    """Off, no tracer provider runs in the process: importing the server (app, middleware,
    logs) loads only the API, whose calls the product makes only with a tracer. (redis-py's
    own observability module imports parts of the SDK for its metrics when it is installed;
    the tracing SDK and the exporter are ours to load, and only with tracing on.)"""
    check = ("import sys, spiral_mcp.server.app, spiral_mcp.server.run; "
             "from opentelemetry import trace; "
             "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
             "'opentelemetry.exporter'))); "
             "print(loaded, type(trace.get_tracer_provider()).__name__); "
             "sys.exit(1 if loaded or type(trace.get_tracer_provider()).__name__ != "
             "'ProxyTracerProvider' else 0)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_queries_are_traced_only_when_given_a_tracer() -> None:
    queries = Queries.load()
    assert queries.traced(None) is queries and queries.tracer is None


@pytest.mark.parametrize("raw", ["collector:4318", "ftp://collector", "http://",
                                 "http://collector:4318/?x=1", "http://collector:99999"])
def test_a_bad_endpoint_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT: expected an http\(s\)"):
        load_settings(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": raw})


def test_the_endpoint_is_optional() -> None:
    assert load_settings(environ={}).otel_exporter_otlp_endpoint is None
    assert load_settings(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4318"}
                         ).otel_exporter_otlp_endpoint == "https://otel.example:4318"
