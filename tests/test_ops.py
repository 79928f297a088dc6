"""Operator endpoints and authentication over real HTTP."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from spiral_mcp import __version__
from spiral_mcp.server.logs import AccessRecord, BatchingStreamHandler, JsonFormatter
from spiral_mcp.server.middleware import is_discovery_path


async def test_index_names_the_service(client) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "spiral-mcp" and body["version"] == __version__
    assert body["endpoints"]["mcp"] == "/mcp"
    # Every route the app serves is named, but /messages: the /sse stream gives each session
    # its own address there; and the paths OAuth clients probe (discovery.py), which answer
    # them alone (the metadata's is named when OAuth is on: test_oauth_http.py).
    served = {resource.canonical for resource in client.app.router.resources()
              if not is_discovery_path(resource.canonical)}
    assert set(body["endpoints"].values()) == served - {"/", "/messages"}


async def test_health_is_ok_without_a_key(client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ok"}
    assert resp.headers["X-Request-Id"]


async def test_ready_checks_database_migrations_and_explorer(client) -> None:
    resp = await client.get("/ready")
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"status": "ready",
                                   "checks": {"database": "ok", "explorer": "ok"}}


async def test_metrics_are_prometheus_text(client) -> None:
    await client.get("/health")
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'db_pool_connections{state="free"}' in text


async def test_unusual_http_methods_share_one_metrics_series(client) -> None:
    # (aiohttp's C parser refuses unknown tokens outright; its Python parser takes any token.)
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        assert (await client.request(method, "/nowhere")).status == 404
    text = await (await client.get("/metrics")).text()
    assert "PROPFIND" not in text and "MKCOL" not in text
    assert 'http_requests_total{method="other",route="unmatched",status="404"} 3.0' in text


async def test_every_request_has_an_access_line(client) -> None:
    lines: list[dict] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Formatted as served: the request id is read while the request is current.
            lines.append(orjson.loads(JsonFormatter().format(record)))

    access = logging.getLogger("spiral_mcp.http")
    capture, level = Capture(), access.level
    access.addHandler(capture)
    access.setLevel(logging.INFO)
    try:
        await client.get("/health", headers={"X-Request-Id": "probe-1"})
        await client.get("/nowhere", headers={"X-Request-Id": "probe-2"})
    finally:
        access.removeHandler(capture)
        access.setLevel(level)
    assert [(line["request_id"], line["path"], line["status"]) for line in lines] == [
        ("probe-1", "/health", 200), ("probe-2", "/nowhere", 404)]
    first = lines[0]
    assert first["level"] == "info" and first["logger"] == "spiral_mcp.http"
    assert first["msg"] == "request" and first["method"] == "GET"
    assert first["duration_ms"] >= 0 and first["ts"].endswith("+00:00")


async def test_log_lines_are_written_in_batches_on_the_loop() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, delay=0.05)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("spiral_mcp.test_batching")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("first")
        logger.info("second")
        assert stream.getvalue() == ""  # waiting for the batch
        await asyncio.sleep(0.1)
        assert [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()] == [
            "first", "second"]
        logger.info("third")
        logger.warning("fourth")  # a warning goes out at once, with what waits before it
        assert [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()][2:] == [
            "third", "fourth"]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_log_lines_outside_the_loop_are_written_at_once() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.handle(logging.LogRecord("x", logging.INFO, "", 0, "alone", (), None))
    assert orjson.loads(stream.getvalue())["msg"] == "alone"


def test_access_line_fields_are_formatted() -> None:
    line = orjson.loads(JsonFormatter().format(AccessRecord("spiral_mcp.http", {
        "method": "POST", "path": "/execute", "status": 200, "duration_ms": 1.5})))
    assert {k: line[k] for k in ("level", "logger", "msg", "method", "path", "status",
                                 "duration_ms")} == {
        "level": "info", "logger": "spiral_mcp.http", "msg": "request", "method": "POST",
        "path": "/execute", "status": 200, "duration_ms": 1.5}


async def test_malformed_origin_or_host_is_refused_not_a_500(client) -> None:
    # urlsplit raises on an unclosed IPv6 bracket; that must be a refusal on every route.
    resp = await client.get("/health", headers={"Origin": "http://[::1"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "FORBIDDEN_ORIGIN"
    resp = await client.get("/health", headers={"Host": "[::1"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "FORBIDDEN_HOST"
