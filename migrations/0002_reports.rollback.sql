-- Undo 0002_reports: the report indexes, then pg_trgm (nothing else here uses it).
DROP INDEX work_items_project_resolved;
DROP INDEX work_items_project_created;
DROP INDEX work_items_assignee_ci;
DROP INDEX work_items_description_trgm;
DROP INDEX work_items_title_trgm;
DROP EXTENSION IF EXISTS pg_trgm;
