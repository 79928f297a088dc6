-- name: sync_run_abandon!
-- params: instance_id, error
-- Runs of the instance still marked running: only a session holding the instance's sync lock
-- calls this, so none of them is alive (its process died, which let the lock go). Failed, as of
-- their last sign of life.
UPDATE sync_runs SET status = 'failed', error = $2, finished_at = updated_at
WHERE instance_id = $1 AND status = 'running'

-- name: sync_run_start$
-- params: tenant_id, instance_id, kind, trigger, task_id
-- A run begins, under the instance's sync lock; its id.
INSERT INTO sync_runs (tenant_id, instance_id, kind, trigger, task_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING run_id

-- name: sync_run_page!
-- params: run_id, pages, items, changed
-- The run's counts so far, in the transaction of the page that brings them.
UPDATE sync_runs SET pages = $2, items = $3, changed = $4, updated_at = now()
WHERE run_id = $1 AND status = 'running'

-- name: sync_run_finish!
-- params: run_id, status, error
-- The run ends: ok, failed (with its one-line error) or cancelled.
UPDATE sync_runs SET status = $2, error = $3, finished_at = now(), updated_at = now()
WHERE run_id = $1 AND status = 'running'

-- name: sync_runs_page
-- params: instance_id, status, before_started, before_run, row_limit, abandoned
-- The tenant's runs newest first (of one instance when instance_id is given, of one status when
-- status is), after a keyset position (before_started, before_run) when given. A run left by a
-- process that died (sync_run_states.abandoned) reads as failed with the ``abandoned`` error.
SELECT run_id, instance_id, kind, trigger, started_at, pages, items, changed, task_id,
       CASE WHEN abandoned THEN 'failed' ELSE status END AS status,
       CASE WHEN abandoned THEN updated_at ELSE finished_at END AS finished_at,
       CASE WHEN abandoned THEN $6::text ELSE error END AS error
FROM sync_run_states
WHERE ($1::uuid IS NULL OR instance_id = $1)
  AND ($2::text IS NULL OR (CASE WHEN abandoned THEN 'failed' ELSE status END) = $2)
  AND ($3::timestamptz IS NULL OR (started_at, run_id) < ($3, $4::uuid))
ORDER BY started_at DESC, run_id DESC
LIMIT $5

-- name: sync_runs_latest
-- params: abandoned
-- The newest run of each of the tenant's instances, read as sync_runs_page reads runs.
SELECT DISTINCT ON (instance_id)
       run_id, instance_id, kind, trigger, started_at, pages, items, changed, task_id,
       CASE WHEN abandoned THEN 'failed' ELSE status END AS status,
       CASE WHEN abandoned THEN updated_at ELSE finished_at END AS finished_at,
       CASE WHEN abandoned THEN $1::text ELSE error END AS error
FROM sync_run_states
ORDER BY instance_id, started_at DESC, run_id DESC
