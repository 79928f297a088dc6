"""What ``serve --workers 2`` gains over one worker on this machine (issue #20).

``python -m bench.bench_workers`` starts two product servers on the same database and Redis, as
bench/run.py starts the product (``PRODUCT_ENV``, 100 tenants x 1,000 items): ``workers-1``
(``spiral-mcp serve``, one process) and ``workers-2`` (``spiral-mcp serve --workers 2``: the
supervisor and two workers). wrk drives ``tools/call jira_get_issue`` at each, interleaved round
by round (``run.interleave``), through one door:

- ``stateless`` (default): ``POST /mcp`` in the 2026-07-28 era, no session, so any worker serves
  any request;
- ``mcp``: ``POST /mcp`` over one MCP session (2025-06-18), which needs the sessions shared
  through Redis: without them the other worker does not know the session (counted as bad);
- ``execute``: ``POST /execute``.

For each run it reports calls/s, p50, p99, the servers' CPU time per call (the supervisor and its
workers, from ``/proc``) and PostgreSQL's (the embedded server's postmaster and its backends), and
the ratio workers-2 / workers-1 (of the medians and paired by round). Each process has its own
pool of DB_POOL_MAX (10) connections, so workers-2 holds 20. Results go to
``bench/results/<timestamp>-workers.json``. See bench/README.md, "Workers".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.run import (
    PRODUCT_ENV,
    PROTOCOL,
    RESULTS,
    STATELESS_PROTOCOL,
    Server,
    Target,
    _paired,
    cpu_seconds,
    fail,
    free_port,
    interleave,
    machine,
    open_session,
    redis_reachable,
    run_wrk,
    side_options,
    side_run,
    start_server,
    summarize,
)

REFERENCE = "workers-1"
DOORS = ("stateless", "mcp", "execute")


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of ``pid`` and of the processes it started (a supervisor's workers, a
    postmaster's backends) that still run."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(cpu_seconds(int(child)) or 0.0 for child in children)


def postmaster(pg_dir: Path) -> int | None:
    """The embedded PostgreSQL's postmaster pid (the first line of its postmaster.pid)."""
    try:
        return int((pg_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def target_for(door: str, name: str, server: Server, api_key: str, anchors: Path) -> Target:
    base = f"http://127.0.0.1:{server.port}"
    common = {"BODY_KIND": "mcp", "AUTH": api_key, "ARG": "issue_key"}
    if door == "execute":
        return Target(name, "product", f"{base}/execute", common, server)
    if door == "mcp":
        return Target(name, "product", f"{base}/mcp", {
            **common, "PROTO": PROTOCOL,
            "SID": open_session(anchors, f"{base}/mcp", api_key)}, server)
    return Target(name, "product", f"{base}/mcp",
                  {**common, "BODY_KIND": "stateless", "PROTO": STATELESS_PROTOCOL}, server)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_workers",
                                description=__doc__.split("\n")[0])
    side_options(p, concurrency="64")
    p.add_argument("--door", choices=DOORS, default="stateless",
                   help="stateless (default; any worker serves any request), mcp (one session: "
                        "needs sessions shared through Redis) or execute")
    p.add_argument("--workers", type=int, default=2, help="workers of the second server")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"),
                   help="Redis both servers use (workers need one)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if not redis_reachable(args.redis_url):
        fail(f"Redis at {args.redis_url} is not reachable: --workers needs one (--redis-url)")
    side = side_run(args, "workers")
    anchors, levels, stamp, workdir = side.anchors, side.levels, side.stamp, side.workdir
    runtime_url, api_key, keys = side.runtime_url, side.api_key, side.keys
    pg_pid = (None if os.environ.get("BENCH_DATABASE_URL")
              else postmaster(Path(args.data_dir).resolve() / "pg"))

    env = {**PRODUCT_ENV, "DATABASE_URL": runtime_url, "LOG_LEVEL": args.log_level,
           "REDIS_URL": args.redis_url}
    servers: list[Server] = []
    try:
        for name, workers in ((REFERENCE, 1), (f"workers-{args.workers}", args.workers)):
            servers.append(start_server(
                name, [sys.executable, "-m", "spiral_mcp", "serve", "--workers", str(workers)],
                env, free_port(), workdir))
        targets = [target_for(args.door, s.name, s, api_key, anchors) for s in servers]

        def drive(target: Target, c: int, duration: float) -> dict[str, Any]:
            pid = target.server.process.pid
            before, pg_before = tree_cpu(pid), tree_cpu(pg_pid) if pg_pid else None
            run = run_wrk(target, c, duration, anchors, keys)
            after, pg_after = tree_cpu(pid), tree_cpu(pg_pid) if pg_pid else None
            calls = run["rps"] * duration
            # run_wrk counted the supervisor alone: every process of the server instead.
            run["cpu_us_per_call"] = (round((after - before) * 1e6 / calls)
                                      if calls and before is not None and after is not None
                                      else None)
            run["pg_cpu_us_per_call"] = (round((pg_after - pg_before) * 1e6 / calls)
                                         if calls and pg_before is not None
                                         and pg_after is not None else None)
            return run

        runs, busy = interleave(targets, levels, args.repeats, args.duration, drive)
    finally:
        for s in servers:
            s.stop()

    rows = summarize(runs, targets, levels)
    for row in rows:
        mine = [r["pg_cpu_us_per_call"] for r in runs if r["target"] == row["target"]
                and r["concurrency"] == row["concurrency"] and r.get("pg_cpu_us_per_call")]
        row["pg_cpu_us_per_call"] = sorted(mine)[len(mine) // 2] if mine else None
    other = targets[1].name
    print()
    print(f"spiral-mcp workers benchmark, {stamp}: {args.door} tools/call jira_get_issue, "
          f"wrk -t1, {args.duration:g} s x {args.repeats} interleaved rounds, medians; machine "
          + (f"{busy:.0%}" if busy is not None else "?") + " busy before the load")
    print()
    print(f"{'c':>4}  {'server':<10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU us/call':>12} {'PG us/call':>11} {'bad':>5}")
    ratios = []
    for c in levels:
        by_name = {r["target"]: r for r in rows if r["concurrency"] == c}
        for name in (REFERENCE, other):
            r = by_name.get(name)
            if r is not None:
                print(f"{c:>4}  {name:<10} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} "
                      f"{r['p99_ms']:>8.2f} {r['cpu_us_per_call']:>12,.0f} "
                      f"{r['pg_cpu_us_per_call'] or 0:>11,} {r['bad_answers']:>5}")
        if REFERENCE in by_name and other in by_name:
            ratio = {"concurrency": c,
                     "median": round(by_name[other]["rps"] / by_name[REFERENCE]["rps"], 3),
                     "paired": _paired(runs, other, REFERENCE, c)}
            ratios.append(ratio)
            print(f"      {other} / {REFERENCE}: {ratio['median']:.2f} of the medians, "
                  f"{ratio['paired'] or 0:.2f} paired by round (aim: >= 1.3)")
    result = {
        "timestamp": stamp,
        "machine": machine(),
        "config": {"door": args.door, "workers": args.workers, "nice": args.nice,
                   "duration_s": args.duration, "repeats": args.repeats, "concurrency": levels,
                   "tenants": args.tenants, "items": args.items, "log_level": args.log_level,
                   "product_env": PRODUCT_ENV},
        "cpu_busy_before": busy, "summary": rows, "ratios": ratios, "runs": runs,
    }
    out = RESULTS / f"{stamp}-workers.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out}  (server logs: {workdir})")


if __name__ == "__main__":
    main()
