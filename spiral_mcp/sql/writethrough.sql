-- name: project_mirror^
-- params: project_key
-- The source instance a project mirrors, with its sealed credentials (they never leave the
-- process); no row for a local project.
SELECT s.instance_id, s.kind, s.base_url, s.config::text AS config, s.credentials,
       p.source_ref
FROM projects p
JOIN source_instances s ON s.instance_id = p.source_instance_id
WHERE p.project_key = $1

-- name: item_mirrors
-- params: issue_keys
-- For items of mirrored projects: their instance, sealed credentials, the source project and the
-- item's id at the source (null for an item the source does not know); items of local projects
-- are left out. With each, its parent's key and id at the same source, when it has one there.
SELECT w.key, w.source_id, s.instance_id, s.kind, s.base_url, s.config::text AS config,
       s.credentials, p.source_ref, up.key AS parent_key, up.source_id AS parent_source_id
FROM work_items w
JOIN projects p ON p.project_key = w.project_key
JOIN source_instances s ON s.instance_id = p.source_instance_id
LEFT JOIN LATERAL (SELECT key, source_id FROM work_items
                   WHERE key = w.parent_key AND source_instance_id = w.source_instance_id
                     AND source_id IS NOT NULL
                   LIMIT 1) up ON true
WHERE w.key = ANY($1::text[])

-- name: set_custom_fields!
-- params: issue_key, custom_fields
-- Custom fields are the store's own, never sent to a source: set on an item the source created.
UPDATE work_items SET custom_fields = $2 WHERE key = $1

-- name: comment_by_source_id^
-- params: issue_key, source_id
-- A comment the source stored, as the store keeps it.
SELECT c.id, c.author, c.body, c.created_at
FROM comments c
JOIN work_items w ON w.id = c.work_item_id
WHERE w.key = $1 AND c.source_id = $2
