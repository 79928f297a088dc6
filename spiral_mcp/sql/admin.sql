-- name: create_tenant$
-- params: name
-- Register a tenant; runs as the owner role.
INSERT INTO tenants (name) VALUES ($1) RETURNING tenant_id

-- name: list_tenants
-- params:
-- Every tenant with how many live keys it has; the owner role sees all of them.
SELECT t.tenant_id, t.name, t.created_at, t.suspended_at,
       (SELECT count(*) FROM api_keys k
         WHERE k.tenant_id = t.tenant_id AND k.revoked_at IS NULL) AS live_keys
FROM tenants t
ORDER BY t.created_at, t.tenant_id

-- name: tenant_exists$
-- params: tenant_id
SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)

-- name: create_api_key!
-- params: tenant_id, key_id, name, key_hash, scopes, acts_as, expires_at
INSERT INTO api_keys (tenant_id, key_id, name, key_hash, scopes, acts_as, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)

-- name: list_api_keys
-- params: tenant_id
-- Keys of one tenant, or of all when tenant_id is null; never the hashes.
SELECT key_id, tenant_id, name, scopes, acts_as, created_at, expires_at, revoked_at, last_used_at
FROM api_keys
WHERE $1::uuid IS NULL OR tenant_id = $1
ORDER BY created_at, key_id

-- name: revoke_api_key$
-- params: key_id
-- Revoke a live key; returns its id, or null when there is no such live key.
UPDATE api_keys SET revoked_at = now()
WHERE key_id = $1 AND revoked_at IS NULL
RETURNING key_id

-- name: lock_first_start!
-- params:
-- Serialize first starts to the end of the transaction: servers starting together on an empty
-- database create one tenant between them. (The two-key form: a lock space of its own, apart
-- from the sources' one-key locks.)
SELECT pg_advisory_xact_lock(hashtext('spiral-mcp'), 1)

-- name: has_tenants$
-- params:
-- Whether any tenant exists; the owner role sees all of them.
SELECT EXISTS (SELECT 1 FROM tenants)
