-- name: sql_search_issues_by_text
-- title: Fuzzy text search over work items
-- row_cap: 100
-- description: Typo-tolerant search of titles and descriptions (pg_trgm word similarity, 0 to 1),
--   best match first. Definitions: resource spiral://reports.
-- definitions: Finds work items whose text (title, then description) resembles `query`,
--   tolerant of typos and word order (PostgreSQL pg_trgm trigram matching, case-insensitive),
--   best match first.
--
--   Scores are pg_trgm word_similarity(query, text), from 0 to 1: the trigram similarity
--   (shared / all distinct trigrams) between the query and the best-matching stretch of the
--   text; 1 means the query occurs there as whole words. `similarity` scores the title and the
--   description as one text; an item matches when it is at least the server's
--   pg_trgm.word_similarity_threshold (0.6 unless an operator changed it). The three scores are
--   rounded to 0.0001 (half away from zero); matching and order use them unrounded.
--
--   Columns: key, project_key, title, status, status_category, priority, assignee, updated_at,
--   similarity, title_similarity and description_similarity (each part on its own; 0 when there
--   is no description), description_excerpt (its first 300 characters). Order: similarity
--   descending, then most recently updated (equal scores are ordered among the 100 best
--   candidates, which is every match when there are at most 100). No rows means nothing matched.
-- param query: {"type": "string", "minLength": 1, "maxLength": 200,
--   "description": "e.g. login timeout"}
-- param project_keys: {"type": "array", "minItems": 1, "maxItems": 50,
--   "items": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$"}}
-- param limit: {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
-- required: query
WITH nearest AS (
    -- The 100 items nearest to the query come from the tenant-led GiST index (0005_text_search)
    -- in distance order, which row-level security allows; a WHERE on the score could not use
    -- it. The threshold is applied to those candidates: nothing beyond them scores higher.
    SELECT w.id, w.key, w.project_key, w.title, w.description, w.status, w.status_category,
           w.priority, w.assignee, w.updated_at,
           $1::text <<-> (w.title || E'\n' || coalesce(w.description, '')) AS distance
    FROM work_items AS w
    WHERE $2::text[] IS NULL OR w.project_key = ANY ($2::text[])
    ORDER BY distance
    LIMIT 100
)
SELECT key, project_key, title, status, status_category, priority, assignee, updated_at,
       round((1 - distance)::numeric, 4) AS similarity,
       round(word_similarity($1::text, title)::numeric, 4) AS title_similarity,
       round(coalesce(word_similarity($1::text, description), 0)::numeric, 4)
           AS description_similarity,
       left(description, 300) AS description_excerpt
FROM nearest
WHERE 1 - distance >= current_setting('pg_trgm.word_similarity_threshold')::real
ORDER BY distance, updated_at DESC, id DESC
LIMIT $3::int
