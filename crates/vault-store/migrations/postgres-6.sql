-- BYOK onboarding (see sqlite-6.sql for the why of each part).
ALTER TABLE audit_events ADD COLUMN detail TEXT;
CREATE TABLE IF NOT EXISTS byok_config (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL,
    document    TEXT   NOT NULL,
    seal        BYTEA  NOT NULL,
    seal_key_id TEXT   NOT NULL
);
