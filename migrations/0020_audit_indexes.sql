-- Indexes of the admin API's audit log pages and usage figures (issue 21).
--
-- GET /audit walks a tenant's rows newest first in (at, id) order (a keyset cursor), filtered
-- by key, tool or outcome; GET /usage aggregates a window of them. Measured on 100k rows of one
-- tenant (200k in all), runtime role, warm cache:
-- * (tenant_id, at, id) INCLUDE (tool, key_id, outcome, duration_ms) replaces audit_log_at:
--   the cursor's (at, id) comparison is one index condition, and usage reads the index alone
--   (an index-only scan; the rows themselves carry the arguments and are 5x wider);
-- * by key and by tool: a key's or a tool's first page without them was a scan of the
--   tenant's log (20-25 ms for 50 rows out of 100k), with them 0.2-0.3 ms;
-- * errors only: partial, small (errors are few); the page no longer reads past every ok row.
-- Every audit row pays for these once, in the writer's batches off the request path.
-- depends: 0017_admin_core

CREATE INDEX audit_log_at_id ON audit_log (tenant_id, at DESC, id DESC)
    INCLUDE (tool, key_id, outcome, duration_ms);
DROP INDEX audit_log_at;
CREATE INDEX audit_log_key_at ON audit_log (tenant_id, key_id, at DESC, id DESC);
CREATE INDEX audit_log_tool_at ON audit_log (tenant_id, tool, at DESC, id DESC);
CREATE INDEX audit_log_errors_at ON audit_log (tenant_id, at DESC, id DESC)
    WHERE outcome = 'error';
