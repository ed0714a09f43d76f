//! AzureKeyVaultProvider against the wire-level Key Vault fake of `vault-testkit` (no emulator
//! can be installed here; the fake plays the bearer challenge and really wraps with RSA-OAEP-256).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vault_crypto::{KeyContext, KeyProvider, KeyRef, ProviderErrorKind, WrappedKey};
use vault_kms_azure::{AzureKeyVaultProvider, RetryPolicy, WrapAlgorithm};
use vault_testkit::azure_fake::{FixedToken, KEY, OTHER, VAULT_HOST, VAULT_URL, start, transport};
use wiremock::MockServer;

fn provider(server: &MockServer, key: &str, version: Option<&str>) -> AzureKeyVaultProvider {
    let retry = RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(5));
    AzureKeyVaultProvider::with_credential(
        VAULT_URL,
        key,
        version,
        WrapAlgorithm::RsaOaep256,
        Arc::new(FixedToken),
        Some(transport(&server.uri())),
        retry,
    )
    .unwrap()
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

#[tokio::test]
async fn conforms_to_the_provider_suite() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY, None);
    vault_testkit::provider::run_all(&p).await;
    let (_, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    let version = fake.keys.lock().unwrap()[KEY].versions[0].0.clone();
    assert_eq!(
        wrapped.key_ref().to_string(),
        format!("azure-kv://{VAULT_HOST}/{KEY}#{version}+rs256")
    );
    assert_eq!(
        wrapped.bytes().len(),
        512,
        "an RSA-2048 OAEP wrap and its RS256 signature"
    );
    assert!(p.is_current(wrapped.key_ref(), &ctx("o")).await.unwrap());
    // The SDK was challenged before it sent any token.
    assert!(fake.challenges.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn another_keys_wrap_and_a_changed_context_fail_as_in_the_cloud() {
    let (server, fake) = start().await;
    let mine = provider(&server, KEY, None);
    let theirs = provider(&server, OTHER, None);
    let (_, wrapped) = theirs.generate_data_key(&ctx("o")).await.unwrap();
    let my_version = fake.keys.lock().unwrap()[KEY].versions[0].0.clone();
    let relabelled = WrappedKey::new(
        KeyRef::new("azure-kv", format!("{VAULT_HOST}/{KEY}"), my_version).unwrap(),
        wrapped.bytes().to_vec(),
    )
    .unwrap();
    let e = mine.unwrap(&relabelled, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
    // Key Vault has no AAD: the context binding inside the wrap is what refuses this.
    let (_, mine_wrapped) = mine.generate_data_key(&ctx("a")).await.unwrap();
    let e = mine.unwrap(&mine_wrapped, &ctx("b")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
}

#[tokio::test]
async fn unwrap_uses_the_recorded_version_after_a_rotation() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY, None);
    let (key, old) = p.generate_data_key(&ctx("o")).await.unwrap();
    fake.rotate(KEY);
    let (_, new) = p.generate_data_key(&ctx("o")).await.unwrap();
    assert_ne!(old.key_ref().version(), new.key_ref().version());
    let new_version = fake.keys.lock().unwrap()[KEY].versions[1].0.clone();
    assert_eq!(new.key_ref().version(), format!("{new_version}+rs256"));
    assert_eq!(
        p.unwrap(&old, &ctx("o")).await.unwrap().expose_secret(),
        key.expose_secret()
    );
    // A pinned version keeps wrapping with that version.
    let old_version = old.key_ref().version().to_owned();
    let pinned = provider(
        &server,
        KEY,
        old_version.strip_suffix(vault_kms_azure::SIGNED_SUFFIX),
    );
    let (_, w) = pinned.generate_data_key(&ctx("o")).await.unwrap();
    assert_eq!(w.key_ref().version(), old_version);
}

#[tokio::test]
async fn documented_errors_map_to_their_kinds_and_retries_are_bounded() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY, None);
    // Warm up: the challenge is answered once per client.
    p.generate_data_key(&ctx("o")).await.unwrap();
    let cases = [
        (403, "Forbidden", ProviderErrorKind::AccessDenied, 1),
        (404, "KeyNotFound", ProviderErrorKind::NotFound, 1),
        (429, "Throttled", ProviderErrorKind::Throttled, 3),
        (
            500,
            "InternalServerError",
            ProviderErrorKind::Unavailable,
            3,
        ),
        (503, "ServiceUnavailable", ProviderErrorKind::Unavailable, 3),
    ];
    for (status, code, kind, attempts) in cases {
        *fake.faults.lock().unwrap() = vec![(status, code); 5];
        fake.requests.store(0, Ordering::SeqCst);
        let e = p.generate_data_key(&ctx("o")).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status} {code}: {e}");
        assert_eq!(
            fake.requests.load(Ordering::SeqCst),
            attempts,
            "{status} {code}"
        );
        if status == 429 {
            assert_eq!(e.retry_after(), Some(Duration::ZERO), "Retry-After is read");
        }
    }
    fake.faults.lock().unwrap().clear();

    // Transient faults, then success.
    *fake.faults.lock().unwrap() = vec![(429, "Throttled"), (503, "ServiceUnavailable")];
    fake.requests.store(0, Ordering::SeqCst);
    let (key, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    // Two failed wraps, the wrap, its signature (the public key is cached since the warm-up).
    assert_eq!(fake.requests.load(Ordering::SeqCst), 4);

    // The customer disables the key: Disabled, for wrap and unwrap; enabling it again works.
    fake.set_enabled(KEY, false);
    let e = p.generate_data_key(&ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Disabled, "{e}");
    let e = p.unwrap(&wrapped, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Disabled, "{e}");
    fake.set_enabled(KEY, true);
    assert_eq!(
        p.unwrap(&wrapped, &ctx("o")).await.unwrap().expose_secret(),
        key.expose_secret()
    );

    // The customer deletes the key: NotFound.
    fake.delete(KEY);
    let e = p.unwrap(&wrapped, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::NotFound, "{e}");
}

