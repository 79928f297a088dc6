-- name: oauth_tenant
-- params: issuer, claims
-- The tenant a verified token acts in, through the owner's function (see 0015_oauth for what
-- its rows mean, and 0018_operators for suspended); the runtime role has no other way to read
-- the bindings.
SELECT tenant_id, claim, suspended FROM oauth_tenant($1, $2)

-- name: oauth_bind$
-- params: tenant_id, issuer, claim, claim_value
-- Bind an issuer (claim and claim_value null) or one value of its claim to a tenant; runs as
-- the owner role. The trigger oauth_binding_check refuses a binding that conflicts with another.
INSERT INTO oauth_bindings (tenant_id, issuer, claim, claim_value) VALUES ($1, $2, $3, $4)
RETURNING binding_id

-- name: oauth_unbind$
-- params: tenant_id, issuer, claim, claim_value
-- Remove that binding; its id, or null when there is none.
DELETE FROM oauth_bindings
WHERE tenant_id = $1 AND issuer = $2 AND claim IS NOT DISTINCT FROM $3
  AND claim_value IS NOT DISTINCT FROM $4
RETURNING binding_id

-- name: oauth_bindings
-- params: tenant_id
-- Bindings of one tenant, or of all when tenant_id is null; the owner role sees all of them.
SELECT tenant_id, issuer, claim, claim_value AS value, created_at
FROM oauth_bindings
WHERE $1::uuid IS NULL OR tenant_id = $1
ORDER BY issuer, claim NULLS FIRST, claim_value, tenant_id
