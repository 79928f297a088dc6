"""Operator endpoints and authentication over real HTTP."""

from __future__ import annotations

import logging

import orjson

from spiral_mcp import __version__
from spiral_mcp.server.logs import JsonFormatter


async def test_index_names_the_service(client) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "spiral-mcp" and body["version"] == __version__
    assert body["endpoints"]["mcp"] == "/mcp"


async def test_health_is_ok_without_a_key(client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ok"}
    assert resp.headers["X-Request-Id"]


async def test_ready_checks_database_and_migrations(client) -> None:
    resp = await client.get("/ready")
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"status": "ready", "checks": {"database": "ok"}}


async def test_metrics_are_prometheus_text(client) -> None:
    await client.get("/health")
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'db_pool_connections{state="free"}' in text


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
