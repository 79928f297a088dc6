-- name: sql_lead_time_metrics
-- title: Lead time, cycle time and throughput
-- row_cap: 60
-- chart: weekly_delivery
-- description: Lead time, cycle time (p50/p75/p90/p95/avg days) and throughput of the items
--   resolved (done; cancelled excluded) in the last `days` UTC days, of all, a project and/or a
--   label: a row for the period and one per ISO week. Definitions: resource spiral://reports.
-- definitions: Delivery speed over the last `days` days (UTC calendar days, today included),
--   for the whole workspace, one project and/or one label (teams are often labels).
--
--   Counted items: status category done with resolved_at in the period, matching the filters.
--   Cancelled items are NOT counted.
--   - lead time: resolved_at - created_at, in days (of 24 hours, with fractions).
--   - cycle time: from the item's first transition into a started status, i.e. one of category
--   in_progress, blocked or in_review (the categories work in progress counts), at or before
--   resolved_at, to resolved_at, in days; null for items never recorded as started, which are
--   left out of the cycle figures (cycle_time_items counts the rest). An item that went
--   To Do -> Blocked -> In Review -> Done started when it was blocked.
--
--   Percentiles p50, p75, p90, p95 are percentile_cont: over the n sorted times, percentile p
--   lies at position (n - 1) * p, interpolated linearly between the two values around it (so it
--   need not be any item's own; one item gives its own). They, the averages (the mean) and the
--   period's throughput_per_week are rounded to 0.001, half away from zero.
--
--   Rows, told apart by `kind`:
--   - "period": the whole period; throughput_per_week = resolved * 7 / days (an average).
--   - "week": one row per ISO week (Monday to Sunday) touching the period, oldest first;
--   first_day and last_day clip it to the period (the first and last weeks may be partial);
--   throughput_per_week = resolved in that (possibly partial) week, not scaled.
--
--   Columns: kind, week_start, first_day, last_day, resolved, throughput_per_week,
--   lead_time_p50_days, lead_time_p75_days, lead_time_p90_days, lead_time_p95_days,
--   lead_time_avg_days, cycle_time_items, cycle_time_p50_days, cycle_time_p75_days,
--   cycle_time_p90_days, cycle_time_p95_days, cycle_time_avg_days.
--   Spans with nothing resolved give 0 counts and null times.
-- param project_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$"}
-- param label: {"type": "string", "minLength": 1, "maxLength": 100,
--   "description": "e.g. a team label"}
-- param days: {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}
WITH period AS (
    SELECT today - ($3::int - 1) AS first_day, today AS last_day, $3::int AS n
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) AS t
), spans AS (
    SELECT 'period' AS kind, 1 AS ord, NULL::date AS week_start, p.first_day, p.last_day
    FROM period AS p
    UNION ALL
    SELECT 'week', 2, w::date, greatest(w::date, p.first_day), least(w::date + 6, p.last_day)
    FROM period AS p,
         generate_series(date_trunc('week', p.first_day::timestamp),
                         date_trunc('week', p.last_day::timestamp), interval '1 week') AS w
), done AS (
    SELECT date_trunc('week', w.resolved_at AT TIME ZONE 'UTC')::date AS week_start,
           extract(epoch FROM w.resolved_at - w.created_at)::float8 / 86400 AS lead_days,
           extract(epoch FROM w.resolved_at - started.at)::float8 / 86400 AS cycle_days
    FROM work_items AS w
    CROSS JOIN period AS p
    LEFT JOIN LATERAL (
        SELECT min(t.transitioned_at) AS at
        FROM work_item_transitions AS t
        WHERE t.work_item_id = w.id AND t.to_category IN ('in_progress', 'blocked', 'in_review')
          AND t.transitioned_at <= w.resolved_at
    ) AS started ON true
    WHERE w.status_category = 'done'
      AND w.resolved_at >= p.first_day::timestamp AT TIME ZONE 'UTC'
      AND w.resolved_at < (p.last_day + 1)::timestamp AT TIME ZONE 'UTC'
      AND ($1::text IS NULL OR w.project_key = $1::text)
      AND ($2::text IS NULL OR w.labels @> ARRAY[$2::text])
), stats AS (
    -- One pass, two groupings: per week, and the whole period (week_start null there).
    -- Aggregates skip nulls: the cycle figures cover only the items that were in progress.
    SELECT CASE WHEN GROUPING(week_start) = 0 THEN week_start END AS week_start,
           count(*) AS resolved,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_days) AS lead_p50,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY lead_days) AS lead_p75,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY lead_days) AS lead_p90,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lead_days) AS lead_p95,
           avg(lead_days) AS lead_avg,
           count(cycle_days) AS cycle_time_items,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p50,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p75,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p90,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY cycle_days) AS cycle_p95,
           avg(cycle_days) AS cycle_avg
    FROM done
    GROUP BY GROUPING SETS ((week_start), ())
)
SELECT s.kind, s.week_start, s.first_day, s.last_day, coalesce(d.resolved, 0) AS resolved,
       CASE WHEN s.kind = 'period' THEN round(coalesce(d.resolved, 0) * 7.0 / p.n, 3)
            ELSE coalesce(d.resolved, 0) END AS throughput_per_week,
       round(d.lead_p50::numeric, 3) AS lead_time_p50_days,
       round(d.lead_p75::numeric, 3) AS lead_time_p75_days,
       round(d.lead_p90::numeric, 3) AS lead_time_p90_days,
       round(d.lead_p95::numeric, 3) AS lead_time_p95_days,
       round(d.lead_avg::numeric, 3) AS lead_time_avg_days,
       coalesce(d.cycle_time_items, 0) AS cycle_time_items,
       round(d.cycle_p50::numeric, 3) AS cycle_time_p50_days,
       round(d.cycle_p75::numeric, 3) AS cycle_time_p75_days,
       round(d.cycle_p90::numeric, 3) AS cycle_time_p90_days,
       round(d.cycle_p95::numeric, 3) AS cycle_time_p95_days,
       round(d.cycle_avg::numeric, 3) AS cycle_time_avg_days
FROM spans AS s
CROSS JOIN period AS p
-- The period row (week_start null) meets the whole-period group (week_start null too).
LEFT JOIN stats AS d ON d.week_start IS NOT DISTINCT FROM s.week_start
ORDER BY s.ord, s.week_start
