"""Scale benchmarks of issues 4 and 5: 1,000,000 work items over 100 tenants.

    .venv/bin/python -m bench.bench_scale                  # load once (kept), measure, explain
    .venv/bin/python -m bench.bench_scale --duration 3 --concurrency 1   # a quick look

- Issue 4: selective ``jira_search`` queries and ``jira_get_issue`` through the real server
  (``spiral-mcp serve``, ``POST /execute`` with a Bearer key, ``tools/call``), driven by wrk with a
  generated Lua script that rotates each case's request bodies; p50/p99 and calls/s at
  concurrency 1 and 16. Then EXPLAIN (ANALYZE, BUFFERS) of the SQL the product runs for each
  search (built by the handler itself, ``jira_search.search`` with a capturing context), as the
  runtime role inside a transaction scoped with ``set_config('app.tenant_id', ..., true)``, and
  which index each plan uses.
- Issue 5: the six ``sql_*`` report templates, the same way (server figures + plans), the text
  search's in-database time per kind of query, and what marking ``texticlike`` LEAKPROOF would
  change for JQL's ``~``, measured inside a transaction that is rolled back.

The data (database ``spiral_scale``, embedded PostgreSQL under ``bench/.data/scale`` unless
BENCH_DATABASE_URL names a superuser URL) is kept between runs: tenants already loaded are skipped.
Results: a table on stdout, everything in ``bench/results/<ts>-scale.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg

from bench.run import (
    BENCH,
    PRODUCT_ENV,
    RESULTS,
    ROOT,
    cpu_busy,
    fail,
    free_port,
    log,
    post_json,
    start_server,
    with_database,
)
from spiral_mcp import admin
from spiral_mcp.demo import LABELS, SUBJECTS, VERBS
from spiral_mcp.handlers import jira_search
from spiral_mcp.ids import take_work_ids
from spiral_mcp.provision import provision, start_embedded
from spiral_mcp.queries import Queries
from spiral_mcp.templates import builtin_directory, load_templates

DATABASE = "spiral_scale"
TENANT_PREFIX = "scale v1 tenant "  # bump the version when the generator changes

# -- data ---------------------------------------------------------------------------------------
# Like spiral_mcp/demo.py (same subjects, verbs, labels, workflow paths and weights), scaled up:
# 5 projects per tenant, 20 people, items created over the last 365 days, 2-5 transition rows
# per item (the first records the creation in To Do, from_status NULL, as the demo does).

PROJECTS = (("P1", "Web storefront"), ("P2", "Public API"), ("P3", "Operations"),
            ("P4", "Mobile app"), ("P5", "Data platform"))
PEOPLE = tuple(f"{n}@example.com" for n in (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
    "yasmin"))
DETAILS = ("Seen by several customers since the last release.",
           "Reported by support; logs attached to the ticket.",
           "Needs a design review before work starts.",
           "Only on mobile browsers, desktop is fine.",
           "Happens under load, roughly once an hour.",
           "Follow-up of the incident review.")
# demo.py's paths, with its one-row ("To Do",) path made To Do -> In Progress -> To Do and its
# six-row path cut to five, so every item has 2-5 transition rows.
PATHS = (
    ("To Do", "In Progress", "To Do"),
    ("To Do", "In Progress"),
    ("To Do", "In Progress", "Blocked"),
    ("To Do", "In Progress", "In Review"),
    ("To Do", "In Progress", "In Review", "Done"),
    ("To Do", "In Progress", "Done"),
    ("To Do", "In Progress", "Blocked", "In Progress", "Done"),
    ("To Do", "Cancelled"),
)
PATH_WEIGHTS = (20, 14, 4, 6, 30, 14, 6, 6)
CATEGORY = {"To Do": "todo", "In Progress": "in_progress", "Blocked": "blocked",
            "In Review": "in_review", "Done": "done", "Cancelled": "cancelled"}
PRIORITIES = ("critical", "high", "medium", "low", "none")
PRIORITY_WEIGHTS = (5, 20, 50, 20, 5)
ITEM_COLUMNS = ("keys", "project_keys", "numbers", "titles", "descriptions", "types", "statuses",
                "categories", "priorities", "assignees", "reporters", "labels_csv",
                "parent_keys", "created", "updated", "resolved", "due")


def generate_project(rng: random.Random, project_key: str, name: str, count: int,
                     now: datetime) -> tuple[dict[str, list[Any]], list[tuple[Any, ...]]]:
    """One project's items (columns for demo_insert_work_items) and transition rows
    (key, from, to, at, actor)."""
    cols: dict[str, list[Any]] = {c: [] for c in ITEM_COLUMNS}
    history: list[tuple[Any, ...]] = []
    epics: list[str] = []
    for number in range(1, count + 1):
        key = f"{project_key}-{number}"
        kind = "epic" if number <= 4 else rng.choice(
            ("bug", "bug", "story", "task", "task", "feature"))
        created = now - timedelta(days=rng.uniform(0.2, 365))
        path = rng.choices(PATHS, PATH_WEIGHTS)[0]
        at, previous = created, None
        for step, status in enumerate(path, start=2):
            history.append((key, previous, status, at, rng.choice(PEOPLE)))
            previous = status
            # A second apart at least near now: one item's moves never share a moment.
            at = min(now - timedelta(seconds=len(path) - step),
                     at + timedelta(hours=rng.uniform(2, 24 * 6)))
        final, last_move = path[-1], history[-1][3]
        subject = rng.choice(SUBJECTS)
        cols["keys"].append(key)
        cols["project_keys"].append(project_key)
        cols["numbers"].append(number)
        cols["titles"].append(f"Epic: {subject} overhaul" if kind == "epic"
                              else f"{rng.choice(VERBS[kind])} {subject}")
        cols["descriptions"].append(
            f"{name}: {rng.choice(SUBJECTS)} needs attention. {rng.choice(DETAILS)} "
            "Steps and acceptance criteria are in the linked doc.")
        cols["types"].append(kind)
        cols["statuses"].append(final)
        cols["categories"].append(CATEGORY[final])
        cols["priorities"].append(rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0])
        cols["assignees"].append(None if final == "To Do" and rng.random() < 0.4
                                 else rng.choice(PEOPLE))
        cols["reporters"].append(rng.choice(PEOPLE))
        cols["labels_csv"].append(",".join(sorted(rng.sample(LABELS, rng.randint(0, 3)))))
        cols["parent_keys"].append(rng.choice(epics) if epics and kind != "epic"
                                   and rng.random() < 0.3 else None)
        cols["created"].append(created)
        cols["updated"].append(last_move)
        cols["resolved"].append(last_move if CATEGORY[final] in ("done", "cancelled") else None)
        cols["due"].append(created + timedelta(days=rng.randint(7, 60)) if rng.random() < 0.3
                           else None)
        if kind == "epic":
            epics.append(key)
    return cols, history


async def load_tenant(conn: asyncpg.Connection, queries: Queries, number: int, items: int,
                      now: datetime) -> None:
    """One tenant in one transaction scoped by app.tenant_id, as the owner role: projects first
    (their trigger adds the workflow), then items and transitions through unnest, per project."""
    rng = random.Random(number)  # reproducible bench data
    per_project = items // len(PROJECTS)
    async with conn.transaction():
        tenant_id = await admin.create_tenant(conn, queries, f"{TENANT_PREFIX}{number:03d}")
        await queries.set_tenant(conn, tenant_id=str(tenant_id))
        for key, name in PROJECTS:
            await queries.demo_insert_project(conn, tenant_id=tenant_id, project_key=key,
                                              name=name, description=f"{name} (bench)",
                                              lead=PEOPLE[0])
        for key, name in PROJECTS:
            cols, history = generate_project(rng, key, name, per_project, now)
            # As demo.py does: the project's row, then the tenant's ids (spiral_mcp.ids).
            await queries.demo_set_next_numbers(conn, project_keys=cols["project_keys"],
                                                numbers=cols["numbers"])
            item_ids, move_ids = await take_work_ids(
                conn, queries, tenant_id=tenant_id, counts=(len(cols["keys"]), len(history)))
            await queries.demo_insert_work_items(conn, tenant_id=tenant_id, ids=item_ids, **cols)
            ids = dict(zip(cols["keys"], item_ids, strict=True))
            await queries.demo_insert_transitions(
                conn, tenant_id=tenant_id,
                item_ids=[ids[h[0]] for h in history],
                from_statuses=[h[1] for h in history], to_statuses=[h[2] for h in history],
                from_categories=[CATEGORY[h[1]] if h[1] else None for h in history],
                to_categories=[CATEGORY[h[2]] for h in history],
                actors=[h[4] for h in history], ats=[h[3] for h in history], ids=move_ids)


async def ensure_data(superuser_url: str, tenants: int, items: int,
                      workers: int) -> dict[str, Any]:
    """Provision and load what is missing; returns URLs, the first tenant and the load time."""
    urls = await provision(superuser_url, DATABASE)
    assert urls.admin is not None
    queries = Queries.load()
    conn = await asyncpg.connect(urls.admin)
    try:
        have = {r["name"]: r["tenant_id"] for r in await conn.fetch(
            "SELECT name, tenant_id FROM tenants WHERE name LIKE $1", TENANT_PREFIX + "%")}
    finally:
        await conn.close()
    todo = [n for n in range(1, tenants + 1) if f"{TENANT_PREFIX}{n:03d}" not in have]
    loaded_s = None
    if todo:
        log(f"loading {len(todo)} tenants x {items:,} work items into {DATABASE} "
            f"({tenants - len(todo)} already there), {workers} connections")
        now = datetime.now(UTC)
        started = time.monotonic()
        pending = list(todo)

        async def worker() -> None:
            c = await asyncpg.connect(urls.admin)
            try:
                while pending:
                    n = pending.pop(0)
                    await load_tenant(c, queries, n, items, now)
                    done = len(todo) - len(pending)
                    if done % 10 == 0 or not pending:
                        log(f"  {done}/{len(todo)} tenants, {time.monotonic() - started:.0f} s")
            finally:
                await c.close()

        await asyncio.gather(*(worker() for _ in range(workers)))
        c = await asyncpg.connect(urls.admin)
        try:
            log("ANALYZE")
            await c.execute("ANALYZE")
        finally:
            await c.close()
        loaded_s = round(time.monotonic() - started, 1)
        log(f"  loaded in {loaded_s} s")
    conn = await asyncpg.connect(with_database(superuser_url, DATABASE))
    try:
        first = await conn.fetchval("SELECT tenant_id FROM tenants WHERE name = $1",
                                    f"{TENANT_PREFIX}001")
        rels = await conn.fetch(
            "SELECT c.relname, c.reltuples::bigint AS reltuples, "
            "pg_size_pretty(pg_total_relation_size(c.oid)) AS total FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND c.relname IN "
            "('work_items', 'work_item_transitions', 'workflow_statuses', "
            "'projects', 'tenants')")
        sizes = {r["relname"]: {"rows": r["reltuples"], "total": r["total"]} for r in rels}
        version = await conn.fetchval("SHOW server_version")
        settings = {r["name"]: r["setting"] + (r["unit"] or "") for r in await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN ('shared_buffers', "
            "'work_mem', 'effective_cache_size', 'random_page_cost', "
            "'max_parallel_workers_per_gather')")}
    finally:
        await conn.close()
    queries = Queries.load()
    conn = await asyncpg.connect(urls.admin)
    try:
        async with conn.transaction():
            _, secret = await admin.create_api_key(conn, queries, tenant_id=first,
                                                   name="bench scale", scopes=["read"],
                                                   user="dave@example.com")
    finally:
        await conn.close()
    return {"runtime": urls.runtime, "tenant_id": first, "api_key": secret,
            "loaded_s": loaded_s, "tenants_loaded_now": len(todo), "sizes": sizes,
            "server_version": version, "pg_settings": settings}


# -- the cases ----------------------------------------------------------------------------------

SEARCHES = {
    "project+status": 'project = P2 AND status = "In Progress"',
    "assignee open": "assignee = dave@example.com AND statusCategory != done ORDER BY updated DESC",
    "labels+priority": "labels = security AND priority >= High",
    "key": "key = P3-1234",
    "updated 7d+project": "updated >= -7d AND project = P1",
    "text ~ checkout": 'text ~ "checkout"',
}


def cases(rng: random.Random, items: int) -> list[dict[str, Any]]:
    """Each case: a tool and the argument sets its requests rotate through."""
    per_project = items // len(PROJECTS)
    keys = [f"P{rng.randint(1, 5)}-{rng.randint(1, per_project)}" for _ in range(500)]
    out = [{"name": f"search: {n}", "tool": "jira_search", "kind": "search", "jql": jql,
            "args": [{"jql": jql}]} for n, jql in SEARCHES.items()]
    out.append({"name": "jira_get_issue", "tool": "jira_get_issue", "kind": "get",
                "args": [{"issue_key": k} for k in keys]})
    out += [
        {"name": "sql_search_issues_by_project", "tool": "sql_search_issues_by_project",
         "args": [{"project_key": p, "limit": 50} for p, _ in PROJECTS]},
        {"name": "sql_search_issues_by_text", "tool": "sql_search_issues_by_text",
         "args": [{"query": q} for q in ("checkout", "payment webhook", "rate limiter",
                                         "chekout tiemout", "image upload")]},
        {"name": "sql_get_user_workload", "tool": "sql_get_user_workload",
         "args": [{"assignee": p} for p in PEOPLE]},
        {"name": "sql_get_issue_history", "tool": "sql_get_issue_history",
         "args": [{"issue_key": k} for k in keys]},
        {"name": "sql_get_project_metrics (30 d)", "tool": "sql_get_project_metrics",
         "args": [{"project_key": p, "days": 30} for p, _ in PROJECTS]},
        {"name": "sql_lead_time_metrics (all, 30 d)", "tool": "sql_lead_time_metrics",
         "args": [{"days": 30}]},
        {"name": "sql_lead_time_metrics (project+label, 90 d)", "tool": "sql_lead_time_metrics",
         "args": [{"project_key": p, "label": "security", "days": 90} for p, _ in PROJECTS]},
    ]
    return out


def body(tool: str, args: dict[str, Any], n: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                       "params": {"name": tool, "arguments": args}}, separators=(",", ":"))


# -- HTTP load with wrk -------------------------------------------------------------------------

LUA = """
local bodies = { %(bodies)s }
local i = 0
threads = {}
bad = 0
first_bad = ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
function setup(thread) table.insert(threads, thread) end
function request()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"isError"%%s*:%%s*true') ~= nil
     or string.find(body, '"error"%%s*:%%s*{') ~= nil then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  end
