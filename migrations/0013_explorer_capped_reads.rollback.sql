-- Undo 0013_explorer_capped_reads: the capped cursor and the sample cap.
DROP FUNCTION explorer_support.raise_capped(text, text, text, text),
    explorer_support.open_rows(refcursor, text),
    explorer_support.fetch_rows(refcursor, integer, bigint),
    explorer_support.column_samples(text, integer, integer);
