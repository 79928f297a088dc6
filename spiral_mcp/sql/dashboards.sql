-- The project dashboard's datasets (spiral_mcp/dashboards.py), under the caller's tenant
-- transaction. The figures are those the report templates define (sql/templates/
-- sql_get_project_metrics.sql and sql_lead_time_metrics.sql), over a window of UTC days
-- [since, until] instead of "the last n days": a day ends at the next midnight UTC, or now for
-- today; done means status category done with resolved_at in the window (cancelled excluded).

-- name: dashboard_projects
-- params:
-- The tenant's projects with how many items each holds, open (not done or cancelled) and done.
SELECT p.project_key, p.name, p.description, p.lead,
       count(w.id) AS items,
       count(w.id) FILTER (WHERE w.status_category NOT IN ('done', 'cancelled')) AS open_items,
       count(w.id) FILTER (WHERE w.status_category = 'done') AS done_items,
       max(w.updated_at) AS last_update
FROM projects AS p
LEFT JOIN work_items AS w ON w.project_key = p.project_key
GROUP BY p.project_key, p.name, p.description, p.lead
ORDER BY p.project_key

-- name: dashboard_project^
-- params: project_key
-- One project of the tenant, or no row.
SELECT project_key, name, description, lead FROM projects WHERE project_key = $1

-- name: dashboard_cfd
-- params: project_key, since, until
-- Cumulative flow: for each day of [since, until] (up to today), how many of the project's
-- items were in each status category at the day's end, by their recorded transitions, as
-- sql_get_project_metrics counts work in progress: a move at exactly that instant belongs to
-- what follows; before its first recorded move an item was in that move's from-category; an
-- item with no recorded move counts with its current category since its creation.
WITH bounds AS (
    SELECT $2::date::timestamp AT TIME ZONE 'UTC' AS since,
           least(($3::date + 1)::timestamp AT TIME ZONE 'UTC', now()) AS until
), days AS (
    SELECT d::date AS day
    FROM generate_series($2::date, least($3::date, (now() AT TIME ZONE 'UTC')::date),
                         interval '1 day') AS d
), items AS (
    SELECT w.id, w.created_at, w.status_category
    FROM work_items AS w
    WHERE w.project_key = $1::text
), moves AS (
    SELECT t.work_item_id, t.from_category, t.to_category, t.transitioned_at,
           lead(t.transitioned_at) OVER item_moves AS next_at,
           row_number() OVER item_moves AS seq
    FROM work_item_transitions AS t
    JOIN items AS i ON i.id = t.work_item_id
    WINDOW item_moves AS (PARTITION BY t.work_item_id ORDER BY t.transitioned_at, t.id)
), segments AS (
    -- Each item's life as [start_at, end_at) stretches in one status category.
    SELECT transitioned_at AS start_at, next_at AS end_at, to_category AS category FROM moves
    UNION ALL
    SELECT i.created_at, m.transitioned_at, m.from_category
    FROM moves AS m JOIN items AS i ON i.id = m.work_item_id
    WHERE m.seq = 1 AND m.from_category IS NOT NULL
    UNION ALL
    SELECT i.created_at, NULL, i.status_category
    FROM items AS i
    WHERE NOT EXISTS (SELECT 1 FROM moves AS m WHERE m.work_item_id = i.id)
), lived AS (
    -- Empty stretches (two moves at one instant) hold no instant.
    SELECT start_at, end_at, category FROM segments WHERE end_at IS NULL OR end_at > start_at
), steps AS (
    -- In one pass, not a day-by-stretch join: each category's count just before the window,
    -- then +1 on the day a stretch starts and -1 on the day it ends (a day is [midnight,
    -- midnight)), for the window's stretches until its end.
    SELECT NULL::date AS day, l.category, count(*) AS step
    FROM lived AS l, bounds AS b
    WHERE l.start_at < b.since AND (l.end_at IS NULL OR l.end_at >= b.since)
    GROUP BY l.category
    UNION ALL
    SELECT change.day, change.category, sum(change.step)
    FROM (SELECT (l.start_at AT TIME ZONE 'UTC')::date, l.category, 1
          FROM lived AS l, bounds AS b WHERE l.start_at >= b.since AND l.start_at < b.until
          UNION ALL
          SELECT (l.end_at AT TIME ZONE 'UTC')::date, l.category, -1
          FROM lived AS l, bounds AS b WHERE l.end_at >= b.since AND l.end_at < b.until)
         AS change(day, category, step)
    GROUP BY change.day, change.category
), per_day AS (
    SELECT d.day,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'todo'), 0) AS todo,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'in_progress'), 0) AS in_progress,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'blocked'), 0) AS blocked,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'in_review'), 0) AS in_review,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'done'), 0) AS done,
           coalesce(sum(s.step) FILTER (WHERE s.category = 'cancelled'), 0) AS cancelled
    FROM days AS d
    -- Each day's steps; the count before the window (day null) joins the first day.
    LEFT JOIN steps AS s ON s.day = d.day OR (s.day IS NULL AND d.day = $2::date)
    GROUP BY d.day
)
SELECT day,
       (sum(todo) OVER running)::bigint AS todo,
       (sum(in_progress) OVER running)::bigint AS in_progress,
       (sum(blocked) OVER running)::bigint AS blocked,
       (sum(in_review) OVER running)::bigint AS in_review,
       (sum(done) OVER running)::bigint AS done,
       (sum(cancelled) OVER running)::bigint AS cancelled
