-- Undo 0006_sync_writes: the indexes of 0001 and 0002 back, the moves' uniqueness gone.
CREATE INDEX work_items_assignee_ci ON work_items (tenant_id, lower(assignee), status_category);
CREATE INDEX work_items_labels ON work_items USING gin (labels);
CREATE INDEX work_item_transitions_item
    ON work_item_transitions (tenant_id, work_item_id, transitioned_at);
DROP INDEX work_item_transitions_move;
DROP FUNCTION refresh_sync_statistics();
ALTER TABLE work_items ALTER COLUMN raw SET COMPRESSION default,
                       ALTER COLUMN description SET COMPRESSION default;
