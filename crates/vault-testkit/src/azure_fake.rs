//! A wire-level fake of the Azure Key Vault keys data plane (`wrapkey`, `unwrapkey`, `sign`
//! and `get` of a key version), on wiremock: no Key Vault emulator can be installed here. It is
//! real where it matters: it plays the 401 bearer challenge the SDK answers before it sends a
//! body, holds RSA-2048 keys with versions, really wraps and unwraps with RSA-OAEP-256 and signs
//! digests with RS256 (aws-lc), answers the public key as a JWK, refuses disabled keys with Key
//! Vault's `Forbidden`/`KeyDisabled` error, and answers errors in Key Vault's JSON shape. So a
//! tampered wrapped key or another key's wrap fails as it would in Azure.
//!
//! The SDK refuses to send a token over plain HTTP, so the provider keeps its
//! `https://<vault>.vault.azure.net/` URL and [`transport`] rewrites each request to the fake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::KeyPair as _;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::{AsyncRawResponse, HttpClient, Request as AzRequest, Transport};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The vault the fake serves.
pub const VAULT_URL: &str = "https://customer.vault.azure.net/";
/// Its host.
pub const VAULT_HOST: &str = "customer.vault.azure.net";
/// The first key the fake holds.
pub const KEY: &str = "customer-key";
/// The second key the fake holds.
pub const OTHER: &str = "other-key";
/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-entra-token";

/// One RSA key version: the same private key for decryption and for signing.
pub struct RsaVersion {
    /// For `unwrapkey`.
    pub decrypting: PrivateDecryptingKey,
    /// For `sign` and the public JWK.
    pub signing: KeyPair,
}

impl std::fmt::Debug for RsaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaVersion").finish_non_exhaustive()
    }
}

impl RsaVersion {
    fn generate() -> Self {
        let signing = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = signing.as_der().unwrap();
        Self {
            decrypting: PrivateDecryptingKey::from_pkcs8(der.as_ref()).unwrap(),
            signing,
        }
    }

