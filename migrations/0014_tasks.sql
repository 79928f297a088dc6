-- Tasks of the io.modelcontextprotocol/tasks extension (MCP 2026-07-28): a tool call the server
-- answered with a task handle, its status, progress, questions to the client and final outcome.
--
-- A task belongs to the tenant and to the API key that created it: every statement of the server
-- names both, so another key of the same tenant finds nothing, as another tenant's does (whose
-- rows the tenant policy hides). It runs in the server process that created it, which renews
-- lease_until while it runs; a task whose lease has lapsed was running in a process that died,
-- and is read as failed. cancel_requested is how tasks/cancel, answered by any process, reaches
-- the one running it. expires_at moves with every write (ttl_ms past the last one); expired tasks
-- are deleted by task_sweep() and never read.
-- depends: 0013_explorer_capped_reads

CREATE TABLE tasks (
    tenant_id        uuid NOT NULL,
    task_id          uuid NOT NULL,
    key_id           uuid NOT NULL,
    tool             text NOT NULL,
    status           text NOT NULL DEFAULT 'working'
                     CHECK (status IN ('working', 'input_required', 'completed', 'failed',
                                       'cancelled')),
    status_message   text,
    progress         double precision,
    progress_total   double precision,
    -- The questions to the client still unanswered, by key, and answers not yet taken by the
    -- running call (JSON objects keyed alike).
    input_requests   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(input_requests) = 'object'),
    input_responses  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(input_responses) = 'object'),
    -- The CallToolResult of a completed task, the JSON-RPC error of a failed one.
    result           jsonb,
    error            jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    ttl_ms           integer NOT NULL CHECK (ttl_ms > 0),
    poll_interval_ms integer NOT NULL CHECK (poll_interval_ms > 0),
    lease_until      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, task_id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES api_keys ON DELETE CASCADE,
    CHECK ((status = 'completed') = (result IS NOT NULL)),
    CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX tasks_expires ON tasks (tenant_id, expires_at);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON tasks TO spiral_app;

-- Deletes every tenant's expired tasks; how many. The runtime role sees tasks only inside one
-- tenant's transaction and cannot list tenants, so this function, owned by the owner (who may list
-- tenants), does it tenant by tenant under each tenant's own context (the owner is bound by the
-- policy too), and restores the caller's context after. A task still running (its lease alive)
-- is kept: its process moves expires_at on as it writes.
CREATE FUNCTION task_sweep() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := current_setting('app.tenant_id', true);
    t uuid;
    gone bigint;
    total bigint := 0;
BEGIN
    FOR t IN SELECT tenants.tenant_id FROM tenants ORDER BY tenants.tenant_id LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        DELETE FROM tasks
        WHERE tasks.tenant_id = t AND tasks.expires_at < now()
          AND NOT (tasks.status IN ('working', 'input_required') AND tasks.lease_until > now());
        GET DIAGNOSTICS gone = ROW_COUNT;
        total := total + gone;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(caller, ''), true);
    RETURN total;
END
$$;

REVOKE ALL ON FUNCTION task_sweep() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION task_sweep() TO spiral_app;
