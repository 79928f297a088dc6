-- Undo 0021_console_oauth: users' console sessions end (they cannot be kept without a key),
-- and every session is a key's again.
-- The owner is bound by the forced policy too: lifted for this one statement, so that every
-- tenant's users' sessions go.
ALTER TABLE console_sessions NO FORCE ROW LEVEL SECURITY;
DELETE FROM console_sessions WHERE key_id IS NULL;
ALTER TABLE console_sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE console_sessions
    DROP CONSTRAINT console_sessions_credential,
    DROP COLUMN principal_id,
    DROP COLUMN oauth_issuer,
    DROP COLUMN oauth_subject,
    DROP COLUMN oauth_claims,
    DROP COLUMN acts_as,
    DROP COLUMN scopes;
ALTER TABLE console_sessions ALTER COLUMN key_id SET NOT NULL;
