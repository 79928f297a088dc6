"""/metrics of the whole server under ``serve --workers N``, whichever worker a scrape reaches.

Each worker keeps its metrics in its own registry, as one process does (the request path's
counters are plain numbers, see ``metrics.py``), and serves them, unmerged, on a Unix socket of
its own in a folder the supervisor made for this run (mode 0700). A scrape of /metrics asks every
other worker over its socket and adds their figures to its own: counters, histogram buckets,
sums and counts and the gauges that are totals (connections, sessions, queued rows) are summed;
the replica's lag is the worst worker's and ``replica_in_use`` the least (``_NOT_SUMMED``);
a series' ``_created`` is the earliest. ``workers_reporting`` says how many workers the
figures include: a worker being replaced is missing from them (its counts go with it, which
Prometheus's rate() reads as a counter reset, as after a restart of one process).

Why not prometheus_client's multiprocess mode: it covers only its own Counter, Gauge and
Histogram classes, written to memory-mapped files on every update, not the plain counters the
request path uses to save their locks, nor the gauges read by callback at scrape time (pool,
sessions, audit queue), which it cannot collect at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .keys import METRICS

__all__ = ["WORKER_METRICS", "WorkerMetrics", "merge_expositions", "serve_own_metrics"]

_ASK_TIMEOUT = 2.0


class WorkerMetrics:
    """This worker's place among the workers' metrics sockets."""

    def __init__(self, directory: Path, own: Path) -> None:
        self.directory = directory
        self.own = own

    async def exposition(self, own: bytes) -> bytes:
        """``own`` (this worker's exposition) merged with every other worker's."""
        others = [path for path in sorted(self.directory.glob("worker-*.sock"))
                  if path != self.own]
        answers = await asyncio.gather(*(_ask(path) for path in others))
        texts = [own.decode(), *(text for text in answers if text is not None)]
        return merge_expositions(texts)


# Present in a worker of ``serve --workers N``.
WORKER_METRICS = web.AppKey("worker_metrics", WorkerMetrics)


async def _ask(path: Path) -> str | None:
    """A worker's own exposition, or None when it does not answer (being replaced)."""
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(path)),
                timeout=aiohttp.ClientTimeout(total=_ASK_TIMEOUT)) as http, \
                http.get("http://worker/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


def _worst_lag(values: list[float]) -> float:
    # NaN (a worker's replica does not answer) is unknown: the whole server's is then too.
    return math.nan if any(math.isnan(v) for v in values) else max(values)


# Gauges that are no totals: how one scrape of the whole server reads them (all others are
# summed). Each worker checks the replica itself: the server's lag is its worst worker's, and
# the replica is in use only while every worker uses it.
_NOT_SUMMED: dict[str, Callable[[list[float]], float]] = {
    "replica_lag_seconds": _worst_lag,
    "replica_in_use": min,
}


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_expositions(texts: list[str]) -> bytes:
    """One exposition of several processes' (see the module's docstring)."""
    families: dict[str, Metric] = {}
    # family -> (sample name, labels) -> [labels as written, the workers' values]
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples.setdefault(key, [sample.labels, []])[1].append(sample.value)
    for name, metric in families.items():
        for (sample_name, _), (labels, seen) in values[name].items():
            combine = min if sample_name.endswith("_created") else _NOT_SUMMED.get(name, sum)
            metric.add_sample(sample_name, labels, combine(seen))
    reporting = GaugeMetricFamily("workers_reporting",
                                  "Worker processes whose figures this scrape includes",
                                  value=len(texts))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), reporting]))
    return generate_latest(registry)


def serve_own_metrics(directory: Path, number: int):
    """A cleanup context: serve this worker's own metrics on its socket in ``directory``."""
    async def own_metrics(app: web.Application) -> AsyncIterator[None]:
        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(app[METRICS].registry),
                                content_type="text/plain")

        inner = web.Application()
        inner.router.add_get("/metrics", metrics)
        runner = web.AppRunner(inner, access_log=None, handle_signals=False)
        await runner.setup()
        path = directory / f"worker-{number}.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the socket of the worker this one replaces
        await web.UnixSite(runner, str(path)).start()
        app[WORKER_METRICS] = WorkerMetrics(directory, path)
        try:
            yield
        finally:
            await runner.cleanup()

    return own_metrics
