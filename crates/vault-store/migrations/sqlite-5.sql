-- WorkOS events, webhooks and idempotent retries.
--
-- Each audit event gets a random public id (`event_…`; the sequence number would tell one
-- tenant how busy the others are; events from before this version get random ids too) and the
-- `organization_id` of its key context, for the Events API's filter.
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
ALTER TABLE audit_events ADD COLUMN organization_id TEXT;
UPDATE audit_events SET event_id = 'event_' || upper(hex(randomblob(13))),
    organization_id = json_extract(key_context, '$.organization_id')
    WHERE event_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS audit_event_id ON audit_events (event_id);
-- The Events API always filters by type.
CREATE INDEX IF NOT EXISTS audit_by_event ON audit_events (environment, event, seq);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (occurred_at);
-- Issued data keys counted out of events removed by the retention purge: what `key_usage`
-- adds to the events still kept, so no issued key is forgotten when its event ages out.
CREATE TABLE IF NOT EXISTS issued_key_totals (
    key_id TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
);
-- The first successful answer to a request with an `Idempotency-Key`, for 24 hours, written in
-- the transaction of the change it answers. `body` never holds key material.
CREATE TABLE IF NOT EXISTS idempotent_answers (
    owner        TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash BLOB    NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (owner, idem_key)
);
CREATE INDEX IF NOT EXISTS idempotent_by_time ON idempotent_answers (created_at);
-- Webhook endpoints; the signing secret is sealed by the vault's keys (secret_key_id names the
-- key, for `vault keys status` and destroy).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id            TEXT    PRIMARY KEY,
    environment   TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    events        TEXT    NOT NULL,
    secret        BLOB    NOT NULL,
    secret_key_id TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_until   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_by_environment ON webhook_endpoints (environment);
-- The outbox: one row per (endpoint, event) still to deliver, or dead after too many failures.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_seq       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, event_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_event ON webhook_deliveries (event_seq);
-- Every audit event, however it is written, enters the outbox of each endpoint of its
-- environment that subscribed to it, in the same transaction: an event acknowledged to a client
-- is never missing from the outbox.
CREATE TRIGGER IF NOT EXISTS webhook_outbox AFTER INSERT ON audit_events
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event_seq)
    SELECT w.id, NEW.seq FROM webhook_endpoints w
    WHERE w.environment = NEW.environment
      AND instr(',' || w.events || ',', ',' || NEW.event || ',') > 0;
END;
