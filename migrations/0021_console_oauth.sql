-- The web console's OAuth sign-in (issue 21): a console session may belong to a user of an
-- OAuth issuer instead of an API key.
--
-- A user's session has no key_id; it keeps the user's principal id (the one MCP gives the same
-- user in this tenant, oauth/identity.py), the name writes act for, the product scopes its
-- token carried, and the token's issuer and claims: the lookup asks oauth_tenant() about them
-- on every request, as MCP asks about a live token, so a session ends at once when the
-- operator removes the binding it came through or binds its claim elsewhere; it ends too when
-- the tenant is suspended (the lookup's join on tenants) and, at the latest, when the token
-- expired (expires_at is set no later than its exp). A key's session is as before: exactly one
-- of the two kinds of columns is set. Row-level security stays forced; the runtime role's
-- grants on the table (0017_admin_core) cover the new columns.
-- depends: 0020_audit_indexes

ALTER TABLE console_sessions ALTER COLUMN key_id DROP NOT NULL;
ALTER TABLE console_sessions
    ADD COLUMN principal_id  uuid,
    ADD COLUMN oauth_issuer  text CHECK (length(oauth_issuer) BETWEEN 1 AND 2000),
    ADD COLUMN oauth_subject text CHECK (length(oauth_subject) BETWEEN 1 AND 1000),
    ADD COLUMN oauth_claims  jsonb CHECK (jsonb_typeof(oauth_claims) = 'object'),
    ADD COLUMN acts_as       text,
    ADD COLUMN scopes        text[],
    ADD CONSTRAINT console_sessions_credential CHECK (
        (key_id IS NOT NULL AND principal_id IS NULL AND oauth_issuer IS NULL
         AND oauth_subject IS NULL AND oauth_claims IS NULL AND acts_as IS NULL
         AND scopes IS NULL)
        OR (key_id IS NULL AND principal_id IS NOT NULL AND oauth_issuer IS NOT NULL
            AND oauth_subject IS NOT NULL AND oauth_claims IS NOT NULL AND scopes IS NOT NULL));
