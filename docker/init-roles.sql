-- Roles and database for spiral-mcp. The postgres image runs this once, on an empty data
-- directory (/docker-entrypoint-initdb.d), through psql as the superuser. Passwords come from the
-- container's environment through psql's \getenv (psql 15+), never from this file.
\set ON_ERROR_STOP on
\getenv owner_password SPIRAL_OWNER_PASSWORD
\getenv app_password SPIRAL_APP_PASSWORD
\getenv explorer_password SPIRAL_EXPLORER_PASSWORD

-- The owner: owns the database, hence its public schema, and through migrations every table.
-- Not a superuser: FORCE ROW LEVEL SECURITY binds it too (except the registry's admin policy).
CREATE ROLE spiral_owner LOGIN PASSWORD :'owner_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

-- The runtime role serves every request. The server refuses to start if it is a superuser, has
-- BYPASSRLS or owns a tenant table; migrations give it only the grants it needs.
CREATE ROLE spiral_app LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

-- The explorer role runs tenants' read-only SQL; the same limits.
CREATE ROLE spiral_explorer LOGIN PASSWORD :'explorer_password'
    NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

CREATE DATABASE spiral OWNER spiral_owner;
-- Only the three roles may connect (PUBLIC gets CONNECT and TEMP on a new database by default).
REVOKE ALL ON DATABASE spiral FROM PUBLIC;
GRANT CONNECT ON DATABASE spiral TO spiral_app, spiral_explorer;

-- Explorer sessions publish no query text: every tenant's explorer sessions share one role, and
-- a role may read its own sessions' query text in pg_stat_activity.
ALTER ROLE spiral_explorer SET track_activities = off;
-- The server's readings of explorer queries (debug_print_parse, LOG messages) stay out of its
-- log. What one explorer query may take: sorts and hashes spill to disk early, the disk they spill to
-- is bounded, no parallel workers (processes outside the backend's memory limit, below), and a
-- backend whose client has gone (a query abandoned at its time limit) ends within a second.
-- Keep in step with roles.EXPLORER_SETTINGS.
ALTER ROLE spiral_explorer SET log_min_messages = 'fatal';
ALTER ROLE spiral_explorer SET work_mem = '4MB';
ALTER ROLE spiral_explorer SET hash_mem_multiplier = '1';
ALTER ROLE spiral_explorer SET temp_file_limit = '1GB';
ALTER ROLE spiral_explorer SET max_parallel_workers_per_gather = '0';
ALTER ROLE spiral_explorer SET client_connection_check_interval = '1s';

-- Built-in functions the explorer role must not run even if a query ever got past the explorer's
-- check (reading or ending other sessions, running SQL given as text, sleeping, dblink). PUBLIC's
-- EXECUTE cannot be taken from one role alone: take it from PUBLIC, give it back to the owner and
-- runtime roles and pg_monitor. Keep in step with roles.GUARDED_FUNCTIONS.
\connect spiral
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT oid FROM pg_catalog.pg_proc
        WHERE proname = ANY (ARRAY[
            'pg_cancel_backend', 'pg_terminate_backend', 'pg_stat_get_activity',
            'pg_stat_get_backend_activity', 'ts_stat', 'pg_sleep', 'pg_sleep_for',
            'pg_sleep_until', 'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema',
            'cursor_to_xml', 'cursor_to_xmlschema', 'table_to_xml', 'table_to_xmlschema',
            'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema',
            'schema_to_xml_and_xmlschema', 'database_to_xml', 'database_to_xmlschema',
            'database_to_xml_and_xmlschema'])
           OR proname LIKE 'dblink%'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO spiral_owner, spiral_app, pg_monitor', f);
    END LOOP;
END $$;
REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_stat_activity TO spiral_owner, spiral_app, pg_monitor;

-- Each explorer backend's private memory is limited to 256 MiB (RLIMIT_DATA, set with prlimit as
-- its connection opens; an allocation past it is an "out of memory" error of that query), and the
-- runtime role may end an explorer backend that a timed-out call left running, only one that was
-- alive when the call saw it (a session that reused its pid is never hit). Owned by the
-- superuser: the owner may neither run programs nor signal the explorer's backends. Keep in step
-- with roles._GUARD_FUNCTIONS and roles.EXPLORER_MEMORY_LIMIT.
CREATE SCHEMA IF NOT EXISTS explorer_guard;
REVOKE ALL ON SCHEMA explorer_guard FROM PUBLIC;
GRANT USAGE ON SCHEMA explorer_guard TO "spiral_explorer", "spiral_app";
CREATE OR REPLACE FUNCTION explorer_guard.limit_memory() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('COPY (SELECT WHERE false) TO PROGRAM %L',
                   format('prlimit --pid %s --data=%s:%s', pg_backend_pid(),
                          268435456, 268435456));
    RETURN 268435456;
END
$$;
REVOKE ALL ON FUNCTION explorer_guard.limit_memory() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explorer_guard.limit_memory() TO "spiral_explorer";
CREATE OR REPLACE FUNCTION explorer_guard.end_backend(pid integer, alive_at timestamptz)
RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(bool_or(pg_terminate_backend(a.pid)), false) FROM pg_stat_activity a
    WHERE a.pid = end_backend.pid AND a.usename = 'spiral_explorer'
      AND a.datname = current_database() AND a.backend_start <= end_backend.alive_at
$$;
REVOKE ALL ON FUNCTION explorer_guard.end_backend(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explorer_guard.end_backend(integer, timestamptz) TO "spiral_app";
