-- connectord schema, SQLite dialect. Times are Unix milliseconds (INTEGER).

CREATE TABLE connector_instance (
    id                   TEXT PRIMARY KEY,
    connector_type       TEXT NOT NULL DEFAULT 'github',
    installation_id      INTEGER NOT NULL UNIQUE,
    account_login        TEXT,
    status               TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    repository_selection TEXT,
    permissions          TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

CREATE TABLE connector_target (
    id                   TEXT PRIMARY KEY,
    connector_id         TEXT NOT NULL REFERENCES connector_instance (id),
    repository_full_name TEXT NOT NULL,
    repository_id        INTEGER,
    branch               TEXT NOT NULL,
    path_prefix          TEXT NOT NULL DEFAULT '',
    -- 'removed' is an admin delete: kept so sync history still points somewhere.
    status               TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'inaccessible', 'deleted', 'removed')),
    health               TEXT NOT NULL DEFAULT 'pending'
                         CHECK (health IN ('pending', 'ok', 'failing', 'inaccessible', 'branch_deleted')),
    archived             INTEGER NOT NULL DEFAULT 0,
    latest_head_sha      TEXT,
    last_synced_sha      TEXT,
    last_synced_at       INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE UNIQUE INDEX connector_target_identity
    ON connector_target (connector_id, lower(repository_full_name), branch, path_prefix)
    WHERE status <> 'removed';
CREATE INDEX connector_target_repository_id ON connector_target (repository_id);
CREATE INDEX connector_target_full_name ON connector_target (lower(repository_full_name));

-- Pushes recorded per target: what the stale-push rule looks back on.
CREATE TABLE target_push (
    target_id   TEXT NOT NULL REFERENCES connector_target (id),
    before_sha  TEXT NOT NULL,
    after_sha   TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX target_push_before ON target_push (target_id, before_sha);

CREATE TABLE webhook_delivery (
    seq                          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id                  TEXT NOT NULL UNIQUE,
    event                        TEXT NOT NULL,
    action                       TEXT,
    installation_id              INTEGER,
    repository_id                INTEGER,
    repository_full_name         TEXT,
    ref                          TEXT,
    head_sha                     TEXT,
    hook_id                      TEXT,
    hook_installation_target_id  TEXT,
    outcome                      TEXT NOT NULL CHECK (outcome IN ('accepted', 'ignored', 'duplicate')),
    reason                       TEXT,
    sync_event_ids               TEXT NOT NULL DEFAULT '[]',
    content_type                 TEXT,
    body                         BLOB,
    replay_of                    TEXT,
    received_at                  INTEGER NOT NULL
);
CREATE INDEX webhook_delivery_body_age ON webhook_delivery (received_at) WHERE body IS NOT NULL;

CREATE TABLE connector_sync_event (
    id                  TEXT PRIMARY KEY,
    connector_target_id TEXT NOT NULL REFERENCES connector_target (id),
    delivery_id         TEXT,
    trigger             TEXT NOT NULL CHECK (trigger IN ('push', 'initial', 'manual', 'resync')),
    ref                 TEXT NOT NULL,
    head_sha            TEXT,
    status              TEXT NOT NULL
                        CHECK (status IN ('queued', 'running', 'completed', 'partial', 'failed', 'superseded', 'cancelled')),
    created_count       INTEGER NOT NULL DEFAULT 0,
    updated_count       INTEGER NOT NULL DEFAULT 0,
    deleted_count       INTEGER NOT NULL DEFAULT 0,
    skipped_count       INTEGER NOT NULL DEFAULT 0,
    failures            TEXT NOT NULL DEFAULT '[]',
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    next_attempt_at     INTEGER,
    created_at          INTEGER NOT NULL,
    started_at          INTEGER,
    completed_at        INTEGER
);
CREATE INDEX connector_sync_event_target ON connector_sync_event (connector_target_id, id);
CREATE INDEX connector_sync_event_status ON connector_sync_event (status, id);

-- The queue. A job is 'finished' once its sync event has a final status; the
-- row stays (attempts, last error) until retention prunes it.
CREATE TABLE sync_job (
    id               TEXT PRIMARY KEY,
    sync_event_id    TEXT NOT NULL UNIQUE REFERENCES connector_sync_event (id),
    target_id        TEXT NOT NULL REFERENCES connector_target (id),
    head_sha         TEXT,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('available', 'running', 'retryable', 'finished')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
-- Dedupe on (target, head) among unfinished jobs only: A->B->A must run A again.
CREATE UNIQUE INDEX sync_job_dedupe ON sync_job (target_id, head_sha)
    WHERE head_sha IS NOT NULL AND state IN ('available', 'running', 'retryable');
-- At most one running job per target, whatever the claim query does.
CREATE UNIQUE INDEX sync_job_one_running ON sync_job (target_id) WHERE state = 'running';
CREATE INDEX sync_job_ready ON sync_job (run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running ON sync_job (lease_expires_at) WHERE state = 'running';
-- Per-target lookups (supersede, cancel, has-unfinished) must not scan the queue.
CREATE INDEX sync_job_target_state ON sync_job (target_id, state);
