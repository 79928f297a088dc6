"""What tracing costs on the product's request path (issue #20): nothing when off, and how much on.

``python -m bench.bench_tracing`` loads the bench data as bench/run.py does and starts three
product servers (``spiral-mcp serve``, same settings as bench/run.py) side by side:

- ``before``: the product as it was before tracing (``--baseline``, default the merge base of
  HEAD and main), checked out in a temporary git worktree and served from there;
- ``off``: this tree, OTEL_EXPORTER_OTLP_ENDPOINT unset (the default);
- ``on``: this tree, exporting every span over OTLP/HTTP to a collector the bench serves itself
  on loopback (it reads and drops each batch, counting spans' bytes);
- ``sampled``: the same, keeping one trace in ten (OTEL_TRACES_SAMPLER=parentbased_traceidratio,
  OTEL_TRACES_SAMPLER_ARG=0.1): what an operator sets under heavy load.

wrk then drives ``POST /execute`` tools/call jira_get_issue at each, interleaved round by round,
and it prints calls/s, p50, p99 and CPU per call, with the ratios off/before (the claim: tracing
off costs nothing measurable, a ratio within the runs' own spread), on/off and sampled/off (what
tracing on costs). Results go to ``bench/results/<timestamp>-tracing.json``. See bench/README.md,
"Tracing".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.bench_oauth import serve_in_thread
from bench.run import (
    PRODUCT_ENV,
    RESULTS,
    ROOT,
    Server,
    Target,
    _paired,
    free_port,
    interleave,
    log,
    machine,
    run_wrk,
    side_options,
    side_run,
    start_server,
    summarize,
)

# Which runs are compared, each to its reference.
COMPARED = (("off", "before"), ("on", "off"), ("sampled", "off"))


class Sink:
    """An OTLP/HTTP collector that keeps nothing: how many batches and bytes came."""

    def __init__(self) -> None:
        self.batches = 0
        self.bytes = 0

    async def receive(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.batches += 1
        # An empty ExportTraceServiceResponse: zero bytes of protobuf.
        return web.Response(body=b"", content_type="application/x-protobuf")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", self.receive)
        return app


def baseline_tree(ref: str, workdir: Path) -> Path:
    """``ref`` checked out (detached) in a worktree under ``workdir``."""
    where = workdir / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                   check=True, capture_output=True)
    return where


def drop_tree(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                   check=False, capture_output=True)


def ratios(runs: list[dict[str, Any]], rows: list[dict[str, Any]],
           levels: list[int]) -> list[dict[str, Any]]:
    out = []
    for c in levels:
        mine = {r["target"]: r for r in rows if r["concurrency"] == c}
        for name, reference in COMPARED:
            row, ref = mine.get(name), mine.get(reference)
            if row is None or ref is None:
                continue
            out.append({
                "concurrency": c, "target": name, "reference": reference,
                "rps_ratio": round(row["rps"] / ref["rps"], 3),
                "rps_ratio_paired": _paired(runs, name, reference, c),
                "cpu_ratio": round(row["cpu_us_per_call"] / ref["cpu_us_per_call"], 3)
                if ref["cpu_us_per_call"] else None,
                "p99_ratio": round(row["p99_ms"] / ref["p99_ms"], 3) if ref["p99_ms"] else None,
                # How far apart the reference's own runs are: a ratio inside it is noise.
                "reference_spread": round((max(ref["runs"]) - min(ref["runs"]))
                                          / ref["rps"], 3) if ref["rps"] else None,
            })
    return out


def print_table(rows: list[dict[str, Any]], compared: list[dict[str, Any]]) -> None:
    head = (f"{'conc':>4}  {'target':<7} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'CPU us':>7}   runs (calls/s)")
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['concurrency']:>4}  {row['target']:<7} {row['rps']:>8,.0f} "
              f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['cpu_us_per_call'] or 0:>7,} "
              "  " + ", ".join(f"{r:,.0f}" for r in row["runs"]))
    print()
    print(f"{'conc':>4}  {'ratio':<15} {'calls/s':>7} {'paired':>7} {'CPU':>6} {'p99':>6} "
          f"{'spread':>7}")
    for r in compared:
        def cell(field: str, width: int, r: dict[str, Any] = r) -> str:
            value = r.get(field)
            return f"{value:>{width}.3f}" if value is not None else " " * width

        print(f"{r['concurrency']:>4}  {r['target'] + '/' + r['reference']:<15} "
              f"{cell('rps_ratio', 7)} {cell('rps_ratio_paired', 7)} {cell('cpu_ratio', 6)} "
              f"{cell('p99_ratio', 6)} {cell('reference_spread', 7)}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_tracing",
                                description=__doc__.split("\n")[0])
    side_options(p, concurrency="16,64")
    p.add_argument("--baseline", default=None,
                   help="git ref of the product before tracing (default: merge base of HEAD "
                        "and main); 'none' skips the before target")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("git") is None:
        sys.exit("bench: error: git is needed for the before target (or --baseline none)")
    run = side_run(args, "tracing")
    baseline = args.baseline or subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True,
        capture_output=True, text=True).stdout.strip()
    sink, sink_port = Sink(), free_port()
    servers: list[Server] = []
    before: Path | None = None
    env = {**PRODUCT_ENV, "DATABASE_URL": run.runtime_url, "LOG_LEVEL": args.log_level,
           "SYNC_INTERVAL": "0"}
    argv = [sys.executable, "-m", "spiral_mcp", "serve"]
    common = {"BODY_KIND": "mcp", "ARG": "issue_key", "AUTH": run.api_key}
    targets: list[Target] = []
    with serve_in_thread(sink.app(), sink_port, name="collector"):
        try:
            if baseline != "none":
                before = baseline_tree(baseline, run.workdir)
                log(f"before: {baseline[:12]} in {before}")
                port = free_port()
                servers.append(start_server("before", argv, {**env, "PYTHONPATH": str(before)},
                                            port, run.workdir, cwd=before))
                targets.append(Target("before", "product", f"http://127.0.0.1:{port}/execute",
                                      common, servers[-1]))
            collector = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
            for name, extra in (("off", {}), ("on", collector), ("sampled", {
                    **collector, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1"})):
                port = free_port()
                servers.append(start_server(name, argv, {**env, **extra}, port, run.workdir,
                                            cwd=ROOT))
                targets.append(Target(name, "product", f"http://127.0.0.1:{port}/execute",
                                      common, servers[-1]))
            runs, busy = interleave(
                targets, run.levels, args.repeats, args.duration,
                lambda t, c, d: run_wrk(t, c, d, run.anchors, run.keys))
        finally:
            for server in servers:
                server.stop()
            if before is not None:
                drop_tree(before)

    rows = summarize(runs, targets, run.levels)
    compared = ratios(runs, rows, run.levels)
    print()
    print(f"spiral-mcp tracing benchmark, {run.stamp}: POST /execute tools/call jira_get_issue, "
          f"wrk -t1, {args.duration:g} s x {args.repeats} interleaved rounds, medians; machine "
          + (f"{busy:.0%}" if busy is not None else "?") + " busy before the load; the "
          f"collector took {sink.batches} batches, {sink.bytes / 1e6:.1f} MB")
    print()
    print_table(rows, compared)
    result = {
        "timestamp": run.stamp,
        "machine": machine(),
        "config": {"nice": args.nice, "duration_s": args.duration, "repeats": args.repeats,
                   "concurrency": run.levels, "tenants": args.tenants, "items": args.items,
                   "log_level": args.log_level, "baseline": baseline,
                   "product_env": PRODUCT_ENV},
        "cpu_busy_before": busy, "collector": {"batches": sink.batches, "bytes": sink.bytes},
        "summary": rows, "ratios": compared, "runs": runs,
    }
    out = RESULTS / f"{run.stamp}-tracing.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out}  (server logs: {run.workdir})")


if __name__ == "__main__":
    main()
