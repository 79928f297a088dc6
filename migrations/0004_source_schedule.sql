-- The background sync's list of work: every source instance of every tenant, as ids only.
--
-- The runtime role sees source_instances only inside one tenant's transaction and cannot list
-- tenants, so the server could not find the instances to sync on its own. This function, owned by
-- the owner (who may list tenants), returns the (tenant, instance) pairs and nothing else: no
-- names, URLs or credentials. It reads each tenant's instances under that tenant's own context,
-- as the owner is bound by row-level security too, and restores the caller's context after.
-- depends: 0003_explorer

CREATE FUNCTION source_schedule() RETURNS TABLE (tenant_id uuid, instance_id uuid)
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

REVOKE ALL ON FUNCTION source_schedule() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION source_schedule() TO spiral_app;
