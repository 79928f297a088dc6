-- name: create_issue_project^
-- params: project_key
-- The project a new item goes into, its issue types, its workflow's initial status, and where its
-- numbering stands (for a source whose items have no numbers).
SELECT p.project_key, p.issue_types, s.status AS initial_status, s.category AS initial_category,
       p.next_number
FROM projects p
LEFT JOIN workflow_statuses s ON s.project_key = p.project_key AND s.is_initial
WHERE p.project_key = $1

-- name: allocate_issue_number$
-- params: project_key
-- The next number of a project's keys, taken under the project's row lock (held until commit),
-- so concurrent creates queue here and never collide. greatest() skips numbers that items synced
-- from a source already use; a stale max() after the lock wait is harmless, as next_number is
-- re-read fresh and already past every number handed out meanwhile.
UPDATE projects p
SET next_number = greatest(
        p.next_number,
        (SELECT coalesce(max(w.number), 0) + 1 FROM work_items w WHERE w.project_key = p.project_key)
    ) + 1
WHERE p.project_key = $1
RETURNING p.next_number - 1

-- name: insert_issue^
-- params: tenant_id, key, project_key, number, summary, description, type, status, status_category, priority, assignee, reporter, labels, parent_key, due_at, custom_fields
-- A new local work item; returns it as jira_get_issue shows it.
INSERT INTO work_items (tenant_id, key, project_key, number, title, description, type, status,
                        status_category, priority, assignee, reporter, labels, parent_key, due_at,
                        custom_fields)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
RETURNING id, key, project_key, title AS summary, description, type, status, status_category,
          priority, assignee, reporter, labels, parent_key, created_at, updated_at, resolved_at,
          due_at, custom_fields, source, source_id, version

-- name: insert_issue_transition!
-- params: tenant_id, work_item_id, from_status, to_status, from_category, to_category, actor, id, transitioned_at
-- One step of an item's status history (from NULL when the item is created). id: one taken
-- with take_work_ids, or null for the tenant's next (its counter is already held: a create took
-- it for the item just before). transitioned_at: the moment the step made (move_issue's
-- updated_at; the item's created_at for its creation), never the transaction's start: a move
-- that waited for the item's lock must sort after the move it waited for, as history is read in
-- transitioned_at order.
INSERT INTO work_item_transitions (tenant_id, work_item_id, from_status, to_status,
                                   from_category, to_category, actor, id, transitioned_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- name: work_item_key_exists$
-- params: issue_key
-- Whether an item with this key exists in the tenant.
SELECT EXISTS (SELECT 1 FROM work_items WHERE key = $1)

-- name: lock_issue^
-- params: issue_key
-- An item's editable fields and state, locked until commit so its before-values stay true.
SELECT id, key, project_key, title AS summary, description, priority, assignee, labels, due_at,
       parent_key, custom_fields, status, status_category, resolved_at, version
FROM work_items
WHERE key = $1
FOR NO KEY UPDATE

-- name: parent_chain_contains$
-- params: parent_key, issue_key
-- Whether issue_key is parent_key or one of its ancestors: that parent would close a loop.
-- UNION (not UNION ALL) ends the walk even on a loop already in the data.
WITH RECURSIVE up AS (
    SELECT key, parent_key FROM work_items WHERE key = $1
    UNION
    SELECT w.key, w.parent_key FROM work_items w JOIN up ON w.key = up.parent_key
)
SELECT EXISTS (SELECT 1 FROM up WHERE key = $2)

-- name: update_issue_fields^
-- params: issue_key, expected_version, changes
-- Set the fields named in changes (a JSON object keyed by column) and bump the version, only if
-- the version is still the one the caller read: compare-and-set, no lost updates.
UPDATE work_items SET
    title = CASE WHEN $3::jsonb ? 'title' THEN $3::jsonb ->> 'title' ELSE title END,
    description = CASE WHEN $3::jsonb ? 'description' THEN $3::jsonb ->> 'description'
                       ELSE description END,
    priority = CASE WHEN $3::jsonb ? 'priority' THEN $3::jsonb ->> 'priority' ELSE priority END,
    assignee = CASE WHEN $3::jsonb ? 'assignee' THEN $3::jsonb ->> 'assignee' ELSE assignee END,
    labels = CASE WHEN $3::jsonb ? 'labels'
                  THEN ARRAY(SELECT jsonb_array_elements_text($3::jsonb -> 'labels'))
                  ELSE labels END,
    due_at = CASE WHEN $3::jsonb ? 'due_at' THEN ($3::jsonb ->> 'due_at')::timestamptz
                  ELSE due_at END,
    parent_key = CASE WHEN $3::jsonb ? 'parent_key' THEN $3::jsonb ->> 'parent_key'
                      ELSE parent_key END,
    custom_fields = CASE WHEN $3::jsonb ? 'custom_fields' THEN $3::jsonb -> 'custom_fields'
                         ELSE custom_fields END,
    version = version + 1,
    -- The moment of the change, after the item's lock was granted (now() is the transaction's
    -- start, before any wait for it), and never before the change it follows.
    updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond')
WHERE key = $1 AND version = $2::integer
RETURNING version, updated_at

-- name: workflow_transitions_from
-- params: project_key, from_status
-- The moves a project's workflow allows out of a status, in workflow order.
SELECT t.transition_id AS id, t.name, t.to_status, s.category AS to_category
FROM workflow_transitions t
JOIN workflow_statuses s ON s.project_key = t.project_key AND s.status = t.to_status
WHERE t.project_key = $1 AND t.from_status = $2
ORDER BY s.position, t.transition_id

-- name: move_issue^
-- params: work_item_id, expected_version, status, status_category
-- Move an item to a status (compare-and-set on the version), under the item's lock (lock_issue).
-- The move's moment is read after the lock was granted (clock_timestamp(); now() is the
-- transaction's start, before it waited) and is later than the item's last change, so moves
-- of one item are stamped in the order they commit and updated_at never goes back; it is the
-- new updated_at, and the transitioned_at of the move's history row. resolved_at is set to it on
-- entering done or cancelled, kept while moving between those two, and cleared on leaving them.
WITH stamp AS (SELECT clock_timestamp() AS at)  -- volatile: evaluated once
UPDATE work_items SET
    status = $3,
    status_category = $4::text,
    resolved_at = CASE WHEN $4::text IN ('done', 'cancelled')
                       THEN coalesce(resolved_at,
                                     greatest(stamp.at, updated_at + interval '1 microsecond'))
                  END,
    version = version + 1,
    updated_at = greatest(stamp.at, updated_at + interval '1 microsecond')
FROM stamp
WHERE id = $1 AND version = $2::integer
RETURNING version, updated_at, resolved_at

-- name: touch_issue^
-- params: issue_key
-- Mark an item updated (a comment was added) and lock it for the rest of the transaction; the
-- moment as in update_issue_fields.
UPDATE work_items
SET updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond')
WHERE key = $1
RETURNING id, key

-- name: insert_comment^
-- params: tenant_id, work_item_id, author, body, id
-- A new comment on an item; id taken with take_work_ids before the item was locked.
INSERT INTO comments (tenant_id, work_item_id, author, body, id)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, author, body, created_at

-- name: lock_link_ends
-- params: issue_keys
-- Both ends of a new link, locked in id order: two concurrent links between the same pair (in
-- either direction) queue here, so the duplicate check below sees the other's row.
SELECT id, key FROM work_items WHERE key = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE

-- name: link_exists$
-- params: link_type, outward_id, inward_id
-- Whether "outward link_type inward" is stored already, by insert_link's own test (the reverse
-- pair of a "relates" counts): a mirrored write asks before it writes to the source.
SELECT EXISTS (
    SELECT 1 FROM work_item_links
    WHERE link_type = $1::text
      AND ((outward_id = $2::bigint AND inward_id = $3::bigint)
           OR ($1::text = 'relates' AND outward_id = $3::bigint AND inward_id = $2::bigint))
)

