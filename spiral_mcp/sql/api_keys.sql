-- name: get_api_key^
-- params: key_id
-- The key with this id, in the tenant set by the transaction, and whether that tenant is
-- suspended (0018_operators); the caller compares the hash.
SELECT k.key_id, k.tenant_id, k.name, k.key_hash, k.scopes, k.acts_as, k.expires_at,
       k.revoked_at, t.suspended_at
FROM api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id
WHERE k.key_id = $1

-- name: touch_api_keys!
-- params: key_ids, used_at
-- Record when keys were last used; called in batches, not once per request.
UPDATE api_keys SET last_used_at = $2
WHERE key_id = ANY($1::uuid[]) AND (last_used_at IS NULL OR last_used_at < $2)