FROM per_day
WINDOW running AS (ORDER BY day)
ORDER BY day

-- name: dashboard_throughput
-- params: project_key, since, until
-- Items done per ISO week (Monday to Sunday) touching [since, until], oldest first; first_day
-- and last_day clip the week to the window, as sql_lead_time_metrics's week rows do.
WITH window_days AS (
    SELECT $2::date AS first_day, $3::date AS last_day
), weeks AS (
    SELECT w::date AS week_start, greatest(w::date, b.first_day) AS first_day,
           least(w::date + 6, b.last_day) AS last_day
    FROM window_days AS b,
         generate_series(date_trunc('week', b.first_day::timestamp),
                         date_trunc('week', b.last_day::timestamp), interval '1 week') AS w
), done AS (
    SELECT date_trunc('week', w.resolved_at AT TIME ZONE 'UTC')::date AS week_start
    FROM work_items AS w, window_days AS b
    WHERE w.project_key = $1::text AND w.status_category = 'done'
      AND w.resolved_at >= b.first_day::timestamp AT TIME ZONE 'UTC'
      AND w.resolved_at < (b.last_day + 1)::timestamp AT TIME ZONE 'UTC'
)
SELECT k.week_start, k.first_day, k.last_day, count(d.week_start) AS resolved
FROM weeks AS k
LEFT JOIN done AS d ON d.week_start = k.week_start
GROUP BY k.week_start, k.first_day, k.last_day
ORDER BY k.week_start

-- name: dashboard_lead_cycle
-- params: project_key, since, until, max_items
-- Each item done in [since, until], newest first, at most max_items of them: its lead time
-- (resolved_at - created_at) and cycle time (from its first move into in_progress, blocked or
-- in_review at or before resolved_at; null when never recorded as started) in days of 24 hours,
-- as sql_lead_time_metrics defines them. Every row also carries the p50/p85/p95 of both over
-- ALL the window's items (percentile_cont, as the templates; rounded to 0.001) and their count.
WITH done AS (
    SELECT w.key, w.title, w.resolved_at,
           extract(epoch FROM w.resolved_at - w.created_at)::float8 / 86400 AS lead_days,
           extract(epoch FROM w.resolved_at - started.at)::float8 / 86400 AS cycle_days
    FROM work_items AS w
    LEFT JOIN LATERAL (
        SELECT min(t.transitioned_at) AS at
        FROM work_item_transitions AS t
        WHERE t.work_item_id = w.id AND t.to_category IN ('in_progress', 'blocked', 'in_review')
          AND t.transitioned_at <= w.resolved_at
    ) AS started ON true
    WHERE w.project_key = $1::text AND w.status_category = 'done'
      AND w.resolved_at >= $2::date::timestamp AT TIME ZONE 'UTC'
      AND w.resolved_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC'
), stats AS (
    SELECT count(*) AS items_total, count(cycle_days) AS cycle_items,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_days) AS lead_p50,
           percentile_cont(0.85) WITHIN GROUP (ORDER BY lead_days) AS lead_p85,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lead_days) AS lead_p95,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p50,
           percentile_cont(0.85) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p85,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p95
    FROM done
)
SELECT d.key, d.title, d.resolved_at,
       round(d.lead_days::numeric, 3) AS lead_time_days,
       round(d.cycle_days::numeric, 3) AS cycle_time_days,
       s.items_total, s.cycle_items,
       round(s.lead_p50::numeric, 3) AS lead_p50, round(s.lead_p85::numeric, 3) AS lead_p85,
       round(s.lead_p95::numeric, 3) AS lead_p95,
       round(s.cycle_p50::numeric, 3) AS cycle_p50, round(s.cycle_p85::numeric, 3) AS cycle_p85,
       round(s.cycle_p95::numeric, 3) AS cycle_p95
