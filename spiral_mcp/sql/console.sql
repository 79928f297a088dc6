-- name: create_console_session!
-- params: tenant_id, session_hash, csrf_token, key_id, ttl_seconds
-- A console sign-in of the key, lasting ttl_seconds at most; only the cookie's hash is stored.
INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, key_id, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))

-- name: create_user_console_session!
-- params: tenant_id, session_hash, csrf_token, principal_id, oauth_issuer, oauth_subject, oauth_claims, acts_as, scopes, ttl_seconds
-- A console sign-in of an OAuth user (0021_console_oauth), lasting ttl_seconds at most (no
-- later than the token's exp); its issuer and claims are what the lookup asks oauth_tenant()
-- about on every request.
INSERT INTO console_sessions (tenant_id, session_hash, csrf_token, principal_id, oauth_issuer,
                              oauth_subject, oauth_claims, acts_as, scopes, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))

-- name: find_console_session^
-- params: session_hash, idle_seconds
-- The live session with this hash and who it acts as: none once the session has expired or
-- been idle for idle_seconds, or its tenant is suspended (0018_operators); for a key's session,
-- none once the key is revoked, expired or has lost the admin scope (so revoking a key ends its
-- sessions at once); for an OAuth user's, none once its issuer's binding no longer names this
-- tenant for the token's claims (0021_console_oauth), as MCP would refuse its token.
SELECT s.tenant_id, s.session_hash, s.csrf_token, s.key_id, s.created_at, s.last_seen_at,
       s.expires_at, s.principal_id, coalesce(k.name, 'oauth:' || s.oauth_subject) AS key_name,
       coalesce(k.scopes, s.scopes) AS scopes, coalesce(k.acts_as, s.acts_as) AS acts_as
FROM console_sessions s
JOIN tenants t ON t.tenant_id = s.tenant_id AND t.suspended_at IS NULL
LEFT JOIN api_keys k ON k.tenant_id = s.tenant_id AND k.key_id = s.key_id
WHERE s.session_hash = $1
  AND s.expires_at > now()
  AND s.last_seen_at > now() - make_interval(secs => $2)
  AND CASE WHEN s.key_id IS NOT NULL THEN
          k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
          AND 'admin' = ANY (k.scopes)
      ELSE
          'admin' = ANY (s.scopes)
          AND (SELECT count(*) = 1 AND bool_and(b.tenant_id = s.tenant_id AND NOT b.suspended)
               FROM oauth_tenant(s.oauth_issuer, s.oauth_claims) AS b)
      END

-- name: touch_console_session!
-- params: session_hash, every_seconds
-- The session was used: its idle time starts again (written at most once per every_seconds).
UPDATE console_sessions SET last_seen_at = now()
WHERE session_hash = $1 AND last_seen_at < now() - make_interval(secs => $2)

-- name: end_console_session!
-- params: session_hash
-- Sign-out.
DELETE FROM console_sessions WHERE session_hash = $1

-- name: reap_console_sessions!
-- params: idle_seconds
-- The tenant's sessions that can no longer be used: expired, or idle too long.
DELETE FROM console_sessions
WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)

-- name: trim_console_sessions!
-- params: owner_id, keep
-- The sessions of one key (key_id) or one OAuth user (principal_id) but their newest keep:
-- signing in again and again ends the oldest. (Key ids are random, principal ids derived from
-- issuer, subject and tenant: the two never meet.)
DELETE FROM console_sessions
WHERE (key_id = $1 OR principal_id = $1)
  AND session_hash NOT IN (SELECT session_hash FROM console_sessions
                           WHERE key_id = $1 OR principal_id = $1
                           ORDER BY created_at DESC, last_seen_at DESC LIMIT $2)
