-- name: replica_primary_lsn$
-- On the primary: where its write-ahead log ends now (the replica's lag is measured against it).
SELECT pg_current_wal_lsn()

-- name: replica_standby_position^
-- On the replica: whether it is a hot standby, and the last log position it replayed.
SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn() AS replayed
