-- name: usage_buckets
-- params: stride, since, until, tool, key_id, by_key
-- Calls, errors and duration percentiles (continuous, as the report templates' are) of the
-- current tenant's audit rows in [since, until): per bucket (stride '1 hour' or '1 day', cut
-- at UTC midnight and hours) and series (the tool, or the key when by_key: the other column
-- is then NULL throughout), per series over the whole window, and over everything;
-- whole_window and all_series say which of the three a row is (a series may itself be NULL:
-- calls made without a key). Rows without a duration count as calls, not in percentiles.
WITH calls AS (
    SELECT date_bin($1::interval, at, timestamptz '2000-01-01 00:00:00+00') AS bucket,
           CASE WHEN $6::boolean THEN NULL ELSE tool END AS tool,
           CASE WHEN $6::boolean THEN key_id END AS key_id,
           outcome, duration_ms
    FROM audit_log
    WHERE at >= $2 AND at < $3
      AND ($4::text IS NULL OR audit_log.tool = $4)
      AND ($5::uuid IS NULL OR audit_log.key_id = $5)
)
SELECT bucket, tool, key_id,
       grouping(bucket) = 1 AS whole_window,
       grouping(tool, key_id) = 3 AS all_series,
       count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'error') AS errors,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms)
           AS percentiles
FROM calls
GROUP BY GROUPING SETS ((bucket, tool, key_id), (tool, key_id), ())
ORDER BY bucket NULLS FIRST

-- name: usage_key_names
-- params: key_ids
-- The names of the current tenant's keys among key_ids (revoked ones too: their calls stay).
SELECT key_id, name FROM api_keys WHERE key_id = ANY($1::uuid[])
