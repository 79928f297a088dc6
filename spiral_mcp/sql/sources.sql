-- name: source_insert$
-- params: tenant_id, kind, name, base_url, config, credentials
-- Register a source instance; credentials arrive already encrypted.
INSERT INTO source_instances (tenant_id, kind, name, base_url, config, credentials)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6)
RETURNING instance_id

-- name: source_list
-- params:
-- The current tenant's instances; never the credentials (only whether some are stored).
SELECT instance_id, tenant_id, kind, name, base_url, config::text AS config,
       credentials IS NOT NULL AS has_credentials, sync_cursor::text AS sync_cursor,
       last_synced_at, created_at
FROM source_instances
ORDER BY created_at, instance_id

-- name: source_read^
-- params: instance_id
-- One instance as source_list shows it (never the credentials).
SELECT instance_id, tenant_id, kind, name, base_url, config::text AS config,
       credentials IS NOT NULL AS has_credentials, sync_cursor::text AS sync_cursor,
       last_synced_at, created_at
FROM source_instances
WHERE instance_id = $1

-- name: source_get^
-- params: instance_id
-- One instance with its sealed credentials, for a test or a sync; never leaves the process.
SELECT instance_id, tenant_id, kind, name, base_url, config::text AS config, credentials,
       sync_cursor::text AS sync_cursor, last_synced_at
FROM source_instances
WHERE instance_id = $1

-- name: source_config_for_update$
-- params: instance_id
-- An instance's config, locked until the transaction ends: two changes to its mappings at once
-- queue here instead of one overwriting the other.
SELECT config::text FROM source_instances WHERE instance_id = $1 FOR UPDATE

-- name: source_set_config!
-- params: instance_id, config
-- The instance's config as a whole; the next sync's adapter reads it.
UPDATE source_instances SET config = $2::text::jsonb WHERE instance_id = $1

-- name: source_rename$
-- params: instance_id, name
-- An instance's new name (unique in the tenant); its id, or nothing when there is no such one.
UPDATE source_instances SET name = $2 WHERE instance_id = $1 RETURNING instance_id

-- name: source_delete$
-- params: instance_id
-- Remove an instance; its projects and items stay, as local data (source_instance_id is nulled).
DELETE FROM source_instances WHERE instance_id = $1 RETURNING instance_id

-- name: source_save_cursor!
-- params: instance_id, sync_cursor
-- Runs in the same transaction as the page's upsert, so the cursor never runs ahead of the data.
UPDATE source_instances SET sync_cursor = $2::text::jsonb, last_synced_at = now()
WHERE instance_id = $1

-- name: source_refresh_statistics!
-- params:
-- After a page with writes, in a transaction of its own: see refresh_sync_statistics (0006).
SELECT refresh_sync_statistics()

-- name: source_ensure_project!
-- params: tenant_id, project_key, name, instance_id, source_ref
-- A mirrored project, created when missing (its trigger adds the default workflow).
INSERT INTO projects (tenant_id, project_key, name, source_instance_id, source_ref)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, project_key) DO NOTHING

-- name: source_workflow_digest^
-- params: project_keys
-- A fingerprint of these projects and their workflows, read before and after a sync writes them:
-- the parts whose fingerprint moved are announced to their resources' subscribers (each column
-- is named as its kind of data in spiral_mcp/changed_data).
SELECT md5(coalesce((SELECT string_agg(concat_ws('|', project_key, name, source_instance_id,
                                                 source_ref), E'\n' ORDER BY project_key)
                     FROM projects WHERE project_key = ANY($1::text[])), '')) AS projects,
       md5(coalesce((SELECT string_agg(concat_ws('|', project_key, status, category, is_initial,
                                                 "position"), E'\n' ORDER BY project_key, status)
                     FROM workflow_statuses WHERE project_key = ANY($1::text[])), ''))
           AS workflow_statuses,
       md5(coalesce((SELECT string_agg(concat_ws('|', project_key, transition_id, name,
                                                 from_status, to_status), E'\n'
                                       ORDER BY project_key, transition_id, name, from_status,
                                                to_status)
                     FROM workflow_transitions WHERE project_key = ANY($1::text[])), ''))
           AS workflow_transitions

-- name: source_project_owner^
-- params: project_key
-- Which instance a project mirrors (null: a local project).
SELECT source_instance_id, source_ref FROM projects WHERE project_key = $1

-- name: source_upsert_items
-- params: tenant_id, source, instance_id, source_ids, keys, project_keys, numbers, titles, descriptions, types, statuses, categories, priorities, assignees, reporters, labels_json, parent_keys, created, updated, resolved, due, raws, ids
-- One page of items in one statement (COPY is refused under row-level security). An unchanged
-- item is left alone, so its version only moves when the source changed something; labels and
-- raw travel as JSON text because unnest flattens nested arrays. ids: a stored item's own id (the
-- row goes to the update), a new item's taken from the tenant's counter (take_work_ids).
INSERT INTO work_items (tenant_id, id, source, source_instance_id, source_id, key, project_key,
                        number, title, description, type, status, status_category, priority,
                        assignee, reporter, labels, parent_key, created_at, updated_at,
                        resolved_at, due_at, raw)
