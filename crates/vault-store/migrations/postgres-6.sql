-- BYOK onboarding (see sqlite-6.sql for the why of each part).
ALTER TABLE audit_events ADD COLUMN detail TEXT;
CREATE TABLE IF NOT EXISTS byok_providers (
    name       TEXT   PRIMARY KEY,
    definition TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS byok_rules (
    matches     TEXT   PRIMARY KEY,
    provider    TEXT   NOT NULL REFERENCES byok_providers (name),
    position    BIGINT NOT NULL,
    verified    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS byok_state (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO byok_state (id, generation) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
