-- The data explorer: a curated schema `explorer` of views over the tenant's data, for agents that
-- write their own read-only SQL (explorer_query), and what keeps such SQL inside its tenant even if
-- it ever got past the query check.
--
-- * Views are security_invoker: the explorer role's own privileges and the tables' row-level
--   security apply, never the owner's. The role gets SELECT on exactly the columns the views
--   expose, so a secret column (key hashes, credentials, stored responses, raw payloads) cannot be
--   read even by naming the table directly.
-- * Tenant binding: the explorer transaction binds its tenant with explorer_support.bind(), which
--   writes one uncommitted row (this backend -> tenant) and then makes the transaction READ ONLY.
--   A RESTRICTIVE policy for the explorer role on every table it reads also requires the row's
--   tenant to be the bound one. app.tenant_id can be changed by any SQL that calls set_config; the
--   binding cannot be changed once the transaction is read-only, and the transaction is always
--   rolled back, so the binding never outlives it.
--
-- Runs as the owner role.
-- depends: 0001_core

CREATE SCHEMA explorer;
COMMENT ON SCHEMA explorer IS
    'Read-only views of this tenant''s work-item data, for analysis with SQL.';
CREATE SCHEMA explorer_support;
COMMENT ON SCHEMA explorer_support IS
    'Machinery of the explorer (tenant binding, row counts, samples); not queryable by users.';

-- ---------------------------------------------------------------------------------------------
-- Tenant binding
-- ---------------------------------------------------------------------------------------------

-- Rows live only inside an explorer transaction, which always rolls back; nothing is committed.
CREATE UNLOGGED TABLE explorer_support.bindings (
    backend_pid integer PRIMARY KEY,
    tenant_id   uuid NOT NULL
);

