-- Undo 0011_tenant_ids: ids come from one identity sequence per table again. Rows keep the ids
-- 0011 gave them (unique within their tenant, which is all their keys ask), and the ids stored
-- results and audit rows carry stay as 0011 moved them.
DROP TRIGGER assign_id ON work_items;
DROP TRIGGER assign_id ON work_item_transitions;
DROP TRIGGER assign_id ON comments;
DROP TRIGGER assign_id ON work_item_links;
DROP TRIGGER assign_id ON audit_log;
DROP FUNCTION assign_tenant_id();
DROP FUNCTION take_ids(uuid, text, bigint);
DROP TABLE tenant_counters;

ALTER TABLE work_items ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE work_item_transitions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE comments ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE work_item_links ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE audit_log ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;

-- Each sequence past the highest id of any tenant. The owner is bound by the tenant policies
-- too, so they are lifted while it reads; a DO block, as yoyo prints a plain SELECT's rows.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['work_items', 'work_item_transitions', 'comments',
                             'work_item_links', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, ''id''), '
                       'coalesce(max(id), 0) + 1, false) FROM %I', 'public.' || t, t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