    /// The public modulus and exponent, big-endian: what an attacker may know.
    pub fn public_components(&self) -> (Vec<u8>, Vec<u8>) {
        let public = self.signing.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    /// RSA-OAEP-256 encryption with the public key alone.
    pub fn encrypt_with_public_key(&self, plaintext: &[u8]) -> Vec<u8> {
        let public = OaepPublicEncryptingKey::new(self.decrypting.public_key()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        public
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .unwrap()
            .to_vec()
    }
}

/// One Key Vault key: its versions (oldest first; the last is current) and whether enabled.
pub struct FakeKey {
    /// (version id, RSA key).
    pub versions: Vec<(String, RsaVersion)>,
    /// Disabled keys refuse every operation.
    pub enabled: bool,
}

impl std::fmt::Debug for FakeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKey")
            .field("versions", &self.versions.len())
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// The fake's state.
#[derive(Default)]
pub struct Fake {
    /// Keys by name.
    pub keys: Mutex<HashMap<String, FakeKey>>,
    /// (status, Key Vault error code) to answer instead of working, for the next requests.
    pub faults: Mutex<Vec<(u16, &'static str)>>,
    /// Requests answered (challenges included).
    pub requests: AtomicUsize,
    /// Requests that came without a token and were challenged.
    pub challenges: AtomicUsize,
    /// Requests answered, by operation (`wrapkey`, `unwrapkey`, `sign`, `get`).
    pub operations: Mutex<HashMap<String, usize>>,
    /// Operations the caller's identity is not granted (answered 403 Forbidden, as Key Vault
    /// does for a missing access policy permission or RBAC data action).
    pub denied: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

fn kv_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/json; charset=utf-8")
        .set_body_json(json!({"error": {"code": code, "message": message}}))
}

fn new_version() -> String {
    let mut b = [0u8; 16];
    getrandom_fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom_fill(b: &mut [u8]) {
    use ring::rand::{SecureRandom, SystemRandom};
    SystemRandom::new().fill(b).unwrap();
}

fn rsa_key() -> RsaVersion {
    RsaVersion::generate()
}

struct Responder(Arc<Fake>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.0.answer(req)
    }
}

impl Fake {
    /// Adds a new current version to key `name` (a rotation).
    pub fn rotate(&self, name: &str) {
        let mut keys = self.keys.lock().unwrap();
        keys.get_mut(name)
            .unwrap()
            .versions
            .push((new_version(), rsa_key()));
    }

    /// Enables or disables key `name`.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        self.keys.lock().unwrap().get_mut(name).unwrap().enabled = enabled;
    }

    /// Deletes key `name` (soft delete: it is not found any more).
    pub fn delete(&self, name: &str) {
        self.keys.lock().unwrap().remove(name);
    }

    /// Refuses operation `op` (`wrapkey`, `unwrapkey`, `sign`, `get`) from now on, as Key Vault
    /// does when the identity lacks the permission.
    pub fn deny(&self, op: &str) {
        self.denied.lock().unwrap().push(op.to_owned());
    }

    /// How many `op` requests were answered (past the challenge and injected faults).
    pub fn count(&self, op: &str) -> usize {
        self.operations
            .lock()
            .unwrap()
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    fn answer(&self, req: &Request) -> ResponseTemplate {
        self.requests.fetch_add(1, Ordering::SeqCst);
        // The challenge: Key Vault's SDK first sends no token (and no body), learns the tenant
        // and resource from WWW-Authenticate, then retries with a token.
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {TOKEN}") {
            self.challenges.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\"",
                )
                .insert_header("content-type", "application/json; charset=utf-8")
                .set_body_json(json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}));
        }
        if let Some((status, code)) = {
            let mut f = self.faults.lock().unwrap();
            (!f.is_empty()).then(|| f.remove(0))
        } {
            let r = kv_error(status, code, "injected");
            return if status == 429 {
                r.insert_header("retry-after", "0")
            } else {
                r
            };
        }
        if req.url.query_pairs().all(|(k, _)| k != "api-version") {
            return kv_error(400, "BadParameter", "api-version is required");
        }
        // POST /keys/{name}/{version}/{op} or GET /keys/{name}/{version}; the version may be
        // empty (the current one).
        let parts: Vec<&str> = req.url.path().trim_start_matches('/').split('/').collect();
        let (name, version, op) = match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["keys", name, version, op]) => (*name, *version, *op),
            ("GET", ["keys", name, version]) => (*name, *version, "get"),
            _ => return kv_error(404, "NotFound", "no such operation"),
        };
        *self
            .operations
            .lock()
            .unwrap()
            .entry(op.to_owned())
            .or_default() += 1;
        if self.denied.lock().unwrap().iter().any(|d| d == op) {
            return kv_error(
                403,
                "Forbidden",
                &format!(
                    "The user, group or application does not have keys {op} permission on key vault."
                ),
            );
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let expected_alg = match op {
            "get" => None,
            "sign" => Some("RS256"),
            _ => Some("RSA-OAEP-256"),
        };
        if body.get("alg").and_then(Value::as_str) != expected_alg {
            return kv_error(400, "BadParameter", "unsupported algorithm for an RSA key");
        }
        let value = body
            .get("value")
            .and_then(Value::as_str)
            .and_then(|v| B64URL.decode(v).ok());
        if value.is_none() && op != "get" {
            return kv_error(400, "BadParameter", "value is not base64url");
        }
        let value = value.unwrap_or_default();
        let keys = self.keys.lock().unwrap();
        let Some(key) = keys.get(name) else {
            return kv_error(
                404,
                "KeyNotFound",
                &format!("A key with (name/id) {name} was not found in this key vault."),
            );
        };
        if !key.enabled {
            return ResponseTemplate::new(403)
                .insert_header("content-type", "application/json; charset=utf-8")
                .set_body_json(json!({"error": {"code": "Forbidden", "message": format!("Operation {op} is not allowed on a disabled key."), "innererror": {"code": "KeyDisabled"}}}));
        }
        let found = if version.is_empty() {
            key.versions.last()
        } else {
            key.versions.iter().find(|(v, _)| v == version)
        };
        let Some((version, private)) = found else {
            return kv_error(404, "KeyNotFound", "the key version was not found");
        };
        let kid = format!("https://{VAULT_HOST}/keys/{name}/{version}");
        let ok = |body: Value| {
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json; charset=utf-8")
                .set_body_json(body)
        };
        match op {
            "get" => {
                let (n, e) = private.public_components();
                ok(json!({"key": {
                    "kid": kid, "kty": "RSA",
                    "key_ops": ["wrapKey", "unwrapKey", "sign", "verify"],
                    "n": B64URL.encode(n), "e": B64URL.encode(e),
                }}))
            }
            "sign" => {
                let Ok(digest) =
                    aws_lc_rs::digest::Digest::import_less_safe(&value, &aws_lc_rs::digest::SHA256)
                else {
                    return kv_error(400, "BadParameter", "RS256 signs a 32-byte digest");
                };
                let mut sig = vec![0u8; private.signing.public_modulus_len()];
                private
                    .signing
                    .sign_digest(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &digest, &mut sig)
                    .unwrap();
                ok(json!({"kid": kid, "value": B64URL.encode(sig)}))
            }
            "wrapkey" => {
                let public = OaepPublicEncryptingKey::new(private.decrypting.public_key()).unwrap();
                if value.len() > public.max_plaintext_size(&OAEP_SHA256_MGF1SHA256) {
                    return kv_error(400, "BadParameter", "value too long for the key");
                }
                let mut out = vec![0u8; public.ciphertext_size()];
                let ct = public
                    .encrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None)
                    .unwrap();
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json; charset=utf-8")
                    .set_body_json(json!({"kid": kid, "value": B64URL.encode(ct)}))
            }
            "unwrapkey" => {
                let decrypting = OaepPrivateDecryptingKey::new(private.decrypting.clone()).unwrap();
                let mut out = vec![0u8; decrypting.min_output_size()];
                match decrypting.decrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None) {
                    Ok(pt) => ResponseTemplate::new(200)
                        .insert_header("content-type", "application/json; charset=utf-8")
                        .set_body_json(json!({"kid": kid, "value": B64URL.encode(pt)})),
                    Err(_) => kv_error(400, "BadParameter", "Error decrypting the wrapped key."),
                }
            }
            _ => kv_error(404, "NotFound", "no such operation"),
        }
    }
}