-- name: insert_link^
-- params: tenant_id, link_type, outward_id, inward_id, created_by, source, id
-- A link "outward link_type inward", unless it exists; "relates" is symmetric, so the reverse
-- pair counts as the same link. Returns nothing for a duplicate. source: 'local', or the kind of
-- source that holds the link (it was written there first), whose syncs may prune it. id: taken
-- with take_work_ids before the ends were locked.
INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id, created_by, source, id)
SELECT $1::uuid, $2::text, $3::bigint, $4::bigint, $5::text, $6::text, $7::bigint
WHERE NOT EXISTS (
    SELECT 1 FROM work_item_links
    WHERE link_type = $2::text
      AND ((outward_id = $3::bigint AND inward_id = $4::bigint)
           OR ($2::text = 'relates' AND outward_id = $4::bigint AND inward_id = $3::bigint))
)
ON CONFLICT DO NOTHING
RETURNING id, created_at

-- name: issue_workflow_state^
-- params: issue_key
-- An item's project and current status, for listing the moves out of it.
SELECT key, project_key, status, status_category, version FROM work_items WHERE key = $1

-- name: projects_overview
-- params:
-- Every project of the tenant with its workflow statuses and item counts by status category.
SELECT p.project_key AS key, p.name, p.description, p.lead, p.issue_types,
       coalesce((SELECT jsonb_object_agg(c.status_category, c.n)
                 FROM (SELECT w.status_category, count(*) AS n
                       FROM work_items w
                       WHERE w.project_key = p.project_key
                       GROUP BY w.status_category) c), '{}'::jsonb) AS counts,
       coalesce((SELECT jsonb_agg(jsonb_build_object('name', s.status, 'category', s.category,
                                                     'is_initial', s.is_initial)
                                  ORDER BY s.position, s.status)
                 FROM workflow_statuses s
                 WHERE s.project_key = p.project_key), '[]'::jsonb) AS statuses
FROM projects p
ORDER BY p.project_key

-- name: assignees_like
-- params: pattern
-- The tenant's people its items are assigned to whose name matches pattern (an ILIKE pattern,
-- its wildcards escaped by the caller), to tell which of them a name given to a write means.
SELECT DISTINCT assignee
FROM work_items
WHERE assignee ILIKE $1
ORDER BY assignee
LIMIT 50
