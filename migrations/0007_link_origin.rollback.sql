-- Undo 0007_link_origin: every link is kept as it is, and none is known to be a source's again.
ALTER TABLE work_item_links DROP COLUMN source;
