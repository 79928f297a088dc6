"""No plan an explorer query gets is shaped by the values of other tenants' rows.

pg_statistic describes every tenant's rows. The explorer's views are expressions in a subquery of
their own, so the planner finds no statistic for any column a tenant's query names. The test
plans a second tenant's queries twice, once after the first tenant gave 150 items to one
assignee and once after it spread them over 150 assignees (same rows, same sizes, both
analysed), and compares the plans: the explorer's views must plan alike, while a plain view of the
same table (as the explorer had before) plans differently, which shows the test can tell.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from spiral_mcp import admin, demo
from spiral_mcp.provision import provision
from spiral_mcp.queries import Queries
from spiral_mcp.roles import EXPLORER_ROLE

SECRET = "ceo-secret@acorp.example"
QUERIES = [
    f"SELECT * FROM {{schema}}.work_items WHERE assignee = '{SECRET}'",
    "SELECT key FROM {schema}.work_items WHERE assignee >= 'ceo-s' AND assignee < 'ceo-t'",
    "SELECT assignee, count(*) FROM {schema}.work_items GROUP BY assignee",
    "SELECT count(*) FROM {schema}.work_items a JOIN {schema}.work_items b "
    "ON a.assignee = b.assignee WHERE a.assignee LIKE 'ceo%'",
    "SELECT DISTINCT assignee FROM {schema}.work_items WHERE assignee IS NOT NULL",
]


def _shape(plan: Any) -> Any:
    """A plan's node types and row estimates, all the way down (costs follow table sizes)."""
    node = plan.get("Plan", plan)
    return {"type": node["Node Type"], "rows": node["Plan Rows"],
            "strategy": node.get("Strategy"),
            "children": [_shape(child) for child in node.get("Plans", [])]}


async def _plans(conn: asyncpg.Connection, queries: Queries, tenant: uuid.UUID,
                 schema: str) -> list[Any]:
    plans = []
    for sql in QUERIES:
        await queries.explorer_begin(conn)
        try:
            await queries.explorer_bind(conn, tenant_id=str(tenant))
            rows = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql.format(schema=schema))
        finally:
            await queries.explorer_rollback(conn)
        plans.append(_shape(json.loads(rows)[0]))
    return plans


@pytest.fixture
async def own_database(superuser_url: str) -> Any:
    """A database of this test's own: how many tenants and rows the shared test database holds
    by now would drown a plain view's estimates (the tenant's share of a table scales them)."""
    name = f"spiral_stats_{uuid.uuid4().hex[:10]}"
    urls = await provision(superuser_url, name)
    try:
        yield urls
    finally:
        conn = await asyncpg.connect(superuser_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _tenant(owner: asyncpg.Connection, queries: Queries, name: str) -> uuid.UUID:
    async with owner.transaction():
        tenant = await admin.create_tenant(owner, queries, name)
        await demo.load_demo(owner, queries, tenant_id=tenant, items_per_project=20)
    return tenant


async def test_plans_do_not_follow_other_tenants_values(own_database, queries) -> None:
    owner = await asyncpg.connect(own_database.admin)
    schema = f"plain_{uuid.uuid4().hex[:8]}"
    # explorer.work_items as migration 0003 made it (columns the planner sees through).
    await owner.execute(
        f"CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO {EXPLORER_ROLE}; "
        f"CREATE VIEW {schema}.work_items WITH (security_invoker = true) AS "
        "SELECT id, key, assignee FROM public.work_items; "
        f"GRANT SELECT ON {schema}.work_items TO {EXPLORER_ROLE}")
    victim = await _tenant(owner, queries, "victim")
    attacker = await _tenant(owner, queries, "attacker")
    async with owner.transaction():
        await owner.execute("SELECT set_config('app.tenant_id', $1, true)", str(victim))
        await owner.execute(
            "INSERT INTO work_items (tenant_id, key, project_key, number, title, status, "
            "status_category, assignee) "
            "SELECT $1, 'WEB-' || (1000 + n), 'WEB', 1000 + n, 'secret work', 'To Do', 'todo', $2 "
            "FROM generate_series(1, 150) AS n", victim, SECRET)
    explorer = await asyncpg.connect(own_database.explorer,
                                      server_settings={"search_path": "explorer, pg_catalog"})
    seen: dict[str, list[list[Any]]] = {"explorer": [], schema: []}
    try:
        for spread in (False, True):
            if spread:  # the same rows and sizes, 150 assignees of the secret's length
                async with owner.transaction():
                    await owner.execute("SELECT set_config('app.tenant_id', $1, true)",
                                        str(victim))
                    await owner.execute(
                        "UPDATE work_items SET assignee = 'ceo-' || lpad(number::text, 6, '0') "
                        "|| '@acorp.example' WHERE assignee = $1", SECRET)
            await owner.execute("VACUUM ANALYZE work_items")
            for name, plans in seen.items():
                plans.append(await _plans(explorer, queries, attacker, name))
    finally:
        await explorer.close()
        await owner.close()
    assert seen[schema][0] != seen[schema][1], "the test cannot tell statistics apart"
    for before, after, sql in zip(*seen["explorer"], QUERIES, strict=True):
        assert before == after, sql
