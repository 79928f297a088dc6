-- name: idempotency_claim$
-- params: tenant_id, tool, key, request_hash, expires_at, lease_seconds
-- Claim a key for a call about to run; returns the claim's created_at, which names it. A live
-- record is left alone (nothing returned); a completed one past its expiry, or one whose call was
-- abandoned in progress longer than the lease, is taken over. A call in progress is never
-- overtaken by the time to live, which may be shorter than the lease.
INSERT INTO idempotency_keys AS k (tenant_id, tool, key, request_hash, state, expires_at)
VALUES ($1, $2, $3, $4, 'in_progress', $5)
ON CONFLICT (tenant_id, tool, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, state = 'in_progress', response = NULL,
        created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE (k.state = 'completed' AND k.expires_at < now())
       OR (k.state = 'in_progress' AND k.created_at < now() - make_interval(secs => $6))
RETURNING k.created_at

-- name: idempotency_get^
-- params: tool, key
-- The record of an earlier call with this key.
SELECT request_hash, state, response FROM idempotency_keys WHERE tool = $1 AND key = $2

-- name: idempotency_complete$
-- params: tool, key, claimed_at, response
-- Store the result, in the same transaction as the write it belongs to; true, or nothing when the
-- claim is no longer this call's (its lease ran out and another call took the key over). The key
-- is remembered for its time to live (expires_at - created_at at the claim) from now on.
UPDATE idempotency_keys
SET state = 'completed', response = $4, expires_at = now() + (expires_at - created_at)
WHERE tool = $1 AND key = $2 AND state = 'in_progress' AND created_at = $3
RETURNING true

-- name: idempotency_release!
-- params: tool, key, claimed_at
-- The call failed and changed nothing: free the key so a retry runs again (unless another call
-- has taken it over since).
DELETE FROM idempotency_keys
WHERE tool = $1 AND key = $2 AND state = 'in_progress' AND created_at = $3

-- name: idempotency_reap$
-- params: lease_seconds
-- Forget expired keys of the tenant in context; returns how many. A call in progress keeps its
-- key until its lease has run out too.
WITH gone AS (
    DELETE FROM idempotency_keys
    WHERE expires_at < now()
      AND (state = 'completed' OR created_at < now() - make_interval(secs => $1))
    RETURNING 1
)
SELECT count(*) FROM gone
