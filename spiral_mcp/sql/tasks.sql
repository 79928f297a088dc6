-- name: task_create^
-- params: tenant_id, task_id, key_id, tool, ttl_ms, poll_interval_ms, lease_seconds, max_per_key, credential
-- A new task, working, leased to the process creating it; the row as tasks/get reads it. Nothing
-- when the principal (an API key, or an OAuth user: key_id is its principal id) already keeps
-- max_per_key tasks that have not expired (each keeps its result in the database: a principal
-- must not pile them up). Creations racing each other may pass it by as many as the
-- principal's calls running at once, which its shares of slow work bound. ``credential`` says
-- what made it ('api_key' or 'oauth').
INSERT INTO tasks (tenant_id, task_id, key_id, tool, ttl_ms, poll_interval_ms, lease_until,
                   expires_at, credential)
SELECT $1, $2, $3, $4, $5::integer, $6, now() + make_interval(secs => $7),
       now() + make_interval(secs => $5::integer / 1000.0), $9
WHERE (SELECT count(*) FROM tasks WHERE key_id = $3 AND expires_at > now()) < $8
RETURNING task_id, status, status_message, progress, progress_total, input_requests, result,
          error, poll_interval_ms, created_at, updated_at, expires_at, false AS orphaned

-- name: task_get^
-- params: task_id, key_id
-- The key's task, unless it has expired; ``orphaned``: it is unfinished and no process has renewed
-- its lease in time (the one running it died).
SELECT task_id, status, status_message, progress, progress_total, input_requests, result, error,
       poll_interval_ms, created_at, updated_at, expires_at,
       status IN ('working', 'input_required') AND lease_until < now() AS orphaned
FROM tasks
WHERE task_id = $1 AND key_id = $2 AND expires_at > now()

-- name: task_fail_orphan^
-- params: task_id, key_id, error, message
-- An unfinished task whose lease has lapsed fails with ``error``; the row as tasks/get reads it.
-- Nothing when it is no longer such a task (it finished, or its process came back in time).
UPDATE tasks
SET status = 'failed', error = $3, status_message = $4, input_requests = '{}',
    updated_at = now(), expires_at = greatest(expires_at, now() + make_interval(secs => ttl_ms / 1000.0))
WHERE task_id = $1 AND key_id = $2 AND expires_at > now()
  AND status IN ('working', 'input_required') AND lease_until < now()
RETURNING task_id, status, status_message, progress, progress_total, input_requests, result,
          error, poll_interval_ms, created_at, updated_at, expires_at, false AS orphaned

