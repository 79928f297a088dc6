"""The attack corpus: SQL an agent might send to escape its tenant, write, leave state behind or
exhaust the server, each with the outcome asserted over real HTTP; and queries that are fine and
must return the right rows."""

from __future__ import annotations

import dataclasses

import pytest

from spiral_mcp.errors import ErrorCode, ServiceError
from spiral_mcp.explorer.resolved import Resolution
from tests.conftest import make_settings
from tests.test_explorer import as_tenant, envelope

V, P, T = "VALIDATION_ERROR", "PERMISSION_DENIED", "QUERY_TIMEOUT"

# Queries in which PostgreSQL reads t.current_setting as current_setting(t), t being an outer
# item that the validator once took for an inner one (issue 16): each ran
# current_setting('server_version').
BYPASSES = [
    ("aliased join hides its items",
     "SELECT (SELECT t.current_setting FROM ((SELECT 1 AS current_setting) t CROSS JOIN "
     "(SELECT 1) u) AS j) FROM unnest(ARRAY['server_version']) t"),
    ("a subquery in FROM does not see its siblings",
     "SELECT (SELECT x FROM (SELECT 1 AS current_setting) t, (SELECT t.current_setting AS x) s) "
     "FROM unnest(ARRAY['server_version']) t"),
    ("an ON clause does not see items outside its join",
     "SELECT (SELECT 1 FROM (SELECT 1 AS current_setting) t, (SELECT 1) a JOIN (SELECT 1) b "
     "ON t.current_setting IS NOT NULL) FROM unnest(ARRAY['server_version']) t"),
]

