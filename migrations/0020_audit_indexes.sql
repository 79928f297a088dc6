-- Indexes of the admin API's audit log pages and usage figures (issue 21).
--
-- GET /audit walks a tenant's rows newest first in (at, id) order (a keyset cursor), filtered
-- by key, tool or outcome; GET /usage aggregates a window of them. Measured with EXPLAIN
-- ANALYZE on 100k rows of one tenant (200k in all), as the runtime role, server-side times:
-- * by key and by tool: a key's or a tool's first page was a parallel scan of the log
--   (37-39 ms for 50 rows out of 100k), now 0.01-0.03 ms; one tool's or key's usage over 12
--   days 60-71 ms, now 0.03-0.23 ms; key + tool + outcome + window 30 ms, now 0.3 ms;
-- * errors only: partial, small (errors are few): the page no longer reads past every ok row;
-- * (tenant_id, at, id) INCLUDE (tool, key_id, outcome, duration_ms) replaces audit_log_at:
--   the cursor's (at, id) comparison is one index condition, and usage reads the index alone
--   (an index-only scan: 742 buffers instead of 1972 for 7 days, 60k rows; the rows carry the
--   arguments and are wide). Usage over a whole window stays bound by sorting its rows for the
--   percentiles (~80 ms for 60k rows on a quiet machine, before and after).
-- Every audit row pays for these once, in the writer's batches off the request path. A large
-- audit_log is locked against writes while the indexes are built (the writer keeps its rows
-- queued and retries meanwhile).
-- depends: 0019_sync_runs

CREATE INDEX audit_log_at_id ON audit_log (tenant_id, at DESC, id DESC)
    INCLUDE (tool, key_id, outcome, duration_ms);
DROP INDEX audit_log_at;
CREATE INDEX audit_log_key_at ON audit_log (tenant_id, key_id, at DESC, id DESC);
CREATE INDEX audit_log_tool_at ON audit_log (tenant_id, tool, at DESC, id DESC);
CREATE INDEX audit_log_errors_at ON audit_log (tenant_id, at DESC, id DESC)
    WHERE outcome = 'error';