end
function done(summary, latency, requests)
  local total, sample = 0, ""
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
    if sample == "" then sample = t:get("first_bad") or "" end
  end
  io.write(string.format(
    "RESULT rps=%%.2f p50_ms=%%.3f p99_ms=%%.3f requests=%%d errors=%%d bad=%%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
      + summary.errors.status, total))
  io.write("FIRSTBAD " .. string.gsub(sample, "\\n", " ") .. "\\n")
end
"""
_RESULT = re.compile(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) requests=(\d+) "
                     r"errors=(\d+) bad=(\d+)")


def write_lua(case: dict[str, Any], api_key: str, workdir: Path, index: int) -> Path:
    bodies = ", ".join(f"[==[{body(case['tool'], a, n)}]==]" for n, a in enumerate(case["args"]))
    path = workdir / f"case{index}.lua"
    path.write_text(LUA % {"bodies": bodies, "key": api_key})
    return path


def run_wrk(url: str, lua: Path, concurrency: int, duration: float) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(lua), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = _RESULT.search(done.stdout)
    if m is None:
        fail(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")
    assert m is not None
    out = {"rps": float(m[1]), "p50_ms": float(m[2]), "p99_ms": float(m[3]),
           "requests": int(m[4]), "errors": int(m[5]), "bad": int(m[6])}
    if out["bad"] or out["errors"]:
        first = re.search(r"FIRSTBAD (.*)", done.stdout)
        out["first_bad"] = first[1][:300] if first else ""
    return out


# -- plans --------------------------------------------------------------------------------------

class _Capture:
    """Stands in for the tenant connection: records what the handler would send."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.statements.append((sql, args))
        return []

    async def fetchval(self, sql: str, *args: Any) -> int:
        self.statements.append((sql, args))
        return 0


