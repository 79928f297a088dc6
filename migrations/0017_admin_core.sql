-- The admin API (/api/v1) and the web console (/admin) of a tenant admin: what the runtime role
-- needs to manage its tenant's keys and read its audit log, and the console's sessions.
--
-- Every grant below is bound by the tables' forced row-level security on app.tenant_id, as the
-- runtime role's other grants are: a tenant admin's request runs in its own tenant transaction
-- and can neither see nor write another tenant's keys, audit rows or sessions. The runtime role
-- stays what README's security model says: no superuser, no BYPASSRLS, owner of no tenant table,
-- no DDL. Creating keys was the CLI's alone (the owner role); now a tenant admin may create keys
-- in its own tenant (an admin key could always act on all of the tenant's data).
--
-- console_sessions: a signed-in console, bound to the admin key it was opened with. The cookie
-- value is never stored, only its SHA-256 (session_hash); csrf_token is what the console's unsafe
-- requests must echo. A session is used only while its key is live, unexpired and holds the
-- admin scope (checked on every request by a join, so revoking the key ends its sessions at
-- once), before expires_at (absolute) and while last_seen_at is recent (idle).
-- depends: 0016_replica_binding

GRANT INSERT, UPDATE (revoked_at) ON api_keys TO spiral_app;
GRANT SELECT ON audit_log TO spiral_app;

CREATE TABLE console_sessions (
    tenant_id    uuid NOT NULL,
    session_hash bytea NOT NULL CHECK (length(session_hash) = 32),
    csrf_token   text NOT NULL CHECK (length(csrf_token) BETWEEN 32 AND 128),
    key_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, session_hash),
    FOREIGN KEY (tenant_id, key_id) REFERENCES api_keys (tenant_id, key_id) ON DELETE CASCADE
);
CREATE INDEX console_sessions_key ON console_sessions (tenant_id, key_id);

ALTER TABLE console_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sessions
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE (last_seen_at), DELETE ON console_sessions TO spiral_app;