# (case, sql, error code, a word the message must name)
REFUSED = [
    # stacked statements
    ("stacked drop", "SELECT 1; DROP TABLE work_items", V, "one statement"),
    ("stacked after comment", "SELECT 1 /* x */; DELETE FROM work_items", V, "one statement"),
    ("stacked set", "SELECT 1; SET app.tenant_id = '00000000-0000-0000-0000-000000000000'", V,
     "one statement"),
    # transaction control
    ("commit", "COMMIT", V, "COMMIT"),
    ("begin", "BEGIN", V, "BEGIN"),
    ("rollback", "ROLLBACK", V, "ROLLBACK"),
    ("savepoint", "SAVEPOINT a", V, "SAVEPOINT"),
    ("set transaction", "SET TRANSACTION READ WRITE", V, "SET"),
    # writes in every form
    ("insert", "INSERT INTO work_items (title) VALUES ('x')", V, "INSERT"),
    ("update", "UPDATE work_items SET title = 'x'", V, "UPDATE"),
    ("delete", "DELETE FROM work_items", V, "DELETE"),
    ("merge", "MERGE INTO work_items w USING projects p ON false WHEN NOT MATCHED THEN DO NOTHING",
     V, "MERGE"),
    ("insert in cte", "WITH x AS (INSERT INTO comments (body) VALUES ('x') RETURNING *) "
                      "SELECT * FROM x", V, "INSERT"),
    ("update in nested cte", "SELECT * FROM (WITH u AS (UPDATE work_items SET title = 'x' "
                             "RETURNING 1) SELECT * FROM u) s", V, "UPDATE"),
    ("delete in recursive cte", "WITH RECURSIVE d AS (DELETE FROM work_items RETURNING id) "
                                "SELECT count(*) FROM d", V, "DELETE"),
    ("select into", "SELECT * INTO stolen FROM work_items", V, "SELECT INTO"),
    ("create table as", "CREATE TABLE stolen AS SELECT * FROM work_items", V, "CREATE TABLE AS"),
    ("truncate", "TRUNCATE work_items", V, "TRUNCATE"),
    ("drop", "DROP VIEW explorer.work_items", V, "DROP"),
    ("alter", "ALTER TABLE work_items DISABLE ROW LEVEL SECURITY", V, "ALTER TABLE"),
    ("grant", "GRANT SELECT ON api_keys TO spiral_explorer", V, "GRANT"),
    ("create function", "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql", V, "CREATE"),
    ("do block", "DO $$ BEGIN DELETE FROM work_items; END $$", V, "DO"),
    ("call", "CALL p()", V, "CALL"),
    ("copy to", "COPY work_items TO STDOUT", V, "COPY"),
    ("copy from program", "COPY work_items FROM PROGRAM 'id'", V, "COPY"),
    ("vacuum", "VACUUM work_items", V, "VACUUM"),
    ("refresh", "REFRESH MATERIALIZED VIEW x", V, "REFRESH"),
    ("notify", "NOTIFY chan, 'x'", V, "NOTIFY"),
    ("listen", "LISTEN chan", V, "LISTEN"),
    ("nextval", "SELECT nextval('work_items_id_seq')", P, "nextval"),
    ("setval", "SELECT setval('work_items_id_seq', 1)", P, "setval"),
    ("pg_notify", "SELECT pg_notify('c', 'x')", P, "pg_notify"),
    # switching the tenant, the role or any setting
    ("set tenant", "SET app.tenant_id = '00000000-0000-0000-0000-000000000000'", V, "SET"),
    ("set local", "SET LOCAL statement_timeout = 0", V, "SET"),
    ("reset", "RESET ALL", V, "SET/RESET"),
    ("set role", "SET ROLE spiral_owner", V, "SET"),
    ("session authorization", "SET SESSION AUTHORIZATION spiral_owner", V, "SET"),
    ("set_config tenant", "SELECT set_config('app.tenant_id', "
                          "'00000000-0000-0000-0000-000000000000', true)", P, "set_config"),
    ("set_config in subquery", "SELECT (SELECT set_config('search_path', 'public', false)), "
                               "count(*) FROM work_items", P, "set_config"),
    ("current_setting", "SELECT current_setting('app.tenant_id')", P, "current_setting"),
    ("discard", "DISCARD ALL", V, "DISCARD"),
    ("current_user", "SELECT current_user", P, "CURRENT_USER"),
    ("session_user", "SELECT session_user", P, "SESSION_USER"),
    # sleeping
    ("pg_sleep", "SELECT pg_sleep(30)", P, "pg_sleep"),
    ("pg_sleep_for in where", "SELECT 1 FROM work_items WHERE pg_sleep_for('1 minute') IS NULL",
     P, "pg_sleep_for"),
    ("pg_sleep in order by", "SELECT key FROM work_items ORDER BY pg_sleep(1)", P, "pg_sleep"),
    # locking
    ("for update", "SELECT * FROM work_items FOR UPDATE", V, "FOR UPDATE"),
    ("for share in subquery", "SELECT * FROM (SELECT * FROM work_items FOR SHARE) s", V,
     "FOR UPDATE"),
    ("lock table", "LOCK TABLE work_items", V, "LOCK"),
    ("advisory lock", "SELECT pg_advisory_lock(1)", P, "pg_advisory_lock"),
    ("advisory xact lock", "SELECT pg_advisory_xact_lock(1)", P, "pg_advisory_xact_lock"),
    # reading files or server settings
    ("read file", "SELECT pg_read_file('/etc/passwd')", P, "pg_read_file"),
    ("read binary file", "SELECT pg_read_binary_file('postgresql.conf')", P, "pg_read_binary_file"),
    ("ls dir", "SELECT * FROM pg_ls_dir('.')", P, "pg_ls_dir"),
    ("pg_settings", "SELECT * FROM pg_settings", P, "pg_settings"),
    ("qualified pg_settings", "SELECT name, setting FROM pg_catalog.pg_settings", P,
     "pg_catalog.pg_settings"),
    ("show", "SHOW ALL", V, "SHOW"),
    ("version", "SELECT version()", P, "version"),
    ("pg_authid", "SELECT * FROM pg_authid", P, "pg_authid"),
    ("information_schema", "SELECT * FROM information_schema.tables", P, "information_schema"),
    ("public table", "SELECT key_hash FROM public.api_keys", P, "public.api_keys"),
    ("unqualified secret table", "SELECT * FROM api_keys", P, "api_keys"),
    ("credentials", "SELECT credentials FROM source_instances", P, "source_instances"),
    ("support schema", "SELECT * FROM explorer_support.bindings", P, "explorer_support"),
    ("query_to_xml", "SELECT query_to_xml('SELECT * FROM api_keys', true, true, '')", P,
     "query_to_xml"),
    ("regclass cast", "SELECT 'public.api_keys'::regclass", P, "regclass"),
    ("regrole cast", "SELECT CAST('spiral_owner' AS regrole)", P, "regrole"),
    ("to_regclass", "SELECT to_regclass('api_keys')", P, "to_regclass"),
    # calling other databases
    ("dblink", "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)", P, "dblink"),
    ("dblink_exec", "SELECT dblink_exec('dbname=postgres', 'DROP TABLE x')", P, "dblink_exec"),
    ("three-part name", "SELECT * FROM postgres.public.work_items", P, "postgres.public"),
    ("import foreign schema", "IMPORT FOREIGN SCHEMA public FROM SERVER s INTO explorer", V,
     "IMPORT"),
    # large objects
    ("lo_import", "SELECT lo_import('/etc/passwd')", P, "lo_import"),
    ("lo_export", "SELECT lo_export(1, '/tmp/x')", P, "lo_export"),
    ("lo_get", "SELECT lo_get(1)", P, "lo_get"),
    ("pg_largeobject", "SELECT * FROM pg_largeobject", P, "pg_largeobject"),
    # prepared statements and cursors
    ("prepare", "PREPARE p AS SELECT * FROM work_items", V, "PREPARE"),
    ("execute", "EXECUTE p", V, "EXECUTE"),
    ("deallocate", "DEALLOCATE ALL", V, "DEALLOCATE"),
    ("declare cursor", "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM work_items", V,
     "DECLARE CURSOR"),
    ("fetch", "FETCH ALL FROM c", V, "FETCH"),
    ("close", "CLOSE ALL", V, "CLOSE"),
    ("bind parameter", "SELECT * FROM work_items WHERE key = $1", V, "parameter"),
    # heavy queries
    ("huge series", "SELECT count(*) FROM generate_series(1, 10000000000)", V, "generate_series"),
    ("huge series in select", "SELECT generate_series(1, 1e12)", V, "generate_series"),
    # allowed, but a result over 1 MiB is refused before it is made (test_explorer_memory)
    ("repeat giant string", "SELECT repeat('x', 1000000000)", V, "repeat would make"),
    ("lpad giant string", "SELECT lpad('', 1000000000, 'x')", V, "lpad would make"),
    # the built-in behind a size-checked function, or a size the text cannot show
    ("pg_catalog repeat", "SELECT pg_catalog.repeat('x', 3)", P, "pg_catalog.repeat"),
    ("pg_catalog replace", "SELECT pg_catalog.replace(title, 'a', 'b') FROM work_items", P,
     "pg_catalog.replace"),
    ("explorer schema function", "SELECT explorer.lower('x')", P, "explorer.lower"),
    ("format width from an argument", "SELECT format('%*s', 900000000, 'x')", V,
     "format widths"),
    ("format positional width", "SELECT format('%1$*2$s', 'x', 900000000)", V, "format widths"),
    ("format wide", "SELECT format('%s%900000000s', 'x', 'y')", V, "format widths"),
    ("format string from a column", "SELECT format(title, 1) FROM work_items", V,
     "must be a string literal"),
    ("to_char format from a column", "SELECT to_char(created_at, title) FROM work_items", V,
     "must be a string literal"),
    ("jsonpath every level", "SELECT jsonb_path_query_array(custom_fields, 'lax $.**') "
                             "FROM work_items", V, ".**"),
    ("jsonpath every level, named", "SELECT jsonb_path_query(custom_fields, path => "
                                    "'$.a.**'::jsonpath) FROM work_items", V, ".**"),
    ("jsonb_pretty", "SELECT jsonb_pretty(custom_fields) FROM work_items", P, "jsonb_pretty"),
    ("quote_literal", "SELECT quote_literal(title) FROM work_items", P, "quote_literal"),
    ("explain analyze", "EXPLAIN ANALYZE SELECT * FROM work_items", V, "EXPLAIN"),
    ("explain analyze option", "EXPLAIN (ANALYZE true, COSTS off) SELECT 1", V, "EXPLAIN"),
    ("explain of delete", "EXPLAIN DELETE FROM work_items", V, "EXPLAIN"),
    # unicode-escaped and quoted identifiers
    ("unicode escaped table", 'SELECT * FROM U&"api\\005Fkeys"', P, "api_keys"),
    ("unicode escaped function", 'SELECT U&"pg\\005Fsleep"(10)', P, "pg_sleep"),
    ("unicode escaped schema", 'SELECT * FROM U&"p\\0075blic".api_keys', P, "public.api_keys"),
    ("quoted upper schema", 'SELECT * FROM "PUBLIC"."API_KEYS"', P, "PUBLIC.API_KEYS"),
    ("quoted pg_catalog function", 'SELECT "pg_catalog"."pg_sleep"(1)', P, "pg_catalog.pg_sleep"),
    ("schema-qualified allowed name", "SELECT public.lower('x')", P, "public.lower"),
    ("qualified operator", "SELECT 1 OPERATOR(public.+) 1", P, "operator public.+"),
    # comments that hide keywords
    ("comment hides stacked", "SELECT 1 -- harmless\n; DROP TABLE work_items", V, "one statement"),
    ("nested comment", "SELECT 1 /* /* nested */ ; */ ; DELETE FROM work_items", V,
     "one statement"),
    ("comment splits keyword", "SEL/**/ECT 1", V, "parse"),
    ("comment inside function name", "SELECT pg_/**/sleep(1)", V, "parse"),
    # CTE scoping: a CTE's name is not visible outside its query
    ("cte name out of scope", "SELECT * FROM (WITH pg_roles AS (SELECT 1) SELECT 1) s, pg_roles",
     P, "pg_roles"),
    ("forward cte reference", "WITH a AS (SELECT * FROM pg_authid), pg_authid AS (SELECT 1) "
                              "SELECT * FROM a", P, "pg_authid"),
    # table functions and others not on the allowlist
    ("xmltable", "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x int)", V, "XMLTABLE"),
    ("tablesample", "SELECT * FROM work_items TABLESAMPLE SYSTEM (10)", V, "TABLESAMPLE"),
    ("lateral forbidden function", "SELECT * FROM work_items w, LATERAL pg_ls_dir('.') d", P,
     "pg_ls_dir"),
    ("rows from forbidden function", "SELECT * FROM ROWS FROM (generate_series(1, 2), "
                                     "pg_ls_dir('.')) r", P, "pg_ls_dir"),
    ("forbidden function in filter", "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) "
                                     "FROM work_items", P, "pg_sleep"),
    ("forbidden function in window", "SELECT row_number() OVER (ORDER BY pg_backend_pid()) "
                                     "FROM work_items", P, "pg_backend_pid"),
    ("forbidden function in default-free values", "VALUES (pg_backend_pid())", P,
     "pg_backend_pid"),
    # attribute notation: (x).f and item.f are the call f(x) when f is not a column
    ("attribute sleep", "SELECT (0.2::float8).pg_sleep", P, "pg_sleep"),
    ("attribute setting", "SELECT ('app.tenant_id'::text).current_setting", P,
     "current_setting"),
    ("attribute regclass", "SELECT ('public.api_keys'::text).regclass", P, "regclass"),
    ("attribute advisory lock", "SELECT (1::int8).pg_advisory_lock", P, "pg_advisory_lock"),
    ("attribute of a row", "SELECT w.pg_typeof FROM work_items w", P, "pg_typeof"),
    ("attribute of a row in parentheses", "SELECT (w).pg_typeof FROM work_items w", P,
     "pg_typeof"),
    ("attribute of a column", "SELECT (title).upper FROM work_items", P, "upper"),
    ("attribute runs sql text", "SELECT ('SELECT to_tsvector(''simple'', current_user::text)'"
                                "::text).ts_stat", P, "ts_stat"),
    ("attribute reads backends", "SELECT (g::int4).pg_stat_get_backend_activity FROM "
                                 "generate_series(1, 200) g", P, "pg_stat_get_backend_activity"),
    ("attribute of a series", "SELECT g.pg_sleep FROM generate_series(1, 2) g", P, "pg_sleep"),
    ("attribute of a subquery", "SELECT s.pg_sleep FROM (SELECT 0.1::float8 AS x) s", P,
     "pg_sleep"),
    ("attribute of a cte", "WITH c AS (SELECT 1::int8 AS x) SELECT c.pg_advisory_lock FROM c", P,
     "pg_advisory_lock"),
    ("attribute of a renamed column", "SELECT s.key FROM (SELECT key FROM work_items) s(k)", P,
     "s.key"),
    ("attribute of an inner-scope name", "SELECT s.x FROM (SELECT w.x FROM (SELECT 1 AS y) w) s",
     P, "w.x"),
    ("attribute in a union", "SELECT key FROM work_items UNION SELECT w.pg_typeof::text FROM "
                             "work_items w", P, "pg_typeof"),
    ("attribute of a multi-array unnest", "SELECT pg_typeof.pg_typeof FROM unnest(ARRAY[1], "
                                          "ARRAY[2]) pg_typeof", P, "pg_typeof"),
    # a bare (name).f: PostgreSQL reads name as a column first, whatever names the check derives
    ("attribute of a scalar subquery's column", "SELECT (n).pg_sleep FROM (SELECT (SELECT 1 AS n)) "
                                               "s, (SELECT 1 AS pg_sleep) n", P, "pg_sleep"),
    ("attribute of a case's column", "SELECT (g).pg_stat_get_backend_activity FROM (SELECT CASE "
                                     "WHEN false THEN 0 ELSE g END FROM generate_series(1, 50) g) "
                                     "s, (SELECT 1 AS pg_stat_get_backend_activity) g", P,
     "pg_stat_get_backend_activity"),
    ("attribute of an unnested row's column", "SELECT (number).pg_sleep FROM unnest(ARRAY(SELECT "
                                              "w FROM work_items w LIMIT 1)) u, (SELECT 1 AS "
                                              "pg_sleep) number", P, "pg_sleep"),
    ("qualified operator in order by using", "SELECT key FROM work_items ORDER BY key USING "
                                             "OPERATOR(public.<)", P, "operator public.<"),
    # Scopes as PostgreSQL has them, where an outer item of the same name would be f's argument
    *[(name, sql, P, "current_setting") for name, sql in BYPASSES],
    ("qualified operator in any", "SELECT 1 WHERE 'x' OPERATOR(public.%) ANY (SELECT 'y')", P,
     "operator public.%"),
    # Functions in FROM are named as PostgreSQL names them, and unnest may return whole rows.
    ("a cast in from", "SELECT (SELECT text.current_setting FROM CAST('search_path' AS text)) "
                       "FROM (SELECT 1 AS current_setting) AS text", P, "current_setting"),
    ("coalesce in from", "SELECT (SELECT coalesce.to_regclass FROM coalesce('pg_class')) FROM "
                         "(SELECT 1 AS to_regclass) AS coalesce", P, "to_regclass"),
    ("rows from", "SELECT (SELECT unnest.pg_typeof FROM ROWS FROM (unnest(array[1]), "
                  "unnest(array[2]))) FROM (SELECT 1 AS pg_typeof) AS unnest", P, "pg_typeof"),
    ("unnest of rows", "SELECT pg_column_size.pg_column_size FROM work_items w, "
                       "unnest(ARRAY[w]) AS pg_column_size", P, "pg_column_size"),
    ("the one-byte char type", "SELECT 'x'::\"char\"", P, "type char"),
    # Names the server would have to cut in two when it folds its reading of the query.
    ("a name the fold would cut", 'SELECT 1 AS "' + "(" * 38 + 'a\u00e9b"', V, "not allowed"),
    ("a name with a control character", 'SELECT 1 AS "a\rb"', V, "control"),
    # Analysis writes BETWEEN's operand again (four times, SYMMETRIC): nesting grows the tree
    # exponentially, and with it the reading the server sends (an independent attack: 55 MB).
    ("nested between", "SELECT " + "(" * 8 + "length(title) > 3" + ") BETWEEN SYMMETRIC false "
     "AND true" * 8 + " FROM work_items", V, "grows to about"),
    ("nested in lists", "SELECT 1 FROM work_items WHERE " + "(" * 6 + "id" + " IN (id, 1, 2, "
     "3, 4, 5))" * 6, V, "grows to about"),
    ("deeply nested sum", "SELECT " + "+".join(["1"] * 600), V, "nested too deeply"),
    ("deeply nested not", "SELECT " + "NOT " * 1000 + "true", V, "nested too deeply"),
    ("deeply nested case", "SELECT " + "CASE WHEN true THEN " * 500 + "1" + " END" * 500, V,
     "nested too deeply"),
    ("empty", "   ", V, "empty"),
    ("syntax error", "SELEC 1", V, "parse"),
]