async def search_statements(jql: str, user: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The page and count statements jira_search runs for ``jql``, built by its own handler."""
    capture = _Capture()

    @contextlib.asynccontextmanager
    async def transaction(*, readonly: bool) -> Any:
        yield capture

    ctx = SimpleNamespace(principal=SimpleNamespace(user=user, tenant_id=None),
                          transaction=transaction)
    handler = next(t.handler for t in jira_search.TOOLS if t.name == "jira_search")
    await handler(ctx, {"jql": jql})  # type: ignore[arg-type]
    return capture.statements


def _walk(plan: dict[str, Any]) -> Any:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _walk(child)


def summarize_plan(explained: Any) -> dict[str, Any]:
    doc = explained[0] if isinstance(explained, list) else explained
    scans = []
    for node in _walk(doc["Plan"]):
        kind = node["Node Type"]
        if ("Scan" in kind and node.get("Relation Name")) or node.get("Index Name"):
            what = kind + (f" {node['Index Name']}" if node.get("Index Name") else "")
            if node.get("Relation Name"):
                what += f" on {node['Relation Name']}"
            if "Actual Rows" in node:
                what += (f" (rows {node['Actual Rows']:.0f} x {node.get('Actual Loops', 1)}"
                         + (f", removed by filter {node['Rows Removed by Filter']:.0f}"
                            if node.get("Rows Removed by Filter") else "") + ")")
            scans.append(what)
    return {"scans": list(dict.fromkeys(scans)),
            "execution_ms": doc.get("Execution Time"), "planning_ms": doc.get("Planning Time"),
            "shared_hit": doc["Plan"].get("Shared Hit Blocks"),
            "shared_read": doc["Plan"].get("Shared Read Blocks")}


def _literal(value: Any) -> str:
    """An SQL literal for EXECUTE's arguments (EXPLAIN EXECUTE takes no bind parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, list | tuple):
        inner = ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                         for v in value)
        return "'{" + inner.replace("'", "''") + "}'"
    return "'" + str(value).replace("'", "''") + "'"


