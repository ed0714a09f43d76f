//! The check after a load run: every object read back and compared with what its client wrote
//! last.

use std::sync::Arc;

use hyper::Method;

use super::{ClientResult, replica};
use crate::cli::client::ApiClient;

/// How many times the read-back asks for one object before it counts it as unread.
const READ_BACK_ATTEMPTS: u32 = 5;

/// What the read-back found of one object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    /// The value and version its client wrote last.
    Intact,
    /// Another value or version, or no object at all.
    Changed,
    /// No answer after [`READ_BACK_ATTEMPTS`] tries (the server refused with 429, 502, 503 or
    /// 504, or the connection failed).
    Unread,
}

/// Reads every object of `results` back, through the next replica from the one that wrote it,
/// `clients` at a time (the check is not a test of how the server sheds a burst of thousands),
/// and compares each with what its client wrote last. A read the server refused is tried again,
/// and one never answered is counted apart: it is not taken for a lost write, nor for an intact
/// one.
/// Returns how many were intact and how many could not be read.
pub(super) async fn read_back(
    bases: &[String],
    key: &str,
    clients: usize,
    results: &[ClientResult],
) -> (usize, usize) {
    let checkers: Vec<Arc<ApiClient>> = (0..bases.len().max(1))
        .map(|i| Arc::new(ApiClient::new(replica(bases, i), key)))
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(clients.max(1)));
    let mut checks = Vec::new();
    for (index, r) in results.iter().enumerate() {
        for o in &r.objects {
            let c = checkers[(index + 1) % checkers.len()].clone();
            let slots = slots.clone();
            let (id, version, value) = (o.id.clone(), o.version.clone(), o.value.clone());
            checks.push(tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.ok()?;
                Some(read_one(&c, &id, &version, &value).await)
            }));
        }
    }
    let (mut intact, mut unread) = (0, 0);
    for c in checks {
        match c.await.ok().flatten() {
            Some(Found::Intact) => intact += 1,
            Some(Found::Changed) => {}
            Some(Found::Unread) | None => unread += 1,
        }
    }
    (intact, unread)
}

/// Reads one object back (see [`read_back`]).
async fn read_one(c: &ApiClient, id: &str, version: &str, value: &str) -> Found {
    let path = format!("/vault/v1/kv/{id}");
    for attempt in 1..=READ_BACK_ATTEMPTS {
        match c.call(Method::GET, &path, None).await {
            Ok((200, obj)) => {
                let same = obj["value"] == value && obj["metadata"]["version_id"] == version;
                return if same { Found::Intact } else { Found::Changed };
            }
            // Refused for now (too many requests, unavailable, a gateway): asked again.
            Ok((429 | 502 | 503 | 504, _)) | Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
            // Anything else (404, a 500 of a value that does not decrypt) is an answer.
            Ok(_) => return Found::Changed,
        }
    }
    Found::Unread
}
