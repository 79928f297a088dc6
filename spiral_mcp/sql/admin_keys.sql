-- name: get_key_view^
-- params: key_id
-- One key of the tenant set by the transaction, as an admin sees it: never the hash.
SELECT key_id, tenant_id, name, scopes, acts_as, created_at, expires_at, revoked_at, last_used_at
FROM api_keys
WHERE key_id = $1

-- name: count_live_keys$
-- params:
-- How many keys of the tenant set by the transaction still authenticate.
SELECT count(*) FROM api_keys
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
