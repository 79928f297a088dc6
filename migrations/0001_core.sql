-- The core store: tenants, keys, sources, projects, work items and their history, audit and
-- idempotency records. Every tenant-owned table leads its keys with tenant_id and is guarded by
-- forced row-level security keyed on the transaction setting app.tenant_id.
--
-- Runs as the owner role. The runtime role spiral_app and the explorer role spiral_explorer must
-- exist (the embedded database and the test harness create them; the README shows the SQL).
-- depends:

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    key_id       uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the whole secret; secrets carry 256 random bits, so a fast hash is enough.
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'query', 'admin']),
    acts_as      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);

CREATE TABLE source_instances (
    tenant_id      uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    instance_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    kind           text NOT NULL CHECK (kind IN ('jira', 'github', 'asana')),
    name           text NOT NULL,
    base_url       text NOT NULL,
    config         jsonb NOT NULL DEFAULT '{}',
    credentials    bytea,
    sync_cursor    jsonb,
    last_synced_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, instance_id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE projects (
    tenant_id          uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_key        text NOT NULL CHECK (project_key ~ '^[A-Z][A-Z0-9_]{0,19}$'),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description        text,
    lead               text,
    issue_types        text[] NOT NULL
                       DEFAULT ARRAY['epic', 'story', 'task', 'bug', 'subtask', 'feature'],
    -- The next number to hand out in this project's keys; taken under a row lock, so two
    -- concurrent creates never collide.
    next_number        integer NOT NULL DEFAULT 1 CHECK (next_number > 0),
    source_instance_id uuid,
    source_ref         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, project_key),
    FOREIGN KEY (tenant_id, source_instance_id) REFERENCES source_instances ON DELETE SET NULL (source_instance_id)
);

-- The statuses of a project's workflow and their category.
CREATE TABLE workflow_statuses (
    tenant_id   uuid NOT NULL,
    project_key text NOT NULL,
    status      text NOT NULL CHECK (length(status) BETWEEN 1 AND 100),
    category    text NOT NULL
                CHECK (category IN ('todo', 'in_progress', 'blocked', 'in_review', 'done', 'cancelled')),
    is_initial  boolean NOT NULL DEFAULT false,
    position    smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, project_key, status),
    FOREIGN KEY (tenant_id, project_key) REFERENCES projects ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX workflow_statuses_one_initial
    ON workflow_statuses (tenant_id, project_key) WHERE is_initial;
CREATE UNIQUE INDEX workflow_statuses_status_ci
    ON workflow_statuses (tenant_id, project_key, lower(status));

-- The allowed status moves of a project.
CREATE TABLE workflow_transitions (
    tenant_id     uuid NOT NULL,
    project_key   text NOT NULL,
    transition_id text NOT NULL,
    name          text NOT NULL,
    from_status   text NOT NULL,
    to_status     text NOT NULL,
    PRIMARY KEY (tenant_id, project_key, transition_id),
    UNIQUE (tenant_id, project_key, from_status, to_status),
    FOREIGN KEY (tenant_id, project_key, from_status)
        REFERENCES workflow_statuses ON DELETE CASCADE ON UPDATE CASCADE,
    FOREIGN KEY (tenant_id, project_key, to_status)
        REFERENCES workflow_statuses ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE work_items (
    tenant_id       uuid NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    key             text NOT NULL CHECK (key ~ '^[A-Z][A-Z0-9_]{0,19}-[1-9][0-9]*$'),
    project_key     text NOT NULL,
    number          integer NOT NULL CHECK (number > 0),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 1000),
    description     text,
    type            text NOT NULL DEFAULT 'task'
                    CHECK (type IN ('epic', 'story', 'task', 'bug', 'subtask', 'feature')),
    status          text NOT NULL,
    status_category text NOT NULL
                    CHECK (status_category IN ('todo', 'in_progress', 'blocked', 'in_review', 'done', 'cancelled')),
    priority        text NOT NULL DEFAULT 'medium'
                    CHECK (priority IN ('critical', 'high', 'medium', 'low', 'none')),
    assignee        text,
    reporter        text,
    labels          text[] NOT NULL DEFAULT '{}',
    parent_key      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    due_at          timestamptz,
    custom_fields   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
    source          text NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'jira', 'github', 'asana')),
    source_id       text,
    raw             jsonb,
    version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key),
    UNIQUE (tenant_id, project_key, number),
    FOREIGN KEY (tenant_id, project_key) REFERENCES projects ON DELETE CASCADE,
    CHECK (resolved_at IS NULL OR status_category IN ('done', 'cancelled'))
);
CREATE UNIQUE INDEX work_items_source_id
    ON work_items (tenant_id, source, source_id) WHERE source_id IS NOT NULL;
