-- Undo 0016_replica_binding: bound_tenant() reads the bindings table alone again.
CREATE OR REPLACE FUNCTION explorer_support.bound_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenant_id FROM explorer_support.bindings WHERE backend_pid = pg_backend_pid()
$$;
DROP FUNCTION explorer_support.bind_replica(uuid, text);
DROP FUNCTION explorer_support.replica_proof(uuid);
DROP TABLE explorer_support.binding_secret;
REVOKE USAGE ON SCHEMA explorer_support FROM spiral_app;
