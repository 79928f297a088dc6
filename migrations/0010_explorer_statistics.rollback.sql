-- The explorer views as 0003 and 0008 left them: plain columns, flattened into the query.

CREATE OR REPLACE VIEW explorer.projects WITH (security_invoker = true) AS
SELECT project_key, name, description, lead, issue_types, source_instance_id, source_ref, created_at, updated_at
FROM public.projects;

CREATE OR REPLACE VIEW explorer.sources WITH (security_invoker = true) AS
SELECT instance_id, kind, name, base_url, last_synced_at, created_at
FROM public.source_instances;

CREATE OR REPLACE VIEW explorer.workflow_statuses WITH (security_invoker = true) AS
SELECT project_key, status, category, is_initial, "position"
FROM public.workflow_statuses;

CREATE OR REPLACE VIEW explorer.workflow_transitions WITH (security_invoker = true) AS
SELECT project_key, transition_id, name, from_status, to_status
FROM public.workflow_transitions;

CREATE OR REPLACE VIEW explorer.work_items WITH (security_invoker = true) AS
SELECT id, key, project_key, number, title, description, type, status, status_category, priority, assignee, reporter, labels, parent_key, created_at, updated_at, resolved_at, due_at, custom_fields, source, source_id, version
FROM public.work_items;

CREATE OR REPLACE VIEW explorer.work_item_transitions WITH (security_invoker = true) AS
SELECT id, work_item_id, from_status, to_status, from_category, to_category, actor, transitioned_at
FROM public.work_item_transitions;

CREATE OR REPLACE VIEW explorer.comments WITH (security_invoker = true) AS
SELECT id, work_item_id, author, body, created_at, updated_at, source_id
FROM public.comments;

CREATE OR REPLACE VIEW explorer.work_item_links WITH (security_invoker = true) AS
SELECT id, link_type, outward_id, inward_id, created_by, created_at, source
FROM public.work_item_links;

CREATE OR REPLACE VIEW explorer.audit_log WITH (security_invoker = true) AS
SELECT id, at, actor, tool, outcome, error_code, duration_ms
FROM public.audit_log;
