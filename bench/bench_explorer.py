"""Explorer benchmarks: the cost of the query check on typical queries, and query throughput.

    .venv/bin/python bench/bench_explorer.py                      # validation only
    .venv/bin/python bench/bench_explorer.py --database-url postgresql://postgres@127.0.0.1/postgres
        # also throughput: provisions a scratch database with demo tenants, runs queries
        # through the explorer (check + bound read-only transaction + fetch), then drops it
    .venv/bin/python bench/bench_explorer.py --database-url ... --compare --items 2000
        # the explorer as it is against a baseline, side by side in interleaved rounds: the
        # baseline skips the check of PostgreSQL's reading (explorer.resolved) and reads a
        # second database whose explorer views are the plain ones (migration 0010 rolled back)

Validation is parse (pglast) + walk; the aim is under 1 ms per typical query.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path

_ROLLBACK_0010 = Path(__file__).resolve().parent.parent / "migrations" \
    / "0010_explorer_statistics.rollback.sql"

QUERIES = {
    "count": "SELECT count(*) FROM work_items",
    "group by": "SELECT status_category, count(*) FROM work_items GROUP BY 1 ORDER BY 2 DESC",
    "join": "SELECT w.key, p.name, count(c.id) FROM work_items w JOIN projects p USING "
            "(project_key) LEFT JOIN comments c ON c.work_item_id = w.id "
            "WHERE w.status_category <> 'done' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20",
    "cte + window": "WITH t AS (SELECT work_item_id, to_category, transitioned_at, lag("
                    "transitioned_at) OVER (PARTITION BY work_item_id ORDER BY transitioned_at)"
                    " AS prev FROM work_item_transitions) SELECT to_category, percentile_cont("
                    "0.5) WITHIN GROUP (ORDER BY extract(epoch FROM transitioned_at - prev)) "
                    "FROM t WHERE prev IS NOT NULL GROUP BY 1",
    "date arithmetic": "SELECT date_trunc('week', created_at) AS week, count(*) FILTER (WHERE "
                       "resolved_at IS NOT NULL), avg(resolved_at - created_at) FROM work_items "
                       "WHERE created_at > now() - interval '90 days' GROUP BY 1 ORDER BY 1",
    "point lookup": "SELECT key, title, status FROM work_items WHERE key = 'WEB-7'",
}


def bench_validation(rounds: int) -> None:
    from spiral_mcp.explorer import QueryValidator

    # The columns the queries name (qualified columns are checked against them).
    validator = QueryValidator({
        "work_items": ["id", "key", "project_key", "status_category", "created_at", "resolved_at"],
        "projects": ["id", "project_key", "name"],
        "comments": ["id", "work_item_id", "body"],
        "work_item_transitions": ["id", "work_item_id", "to_category", "transitioned_at"],
    })
    print(f"validation ({rounds} runs each, after warm-up)")
    for name, sql in QUERIES.items():
        for _ in range(100):
            validator.check(sql)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            validator.check(sql)
            samples.append((time.perf_counter() - started) * 1e6)
        samples.sort()
        print(f"  {name:16} median {statistics.median(samples):7.1f} us   "
              f"p99 {samples[int(len(samples) * 0.99)]:7.1f} us   ({len(sql)} chars)")


async def _scratch(superuser_url: str, items: int, *, plain_views: bool) -> tuple[str, list]:
    """A provisioned database with 4 demo tenants; with ``plain_views`` the explorer views are
    the ones before migration 0010 (its rollback run as the owner)."""
    import asyncpg

    from spiral_mcp import admin, demo
    from spiral_mcp.provision import provision
    from spiral_mcp.queries import Queries

    name = f"spiral_bench_{uuid.uuid4().hex[:8]}"
    urls = await provision(superuser_url, name)
    queries = Queries.load()
    conn = await asyncpg.connect(urls.admin)
    try:
        tenants = []
        for i in range(4):
            async with conn.transaction():
                tenant = await admin.create_tenant(conn, queries, f"bench {i}")
                await demo.load_demo(conn, queries, tenant_id=tenant,
                                     items_per_project=items // 3)
            tenants.append(tenant)
        if plain_views:
            await conn.execute(_ROLLBACK_0010.read_text())
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return name, [urls, tenants]


async def _drop(superuser_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(superuser_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _explorer(urls, concurrency: int, *, checked: bool):
    from spiral_mcp.explorer import Explorer, create_explorer_pool
    from spiral_mcp.queries import Queries

    pool = await create_explorer_pool(urls.explorer, min_size=concurrency, max_size=concurrency,
                                      connect_timeout=5, query_timeout=10)
    explorer = await Explorer.start(pool, Queries.load(), acquire_timeout=5, query_timeout=10,
                                    max_rows=1000)
    if not checked:
        explorer.resolution = _Unchecked()
    return pool, explorer


class _Unchecked:
    """The baseline: no check of PostgreSQL's reading."""

    async def check(self, *args: object, **kwargs: object) -> None:
        return None


