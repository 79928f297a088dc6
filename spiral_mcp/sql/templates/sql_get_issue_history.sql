-- name: sql_get_issue_history
-- title: Status history of a work item
-- row_cap: 500
-- description: A work item's status transitions, oldest first (the latest `limit`), with the hours
--   spent in each status and the total per status. Definitions: resource spiral://reports.
-- definitions: The timeline of one work item: one row per recorded status transition, oldest
--   first (the most recent `limit` transitions when there are more), with how long the item
--   stayed in each status. Transitions come in the order they were made, which for moves made
--   here is the order they committed (each is stamped once it holds the item, after the move
--   before it), so each starts where the previous one ended and the last is the item's current
--   status; a mirrored item's come with its source's times. Durations are in hours, rounded to 0.01 (half away from zero; totals
--   add up the unrounded stays).
--
--   Columns:
--   - seq: the transition's position in the item's whole history (1 = first).
--   - from_status, to_status, from_category, to_category, actor, transitioned_at (ISO 8601, UTC).
--   A first row with from_status null records the item's creation in its initial status.
--   - hours_in_from_status: how long the item had been in from_status, i.e. since the previous
--   transition (for the first transition: since the item was created); null when from_status is
--   null.
--   - hours_in_to_status: how long it then stayed in to_status, until the next transition; for
--   the current status (is_current true) until now.
--   - is_current: this transition put the item in the status it still has.
--   - total_hours_in_to_status: the time spent in to_status over the whole history, all stays
--   added up (a status visited twice counts both stays; the current stay counts until now).
--
--   No rows means the key does not exist in this workspace or the item has no recorded
--   transitions.
-- param issue_key: {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}-[1-9][0-9]*$",
--   "description": "e.g. WEB-42"}
-- param limit: {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
-- required: issue_key
WITH item AS (
    SELECT w.id, w.key, w.created_at FROM work_items AS w WHERE w.key = $1::text
), moves AS (
    SELECT t.from_status, t.to_status, t.from_category, t.to_category, t.actor,
           t.transitioned_at,
           row_number() OVER history AS seq,
           lag(t.transitioned_at) OVER history AS previous_at,
           lead(t.transitioned_at) OVER history AS next_at
    FROM work_item_transitions AS t
    JOIN item ON t.work_item_id = item.id
    -- transitioned_at is the commit order of one item's local moves (jira_write.sql,
    -- move_issue); id only separates moves a source recorded at one instant.
    WINDOW history AS (ORDER BY t.transitioned_at, t.id)
), stays AS (
    SELECT m.*,
           CASE WHEN m.from_status IS NOT NULL THEN
               extract(epoch FROM m.transitioned_at - coalesce(m.previous_at, item.created_at))
               / 3600 END AS hours_in_from_status,
           extract(epoch FROM coalesce(m.next_at, now()) - m.transitioned_at) / 3600
               AS hours_in_to_status
    FROM moves AS m CROSS JOIN item
), totals AS (
    -- Every stay in a status: each transition's to-stay, plus the stay before the first
    -- recorded transition when the history does not start with the creation.
    SELECT status, sum(hours) AS hours
    FROM (SELECT to_status, hours_in_to_status FROM stays
          UNION ALL
          SELECT from_status, hours_in_from_status FROM stays
          WHERE seq = 1 AND from_status IS NOT NULL) AS every_stay(status, hours)
    GROUP BY status
), recent AS (
    SELECT s.*, t.hours AS total_hours
    FROM stays AS s JOIN totals AS t ON t.status = s.to_status
    ORDER BY s.seq DESC
    LIMIT $2::int
)
SELECT item.key AS issue_key, r.seq, r.from_status, r.to_status, r.from_category,
       r.to_category, r.actor, r.transitioned_at,
       round(r.hours_in_from_status, 2) AS hours_in_from_status,
       round(r.hours_in_to_status, 2) AS hours_in_to_status,
       r.next_at IS NULL AS is_current,
       round(r.total_hours, 2) AS total_hours_in_to_status
FROM recent AS r CROSS JOIN item
ORDER BY r.seq