#[test]
fn configuration_is_checked_and_debug_shows_no_credentials() {
    let make = |url: &str, key: &str, version: Option<&str>| {
        AzureKeyVaultProvider::with_credential(
            url,
            key,
            version,
            WrapAlgorithm::RsaOaep256,
            Arc::new(FixedToken),
            None,
            RetryPolicy::default(),
        )
    };
    assert!(
        make("http://customer.vault.azure.net/", KEY, None).is_err(),
        "https only"
    );
    assert!(make("not a url", KEY, None).is_err());
    assert!(make(VAULT_URL, "bad/name", None).is_err());
    assert!(make(VAULT_URL, "", None).is_err());
    assert!(make(VAULT_URL, KEY, Some("v#1")).is_err());
    let p = make(VAULT_URL, KEY, None).unwrap();
    assert_eq!(p.key_id(), format!("{VAULT_HOST}/{KEY}"));
    let debug = format!("{p:?}");
    assert!(
        debug.contains(KEY) && !debug.contains("fake-entra-token"),
        "{debug}"
    );
    assert_eq!("RSA-OAEP-256".parse(), Ok(WrapAlgorithm::RsaOaep256));
    assert_eq!("A256KW".parse(), Ok(WrapAlgorithm::A256Kw));
    let refused = "RSA1_5".parse::<WrapAlgorithm>().unwrap_err();
    assert_eq!(
        vault_crypto::ProviderError::from(refused).kind(),
        ProviderErrorKind::Configuration
    );
}

