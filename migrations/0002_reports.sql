-- depends: 0001_core
-- Reports: pg_trgm for the fuzzy text search template, trigram indexes on work item titles and
-- descriptions, and the btree indexes the SQL report templates (spiral_mcp/sql/templates) lean on.
-- pg_trgm is a trusted extension: the owner role (the database's owner) may create it.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- sql_search_issues_by_text: `query <% title`, `query <% description` and word_similarity().
-- Under forced row-level security the planner uses these indexes only for LEAKPROOF operators,
-- and pg_trgm's are not; marking word_similarity_op and word_similarity_commutator_op LEAKPROOF
-- takes a superuser, so it is not done here. Without it the search scans the tenant's items.
CREATE INDEX work_items_title_trgm ON work_items USING gin (title gin_trgm_ops);
CREATE INDEX work_items_description_trgm ON work_items USING gin (description gin_trgm_ops);

-- sql_get_user_workload matches the assignee case-insensitively.
CREATE INDEX work_items_assignee_ci ON work_items (tenant_id, lower(assignee), status_category);

-- sql_get_project_metrics and sql_lead_time_metrics: a project's items by creation and resolution.
CREATE INDEX work_items_project_created ON work_items (tenant_id, project_key, created_at);
CREATE INDEX work_items_project_resolved ON work_items (tenant_id, project_key, resolved_at)
    WHERE resolved_at IS NOT NULL;