@pytest.mark.parametrize(("sql", "code", "named"),
                         [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_refused(client, make_tenant, sql: str, code: str, named: str) -> None:
    tenant = await make_tenant()
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["success"] is False, env
    assert env["error"]["code"] == code, env["error"]
    assert named.lower() in env["error"]["message"].lower(), env["error"]


async def test_refusal_names_construct_and_position(client, make_tenant) -> None:
    tenant = await make_tenant()
    sql = "SELECT key FROM work_items WHERE pg_sleep(1) IS NULL"
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    detail = env["error"]["details"][0]
    assert detail["construct"] == "function pg_sleep"
    assert sql[detail["position"] - 1:].startswith("pg_sleep")
    assert "character 34" in env["error"]["message"]


# (case, explorer sql, the same question asked of the tables as the owner for one tenant)
FINE = [
    ("join", "SELECT w.key, p.name FROM work_items w JOIN projects p USING (project_key) "
             "ORDER BY w.key",
     "SELECT w.key, p.name FROM work_items w JOIN projects p USING (tenant_id, project_key) "
     "ORDER BY w.key"),
    ("left join and aggregate", "SELECT w.key, count(c.id) FROM work_items w LEFT JOIN comments c "
                                "ON c.work_item_id = w.id GROUP BY w.key ORDER BY 2 DESC, 1",
     "SELECT w.key, count(c.id) FROM work_items w LEFT JOIN comments c ON c.work_item_id = w.id "
     "GROUP BY w.key ORDER BY 2 DESC, 1"),
    ("cte", "WITH open AS (SELECT * FROM work_items WHERE status_category NOT IN "
            "('done', 'cancelled')) SELECT project_key, count(*) FROM open GROUP BY 1 ORDER BY 1",
     "SELECT project_key, count(*) FROM work_items WHERE status_category NOT IN "
     "('done', 'cancelled') GROUP BY 1 ORDER BY 1"),
    ("recursive cte", "WITH RECURSIVE tree AS (SELECT key, parent_key, 0 AS depth FROM work_items "
                      "WHERE parent_key IS NULL UNION ALL SELECT w.key, w.parent_key, t.depth + 1 "
                      "FROM work_items w JOIN tree t ON w.parent_key = t.key) "
                      "SELECT depth, count(*) FROM tree GROUP BY 1 ORDER BY 1",
     "WITH RECURSIVE tree AS (SELECT key, parent_key, 0 AS depth FROM work_items "
     "WHERE parent_key IS NULL UNION ALL SELECT w.key, w.parent_key, t.depth + 1 "
     "FROM work_items w JOIN tree t ON w.parent_key = t.key) "
     "SELECT depth, count(*) FROM tree GROUP BY 1 ORDER BY 1"),
    ("window functions", "SELECT key, row_number() OVER (PARTITION BY project_key ORDER BY "
                         "created_at, id), lag(key) OVER (PARTITION BY project_key ORDER BY "
                         "created_at, id) FROM work_items ORDER BY key",
     "SELECT key, row_number() OVER (PARTITION BY project_key ORDER BY created_at, id), "
     "lag(key) OVER (PARTITION BY project_key ORDER BY created_at, id) FROM work_items "
     "ORDER BY key"),
    ("grouping sets", "SELECT project_key, priority, count(*) FROM work_items "
                      "GROUP BY GROUPING SETS ((project_key), (priority), ()) "
                      "ORDER BY 1 NULLS LAST, 2 NULLS LAST",
     "SELECT project_key, priority, count(*) FROM work_items "
     "GROUP BY GROUPING SETS ((project_key), (priority), ()) ORDER BY 1 NULLS LAST, 2 NULLS LAST"),
    ("rollup and grouping()", "SELECT project_key, type, GROUPING(project_key, type), count(*) "
                              "FROM work_items GROUP BY ROLLUP (project_key, type) "
                              "ORDER BY 1 NULLS LAST, 2 NULLS LAST",
     "SELECT project_key, type, GROUPING(project_key, type), count(*) FROM work_items "
     "GROUP BY ROLLUP (project_key, type) ORDER BY 1 NULLS LAST, 2 NULLS LAST"),
    ("ordered-set aggregates", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY "
                               "extract(epoch FROM resolved_at - created_at)), mode() WITHIN "
                               "GROUP (ORDER BY priority) FROM work_items "
                               "WHERE resolved_at IS NOT NULL",
     "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - "
     "created_at)), mode() WITHIN GROUP (ORDER BY priority) FROM work_items "
     "WHERE resolved_at IS NOT NULL"),
    ("date arithmetic", "SELECT date_trunc('week', created_at)::date, count(*) FILTER (WHERE "
                        "resolved_at IS NOT NULL), round(avg(extract(epoch FROM age(coalesce("
                        "resolved_at, now()), created_at)) / 86400)::numeric, 1) "
                        "FROM work_items WHERE created_at > now() - interval '365 days' "
                        "GROUP BY 1 ORDER BY 1",
     "SELECT date_trunc('week', created_at)::date, count(*) FILTER (WHERE resolved_at IS NOT "
     "NULL), round(avg(extract(epoch FROM age(coalesce(resolved_at, now()), created_at)) / "
     "86400)::numeric, 1) FROM work_items WHERE created_at > now() - interval '365 days' "
     "GROUP BY 1 ORDER BY 1"),
    ("labels and lateral unnest", "SELECT l, count(*) FROM work_items w, LATERAL unnest(w.labels) "
                                  "AS l GROUP BY l ORDER BY 2 DESC, 1",
     "SELECT l, count(*) FROM work_items w, LATERAL unnest(w.labels) AS l GROUP BY l "
     "ORDER BY 2 DESC, 1"),
    ("exists, in, case, distinct on", "SELECT DISTINCT ON (project_key) project_key, key, CASE "
                                      "WHEN priority IN ('critical', 'high') THEN 'urgent' ELSE "
                                      "'normal' END FROM work_items w WHERE EXISTS (SELECT 1 FROM "
                                      "work_item_transitions t WHERE t.work_item_id = w.id) "
                                      "ORDER BY project_key, created_at DESC, key",
     "SELECT DISTINCT ON (project_key) project_key, key, CASE WHEN priority IN ('critical', "
     "'high') THEN 'urgent' ELSE 'normal' END FROM work_items w WHERE EXISTS (SELECT 1 FROM "
     "work_item_transitions t WHERE t.work_item_id = w.id) ORDER BY project_key, "
     "created_at DESC, key"),
    ("union and values", "SELECT 'items', count(*) FROM work_items UNION ALL "
                         "SELECT 'comments', count(*) FROM comments ORDER BY 1",
     "SELECT 'items', count(*) FROM work_items UNION ALL SELECT 'comments', count(*) FROM "
     "comments ORDER BY 1"),
    ("comment that mentions keywords", "SELECT count(*) /* DROP TABLE work_items; */ FROM "
                                       "work_items -- ; DELETE FROM work_items",
     "SELECT count(*) FROM work_items"),
    ("quoted and qualified names", 'SELECT count(*) FROM "explorer"."work_items" AS "W"',
     "SELECT count(*) FROM work_items"),
    ("unicode-escaped allowed name", 'SELECT count(*) FROM U&"work\\005Fitems"',
     "SELECT count(*) FROM work_items"),
    ("upper-case names", "SELECT COUNT(*) FROM EXPLORER.WORK_ITEMS",
     "SELECT count(*) FROM work_items"),
    ("bounded series", "SELECT g, count(w.id) FROM generate_series(1, 5) g LEFT JOIN "
                       "work_items w ON w.number = g GROUP BY g ORDER BY g",
     "SELECT g, count(w.id) FROM generate_series(1, 5) g LEFT JOIN work_items w ON w.number = g "
     "GROUP BY g ORDER BY g"),
    ("json", "SELECT jsonb_typeof(custom_fields), count(*) FROM work_items GROUP BY 1",
     "SELECT jsonb_typeof(custom_fields), count(*) FROM work_items GROUP BY 1"),
    ("qualified columns of subqueries, ctes and joins",
     "WITH c AS (SELECT work_item_id, count(*) AS n FROM comments GROUP BY 1) "
     "SELECT explorer.work_items.key, c.n, s.name, j.project_key, s.count "
     "FROM work_items JOIN c ON c.work_item_id = work_items.id "
     "JOIN (SELECT project_key AS pk, name, count(*) FROM projects GROUP BY 1, 2) s "
     "ON s.pk = work_items.project_key "
     "JOIN (projects p JOIN work_items w USING (project_key)) j ON j.key = work_items.key "
     "ORDER BY 1",
     "WITH c AS (SELECT work_item_id, count(*) AS n FROM comments GROUP BY 1) "
     "SELECT w.key, c.n, p.name, w.project_key, 1 "
     "FROM work_items w JOIN c ON c.work_item_id = w.id "
     "JOIN projects p ON p.project_key = w.project_key ORDER BY 1"),
    ("an alias used again in a subquery names its own item",
     "SELECT w.key FROM work_items w WHERE NOT EXISTS (SELECT 1 FROM comments w WHERE w.body = "
     "'no such words') AND w.key IN (SELECT w.key FROM work_items w) ORDER BY 1",
     "SELECT key FROM work_items ORDER BY 1"),
    ("an alias used again in a joined subquery",
     "SELECT w.key, x.work_item_id FROM work_items w JOIN (SELECT w.work_item_id FROM comments w) "
     "x ON x.work_item_id = w.id ORDER BY 1, 2",
     "SELECT w.key, c.work_item_id FROM work_items w JOIN comments c ON c.work_item_id = w.id "
     "ORDER BY 1, 2"),
    ("size-checked functions give the built-ins' results",
     "SELECT key, lpad(number::text, 4, '0'), rpad(key, 10, '.'), repeat('*', number % 4), "
     "replace(title, ' ', '_'), regexp_replace(title, '[aeiou]', '', 'g'), "
     "(regexp_match(key, '([A-Z]+)-(\\d+)'))[2], "
     "array_to_string(array_replace(labels, 'bug', 'defect'), '|', '-'), "
     "(SELECT count(*) FROM regexp_matches(title, '\\w+', 'g')), "
     "format('%-6s|%3s', project_key, number), to_char(created_at, 'YYYY-MM') "
     "FROM work_items ORDER BY key",
     "SELECT key, lpad(number::text, 4, '0'), rpad(key, 10, '.'), repeat('*', number % 4), "
     "replace(title, ' ', '_'), regexp_replace(title, '[aeiou]', '', 'g'), "
     "(regexp_match(key, '([A-Z]+)-(\\d+)'))[2], "
     "array_to_string(array_replace(labels, 'bug', 'defect'), '|', '-'), "
     "(SELECT count(*) FROM regexp_matches(title, '\\w+', 'g')), "
     "format('%-6s|%3s', project_key, number), to_char(created_at, 'YYYY-MM') "
     "FROM work_items ORDER BY key"),
    ("qualified columns of functions and values",
     "SELECT g.g, g.ordinality, v.label, e.key FROM generate_series(1, 3) WITH ORDINALITY g "
     "JOIN (VALUES (1, 'one'), (2, 'two')) v(n, label) ON v.n = g.g "
     "LEFT JOIN work_items w ON w.number = g.g AND w.project_key = (SELECT min(project_key) "
     "FROM projects) LEFT JOIN LATERAL jsonb_each(w.custom_fields) e ON true "
     "WHERE (v.*).n IS NOT NULL ORDER BY 1, 4",
     "SELECT g, g, CASE g WHEN 1 THEN 'one' ELSE 'two' END, e.key FROM generate_series(1, 2) g "
     "LEFT JOIN work_items w ON w.number = g AND w.project_key = (SELECT min(project_key) "
     "FROM projects) LEFT JOIN LATERAL jsonb_each(w.custom_fields) e ON true ORDER BY 1, 4"),
]


@pytest.mark.parametrize(("sql", "expected"), [c[1:] for c in FINE], ids=[c[0] for c in FINE])
async def test_fine_queries_return_the_tenants_rows(client, make_tenant, admin_conn, sql: str,
                                                    expected: str) -> None:
    mine = await make_tenant(demo=True)
    await make_tenant(demo=True)  # another tenant's rows must never show
    env = await envelope(client, mine, "explorer_query", sql=sql)
    assert env["success"], env
    want = await as_tenant(admin_conn, mine.id, expected)
    got = env["data"]["rows"]
    assert len(got) == len(want) and got, (got, want)
    # Values go through JSON (dates as text, numerics as numbers): compare their text.
    assert [[str(v) if v is not None else None for v in r] for r in got] == \
        [[_text(v) for v in r] for r in want]


def _text(value):
    import datetime as dt
    import decimal

    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(float(value))
    return str(value)


@pytest.mark.parametrize("sql", [
    "EXPLAIN SELECT * FROM work_items WHERE assignee = 'ceo-secret@acorp.example'",
    "EXPLAIN (COSTS off) SELECT * FROM work_items WHERE key = 'WEB-1'",
    "explain (format json) select 1",
])
async def test_explain_is_refused_and_says_why(client, make_tenant, sql) -> None:
    # A plan's estimates and choices come from statistics over every tenant's rows.
    tenant = await make_tenant(demo=True)
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    assert env["error"]["code"] == "VALIDATION_ERROR", env
    assert env["error"]["message"].startswith("EXPLAIN is not offered"), env
    assert "every tenant's rows" in env["error"]["message"]


async def test_sql_mistakes_come_back_in_postgres_words(client, make_tenant) -> None:
    tenant = await make_tenant()
    env = await envelope(client, tenant, "explorer_query", sql="SELECT nope FROM work_items")
    assert env["error"]["code"] == "VALIDATION_ERROR"
    assert 'column "nope" does not exist' in env["error"]["message"]
    assert env["error"]["details"][0]["position"] == 8
    env = await envelope(client, tenant, "explorer_query", sql="SELECT 1 / 0")
    assert "division by zero" in env["error"]["message"]


@pytest.fixture
async def slow_client(aiohttp_client, database_urls):
    from spiral_mcp.server.app import create_app

    settings = make_settings(database_urls, EXPLORER_TIMEOUT_S="0.5", EXPLORER_MAX_ROWS="5")
    return await aiohttp_client(create_app(settings, database_url=database_urls.runtime,
                                           explorer_url=database_urls.explorer))


@pytest.mark.parametrize("sql", [
    # a cartesian product of the tenant's items six times over
    "SELECT count(*) FROM work_items a, work_items b, work_items c, work_items d, "
    "work_items e, work_items f",
    # a series whose bounds are not literals escapes the literal check: the timeout ends it
    "SELECT count(*) FROM generate_series(1, (SELECT 10000000000 + count(*) FROM work_items))",
    # a giant string built by aggregation
    "SELECT length(string_agg(md5(g::text), '')) FROM generate_series(1, 1000000) g, "
    "work_items",
])
async def test_heavy_queries_time_out(slow_client, make_tenant, sql: str) -> None:
    tenant = await make_tenant(demo=True)
    env = await envelope(slow_client, tenant, "explorer_query", sql=sql)
    assert env["success"] is False
    assert env["error"]["code"] == T, env["error"]
    # The connection is fine afterwards.
    env = await envelope(slow_client, tenant, "explorer_query", sql="SELECT count(*) FROM projects")
    assert env["success"], env


async def test_rows_are_capped_and_truncation_said(slow_client, make_tenant) -> None:
    tenant = await make_tenant(demo=True)
    env = await envelope(slow_client, tenant, "explorer_query", sql="SELECT key FROM work_items")
    data = env["data"]
    assert data["row_count"] == 5 and data["truncated"] is True
    assert data["truncated_by"] == "max_rows"
    env = await envelope(slow_client, tenant, "explorer_query",
                         sql="SELECT key FROM work_items", max_rows=2)
    assert env["data"]["row_count"] == 2 and env["data"]["max_rows"] == 2
    env = await envelope(slow_client, tenant, "explorer_query",
                         sql="SELECT key FROM work_items LIMIT 3")
    assert env["data"]["row_count"] == 3 and env["data"]["truncated"] is False


async def test_results_are_capped_by_bytes(client, make_tenant) -> None:
    tenant = await make_tenant()
    sql = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g, " \
          "generate_series(1, 20) h GROUP BY h"
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    data = env["data"]
    assert data["truncated"] is True and data["truncated_by"] == "max_bytes"
    assert 0 < data["row_count"] < 20


async def test_query_needs_the_query_scope(client, make_tenant) -> None:
    reader = await make_tenant(scopes=("read",))
    resp = await client.post("/execute", headers=reader.headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "explorer_query", "arguments": {"sql": "SELECT 1"}}})
    error = (await resp.json())["result"]["structuredContent"]["error"]
    assert error["code"] == "PERMISSION_DENIED"
    assert error["details"] == [{"scope": "query", "key_scopes": ["read"]}]


