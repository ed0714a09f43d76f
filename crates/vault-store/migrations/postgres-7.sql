-- Row integrity: the database is untrusted storage. The rows that decide who may do what carry a
-- tag (HMAC-SHA256 under the deployment's integrity key, which the database never sees), so a
-- row that a database writer added or changed is refused. NULL: a row from before this version,
-- tagged once by the upgrade (`vault keys protect`, or the first start of an embedded store).
ALTER TABLE api_keys ADD COLUMN mac BYTEA;
ALTER TABLE webhook_endpoints ADD COLUMN mac BYTEA;
-- A managed ring kept in the database: the tag covers its row and its versions' rows (all but
-- the sealed keys, which their seal binds to their place).
ALTER TABLE key_rings ADD COLUMN mac BYTEA;
-- An idempotent answer: the tag covers its owner, key, request hash, status and body.
ALTER TABLE idempotent_answers ADD COLUMN mac BYTEA;
-- One row (id 1, absent until the store is protected): the integrity key sealed like a root key
-- (NULL where it is kept in a file beside the key ring), and the record of what exists, tagged:
-- the BYOK document's generation, so a deleted or older document is refused, and the API keys
-- revoked and webhook endpoints deleted (ids, comma-separated), so an older copy of their row
-- put back is refused.
CREATE TABLE IF NOT EXISTS integrity (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    sealed_key       BYTEA,
    sealed_by        TEXT,
    byok_generation  BIGINT  NOT NULL,
    revoked_api_keys TEXT   NOT NULL DEFAULT '',
    deleted_webhooks TEXT   NOT NULL DEFAULT '',
    mac              BYTEA   NOT NULL
);
