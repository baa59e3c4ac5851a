-- The content store: what connectord holds of each target, and the change feed
-- downstream consumers follow.

ALTER TABLE connector_target ADD COLUMN max_file_bytes INTEGER NOT NULL DEFAULT 1048576;
ALTER TABLE connector_sync_event ADD COLUMN skipped_reasons TEXT NOT NULL DEFAULT '{}';

CREATE TABLE document (
    target_id     TEXT NOT NULL REFERENCES connector_target (id),
    path          TEXT NOT NULL,
    blob_sha      TEXT NOT NULL,
    size          INTEGER NOT NULL,
    is_binary     INTEGER NOT NULL,
    content       BLOB NOT NULL,
    updated_at    INTEGER NOT NULL,
    sync_event_id TEXT NOT NULL,
    PRIMARY KEY (target_id, path)
) WITHOUT ROWID;

-- Append-only: one row per applied change, in commit order.
CREATE TABLE document_change (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id     TEXT NOT NULL,
    path          TEXT NOT NULL,
    op            TEXT NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    blob_sha      TEXT,
    sync_event_id TEXT NOT NULL
);
CREATE INDEX document_change_target ON document_change (target_id, seq);
