-- name: demo_insert_project!
-- params: tenant_id, project_key, name, description, lead
-- A project; its trigger adds the default workflow.
INSERT INTO projects (tenant_id, project_key, name, description, lead)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, project_key) DO NOTHING

-- name: demo_projects_present
-- params: project_keys
-- Which of these project keys the tenant has already (its own projects or an earlier demo's).
SELECT project_key FROM projects WHERE project_key = ANY($1::text[]) ORDER BY project_key

-- name: demo_insert_work_items
-- params: tenant_id, keys, project_keys, numbers, titles, descriptions, types, statuses, categories, priorities, assignees, reporters, labels_csv, parent_keys, created, updated, resolved, due, ids
-- Many work items in one statement (COPY FROM is refused on tables under row-level security);
-- ids taken with take_work_ids, as for every bulk insert below.
INSERT INTO work_items (tenant_id, key, project_key, number, title, description, type, status,
                        status_category, priority, assignee, reporter, labels, parent_key,
                        created_at, updated_at, resolved_at, due_at, id)
SELECT $1, k, p, n, t, d, ty, s, c, pr, a, r,
       CASE WHEN l = '' THEN '{}'::text[] ELSE string_to_array(l, ',') END, pk, ca, ua, ra, da, i
FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
            $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
            $19::bigint[])
     AS x(k, p, n, t, d, ty, s, c, pr, a, r, l, pk, ca, ua, ra, da, i)
RETURNING id, key

-- name: demo_insert_transitions!
-- params: tenant_id, item_ids, from_statuses, to_statuses, from_categories, to_categories, actors, ats, ids
INSERT INTO work_item_transitions (tenant_id, work_item_id, from_status, to_status, from_category,
                                   to_category, actor, transitioned_at, id)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::bigint[])

-- name: demo_insert_comments!
-- params: tenant_id, item_ids, authors, bodies, ats, ids
INSERT INTO comments (tenant_id, id, work_item_id, author, body, created_at, updated_at)
SELECT $1, n, i, a, b, t, t
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[])
     AS x(i, a, b, t, n)

-- name: demo_insert_links!
-- params: tenant_id, link_types, outward_ids, inward_ids, actors, ids
INSERT INTO work_item_links (tenant_id, link_type, outward_id, inward_id, created_by, id)
SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])
ON CONFLICT DO NOTHING

-- name: demo_set_next_numbers!
-- params: project_keys, numbers
-- Keep the projects' key counters past the numbers of the items about to be inserted; before
-- their ids are taken, as project rows are locked before the tenant's id counter.
UPDATE projects p SET next_number = top.n + 1
FROM (SELECT k, max(n) AS n FROM unnest($1::text[], $2::int[]) AS x(k, n) GROUP BY k) top
WHERE p.project_key = top.k AND p.next_number <= top.n
