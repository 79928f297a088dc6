-- name: sql_get_project_metrics
-- title: Flow metrics of a project, per day and for the period
-- row_cap: 400
-- description: Daily flow of one project over the last `days` days (UTC calendar days, today
--   included), the totals for that period, the previous period of the same length, and the change.
--
--   Rows, told apart by `kind`, in this order:
--   - "period": the whole period (first_day .. last_day = today).
--   - "previous_period": the `days` days just before it.
--   - "change": period minus previous_period, column by column (null when either side is null).
--   - "day": one row per day, oldest first (`day` = first_day = last_day).
--
--   Definitions, for a span of days:
--   - created: items created in the span.
--   - resolved (throughput): items with status category done and resolved_at in the span.
--   Cancelled items do NOT count as resolved and are left out of lead times.
--   - wip_end_of_day: items that, at the end of the span's last day (midnight UTC), were in a
--   status of category in_progress, blocked or in_review, per their recorded transitions (a move
--   at exactly midnight belongs to the new day); an item with no recorded transition counts with
--   its current category since its creation.
--   - lead time: resolved_at - created_at in days, over the items resolved in the span:
--   lead_time_p50_days and lead_time_p90_days (percentile_cont, i.e. interpolated) and
--   lead_time_avg_days, rounded to 0.001.
--
--   Empty spans give 0 for the counts and null for the lead times. An unknown project gives the
--   same rows, all zeros and nulls.
-- param project_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$",
--   "description": "The project's key, e.g. WEB."}
-- param days: {"type": "integer", "minimum": 1, "maximum": 365, "default": 30,
--   "description": "Length of the period in days, today included."}
-- required: project_key
WITH bounds AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today, $2::int AS n
), days AS (
    -- Both periods, day by day: offsets 0 .. n-1 are the period, n .. 2n-1 the previous one.
    SELECT b.today - g AS day, CASE WHEN g < b.n THEN 'period' ELSE 'previous_period' END AS span
    FROM bounds AS b, generate_series(0, 2 * b.n - 1) AS g
), reach AS (
    SELECT (b.today - (2 * b.n - 1))::timestamp AT TIME ZONE 'UTC' AS since,
           (b.today + 1)::timestamp AT TIME ZONE 'UTC' AS until
    FROM bounds AS b
), items AS (
    SELECT w.id, w.created_at, w.resolved_at, w.status_category
    FROM work_items AS w
    WHERE w.project_key = $1::text
), created AS (
    SELECT (i.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS created
    FROM items AS i, reach AS r
    WHERE i.created_at >= r.since AND i.created_at < r.until
    GROUP BY 1
), resolved AS (
    SELECT d.day, d.span,
           extract(epoch FROM i.resolved_at - i.created_at)::float8 / 86400 AS lead_days
    FROM items AS i
    JOIN days AS d ON d.day = (i.resolved_at AT TIME ZONE 'UTC')::date
    WHERE i.status_category = 'done'
), resolved_stats AS (
    -- One pass, two groupings: per day, and per period (day is null in those rows).
    SELECT CASE WHEN GROUPING(r.day) = 0 THEN r.day END AS day, r.span,
           count(*) AS resolved,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.lead_days) AS p50,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY r.lead_days) AS p90,
           avg(r.lead_days) AS average
    FROM resolved AS r
    GROUP BY GROUPING SETS ((r.day, r.span), (r.span))
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
    -- Before its first recorded transition the item was in that transition's from-category.
    SELECT i.created_at, m.transitioned_at, m.from_category
    FROM moves AS m JOIN items AS i ON i.id = m.work_item_id
    WHERE m.seq = 1 AND m.from_category IS NOT NULL
    UNION ALL
    SELECT i.created_at, NULL, i.status_category
    FROM items AS i
    WHERE NOT EXISTS (SELECT 1 FROM moves AS m WHERE m.work_item_id = i.id)
), wip AS (
    -- Empty stretches (two moves at one instant) hold no instant; leaving them out makes
    -- "WIP at T = stretches started before T - stretches ended before T" exact.
    SELECT start_at, end_at FROM segments
    WHERE category IN ('in_progress', 'blocked', 'in_review')
      AND (end_at IS NULL OR end_at > start_at)
), wip_at_since AS (
    SELECT count(*) AS wip FROM wip, reach AS r
    WHERE wip.start_at < r.since AND (wip.end_at IS NULL OR wip.end_at >= r.since)
), wip_moves AS (
    -- +1 on the day a WIP stretch starts, -1 on the day it ends (a day is [midnight, midnight)).
    SELECT day, sum(step) AS step
    FROM (SELECT (wip.start_at AT TIME ZONE 'UTC')::date, 1 FROM wip, reach AS r
          WHERE wip.start_at >= r.since AND wip.start_at < r.until
          UNION ALL
          SELECT (wip.end_at AT TIME ZONE 'UTC')::date, -1 FROM wip, reach AS r
          WHERE wip.end_at >= r.since AND wip.end_at < r.until) AS change(day, step)
    GROUP BY day
), per_day AS (
    SELECT d.day, d.span, coalesce(c.created, 0) AS created,
           coalesce(rs.resolved, 0) AS resolved, rs.p50, rs.p90, rs.average,
           (ws.wip + sum(coalesce(wm.step, 0)) OVER (ORDER BY d.day))::bigint AS wip_end_of_day
    FROM days AS d
    CROSS JOIN wip_at_since AS ws
    LEFT JOIN created AS c ON c.day = d.day
    LEFT JOIN resolved_stats AS rs ON rs.day = d.day
    LEFT JOIN wip_moves AS wm ON wm.day = d.day
), per_span AS (
    SELECT pd.span, min(pd.day) AS first_day, max(pd.day) AS last_day,
           sum(pd.created)::bigint AS created,
           (array_agg(pd.wip_end_of_day ORDER BY pd.day DESC))[1] AS wip_end_of_day
    FROM per_day AS pd
    GROUP BY pd.span
), spans AS (
    SELECT ps.span AS kind, CASE ps.span WHEN 'period' THEN 1 ELSE 2 END AS ord,
           ps.first_day, ps.last_day, ps.created, coalesce(rs.resolved, 0) AS resolved,
           ps.wip_end_of_day, rs.p50, rs.p90, rs.average
    FROM per_span AS ps
    LEFT JOIN resolved_stats AS rs ON rs.span = ps.span AND rs.day IS NULL
), report AS (
    SELECT kind, ord, first_day, last_day, created, resolved, wip_end_of_day, p50, p90, average
    FROM spans
    UNION ALL
    SELECT 'change', 3, NULL, NULL, p.created - q.created, p.resolved - q.resolved,
           p.wip_end_of_day - q.wip_end_of_day, p.p50 - q.p50, p.p90 - q.p90,
           p.average - q.average
    FROM spans AS p JOIN spans AS q ON p.kind = 'period' AND q.kind = 'previous_period'
    UNION ALL
    SELECT 'day', 4, day, day, created, resolved, wip_end_of_day, p50, p90, average
    FROM per_day
    WHERE span = 'period'
)
SELECT kind, CASE WHEN kind = 'day' THEN first_day END AS day, first_day, last_day,
       created, resolved, wip_end_of_day,
       round(p50::numeric, 3) AS lead_time_p50_days,
       round(p90::numeric, 3) AS lead_time_p90_days,
       round(average::numeric, 3) AS lead_time_avg_days
FROM report
ORDER BY ord, first_day
