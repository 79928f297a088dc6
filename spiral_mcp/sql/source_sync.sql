-- name: source_schedule
-- params:
-- Every tenant's source instances, as (tenant_id, instance_id) only: the background sync's list.
SELECT tenant_id, instance_id FROM source_schedule()

-- name: source_try_lock$
-- params: lock_key
-- Take the instance's sync lock for this session, or false at once when another session holds
-- it: one sync per instance at a time across every server process.
SELECT pg_try_advisory_lock($1)

-- name: source_unlock$
-- params: lock_key
SELECT pg_advisory_unlock($1)
