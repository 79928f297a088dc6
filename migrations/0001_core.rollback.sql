-- Undo 0001_core: drop everything it created, dependants first.
REVOKE SELECT ON _yoyo_migration FROM spiral_app;
DROP TABLE idempotency_keys;
DROP TABLE audit_log;
DROP TABLE work_item_links;
DROP TABLE comments;
DROP TABLE work_item_transitions;
DROP TABLE work_items;
DROP TABLE workflow_transitions;
DROP TABLE workflow_statuses;
DROP TRIGGER projects_default_workflow ON projects;
DROP TABLE projects;
DROP FUNCTION add_default_workflow();
DROP TABLE source_instances;
DROP TABLE api_keys;
DROP TABLE tenants;
REVOKE USAGE ON SCHEMA public FROM spiral_app;
