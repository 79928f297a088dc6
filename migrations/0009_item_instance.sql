-- A source's items are the items of one instance, not of one kind: two Jira sites number their
-- issues alike (10000, 10001, ...), so keyed on (tenant, kind, id) the second site's sync took
-- the first site's items over, and each later sync of either moved them back. Items now carry
-- their instance, and a source's id is unique within it. Removing an instance leaves its items
-- in the store, held by no instance (as its projects are).
-- depends: 0008_explorer_link_source

ALTER TABLE work_items ADD COLUMN source_instance_id uuid,
    ADD FOREIGN KEY (tenant_id, source_instance_id) REFERENCES source_instances
        ON DELETE SET NULL (source_instance_id);

-- Every stored source item so far came through its project's instance. The owner is bound by
-- the tenant policies too: lifted for this statement only.
ALTER TABLE work_items NO FORCE ROW LEVEL SECURITY;
ALTER TABLE projects NO FORCE ROW LEVEL SECURITY;
UPDATE work_items w SET source_instance_id = p.source_instance_id
FROM projects p
WHERE p.tenant_id = w.tenant_id AND p.project_key = w.project_key
  AND w.source_id IS NOT NULL AND p.source_instance_id IS NOT NULL;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
ALTER TABLE work_items FORCE ROW LEVEL SECURITY;

-- Not partial: removing an instance sets its items' instance to null through the foreign key,
-- which finds them by (tenant_id, source_instance_id) with this index (local items, whose
-- instance and source id are null, never conflict: nulls are distinct).
CREATE UNIQUE INDEX work_items_instance_source_id
    ON work_items (tenant_id, source_instance_id, source_id);
DROP INDEX work_items_source_id;