async def explain(conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str,
                  args: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of ``sql`` as the connection's role, scoped to the tenant, plus
    the generic plan (what a cached prepared statement may switch to after five runs)."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")  # the product's pool sets jit off
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await conn.fetch(sql, *args)  # warm
        text = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
        as_json = json.loads(await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args))
        # The generic plan (what asyncpg's cached prepared statement may switch to after five
        # custom plans), executed with the same values.
        generic = None
        values = ", ".join(_literal(a) for a in args)
        await conn.execute(f"PREPARE bench_generic AS {sql}")
        try:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            generic = json.loads(await conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bench_generic"
                + (f"({values})" if args else "")))
            await conn.execute("SET LOCAL plan_cache_mode = auto")
        finally:
            await conn.execute("DEALLOCATE bench_generic")
    out = {"text": text, **summarize_plan(as_json)}
    if generic is not None:
        g = summarize_plan(generic)
        out["generic_scans"], out["generic_execution_ms"] = g["scans"], g["execution_ms"]
    return out


async def timed(conn: asyncpg.Connection, sql: str, args: list[Any], runs: int) -> float:
    """Median ms of ``runs`` executions of a prepared statement in the current transaction."""
    statement = await conn.prepare(sql)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await statement.fetch(*args)
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


async def text_search_timings(superuser_db_url: str, tenant_id: uuid.UUID,
                              template_sql: str, texts: list[str],
                              runs: int) -> dict[str, Any]:
    """sql_search_issues_by_text in the database as the runtime role, per query: a common word,
    two words, and a typo that matches nothing (the slow case: the nearest-first index scan
    reads until it has its 100 candidates)."""
    conn = await asyncpg.connect(superuser_db_url)
    result: dict[str, Any] = {}
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL jit = off")
            await conn.execute("SET LOCAL ROLE spiral_app")
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            for q in texts:
                args = [q, None, 20]
                plan = json.loads(await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + template_sql, *args))
                result[q] = {"median_ms": await timed(conn, template_sql, args, runs),
                             "rows": len(await conn.fetch(template_sql, *args)),
                             **summarize_plan(plan)}
    finally:
        await conn.close()
    return result


