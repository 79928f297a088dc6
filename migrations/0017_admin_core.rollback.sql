-- Undo 0017_admin_core: the console's sessions go, and the runtime role loses key management
-- and audit reads again.
DROP TABLE console_sessions;
REVOKE SELECT ON audit_log FROM spiral_app;
REVOKE INSERT, UPDATE (revoked_at) ON api_keys FROM spiral_app;
