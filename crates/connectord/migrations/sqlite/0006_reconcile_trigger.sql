-- Syncs queued by the missed-push pass carry trigger 'reconcile'. SQLite
-- cannot alter a CHECK, so connector_sync_event is rebuilt; sync_job refers
-- to it, so it is set aside first and put back after (with foreign keys on,
-- a parent table cannot be dropped under its children). Same columns, same
-- indexes; only the trigger CHECK is wider.
CREATE TABLE sync_job_moving AS SELECT * FROM sync_job;
DROP TABLE sync_job;

CREATE TABLE connector_sync_event_new (
    id                  TEXT PRIMARY KEY,
    connector_target_id TEXT NOT NULL REFERENCES connector_target (id),
    delivery_id         TEXT,
    trigger             TEXT NOT NULL CHECK (trigger IN ('push', 'initial', 'manual', 'resync', 'reconcile')),
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
    completed_at        INTEGER,
    skipped_reasons     TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO connector_sync_event_new (id, connector_target_id, delivery_id, trigger, ref, head_sha, status,
    created_count, updated_count, deleted_count, skipped_count, failures, attempts, last_error, next_attempt_at,
    created_at, started_at, completed_at, skipped_reasons)
SELECT id, connector_target_id, delivery_id, trigger, ref, head_sha, status,
    created_count, updated_count, deleted_count, skipped_count, failures, attempts, last_error, next_attempt_at,
    created_at, started_at, completed_at, skipped_reasons
FROM connector_sync_event;
DROP TABLE connector_sync_event;
ALTER TABLE connector_sync_event_new RENAME TO connector_sync_event;
CREATE INDEX connector_sync_event_target ON connector_sync_event (connector_target_id, id);
CREATE INDEX connector_sync_event_status ON connector_sync_event (status, id);

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
    finished_at      INTEGER,
    connector_id     TEXT REFERENCES connector_instance (id)
);
INSERT INTO sync_job (id, sync_event_id, target_id, head_sha, payload, state, attempt, max_attempts, run_at,
    lease_owner, lease_expires_at, last_error, created_at, finished_at, connector_id)
SELECT id, sync_event_id, target_id, head_sha, payload, state, attempt, max_attempts, run_at,
    lease_owner, lease_expires_at, last_error, created_at, finished_at, connector_id
FROM sync_job_moving;
DROP TABLE sync_job_moving;
CREATE UNIQUE INDEX sync_job_dedupe ON sync_job (target_id, head_sha)
    WHERE head_sha IS NOT NULL AND state IN ('available', 'running', 'retryable');
CREATE UNIQUE INDEX sync_job_one_running ON sync_job (target_id) WHERE state = 'running';
CREATE INDEX sync_job_ready ON sync_job (run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running ON sync_job (lease_expires_at) WHERE state = 'running';
CREATE INDEX sync_job_target_state ON sync_job (target_id, state);
CREATE INDEX sync_job_finished ON sync_job (finished_at) WHERE state = 'finished';
CREATE INDEX sync_job_ready_by_connector ON sync_job (connector_id, run_at, id)
    WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running_by_connector ON sync_job (connector_id) WHERE state = 'running';
