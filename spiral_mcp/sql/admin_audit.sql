-- name: audit_plan_per_call!
-- params:
-- The page and usage statements skip each filter left NULL ("$n IS NULL OR ..."). A plan made
-- for every value at once (the generic plan PostgreSQL settles on after five calls of a
-- prepared statement) cannot use the index a given filter needs; this transaction plans each
-- call for its own values instead. Measured on 100k rows: one tool's usage over 12 days took
-- 38 ms on the plan for every value (a scan of the window), 0.45 ms planned for its own.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true)

-- name: audit_page
-- params: key_id, tool, outcome, since, until, before_at, before_id, page_size, max_argument_bytes
-- One page of the current tenant's audit log, newest first in (at, id) order: rows strictly
-- before (before_at, before_id) when a cursor gave them, each other filter skipped when NULL.
-- since is inclusive, until exclusive. arguments were redacted when the row was written; past
-- max_argument_bytes (as JSON text) they are shown by their size alone: a call may carry up to
-- MAX_BODY_BYTES, and a page of such rows would be hundreds of megabytes.
SELECT id, at, key_id, actor, tool, outcome, error_code, duration_ms, request_id,
       CASE WHEN octet_length(arguments::text) <= $9 THEN arguments
            ELSE jsonb_build_object('[too large to show]',
                                    octet_length(arguments::text) || ' bytes')
       END AS arguments
FROM audit_log
WHERE ($1::uuid IS NULL OR key_id = $1)
  AND ($2::text IS NULL OR tool = $2)
  AND ($3::text IS NULL OR outcome = $3)
  AND ($4::timestamptz IS NULL OR at >= $4)
  AND ($5::timestamptz IS NULL OR at < $5)
  AND ($6::timestamptz IS NULL OR (at, id) < ($6, $7::bigint))
ORDER BY at DESC, id DESC
LIMIT $8
