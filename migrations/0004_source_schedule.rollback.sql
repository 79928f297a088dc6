-- Undo 0004_source_schedule.
DROP FUNCTION source_schedule();