CREATE INDEX work_items_project_updated ON work_items (tenant_id, project_key, updated_at DESC, id);
CREATE INDEX work_items_updated ON work_items (tenant_id, updated_at DESC, id);
CREATE INDEX work_items_created ON work_items (tenant_id, created_at DESC, id);
CREATE INDEX work_items_assignee ON work_items (tenant_id, assignee, status_category);
CREATE INDEX work_items_status_category ON work_items (tenant_id, status_category, updated_at DESC);
CREATE INDEX work_items_resolved ON work_items (tenant_id, resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX work_items_parent ON work_items (tenant_id, parent_key) WHERE parent_key IS NOT NULL;
CREATE INDEX work_items_labels ON work_items USING gin (labels);

CREATE TABLE work_item_transitions (
    tenant_id       uuid NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    work_item_id    bigint NOT NULL,
    from_status     text,
    to_status       text NOT NULL,
    from_category   text,
    to_category     text NOT NULL,
    actor           text,
    transitioned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, work_item_id) REFERENCES work_items ON DELETE CASCADE
);
CREATE INDEX work_item_transitions_item
    ON work_item_transitions (tenant_id, work_item_id, transitioned_at);
CREATE INDEX work_item_transitions_at ON work_item_transitions (tenant_id, transitioned_at);

CREATE TABLE comments (
    tenant_id    uuid NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    work_item_id bigint NOT NULL,
    author       text,
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 100000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    source_id    text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, work_item_id) REFERENCES work_items ON DELETE CASCADE
);
CREATE INDEX comments_item ON comments (tenant_id, work_item_id, created_at DESC);
CREATE UNIQUE INDEX comments_source_id
    ON comments (tenant_id, work_item_id, source_id) WHERE source_id IS NOT NULL;

CREATE TABLE work_item_links (
    tenant_id      uuid NOT NULL,
    id             bigint GENERATED ALWAYS AS IDENTITY,
    link_type      text NOT NULL CHECK (link_type IN ('blocks', 'relates', 'duplicates', 'clones')),
    -- outward_id <link_type> inward_id, read as Jira does: "A blocks B".
    outward_id     bigint NOT NULL,
    inward_id      bigint NOT NULL,
    created_by     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, link_type, outward_id, inward_id),
    CHECK (outward_id <> inward_id),
    FOREIGN KEY (tenant_id, outward_id) REFERENCES work_items ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, inward_id) REFERENCES work_items ON DELETE CASCADE
);
CREATE INDEX work_item_links_inward ON work_item_links (tenant_id, inward_id);
CREATE INDEX work_item_links_outward ON work_item_links (tenant_id, outward_id);

CREATE TABLE audit_log (
    tenant_id   uuid NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    at          timestamptz NOT NULL DEFAULT now(),
    key_id      uuid,
    actor       text,
    tool        text NOT NULL,
    arguments   jsonb,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'error')),
    error_code  text,
    duration_ms double precision,
    request_id  text,
    before      jsonb,
    after       jsonb,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_at ON audit_log (tenant_id, at DESC);

