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

-- name: source_try_xact_lock$
-- params: lock_key
-- The instance's sync lock for the rest of this transaction, or false at once while a sync holds
-- it (session and transaction advisory locks of one key exclude each other): a removal never
-- runs under a sync, and no sync starts until the removal commits.
SELECT pg_try_advisory_xact_lock($1)
