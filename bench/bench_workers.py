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

With ``--balanced N`` the second server is instead N ``spiral-mcp serve`` processes (one worker
each) behind a real HAProxy (Debian's ``haproxy``: round robin, no stickiness, as
docker/haproxy.cfg), ``balanced-N``, against one process reached directly, ``direct-1``: what a
load balancer and several processes cost and gain on one host.

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
import shutil
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
BALANCED_REFERENCE = "direct-1"
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


HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    no option http-buffer-request
frontend mcp
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
{servers}
"""


def start_balancer(name: str, backends: list[Server], workdir: Path) -> Server:
    """A real HAProxy in front of ``backends``, round robin, no stickiness."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        fail("--balanced needs HAProxy (apt-get install haproxy)")
    port = free_port()
    config = workdir / f"{name}.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers="\n".join(
        f"    server s{i} 127.0.0.1:{b.port}" for i, b in enumerate(backends, 1))))
    return start_server(name, [haproxy, "-db", "-f", str(config)], {}, port, workdir)


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
    p.add_argument("--balanced", type=int, default=0, metavar="N",
                   help="compare N processes behind HAProxy with one process direct")
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
    # The processes whose CPU a target's calls cost: its server's, or a balancer's and its
    # backends'.
    processes: dict[str, list[Server]] = {}

    def serve(name: str, workers: int) -> Server:
        servers.append(start_server(
            name, [sys.executable, "-m", "spiral_mcp", "serve", "--workers", str(workers)],
            env, free_port(), workdir))
        return servers[-1]

    def cpu(name: str) -> float | None:
        figures = [tree_cpu(s.process.pid) for s in processes[name]]
        return None if None in figures else sum(f for f in figures if f is not None)

    try:
        if args.balanced:
            reference = serve(BALANCED_REFERENCE, 1)
            backends = [serve(f"backend-{i}", 1) for i in range(1, args.balanced + 1)]
            balancer = start_balancer(f"balanced-{args.balanced}", backends, workdir)
            servers.append(balancer)
            fronts = [reference, balancer]
            processes = {reference.name: [reference], balancer.name: [balancer, *backends]}
        else:
            fronts = [serve(REFERENCE, 1), serve(f"workers-{args.workers}", args.workers)]
            processes = {s.name: [s] for s in fronts}
        targets = [target_for(args.door, s.name, s, api_key, anchors) for s in fronts]

        def drive(target: Target, c: int, duration: float) -> dict[str, Any]:
            before, pg_before = cpu(target.name), tree_cpu(pg_pid) if pg_pid else None
            run = run_wrk(target, c, duration, anchors, keys)
            after, pg_after = cpu(target.name), tree_cpu(pg_pid) if pg_pid else None
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
    reference_name, other = targets[0].name, targets[1].name
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
        for name in (reference_name, other):
            r = by_name.get(name)
            if r is not None:
                print(f"{c:>4}  {name:<10} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} "
                      f"{r['p99_ms']:>8.2f} {r['cpu_us_per_call']:>12,.0f} "
                      f"{r['pg_cpu_us_per_call'] or 0:>11,} {r['bad_answers']:>5}")
        if reference_name in by_name and other in by_name:
            ratio = {"concurrency": c,
                     "median": round(by_name[other]["rps"] / by_name[reference_name]["rps"], 3),
                     "paired": _paired(runs, other, reference_name, c)}
            ratios.append(ratio)
            print(f"      {other} / {reference_name}: {ratio['median']:.2f} of the medians, "
                  f"{ratio['paired'] or 0:.2f} paired by round"
                  + ("" if args.balanced else " (aim: >= 1.3)"))
    result = {
        "timestamp": stamp,
        "machine": machine(),
        "config": {"door": args.door, "workers": args.workers, "balanced": args.balanced,
                   "nice": args.nice,
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
