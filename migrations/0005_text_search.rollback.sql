-- Undo 0005_text_search: back to the per-column trigram GIN indexes of 0002_reports.
DROP INDEX work_items_text_trgm;
CREATE INDEX work_items_title_trgm ON work_items USING gin (title gin_trgm_ops);
CREATE INDEX work_items_description_trgm ON work_items USING gin (description gin_trgm_ops);
DROP EXTENSION IF EXISTS btree_gist;
