//! Webhook delivery: every audit event of an environment that an endpoint subscribed to is in
//! its outbox from the event's own transaction (a trigger), and this deliverer hands it to a
//! [`Poster`] (the server's signed HTTP POST, as WorkOS signs its webhooks).
//!
//! At least once: an event leaves the outbox only after the endpoint answered 2xx, so a crash
//! (of the server or the receiver) means a later delivery, never a lost one. In order per
//! endpoint: one deliverer at a time holds an endpoint's lease, and a failed event is retried
//! (exponential backoff with jitter, capped) before the ones after it; after `max_attempts`
//! failures it is dead, `vault webhook list` shows it and `vault webhook replay` revives it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_store::{Delivery, Timestamp, WebhookEndpoint};

use crate::{Vault, WebhookSecret};

/// Posts one delivery to its endpoint: the server's signed HTTP POST. Errors are words for
/// `vault webhook list` and the log, never a secret.
#[async_trait::async_trait]
pub trait Poster: Send + Sync + 'static {
    /// A connection kept alive across one endpoint's deliveries.
    type Connection: Send;

    /// Posts `delivery` to `endpoint`, signed with `secret`, on `conn` if it is still open.
    async fn post(
        &self,
        conn: &mut Option<Self::Connection>,
        endpoint: &WebhookEndpoint,
        secret: &WebhookSecret,
        delivery: &Delivery,
    ) -> Result<(), String>;
}

/// How the deliverer behaves (`[webhooks]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Failed attempts after which an event is dead.
    pub max_attempts: u32,
    /// The first retry's delay; each retry doubles it.
    pub retry_base: Duration,
    /// The longest delay between retries.
    pub retry_cap: Duration,
    /// The deadline of one attempt (resolve, connect, TLS, request and answer).
    pub timeout: Duration,
    /// How often the outbox is looked at when idle.
    pub poll: Duration,
    /// Deliver to link-local and metadata addresses too (never by default).
    pub allow_link_local: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            allow_link_local: false,
        }
    }
}

/// How long a deliverer holds an endpoint beyond one attempt's deadline without renewing its
/// lease: the lease always outlives the attempt in flight, so no other deliverer can take the
/// endpoint (and post the same event, or the next one out of order) meanwhile.
const LEASE_MARGIN: Duration = Duration::from_secs(20);
/// Endpoints delivered to at once by one process.
const CONCURRENT_ENDPOINTS: usize = 8;
/// How long an endpoint that used up its turn (one attempt's deadline of deliveries) is left
/// alone, so the endpoints waiting for a slot take theirs first.
const TURN_PAUSE: Duration = Duration::from_secs(1);

/// The delay before retry number `attempt` (1 for the first): `base * 2^(attempt-1)`, capped,
/// less up to a quarter at random so endpoints that failed together do not retry together.
fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    let delay = settings
        .retry_base
        .saturating_mul(factor)
        .min(settings.retry_cap);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let jitter = delay.mul_f64(f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 4.0);
    delay.saturating_sub(jitter)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn after(d: Duration) -> Timestamp {
    Timestamp(Timestamp::now().0.saturating_add(micros(d)))
}

/// Delivers the outbox until `shutdown` resolves: leases endpoints with deliveries due and
/// works through each in order.
pub async fn run<P: Poster>(
    vault: Vault,
    settings: Settings,
    poster: P,
    shutdown: impl Future<Output = ()>,
) {
    let mut id = [0u8; 12];
    let _ = getrandom::fill(&mut id);
    let process: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let deliverer = Arc::new(Deliverer {
        vault,
        lease: settings.timeout.saturating_add(LEASE_MARGIN),
        settings,
        poster,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ENDPOINTS));
    tokio::pin!(shutdown);
    let mut leases: u64 = 0;
    loop {
        // Each lease has a token of its own, so a deliverer that lost its lease (to another
        // task of this process, or another replica) can no longer settle a delivery.
        leases = leases.wrapping_add(1);
        let token = format!("{process}-{leases}");
        let leased = match slots.clone().try_acquire_owned() {
            Err(_) => None,
            Ok(slot) => match deliverer
                .vault
                .store
                .lease_webhook(&token, Timestamp::now(), after(deliverer.lease))
                .await
            {
                Ok(Some(endpoint)) => Some((endpoint, slot)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(target: "vault::webhooks", error = %e, "cannot read the outbox");
                    None
                }
            },
        };
        match leased {
            Some((endpoint, slot)) => {
                let d = deliverer.clone();
                tokio::spawn(async move {
                    d.work(endpoint, &token).await;
                    drop(slot);
                });
            }
            None => tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(deliverer.settings.poll) => {}
            },
        }
    }
}

