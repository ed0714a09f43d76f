CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT    PRIMARY KEY,
    lookup       TEXT    NOT NULL UNIQUE,
    hash         BYTEA   NOT NULL,
    environment  TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    revoked_at   BIGINT
);
