-- Undo 0018_operators: operators, their sessions and audit go; tenants are never suspended;
-- oauth_tenant() and source_schedule() read as in 0015_oauth and 0004_source_schedule.
DROP FUNCTION tenant_usage(timestamptz, timestamptz);
DROP FUNCTION delete_tenant_rows(uuid);

CREATE OR REPLACE FUNCTION source_schedule() RETURNS TABLE (tenant_id uuid, instance_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := current_setting('app.tenant_id', true);
    t uuid;
BEGIN
    FOR t IN SELECT tenants.tenant_id FROM tenants ORDER BY tenants.tenant_id LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        RETURN QUERY SELECT s.tenant_id, s.instance_id FROM source_instances s
                     ORDER BY s.created_at, s.instance_id;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(caller, ''), true);
END
$$;

DROP FUNCTION oauth_tenant(text, jsonb);
CREATE FUNCTION oauth_tenant(token_issuer text, token_claims jsonb)
RETURNS TABLE (tenant_id uuid, claim text)
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
        RETURN QUERY SELECT b.tenant_id, NULL::text FROM oauth_bindings b
                     WHERE b.issuer = token_issuer AND b.claim IS NULL;
        RETURN;
    END IF;
    presented := token_claims -> bound_claim;
    IF jsonb_typeof(presented) IS DISTINCT FROM 'array' THEN
        presented := jsonb_build_array(presented);
    END IF;
    RETURN QUERY
        SELECT DISTINCT b.tenant_id, bound_claim FROM oauth_bindings b
        WHERE b.issuer = token_issuer AND b.claim = bound_claim
          AND b.claim_value IN (SELECT v #>> '{}' FROM jsonb_array_elements(presented) AS v
                                WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean'))
        ORDER BY b.tenant_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::uuid, bound_claim;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION oauth_tenant(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth_tenant(text, jsonb) TO spiral_app;

DROP TABLE operator_audit;
DROP TABLE operator_sessions;
DROP TABLE operators;
ALTER TABLE tenants DROP COLUMN suspended_at;
