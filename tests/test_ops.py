"""Operator endpoints and authentication over real HTTP."""

from __future__ import annotations

from spiral_mcp import __version__


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
