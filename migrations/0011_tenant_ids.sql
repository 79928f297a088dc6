-- Ids a tenant can see count only that tenant's rows.
--
-- Work items, their moves, comments and links, and audit rows took their ids from one sequence
-- per table shared by every tenant, so the gap between two of a tenant's own ids told how many
-- comments, tool calls or items every other tenant had made in between. Each tenant now has its
-- own counters, rows of tenant_counters under the tenant policies:
--
-- * 'work' numbers work_items, work_item_transitions, comments and work_item_links: ids are
--   unique per table within a tenant, which is all their keys, (tenant_id, id), ask. One counter
--   for the four tables, not one each, so a transaction takes one lock however many of them it
--   writes, and taking it again later in the transaction never waits (see the lock order below).
-- * 'audit' numbers audit_log.
--
-- take_ids(tenant, counter, n) hands out the next n ids in one upsert of the counter's row; the
-- row stays locked until the transaction ends, so concurrent writers of one tenant queue there
-- and never share an id, while different tenants never meet. A bulk insert takes one block for
-- all its rows (the sync's page writer, the audit batch, the demo loader); an insert that names
-- no id gets one from the trigger assign_id, so every INSERT stays correct.
--
-- Lock order, which keeps the counters out of deadlocks: a transaction locks project rows first
-- (an item's number), then takes its 'work' ids before it locks any item, comment or link row
-- (write tools take them at their start; the page writer after bumping the projects' numbers),
-- and takes its 'audit' id last, just before it commits. No transaction waits on the 'work'
-- counter while holding a row some holder of that counter waits for, and a holder of the
-- 'audit' counter waits for nothing. Writes of one tenant that add rows queue on its counter
-- (a sync page holds it until the page commits); reads never touch it.
--
-- Existing rows are numbered again, per tenant and table, 1..n in the order of their old ids
-- (so "newest first" orders and every tie broken by id stay as they were), with the references
-- to them (comments, moves and links to their items) and the ids stored results and audit rows
-- carry (a comment's or a link's id in jira_add_comment, jira_link_issues and
-- jira_transition_issue results) moved along. Each 'work' counter starts past the tenant's
-- highest id in the four tables, each 'audit' counter past its highest audit id.
--
-- Runs as the owner role; takes ACCESS EXCLUSIVE locks on the tables it renumbers.
-- depends: 0010_explorer_statistics

CREATE TABLE tenant_counters (
    tenant_id   uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    counter     text NOT NULL CHECK (counter IN ('work', 'audit')),
    -- The last id handed out; the next is last_id + 1.
    last_id     bigint NOT NULL CHECK (last_id >= 0),
    PRIMARY KEY (tenant_id, counter)
);

-- The next n ids of a tenant's counter, as the first of them (n consecutive ids from there).
-- Runs with the caller's rights, so the tenant policies of tenant_counters apply: a transaction
-- can only take ids of its own tenant. The counter's row stays locked until the caller's
-- transaction ends.
CREATE FUNCTION take_ids(tenant uuid, counter_name text, n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
BEGIN
    INSERT INTO public.tenant_counters AS c (tenant_id, counter, last_id)
    VALUES (tenant, counter_name, n)
    ON CONFLICT (tenant_id, counter) DO UPDATE SET last_id = c.last_id + EXCLUDED.last_id
    RETURNING c.last_id - n + 1 INTO first_id;
    RETURN first_id;
END
$$;

-- A row inserted without an id gets the next one of its tenant's counter (TG_ARGV[0]).
CREATE FUNCTION assign_tenant_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := public.take_ids(NEW.tenant_id, TG_ARGV[0], 1);
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Existing rows, numbered per tenant
-- ---------------------------------------------------------------------------------------------

-- The owner is bound by the tenant policies too: lifted on these tables until the end.
ALTER TABLE work_items NO FORCE ROW LEVEL SECURITY;
ALTER TABLE work_item_transitions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE comments NO FORCE ROW LEVEL SECURITY;
ALTER TABLE work_item_links NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys NO FORCE ROW LEVEL SECURITY;

-- Ids are set from here on, not generated (and a generated column cannot be updated).
ALTER TABLE work_items ALTER COLUMN id DROP IDENTITY;
ALTER TABLE work_item_transitions ALTER COLUMN id DROP IDENTITY;
ALTER TABLE comments ALTER COLUMN id DROP IDENTITY;
ALTER TABLE work_item_links ALTER COLUMN id DROP IDENTITY;
ALTER TABLE audit_log ALTER COLUMN id DROP IDENTITY;

-- The references to items change with them; checked again when they are added back below.
ALTER TABLE work_item_transitions DROP CONSTRAINT work_item_transitions_tenant_id_work_item_id_fkey;
ALTER TABLE comments DROP CONSTRAINT comments_tenant_id_work_item_id_fkey;
ALTER TABLE work_item_links DROP CONSTRAINT work_item_links_tenant_id_outward_id_fkey;
ALTER TABLE work_item_links DROP CONSTRAINT work_item_links_tenant_id_inward_id_fkey;

-- Old id -> new id, for the tables others refer to.
CREATE TEMPORARY TABLE item_ids ON COMMIT DROP AS
SELECT tenant_id, id AS old_id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS new_id
FROM work_items;
CREATE UNIQUE INDEX ON item_ids (tenant_id, old_id);
CREATE TEMPORARY TABLE comment_ids ON COMMIT DROP AS
SELECT tenant_id, id AS old_id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS new_id
FROM comments;
CREATE UNIQUE INDEX ON comment_ids (tenant_id, old_id);
CREATE TEMPORARY TABLE link_ids ON COMMIT DROP AS
SELECT tenant_id, id AS old_id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS new_id
FROM work_item_links;
CREATE UNIQUE INDEX ON link_ids (tenant_id, old_id);
ANALYZE item_ids, comment_ids, link_ids;

-- Ids in stored results (replayed to a retry with the same idempotency key) and in audit rows'
-- after-values (the result of the write). Tools are stored under their own names, audit rows
-- under the name they were called by.
UPDATE idempotency_keys k SET response = jsonb_set(k.response, '{id}', to_jsonb(m.new_id))
FROM comment_ids m
WHERE k.tool IN ('jira_add_comment', 'jira.add_comment')
  AND jsonb_typeof(k.response -> 'id') = 'number'
  AND m.tenant_id = k.tenant_id AND m.old_id = (k.response ->> 'id')::bigint;
UPDATE idempotency_keys k SET response = jsonb_set(k.response, '{comment_id}', to_jsonb(m.new_id))
FROM comment_ids m
WHERE k.tool IN ('jira_transition_issue', 'jira.transition_issue')
  AND jsonb_typeof(k.response -> 'comment_id') = 'number'
  AND m.tenant_id = k.tenant_id AND m.old_id = (k.response ->> 'comment_id')::bigint;
UPDATE idempotency_keys k SET response = jsonb_set(k.response, '{id}', to_jsonb(m.new_id))
FROM link_ids m
WHERE k.tool IN ('jira_link_issues', 'jira.link_issues')
  AND jsonb_typeof(k.response -> 'id') = 'number'
  AND m.tenant_id = k.tenant_id AND m.old_id = (k.response ->> 'id')::bigint;
UPDATE audit_log a SET after = jsonb_set(a.after, '{id}', to_jsonb(m.new_id))
FROM comment_ids m
WHERE a.tool IN ('jira_add_comment', 'jira.add_comment')
  AND jsonb_typeof(a.after -> 'id') = 'number'
  AND m.tenant_id = a.tenant_id AND m.old_id = (a.after ->> 'id')::bigint;
UPDATE audit_log a SET after = jsonb_set(a.after, '{id}', to_jsonb(m.new_id))
FROM link_ids m
WHERE a.tool IN ('jira_link_issues', 'jira.link_issues')
  AND jsonb_typeof(a.after -> 'id') = 'number'
  AND m.tenant_id = a.tenant_id AND m.old_id = (a.after ->> 'id')::bigint;

-- Two passes: first to the negated new ids, which no old id equals, then to the new ids, which
-- no negated one does; unique keys are checked row by row, and one pass could meet a row that
-- still holds the id (or reference) another row is moving to.
UPDATE work_items w SET id = -m.new_id
FROM item_ids m WHERE m.tenant_id = w.tenant_id AND m.old_id = w.id;
UPDATE work_item_transitions t SET id = -n.new_id, work_item_id = -m.new_id
FROM (SELECT tenant_id, id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS new_id
      FROM work_item_transitions) n, item_ids m
WHERE n.tenant_id = t.tenant_id AND n.id = t.id
  AND m.tenant_id = t.tenant_id AND m.old_id = t.work_item_id;
UPDATE comments c SET id = -n.new_id, work_item_id = -m.new_id
FROM comment_ids n, item_ids m
WHERE n.tenant_id = c.tenant_id AND n.old_id = c.id
  AND m.tenant_id = c.tenant_id AND m.old_id = c.work_item_id;
UPDATE work_item_links l SET id = -n.new_id, outward_id = -o.new_id, inward_id = -i.new_id
FROM link_ids n, item_ids o, item_ids i
WHERE n.tenant_id = l.tenant_id AND n.old_id = l.id
  AND o.tenant_id = l.tenant_id AND o.old_id = l.outward_id
  AND i.tenant_id = l.tenant_id AND i.old_id = l.inward_id;
UPDATE audit_log a SET id = -n.new_id
FROM (SELECT tenant_id, id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS new_id
      FROM audit_log) n
WHERE n.tenant_id = a.tenant_id AND n.id = a.id;

UPDATE work_items SET id = -id;
UPDATE work_item_transitions SET id = -id, work_item_id = -work_item_id;
UPDATE comments SET id = -id, work_item_id = -work_item_id;
UPDATE work_item_links SET id = -id, outward_id = -outward_id, inward_id = -inward_id;
UPDATE audit_log SET id = -id;

ALTER TABLE work_item_transitions ADD CONSTRAINT work_item_transitions_tenant_id_work_item_id_fkey
    FOREIGN KEY (tenant_id, work_item_id) REFERENCES work_items ON DELETE CASCADE;
ALTER TABLE comments ADD CONSTRAINT comments_tenant_id_work_item_id_fkey
    FOREIGN KEY (tenant_id, work_item_id) REFERENCES work_items ON DELETE CASCADE;
ALTER TABLE work_item_links ADD CONSTRAINT work_item_links_tenant_id_outward_id_fkey
    FOREIGN KEY (tenant_id, outward_id) REFERENCES work_items ON DELETE CASCADE;
ALTER TABLE work_item_links ADD CONSTRAINT work_item_links_tenant_id_inward_id_fkey
    FOREIGN KEY (tenant_id, inward_id) REFERENCES work_items ON DELETE CASCADE;

-- Each counter past its tenant's highest id. Rows of a tenant no longer registered (none are
-- expected) get no counter: no key can write for that tenant again.
INSERT INTO tenant_counters (tenant_id, counter, last_id)
SELECT tenant_id, 'work', max(top) FROM (
    SELECT tenant_id, max(id) AS top FROM work_items GROUP BY tenant_id
    UNION ALL SELECT tenant_id, max(id) FROM work_item_transitions GROUP BY tenant_id
    UNION ALL SELECT tenant_id, max(id) FROM comments GROUP BY tenant_id
    UNION ALL SELECT tenant_id, max(id) FROM work_item_links GROUP BY tenant_id) tops
WHERE tenant_id IN (SELECT tenant_id FROM tenants)
GROUP BY tenant_id;
INSERT INTO tenant_counters (tenant_id, counter, last_id)
SELECT tenant_id, 'audit', max(id) FROM audit_log
WHERE tenant_id IN (SELECT tenant_id FROM tenants)
GROUP BY tenant_id;

ALTER TABLE work_items FORCE ROW LEVEL SECURITY;
ALTER TABLE work_item_transitions FORCE ROW LEVEL SECURITY;
ALTER TABLE comments FORCE ROW LEVEL SECURITY;
ALTER TABLE work_item_links FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

-- ---------------------------------------------------------------------------------------------
-- From now on
-- ---------------------------------------------------------------------------------------------

-- WHEN: a bulk insert that took a block of ids names them, and pays nothing here per row.
CREATE TRIGGER assign_id BEFORE INSERT ON work_items
    FOR EACH ROW WHEN (NEW.id IS NULL) EXECUTE FUNCTION assign_tenant_id('work');
CREATE TRIGGER assign_id BEFORE INSERT ON work_item_transitions
    FOR EACH ROW WHEN (NEW.id IS NULL) EXECUTE FUNCTION assign_tenant_id('work');
CREATE TRIGGER assign_id BEFORE INSERT ON comments
    FOR EACH ROW WHEN (NEW.id IS NULL) EXECUTE FUNCTION assign_tenant_id('work');
CREATE TRIGGER assign_id BEFORE INSERT ON work_item_links
    FOR EACH ROW WHEN (NEW.id IS NULL) EXECUTE FUNCTION assign_tenant_id('work');
CREATE TRIGGER assign_id BEFORE INSERT ON audit_log
    FOR EACH ROW WHEN (NEW.id IS NULL) EXECUTE FUNCTION assign_tenant_id('audit');

ALTER TABLE tenant_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_counters
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- The runtime role takes ids (an upsert: insert, and update of last_id); it may not remove or
-- move a counter. The explorer role gets nothing here.
GRANT SELECT, INSERT, UPDATE (last_id) ON tenant_counters TO spiral_app;
