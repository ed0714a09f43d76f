//! Who makes a change, and whether its answer is kept for retries: the one options argument of
//! every facade operation that may be retried with an `Idempotency-Key`.

use vault_store::{Actor, Remember, Timestamp};

use crate::integrity::{IntegrityKey, answer_tag};

/// A request sent with an `Idempotency-Key`: its first successful answer is stored in the
/// transaction of the change it answers, rendered by the facade ([`crate::wire`]) and tagged
/// with the integrity key before the change, and replayed to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotent {
    /// Whose key it is (the API key id): keys of different callers never meet.
    pub owner: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the request (method, path and body): a retry must send the same.
    pub request_hash: [u8; 32],
    /// The status the answer is given with.
    pub status: u16,
}

impl Idempotent {
    /// What the store keeps of the answer `body`, stored `at`, tagged with `key`.
    pub(crate) fn remember(&self, key: &IntegrityKey, body: Vec<u8>, at: Timestamp) -> Remember {
        let mac = answer_tag(
            key,
            &self.owner,
            &self.key,
            &self.request_hash,
            self.status,
            &body,
            at,
        )
        .to_vec();
        Remember {
            owner: self.owner.clone(),
            key: self.key.clone(),
            request_hash: self.request_hash,
            status: self.status,
            body,
            mac,
            at,
        }
    }
}

/// Who makes a change, and (for a request with an `Idempotency-Key`) the answer to keep.
/// An [`&Actor`](Actor) converts into one with nothing kept, so most callers pass their actor.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// Who makes it (recorded in the audit trail).
    pub actor: &'a Actor,
    /// The request whose answer to keep, if any.
    pub idempotent: Option<&'a Idempotent>,
}

impl<'a> Write<'a> {
    /// A change by `actor`, its answer kept for `idempotent`'s retries.
    pub fn remembered(actor: &'a Actor, idempotent: &'a Idempotent) -> Self {
        Self {
            actor,
            idempotent: Some(idempotent),
        }
    }
}

impl<'a> From<&'a Actor> for Write<'a> {
    fn from(actor: &'a Actor) -> Self {
        Self {
            actor,
            idempotent: None,
        }
    }
}
