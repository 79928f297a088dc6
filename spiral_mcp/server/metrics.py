"""Prometheus metrics of one application, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

# Label children kept at hand; past this many, children are looked up as usual (labels a client
# can vary must not grow the cache without bound).
_MAX_CACHED_CHILDREN = 1024

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _PoolCollector(Collector):
    """Reads the pool's sizes at scrape time, so nothing is updated per request."""

    def __init__(self, sizes: Callable[[], tuple[int, int] | None]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "db_pool_connections", "Database pool connections by state", labels=["state"]
        )
        sizes = self._sizes()
        if sizes is not None:
            size, idle = sizes
            family.add_metric(["in_use"], size - idle)
            family.add_metric(["free"], idle)
        yield family


class _SessionCollector(Collector):
    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "mcp_sessions_active", "Open MCP sessions by transport", labels=["transport"]
        )
        for transport in ("streamable", "sse"):
            family.add_metric([transport], self._count(transport))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.mcp_requests = Counter(
            "mcp_requests_total", "MCP messages by method and transport",
            ["method", "transport"], registry=self.registry,
        )
        self.tool_calls = Counter(
            "mcp_tool_calls_total", "Tool calls by tool and outcome (ok, error)",
            ["tool", "status"], registry=self.registry,
        )
        self.tool_duration = Histogram(
            "mcp_tool_duration_seconds", "Tool call latency by tool",
            ["tool"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.template_duration = Histogram(
            "sql_template_duration_seconds", "Report template run time by template",
            ["template"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.rate_limit_backend_errors = Counter(
            "rate_limit_backend_errors_total",
            "Rate-limit checks that fell back to in-process buckets because Redis failed",
            registry=self.registry,
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def labels(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: prometheus_client checks and converts the values
        and takes a lock on every lookup, several times per request otherwise."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            if len(self._children) < _MAX_CACHED_CHILDREN:
                self._children[key] = child
        return child

    def watch_sessions(self, count: Callable[[str], int]) -> None:
        """Report open MCP sessions; ``count(transport)`` is read at scrape time."""
        self.registry.register(_SessionCollector(count))

    def watch_pool(self, sizes: Callable[[], tuple[int, int] | None]) -> None:
        """Report the database pool; ``sizes`` returns (open, idle) or None when there is none."""
        self.registry.register(_PoolCollector(sizes))
