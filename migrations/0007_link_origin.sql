-- Where each link lives, so a sync can prune the links its source no longer reports.
--
-- work_item_links.source says it as work_items.source does: 'local' for a link the store holds
-- itself (a link in a local project, between a local and a mirrored item, or one a source cannot
-- hold, as GitHub holds none), or the kind of source that holds it. A sync or a write-through
-- stores a link its source reported with that source's kind, and a page writing an item deletes
-- the item's links held by its source that the source no longer reports; a local link is never
-- touched.
--
-- Existing rows: a link is the source's when both its ends are items of projects mirrored from
-- one instance and that instance's kind holds such links at its source (Jira every type, Asana
-- "blocks" as a dependency). Such a link either came from a sync or was written through to the
-- source first (jira_link_issues between two items of one instance asks the source before it
-- stores), so the source has it. Every other link stays local, as it could not be at a source.
-- depends: 0006_sync_writes

ALTER TABLE work_item_links ADD COLUMN source text NOT NULL DEFAULT 'local'
    CHECK (source IN ('local', 'jira', 'github', 'asana'));

-- The owner is bound by the tenant policies too: lifted on the four tables for this statement
-- only (as in 0006).
ALTER TABLE work_item_links NO FORCE ROW LEVEL SECURITY;
ALTER TABLE work_items NO FORCE ROW LEVEL SECURITY;
ALTER TABLE projects NO FORCE ROW LEVEL SECURITY;
ALTER TABLE source_instances NO FORCE ROW LEVEL SECURITY;
UPDATE work_item_links AS l SET source = s.kind
FROM work_items AS o, work_items AS i, projects AS po, projects AS pi, source_instances AS s
WHERE o.tenant_id = l.tenant_id AND o.id = l.outward_id
  AND i.tenant_id = l.tenant_id AND i.id = l.inward_id
  AND o.source_id IS NOT NULL AND i.source_id IS NOT NULL
  AND po.tenant_id = l.tenant_id AND po.project_key = o.project_key
  AND pi.tenant_id = l.tenant_id AND pi.project_key = i.project_key
  AND s.tenant_id = l.tenant_id AND s.instance_id = po.source_instance_id
  AND pi.source_instance_id = po.source_instance_id
  AND o.source = s.kind AND i.source = s.kind
  AND (s.kind = 'jira' OR (s.kind = 'asana' AND l.link_type = 'blocks'));
ALTER TABLE work_item_links FORCE ROW LEVEL SECURITY;
ALTER TABLE work_items FORCE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
ALTER TABLE source_instances FORCE ROW LEVEL SECURITY;
