-- The history of source syncs (issue 21): one row per run of an instance's sync, whoever started
-- it (the background schedule, the admin API, the sources_sync tool or the CLI).
--
-- A run is written by the session that holds the instance's sync lock (sources/sync.py
-- instance_lock): its row is inserted, status 'running', just after the lock is taken, its counts
-- move in the same transaction as each page it commits (so they never run ahead of the data),
-- and it ends ('ok', 'failed' with a one-line error, 'cancelled') before the lock is let go. A
-- row still 'running' whose instance lock nobody holds belongs to a process that died: the reads
-- show it as failed at once (the view sync_run_states), and the next run of that instance,
-- under the lock, stores it so. No timeout is guessed: a source that throttles a sync for an hour
-- keeps it running, and its lock held.
--
-- The runtime role inserts runs and updates their progress and outcome columns only (never the
-- tenant, the instance or the start); it never deletes one: runs go with their instance.
-- depends: 0018_operators

CREATE TABLE sync_runs (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL DEFAULT gen_random_uuid(),
    instance_id uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('sync', 'backfill')),
    trigger     text NOT NULL CHECK (trigger IN ('schedule', 'api', 'tool', 'cli')),
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'failed', 'cancelled')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    pages       integer NOT NULL DEFAULT 0 CHECK (pages >= 0),
    items       bigint NOT NULL DEFAULT 0 CHECK (items >= 0),
    changed     bigint NOT NULL DEFAULT 0 CHECK (changed >= 0),
    -- One line, as the sources word their failures (never a credential).
    error       text CHECK (length(error) BETWEEN 1 AND 1000 AND strpos(error, E'\n') = 0),
    -- The task an API call follows the run by; tasks expire, the history stays.
    task_id     uuid,
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, instance_id) REFERENCES source_instances ON DELETE CASCADE,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
-- Newest first, for the tenant and for one instance (keyset pages on started_at, run_id).
CREATE INDEX sync_runs_newest ON sync_runs (tenant_id, started_at DESC, run_id DESC);
CREATE INDEX sync_runs_instance
    ON sync_runs (tenant_id, instance_id, started_at DESC, run_id DESC);

ALTER TABLE sync_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_runs
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT ON sync_runs TO spiral_app;
GRANT UPDATE (status, updated_at, finished_at, pages, items, changed, error) ON sync_runs
    TO spiral_app;

-- Every run with ``abandoned``: marked running, while no session holds its instance's sync lock
-- (the lock key is the instance id's first 64 bits, as sources/sync.py lock_key makes it;
-- pg_locks shows a bigint key as classid, its high half, and objid). Read with the reader's
-- rights, so the tenant policy applies as on the table.
CREATE VIEW sync_run_states WITH (security_invoker = true) AS
SELECT r.*,
       r.status = 'running' AND NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_locks l
           WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                               WHERE d.datname = current_database())
             AND ((l.classid::bigint << 32) | l.objid::bigint)
                 = ('x' || translate(left(r.instance_id::text, 18), '-', ''))::bit(64)::bigint
       ) AS abandoned
FROM sync_runs r;

GRANT SELECT ON sync_run_states TO spiral_app;
