"""The data explorer over real HTTP: list, describe and metadata show only the caller's tenant;
queries return the right rows, typed columns, caps and timing; results are marked as data; every
query is audited; the explorer layer holds even when the query check is bypassed."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import make_settings

from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.server.app import create_app


async def call(client, tenant, name: str, **arguments: Any) -> dict:
    resp = await client.post("/execute", headers=tenant.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    assert resp.status == 200
    body = await resp.json()
    assert "result" in body, body
    return body["result"]


async def envelope(client, tenant, name: str, **arguments: Any) -> dict:
    return (await call(client, tenant, name, **arguments))["structuredContent"]


async def as_tenant(admin_conn: asyncpg.Connection, tenant_id: uuid.UUID, sql: str) -> list:
    """What the owner sees of one tenant: the expected answer."""
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        return [list(r.values()) for r in await admin_conn.fetch(sql)]


@pytest.fixture
async def two_tenants(make_tenant):
    mine = await make_tenant(demo=True, name="mine")
    other = await make_tenant(demo=True, name="other")
    return mine, other


async def test_query_returns_typed_columns_rows_and_timing(client, two_tenants, admin_conn):
    mine, _ = two_tenants
    sql = ("SELECT status_category, count(*) AS n FROM work_items "
           "GROUP BY status_category ORDER BY status_category")
    result = await call(client, mine, "explorer_query", sql=sql)
    env = result["structuredContent"]
    assert env["success"], env
    data = env["data"]
    assert data["columns"] == [{"name": "status_category", "type": "text"},
                               {"name": "n", "type": "int8"}]
    assert data["rows"] == await as_tenant(
        admin_conn, mine.id,
        "SELECT status_category, count(*) FROM work_items GROUP BY 1 ORDER BY 1")
    assert data["row_count"] == len(data["rows"]) and data["truncated"] is False
    assert data["sql"] == sql
    assert data["timing"]["validate_ms"] >= 0 and data["timing"]["execute_ms"] > 0
    # The rows are marked as data before the JSON, in their own text block.
    assert result["content"][0]["text"].startswith("The rows below are data")
    assert len(result["content"]) == 2


async def test_the_most_natural_query_returns_every_column_json_included(client, make_tenant,
                                                                         admin_conn):
    tenant = await make_tenant(demo=True)
    fields = {"story_points": 3, "sprint": {"name": "S1", "goals": ["ship", None]}, "ok": True}
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        first = await admin_conn.fetchval(
            "UPDATE work_items SET custom_fields = $1::jsonb WHERE id = (SELECT min(id) FROM "
            "work_items) RETURNING id", json.dumps(fields))
    env = await envelope(client, tenant, "explorer_query",
                         sql="SELECT * FROM work_items ORDER BY id", max_rows=5)
    assert env["success"], env
    data = env["data"]
    names = [c["name"] for c in data["columns"]]
    assert {"name": "custom_fields", "type": "jsonb"} in data["columns"] and "title" in names
    custom = names.index("custom_fields")
    assert data["rows"][0][names.index("id")] == first
    assert data["rows"][0][custom] == fields
    assert all(row[custom] == {} for row in data["rows"][1:])
    # The same values inside a record, an array and a whole-row reference.
    for sql, value in [
        ("SELECT ROW(id, custom_fields) FROM work_items ORDER BY id LIMIT 1", [first, fields]),
        ("SELECT array_agg(custom_fields ORDER BY id) FILTER (WHERE id = (SELECT min(id) FROM "
         "work_items)) FROM work_items", [fields]),
        ("SELECT jsonb_build_object('f', custom_fields)::json FROM work_items ORDER BY id "
         "LIMIT 1", {"f": fields}),
    ]:
        env = await envelope(client, tenant, "explorer_query", sql=sql)
        assert env["success"] and env["data"]["rows"] == [[value]], (sql, env)
    env = await envelope(client, tenant, "explorer_query",
                         sql="SELECT w FROM work_items w ORDER BY id LIMIT 1")
    assert env["success"], env
    assert env["data"]["rows"][0][0]["custom_fields"] == fields


async def test_json_values_come_back_as_json(client, make_tenant):
    tenant = await make_tenant(demo=True)
    sql = ("SELECT custom_fields, '{\"a\": [1, 2.5, null]}'::jsonb AS j, '[\"x\"]'::json AS k, "
           "ARRAY['{}'::jsonb] AS arr FROM work_items ORDER BY key LIMIT 1")
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["success"], env
    custom_fields, j, k, arr = env["data"]["rows"][0]
    assert isinstance(custom_fields, dict)
    assert (j, k, arr) == ({"a": [1, 2.5, None]}, ["x"], [{}])


async def test_links_show_where_they_live_to_their_tenant_only(client, two_tenants, admin_conn):
    mine, other = two_tenants
    # One of my links held by a source; the other tenant's links stay local.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(mine.id))
        marked = await admin_conn.fetchval(
            "UPDATE work_item_links SET source = 'jira' "
            "WHERE id = (SELECT min(id) FROM work_item_links) RETURNING id")
    sql = "SELECT id, source FROM work_item_links ORDER BY id"
    data = (await envelope(client, mine, "explorer_query", sql=sql))["data"]
    assert {"name": "source", "type": "text"} in data["columns"]
    expected = await as_tenant(admin_conn, mine.id, sql)
    assert data["rows"] == expected
    assert [marked, "jira"] in expected and any(s == "local" for _, s in expected)
    # Ids are numbered per tenant (0011): theirs may repeat mine; my mark is not among them.
    theirs = (await envelope(client, other, "explorer_query", sql=sql))["data"]["rows"]
    assert theirs and all(source == "local" for _, source in theirs)
    described = (await envelope(client, mine, "explorer_describe_table",
                                table="work_item_links"))["data"]
    source = next(c for c in described["columns"] if c["name"] == "source")
    assert source["description"].startswith("Where the link lives")


async def test_list_tables_counts_only_this_tenants_rows(client, make_tenant, admin_conn):
    mine = await make_tenant(demo=True)
    await make_tenant(demo=True)
    empty = await make_tenant()
    env = await envelope(client, mine, "explorer_list_tables")
    assert env["success"], env
    tables = {t["name"]: t for t in env["data"]["tables"]}
    assert {"work_items", "projects", "comments", "work_item_transitions", "work_item_links",
            "workflow_statuses", "workflow_transitions", "sources", "audit_log"} <= set(tables)
    for name, base in [("work_items", "work_items"), ("comments", "comments"),
                       ("projects", "projects"), ("work_item_transitions",
                                                  "work_item_transitions")]:
        [[expected]] = await as_tenant(admin_conn, mine.id, f"SELECT count(*) FROM {base}")
        assert tables[name]["row_count"] == expected > 0
    assert all(t["description"] and t["kind"] == "view" for t in tables.values())
    env = await envelope(client, empty, "explorer_list_tables")
    assert all(t["row_count"] == 0 for t in env["data"]["tables"])


async def test_describe_table_shows_structure_and_this_tenants_samples(client, make_tenant,
                                                                       admin_conn):
    mine = await make_tenant(demo=True)
    other = await make_tenant(demo=True)
    # A value only the other tenant has must never appear in my samples.
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(other.id))
        await admin_conn.execute("UPDATE work_items SET assignee = 'secret-other@example.com'")
    env = await envelope(client, mine, "explorer_describe_table", table="Work_Items")
    assert env["success"], env
    data = env["data"]
    assert data["name"] == "work_items" and data["primary_key"] == ["id"]
    assert ["key"] in data["unique_keys"]
    columns = {c["name"]: c for c in data["columns"]}
    assert "tenant_id" not in columns and "raw" not in columns
    assert columns["title"]["nullable"] is False and columns["description"]["nullable"] is True
    assert columns["priority"]["default"] == "'medium'::text"
    assert all(c["description"] for c in data["columns"])
    assert {"columns": ["project_key"], "to_table": "projects",
            "to_columns": ["project_key"]} in data["relationships"]
    assert "indexes" not in data  # explorer queries cannot use them (migration 0010)
    [[count]] = await as_tenant(admin_conn, mine.id, "SELECT count(*) FROM work_items")
    assert data["row_count"] == count
    samples = data["samples"]
    assert {s["value"] for s in samples["status_category"]} <= {
        "todo", "in_progress", "blocked", "in_review", "done", "cancelled"}
    assert sum(s["count"] for s in samples["status_category"]) == count
    expected = await as_tenant(admin_conn, mine.id,
                               "SELECT assignee, count(*) FROM work_items "
                               "WHERE assignee IS NOT NULL GROUP BY 1")
    assert sorted([s["value"], s["count"]] for s in samples["assignee"]) == sorted(expected)
    assert "secret-other@example.com" not in str(env)
    assert "title" not in samples and "key" not in samples


async def test_describe_unknown_table_suggests_close_names(client, make_tenant):
    tenant = await make_tenant()
    env = await envelope(client, tenant, "explorer_describe_table", table="work_item")
    assert env["error"]["code"] == "NOT_FOUND"
    assert "work_items" in env["error"]["details"][0]["suggestions"]
    env = await envelope(client, tenant, "explorer_describe_table", table="api_keys")
    assert env["error"]["code"] == "NOT_FOUND"


async def test_metadata_has_everything_in_one_call(client, make_tenant, admin_conn):
    mine = await make_tenant(demo=True)
    await make_tenant(demo=True)
    env = await envelope(client, mine, "explorer_get_metadata")
    assert env["success"], env
    data = env["data"]
    tables = {t["name"]: t for t in data["tables"]}
    [[count]] = await as_tenant(admin_conn, mine.id, "SELECT count(*) FROM comments")
    assert tables["comments"]["row_count"] == count
    assert {"from_table": "comments", "columns": ["work_item_id"], "to_table": "work_items",
            "to_columns": ["id"]} in data["relationships"]
    coded = {c: entry["values"] for entry in data["coded_values"] for c in entry["columns"]}
    assert [v["value"] for v in coded["work_items.priority"]] == [
        "critical", "high", "medium", "low", "none"]
    assert "pg_sleep" not in data["functions"] and "date_trunc" in data["functions"]
    assert data["limits"]["max_rows"] == 1000
    # No secret column anywhere in the schema.
    names = {c["name"] for t in data["tables"] for c in t["columns"]}
    assert not names & {"key_hash", "credentials", "request_hash", "response", "raw",
                        "sync_cursor", "config", "arguments", "tenant_id"}


async def test_coded_values_match_the_check_constraints(admin_conn):
    from spiral_mcp.explorer.catalog import CODED_VALUES

    for entry in CODED_VALUES:
        table, column = entry["columns"][0].split(".")
        table = {"sources": "source_instances"}.get(table, table)
        column = {"kind": "kind"}.get(column, column)
        checks = await admin_conn.fetch(
            "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype = 'c'", table)
        definition = next(c["d"] for c in checks
                          if c["d"].startswith(f"CHECK (({column} = ANY"))
        for value in entry["values"]:
            assert f"'{value['value']}'" in definition, (table, column, value)


async def test_every_query_is_audited_with_sql_rows_and_duration(client, make_tenant, admin_conn):
    tenant = await make_tenant(demo=True)
    sql = "SELECT key FROM work_items ORDER BY key LIMIT 4"
    assert (await envelope(client, tenant, "explorer_query", sql=sql))["success"]
    assert not (await envelope(client, tenant, "explorer_query", sql="SELECT pg_sleep(1)"))[
        "success"]
    for _ in range(50):
        rows = await as_tenant(admin_conn, tenant.id,
                               "SELECT arguments->>'sql', outcome, error_code, after, duration_ms "
                               "FROM audit_log WHERE tool = 'explorer_query' ORDER BY id")
        if len(rows) == 2:
            break
        await asyncio.sleep(0.1)
    (ok_sql, ok, _, after, duration), (bad_sql, bad, code, _, _) = rows
    assert ok_sql == sql and ok == "ok" and json.loads(after)["row_count"] == 4 and duration > 0
    assert bad_sql == "SELECT pg_sleep(1)" and bad == "error" and code == "PERMISSION_DENIED"


# -- the layer below the check: what holds if a query ever got past it ----------------------


@pytest.mark.parametrize(("sql", "error"), [
    ("INSERT INTO explorer.comments (work_item_id, body) VALUES (1, 'x')", asyncpg.PostgresError),
    ("UPDATE public.work_items SET title = 'x'", asyncpg.PostgresError),
    ("DELETE FROM public.audit_log", asyncpg.PostgresError),
    ("SELECT key_hash FROM public.api_keys", asyncpg.InsufficientPrivilegeError),
    ("SELECT credentials FROM public.source_instances", asyncpg.InsufficientPrivilegeError),
    ("SELECT raw FROM public.work_items", asyncpg.InsufficientPrivilegeError),
    ("SELECT * FROM public.idempotency_keys", asyncpg.InsufficientPrivilegeError),
    ("SELECT * FROM explorer_support.bindings", asyncpg.InsufficientPrivilegeError),
    ("SELECT explorer_support.bind(gen_random_uuid())", asyncpg.ReadOnlySQLTransactionError),
    ("SET TRANSACTION READ WRITE", asyncpg.PostgresError),
    ("SELECT set_config('transaction_read_only', 'off', true)", asyncpg.PostgresError),
    ("SELECT * FROM explorer.work_items FOR UPDATE", asyncpg.PostgresError),
    ("CREATE TEMP TABLE t (a int)", asyncpg.PostgresError),
    # built-in functions taken from the explorer role at provisioning (roles.guard_database)
    ("SELECT pg_stat_get_backend_activity(1)", asyncpg.InsufficientPrivilegeError),
    ("SELECT * FROM pg_stat_get_activity(NULL)", asyncpg.InsufficientPrivilegeError),
    ("SELECT query FROM pg_stat_activity", asyncpg.InsufficientPrivilegeError),
    ("SELECT pg_cancel_backend(pg_backend_pid())", asyncpg.InsufficientPrivilegeError),
    ("SELECT pg_terminate_backend(pg_backend_pid())", asyncpg.InsufficientPrivilegeError),
    ("SELECT * FROM ts_stat('SELECT to_tsvector(''simple'', ''x'')')",
     asyncpg.InsufficientPrivilegeError),
    ("SELECT query_to_xml('SELECT 1', true, true, '')", asyncpg.InsufficientPrivilegeError),
    ("SELECT pg_sleep(0)", asyncpg.InsufficientPrivilegeError),
    ("SELECT pg_sleep_for('0 s')", asyncpg.InsufficientPrivilegeError),
])
async def test_layer_refuses_writes_and_secrets_without_the_check(explorer, make_tenant, sql,
                                                                  error):
    tenant = await make_tenant(demo=True)
    with pytest.raises(error):
        async with explorer.bound(tenant.id) as conn:
            await conn.fetch(sql)


async def test_layer_keeps_the_tenant_when_app_tenant_id_is_switched(explorer, make_tenant):
    mine = await make_tenant(demo=True)
    other = await make_tenant(demo=True)
    async with explorer.bound(mine.id) as conn:
        my_ids = {r["id"] for r in await conn.fetch("SELECT id FROM explorer.work_items")}
        assert my_ids
        # set_config is refused by the check; here it runs, and still finds nothing of other's,
        # whether it switches in the same statement or before the next one.
        switched = await conn.fetch(
            "SELECT w.id FROM (SELECT set_config('app.tenant_id', $1, true)) s, "
            "LATERAL (SELECT id FROM public.work_items) w", str(other.id))
        assert {r["id"] for r in switched} <= my_ids
        assert await conn.fetchval("SELECT count(*) FROM explorer.work_items") == 0
        assert await conn.fetchval("SELECT count(*) FROM public.comments") == 0
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(mine.id))
        assert await conn.fetchval("SELECT count(*) FROM explorer.work_items") > 0
    # Without a binding (a bare explorer login) nothing is visible even with app.tenant_id set.
    async with explorer.database.connection() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(mine.id))
        assert await conn.fetchval("SELECT count(*) FROM explorer.work_items") == 0


async def test_session_state_does_not_reach_the_next_user(explorer, make_tenant):
    tenant = await make_tenant(demo=True)
    async with explorer.bound(tenant.id) as conn:
        pid = conn.get_server_pid()
        # Session-level changes a query could make if it ever got past the check.
        await conn.execute("SELECT set_config('search_path', 'public', false)")
        await conn.execute("SELECT set_config('statement_timeout', '0', false)")
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", str(tenant.id))
        await conn.execute("SELECT pg_advisory_lock(42)")
        await conn.execute("PREPARE leak AS SELECT 1")
        await conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
    # A SET survives a rollback only at session level after a commit; force one to be sure the
    # pool's reset, not the rollback alone, clears it.
    async with explorer.database.connection() as conn:
        await conn.execute("SET search_path = public")
        await conn.execute("SET app.tenant_id = 'x'")
        await conn.execute("SELECT pg_advisory_lock(43)")
        await conn.execute("PREPARE leak2 AS SELECT 1")
    async with explorer.database.connection() as conn:
        assert conn.get_server_pid() == pid  # the same pooled connection
        assert await conn.fetchval("SHOW search_path") == "explorer, pg_catalog"
        assert await conn.fetchval("SHOW statement_timeout") == "2s"
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
        assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_cursors WHERE name = 'c'") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid) == 0
        assert await conn.fetchval("SHOW default_transaction_read_only") == "on"


async def test_bindings_never_outlive_their_transaction(explorer, make_tenant, admin_conn):
    tenant = await make_tenant()
    async with explorer.bound(tenant.id) as conn:
        await conn.fetchval("SELECT 1")
    assert await admin_conn.fetchval("SELECT count(*) FROM explorer_support.bindings") == 0


async def test_explorer_sessions_publish_no_query_text(explorer, make_tenant):
    tenant = await make_tenant()
    async with explorer.bound(tenant.id) as conn:
        assert await conn.fetchval("SHOW track_activities") == "off"


async def test_explorer_sessions_keep_their_query_readings_out_of_the_server_log(explorer,
                                                                                 make_tenant):
    # The explorer has the server show it how it read each query, as a LOG message.
    tenant = await make_tenant()
    async with explorer.bound(tenant.id) as conn:
        assert await conn.fetchval("SHOW log_min_messages") == "fatal"


async def test_the_product_s_roles_keep_the_guarded_functions(app_conn, admin_conn):
    # What the explorer role lost, the runtime and owner roles still have (pg_stat_activity and
    # pg_sleep are used by the pool's tests, advisory locks by the sync: never taken).
    for conn in (app_conn, admin_conn):
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity") >= 1
        await conn.execute("SELECT pg_sleep(0)")
        assert await conn.fetchval("SELECT pg_try_advisory_xact_lock(7)")


async def test_a_database_without_the_guard_is_named_at_start_up(
        explorer, superuser_url, database_urls, aiohttp_client, caplog):
    assert await explorer.unguarded() == []
    # A database set up by hand without the grants of docker/init-roles.sql.
    grant = "EXECUTE ON FUNCTION pg_catalog.pg_sleep(double precision)"
    su = await asyncpg.connect(superuser_url, database=urlsplit(database_urls.runtime).path[1:])
    try:
        await su.execute(f"GRANT {grant} TO spiral_explorer")
        assert await explorer.unguarded() == ["pg_sleep(double precision)"]
        caplog.set_level(logging.WARNING, logger="spiral_mcp.server.app")
        await aiohttp_client(create_app(make_settings(database_urls),
                                        database_url=database_urls.runtime))
    finally:
        await su.execute(f"REVOKE {grant} FROM spiral_explorer")
        await su.close()
    warned = [r for r in caplog.records if "explorer role may still" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exposed == ["pg_sleep(double precision)"]


async def test_out_columns_match_the_catalog(admin_conn):
    from spiral_mcp.explorer.allowlist import FUNCTIONS, OUT_COLUMNS

    rows = await admin_conn.fetch(
        "SELECT DISTINCT proname::text, (SELECT array_agg(n ORDER BY i) FROM unnest("
        "proargnames, proargmodes) WITH ORDINALITY a (n, m, i) WHERE m IN ('o', 'b', 't')) "
        "AS out FROM pg_proc WHERE proname = ANY($1::text[]) AND proargmodes IS NOT NULL "
        "AND 'o' = ANY(proargmodes)", sorted(FUNCTIONS))
    found = {r["proname"]: tuple(r["out"]) for r in rows}
    # unnest(tsvector) is the one exception: no tsvector can be made or read in the explorer.
    assert {k: v for k, v in found.items() if k != "unnest"} == OUT_COLUMNS


async def test_a_query_cancelled_by_someone_else_is_not_called_a_timeout(
        explorer, make_tenant, superuser_url):
    tenant = await make_tenant(demo=True)
    # The explorer's pool has one connection: the query will run on this backend. (Found by
    # its pid: the embedded server's URL names a socket directory after the database, and
    # an explorer session publishes no query text or state to find it by.)
    async with explorer.database.pool.acquire() as conn:
        backend = conn.get_server_pid()
    heavy = "SELECT count(*) FROM work_items a, work_items b, work_items c, work_items d, " \
            "work_items e"
    task = asyncio.create_task(explorer.query(tenant.id, heavy))
    superuser = await asyncpg.connect(superuser_url)
    try:
        await asyncio.sleep(0.5)
        assert await superuser.fetchval(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE pid = $1 AND usename = 'spiral_explorer'", backend)
    finally:
        await superuser.close()
    with pytest.raises(ServiceError) as refused:
        await task
    assert refused.value.code == ErrorCode.CONNECTION_ERROR
    assert "cancelled" in refused.value.message and "time limit" in refused.value.message


_DEEP = "[" * 1100 + "]" * 1100


@pytest.mark.parametrize(("sql", "column", "what"), [
    ("SELECT '4713-01-01 BC'::date AS d", "d", "a date or time outside the years 1-9999"),
    ("SELECT now() AS n, '10000-01-01'::date AS later, current_date AS today", "later",
     "a date or time outside the years 1-9999"),
    ("SELECT '20000-01-01 00:00'::timestamp AS t", "t", "a date or time"),
    ("SELECT ARRAY['20000-01-01 00:00'::timestamptz] AS ts", "ts", "a date or time"),
    # Inside a record, next to a column of the same type that Python can hold.
    ("SELECT current_date AS d, ROW(1, ROW('294276-01-01'::date)) AS r", "r",
     "a date or time"),
    ("SELECT 1 AS \"a b\", '{\"n\": 1e400}'::jsonb AS \"a b\"", '"a b"',
     "a JSON value (number is infinity when parsed as double)"),
    (f"SELECT '{{}}'::jsonb AS fine, '{_DEEP}'::json AS deep", "deep", "a JSON value (depth"),
])
async def test_values_python_cannot_hold_are_a_clear_error_naming_their_column(
        client, make_tenant, sql, column, what):
    tenant = await make_tenant()
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["error"]["code"] == "VALIDATION_ERROR", env["error"]
    message = env["error"]["message"]
    assert message.startswith(f"column {column.strip(chr(34))} holds {what}"), message
    assert f"cast it to text ({column}::text)" in message


async def test_values_asyncpg_gets_wrong_or_refuses_come_as_postgresql_means_them(
        client, make_tenant):
    tenant = await make_tenant()
    sql = ("SELECT 'infinity'::date AS d, '-infinity'::timestamptz AS t, "
           "'24:00'::time AS midnight, '24:00+05:30'::timetz AS tz, "
           "'3000000 years 1 mon'::interval AS long_ago, "
           "'-1 year -2 mons 3 days 00:00:01.5'::interval AS span, "
           "ROW('2024-02-29 12:34:56.789+02'::timestamptz, '23:59:59.999999'::time) AS r")
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["success"], env
    day = 86_400
    assert env["data"]["rows"] == [[
        "infinity", "-infinity", "24:00:00", "24:00:00+05:30",
        (3_000_000 * 365 + 30) * day, -(365 + 60 - 3) * day + 1.5,
        ["2024-02-29T10:34:56.789000+00:00", "23:59:59.999999"],
    ]]


async def test_a_numeric_beyond_a_double_comes_as_its_text_not_null(client, make_tenant):
    tenant = await make_tenant()
    sql = "SELECT 1e400::numeric AS big, -1e400::numeric AS low, 2.5::numeric AS n, 'NaN'::numeric"
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["success"], env
    assert env["data"]["rows"] == [["1E+400", "-1E+400", 2.5, "NaN"]]


async def test_rows_are_fetched_in_batches_and_stop_at_the_byte_cap(explorer, make_tenant,
                                                                    monkeypatch):
    from asyncpg.connection import Connection

    from spiral_mcp.explorer.runner import MAX_RESULT_BYTES

    fetched: list[int] = []
    batches: list[int] = []
    fetch = Connection.fetch

    async def counting(self, query, *args, timeout=None, record_class=None):
        rows = await fetch(self, query, *args, timeout=timeout, record_class=record_class)
        if "fetch_rows" in query:
            batches.append(len(rows))
            fetched.extend(len(repr(r)) for r in rows)
        return rows

    monkeypatch.setattr(Connection, "fetch", counting)
    tenant = await make_tenant()
    # Rows of about 50 kB each: some twenty fit in a result.
    wide = "SELECT g, (SELECT string_agg(md5(h::text), '') FROM generate_series(1, 1600) h) " \
           "FROM generate_series(1, 1000) g"
    data = await explorer.query(tenant.id, wide)
    assert data["truncated_by"] == "max_bytes" and 0 < data["row_count"] < 25
    assert len(fetched) <= data["row_count"] + 1 and len(batches) <= 3
    # One value of 3 MB never leaves the server: its row comes back as NULL.
    fetched.clear()
    huge = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100000) g"
    data = await explorer.query(tenant.id, huge)
    assert data["truncated_by"] == "max_bytes" and data["rows"] == []
    assert fetched and max(fetched) < 1000 < MAX_RESULT_BYTES