CREATE TABLE idempotency_keys (
    tenant_id    uuid NOT NULL,
    tool         text NOT NULL,
    key          text NOT NULL CHECK (key ~ '^[A-Za-z0-9_.:-]{1,255}$'),
    request_hash bytea NOT NULL,
    state        text NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, tool, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- A new project starts with the default workflow: To Do -> In Progress -> In Review -> Done,
-- with Blocked and Cancelled on the side. Runs as the inserting role, under its RLS policies.
CREATE FUNCTION add_default_workflow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workflow_statuses (tenant_id, project_key, status, category, is_initial, position)
    VALUES (NEW.tenant_id, NEW.project_key, 'To Do', 'todo', true, 1),
           (NEW.tenant_id, NEW.project_key, 'In Progress', 'in_progress', false, 2),
           (NEW.tenant_id, NEW.project_key, 'Blocked', 'blocked', false, 3),
           (NEW.tenant_id, NEW.project_key, 'In Review', 'in_review', false, 4),
           (NEW.tenant_id, NEW.project_key, 'Done', 'done', false, 5),
           (NEW.tenant_id, NEW.project_key, 'Cancelled', 'cancelled', false, 6);
    INSERT INTO workflow_transitions (tenant_id, project_key, transition_id, name, from_status, to_status)
    VALUES (NEW.tenant_id, NEW.project_key, '11', 'Start progress', 'To Do', 'In Progress'),
           (NEW.tenant_id, NEW.project_key, '12', 'Cancel', 'To Do', 'Cancelled'),
           (NEW.tenant_id, NEW.project_key, '21', 'Stop progress', 'In Progress', 'To Do'),
           (NEW.tenant_id, NEW.project_key, '22', 'Block', 'In Progress', 'Blocked'),
           (NEW.tenant_id, NEW.project_key, '23', 'Request review', 'In Progress', 'In Review'),
           (NEW.tenant_id, NEW.project_key, '24', 'Done', 'In Progress', 'Done'),
           (NEW.tenant_id, NEW.project_key, '25', 'Cancel', 'In Progress', 'Cancelled'),
           (NEW.tenant_id, NEW.project_key, '31', 'Unblock', 'Blocked', 'In Progress'),
           (NEW.tenant_id, NEW.project_key, '32', 'Cancel', 'Blocked', 'Cancelled'),
           (NEW.tenant_id, NEW.project_key, '41', 'Approve', 'In Review', 'Done'),
           (NEW.tenant_id, NEW.project_key, '42', 'Request changes', 'In Review', 'In Progress'),
           (NEW.tenant_id, NEW.project_key, '51', 'Reopen', 'Done', 'To Do'),
           (NEW.tenant_id, NEW.project_key, '61', 'Reopen', 'Cancelled', 'To Do');
    RETURN NEW;
END
$$;

CREATE TRIGGER projects_default_workflow
    AFTER INSERT ON projects
    FOR EACH ROW EXECUTE FUNCTION add_default_workflow();

-- Row-level security on every tenant-owned table. FORCE makes the policies bind the owner too;
-- an unset or empty app.tenant_id matches no row (NULL = x is never true).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'source_instances', 'projects',
                             'workflow_statuses', 'workflow_transitions', 'work_items',
                             'work_item_transitions', 'comments', 'work_item_links', 'audit_log',
                             'idempotency_keys']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid)',
            t);
    END LOOP;
END
$$;

-- The operator's commands (tenant list, apikey list and revoke) run as the owner and must see
-- every tenant's registry rows; no other role gets this.
CREATE POLICY owner_admin ON tenants TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_admin ON api_keys TO CURRENT_USER USING (true) WITH CHECK (true);

-- The runtime role: only what the server does, no ownership, no DDL.
GRANT USAGE ON SCHEMA public TO spiral_app;
GRANT SELECT ON tenants TO spiral_app;
GRANT SELECT, UPDATE (last_used_at) ON api_keys TO spiral_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON source_instances, projects, workflow_statuses,
    workflow_transitions, work_items, work_item_transitions, comments, work_item_links,
    idempotency_keys TO spiral_app;
GRANT INSERT ON audit_log TO spiral_app;
GRANT SELECT ON _yoyo_migration TO spiral_app;
