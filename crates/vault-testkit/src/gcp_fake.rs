//! A wire-level fake of the Cloud KMS REST API (`:encrypt` and `:decrypt`), on wiremock: no
//! emulator of Cloud KMS can be installed here. It is real where it matters: it holds AES-256
//! keys per crypto key version, really encrypts with the additional authenticated data, checks
//! and returns the CRC32C fields, and answers errors in Google's JSON error shape. So a wrong
//! context, a tampered ciphertext or another key's ciphertext fails as in the cloud.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The first crypto key the fake holds.
pub const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/customer";
/// The second crypto key the fake holds.
pub const OTHER: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/other";

/// A crypto key's versions (AES-256 keys, the last one primary) and whether it is enabled.
pub type CryptoKey = (Vec<[u8; 32]>, bool);

/// The fake's state.
#[derive(Default)]
pub struct Fake {
    /// AES keys by crypto key name, one per version (the last is primary), and whether enabled.
    pub keys: Mutex<HashMap<String, CryptoKey>>,
    /// Statuses to answer instead of working, for the next requests.
    /// Statuses to answer, for the next requests.
    pub faults: Mutex<Vec<(u16, &'static str)>>,
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Answer with a wrong checksum, as a response damaged in transit would have.
    pub corrupt_checksums: std::sync::atomic::AtomicBool,
    /// Methods (`encrypt`, `decrypt`) the caller is not granted: answered 403
    /// PERMISSION_DENIED, as Cloud KMS does without `cloudkms.cryptoKeyVersions.useTo…`.
    pub denied: Mutex<Vec<String>>,
}

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code)
        .insert_header("content-type", "application/json")
        .set_body_json(json!({"error": {"code": code, "status": status, "message": message}}))
}

fn b64(v: &Value, field: &str) -> Option<Vec<u8>> {
    v.get(field)
        .and_then(Value::as_str)
        .map(|s| B64.decode(s).unwrap())
}

/// int64 fields travel as JSON strings (proto3 JSON); accept numbers too.
fn int64(v: &Value, field: &str) -> Option<i64> {
    match v.get(field)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn crc(b: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(b))
}

