-- name: get_issue^
-- params: issue_key
-- One work item by key; row-level security keeps it inside the tenant.
SELECT id, key, project_key, title AS summary, description, type, status, status_category,
       priority, assignee, reporter, labels, parent_key, created_at, updated_at, resolved_at,
       due_at, custom_fields, source, source_id, version
FROM work_items
WHERE key = $1

-- name: issue_comments
-- params: work_item_id, max_comments
-- The latest comments of an item, newest first.
SELECT id, author, body, created_at, updated_at
FROM comments
WHERE work_item_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2

-- name: issue_transitions
-- params: work_item_id
-- An item's status history, oldest first: transitioned_at orders one item's local moves as they
-- committed (move_issue); id only separates moves a source recorded at one instant.
SELECT from_status, to_status, from_category, to_category, actor, transitioned_at
FROM work_item_transitions
WHERE work_item_id = $1
ORDER BY transitioned_at, id

-- name: issue_links
-- params: work_item_id
-- Links from and to an item, named from its side as Jira does ("blocks" / "is blocked by").
SELECT l.link_type,
       CASE WHEN l.outward_id = $1 THEN 'outward' ELSE 'inward' END AS direction,
       w.key, w.title AS summary, w.status, w.status_category
FROM work_item_links l
JOIN work_items w ON w.id = CASE WHEN l.outward_id = $1 THEN l.inward_id ELSE l.outward_id END
WHERE l.outward_id = $1 OR l.inward_id = $1
ORDER BY l.created_at, l.id

-- name: issue_children
-- params: issue_key
-- Items whose parent is this one.
SELECT key, title AS summary, type, status, status_category, priority, assignee
FROM work_items
WHERE parent_key = $1
ORDER BY number