/// Starts the fake on a loopback port with the keys [`KEY`] and [`OTHER`], one version each.
pub async fn start() -> (MockServer, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    for name in [KEY, OTHER] {
        fake.keys.lock().unwrap().insert(
            name.to_owned(),
            FakeKey {
                versions: vec![(new_version(), rsa_key())],
                enabled: true,
            },
        );
    }
    let server = MockServer::start().await;
    for verb in ["POST", "GET"] {
        Mock::given(method(verb))
            .respond_with(Responder(fake.clone()))
            .mount(&server)
            .await;
    }
    (server, fake)
}

/// A credential that hands out [`TOKEN`], as Entra ID would.
#[derive(Debug)]
pub struct FixedToken;

#[async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(
            scopes,
            ["https://vault.azure.net/.default"],
            "scope from the challenge"
        );
        Ok(AccessToken::new(
            TOKEN.to_owned(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// Sends every request to the fake at `server_uri`, keeping its path and query.
#[derive(Debug)]
struct Redirect {
    target: azure_core::http::Url,
    inner: Arc<dyn HttpClient>,
}

#[async_trait]
impl HttpClient for Redirect {
    async fn execute_request(&self, request: &AzRequest) -> azure_core::Result<AsyncRawResponse> {
        let mut request = request.clone();
        let url = request.url_mut();
        url.set_scheme(self.target.scheme()).unwrap();
        url.set_host(self.target.host_str()).unwrap();
        url.set_port(self.target.port()).unwrap();
        self.inner.execute_request(&request).await
    }
}

/// The transport for a provider under test: the SDK's own HTTP client, pointed at the fake.
pub fn transport(server_uri: &str) -> Transport {
    Transport::new(Arc::new(Redirect {
        target: server_uri.parse().unwrap(),
        inner: azure_core::http::new_http_client(None),
    }))
}