async def test_query_calls_are_rate_limited_as_queries(aiohttp_client, database_urls,
                                                       make_tenant) -> None:
    from spiral_mcp.server.app import create_app

    settings = make_settings(database_urls, RATE_LIMIT_QUERY="2", RATE_LIMIT_READ="100")
    client = await aiohttp_client(create_app(settings, database_url=database_urls.runtime,
                                             explorer_url=database_urls.explorer))
    tenant = await make_tenant()
    codes = [(await envelope(client, tenant, "explorer_query", sql="SELECT 1")).get("error")
             for _ in range(3)]
    assert codes[0] is None and codes[1] is None
    assert codes[2]["code"] == "RATE_LIMITED"


class _Fooled(Resolution):
    """The check of PostgreSQL's reading, with a reading that finds nothing wrong."""

    def __init__(self, real: Resolution) -> None:
        super().__init__(**{f.name: getattr(real, f.name) for f in dataclasses.fields(real)})

    def unallowed(self, nodes):
        return None


def _hidden_relation(relation: str, columns: str) -> str:
    """A query whose names (newlines, carriage returns, escaped parentheses) once made the
    reader of the server's reading take a catalog view for a subquery (an independent attack)."""
    fill = "(" * 37 + "\n"
    names = ["a" + fill + "}\r:rtekind\r1", "a" + "(" * 36 + "\n)", fill + "}",
             fill + "{ALIAS\r:zz", fill + "{ALIAS\r:yy", fill + "("]
    quoted = ['"' + name.replace('"', '""') + '"' for name in names]
    return f"SELECT {columns} FROM {relation} AS {quoted[0]}({', '.join(quoted[1:])})"


