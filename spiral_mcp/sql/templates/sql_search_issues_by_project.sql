-- name: sql_search_issues_by_project
-- title: Work items of a project
-- row_cap: 100
-- description: A project's work items, most recently updated first, filtered by status (names or
--   categories), assignee and priority. Definitions: resource spiral://reports.
-- definitions: Lists the work items of one project, most recently updated first (ties: newest
--   item first, by created_at, then the highest key number), with at most `limit` rows.
--   Filters (all optional, combined with AND):
--   - status: one value or a list; an item matches when its status name (case-insensitive,
--   e.g. "In Review") or its status category (todo, in_progress, blocked, in_review, done,
--   cancelled) equals any of them.
--   - assignee: the assignee's user name, case-insensitive exact match.
--   - priority: critical, high, medium, low or none.
--
--   Columns: key, title, type, status, status_category, priority, assignee, reporter, labels,
--   parent_key, created_at, updated_at, resolved_at (null while unresolved), due_at; times are
--   ISO 8601 in UTC. No rows means the project has no matching items (or does not exist).
-- param project_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$",
--   "description": "e.g. WEB"}
-- param status: {"description": "Status names or categories.",
--   "anyOf": [{"type": "string", "minLength": 1, "maxLength": 100},
--   {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 100},
--   "minItems": 1, "maxItems": 20}]}
-- param assignee: {"type": "string", "minLength": 1, "maxLength": 200}
-- param priority: {"type": "string", "enum": ["critical", "high", "medium", "low", "none"]}
-- param limit: {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
-- required: project_key
SELECT w.key, w.title, w.type, w.status, w.status_category, w.priority, w.assignee, w.reporter,
       w.labels, w.parent_key, w.created_at, w.updated_at, w.resolved_at, w.due_at
FROM work_items AS w
WHERE w.project_key = $1::text
  AND ($2::text[] IS NULL
       OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS wanted(s)
                  WHERE lower(wanted.s) IN (lower(w.status), w.status_category)))
  AND ($3::text IS NULL OR lower(w.assignee) = lower($3::text))
  AND ($4::text IS NULL OR w.priority = $4::text)
ORDER BY w.updated_at DESC, w.created_at DESC, w.number DESC
LIMIT $5::int
