-- Undo 0020_audit_indexes: the audit log keeps its one index by time, as 0001 made it.
CREATE INDEX audit_log_at ON audit_log (tenant_id, at DESC);
DROP INDEX audit_log_errors_at;
DROP INDEX audit_log_tool_at;
DROP INDEX audit_log_key_at;
DROP INDEX audit_log_at_id;
