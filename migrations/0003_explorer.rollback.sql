-- Undo 0003_explorer: the policies and grants on the core tables, then both schemas.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'source_instances', 'workflow_statuses',
                             'workflow_transitions', 'work_items', 'work_item_transitions',
                             'comments', 'work_item_links', 'audit_log']
    LOOP
        EXECUTE format('DROP POLICY explorer_bound ON public.%I', t);
        EXECUTE format('REVOKE ALL ON public.%I FROM spiral_explorer', t);
    END LOOP;
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM spiral_app', current_database());
END
$$;
DROP SCHEMA explorer CASCADE;
DROP SCHEMA explorer_support CASCADE;
