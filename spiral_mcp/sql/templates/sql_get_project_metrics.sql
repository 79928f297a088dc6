-- name: sql_get_project_metrics
-- title: Flow metrics of a project, per day and for the period
-- row_cap: 400
-- chart: daily_flow
-- description: A project's daily flow over the last `days` UTC days (today so far): created,
--   resolved (done; cancelled excluded), work in progress at each day's end, lead time
--   p50/p90/avg; a row per day, the period, the previous period (to this time of day) and the
--   change. Definitions: resource spiral://reports.
-- definitions: Daily flow of one project over the last `days` days (UTC calendar days, today
--   included, so far), the totals for that period, the previous period of the same length, and
--   the change.
--
--   Rows, told apart by `kind`, in this order:
--   - "period": the whole period, from midnight UTC of first_day until now (last_day = today,
--   ends_at = now).
--   - "previous_period": the same length, exactly `days` days earlier: from midnight UTC of
--   its first_day until `days` days before now (ends_at), so its last day, last_day, counts only
--   up to the current time of day. Like is compared with like: with days=1, today so far
--   against yesterday until this time, not against all of yesterday.
--   - "change": period minus previous_period, column by column (null when either side is null),
--   computed before rounding.
--   - "day": one row per day of the period, oldest first (`day` = first_day = last_day; today's
--   row runs until now).
--
--   Definitions, for a span:
--   - created: items created in the span.
--   - resolved (throughput): items with status category done and resolved_at in the span.
--   Cancelled items do NOT count as resolved and are left out of lead times.
--   - wip_end_of_day: items that, at the end of the span (the next midnight UTC for a past day;
--   now for today and the period; ends_at for the previous period), were in a status of
--   category in_progress, blocked or in_review, per their recorded transitions (a move at
--   exactly that instant belongs to what follows); an item with no recorded transition counts
--   with its current category since its creation.
--   - lead time: resolved_at - created_at in days of 24 hours, over the items resolved in the
--   span: lead_time_p50_days and lead_time_p90_days are percentile_cont, i.e. over the n sorted
--   lead times percentile p lies at position (n - 1) * p, interpolated linearly between the two
--   values around it (so it need not be any item's own; one item gives its own); and
--   lead_time_avg_days, the mean. All three are rounded to 0.001 (half away from zero).
--
--   Columns: kind, day, first_day, last_day, ends_at (null on change and day rows), created,
--   resolved, wip_end_of_day, lead_time_p50_days, lead_time_p90_days, lead_time_avg_days.
--   Empty spans give 0 for the counts and null for the lead times. An unknown project gives the
--   same rows, all zeros and nulls.
-- param project_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$",
--   "description": "e.g. WEB"}
-- param days: {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}
-- required: project_key
WITH bounds AS (
    -- The period: midnight UTC n - 1 days ago until now. The previous period: the same length
    -- exactly n days earlier, so it ends at this time of day too (24-hour days: UTC midnights
    -- are 24 hours apart, whatever the session's time zone).
    SELECT b.today, b.n, b.now AS until,
           (b.today - (b.n - 1))::timestamp AT TIME ZONE 'UTC' AS since,
           (b.today - (2 * b.n - 1))::timestamp AT TIME ZONE 'UTC' AS previous_since,
           b.now - b.n * interval '24 hours' AS previous_until
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today, $2::int AS n, now() AS now) AS b
), days AS (
    SELECT b.today - g AS day FROM bounds AS b, generate_series(0, b.n - 1) AS g
), items AS (
    SELECT w.id, w.created_at, w.resolved_at, w.status_category
    FROM work_items AS w
    WHERE w.project_key = $1::text
), created AS (
    SELECT CASE WHEN i.created_at >= b.since THEN 'period' ELSE 'previous_period' END AS span,
           (i.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS created
    FROM items AS i, bounds AS b
    WHERE (i.created_at >= b.since AND i.created_at < b.until)
       OR (i.created_at >= b.previous_since AND i.created_at < b.previous_until)
    GROUP BY 1, 2
), resolved AS (
    SELECT CASE WHEN i.resolved_at >= b.since THEN 'period' ELSE 'previous_period' END AS span,
           (i.resolved_at AT TIME ZONE 'UTC')::date AS day,
           extract(epoch FROM i.resolved_at - i.created_at)::float8 / 86400 AS lead_days
    FROM items AS i, bounds AS b
    WHERE i.status_category = 'done'
      AND ((i.resolved_at >= b.since AND i.resolved_at < b.until)
           OR (i.resolved_at >= b.previous_since AND i.resolved_at < b.previous_until))
), resolved_stats AS (
    -- One pass, two groupings: per day, and per span (day is null in those rows).
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
), wip_at AS (
    -- WIP just before the period starts and at the previous period's end.
    SELECT count(*) FILTER (WHERE wip.start_at < b.since
                              AND (wip.end_at IS NULL OR wip.end_at >= b.since)) AS since,
           count(*) FILTER (WHERE wip.start_at < b.previous_until
                              AND (wip.end_at IS NULL OR wip.end_at >= b.previous_until))
               AS previous_until
    FROM wip, bounds AS b
), wip_moves AS (
    -- +1 on the day a WIP stretch starts, -1 on the day it ends (a day is [midnight, midnight)),
    -- for the period's stretches until now.
    SELECT day, sum(step) AS step
    FROM (SELECT (wip.start_at AT TIME ZONE 'UTC')::date, 1 FROM wip, bounds AS b
          WHERE wip.start_at >= b.since AND wip.start_at < b.until
          UNION ALL
          SELECT (wip.end_at AT TIME ZONE 'UTC')::date, -1 FROM wip, bounds AS b
          WHERE wip.end_at >= b.since AND wip.end_at < b.until) AS change(day, step)
    GROUP BY day
), per_day AS (
    SELECT d.day, coalesce(c.created, 0) AS created,
           coalesce(rs.resolved, 0) AS resolved, rs.p50, rs.p90, rs.average,
           (wa.since + sum(coalesce(wm.step, 0)) OVER (ORDER BY d.day))::bigint AS wip_end_of_day
    FROM days AS d
    CROSS JOIN wip_at AS wa
    LEFT JOIN created AS c ON c.span = 'period' AND c.day = d.day
    LEFT JOIN resolved_stats AS rs ON rs.span = 'period' AND rs.day = d.day
    LEFT JOIN wip_moves AS wm ON wm.day = d.day
), per_span AS (
    SELECT 'period' AS span, min(pd.day) AS first_day, max(pd.day) AS last_day,
           sum(pd.created)::bigint AS created,
           (array_agg(pd.wip_end_of_day ORDER BY pd.day DESC))[1] AS wip_end_of_day
    FROM per_day AS pd
    UNION ALL
    SELECT 'previous_period', b.today - (2 * b.n - 1), b.today - b.n,
           (SELECT coalesce(sum(c.created), 0) FROM created AS c
            WHERE c.span = 'previous_period')::bigint,
           wa.previous_until
    FROM bounds AS b CROSS JOIN wip_at AS wa
), spans AS (
    SELECT ps.span AS kind, CASE ps.span WHEN 'period' THEN 1 ELSE 2 END AS ord,
           ps.first_day, ps.last_day,
           CASE ps.span WHEN 'period' THEN b.until ELSE b.previous_until END AS ends_at,
           ps.created, coalesce(rs.resolved, 0) AS resolved,
           ps.wip_end_of_day, rs.p50, rs.p90, rs.average
    FROM per_span AS ps
    CROSS JOIN bounds AS b
    LEFT JOIN resolved_stats AS rs ON rs.span = ps.span AND rs.day IS NULL
), report AS (
    SELECT kind, ord, first_day, last_day, ends_at, created, resolved, wip_end_of_day, p50, p90,
           average
    FROM spans
    UNION ALL
    SELECT 'change', 3, NULL, NULL, NULL, p.created - q.created, p.resolved - q.resolved,
           p.wip_end_of_day - q.wip_end_of_day, p.p50 - q.p50, p.p90 - q.p90,
           p.average - q.average
    FROM spans AS p JOIN spans AS q ON p.kind = 'period' AND q.kind = 'previous_period'
    UNION ALL
    SELECT 'day', 4, day, day, NULL, created, resolved, wip_end_of_day, p50, p90, average
    FROM per_day
)
SELECT kind, CASE WHEN kind = 'day' THEN first_day END AS day, first_day, last_day, ends_at,
       created, resolved, wip_end_of_day,
       round(p50::numeric, 3) AS lead_time_p50_days,
       round(p90::numeric, 3) AS lead_time_p90_days,
       round(average::numeric, 3) AS lead_time_avg_days
FROM report
ORDER BY ord, first_day
