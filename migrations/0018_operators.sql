-- Operators: people who manage tenants across the installation (issue 21), apart from tenants'
-- own admins. An operator has a credential of its own (spo_..., made by `spiral-mcp operator
-- create`, stored as SHA-256 like API keys), console sessions of its own, and every action it
-- takes is a row of operator_audit.
--
-- The three tables belong to the owner and to no other role: the runtime role, which serves
-- every tenant's requests, can neither read an operator's credential nor forge or hide an
-- operator's action, and the explorer role never sees them. Operator requests run on a pool of
-- their own as the owner (OPERATOR_API); row-level security is enabled with no policy, so a
-- grant given by mistake would still show no row to any role but the owner.
--
-- A tenant may be suspended (tenants.suspended_at): its API keys and OAuth bindings stop
-- authenticating (api_keys lookups read the column, oauth_tenant() says so), and the background
-- sync passes its sources by. Resuming clears the column.
--
-- Deleting a tenant deletes every row of it: delete_tenant_rows() empties each tenant-owned
-- table (those under forced row-level security with a tenant_id column, whatever migration
-- made them)
-- under the tenant's own context, as the owner is bound by the policies too, then the tenant.
--
-- Runs as the owner role.
-- depends: 0017_admin_core

ALTER TABLE tenants ADD COLUMN suspended_at timestamptz;

CREATE TABLE operators (
    operator_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the whole secret, which carries 256 random bits (as api_keys.key_hash).
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
-- Two live operators never share a name: the audit trail names operators.
CREATE UNIQUE INDEX operators_live_name ON operators (name) WHERE revoked_at IS NULL;

CREATE TABLE operator_sessions (
    -- SHA-256 of the cookie's value: the table never holds what a browser presents.
    session_hash bytea PRIMARY KEY CHECK (length(session_hash) = 32),
    operator_id  uuid NOT NULL REFERENCES operators ON DELETE CASCADE,
    csrf_token   text NOT NULL CHECK (length(csrf_token) BETWEEN 32 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);

CREATE TABLE operator_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- Null for an action taken through the CLI, which holds the owner's URL itself.
    operator_id uuid REFERENCES operators,
    actor       text NOT NULL,
    action      text NOT NULL,
    -- The tenant acted on. No foreign key: the row of a tenant's deletion outlives the tenant.
    -- Not named tenant_id: the rows are no tenant's own (every table with a tenant_id column is
    -- a tenant table under forced row-level security, DESIGN.md invariant 1).
    target_tenant_id uuid,
    arguments   jsonb NOT NULL DEFAULT '{}',
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'error')),
    detail      jsonb
);
CREATE INDEX operator_audit_at ON operator_audit (at DESC);
CREATE INDEX operator_audit_tenant ON operator_audit (target_tenant_id, at DESC);

ALTER TABLE operators ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_audit ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON operators, operator_sessions, operator_audit FROM PUBLIC, spiral_app,
    spiral_explorer;

