-- BYOK onboarding: customer key providers and routing rules managed at runtime (`vault byok`),
-- next to the objects they route, and event-specific fields for the audit trail.
--
-- `detail`: the fields of an event that fit no other column, as a JSON object (a BYOK key's
-- verification outcome).
ALTER TABLE audit_events ADD COLUMN detail TEXT;
-- A provider's definition is a provider section of vault.toml, as TOML text: one parser and one
-- set of checks for both places.
CREATE TABLE IF NOT EXISTS byok_providers (
    name       TEXT    PRIMARY KEY,
    definition TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
-- A rule: the pairs a context must hold (canonical JSON of a key context), the provider it goes
-- to, and its place in the order (first match wins, after vault.toml's rules).
CREATE TABLE IF NOT EXISTS byok_rules (
    matches     TEXT    PRIMARY KEY,
    provider    TEXT    NOT NULL REFERENCES byok_providers (name),
    position    INTEGER NOT NULL,
    verified    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
-- Bumped by every change to the two tables above, in the change's transaction: what every
-- process holding a router polls (one row read) to follow the rules within a second.
CREATE TABLE IF NOT EXISTS byok_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO byok_state (id, generation) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