async def _rate(explorer, tenants: list, sql: str, seconds: float, concurrency: int
                ) -> tuple[float, float]:
    """Queries per second and median latency (ms) of ``concurrency`` callers for ``seconds``."""
    done = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await explorer.query(tenants[k % len(tenants)], sql)
            latencies.append((time.perf_counter() - started) * 1000)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done / (time.perf_counter() - started), statistics.median(latencies)


async def bench_throughput(superuser_url: str, seconds: float, concurrency: int,
                           items: int) -> None:
    name, (urls, tenants) = await _scratch(superuser_url, items, plain_views=False)
    try:
        pool, explorer = await _explorer(urls, concurrency, checked=True)
        print(f"\nthroughput ({concurrency} concurrent callers, {seconds:g} s per query, "
              f"4 tenants x {items} items)")
        for qname, sql in QUERIES.items():
            rate, median = await _rate(explorer, tenants, sql, seconds, concurrency)
            print(f"  {qname:16} {rate:8.0f} queries/s   median {median:6.2f} ms")
        await pool.close()
    finally:
        await _drop(superuser_url, name)


async def bench_compare(superuser_url: str, seconds: float, concurrency: int, items: int,
                        rounds: int) -> None:
    """The explorer as it is against the baseline, interleaved round by round."""
    current, (urls, tenants) = await _scratch(superuser_url, items, plain_views=False)
    before, (base_urls, base_tenants) = await _scratch(superuser_url, items, plain_views=True)
    try:
        variants = {
            "now": (*await _explorer(urls, concurrency, checked=True), tenants),
            "unchecked": (*await _explorer(urls, concurrency, checked=False), tenants),
            "baseline": (*await _explorer(base_urls, concurrency, checked=False), base_tenants),
        }
        print(f"\nqueries/s ({concurrency} callers, median of {rounds} interleaved rounds of "
              f"{seconds:g} s, 4 tenants x {items} items); unchecked: without the check of "
              "PostgreSQL's reading; baseline: that and the plain views")
        for qname, sql in QUERIES.items():
            rates: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(rounds):
                for variant, (_, explorer, who) in variants.items():
                    rates[variant].append((await _rate(explorer, who, sql, seconds,
                                                       concurrency))[0])
            now, unchecked, base = (statistics.median(rates[v]) for v in variants)
            print(f"  {qname:16} now {now:6.0f}  unchecked {unchecked:6.0f}  baseline "
                  f"{base:6.0f}   now/baseline {now / base:4.2f}  check {now / unchecked:4.2f}"
                  f"  views {unchecked / base:4.2f}")
        for pool, _, _ in variants.values():
            await pool.close()
    finally:
        await _drop(superuser_url, current)
        await _drop(superuser_url, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--database-url", help="a superuser URL; enables the throughput run")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--items", type=int, default=300, help="work items per tenant")
    parser.add_argument("--compare", action="store_true",
                        help="against the baseline, side by side (needs --database-url)")
    parser.add_argument("--compare-rounds", type=int, default=5)
    args = parser.parse_args()
    bench_validation(args.rounds)
    if args.database_url and args.compare:
        asyncio.run(bench_compare(args.database_url, args.seconds, args.concurrency, args.items,
                                  args.compare_rounds))
    elif args.database_url:
        asyncio.run(bench_throughput(args.database_url, args.seconds, args.concurrency,
                                     args.items))


if __name__ == "__main__":
    main()
