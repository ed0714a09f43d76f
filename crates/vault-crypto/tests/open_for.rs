//! `open_for`: an envelope opens only as the context it must carry. The attack it stops: a
//! caller of the data-key API holds a data key and its genuine wrap for a context of its own,
//! and builds an envelope with them wherever the vault expects one of its own (a database
//! writer putting it in a row). `open` accepts it; `open_for` does not, before any unwrap.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vault_crypto::{Envelope, Error, KeyContext, ManagedKeyProvider, Router, issued};

fn ctx(json: &str) -> KeyContext {
    KeyContext::parse_json(json.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_forged_envelope_under_a_callers_context_is_refused_before_any_unwrap() {
    let ring = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let router = Router::new(ring.clone());
    let reserved = ctx(r#"{"vault_byok":"config"}"#);
    let attacker = ctx(r#"{"organization_id":"org_mallory"}"#);

    // What the data-key API hands any caller: a data key and its wrap, for its own context.
    let issued = issued::issue(&router, &attacker, "env").await.unwrap();
    let env = Envelope::parse(issued.encrypted_keys()).unwrap();
    let wrapped = env.wrapped_keys().to_vec();
    let aad = b"the vault's own associated data";
    let forged =
        vault_crypto::danger::seal_with_key(issued.data_key(), &wrapped, &attacker, b"", aad)
            .unwrap();

    // `open` alone takes it: it is a genuine envelope, for the attacker's context.
    let opened = vault_crypto::open(&router, &forged, aad).await.unwrap();
    assert_eq!(opened.context(), &attacker);
    // `open_for` refuses it, and asks no provider.
    let calls = router.calls();
    let err = vault_crypto::open_for(&router, &forged, &reserved, aad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContextMismatch), "{err:?}");
    assert_eq!(router.calls(), calls, "no key was unwrapped");
    assert!(!err.to_string().contains("mallory"), "{err}");

    // The same wrap under a header naming the reserved context does not unwrap: the wrap is
    // bound to the context it was made for.
    let relabelled =
        vault_crypto::danger::seal_with_key(issued.data_key(), &wrapped, &reserved, b"", aad)
            .unwrap();
    let err = vault_crypto::open_for(&router, &relabelled, &reserved, aad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err:?}");

    // What the vault sealed itself opens.
    let genuine = vault_crypto::seal(&router, &reserved, b"doc", aad)
        .await
        .unwrap();
    let opened = vault_crypto::open_for(&router, &genuine, &reserved, aad)
        .await
        .unwrap();
    assert_eq!(opened.plaintext(), b"doc");
}
