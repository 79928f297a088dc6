-- name: idempotency_claim$
-- params: tenant_id, tool, key, request_hash, expires_at, lease_seconds
-- Claim a key for a call about to run. A live record is left alone (nothing returned); an expired
-- one, or one whose call was abandoned in progress longer than the lease, is taken over.
INSERT INTO idempotency_keys AS k (tenant_id, tool, key, request_hash, state, expires_at)
VALUES ($1, $2, $3, $4, 'in_progress', $5)
ON CONFLICT (tenant_id, tool, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, state = 'in_progress', response = NULL,
        created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE k.expires_at < now()
       OR (k.state = 'in_progress' AND k.created_at < now() - make_interval(secs => $6))
RETURNING true

-- name: idempotency_get^
-- params: tool, key
-- The record of an earlier call with this key.
SELECT request_hash, state, response FROM idempotency_keys WHERE tool = $1 AND key = $2

-- name: idempotency_complete!
-- params: tool, key, response
-- Store the result, in the same transaction as the write it belongs to.
UPDATE idempotency_keys SET state = 'completed', response = $3
WHERE tool = $1 AND key = $2 AND state = 'in_progress'

-- name: idempotency_release!
-- params: tool, key
-- The call failed and changed nothing: free the key so a retry runs again.
DELETE FROM idempotency_keys WHERE tool = $1 AND key = $2 AND state = 'in_progress'

-- name: idempotency_reap$
-- params:
-- Forget expired keys of the tenant in context; returns how many.
WITH gone AS (DELETE FROM idempotency_keys WHERE expires_at < now() RETURNING 1)
SELECT count(*) FROM gone
