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
async def plain_view(superuser_url: str, database_urls) -> Any:
    """explorer.work_items as migration 0003 made it (columns the planner sees through), in a
    scratch schema only this test reads."""
    conn = await asyncpg.connect(database_urls.admin)
    schema = f"plain_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(
            f"CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO {EXPLORER_ROLE}; "
            f"CREATE VIEW {schema}.work_items WITH (security_invoker = true) AS "
            "SELECT id, key, assignee FROM public.work_items; "
            f"GRANT SELECT ON {schema}.work_items TO {EXPLORER_ROLE}")
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_plans_do_not_follow_other_tenants_values(make_tenant, database_urls, admin_conn,
                                                         queries, plain_view) -> None:
    victim = await make_tenant(demo=True, name="victim")
    attacker = await make_tenant(demo=True, name="attacker")
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(victim.id))
        await admin_conn.execute(
            "INSERT INTO work_items (tenant_id, key, project_key, number, title, status, "
            "status_category, assignee) "
            "SELECT $1, 'WEB-' || (1000 + n), 'WEB', 1000 + n, 'secret work', 'To Do', 'todo', $2 "
            "FROM generate_series(1, 150) AS n", victim.id, SECRET)
    explorer = await asyncpg.connect(database_urls.explorer,
                                      server_settings={"search_path": "explorer, pg_catalog"})
    seen: dict[str, list[list[Any]]] = {"explorer": [], plain_view: []}
    try:
        for spread in (False, True):
            if spread:  # the same rows and sizes, 150 assignees of the secret's length
                async with admin_conn.transaction():
                    await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                             str(victim.id))
                    await admin_conn.execute(
                        "UPDATE work_items SET assignee = 'ceo-' || lpad(number::text, 6, '0') "
                        "|| '@acorp.example' WHERE assignee = $1", SECRET)
            await admin_conn.execute("VACUUM ANALYZE work_items")
            for schema, plans in seen.items():
                plans.append(await _plans(explorer, queries, attacker.id, schema))
    finally:
        await explorer.close()
    assert seen[plain_view][0] != seen[plain_view][1], "the test cannot tell statistics apart"
    for before, after, sql in zip(*seen["explorer"], QUERIES, strict=True):
        assert before == after, sql