@pytest.mark.parametrize(("relation", "columns", "locks_tell"), [
    ("pg_catalog.pg_stat_user_tables", "n_live_tup", True),
    ("pg_catalog.pg_class", "reltuples", True), ("pg_catalog.pg_locks", "pid", True),
    # A table below a view is locked by the view's queries too: only the reading tells.
    ("public.work_items", "title", False),
])
async def test_names_that_confuse_the_reading_do_not_hide_a_relation(explorer, make_tenant,
                                                                     relation, columns,
                                                                     locks_tell):
    # Without the validator: PostgreSQL's reading, and the locks it took, refuse it each.
    sql = _hidden_relation(relation, columns)
    tenant = await make_tenant()
    async with explorer.bound(tenant.id) as conn:
        # The reading alone: as if every relation's lock were allowed.
        every = frozenset(r["oid"] for r in await conn.fetch("SELECT oid FROM pg_class"))
        reading_only = dataclasses.replace(explorer.resolution, lockable=every)
        with pytest.raises(ServiceError) as reading:
            await reading_only.check(conn, explorer.queries, sql, time_limit=5)
    assert reading.value.code is ErrorCode.PERMISSION_DENIED
    assert not reading.value.message.startswith("relation pg_class")
    if locks_tell:
        # As if the reading had been fooled: what the statement locked still refuses it.
        async with explorer.bound(tenant.id) as conn:
            with pytest.raises(ServiceError) as locks:
                await _Fooled(explorer.resolution).check(conn, explorer.queries, sql,
                                                         time_limit=5)
        assert locks.value.code is ErrorCode.PERMISSION_DENIED
        assert locks.value.message.startswith("relation ")


@pytest.mark.parametrize("sql", [sql for _, sql in BYPASSES]
                         + ["SELECT pg_catalog.current_setting('server_version')",
                            "SELECT 1 WHERE 'x' OPERATOR(public.%) ANY (SELECT 'y')"],
                         ids=[name for name, _ in BYPASSES] + ["named", "operator"])
async def test_the_second_wall_refuses_what_the_first_let_through(explorer, make_tenant, sql):
    """PostgreSQL's own reading of the query is checked without the validator: each of these got
    past an earlier validator, and is refused here by what PostgreSQL resolved it to."""
    tenant = await make_tenant()
    async with explorer.bound(tenant.id) as conn:
        with pytest.raises(ServiceError) as refused:
            await explorer.resolution.check(conn, explorer.queries, sql, time_limit=5)
    assert refused.value.code is ErrorCode.PERMISSION_DENIED
    assert "current_setting(text)" in refused.value.message \
        or "operator public.%" in refused.value.message, refused.value.message
