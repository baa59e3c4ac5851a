-- connectord schema, PostgreSQL dialect: the same tables, columns and indexes
-- as migrations/sqlite (0001-0004), so one set of statements serves both.
-- Times are Unix milliseconds (BIGINT). JSON is kept as TEXT, as on SQLite.
-- Ids and paths compare bytewise (COLLATE "C"), as SQLite compares them, so
-- listings page and sort the same on both.

CREATE TABLE connector_instance (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    connector_type       TEXT NOT NULL DEFAULT 'github',
    installation_id      BIGINT NOT NULL UNIQUE,
    account_login        TEXT,
    status               TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    repository_selection TEXT,
    permissions          TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE connector_target (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    connector_id         TEXT NOT NULL REFERENCES connector_instance (id),
    repository_full_name TEXT NOT NULL,
    repository_id        BIGINT,
    branch               TEXT NOT NULL,
    path_prefix          TEXT NOT NULL DEFAULT '',
    -- 'removed' is an admin delete: kept so sync history still points somewhere.
    status               TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'inaccessible', 'deleted', 'removed')),
    health               TEXT NOT NULL DEFAULT 'pending'
                         CHECK (health IN ('pending', 'ok', 'failing', 'inaccessible', 'branch_deleted')),
    archived             BOOLEAN NOT NULL DEFAULT FALSE,
    latest_head_sha      TEXT,
    last_synced_sha      TEXT,
    last_synced_at       BIGINT,
    max_file_bytes       BIGINT NOT NULL DEFAULT 1048576,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE UNIQUE INDEX connector_target_identity
    ON connector_target (connector_id, lower(repository_full_name), branch, path_prefix)
    WHERE status <> 'removed';
CREATE INDEX connector_target_repository_id ON connector_target (repository_id);
CREATE INDEX connector_target_full_name ON connector_target (lower(repository_full_name));
CREATE INDEX connector_target_connector ON connector_target (connector_id);

-- Pushes recorded per target: what the stale-push rule looks back on.
CREATE TABLE target_push (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id   TEXT NOT NULL REFERENCES connector_target (id),
    before_sha  TEXT NOT NULL,
    after_sha   TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX target_push_before ON target_push (target_id, before_sha);
CREATE INDEX target_push_received ON target_push (received_at);

CREATE TABLE webhook_delivery (
    seq                          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id                  TEXT NOT NULL UNIQUE,
    event                        TEXT NOT NULL,
    action                       TEXT,
    installation_id              BIGINT,
    repository_id                BIGINT,
    repository_full_name         TEXT,
    ref                          TEXT,
    head_sha                     TEXT,
    hook_id                      TEXT,
    hook_installation_target_id  TEXT,
    outcome                      TEXT NOT NULL CHECK (outcome IN ('accepted', 'ignored', 'duplicate')),
    reason                       TEXT,
    sync_event_ids               TEXT NOT NULL DEFAULT '[]',
    content_type                 TEXT,
    body                         BYTEA,
    replay_of                    TEXT,
    received_at                  BIGINT NOT NULL
);
CREATE INDEX webhook_delivery_body_age ON webhook_delivery (received_at) WHERE body IS NOT NULL;
CREATE INDEX webhook_delivery_received ON webhook_delivery (received_at);
CREATE INDEX webhook_delivery_replay_of ON webhook_delivery (replay_of) WHERE replay_of IS NOT NULL;

CREATE TABLE connector_sync_event (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    connector_target_id TEXT NOT NULL REFERENCES connector_target (id),
    delivery_id         TEXT,
    trigger             TEXT NOT NULL CHECK (trigger IN ('push', 'initial', 'manual', 'resync')),
    ref                 TEXT NOT NULL,
    head_sha            TEXT,
    status              TEXT NOT NULL
                        CHECK (status IN ('queued', 'running', 'completed', 'partial', 'failed', 'superseded', 'cancelled')),
    created_count       BIGINT NOT NULL DEFAULT 0,
    updated_count       BIGINT NOT NULL DEFAULT 0,
    deleted_count       BIGINT NOT NULL DEFAULT 0,
    skipped_count       BIGINT NOT NULL DEFAULT 0,
    skipped_reasons     TEXT NOT NULL DEFAULT '{}',
    failures            TEXT NOT NULL DEFAULT '[]',
    attempts            BIGINT NOT NULL DEFAULT 0,
    last_error          TEXT,
    next_attempt_at     BIGINT,
    created_at          BIGINT NOT NULL,
    started_at          BIGINT,
    completed_at        BIGINT
);
CREATE INDEX connector_sync_event_target ON connector_sync_event (connector_target_id, id);
CREATE INDEX connector_sync_event_status ON connector_sync_event (status, id);

-- The queue. A job is 'finished' once its sync event has a final status; the
-- row stays (attempts, last error) until retention prunes it.
CREATE TABLE sync_job (
    id               TEXT COLLATE "C" PRIMARY KEY,
    sync_event_id    TEXT NOT NULL UNIQUE REFERENCES connector_sync_event (id),
    target_id        TEXT NOT NULL REFERENCES connector_target (id),
    -- The target's connector, so claims can pick an installation by index.
    connector_id     TEXT COLLATE "C" NOT NULL REFERENCES connector_instance (id),
    head_sha         TEXT,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('available', 'running', 'retryable', 'finished')),
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
-- Dedupe on (target, head) among unfinished jobs only: A->B->A must run A again.
CREATE UNIQUE INDEX sync_job_dedupe ON sync_job (target_id, head_sha)
    WHERE head_sha IS NOT NULL AND state IN ('available', 'running', 'retryable');
-- At most one running job per target, whatever the claim query does.
CREATE UNIQUE INDEX sync_job_one_running ON sync_job (target_id) WHERE state = 'running';
CREATE INDEX sync_job_ready ON sync_job (run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running ON sync_job (lease_expires_at) WHERE state = 'running';
CREATE INDEX sync_job_target_state ON sync_job (target_id, state);
CREATE INDEX sync_job_finished ON sync_job (finished_at) WHERE state = 'finished';
-- Fair claims pick an installation first (fewest running jobs, then oldest
-- waiting job) and then its oldest runnable job: index seeks per installation,
-- so a claim costs the same with ten queued jobs or ten thousand.
CREATE INDEX sync_job_ready_by_connector ON sync_job (connector_id, run_at, id)
    WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running_by_connector ON sync_job (connector_id) WHERE state = 'running';

-- The content store: what connectord holds of each target, and the change feed
-- downstream consumers follow.
CREATE TABLE document (
    target_id     TEXT NOT NULL REFERENCES connector_target (id),
    path          TEXT COLLATE "C" NOT NULL,
    blob_sha      TEXT NOT NULL,
    size          BIGINT NOT NULL,
    is_binary     BOOLEAN NOT NULL,
    content       BYTEA NOT NULL,
    updated_at    BIGINT NOT NULL,
    sync_event_id TEXT NOT NULL,
    PRIMARY KEY (target_id, path)
);
CREATE INDEX document_sync_event ON document (sync_event_id);

-- Append-only: one row per applied change, in commit order per target (the
-- target's row lock orders a target's syncs).
CREATE TABLE document_change (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id     TEXT NOT NULL,
    path          TEXT COLLATE "C" NOT NULL,
    op            TEXT NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    blob_sha      TEXT,
    sync_event_id TEXT NOT NULL
);
CREATE INDEX document_change_target ON document_change (target_id, seq);