-- The key lookup reads suspended_at through its join with tenants (the runtime role's SELECT on
-- tenants covers the new column, under the tenant policy). OAuth: the token's tenant and whether
-- it is suspended, so the refusal can say so; otherwise as in 0015_oauth.
DROP FUNCTION oauth_tenant(text, jsonb);
CREATE FUNCTION oauth_tenant(token_issuer text, token_claims jsonb)
RETURNS TABLE (tenant_id uuid, claim text, suspended boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bound_claim text;
    presented jsonb;
BEGIN
    SELECT b.claim INTO bound_claim FROM oauth_bindings b WHERE b.issuer = token_issuer LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF bound_claim IS NULL THEN
        RETURN QUERY SELECT b.tenant_id, NULL::text, t.suspended_at IS NOT NULL
                     FROM oauth_bindings b JOIN tenants t ON t.tenant_id = b.tenant_id
                     WHERE b.issuer = token_issuer AND b.claim IS NULL;
        RETURN;
    END IF;
    presented := token_claims -> bound_claim;
    IF jsonb_typeof(presented) IS DISTINCT FROM 'array' THEN
        presented := jsonb_build_array(presented);
    END IF;
    RETURN QUERY
        SELECT DISTINCT b.tenant_id, bound_claim, t.suspended_at IS NOT NULL
        FROM oauth_bindings b JOIN tenants t ON t.tenant_id = b.tenant_id
        WHERE b.issuer = token_issuer AND b.claim = bound_claim
          AND b.claim_value IN (SELECT v #>> '{}' FROM jsonb_array_elements(presented) AS v
                                WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean'))
        ORDER BY b.tenant_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::uuid, bound_claim, false;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION oauth_tenant(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth_tenant(text, jsonb) TO spiral_app;

-- The background sync passes a suspended tenant's sources by (as in 0004_source_schedule
-- otherwise).
CREATE OR REPLACE FUNCTION source_schedule() RETURNS TABLE (tenant_id uuid, instance_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := current_setting('app.tenant_id', true);
    t uuid;
BEGIN
    FOR t IN SELECT tenants.tenant_id FROM tenants WHERE tenants.suspended_at IS NULL
             ORDER BY tenants.tenant_id LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        RETURN QUERY SELECT s.tenant_id, s.instance_id FROM source_instances s
                     ORDER BY s.created_at, s.instance_id;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(caller, ''), true);
END
$$;

-- Every row of one tenant, in the caller's transaction: each tenant-owned table of the public
-- schema (row-level security forced, a tenant_id column; so tables later migrations add are
-- covered) is emptied of
-- the tenant's rows under its context, then the tenant itself goes. Returns the tenant's rows
-- per table as they were (tables with none left out): counted first, since a delete cascades
-- (projects take their work items). Table names come from the catalog, never from the caller.
-- Foreign keys between tenant tables cascade or set null, so the order does not matter. Not
-- SECURITY DEFINER: only the owner may run it.
CREATE FUNCTION delete_tenant_rows(tenant uuid) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := current_setting('app.tenant_id', true);
    tables regclass[];
    tbl regclass;
    n bigint;
    deleted jsonb := '{}';
BEGIN
    PERFORM set_config('app.tenant_id', tenant::text, true);
    SELECT coalesce(array_agg(c.oid::regclass ORDER BY c.relname), '{}') INTO tables
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
      AND c.relforcerowsecurity AND c.relname <> 'tenants';
    FOREACH tbl IN ARRAY tables LOOP
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id = $1', tbl) INTO n USING tenant;
        IF n > 0 THEN
            deleted := deleted || jsonb_build_object(tbl::text, n);
        END IF;
    END LOOP;
    FOREACH tbl IN ARRAY tables LOOP
        EXECUTE format('DELETE FROM %s WHERE tenant_id = $1', tbl) USING tenant;
    END LOOP;
    DELETE FROM tenants WHERE tenants.tenant_id = tenant;
    GET DIAGNOSTICS n = ROW_COUNT;
    deleted := deleted || jsonb_build_object('tenants', n);
    PERFORM set_config('app.tenant_id', coalesce(caller, ''), true);
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION delete_tenant_rows(uuid) FROM PUBLIC;

-- Calls, errors and latency per tenant over [since, until), from each tenant's audit log read
-- under its own context (the owner is under the audit log's policy too). Only the owner runs it.
CREATE FUNCTION tenant_usage(since timestamptz, until timestamptz)
RETURNS TABLE (tenant_id uuid, name text, calls bigint, errors bigint, p50_ms double precision,
               p95_ms double precision)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := current_setting('app.tenant_id', true);
    t record;
BEGIN
    FOR t IN SELECT x.tenant_id, x.name FROM tenants x ORDER BY x.created_at, x.tenant_id LOOP
        PERFORM set_config('app.tenant_id', t.tenant_id::text, true);
        RETURN QUERY
            SELECT t.tenant_id, t.name, count(*), count(*) FILTER (WHERE l.outcome = 'error'),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY l.duration_ms),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY l.duration_ms)
            FROM audit_log l WHERE l.at >= since AND l.at < until;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(caller, ''), true);
END
$$;
REVOKE ALL ON FUNCTION tenant_usage(timestamptz, timestamptz) FROM PUBLIC;
