-- BYOK onboarding: the customer key providers and routing rules managed at runtime
-- (`vault byok`), next to the objects they route, and event-specific fields for the audit trail.
--
-- `detail`: the fields of an event that fit no other column, as a JSON object (a BYOK key's
-- verification outcome).
ALTER TABLE audit_events ADD COLUMN detail TEXT;
-- One row (id 1, absent until the first change): every provider and rule as one JSON document,
-- sealed by the vault's own default key (`seal`, an envelope whose associated data is the
-- document; `seal_key_id` names its key, for `vault keys status`, destroy and rewrap), so
-- whoever can write the database cannot add, change, reorder or drop a rule. `generation`
-- counts changes (each one a compare-and-swap on it): what every process holding a router
-- polls, one row read, to follow the rules within a second.
CREATE TABLE IF NOT EXISTS byok_config (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL,
    document    TEXT    NOT NULL,
    seal        BLOB    NOT NULL,
    seal_key_id TEXT    NOT NULL
);