-- name: task_renew$
-- params: task_id, lease_seconds
-- The running process's heartbeat: the lease and the expiry move on; what stops the task:
-- 'cancel' (a cancel was asked for), 'credential' (the API key that created it was revoked or
-- has expired: a task never goes on with a key's rights that a request could no longer use), or
-- 'suspended' (an operator suspended the tenant: nothing of it runs on, 0018_operators), or
-- 'go'. An OAuth user's task is the user's, not its token's: the token's exp does not stop it.
-- Nothing once the task has ended.
UPDATE tasks
SET lease_until = now() + make_interval(secs => $2),
    expires_at = greatest(expires_at, now() + make_interval(secs => ttl_ms / 1000.0))
WHERE task_id = $1 AND status IN ('working', 'input_required')
RETURNING CASE WHEN cancel_requested THEN 'cancel'
               WHEN EXISTS (SELECT 1 FROM tenants AS t
                            WHERE t.tenant_id = tasks.tenant_id AND t.suspended_at IS NOT NULL)
               THEN 'suspended'
               WHEN credential = 'api_key'
                    AND NOT EXISTS (SELECT 1 FROM api_keys AS k
                                    WHERE k.tenant_id = tasks.tenant_id AND k.key_id = tasks.key_id
                                      AND k.revoked_at IS NULL
                                      AND (k.expires_at IS NULL OR k.expires_at > now()))
               THEN 'credential' ELSE 'go' END

-- name: task_progress!
-- params: task_id, progress, progress_total, message
-- How far an unfinished task has come.
UPDATE tasks
SET progress = $2, progress_total = $3, status_message = coalesce($4, status_message),
    updated_at = now()
WHERE task_id = $1 AND status IN ('working', 'input_required')

-- name: task_finish$
-- params: task_id, status, result, error, message
-- An unfinished task ends (completed, failed or cancelled); true, or nothing when it had already
-- ended (a lapsed lease read as failed, say). Its result stays readable for its time to live.
UPDATE tasks
SET status = $2, result = $3, error = $4, status_message = coalesce($5, status_message),
    input_requests = '{}',
    input_responses = '{}', updated_at = now(),
    expires_at = greatest(expires_at, now() + make_interval(secs => ttl_ms / 1000.0))
WHERE task_id = $1 AND status IN ('working', 'input_required')
RETURNING true

-- name: task_ask$
-- params: task_id, input_key, request, message
-- The running call asks the client something: the task waits for input until every question is
-- answered; true, or nothing once the task has ended.
UPDATE tasks
SET input_requests = input_requests || jsonb_build_object($2::text, $3::jsonb),
    status = 'input_required', status_message = $4, updated_at = now()
WHERE task_id = $1 AND status IN ('working', 'input_required')
RETURNING true

-- name: task_answer$
-- params: task_id, key_id, responses
-- tasks/update: the answers to questions still open are kept for the running call and the
-- questions close (others are ignored); the task works again once none is open. Its status, or
-- nothing when the key has no such task.
UPDATE tasks AS t
SET input_responses = t.input_responses || (
        SELECT coalesce(jsonb_object_agg(r.key, r.value), '{}') FROM jsonb_each($3::jsonb) AS r
        WHERE t.input_requests ? r.key),
    input_requests = t.input_requests - ARRAY(SELECT jsonb_object_keys($3::jsonb)),
    status = CASE WHEN t.status = 'input_required'
                   AND t.input_requests - ARRAY(SELECT jsonb_object_keys($3::jsonb)) = '{}'
                  THEN 'working' ELSE t.status END,
    -- "waiting for the client ..." no longer holds once every question is answered.
    status_message = CASE WHEN t.status = 'input_required'
                           AND t.input_requests - ARRAY(SELECT jsonb_object_keys($3::jsonb)) = '{}'
                          THEN NULL ELSE t.status_message END,
    updated_at = CASE WHEN t.input_requests ?| ARRAY(SELECT jsonb_object_keys($3::jsonb))
                      THEN now() ELSE t.updated_at END
WHERE t.task_id = $1 AND t.key_id = $2 AND t.expires_at > now()
RETURNING t.status

-- name: task_answer_for$
-- params: task_id, input_key
-- The client's answer to one question of the running call, once tasks/update has brought it.
SELECT input_responses -> $2::text FROM tasks WHERE task_id = $1

-- name: task_cancel$
-- params: task_id, key_id, message
-- tasks/cancel: an unfinished task is marked for cancelling (its process stops it); one whose
-- process has died is cancelled here and now. Its status, or nothing when the key has no such
-- task.
UPDATE tasks
SET cancel_requested = status IN ('working', 'input_required'),
    status = CASE WHEN status IN ('working', 'input_required') AND lease_until < now()
                  THEN 'cancelled' ELSE status END,
    status_message = CASE WHEN status IN ('working', 'input_required') AND lease_until < now()
                          THEN $3 ELSE status_message END,
    updated_at = CASE WHEN status IN ('working', 'input_required') THEN now() ELSE updated_at END
WHERE task_id = $1 AND key_id = $2 AND expires_at > now()
RETURNING status

-- name: task_sweep$
-- params:
-- Delete every tenant's expired tasks (the owner's function, see 0014_tasks); how many.
SELECT task_sweep()