/// The fake as a wiremock responder (a local newtype: `Arc` is foreign).
struct Responder(Arc<Fake>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.0.answer(req)
    }
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of test output too.
        f.debug_struct("Fake")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Fake {
    /// Adds a new primary version to crypto key `name` (a rotation).
    pub fn rotate(&self, name: &str) {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).unwrap();
        self.keys.lock().unwrap().get_mut(name).unwrap().0.push(k);
    }

    /// Enables or disables crypto key `name`.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        self.keys.lock().unwrap().get_mut(name).unwrap().1 = enabled;
    }

    /// Removes crypto key `name`: it is not found any more.
    pub fn delete(&self, name: &str) {
        self.keys.lock().unwrap().remove(name);
    }

    /// Refuses method `op` (`encrypt`, `decrypt`) from now on.
    pub fn deny(&self, op: &str) {
        self.denied.lock().unwrap().push(op.to_owned());
    }

    fn answer(&self, req: &Request) -> ResponseTemplate {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some((code, status)) = {
            let mut f = self.faults.lock().unwrap();
            (!f.is_empty()).then(|| f.remove(0))
        } {
            let r = google_error(code, status, "injected");
            return if code == 429 {
                r.insert_header("retry-after", "0")
            } else {
                r
            };
        }
        let path = req.url.path().trim_start_matches("/v1/").to_owned();
        let Some((name, op)) = path.rsplit_once(':') else {
            return google_error(404, "NOT_FOUND", "no such method");
        };
        if self.denied.lock().unwrap().iter().any(|d| d == op) {
            return google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'cloudkms.cryptoKeyVersions.useTo{}' denied on resource '{name}' (or it may not exist).",
                    if op == "encrypt" {
                        "Encrypt"
                    } else {
                        "Decrypt"
                    }
                ),
            );
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let aad = b64(&body, "additionalAuthenticatedData").unwrap_or_default();
        if int64(&body, "additionalAuthenticatedDataCrc32c").is_some_and(|c| c != crc(&aad)) {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "additional_authenticated_data checksum mismatch",
            );
        }
        let keys = self.keys.lock().unwrap();
        let Some((versions, enabled)) = keys.get(name) else {
            return google_error(404, "NOT_FOUND", "crypto key not found");
        };
        if !enabled {
            return google_error(
                400,
                "FAILED_PRECONDITION",
                "the primary version is disabled",
            );
        }
        match op {
            "encrypt" => {
                let pt = b64(&body, "plaintext").unwrap_or_default();
                if int64(&body, "plaintextCrc32c").is_some_and(|c| c != crc(&pt)) {
                    return google_error(400, "INVALID_ARGUMENT", "plaintext checksum mismatch");
                }
                let version = versions.len();
                let key = LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &versions[version - 1]).unwrap(),
                );
                let mut nonce = [0u8; 12];
                SystemRandom::new().fill(&mut nonce).unwrap();
                let mut sealed = pt.clone();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad),
                    &mut sealed,
                )
                .unwrap();
                let mut ct = u32::try_from(version).unwrap().to_be_bytes().to_vec();
                ct.extend_from_slice(&nonce);
                ct.extend_from_slice(&sealed);
                ResponseTemplate::new(200).set_body_json(json!({
                    "name": format!("{name}/cryptoKeyVersions/{version}"),
                    "ciphertext": B64.encode(&ct),
                    "ciphertextCrc32c": (crc(&ct) + i64::from(self.corrupt_checksums.load(Ordering::SeqCst))).to_string(),
                    "verifiedPlaintextCrc32c": body.get("plaintextCrc32c").is_some(),
                    "verifiedAdditionalAuthenticatedDataCrc32c": body.get("additionalAuthenticatedDataCrc32c").is_some(),
                    "protectionLevel": "SOFTWARE",
                }))
            }
            "decrypt" => {
                let ct = b64(&body, "ciphertext").unwrap_or_default();
                if int64(&body, "ciphertextCrc32c").is_some_and(|c| c != crc(&ct)) {
                    return google_error(400, "INVALID_ARGUMENT", "ciphertext checksum mismatch");
                }
                let invalid = || {
                    google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "Decryption failed: the ciphertext is invalid.",
                    )
                };
                if ct.len() < 4 + 12 + 16 {
                    return invalid();
                }
                let version = u32::from_be_bytes(ct[..4].try_into().unwrap()) as usize;
                let Some(aes) = version.checked_sub(1).and_then(|i| versions.get(i)) else {
                    return invalid();
                };
                let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, aes).unwrap());
                let mut buf = ct[16..].to_vec();
                let nonce: [u8; 12] = ct[4..16].try_into().unwrap();
                match key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut buf) {
                    Ok(pt) => ResponseTemplate::new(200).set_body_json(json!({
                        "plaintext": B64.encode(&*pt),
                        "plaintextCrc32c": (crc(pt) + i64::from(self.corrupt_checksums.load(Ordering::SeqCst))).to_string(),
                        "usedPrimary": version == versions.len(),
                        "protectionLevel": "SOFTWARE",
                    })),
                    Err(_) => invalid(),
                }
            }
            _ => google_error(404, "NOT_FOUND", "no such method"),
        }
    }
}

/// Starts the fake on a loopback port with the crypto keys [`KEY`] and [`OTHER`].
pub async fn start() -> (MockServer, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    for name in [KEY, OTHER] {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).unwrap();
        fake.keys
            .lock()
            .unwrap()
            .insert(name.to_owned(), (vec![k], true));
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Responder(fake.clone()))
        .mount(&server)
        .await;
    (server, fake)
}
