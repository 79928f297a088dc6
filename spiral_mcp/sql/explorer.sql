-- name: explorer_begin!
-- Open an explorer transaction read-write (the pool's default is read-only) so that
-- explorer_bind can record the binding; explorer_bind then makes it read-only.
BEGIN READ WRITE

-- name: explorer_bind^
-- params: tenant_id
-- Bind the transaction to the tenant (row-level security), then make it read-only. The
-- transaction's start comes back, a time this backend was alive, with its server's start, which
-- names the server (explorer_end_backend).
SELECT now() AS alive_at, pg_postmaster_start_time() AS server_started
FROM explorer_support.bind($1::uuid) AS bound

-- name: explorer_rollback!
-- Every explorer transaction ends here: nothing it did, the binding included, is kept.
ROLLBACK

-- name: explorer_ping$
-- Readiness: the explorer role's pool can reach the database.
SELECT 1

-- name: explorer_unguarded
-- params: functions
-- What provisioning takes from this role that it still has (a database set up by hand may lack
-- that step): the guarded functions it may run, whether its sessions publish query text, no
-- memory limit to set, the session limits it lacks (roles.EXPLORER_SETTINGS), and whether
-- the server's readings of its queries would fill the server log.
SELECT p.oid::regprocedure::text AS exposed FROM pg_catalog.pg_proc p
WHERE p.proname = ANY($1::name[]) AND has_function_privilege(p.oid, 'EXECUTE')
UNION ALL
SELECT 'track_activities' WHERE current_setting('track_activities')::bool
UNION ALL
SELECT 'log_min_messages' WHERE current_setting('log_min_messages') NOT IN ('fatal', 'panic')
UNION ALL
SELECT 'no memory limit (explorer_guard.limit_memory)'
WHERE NOT COALESCE(has_function_privilege(
    to_regprocedure('explorer_guard.limit_memory()'), 'EXECUTE'), false)
UNION ALL
SELECT 'max_parallel_workers_per_gather'
WHERE current_setting('max_parallel_workers_per_gather')::int > 0
UNION ALL
SELECT 'temp_file_limit' WHERE current_setting('temp_file_limit') = '-1'

-- name: explorer_limit_memory$
-- On each new explorer connection: the kernel's limit of this backend's private memory
-- (provisioning's explorer_guard.limit_memory sets it and returns it, in bytes).
SELECT explorer_guard.limit_memory()

-- name: explorer_open$
-- params: portal, statement
-- Plan and open a checked statement as the cursor `portal`; an error's text comes back capped.
SELECT explorer_support.open_rows($1::text::refcursor, $2::text)

-- name: explorer_fetch
-- params: portal, how_many, max_bytes
-- The cursor's next rows while their sizes add up to max_bytes: (row, its bytes), and
-- (NULL, NULL) for the first row that does not fit.
SELECT r, bytes FROM explorer_support.fetch_rows($1::text::refcursor, $2::integer, $3::bigint)

-- name: explorer_end_backend$
-- params: pid, alive_at, server_started
-- As the runtime role: end the explorer backend `pid` of this database if it started no later
-- than `alive_at` (a session that reused the pid is never hit) and this is the server it runs
-- on (started at `server_started`: the runtime pool may reach another server than the
-- explorer's, where the pid is another session's); whether one was signalled.
SELECT CASE WHEN pg_postmaster_start_time() = $3::timestamptz
            THEN explorer_guard.end_backend($1::integer, $2::timestamptz) ELSE false END

-- name: explorer_relations
-- Every relation of the explorer schema with its kind and description.
SELECT c.relname AS name,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'table' END
           AS kind,
       obj_description(c.oid, 'pg_class') AS description
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
ORDER BY c.relname

-- name: explorer_columns
-- The columns of every explorer relation; nullability and defaults come from the table a view
-- reads (a view's own columns are always nullable and have no defaults).
SELECT c.relname AS relation, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       col_description(c.oid, a.attnum) AS description,
       NOT COALESCE(ba.attnotnull, a.attnotnull) AS nullable,
       CASE WHEN ba.attidentity IN ('a', 'd') THEN 'generated as identity'
            ELSE pg_get_expr(ad.adbin, ad.adrelid) END AS default_value
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN explorer_support.relation_bases b ON b.relation_oid = c.oid
LEFT JOIN pg_catalog.pg_attribute ba
       ON ba.attrelid = b.base_oid AND ba.attname = a.attname AND NOT ba.attisdropped
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = ba.attrelid AND ad.adnum = ba.attnum
WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
ORDER BY c.relname, a.attnum

-- name: explorer_constraints
-- Primary, unique and foreign keys of the tables below the explorer views, with the view that
-- reads the referenced table.
SELECT v.relname AS relation, con.contype::text AS kind, con.conname AS name,
       ARRAY(SELECT att.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k (num, i)
             JOIN pg_catalog.pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = k.num
             ORDER BY k.i) AS columns,
       rv.relname AS ref_relation,
       ARRAY(SELECT att.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k (num, i)
             JOIN pg_catalog.pg_attribute att ON att.attrelid = con.confrelid
              AND att.attnum = k.num
             ORDER BY k.i) AS ref_columns
FROM explorer_support.relation_bases b
JOIN pg_catalog.pg_class v ON v.oid = b.relation_oid
JOIN pg_catalog.pg_constraint con ON con.conrelid = b.base_oid AND con.contype IN ('p', 'u', 'f')
LEFT JOIN explorer_support.relation_bases rb ON rb.base_oid = con.confrelid
LEFT JOIN pg_catalog.pg_class rv ON rv.oid = rb.relation_oid
ORDER BY v.relname, con.contype, con.conname

-- name: explorer_row_counts
-- params: relations
-- This tenant's rows in each named relation (all when NULL), counted under row-level security.
SELECT relation, row_count FROM explorer_support.row_counts($1::text[])

-- name: explorer_column_samples
-- params: relation, max_values, max_length
-- This tenant's distinct values of the text and boolean columns of a relation, with counts; none
-- for a column with more than max_values of them or one longer than max_length characters.
SELECT column_name, distinct_count, sample
FROM explorer_support.column_samples($1::text, $2::integer, $3::integer)

-- name: explorer_allowed_oids
-- params: functions, types, wrapped
-- What the check of PostgreSQL's own reading of a query allows, by OID (explorer.resolved):
-- the allowlist's functions and types as this database numbers them (a wrapped function's
-- explorer version, never its pg_catalog one), with the arrays of those
-- types and the explorer views' row and column types, the casts
-- between allowed types, the operators of pg_catalog over them, the explorer's relations, and
-- the relations an explorer transaction may hold locks on (its binding's: the bindings table on
-- the primary, the proof's secret on a standby).
WITH named_types AS (
    SELECT to_regtype(name)::oid AS oid FROM unnest($2::text[]) AS name
    UNION
    SELECT a.atttypid FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'explorer'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION
    SELECT c.reltype FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
), types AS (
    SELECT oid FROM named_types WHERE oid IS NOT NULL
    UNION
    SELECT t.typarray FROM pg_catalog.pg_type t JOIN named_types n ON n.oid = t.oid
    WHERE t.typarray <> 0
), operand_types AS (
    SELECT oid FROM types
    UNION ALL
    SELECT 0
    UNION ALL
    SELECT to_regtype(name)::oid FROM unnest(ARRAY['anyelement', 'anyarray', 'anynonarray',
        'anycompatible', 'anycompatiblearray', 'anycompatiblenonarray']) AS name
), operators AS (
    SELECT o.oid, o.oprcode FROM pg_catalog.pg_operator o
    WHERE o.oprnamespace = 'pg_catalog'::regnamespace
      AND o.oprleft IN (SELECT oid FROM operand_types)
      AND o.oprright IN (SELECT oid FROM operand_types)
)
SELECT 'types' AS kind, oid FROM types
UNION ALL
SELECT 'functions', p.oid FROM pg_catalog.pg_proc p
WHERE (p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY($1::name[])
       AND p.proname <> ALL($3::name[]))
   OR (p.pronamespace = 'explorer'::regnamespace AND p.proname = ANY($3::name[]))
UNION ALL
SELECT 'functions', c.castfunc FROM pg_catalog.pg_cast c
WHERE c.castfunc <> 0 AND c.castsource IN (SELECT oid FROM types)
  AND c.casttarget IN (SELECT oid FROM types)
UNION ALL
SELECT 'operators', oid FROM operators
UNION ALL
SELECT 'operator_functions', oprcode::oid FROM operators
UNION ALL
SELECT 'in_range', p.oid FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = 'in_range'
UNION ALL
SELECT 'relations', c.oid FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
UNION ALL
SELECT 'lockable', c.oid FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
UNION ALL
SELECT 'lockable', base_oid FROM explorer_support.relation_bases
UNION ALL
SELECT 'lockable', c.oid FROM pg_catalog.pg_class c
WHERE c.oid IN ('explorer_support.bindings'::regclass, 'explorer_support.binding_secret'::regclass)
UNION ALL
SELECT 'lockable', i.indexrelid FROM pg_catalog.pg_index i
WHERE i.indrelid IN ('explorer_support.bindings'::regclass,
                     'explorer_support.binding_secret'::regclass)

-- name: explorer_locks_held
-- params: allowed
-- The relations this transaction holds a lock on besides the ``allowed`` ones (explorer.resolved:
-- a prepared query locks every relation it names, and the tables below the views it names).
-- Through the function, not the view pg_locks, so that asking locks nothing itself.
SELECT l.relation::regclass::text AS name FROM pg_catalog.pg_lock_status() AS l
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.relation <> ALL($1::oid[])
ORDER BY 1

-- name: explorer_begin_replica!
-- On a hot standby: every transaction is read-only there (explorer_bind_replica binds it).
BEGIN READ ONLY

-- name: explorer_bind_replica^
-- params: tenant_id, proof
-- On a hot standby, which keeps no binding row: bind the transaction to the tenant with the
-- runtime role's proof (explorer_replica_proof), then make it read-only; its start and its
-- server's come back (as explorer_bind's).
SELECT now() AS alive_at, pg_postmaster_start_time() AS server_started
FROM explorer_support.bind_replica($1::uuid, $2::text) AS bound

-- name: explorer_replica_proof$
-- params: tenant_id
-- As the runtime role: the proof that binds an explorer transaction on a hot standby.
SELECT explorer_support.replica_proof($1::uuid)
