//! Webhook delivery: every audit event of an environment that an endpoint subscribed to is in
//! its outbox from the event's own transaction (a trigger), and this deliverer posts it, signed
//! as WorkOS signs its webhooks, so the SDKs' `webhooks.constructEvent` (Node) and
//! `webhooks.verify_event` (Python) accept it.
//!
//! At least once: an event leaves the outbox only after the endpoint answered 2xx, so a crash
//! (of the server or the receiver) means a later delivery, never a lost one. In order per
//! endpoint: one deliverer at a time holds an endpoint's lease, and a failed event is retried
//! (exponential backoff with jitter, capped) before the ones after it; after `max_attempts`
//! failures it is dead, `vault webhook list` shows it and `vault webhook replay` revives it.

mod client;
mod guard;

use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use vault_objects::webhooks::Poster;
use vault_objects::{Delivery, Timestamp, WebhookEndpoint, WebhookSecret};

use crate::events::event_json;
use client::Client;

/// `WorkOS-Signature` for `body` at `t` (Unix milliseconds): `t=<t>, v1=<hex HMAC-SHA256 of
/// "<t>.<body>" under the secret's UTF-8 bytes>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t}, v1={hex}")
}

/// The server's [`Poster`]: the event as the Events API renders it, signed at the moment of
/// sending, posted only to an address the guard allows, within `timeout`.
pub struct HttpPoster {
    client: Client,
}

impl std::fmt::Debug for HttpPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpPoster")
    }
}

impl HttpPoster {
    /// A poster that refuses link-local and metadata addresses unless `allow_link_local`.
    pub fn new(allow_link_local: bool, timeout: Duration) -> Self {
        Self {
            client: Client::new(allow_link_local, timeout),
        }
    }
}

#[async_trait::async_trait]
impl Poster for HttpPoster {
    type Connection = client::Connection;

    async fn post(
        &self,
        conn: &mut Option<client::Connection>,
        endpoint: &WebhookEndpoint,
        secret: &WebhookSecret,
        delivery: &Delivery,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(&event_json(&delivery.event)).map_err(|e| e.to_string())?;
        // Signed at the moment of sending, so a retry hours later is still within the SDKs'
        // tolerance (3 minutes by default).
        let t = Timestamp::now().0 / 1000;
        let signature = signature(secret.expose_secret(), t, &body);
        self.client
            .post(conn, &endpoint.url, body, &signature)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_workos_s() {
        // HMAC-SHA256("secret", "1700000000000.{}"), computed independently with Python's hmac.
        assert_eq!(
            signature("secret", 1_700_000_000_000, b"{}"),
            "t=1700000000000, v1=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b"
        );
    }
}
