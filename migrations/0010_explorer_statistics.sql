-- Explorer views the planner cannot see through: no statistic of a table reaches a plan that an
-- explorer query gets. pg_statistic describes every tenant's rows, and under row-level security
-- PostgreSQL still estimates a leakproof comparison (text =, <, >=) from a column's most common
-- values and histogram, so a tenant's EXPLAIN, or the plan choice its rows' order reveals, told
-- how often another tenant's values occur.
-- * Each column is COALESCE(c, c): the same value, type and collation, but an expression, for
--   which PostgreSQL keeps no statistics, where a plain column would lead to the table's.
-- * OFFSET 0 keeps each view a subquery of its own, so the planner does not pull the expression
--   up into the caller's query and look inside it for columns (as it does to estimate groups).
-- What is left to a plan is the size of each table and how many tenants share it. A query still
-- finds its tenant's rows through the tenant_id indexes; other indexes no longer serve it.
-- CREATE OR REPLACE keeps the views' grants and comments.
-- depends: 0009_item_instance

CREATE OR REPLACE VIEW explorer.projects WITH (security_invoker = true) AS
SELECT COALESCE(project_key, project_key) AS project_key,
       COALESCE(name, name) AS name,
       COALESCE(description, description) AS description,
       COALESCE(lead, lead) AS lead,
       COALESCE(issue_types, issue_types) AS issue_types,
       COALESCE(source_instance_id, source_instance_id) AS source_instance_id,
       COALESCE(source_ref, source_ref) AS source_ref,
       COALESCE(created_at, created_at) AS created_at,
       COALESCE(updated_at, updated_at) AS updated_at
FROM public.projects
OFFSET 0;

CREATE OR REPLACE VIEW explorer.sources WITH (security_invoker = true) AS
SELECT COALESCE(instance_id, instance_id) AS instance_id,
       COALESCE(kind, kind) AS kind,
       COALESCE(name, name) AS name,
       COALESCE(base_url, base_url) AS base_url,
       COALESCE(last_synced_at, last_synced_at) AS last_synced_at,
       COALESCE(created_at, created_at) AS created_at
FROM public.source_instances
OFFSET 0;

CREATE OR REPLACE VIEW explorer.workflow_statuses WITH (security_invoker = true) AS
SELECT COALESCE(project_key, project_key) AS project_key,
       COALESCE(status, status) AS status,
       COALESCE(category, category) AS category,
       COALESCE(is_initial, is_initial) AS is_initial,
       COALESCE("position", "position") AS "position"
FROM public.workflow_statuses
OFFSET 0;

CREATE OR REPLACE VIEW explorer.workflow_transitions WITH (security_invoker = true) AS
SELECT COALESCE(project_key, project_key) AS project_key,
       COALESCE(transition_id, transition_id) AS transition_id,
       COALESCE(name, name) AS name,
       COALESCE(from_status, from_status) AS from_status,
       COALESCE(to_status, to_status) AS to_status
FROM public.workflow_transitions
OFFSET 0;

CREATE OR REPLACE VIEW explorer.work_items WITH (security_invoker = true) AS
SELECT COALESCE(id, id) AS id,
       COALESCE(key, key) AS key,
       COALESCE(project_key, project_key) AS project_key,
       COALESCE(number, number) AS number,
       COALESCE(title, title) AS title,
       COALESCE(description, description) AS description,
       COALESCE(type, type) AS type,
       COALESCE(status, status) AS status,
       COALESCE(status_category, status_category) AS status_category,
       COALESCE(priority, priority) AS priority,
       COALESCE(assignee, assignee) AS assignee,
       COALESCE(reporter, reporter) AS reporter,
       COALESCE(labels, labels) AS labels,
       COALESCE(parent_key, parent_key) AS parent_key,
       COALESCE(created_at, created_at) AS created_at,
       COALESCE(updated_at, updated_at) AS updated_at,
       COALESCE(resolved_at, resolved_at) AS resolved_at,
       COALESCE(due_at, due_at) AS due_at,
       COALESCE(custom_fields, custom_fields) AS custom_fields,
       COALESCE(source, source) AS source,
       COALESCE(source_id, source_id) AS source_id,
       COALESCE(version, version) AS version
FROM public.work_items
OFFSET 0;

CREATE OR REPLACE VIEW explorer.work_item_transitions WITH (security_invoker = true) AS
SELECT COALESCE(id, id) AS id,
       COALESCE(work_item_id, work_item_id) AS work_item_id,
       COALESCE(from_status, from_status) AS from_status,
       COALESCE(to_status, to_status) AS to_status,
       COALESCE(from_category, from_category) AS from_category,
       COALESCE(to_category, to_category) AS to_category,
       COALESCE(actor, actor) AS actor,
       COALESCE(transitioned_at, transitioned_at) AS transitioned_at
FROM public.work_item_transitions
OFFSET 0;

CREATE OR REPLACE VIEW explorer.comments WITH (security_invoker = true) AS
SELECT COALESCE(id, id) AS id,
       COALESCE(work_item_id, work_item_id) AS work_item_id,
       COALESCE(author, author) AS author,
       COALESCE(body, body) AS body,
       COALESCE(created_at, created_at) AS created_at,
       COALESCE(updated_at, updated_at) AS updated_at,
       COALESCE(source_id, source_id) AS source_id
FROM public.comments
OFFSET 0;

CREATE OR REPLACE VIEW explorer.work_item_links WITH (security_invoker = true) AS
SELECT COALESCE(id, id) AS id,
       COALESCE(link_type, link_type) AS link_type,
       COALESCE(outward_id, outward_id) AS outward_id,
       COALESCE(inward_id, inward_id) AS inward_id,
       COALESCE(created_by, created_by) AS created_by,
       COALESCE(created_at, created_at) AS created_at,
       COALESCE(source, source) AS source
FROM public.work_item_links
OFFSET 0;

CREATE OR REPLACE VIEW explorer.audit_log WITH (security_invoker = true) AS
SELECT COALESCE(id, id) AS id,
       COALESCE(at, at) AS at,
       COALESCE(actor, actor) AS actor,
       COALESCE(tool, tool) AS tool,
       COALESCE(outcome, outcome) AS outcome,
       COALESCE(error_code, error_code) AS error_code,
       COALESCE(duration_ms, duration_ms) AS duration_ms
FROM public.audit_log
OFFSET 0;
