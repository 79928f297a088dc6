-- name: sql_search_issues_by_text
-- title: Fuzzy text search over work items
-- row_cap: 100
-- description: Finds work items whose title or description resembles `query`, tolerant of typos
--   and word order (PostgreSQL pg_trgm trigram matching, case-insensitive), best match first.
--
--   Scores are pg_trgm word_similarity(query, text), from 0 to 1: the trigram similarity
--   (shared / all distinct trigrams) between the query and the best-matching stretch of the
--   text; 1 means the query occurs there as whole words. An item matches when its title or its description scores at least the server's
--   pg_trgm.word_similarity_threshold (0.6 unless an operator changed it).
--
--   Columns: key, project_key, title, status, status_category, priority, assignee, updated_at,
--   similarity (the higher of the two scores), title_similarity, description_similarity (0 when
--   there is no description), description_excerpt (its first 300 characters). Order: similarity
--   descending, then most recently updated. No rows means nothing matched.
-- param query: {"type": "string", "minLength": 1, "maxLength": 200,
--   "description": "Words to look for, e.g. 'login timeout'."}
-- param project_keys: {"type": "array", "minItems": 1, "maxItems": 50, "uniqueItems": true,
--   "items": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$"},
--   "description": "Only search these projects (default: all)."}
-- param limit: {"type": "integer", "minimum": 1, "maximum": 100, "default": 20,
--   "description": "The most items to return."}
-- required: query
WITH matches AS (
    SELECT w.id, w.key, w.project_key, w.title, w.status, w.status_category, w.priority,
           w.assignee, w.updated_at, left(w.description, 300) AS description_excerpt,
           word_similarity($1::text, w.title) AS title_similarity,
           coalesce(word_similarity($1::text, w.description), 0) AS description_similarity
    FROM work_items AS w
    -- The operators, not the functions, are what the trigram GIN indexes can serve (under
    -- forced RLS only once pg_trgm's operator functions are LEAKPROOF: see 0002_reports).
    WHERE ($1::text <% w.title OR $1::text <% w.description)
      AND ($2::text[] IS NULL OR w.project_key = ANY ($2::text[]))
)
SELECT key, project_key, title, status, status_category, priority, assignee, updated_at,
       round(greatest(title_similarity, description_similarity)::numeric, 4) AS similarity,
       round(title_similarity::numeric, 4) AS title_similarity,
       round(description_similarity::numeric, 4) AS description_similarity,
       description_excerpt
FROM matches
ORDER BY greatest(title_similarity, description_similarity) DESC, updated_at DESC, id DESC
LIMIT $3::int
