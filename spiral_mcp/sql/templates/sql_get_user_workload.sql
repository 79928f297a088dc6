-- name: sql_get_user_workload
-- title: A person's workload per project
-- row_cap: 200
-- description: A person's open items per project, most first: open, critical or high, stale (no
--   status change for `stale_days`), days in the current status. Definitions: resource
--   spiral://reports.
-- definitions: How much work one person holds, one row per project where they have open items,
--   most open items first.
--
--   Definitions:
--   - open item: assigned to `assignee` (case-insensitive exact match) with a status category
--   other than done and cancelled; when `statuses` is given, instead: an item whose status name
--   (case-insensitive) or status category is one of them.
--   - time in current status: from the item's latest status transition (or, with none recorded,
--   its creation) until now.
--   - stale: time in current status of at least `stale_days` days (no status change since).
--
--   Columns: project_key, project_name, open_items, critical_or_high_items (priority critical or
--   high), stale_items, avg_days_in_current_status (the mean) and max_days_in_current_status
--   (days of 24 hours, rounded to 0.01, half away from zero; stale_items counts unrounded),
--   stale_days (the threshold used). No rows means the person has no such items.
-- param assignee: {"type": "string", "minLength": 1, "maxLength": 200,
--   "description": "e.g. ana@example.com"}
-- param statuses: {"type": "array", "minItems": 1, "maxItems": 20,
--   "items": {"type": "string", "minLength": 1, "maxLength": 100},
--   "description": "Status names or categories to count instead of open items."}
-- param stale_days: {"type": "integer", "minimum": 1, "maximum": 365, "default": 7}
-- required: assignee
WITH assigned AS (
    SELECT w.id, w.project_key, w.priority, w.created_at
    FROM work_items AS w
    WHERE lower(w.assignee) = lower($1::text)
      AND CASE WHEN $2::text[] IS NULL THEN w.status_category NOT IN ('done', 'cancelled')
               ELSE EXISTS (SELECT 1 FROM unnest($2::text[]) AS wanted(s)
                            WHERE lower(wanted.s) IN (lower(w.status), w.status_category))
          END
), in_status AS (
    SELECT a.project_key, a.priority,
           extract(epoch FROM now() - coalesce(last_move.at, a.created_at)) / 86400 AS days
    FROM assigned AS a
    LEFT JOIN LATERAL (
        SELECT max(t.transitioned_at) AS at
        FROM work_item_transitions AS t
        WHERE t.work_item_id = a.id
    ) AS last_move ON true
)
SELECT s.project_key, p.name AS project_name,
       count(*) AS open_items,
       count(*) FILTER (WHERE s.priority IN ('critical', 'high')) AS critical_or_high_items,
       count(*) FILTER (WHERE s.days >= $3::int) AS stale_items,
       round(avg(s.days), 2) AS avg_days_in_current_status,
       round(max(s.days), 2) AS max_days_in_current_status,
       $3::int AS stale_days
FROM in_status AS s
LEFT JOIN projects AS p ON p.project_key = s.project_key
GROUP BY s.project_key, p.name
ORDER BY open_items DESC, s.project_key