SELECT $1, i, $2, $3, sid, k, p, n, t, d, ty, s, c, pr, a, r,
       ARRAY(SELECT jsonb_array_elements_text(l::jsonb)), pk, ca, ua, ra, da, rw::jsonb
FROM unnest($4::text[], $5::text[], $6::text[], $7::int[], $8::text[], $9::text[], $10::text[],
            $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
            $17::text[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[],
            $21::timestamptz[], $22::text[], $23::bigint[])
     AS x(sid, k, p, n, t, d, ty, s, c, pr, a, r, l, pk, ca, ua, ra, da, rw, i)
ON CONFLICT (tenant_id, source_instance_id, source_id) DO UPDATE SET
    key = EXCLUDED.key, project_key = EXCLUDED.project_key, number = EXCLUDED.number,
    title = EXCLUDED.title, description = EXCLUDED.description, type = EXCLUDED.type,
    status = EXCLUDED.status, status_category = EXCLUDED.status_category,
    priority = EXCLUDED.priority, assignee = EXCLUDED.assignee, reporter = EXCLUDED.reporter,
    labels = EXCLUDED.labels, parent_key = EXCLUDED.parent_key,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    resolved_at = EXCLUDED.resolved_at, due_at = EXCLUDED.due_at, raw = EXCLUDED.raw,
    version = work_items.version + 1
WHERE (work_items.key, work_items.title, work_items.description, work_items.type,
       work_items.status, work_items.status_category, work_items.priority, work_items.assignee,
       work_items.reporter, work_items.labels, work_items.parent_key, work_items.updated_at,
       work_items.resolved_at, work_items.due_at)
      IS DISTINCT FROM
      (EXCLUDED.key, EXCLUDED.title, EXCLUDED.description, EXCLUDED.type, EXCLUDED.status,
       EXCLUDED.status_category, EXCLUDED.priority, EXCLUDED.assignee, EXCLUDED.reporter,
       EXCLUDED.labels, EXCLUDED.parent_key, EXCLUDED.updated_at, EXCLUDED.resolved_at,
       EXCLUDED.due_at)
  -- An answer older than what is stored (a write-through racing a sync page) never rolls back.
  AND EXCLUDED.updated_at >= work_items.updated_at
RETURNING source_id, id

-- name: source_stored_items
-- params: instance_id, source_ids
-- What the store holds of an instance's items, by the source's ids: one probe of
-- work_items_instance_source_id per id whatever the statistics say (a table filled since its
-- last ANALYZE, or never analysed, otherwise gets a scan of the tenant's whole source range).
SELECT x.sid AS source_id, w.id, w.key, w.parent_key, w.updated_at, w.status_category, w.type,
       w.priority
FROM unnest($2::text[]) AS x(sid)
CROSS JOIN LATERAL (SELECT id, key, parent_key, updated_at, status_category, type, priority
                    FROM work_items
                    WHERE source_instance_id = $1 AND source_id = x.sid LIMIT 1) w

-- name: source_upsert_comments!
-- params: tenant_id, item_ids, source_ids, authors, bodies, created, updated, ids
-- ids: taken from the tenant's counter for every row (one that turns out stored keeps its own), or
-- null, which the trigger fills one row at a time (a single comment).
INSERT INTO comments (tenant_id, work_item_id, source_id, author, body, created_at, updated_at,
                      id)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                         $7::timestamptz[], $8::bigint[])
ON CONFLICT (tenant_id, work_item_id, source_id) WHERE source_id IS NOT NULL DO UPDATE SET
    author = EXCLUDED.author, body = EXCLUDED.body, updated_at = EXCLUDED.updated_at
WHERE (comments.author, comments.body, comments.updated_at)
      IS DISTINCT FROM (EXCLUDED.author, EXCLUDED.body, EXCLUDED.updated_at)

-- name: source_insert_transitions!
-- params: tenant_id, item_ids, from_statuses, to_statuses, from_categories, to_categories, actors, ats, ids
-- History has no source id: a move already recorded (same item, moment and target) is skipped by
-- work_item_transitions_move, so a page synced twice adds nothing (nor uses its id).
INSERT INTO work_item_transitions (tenant_id, work_item_id, from_status, to_status, from_category,
                                   to_category, actor, transitioned_at, id)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::timestamptz[], $9::bigint[])
ON CONFLICT (tenant_id, work_item_id, transitioned_at, to_status) DO NOTHING

-- name: source_bump_next_numbers!
-- params: project_keys, numbers
-- Keep mirrored projects' key counters past the numbers of the items a page is about to write
-- (every stored number is past already: each write of an item keeps its project so). Before
-- the page takes its ids: project rows are locked before the tenant's id counter, as a create
-- takes its number before its id (the lock order in spiral_mcp.ids).
UPDATE projects p SET next_number = top.n + 1
FROM (SELECT k, max(n) AS n FROM unnest($1::text[], $2::int[]) AS x(k, n) GROUP BY k) top
WHERE p.project_key = top.k AND p.next_number <= top.n

