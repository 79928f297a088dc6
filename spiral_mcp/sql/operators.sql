-- name: create_operator!
-- params: operator_id, name, secret_hash
-- Register an operator; runs as the owner role, like everything of this file.
INSERT INTO operators (operator_id, name, secret_hash) VALUES ($1, $2, $3)

-- name: list_operators
-- params:
-- Every operator, revoked ones too; never the hashes.
SELECT operator_id, name, created_at, revoked_at, last_used_at
FROM operators
ORDER BY created_at, operator_id

-- name: revoke_operator$
-- params: operator_id
-- Revoke a live operator; its id, or null when there is no such live operator.
UPDATE operators SET revoked_at = now()
WHERE operator_id = $1 AND revoked_at IS NULL
RETURNING operator_id

-- name: get_operator^
-- params: operator_id
-- The operator with this id; the caller compares the hash.
SELECT operator_id, name, secret_hash, revoked_at
FROM operators
WHERE operator_id = $1

-- name: touch_operator!
-- params: operator_id
UPDATE operators SET last_used_at = now() WHERE operator_id = $1

-- name: create_operator_session!
-- params: session_hash, operator_id, csrf_token, expires_at
INSERT INTO operator_sessions (session_hash, operator_id, csrf_token, expires_at)
VALUES ($1, $2, $3, $4)

-- name: find_operator_session^
-- params: session_hash, idle_seconds
-- A live session of a live operator, seen within idle_seconds; marks it seen now.
UPDATE operator_sessions s SET last_seen_at = now()
FROM operators o
WHERE s.session_hash = $1 AND o.operator_id = s.operator_id AND o.revoked_at IS NULL
  AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => $2)
RETURNING s.operator_id, o.name, s.session_hash, s.csrf_token, s.created_at, s.last_seen_at,
          s.expires_at

-- name: end_operator_session^
-- params: session_hash
-- Sign-out; the session's operator, or null when there was no such session.
DELETE FROM operator_sessions s USING operators o
WHERE s.session_hash = $1 AND o.operator_id = s.operator_id
RETURNING o.operator_id, o.name

-- name: end_operator_sessions!
-- params: operator_id
-- Every session of an operator (revoked: its console sessions end at once).
DELETE FROM operator_sessions WHERE operator_id = $1

-- name: insert_operator_audit!
-- params: operator_id, actor, action, tenant_id, arguments, outcome, detail
INSERT INTO operator_audit (operator_id, actor, action, target_tenant_id, arguments, outcome,
                            detail)
VALUES ($1, $2, $3, $4, $5, $6, $7)

-- name: list_operator_audit
-- params: tenant_id, limit
-- The latest operator actions, newest first; of one tenant when tenant_id is not null.
SELECT id, at, operator_id, actor, action, target_tenant_id AS tenant_id, arguments, outcome,
       detail
FROM operator_audit
WHERE $1::uuid IS NULL OR target_tenant_id = $1
ORDER BY at DESC, id DESC
LIMIT $2

-- name: get_tenant^
-- params: tenant_id
-- One tenant; the owner role sees every one.
SELECT tenant_id, name, created_at, suspended_at FROM tenants WHERE tenant_id = $1

-- name: lock_tenant^
-- params: tenant_id
-- One tenant, locked until the transaction ends (suspend, resume and delete queue on it).
SELECT tenant_id, name, created_at, suspended_at FROM tenants WHERE tenant_id = $1 FOR UPDATE

-- name: set_tenant_suspended^
-- params: tenant_id, suspended
-- Suspend (keeping the first suspension's time) or resume a tenant; its row after.
UPDATE tenants
SET suspended_at = CASE WHEN $2::boolean THEN coalesce(suspended_at, now()) END
WHERE tenant_id = $1
RETURNING tenant_id, name, created_at, suspended_at

-- name: tenant_figures^
-- params: tenant_id
-- Live keys, source instances and calls of the last 24 hours of one tenant; the transaction's
-- tenant must be set to it (source_instances and audit_log are under its policy; api_keys shows
-- the owner every tenant's, hence the tenant_id in each condition).
SELECT (SELECT count(*) FROM api_keys k
         WHERE k.tenant_id = $1 AND k.revoked_at IS NULL) AS keys,
       (SELECT count(*) FROM source_instances s WHERE s.tenant_id = $1) AS instances,
       (SELECT count(*) FROM audit_log a
         WHERE a.tenant_id = $1 AND a.at > now() - interval '24 hours') AS calls_24h

-- name: delete_tenant_rows$
-- params: tenant_id
-- Every row of the tenant, the tenant included (0018_operators); rows deleted per table.
SELECT delete_tenant_rows($1)

-- name: tenant_usage
-- params: since, until
-- Calls, errors, p50 and p95 duration per tenant over [since, until) (0018_operators).
SELECT tenant_id, name, calls, errors, p50_ms, p95_ms FROM tenant_usage($1, $2)
