CREATE TABLE IF NOT EXISTS objects (
    id              TEXT    PRIMARY KEY,
    environment     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    context         BLOB    NOT NULL,
    current_version TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    deleted_at      INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_live_name ON objects (environment, name) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS objects_listing ON objects (environment, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS objects_deleted ON objects (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS versions (
    object_id       TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    id              TEXT    NOT NULL,
    envelope        BLOB    NOT NULL,
    size            INTEGER NOT NULL,
    etag            TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by_id   TEXT    NOT NULL,
    created_by_name TEXT    NOT NULL,
    PRIMARY KEY (object_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_id ON versions (object_id, id);
CREATE TABLE IF NOT EXISTS audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment  TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    actor_id     TEXT    NOT NULL,
    actor_name   TEXT    NOT NULL,
    object_id    TEXT,
    object_name  TEXT,
    key_id       TEXT,
    key_context  TEXT,
    occurred_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_environment ON audit_events (environment, seq);
