-- Undo 0009_item_instance: items are keyed on their kind again. Fails, and changes nothing, when
-- two instances of one kind hold items with the same source id (the store cannot tell them apart
-- any more).
CREATE UNIQUE INDEX work_items_source_id
    ON work_items (tenant_id, source, source_id) WHERE source_id IS NOT NULL;
DROP INDEX work_items_instance_source_id;
ALTER TABLE work_items DROP COLUMN source_instance_id;
