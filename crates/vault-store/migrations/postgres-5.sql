-- WorkOS events, webhooks and idempotent retries (see sqlite-5.sql for the why of each part).
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
ALTER TABLE audit_events ADD COLUMN organization_id TEXT;
-- When the row was inserted, by the database's clock (the Events API's settle window).
ALTER TABLE audit_events ADD COLUMN inserted_at BIGINT
    DEFAULT (extract(epoch from clock_timestamp()) * 1000000)::bigint;
UPDATE audit_events SET event_id = 'event_' || upper(substr(md5(random()::text || seq::text), 1, 26)),
    organization_id = key_context::jsonb ->> 'organization_id'
    WHERE event_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS audit_event_id ON audit_events (event_id);
CREATE INDEX IF NOT EXISTS audit_by_event ON audit_events (environment, event, seq);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (occurred_at);
CREATE TABLE IF NOT EXISTS issued_key_totals (
    key_id TEXT   PRIMARY KEY,
    n      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotent_answers (
    owner        TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash BYTEA   NOT NULL,
    status       BIGINT  NOT NULL,
    body         BYTEA   NOT NULL,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (owner, idem_key)
);
CREATE INDEX IF NOT EXISTS idempotent_by_time ON idempotent_answers (created_at);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id            TEXT    PRIMARY KEY,
    environment   TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    events        TEXT    NOT NULL,
    secret        BYTEA   NOT NULL,
    secret_key_id TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    lease_owner   TEXT,
    lease_until   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_by_environment ON webhook_endpoints (environment);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_seq       BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL DEFAULT 0,
    dead            BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, event_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_event ON webhook_deliveries (event_seq);
CREATE OR REPLACE FUNCTION vault_webhook_outbox() RETURNS trigger AS $$
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event_seq)
    SELECT w.id, NEW.seq FROM webhook_endpoints w
    WHERE w.environment = NEW.environment
      AND position(',' || NEW.event || ',' IN ',' || w.events || ',') > 0;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS webhook_outbox ON audit_events;
CREATE TRIGGER webhook_outbox AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION vault_webhook_outbox();