/// The forgery the signature exists for: someone with the key's public JWK and write access
/// to the database wraps a data key of their choice for any context. A signed-form wrap with
/// a made-up signature is refused before Key Vault is asked; an unsigned one opens only while
/// `accept_unsigned_wraps` is on (the upgrade default), and is never current, so a rewrap
/// replaces it.
#[tokio::test]
async fn a_wrap_forged_with_the_public_key_is_refused() {
    let (server, fake) = start().await;
    let strict = provider(&server, KEY, None).accept_unsigned_wraps(false);
    let lenient = provider(&server, KEY, None);
    // A genuine wrap first, so the public key is known and cached.
    let (_, genuine) = strict.generate_data_key(&ctx("victim")).await.unwrap();
    let version = genuine
        .key_ref()
        .version()
        .strip_suffix(vault_kms_azure::SIGNED_SUFFIX)
        .unwrap()
        .to_owned();

    // The attacker's data key, bound to the victim's context as the format says.
    let chosen = [7u8; 32];
    let mut payload = chosen.to_vec();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"vault-kms-azure/v1\0");
    sha2::Digest::update(&mut h, ctx("victim").canonical_bytes());
    payload.extend_from_slice(&sha2::Digest::finalize(h));
    let forged_wrap = fake.keys.lock().unwrap()[KEY].versions[0]
        .1
        .encrypt_with_public_key(&payload);

    let unwraps_before = fake.count("unwrapkey");
    for signature in [vec![0u8; 256], genuine.bytes()[256..].to_vec()] {
        let mut bytes = forged_wrap.clone();
        bytes.extend_from_slice(&signature);
        let forged = WrappedKey::new(genuine.key_ref().clone(), bytes).unwrap();
        for p in [&strict, &lenient] {
            let e = p.unwrap(&forged, &ctx("victim")).await.unwrap_err();
            assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
        }
    }
    assert_eq!(fake.count("unwrapkey"), unwraps_before, "refused locally");

    // The unsigned (pre-signing) form of the same forgery.
    let unsigned_ref = KeyRef::new("azure-kv", format!("{VAULT_HOST}/{KEY}"), &version).unwrap();
    let unsigned = WrappedKey::new(unsigned_ref.clone(), forged_wrap).unwrap();
    let e = strict.unwrap(&unsigned, &ctx("victim")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
    // Accepted for compatibility while the setting is on: what `accept_unsigned_wraps = false`
    // closes, once the rewrap has replaced every unsigned wrap.
    let opened = lenient.unwrap(&unsigned, &ctx("victim")).await.unwrap();
    assert_eq!(opened.expose_secret(), &chosen);
    assert!(
        !lenient
            .is_current(&unsigned_ref, &ctx("victim"))
            .await
            .unwrap()
    );
    assert!(!lenient.is_authenticated(&unsigned_ref));
    assert!(lenient.is_authenticated(genuine.key_ref()));

    // A version that is not a Key Vault version (a path into another key above all) is refused
    // before any request.
    let requests = fake.requests.load(Ordering::SeqCst);
    for version in [
        "../other-key/abc+rs256",
        "../other-key/abc",
        "a/b",
        "v1.2+rs256",
        "",
    ] {
        let odd = WrappedKey::new(
            KeyRef::new("azure-kv", format!("{VAULT_HOST}/{KEY}"), version).unwrap(),
            genuine.bytes().to_vec(),
        )
        .unwrap();
        let e = lenient.unwrap(&odd, &ctx("victim")).await.unwrap_err();
        assert_eq!(
            e.kind(),
            ProviderErrorKind::InvalidCiphertext,
            "{version}: {e}"
        );
    }
    assert_eq!(fake.requests.load(Ordering::SeqCst), requests);

    // A genuine signed wrap does not open under another context (the signature covers it).
    let e = strict.unwrap(&genuine, &ctx("other")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
}

/// A blob from an API caller gets one Key Vault call, however throttled the key is.
#[tokio::test]
async fn unwrap_once_makes_one_call_even_when_throttled() {
    let (server, fake) = start().await;
    let p = provider(&server, KEY, None);
    let (key, wrapped) = p.generate_data_key(&ctx("o")).await.unwrap();
    *fake.faults.lock().unwrap() = vec![(429, "Throttled"); 5];
    fake.requests.store(0, Ordering::SeqCst);
    let e = p.unwrap_once(&wrapped, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Throttled, "{e}");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
    // Our own store's reads keep their bounded retries (3 attempts here).
    fake.requests.store(0, Ordering::SeqCst);
    let e = p.unwrap(&wrapped, &ctx("o")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Throttled, "{e}");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    fake.faults.lock().unwrap().clear();
    assert_eq!(
        p.unwrap_once(&wrapped, &ctx("o"))
            .await
            .unwrap()
            .expose_secret(),
        key.expose_secret()
    );
}
