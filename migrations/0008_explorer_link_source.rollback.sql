-- Undo 0008_explorer_link_source: the view as 0003 made it (a column cannot be dropped by
-- CREATE OR REPLACE, so the view is made again with its comments and grant).
DROP VIEW explorer.work_item_links;
CREATE VIEW explorer.work_item_links WITH (security_invoker = true) AS
SELECT id, link_type, outward_id, inward_id, created_by, created_at
FROM public.work_item_links;
COMMENT ON VIEW explorer.work_item_links IS
    'Links between work items, read as "outward <link_type> inward", e.g. A blocks B.';
COMMENT ON COLUMN explorer.work_item_links.id IS 'Identifier of the link.';
COMMENT ON COLUMN explorer.work_item_links.link_type IS 'blocks, relates, duplicates or clones.';
COMMENT ON COLUMN explorer.work_item_links.outward_id IS 'The item the link reads from (work_items.id).';
COMMENT ON COLUMN explorer.work_item_links.inward_id IS 'The item the link reads to (work_items.id).';
COMMENT ON COLUMN explorer.work_item_links.created_by IS 'Who created the link, if known.';
COMMENT ON COLUMN explorer.work_item_links.created_at IS 'When the link was created.';
GRANT SELECT ON explorer.work_item_links TO spiral_explorer;
REVOKE SELECT (source) ON public.work_item_links FROM spiral_explorer;
