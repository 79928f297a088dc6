-- name: jql_known_values^
-- params: statuses
-- What JQL's project and status values may name in this tenant (row-level security keeps it to
-- the tenant): its project keys, its workflows' statuses (one spelling per name ignoring case),
-- and of the given status names those that only items still carry: a status its source retired
-- stays on its items, which must stay findable. That last probe reads the tenant's items (no
-- index on status), and only for a name no workflow has, so only for a query about to be
-- refused or one naming a retired status.
SELECT ARRAY(SELECT project_key FROM projects ORDER BY project_key) AS projects,
       ARRAY(SELECT min(status) FROM workflow_statuses GROUP BY lower(status)
             ORDER BY lower(status)) AS statuses,
       ARRAY(SELECT s FROM unnest($1::text[]) AS s
             WHERE NOT EXISTS (SELECT 1 FROM workflow_statuses AS ws
                               WHERE lower(ws.status) = lower(s))
               AND EXISTS (SELECT 1 FROM work_items AS w WHERE lower(w.status) = lower(s)))
           AS item_statuses