-- Bind this transaction to a tenant, then make it read-only so nothing (not even a second call
-- of this function) can rebind it. Fails if the transaction is already read-only.
CREATE FUNCTION explorer_support.bind(tenant uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO explorer_support.bindings (backend_pid, tenant_id) VALUES (pg_backend_pid(), tenant);
    PERFORM set_config('app.tenant_id', tenant::text, true);
    PERFORM set_config('transaction_read_only', 'on', true);
END
$$;

-- The tenant bound to this transaction; NULL (no rows match) when there is none. Parallel unsafe
-- (the default) on purpose: a parallel worker has another backend pid.
CREATE FUNCTION explorer_support.bound_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenant_id FROM explorer_support.bindings WHERE backend_pid = pg_backend_pid()
$$;

-- ---------------------------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------------------------

CREATE VIEW explorer.projects WITH (security_invoker = true) AS
SELECT project_key, name, description, lead, issue_types, source_instance_id, source_ref,
       created_at, updated_at
FROM public.projects;
COMMENT ON VIEW explorer.projects IS 'Projects: each work item belongs to exactly one.';
COMMENT ON COLUMN explorer.projects.project_key IS
    'Project key, e.g. WEB; the prefix of its work item keys (WEB-12). Unique.';
COMMENT ON COLUMN explorer.projects.name IS 'Display name.';
COMMENT ON COLUMN explorer.projects.description IS 'Free-text description, may be NULL.';
COMMENT ON COLUMN explorer.projects.lead IS 'Project lead (a user name or e-mail), may be NULL.';
COMMENT ON COLUMN explorer.projects.issue_types IS 'Work item types this project uses.';
COMMENT ON COLUMN explorer.projects.source_instance_id IS
    'The synced source the project comes from (sources.instance_id); NULL for local projects.';
COMMENT ON COLUMN explorer.projects.source_ref IS 'The project''s id in its source, if synced.';
COMMENT ON COLUMN explorer.projects.created_at IS 'When the project was created.';
COMMENT ON COLUMN explorer.projects.updated_at IS 'When the project was last changed.';

CREATE VIEW explorer.sources WITH (security_invoker = true) AS
SELECT instance_id, kind, name, base_url, last_synced_at, created_at
FROM public.source_instances;
COMMENT ON VIEW explorer.sources IS
    'Connected systems work items are synced from (Jira, GitHub, Asana); no credentials.';
COMMENT ON COLUMN explorer.sources.instance_id IS 'Identifier of the source connection.';
COMMENT ON COLUMN explorer.sources.kind IS 'The kind of system: jira, github or asana.';
COMMENT ON COLUMN explorer.sources.name IS 'Display name of the connection. Unique.';
COMMENT ON COLUMN explorer.sources.base_url IS 'Base URL of the remote system.';
COMMENT ON COLUMN explorer.sources.last_synced_at IS 'When the last sync finished; NULL if never.';
COMMENT ON COLUMN explorer.sources.created_at IS 'When the connection was added.';

CREATE VIEW explorer.workflow_statuses WITH (security_invoker = true) AS
SELECT project_key, status, category, is_initial, position
FROM public.workflow_statuses;
COMMENT ON VIEW explorer.workflow_statuses IS
    'The statuses of each project''s workflow and the category each belongs to.';
COMMENT ON COLUMN explorer.workflow_statuses.project_key IS 'The project (projects.project_key).';
COMMENT ON COLUMN explorer.workflow_statuses.status IS 'Status name, e.g. In Progress.';
COMMENT ON COLUMN explorer.workflow_statuses.category IS
    'Status category: todo, in_progress, blocked, in_review, done or cancelled.';
COMMENT ON COLUMN explorer.workflow_statuses.is_initial IS 'True for the status new items start in.';
COMMENT ON COLUMN explorer.workflow_statuses.position IS 'Display order within the workflow.';

CREATE VIEW explorer.workflow_transitions WITH (security_invoker = true) AS
SELECT project_key, transition_id, name, from_status, to_status
FROM public.workflow_transitions;
COMMENT ON VIEW explorer.workflow_transitions IS
    'The status moves each project''s workflow allows.';
COMMENT ON COLUMN explorer.workflow_transitions.project_key IS 'The project (projects.project_key).';
COMMENT ON COLUMN explorer.workflow_transitions.transition_id IS 'Transition id within the project.';
COMMENT ON COLUMN explorer.workflow_transitions.name IS 'Transition name, e.g. Start progress.';
COMMENT ON COLUMN explorer.workflow_transitions.from_status IS 'Status the move starts from.';
COMMENT ON COLUMN explorer.workflow_transitions.to_status IS 'Status the move ends in.';

CREATE VIEW explorer.work_items WITH (security_invoker = true) AS
SELECT id, key, project_key, number, title, description, type, status, status_category,
       priority, assignee, reporter, labels, parent_key, created_at, updated_at, resolved_at,
       due_at, custom_fields, source, source_id, version
FROM public.work_items;
COMMENT ON VIEW explorer.work_items IS
    'Work items (Jira-style issues): one row per item, current state.';
COMMENT ON COLUMN explorer.work_items.id IS
    'Internal numeric id; what comments, links and transitions refer to.';
COMMENT ON COLUMN explorer.work_items.key IS 'Item key, e.g. WEB-12. Unique.';
COMMENT ON COLUMN explorer.work_items.project_key IS 'The project (projects.project_key).';
COMMENT ON COLUMN explorer.work_items.number IS 'The number part of the key, unique per project.';
COMMENT ON COLUMN explorer.work_items.title IS 'The summary line.';
COMMENT ON COLUMN explorer.work_items.description IS 'Free-text description (Markdown), may be NULL.';
COMMENT ON COLUMN explorer.work_items.type IS 'epic, story, task, bug, subtask or feature.';
COMMENT ON COLUMN explorer.work_items.status IS
    'Workflow status name (workflow_statuses.status of the item''s project).';
COMMENT ON COLUMN explorer.work_items.status_category IS
    'todo, in_progress, blocked, in_review, done or cancelled; done and cancelled are resolved.';
COMMENT ON COLUMN explorer.work_items.priority IS 'critical, high, medium, low or none.';
COMMENT ON COLUMN explorer.work_items.assignee IS 'Who works on it (user name or e-mail); NULL if unassigned.';
COMMENT ON COLUMN explorer.work_items.reporter IS 'Who reported it; may be NULL.';
COMMENT ON COLUMN explorer.work_items.labels IS 'Labels (text array); empty when none.';
COMMENT ON COLUMN explorer.work_items.parent_key IS 'Key of the parent item (epic or story), if any.';
COMMENT ON COLUMN explorer.work_items.created_at IS 'When the item was created.';
COMMENT ON COLUMN explorer.work_items.updated_at IS 'When the item was last changed.';
COMMENT ON COLUMN explorer.work_items.resolved_at IS
    'When it reached done or cancelled; NULL while open.';
COMMENT ON COLUMN explorer.work_items.due_at IS 'Due date, if any.';
COMMENT ON COLUMN explorer.work_items.custom_fields IS 'Other fields, a JSON object (jsonb).';
COMMENT ON COLUMN explorer.work_items.source IS 'Where the item lives: local, jira, github or asana.';
COMMENT ON COLUMN explorer.work_items.source_id IS 'The item''s id in its source, if synced.';
COMMENT ON COLUMN explorer.work_items.version IS 'Increases by one with every change.';

CREATE VIEW explorer.work_item_transitions WITH (security_invoker = true) AS
SELECT id, work_item_id, from_status, to_status, from_category, to_category, actor,
       transitioned_at
FROM public.work_item_transitions;
COMMENT ON VIEW explorer.work_item_transitions IS
    'Status history: one row per status change of a work item (cycle and lead times come from here).';
COMMENT ON COLUMN explorer.work_item_transitions.id IS 'Identifier of the change.';
COMMENT ON COLUMN explorer.work_item_transitions.work_item_id IS 'The item (work_items.id).';
COMMENT ON COLUMN explorer.work_item_transitions.from_status IS 'Status before; NULL at creation.';
COMMENT ON COLUMN explorer.work_item_transitions.to_status IS 'Status after.';
COMMENT ON COLUMN explorer.work_item_transitions.from_category IS 'Status category before; NULL at creation.';
COMMENT ON COLUMN explorer.work_item_transitions.to_category IS 'Status category after.';
COMMENT ON COLUMN explorer.work_item_transitions.actor IS 'Who made the change, if known.';
COMMENT ON COLUMN explorer.work_item_transitions.transitioned_at IS 'When the change happened.';

CREATE VIEW explorer.comments WITH (security_invoker = true) AS
SELECT id, work_item_id, author, body, created_at, updated_at, source_id
FROM public.comments;
COMMENT ON VIEW explorer.comments IS 'Comments on work items.';
COMMENT ON COLUMN explorer.comments.id IS 'Identifier of the comment.';
COMMENT ON COLUMN explorer.comments.work_item_id IS 'The item commented on (work_items.id).';
COMMENT ON COLUMN explorer.comments.author IS 'Who wrote it, if known.';
COMMENT ON COLUMN explorer.comments.body IS 'The text (Markdown).';
COMMENT ON COLUMN explorer.comments.created_at IS 'When it was written.';
COMMENT ON COLUMN explorer.comments.updated_at IS 'When it was last edited.';
COMMENT ON COLUMN explorer.comments.source_id IS 'The comment''s id in its source, if synced.';

CREATE VIEW explorer.work_item_links WITH (security_invoker = true) AS
SELECT id, link_type, outward_id, inward_id, created_by, created_at
FROM public.work_item_links;
COMMENT ON VIEW explorer.work_item_links IS
    'Links between work items, read as "outward <link_type> inward", e.g. A blocks B.';
COMMENT ON COLUMN explorer.work_item_links.id IS 'Identifier of the link.';
COMMENT ON COLUMN explorer.work_item_links.link_type IS 'blocks, relates, duplicates or clones.';
COMMENT ON COLUMN explorer.work_item_links.outward_id IS 'The item the link reads from (work_items.id).';
COMMENT ON COLUMN explorer.work_item_links.inward_id IS 'The item the link reads to (work_items.id).';
COMMENT ON COLUMN explorer.work_item_links.created_by IS 'Who created the link, if known.';
COMMENT ON COLUMN explorer.work_item_links.created_at IS 'When the link was created.';

CREATE VIEW explorer.audit_log WITH (security_invoker = true) AS
SELECT id, at, actor, tool, outcome, error_code, duration_ms
FROM public.audit_log;
COMMENT ON VIEW explorer.audit_log IS
    'One row per tool call made with this tenant''s keys (without the call''s arguments).';
COMMENT ON COLUMN explorer.audit_log.id IS 'Identifier of the entry.';
COMMENT ON COLUMN explorer.audit_log.at IS 'When the call was recorded.';
COMMENT ON COLUMN explorer.audit_log.actor IS 'The user the calling key acts as, if any.';
COMMENT ON COLUMN explorer.audit_log.tool IS 'The tool called, e.g. jira_search.';
COMMENT ON COLUMN explorer.audit_log.outcome IS 'ok or error.';
COMMENT ON COLUMN explorer.audit_log.error_code IS 'The error code when outcome is error.';
COMMENT ON COLUMN explorer.audit_log.duration_ms IS 'How long the call took, in milliseconds.';

-- ---------------------------------------------------------------------------------------------
-- Row counts and sample values, computed as the caller (row-level security applies)
-- ---------------------------------------------------------------------------------------------

-- This tenant's row count of each explorer relation named in `relations` (all when NULL), never
-- planner statistics, which count every tenant's rows. Identifiers come from the catalog and are
-- quoted with %I.
CREATE FUNCTION explorer_support.row_counts(relations text[] DEFAULT NULL)
RETURNS TABLE (relation text, row_count bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'explorer'::regnamespace AND c.relkind IN ('r', 'v', 'm')
               AND (relations IS NULL OR c.relname = ANY (relations))
             ORDER BY c.relname
    LOOP
        relation := r.relname;
        EXECUTE format('SELECT count(*) FROM explorer.%I', r.relname) INTO row_count;
        RETURN NEXT;
    END LOOP;
END
$$;

-- For each text or boolean column of an explorer relation: how many distinct values this tenant
-- has and, when there are at most max_values, the values with their counts (most frequent first).
CREATE FUNCTION explorer_support.column_samples(relation text, max_values integer)
RETURNS TABLE (column_name text, distinct_count bigint, sample jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
BEGIN
    FOR a IN SELECT att.attname FROM pg_attribute att
             JOIN pg_class c ON c.oid = att.attrelid
             WHERE c.relnamespace = 'explorer'::regnamespace AND c.relname = relation
               AND att.attnum > 0 AND NOT att.attisdropped
               AND att.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bool'::regtype)
             ORDER BY att.attnum
    LOOP
        column_name := a.attname;
        EXECUTE format(
            'SELECT count(DISTINCT %1$I), '
            'CASE WHEN count(DISTINCT %1$I) <= $1 THEN ('
            '  SELECT jsonb_agg(jsonb_build_object(''value'', v, ''count'', n) ORDER BY n DESC, v)'
            '  FROM (SELECT %1$I AS v, count(*) AS n FROM explorer.%2$I'
            '        WHERE %1$I IS NOT NULL GROUP BY 1) s) END '
            'FROM explorer.%2$I', a.attname, relation)
            INTO distinct_count, sample USING max_values;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The one table each explorer view reads, so describe can show the keys, relationships, indexes,
-- nullability and defaults of the table below in the view's terms.
CREATE VIEW explorer_support.relation_bases AS
SELECT r.ev_class AS relation_oid, min(d.refobjid) AS base_oid
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
 AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
WHERE r.ev_class IN (SELECT oid FROM pg_catalog.pg_class
                     WHERE relnamespace = 'explorer'::regnamespace)
GROUP BY r.ev_class
HAVING count(DISTINCT d.refobjid) = 1;

-- ---------------------------------------------------------------------------------------------
-- Privileges of the explorer role: these views, the columns behind them, nothing else
-- ---------------------------------------------------------------------------------------------

REVOKE ALL ON SCHEMA explorer, explorer_support FROM PUBLIC;
REVOKE ALL ON FUNCTION explorer_support.bind(uuid), explorer_support.bound_tenant(),
    explorer_support.row_counts(text[]), explorer_support.column_samples(text, integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA explorer, explorer_support TO spiral_explorer;
GRANT EXECUTE ON FUNCTION explorer_support.bind(uuid), explorer_support.bound_tenant(),
    explorer_support.row_counts(text[]), explorer_support.column_samples(text, integer)
    TO spiral_explorer;
GRANT SELECT ON ALL TABLES IN SCHEMA explorer TO spiral_explorer;
GRANT SELECT ON explorer_support.relation_bases TO spiral_explorer;

-- security_invoker views check the invoker's privileges on the tables below: only the exposed
-- columns (never api_keys.key_hash, source_instances.credentials, idempotency responses, raw
-- payloads, audit arguments).
GRANT SELECT (tenant_id, project_key, name, description, lead, issue_types, source_instance_id,
              source_ref, created_at, updated_at) ON public.projects TO spiral_explorer;
GRANT SELECT (tenant_id, instance_id, kind, name, base_url, last_synced_at, created_at)
    ON public.source_instances TO spiral_explorer;
GRANT SELECT (tenant_id, project_key, status, category, is_initial, position)
    ON public.workflow_statuses TO spiral_explorer;
GRANT SELECT (tenant_id, project_key, transition_id, name, from_status, to_status)
    ON public.workflow_transitions TO spiral_explorer;
GRANT SELECT (tenant_id, id, key, project_key, number, title, description, type, status,
              status_category, priority, assignee, reporter, labels, parent_key, created_at,
              updated_at, resolved_at, due_at, custom_fields, source, source_id, version)
    ON public.work_items TO spiral_explorer;
GRANT SELECT (tenant_id, id, work_item_id, from_status, to_status, from_category, to_category,
              actor, transitioned_at) ON public.work_item_transitions TO spiral_explorer;
GRANT SELECT (tenant_id, id, work_item_id, author, body, created_at, updated_at, source_id)
    ON public.comments TO spiral_explorer;
GRANT SELECT (tenant_id, id, link_type, outward_id, inward_id, created_by, created_at)
    ON public.work_item_links TO spiral_explorer;
GRANT SELECT (tenant_id, id, at, actor, tool, outcome, error_code, duration_ms)
    ON public.audit_log TO spiral_explorer;

-- The binding: for the explorer role, a row must belong to the tenant bound to the transaction as
-- well as to app.tenant_id (restrictive policies AND with the permissive tenant_isolation).
-- IS NOT DISTINCT FROM, not "=": with "=", the planner merges both policies into one equivalence
-- class, checks bound = app.tenant_id once at the start and then scans by app.tenant_id alone, so a
-- set_config earlier in the same statement would pick the rows. As a plain filter the binding is
-- checked on every row.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'source_instances', 'workflow_statuses',
                             'workflow_transitions', 'work_items', 'work_item_transitions',
                             'comments', 'work_item_links', 'audit_log']
    LOOP
        EXECUTE format(
            'CREATE POLICY explorer_bound ON public.%I AS RESTRICTIVE FOR SELECT TO spiral_explorer '
            'USING (tenant_id IS NOT DISTINCT FROM (SELECT explorer_support.bound_tenant()))', t);
    END LOOP;
END
$$;

-- No temporary objects for anyone by default (the explorer could otherwise shadow names with
-- temp tables); the runtime role keeps what it had. Needs the database owner: the migration's role.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO spiral_app', current_database());
END
$$;
