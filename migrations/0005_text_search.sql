-- Text search that row-level security cannot defeat: one GiST trigram index per tenant's text.
--
-- Under forced RLS the planner uses an index for a user's condition only when the condition's
-- functions are LEAKPROOF, and pg_trgm's are not, so the GIN indexes of 0002 never served
-- `query <% title` (every search scanned the tenant's items; ~370 ms at 10,000 items). An ORDER
-- BY is not a condition: a GiST index led by tenant_id (btree_gist) answers "the items of this
-- tenant nearest to the query" (`<<->`, word-similarity distance) reading only a few entries,
-- and the template keeps those above the threshold. One index on title and description together
-- (the text the template ranks) instead of the two GIN indexes, which cost every write and
-- served nothing. siglen 160: a longer signature is more selective on descriptions, so a query
-- that matches nothing is ruled out sooner (bench/README.md has the figures).
-- depends: 0004_source_schedule

CREATE EXTENSION IF NOT EXISTS btree_gist;

DROP INDEX work_items_title_trgm;
DROP INDEX work_items_description_trgm;

CREATE INDEX work_items_text_trgm ON work_items
    USING gist (tenant_id, (title || E'\n' || coalesce(description, '')) gist_trgm_ops (siglen = 160));
