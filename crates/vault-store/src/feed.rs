//! The audit trail as a feed of events (WorkOS's Events API and webhooks): what a listing asks
//! for, the idempotent answers kept for retries, and webhook endpoints with their outbox.

use std::fmt;

use crate::query::Order;
use crate::time::Timestamp;
use crate::types::AuditEvent;

/// The largest page of events.
pub const MAX_EVENTS_LIMIT: u32 = 100;

/// What [`list_events`](crate::AuditLog::list_events) lists.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Event names to include (at least one).
    pub events: Vec<String>,
    /// Only events whose key context has this `organization_id`.
    pub organization_id: Option<String>,
    /// Only events at or after this time.
    pub range_start: Option<Timestamp>,
    /// Only events before this time.
    pub range_end: Option<Timestamp>,
    /// Events after this event id, in the listing's order.
    pub after: Option<String>,
    /// Page size, 1 to 100.
    pub limit: u32,
    /// Oldest first (the default, as WorkOS pages its events) or newest first.
    pub order: Order,
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// The events, in the listing's order.
    pub data: Vec<AuditEvent>,
    /// The id of the page's last event when more may follow (the next page's `after`).
    pub after: Option<String>,
}

/// How long an idempotent answer is kept, in microseconds: 24 hours.
pub const IDEMPOTENCY_TTL_MICROS: i64 = 24 * 3600 * 1_000_000;

/// The first successful answer to a request sent with an `Idempotency-Key`, to store in the
/// transaction of the change it answers. Made whole above the store: its body rendered and its
/// tag made before the change; the store keeps the bytes.
#[derive(Clone)]
pub struct Remember {
    /// Whose key it is (the API key id): keys of different callers never meet.
    pub owner: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the request (method, path and body): a retry must send the same.
    pub request_hash: [u8; 32],
    /// The answer's status.
    pub status: u16,
    /// The answer's body (never key material).
    pub body: Vec<u8>,
    /// Its integrity tag (empty: none, and it is never replayed).
    pub mac: Vec<u8>,
    /// When it is stored: it is kept [`IDEMPOTENCY_TTL_MICROS`] from then.
    pub at: Timestamp,
}

impl fmt::Debug for Remember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remember")
            .field("owner", &self.owner)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An answer stored by a [`Remember`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The hash of the request it answered.
    pub request_hash: Vec<u8>,
    /// Its status.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// Its integrity tag as stored (empty: none), checked above the store.
    pub mac: Vec<u8>,
}

/// A webhook endpoint as stored: where to deliver which events of one environment, and the
/// signing secret sealed by the vault's keys.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `we_…`.
    pub id: String,
    /// The environment whose events it receives.
    pub environment: String,
    /// Where deliveries are posted.
    pub url: String,
    /// The event names it receives.
    pub events: Vec<String>,
    /// The signing secret, sealed.
    pub sealed_secret: Vec<u8>,
    /// The key that wraps the sealed secret's data key.
    pub secret_key_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Deliveries still to make.
    pub pending: u64,
    /// Deliveries given up after too many failures (`vault webhook replay` retries them).
    pub dead: u64,
    /// Why the latest failed attempt failed, if one did.
    pub last_error: Option<String>,
    /// The row's integrity tag, made and checked above the store (empty: none).
    pub mac: Vec<u8>,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("environment", &self.environment)
            .field("events", &self.events)
            .field("pending", &self.pending)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

/// One delivery of the outbox: an event for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The endpoint.
    pub endpoint_id: String,
    /// The event's position in the trail.
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it may be tried (again).
    pub next_attempt_at: Timestamp,
}
