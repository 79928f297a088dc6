-- name: get_api_key^
-- params: key_id
-- The key with this id, in the tenant set by the transaction; the caller compares the hash.
SELECT key_id, tenant_id, name, key_hash, scopes, acts_as, expires_at, revoked_at
FROM api_keys
WHERE key_id = $1

-- name: touch_api_keys!
-- params: key_ids, used_at
-- Record when keys were last used; called in batches, not once per request.
UPDATE api_keys SET last_used_at = $2
WHERE key_id = ANY($1::uuid[]) AND (last_used_at IS NULL OR last_used_at < $2)
