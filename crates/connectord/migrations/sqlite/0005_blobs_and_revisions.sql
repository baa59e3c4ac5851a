-- Content-addressed blobs and readable revisions.
--
-- `blob` holds each git blob's bytes once (key: the git blob id, the sha1 of
-- `blob <len>\0` + bytes), however many targets, branches and commits have
-- the file. It is a rowid table: large rows belong there, not in a WITHOUT
-- ROWID table. `created_at` is what the blob collector's grace period reads.
CREATE TABLE blob (
    sha        TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    content    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Existing bytes move into `blob` under the SHA they were stored (and served,
-- as the ETag) under, so every document reads back the same.
INSERT INTO blob (sha, size, content, created_at)
    SELECT blob_sha, size, content, min(updated_at) FROM document GROUP BY blob_sha;

-- `document` now keeps versions: a row is what `path` held from the feed entry
-- `from_seq` until the one `to_seq` (NULL: still current). A revision ending at
-- seq E shows the rows with from_seq <= E < coalesce(to_seq, ∞). Rows are small
-- again (no bytes), so WITHOUT ROWID fits. SQLite cannot drop a column under a
-- primary key, hence the rebuild.
CREATE TABLE document_v2 (
    target_id     TEXT NOT NULL REFERENCES connector_target (id),
    path          TEXT NOT NULL,
    from_seq      INTEGER NOT NULL,
    to_seq        INTEGER,
    blob_sha      TEXT NOT NULL REFERENCES blob (sha),
    size          INTEGER NOT NULL,
    is_binary     INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    sync_event_id TEXT NOT NULL,
    PRIMARY KEY (target_id, path, from_seq)
) WITHOUT ROWID;
INSERT INTO document_v2 (target_id, path, from_seq, to_seq, blob_sha, size, is_binary, updated_at, sync_event_id)
    SELECT target_id, path, 0, NULL, blob_sha, size, is_binary, updated_at, sync_event_id FROM document;
DROP TABLE document;
ALTER TABLE document_v2 RENAME TO document;
CREATE UNIQUE INDEX document_current ON document (target_id, path) WHERE to_seq IS NULL;
CREATE INDEX document_sync_event ON document (sync_event_id);
CREATE INDEX document_blob ON document (blob_sha);
CREATE INDEX document_ended ON document (target_id, to_seq) WHERE to_seq IS NOT NULL;

-- Which revision (head SHA) each feed entry belongs to.
ALTER TABLE document_change ADD COLUMN head_sha TEXT;
UPDATE document_change SET head_sha =
    (SELECT e.head_sha FROM connector_sync_event e WHERE e.id = document_change.sync_event_id);

-- One row per finished sync of a target: the snapshot it left, as the feed
-- position it ends at. `head_sha` is NULL only for a revision whose head was
-- never known (backfilled below).
CREATE TABLE target_revision (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id     TEXT NOT NULL REFERENCES connector_target (id),
    head_sha      TEXT,
    end_seq       INTEGER NOT NULL,
    complete      INTEGER NOT NULL,
    sync_event_id TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX target_revision_target ON target_revision (target_id, id);
CREATE INDEX target_revision_head ON target_revision (target_id, head_sha);

-- What each target holds today becomes its first readable revision.
INSERT INTO target_revision (target_id, head_sha, end_seq, complete, sync_event_id, created_at)
    SELECT t.id, t.last_synced_sha,
           coalesce((SELECT max(c.seq) FROM document_change c WHERE c.target_id = t.id), 0),
           1, NULL, coalesce(t.last_synced_at, t.updated_at)
    FROM connector_target t
    WHERE t.last_synced_sha IS NOT NULL
       OR EXISTS (SELECT 1 FROM document d WHERE d.target_id = t.id);
