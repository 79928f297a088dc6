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

-- name: api_keys_page
-- params: state, before_at, before_id, page_size
-- A page of the keys of the tenant set by the transaction, newest first, after the keyset
-- position (before_at, before_id) when given; state is live, revoked, expired or all.
SELECT key_id, tenant_id, name, scopes, acts_as, created_at, expires_at, revoked_at, last_used_at
FROM api_keys
WHERE CASE $1::text
        WHEN 'live' THEN revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        WHEN 'revoked' THEN revoked_at IS NOT NULL
        WHEN 'expired' THEN revoked_at IS NULL AND expires_at <= now()
        ELSE true
      END
  AND ($2::timestamptz IS NULL OR (created_at, key_id) < ($2, $3::uuid))
ORDER BY created_at DESC, key_id DESC
LIMIT $4

-- name: lock_tenant_keys!
-- params: tenant_id
-- Serialize key creations and revocations of one tenant to the end of the transaction, so
-- that the live-key cap and the last admin key are counted exactly. (The two-key form, in a
-- lock space of its own, apart from first starts' and the sources' locks.)
SELECT pg_advisory_xact_lock(hashtext('spiral-mcp-keys'), hashtext($1::uuid::text))

-- name: another_admin_key_lasts$
-- params: key_id
-- Whether another key of the tenant set by the transaction still authenticates with the admin
-- scope and lasts at least as long as this one (no expiry, or a later one): revoking this one
-- then never brings closer the day the tenant has no admin key.
SELECT EXISTS (
    SELECT 1 FROM api_keys this JOIN api_keys other ON other.key_id <> this.key_id
    WHERE this.key_id = $1
      AND other.revoked_at IS NULL AND (other.expires_at IS NULL OR other.expires_at > now())
      AND 'admin' = ANY (other.scopes)
      AND (other.expires_at IS NULL
           OR (this.expires_at IS NOT NULL AND other.expires_at >= this.expires_at)))