async def leakproof_experiment(superuser_db_url: str, tenant_id: uuid.UUID,
                               search_sql: list[tuple[str, str, tuple[Any, ...]]],
                               runs: int) -> dict[str, Any]:
    """JQL ~ as the runtime role, as it is and with texticlike (ILIKE) marked LEAKPROOF;
    everything rolled back."""
    conn = await asyncpg.connect(superuser_db_url)
    result: dict[str, Any] = {"functions": ["texticlike(text, text)"], "jql": {}}
    try:
        for phase in ("as_is", "leakproof"):
            tr = conn.transaction()
            await tr.start()
            try:
                if phase == "leakproof":
                    for fn in result["functions"]:
                        await conn.execute(f"ALTER FUNCTION {fn} LEAKPROOF")
                await conn.execute("SET LOCAL jit = off")
                await conn.execute("SET LOCAL ROLE spiral_app")
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                   str(tenant_id))
                for name, sql, args in search_sql:
                    plan = json.loads(await conn.fetchval(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args))
                    result["jql"].setdefault(name, {})[phase] = {
                        "median_ms": await timed(conn, sql, list(args), runs),
                        **summarize_plan(plan)}
            finally:
                await tr.rollback()
    finally:
        await conn.close()
    return result


# -- main ---------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_scale",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--items", type=int, default=10_000, help="work items per tenant")
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5)),
                   help="seconds per wrk run (default 5)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated (default 1,16)")
    p.add_argument("--load-workers", type=int, default=2,
                   help="connections loading tenants in parallel (default 2)")
    p.add_argument("--runs", type=int, default=15,
                   help="executions per in-database timing (text search, LEAKPROOF experiment)")
    p.add_argument("--skip-http", action="store_true", help="plans and experiments only")
    p.add_argument("--only", default="", help="only cases whose name contains this")
    p.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR",
                                                        str(BENCH / ".data" / "scale")),
                   help="the embedded PostgreSQL's folder (default bench/.data/scale)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="spiral-bench-scale-"))
    busy_idle = cpu_busy(3.0)
    log(f"machine busy before anything starts: {busy_idle:.0%} of all CPUs" if busy_idle
        is not None else "cannot read /proc/stat")

    superuser_url = os.environ.get("BENCH_DATABASE_URL")
    if not superuser_url:
        data_dir = Path(args.data_dir).resolve()
        log(f"starting the embedded PostgreSQL under {data_dir}")
        superuser_url = start_embedded(data_dir)
    db = asyncio.run(ensure_data(superuser_url, args.tenants, args.items, args.load_workers))
    superuser_db_url = with_database(superuser_url, DATABASE)
    tenant_id, api_key = db["tenant_id"], db["api_key"]
    log(f"data: {db['sizes']}")

    all_cases = cases(random.Random(42), args.items)
    if args.only:
        all_cases = [c for c in all_cases if args.only in c["name"]]

    # -- through the server
    env = {**PRODUCT_ENV, "DATABASE_URL": db["runtime"], "LOG_LEVEL": "info"}
    server = start_server("product", [sys.executable, "-m", "spiral_mcp", "serve"], env,
                          free_port(), workdir, cwd=ROOT)
    url = f"http://127.0.0.1:{server.port}/execute"
    http: list[dict[str, Any]] = []
    busy_before_load = None
    try:
        for i, case in enumerate(all_cases):
            reply = post_json(url, json.loads(body(case["tool"], case["args"][0], 0)),
                              {"Authorization": f"Bearer {api_key}"})
            result = reply.get("result", {})
            if result.get("isError") is not False:
                fail(f"{case['name']}: the first call failed: {str(reply)[:400]}")
            content = result.get("structuredContent")
            if content is None:
                with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                    content = json.loads(result["content"][0]["text"])
            content = content if isinstance(content, dict) else {}
            case["answer"] = {k: content[k] for k in ("total", "total_is_exact", "row_count")
                              if k in content}
            if "issues" in content:
                case["answer"]["page"] = len(content["issues"])
            case["lua"] = write_lua(case, api_key, workdir, i)
        log("warming up (1 s per case at c=4)")
        for case in [] if args.skip_http else all_cases:
            run_wrk(url, case["lua"], 4, 1)
        busy_before_load = cpu_busy(2.0)
        log(f"busy with the server idle, before the load: {busy_before_load:.0%}")
        for c in [] if args.skip_http else levels:
            for case in all_cases:
                r = run_wrk(url, case["lua"], c, args.duration)
                r |= {"case": case["name"], "concurrency": c, "loadavg_1m": os.getloadavg()[0]}
                http.append(r)
                log(f"  c={c:<3} {case['name']:<44} {r['rps']:>7,.0f}/s  p50 {r['p50_ms']:7.2f}"
                    f"  p99 {r['p99_ms']:7.2f} ms" + (f"  BAD {r['bad']}: {r.get('first_bad')}"
                                                      if r["bad"] or r["errors"] else ""))
    finally:
        server.stop()

    # -- plans, as the runtime role with the tenant set
    queries = Queries.load()
    templates = {t.name: t for t in load_templates(builtin_directory())}
    plans: dict[str, Any] = {}

    async def all_plans() -> dict[str, Any]:
        conn = await asyncpg.connect(db["runtime"])
        try:
            for case in all_cases:
                first = case["args"][0]
                if case.get("kind") == "search":
                    stmts = await search_statements(case["jql"], "dave@example.com")
                    plans[case["name"]] = {
                        "statements": [{"role": role, "sql": sql,
                                        **await explain(conn, tenant_id, sql, a)}
                                       for role, (sql, a) in zip(("page", "count"), stmts,
                                                                 strict=True)]}
                elif case.get("kind") == "get":
                    q = queries.get_issue
                    plans[case["name"]] = {"statements": [{
                        "role": "get_issue", "sql": q.sql,
                        **await explain(conn, tenant_id, q.sql, q.bind(first))}]}
                else:
                    t = templates[case["tool"]]
                    plans[case["name"]] = {"statements": [{
                        "role": "template", "sql": t.sql,
                        **await explain(conn, tenant_id, t.sql, t.bind(first))}]}
        finally:
            await conn.close()
        return plans

    log("EXPLAIN (ANALYZE, BUFFERS) of every case as spiral_app")
    asyncio.run(all_plans())

    log("text search in the database")
    text = asyncio.run(text_search_timings(
        superuser_db_url, tenant_id, templates["sql_search_issues_by_text"].sql,
        ["checkout", "payment webhook", "chekout tiemout"], args.runs))
    log("LEAKPROOF experiment (rolled back)")
    jql_sql = []
    for name in ("text ~ checkout",):
        page, _count = asyncio.run(search_statements(SEARCHES[name], "dave@example.com"))
        jql_sql.append((f"search: {name} (page)", page[0], page[1]))
    summary_stmt = asyncio.run(search_statements('summary ~ "checkout"', "dave@example.com"))
    jql_sql.append(("search: summary ~ checkout (page)", summary_stmt[0][0], summary_stmt[0][1]))
    jql_sql.append(("search: summary ~ checkout (count)", summary_stmt[1][0],
                    summary_stmt[1][1]))
    leak = asyncio.run(leakproof_experiment(superuser_db_url, tenant_id, jql_sql, args.runs))

    # -- report
    print()
    print(f"spiral-mcp scale benchmark {stamp}: {args.tenants} tenants x {args.items:,} items "
          f"(PostgreSQL {db['server_version']}), POST /execute tools/call, wrk -t1 "
          f"{args.duration:g} s per case; CPU busy before start {busy_idle:.0%}")
    head = f"{'case':<44} {'conc':>4} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'bad':>4}"
    print(head)
    print("-" * len(head))
    for r in http:
        print(f"{r['case']:<44} {r['concurrency']:>4} {r['rps']:>8,.0f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['bad'] + r['errors']:>4}")
    print("\nplans (as spiral_app, tenant set; EXPLAIN ANALYZE execution ms; scans):")
    for name, p in plans.items():
        for s in p["statements"]:
            generic = s.get("generic_scans")
            differs = generic is not None and [g.split(" (")[0] for g in generic] != [
                x.split(" (")[0] for x in s["scans"]]
            print(f"  {name} [{s['role']}] {s['execution_ms']:.2f} ms: "
                  + "; ".join(s["scans"]))
            if differs:
                print(f"      generic plan: {'; '.join(generic or [])}")
    print("\nsql_search_issues_by_text in the database (median ms as spiral_app):")
    for q, r in text.items():
        print(f"  {q!r}: {r['median_ms']} ms, {r['rows']} rows ({'; '.join(r['scans'])})")
    print("\nLEAKPROOF experiment (in-database median ms as spiral_app, rolled back):")
    for q, phases in leak["jql"].items():
        print(f"  {q}: as is {phases['as_is']['median_ms']} ms "
              f"({'; '.join(phases['as_is']['scans'])}) -> leakproof "
              f"{phases['leakproof']['median_ms']} ms ({'; '.join(phases['leakproof']['scans'])})")

    out = RESULTS / f"{stamp}-scale.json"
    out.write_text(json.dumps({
        "timestamp": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "cpu_busy_idle": busy_idle, "cpu_busy_before_load": busy_before_load,
        "config": {"tenants": args.tenants, "items": args.items, "duration_s": args.duration,
                   "concurrency": levels, "product_env": PRODUCT_ENV,
                   "database": "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL")
                   else "embedded"},
        "data": {k: v for k, v in db.items() if k not in ("api_key", "runtime")},
        "cases": [{k: v for k, v in c.items() if k not in ("lua",)} | {"args": c["args"][:5]}
                  for c in all_cases],
        "http": http, "plans": plans, "text_search": text, "leakproof": leak,
    }, indent=2, default=str))
    print(f"\nresults: {out}  (server log: {workdir})")


if __name__ == "__main__":
    main()
