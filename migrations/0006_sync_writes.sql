-- Cheaper writes for syncs, with nothing read slower.
--
-- * A move is one (item, moment, target status). A unique index says so, and a sync skips a move
--   it already holds by conflict: the check no longer depends on a plan, which for a table filled
--   since its last ANALYZE (or never analysed) could scan the tenant's history once per move. It
--   replaces work_item_transitions_item, whose columns it leads with, for every read of an item's
--   history.
-- * Two indexes that forced row-level security keeps from serving any condition cost every write
--   and go: work_items_labels (`@>` is not LEAKPROOF and the index has no tenant) and
--   work_items_assignee_ci (`lower()` is not LEAKPROOF, so only its tenant_id was ever used, as
--   any tenant-leading index can be; work_items_assignee stays for `assignee =`).
-- * The source's own record of an item (`raw`, ~2-4 KB of JSON) and long descriptions are
--   compressed with lz4 where the server has it: pglz was a sixth of the cost of storing a new
--   item. Values already stored keep their method; reads handle both.
-- depends: 0005_text_search

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE work_items ALTER COLUMN raw SET COMPRESSION lz4,
                               ALTER COLUMN description SET COMPRESSION lz4;
    END IF;
END
$$;

-- Duplicates the old check let through (none are expected) go first, the earliest of each kept.
-- The owner is bound by the tenant policies too: lifted for this statement only.
ALTER TABLE work_item_transitions NO FORCE ROW LEVEL SECURITY;
DELETE FROM work_item_transitions AS later
USING work_item_transitions AS earlier
WHERE later.tenant_id = earlier.tenant_id AND later.work_item_id = earlier.work_item_id
  AND later.transitioned_at = earlier.transitioned_at AND later.to_status = earlier.to_status
  AND later.id > earlier.id;
ALTER TABLE work_item_transitions FORCE ROW LEVEL SECURITY;

CREATE UNIQUE INDEX work_item_transitions_move
    ON work_item_transitions (tenant_id, work_item_id, transitioned_at, to_status);
DROP INDEX work_item_transitions_item;

DROP INDEX work_items_labels;
DROP INDEX work_items_assignee_ci;

-- Statistics as a sync makes them stale. A backfill fills these tables faster than autovacuum
-- looks (a minute apart by default, or never where it is off), and plans made before it looks
-- stay cached in the sync's session: the foreign-key checks of comments and moves, planned while
-- work_items looked empty, then read every index entry of the tenant per row (any index led by
-- tenant_id ties with the primary key on an empty table). The runtime role may not ANALYZE, so
-- this function, owned by the owner, analyses each of the four tables that has changed by more
-- than 500 rows plus its size since its last analysis, and nothing else: plans go wrong when the
-- statistics are off by orders of magnitude, so a doubling is enough, and a backfill of a million
-- rows analyses each table some 11 times (autovacuum's 10% would be 70). It skips a table another
-- session is analysing rather than wait for it.
CREATE FUNCTION refresh_sync_statistics() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '50ms' AS $$
DECLARE
    stale regclass;
BEGIN
    FOR stale IN
        SELECT s.relid FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.relid IN ('public.work_items'::regclass, 'public.comments'::regclass,
                          'public.work_item_transitions'::regclass,
                          'public.work_item_links'::regclass)
          AND s.n_mod_since_analyze > 500 + greatest(c.reltuples, 0)
    LOOP
        BEGIN
            EXECUTE format('ANALYZE %s', stale);
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- autovacuum or another sync is on it
        END;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION refresh_sync_statistics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refresh_sync_statistics() TO spiral_app;
