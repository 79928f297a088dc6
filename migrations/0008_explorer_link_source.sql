-- The explorer shows where each link lives (0007's work_item_links.source), as it shows
-- work_items.source: an agent asking "which links came from Jira" reads it instead of guessing.
-- CREATE OR REPLACE keeps the view's grants and comments; the new column goes last.
-- depends: 0007_link_origin

CREATE OR REPLACE VIEW explorer.work_item_links WITH (security_invoker = true) AS
SELECT id, link_type, outward_id, inward_id, created_by, created_at, source
FROM public.work_item_links;
COMMENT ON COLUMN explorer.work_item_links.source IS
    'Where the link lives: local (held here), or jira / asana (held by that source; a sync '
    'deletes it when the source no longer reports it).';

GRANT SELECT (source) ON public.work_item_links TO spiral_explorer;