/// Whether `delivery` is an event `endpoint` receives: of its environment, of a type it names.
fn subscribed(endpoint: &WebhookEndpoint, delivery: &Delivery) -> bool {
    delivery.event.environment == endpoint.environment
        && endpoint.events.contains(&delivery.event.event)
}

struct Deliverer<P> {
    vault: Vault,
    settings: Settings,
    /// How long a lease lasts: one attempt's deadline and a margin.
    lease: Duration,
    poster: P,
}

impl<P: Poster> Deliverer<P> {
    /// Delivers `endpoint`'s due events in order, until one fails, none is due, the lease is
    /// lost or its turn is up; then releases it. A turn lasts one attempt's deadline: an
    /// endpoint that is slow to answer (or has a long backlog) gives its slot up after that, and
    /// is left alone for [`TURN_PAUSE`], so it cannot keep the other endpoints waiting.
    async fn work(&self, endpoint: WebhookEndpoint, token: &str) {
        let store = &self.vault.store;
        let secret = self.vault.webhook_secret(&endpoint).await;
        // Kept alive across this endpoint's deliveries.
        let mut conn = None;
        let turn = Instant::now();
        loop {
            if turn.elapsed() >= self.settings.timeout {
                // The lease runs out after the pause instead of being released now.
                let _ = store
                    .renew_webhook_lease(&endpoint.id, token, after(TURN_PAUSE))
                    .await;
                return;
            }
            let next = match store.next_delivery(&endpoint.id).await {
                Ok(Some(d)) if d.next_attempt_at <= Timestamp::now() => d,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(target: "vault::webhooks", error = %e, "cannot read the outbox");
                    break;
                }
            };
            let outcome = match &secret {
                // The outbox is rows too: only an event of the endpoint's environment and of a
                // type it subscribed to is signed and posted, whatever a row says.
                Ok(_) if !subscribed(&endpoint, &next) => {
                    Err("the outbox names an event this endpoint did not subscribe to".into())
                }
                Ok(secret) => self.poster.post(&mut conn, &endpoint, secret, &next).await,
                Err(e) => Err(format!("the signing secret cannot be opened: {e}")),
            };
            let recorded = match outcome {
                // Settled and the lease renewed in one transaction.
                Ok(()) => {
                    store
                        .delivered(&endpoint.id, next.seq, token, after(self.lease))
                        .await
                }
                Err(error) => {
                    let attempt = next.attempts.saturating_add(1);
                    let dead = attempt >= self.settings.max_attempts;
                    tracing::warn!(
                        target: "vault::webhooks",
                        endpoint = %endpoint.id, event = %next.event.id, attempt, dead, %error,
                        "delivery failed"
                    );
                    let retry = after(backoff(&self.settings, attempt));
                    let r = store
                        .delivery_failed(&endpoint.id, next.seq, token, retry, dead, &error)
                        .await;
                    if !dead {
                        // Later events wait for this one: per-endpoint order.
                        break;
                    }
                    // Dead: the next events go on, under a renewed lease.
                    match r {
                        Ok(true) => {
                            store
                                .renew_webhook_lease(&endpoint.id, token, after(self.lease))
                                .await
                        }
                        other => other,
                    }
                }
            };
            match recorded {
                Ok(true) => {}
                // The lease was lost: whoever holds it now carries on.
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(target: "vault::webhooks", error = %e, "cannot update the outbox");
                    break;
                }
            }
        }
        let _ = store.release_webhook(&endpoint.id, token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            ..Settings::default()
        };
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let d = backoff(&s, attempt);
            let full = Duration::from_secs(full);
            assert!(d <= full && d >= full.mul_f64(0.75), "{attempt}: {d:?}");
        }
    }
}
