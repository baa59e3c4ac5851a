-- Content-addressed blobs and readable revisions: the same tables and indexes
-- as migrations/sqlite/0005 (comments there).
CREATE TABLE blob (
    sha        TEXT COLLATE "C" PRIMARY KEY,
    size       BIGINT NOT NULL,
    content    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

INSERT INTO blob (sha, size, content, created_at)
    SELECT DISTINCT ON (blob_sha) blob_sha, size, content, updated_at
    FROM document ORDER BY blob_sha, updated_at;

-- PostgreSQL drops the column in place (its space is reused as rows are
-- rewritten; VACUUM FULL returns it at once).
ALTER TABLE document DROP CONSTRAINT document_pkey;
ALTER TABLE document DROP COLUMN content;
ALTER TABLE document ADD COLUMN from_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE document ALTER COLUMN from_seq DROP DEFAULT;
ALTER TABLE document ADD COLUMN to_seq BIGINT;
ALTER TABLE document ADD PRIMARY KEY (target_id, path, from_seq);
ALTER TABLE document ADD CONSTRAINT document_blob_fk FOREIGN KEY (blob_sha) REFERENCES blob (sha);
CREATE UNIQUE INDEX document_current ON document (target_id, path) WHERE to_seq IS NULL;
CREATE INDEX document_blob ON document (blob_sha);
CREATE INDEX document_ended ON document (target_id, to_seq) WHERE to_seq IS NOT NULL;

ALTER TABLE document_change ADD COLUMN head_sha TEXT;
UPDATE document_change c SET head_sha = e.head_sha
    FROM connector_sync_event e WHERE e.id = c.sync_event_id;

CREATE TABLE target_revision (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id     TEXT NOT NULL REFERENCES connector_target (id),
    head_sha      TEXT,
    end_seq       BIGINT NOT NULL,
    complete      BOOLEAN NOT NULL,
    sync_event_id TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX target_revision_target ON target_revision (target_id, id);
CREATE INDEX target_revision_head ON target_revision (target_id, head_sha);

INSERT INTO target_revision (target_id, head_sha, end_seq, complete, sync_event_id, created_at)
    SELECT t.id, t.last_synced_sha,
           coalesce((SELECT max(c.seq) FROM document_change c WHERE c.target_id = t.id), 0),
           TRUE, NULL, coalesce(t.last_synced_at, t.updated_at)
    FROM connector_target t
    WHERE t.last_synced_sha IS NOT NULL
       OR EXISTS (SELECT 1 FROM document d WHERE d.target_id = t.id);