-- name: source_prune_workflow_statuses!
-- params: project_key, statuses
-- A mirrored project's workflow is the source's: statuses it no longer has go, with their moves.
-- Items keep their status text (work_items.status references no workflow row), so an item in a
-- status the source retired is still stored as the source has it.
DELETE FROM workflow_statuses WHERE project_key = $1 AND NOT (status = ANY($2::text[]))

-- name: source_clear_initial_status!
-- params: project_key
-- The one-initial-status index is checked row by row: clear the mark before the upsert moves it.
UPDATE workflow_statuses SET is_initial = false WHERE project_key = $1 AND is_initial

-- name: source_upsert_workflow_statuses!
-- params: tenant_id, project_key, statuses, categories
-- The source's statuses in its order, the first one initial.
INSERT INTO workflow_statuses (tenant_id, project_key, status, category, is_initial, position)
SELECT $1, $2, s, c, n = 1, n::smallint
FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(s, c, n)
ON CONFLICT (tenant_id, project_key, status) DO UPDATE SET
    category = EXCLUDED.category, is_initial = EXCLUDED.is_initial, position = EXCLUDED.position

-- name: source_prune_workflow_transitions!
-- params: project_key, transition_ids, names, from_statuses, to_statuses
-- Moves the source no longer offers, or offers under another id or name.
DELETE FROM workflow_transitions
WHERE project_key = $1
  AND (transition_id, name, from_status, to_status) NOT IN (
      SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]))

-- name: source_insert_workflow_transitions!
-- params: tenant_id, project_key, transition_ids, names, from_statuses, to_statuses
-- What the prune kept is identical to its new row, so a conflict on either key adds nothing.
INSERT INTO workflow_transitions (tenant_id, project_key, transition_id, name, from_status,
                                  to_status)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
ON CONFLICT DO NOTHING

-- name: source_prune_links!
-- params: source, item_ids, reporters, link_types, outward_keys, inward_keys
-- The links of a page's written items that their source holds and no longer reports. Each item's
-- own report decides for its links (reporters[n] is the item reporting link n): the source lists
-- a link on both its ends, and an end it no longer lists the link on has lost it, whatever the
-- other end said when it was stored (that end is changed too and comes with a later page). Local
-- links are never read. Every access is a probe per element, whatever the statistics say: each
-- item's links by (tenant_id, outward_id) and (tenant_id, inward_id), each reported end by
-- (tenant_id, key), each doomed link by its primary key.
WITH reported AS MATERIALIZED (
    SELECT x.item, x.t, o.id AS outward_id, i.id AS inward_id
    FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) AS x(item, t, ok, ik)
    CROSS JOIN LATERAL (SELECT id FROM work_items WHERE key = x.ok LIMIT 1) o
    CROSS JOIN LATERAL (SELECT id FROM work_items WHERE key = x.ik LIMIT 1) i
)
DELETE FROM work_item_links
WHERE id = ANY(ARRAY(
    SELECT held.id
    FROM unnest($2::bigint[]) AS w(item)
    CROSS JOIN LATERAL (
        SELECT id, link_type, outward_id, inward_id FROM work_item_links
        WHERE outward_id = w.item AND source = $1
        UNION ALL
        SELECT id, link_type, outward_id, inward_id FROM work_item_links
        WHERE inward_id = w.item AND source = $1) held
    WHERE NOT EXISTS (
        SELECT 1 FROM reported r
        WHERE r.item = w.item AND r.t = held.link_type AND r.outward_id = held.outward_id
          AND r.inward_id = held.inward_id)))

-- name: source_insert_links!
-- params: tenant_id, source, link_types, outward_keys, inward_keys, ids
-- Links whose two ends are stored, held by the source that reported them. One whose other end is
-- not synced yet comes with that end's page: a source lists a link on both of its items. A link
-- the store already holds locally stays local (and is never pruned). Each end is one probe of
-- (tenant_id, key), whatever the statistics say, as in source_stored_items. ids: one per
-- reported link, taken from the tenant's counter.
INSERT INTO work_item_links (tenant_id, id, link_type, outward_id, inward_id, source)
SELECT DISTINCT ON (x.t, o.id, i.id) $1::uuid, x.n, x.t, o.id, i.id, $2::text
FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS x(t, ok, ik, n)
CROSS JOIN LATERAL (SELECT id FROM work_items WHERE key = x.ok LIMIT 1) o
CROSS JOIN LATERAL (SELECT id FROM work_items WHERE key = x.ik LIMIT 1) i
WHERE o.id <> i.id
ON CONFLICT DO NOTHING

-- name: source_item_numbers
-- params: instance_id, project_keys
-- The keys the store gave an instance's items, for adapters whose items have no numbers (Asana).
SELECT source_id, project_key, number FROM work_items
WHERE source_instance_id = $1 AND project_key = ANY($2::text[]) AND source_id IS NOT NULL

-- name: source_next_numbers
-- params: project_keys
-- Each mirrored project's next free number, for the same adapters.
SELECT project_key, next_number FROM projects WHERE project_key = ANY($1::text[])
