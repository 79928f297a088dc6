"""Explorer benchmarks: the cost of the query check on typical queries, and query throughput.

    .venv/bin/python bench/bench_explorer.py                      # validation only
    .venv/bin/python bench/bench_explorer.py --database-url postgresql://postgres@127.0.0.1/postgres
        # also throughput: provisions a scratch database with demo tenants, runs queries
        # through the explorer (check + bound read-only transaction + fetch), then drops it

Validation is parse (pglast) + walk; the aim is under 1 ms per typical query.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

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


async def bench_throughput(superuser_url: str, seconds: float, concurrency: int) -> None:
    import asyncpg

    from spiral_mcp import admin, demo
    from spiral_mcp.explorer import Explorer, create_explorer_pool
    from spiral_mcp.provision import provision
    from spiral_mcp.queries import Queries

    name = f"spiral_bench_{uuid.uuid4().hex[:8]}"
    urls = await provision(superuser_url, name)
    queries = Queries.load()
    try:
        conn = await asyncpg.connect(urls.admin)
        tenants = []
        for i in range(4):
            async with conn.transaction():
                tenant = await admin.create_tenant(conn, queries, f"bench {i}")
                await demo.load_demo(conn, queries, tenant_id=tenant, items_per_project=100)
            tenants.append(tenant)
        await conn.close()
        pool = await create_explorer_pool(urls.explorer, min_size=concurrency,
                                          max_size=concurrency, connect_timeout=5,
                                          query_timeout=10)
        explorer = await Explorer.start(pool, queries, acquire_timeout=5, query_timeout=10,
                                        max_rows=1000)
        print(f"\nthroughput ({concurrency} concurrent callers, {seconds:g} s per query, "
              "4 tenants x 300 items)")
        for qname, sql in QUERIES.items():
            done = 0
            latencies: list[float] = []
            stop = time.perf_counter() + seconds

            async def worker(k: int, sql: str = sql, stop: float = stop,
                             latencies: list[float] = latencies) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    await explorer.query(tenants[k % len(tenants)], sql)
                    latencies.append((time.perf_counter() - started) * 1000)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            elapsed = time.perf_counter() - started
            latencies.sort()
            print(f"  {qname:16} {done / elapsed:8.0f} queries/s   median "
                  f"{statistics.median(latencies):6.2f} ms   p99 "
                  f"{latencies[int(len(latencies) * 0.99)]:6.2f} ms")
        await pool.close()
    finally:
        conn = await asyncpg.connect(superuser_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--database-url", help="a superuser URL; enables the throughput run")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    bench_validation(args.rounds)
    if args.database_url:
        asyncio.run(bench_throughput(args.database_url, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
