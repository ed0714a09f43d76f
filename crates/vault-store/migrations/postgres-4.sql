-- The managed key ring kept in the database (deployments of several processes): one row per
-- ring with its generation, primary and minimum decryption version, changed only by a
-- compare-and-swap on the generation; one row per version with its root key sealed by a key
-- kept elsewhere (sealed_by names it), NULL once destroyed.
CREATE TABLE IF NOT EXISTS key_rings (
    name                   TEXT   PRIMARY KEY,
    generation             BIGINT NOT NULL,
    primary_version        BIGINT NOT NULL,
    min_decryption_version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_ring_versions (
    ring         TEXT   NOT NULL REFERENCES key_rings (name),
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    destroyed_at BIGINT,
    sealed_by    TEXT,
    sealed_root  BYTEA,
    PRIMARY KEY (ring, version),
    CHECK ((destroyed_at IS NULL) = (sealed_root IS NOT NULL AND sealed_by IS NOT NULL))
);
