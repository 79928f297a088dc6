"""Prometheus metrics of one application, in a registry of its own (no global state).

The request path's counters and histograms are plain numbers (:class:`PlainCounter`,
:class:`PlainHistogram`) that the registry reads at scrape time: prometheus_client's own take a
lock on every update, several per request. Only the event loop's thread updates or scrapes them
(the /metrics handler renders on the loop), so they need none. The exposition is
prometheus_client's, with the same names, labels, types and ``_created`` series as its classes.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["Metrics", "PlainCounter", "PlainHistogram"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _with_created() -> bool:
    # prometheus_client's switch (PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics()),
    # read at scrape time as its own classes do.
    return bool(prometheus_metrics._use_created)


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.sum += value
        # The first bucket whose bound is >= value (prometheus_client's ``value <= bound``).
        self.counts[bisect.bisect_left(self._bounds, value)] += 1.0


class _PlainFamily(Collector):
    """Label children kept in a dict; ``labels(*values)`` as prometheus_client's."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: Any) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
            # Label values are text, as prometheus_client makes them.
            key = tuple(str(v) for v in values)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def _series(self) -> Iterator[tuple[dict[str, str], Any]]:
        for values, child in list(self._children.items()):
            yield dict(zip(self.labelnames, values, strict=True)), child


class PlainCounter(_PlainFamily):
    """A labelled counter, exposed as prometheus_client's Counter (``<name>_total``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 registry: CollectorRegistry) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "counter")]

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        created = _with_created()
        for labels, child in self._series():
            metric.add_sample(self.name + "_total", labels, child.value)
            if created:
                metric.add_sample(self.name + "_created", labels, child.created)
        yield metric


class PlainHistogram(_PlainFamily):
    """A labelled histogram, exposed as prometheus_client's Histogram."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, labelnames, registry)
        bounds = tuple(float(b) for b in buckets)
        self._bounds = bounds if bounds[-1] == math.inf else (*bounds, math.inf)
        self._le = tuple(floatToGoString(b) for b in self._bounds)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        created = _with_created()
        for labels, child in self._series():
            total = 0.0
            for le, count in zip(self._le, child.counts, strict=True):
                total += count
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, total)
            metric.add_sample(self.name + "_count", labels, total)
            metric.add_sample(self.name + "_sum", labels, child.sum)
            if created:
                metric.add_sample(self.name + "_created", labels, child.created)
        yield metric


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


class _GaugeCollector(Collector):
    """One unlabelled gauge whose value is read at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation, value=self._read())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Updated by tool calls and requests: plain numbers (see the module's docstring).
        self.http_requests = PlainCounter(
            "http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.http_duration = PlainHistogram(
            "http_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.mcp_requests = PlainCounter(
            "mcp_requests_total", "MCP messages by method and transport",
            ["method", "transport"], registry=self.registry,
        )
        self.tool_calls = PlainCounter(
            "mcp_tool_calls_total", "Tool calls by tool and outcome (ok, error)",
            ["tool", "status"], registry=self.registry,
        )
        self.tool_duration = PlainHistogram(
            "mcp_tool_duration_seconds", "Tool call latency by tool",
            ["tool"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.template_duration = PlainHistogram(
            "sql_template_duration_seconds", "Report template run time by template",
            ["template"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.rate_limit_backend_errors = Counter(
            "rate_limit_backend_errors_total",
            "Rate-limit checks that fell back to in-process buckets because Redis failed",
            registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "audit_write_failures_total",
            "Attempts to write queued audit rows that failed, by reason (unreachable: no "
            "database; refused: the database refused the statement); the rows are kept",
            ["reason"], registry=self.registry,
        )
        self.replica_fallbacks = Counter(
            "replica_fallbacks_total",
            "Reads that would have gone to the replica but went to the primary, by reason "
            "(unreachable, lagging, refused: the replica refused the explorer's binding, "
            "conflict: a query cancelled there by replay, run again on the primary)",
            ["reason"], registry=self.registry,
        )
        self.audit_rows_dropped = Counter(
            "audit_rows_dropped_total",
            "Audit rows given up, by reason (invalid: refused for their values; queue_full: "
            "the queue's bound reached during an outage; shutdown: not written before exit)",
            ["reason"], registry=self.registry,
        )

    def watch_replica(self, lag: Callable[[], float | None], in_use: Callable[[], bool]
                      ) -> None:
        """Report the replica (REPLICA_DATABASE_URL): its lag at the last check (NaN when it
        did not answer), and whether heavy reads go to it."""
        self.registry.register(_GaugeCollector(
            "replica_lag_seconds", "How far the replica was behind the primary at the last "
            "check (NaN: it did not answer)",
            lambda: math.nan if (seconds := lag()) is None else seconds))
        self.registry.register(_GaugeCollector(
            "replica_in_use", "1 while heavy reads (explorer, reports) go to the replica, 0 "
            "while they go to the primary", lambda: float(in_use())))

    def watch_sessions(self, count: Callable[[str], int]) -> None:
        """Report open MCP sessions; ``count(transport)`` is read at scrape time."""
        self.registry.register(_SessionCollector(count))

    def watch_audit(self, queued: Callable[[], int]) -> None:
        """Report the audit rows waiting to be written; ``queued`` is read at scrape time."""
        self.registry.register(_GaugeCollector(
            "audit_rows_queued", "Audit rows waiting to be written", queued))

    def watch_listeners(self, count: Callable[[], int]) -> None:
        """Report open subscriptions/listen streams; ``count`` is read at scrape time."""
        self.registry.register(_GaugeCollector(
            "mcp_listen_streams_active", "Open subscriptions/listen streams", count))

    def watch_pool(self, sizes: Callable[[], tuple[int, int] | None]) -> None:
        """Report the database pool; ``sizes`` returns (open, idle) or None when there is none."""
        self.registry.register(_PoolCollector(sizes))