FROM done AS d CROSS JOIN stats AS s
ORDER BY d.resolved_at DESC, d.key
LIMIT $4

-- name: dashboard_wip
-- params: project_key, until, max_items
-- Work in progress at the end of day `until` (now when that is today or later): the items then
-- in a status of category in_progress, blocked or in_review (as sql_get_project_metrics counts
-- it), oldest start first, at most max_items; each with that status, when it started (its first
-- move into one of those categories, as cycle time starts; its creation when none is recorded)
-- and its age then in days of 24 hours. Every row carries the count of all such items.
WITH bounds AS (
    SELECT least(($2::date + 1)::timestamp AT TIME ZONE 'UTC', now()) AS at
), items AS (
    SELECT w.id, w.key, w.title, w.created_at, w.status, w.status_category
    FROM work_items AS w, bounds AS b
    WHERE w.project_key = $1::text AND w.created_at < b.at
), states AS (
    -- Each item's status just before `at`: its last move before then, or (no move before then)
    -- its current status when it has no moves at all, else its first move's from-status.
    SELECT i.id, i.key, i.title, i.created_at,
           coalesce(last_move.to_status, CASE WHEN first_move.from_status IS NULL
                                              AND first_move.at IS NULL THEN i.status
                                              ELSE first_move.from_status END) AS status,
           coalesce(last_move.to_category, CASE WHEN first_move.from_category IS NULL
                                                AND first_move.at IS NULL THEN i.status_category
                                                ELSE first_move.from_category END) AS category
    FROM items AS i
    CROSS JOIN bounds AS b
    LEFT JOIN LATERAL (
        SELECT t.to_status, t.to_category FROM work_item_transitions AS t
        WHERE t.work_item_id = i.id AND t.transitioned_at < b.at
        ORDER BY t.transitioned_at DESC, t.id DESC LIMIT 1
    ) AS last_move ON true
    LEFT JOIN LATERAL (
        SELECT t.from_status, t.from_category, t.transitioned_at AS at
        FROM work_item_transitions AS t
        WHERE t.work_item_id = i.id
        ORDER BY t.transitioned_at, t.id LIMIT 1
    ) AS first_move ON true
), wip AS (
    SELECT s.key, s.title, s.status, s.category,
           coalesce((SELECT min(t.transitioned_at) FROM work_item_transitions AS t
                     WHERE t.work_item_id = s.id
                       AND t.to_category IN ('in_progress', 'blocked', 'in_review')
                       AND t.transitioned_at < b.at), s.created_at) AS started_at,
           b.at
    FROM states AS s CROSS JOIN bounds AS b
    WHERE s.category IN ('in_progress', 'blocked', 'in_review')
)
SELECT key, title, status, category AS status_category, started_at,
       round((extract(epoch FROM at - started_at) / 86400)::numeric, 3) AS age_days,
       count(*) OVER () AS items_total
FROM wip
ORDER BY started_at, key
LIMIT $3
