-- Undo 0015_oauth: the bindings go, and tasks are bound to their API key again. Tasks made with
-- an OAuth token name no key, so they go too; the owner is under the tasks' policy, so it
-- deletes them tenant by tenant (as task_sweep() does).
DROP FUNCTION oauth_tenant(text, jsonb);
DROP TABLE oauth_bindings;
DROP FUNCTION oauth_binding_check();

DO $$
DECLARE
    t uuid;
BEGIN
    FOR t IN SELECT tenants.tenant_id FROM tenants LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        DELETE FROM tasks WHERE credential <> 'api_key';
    END LOOP;
    PERFORM set_config('app.tenant_id', '', true);
END
$$;

ALTER TABLE tasks DROP COLUMN credential;
ALTER TABLE tasks DROP CONSTRAINT tasks_tenant_id_fkey;
ALTER TABLE tasks ADD FOREIGN KEY (tenant_id, key_id) REFERENCES api_keys ON DELETE CASCADE;
