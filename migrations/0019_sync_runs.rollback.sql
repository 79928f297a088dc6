-- Undo 0019_sync_runs: the history of syncs goes (the synced data stays).
DROP VIEW sync_run_states;
DROP TABLE sync_runs;
