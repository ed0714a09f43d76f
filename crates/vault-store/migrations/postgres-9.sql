-- Large values kept as segments (our extension, `PUT /vault/v1/blobs/{name}`): the head of a
-- streamed envelope (suite 4) in `blobs`, each sealed segment its own row of `blob_segments`.
-- A blob is `uploading` while its segments arrive, `live` once committed (one per name and
-- environment), `deleted` until purged.
CREATE TABLE IF NOT EXISTS blobs (
    id              TEXT    PRIMARY KEY,
    environment     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    context         BYTEA   NOT NULL,
    head            BYTEA   NOT NULL,
    key_id          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    size            BIGINT,
    segments        BIGINT,
    created_at      BIGINT  NOT NULL,
    created_by_id   TEXT    NOT NULL,
    created_by_name TEXT    NOT NULL,
    deleted_at      BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS blobs_live_name ON blobs (environment, name) WHERE state = 'live';
CREATE INDEX IF NOT EXISTS blobs_gone ON blobs (state, deleted_at, created_at) WHERE state <> 'live';
CREATE TABLE IF NOT EXISTS blob_segments (
    blob_id TEXT   NOT NULL,
    idx     BIGINT NOT NULL,
    bytes   BYTEA  NOT NULL,
    PRIMARY KEY (blob_id, idx)
);
-- Ciphertext does not compress: stored out of line without trying.
ALTER TABLE blob_segments ALTER COLUMN bytes SET STORAGE EXTERNAL;
