-- How much each key wraps: `vault keys status` and `vault keys destroy` count stored versions
-- and issued data keys by key reference.
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (key_id);
CREATE INDEX IF NOT EXISTS audit_issued_keys ON audit_events (key_id) WHERE event IN ('vault.dek.read', 'vault.dek.rekeyed');
