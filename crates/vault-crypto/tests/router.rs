//! The router: BYOK rules on seal, dispatch by key reference on open.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::sync::Arc;

use common::{Down, OtherScheme, block_on, ctx};
use vault_crypto::{
    Aad, Envelope, Error, KeyProvider, ManagedKeyProvider, ProviderErrorKind, Rewrapped, Router,
    open_any_context, rewrap_any_context, seal,
};

fn scheme_of(envelope: &[u8]) -> String {
    Envelope::parse(envelope).unwrap().wrapped_keys()[0]
        .key_ref()
        .to_string()
}

#[test]
fn rules_route_by_organization_and_the_rest_goes_to_the_default() {
    let managed = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let acme = OtherScheme::new("test-kms", "acme-key");
    let globex = OtherScheme::new("other-kms", "globex-key");
    let router = Router::new(managed)
        .rule([("organization_id", "org_acme")], acme)
        .unwrap()
        .rule([("organization_id", "org_globex")], globex)
        .unwrap();

    let cases = [
        (
            ctx(&[("organization_id", "org_acme"), ("user_id", "u1")]),
            "test-kms://acme-key#v1",
        ),
        (
            ctx(&[("organization_id", "org_globex")]),
            "other-kms://globex-key#v1",
        ),
        (
            ctx(&[("organization_id", "org_other")]),
            "managed://root#v1",
        ),
        (ctx(&[("tenant", "org_acme")]), "managed://root#v1"),
    ];
    for (c, want) in &cases {
        let env = block_on(seal(&router, c, b"value", Aad::NONE)).unwrap();
        assert_eq!(scheme_of(&env), *want, "{c}");
        // Opening dispatches by the scheme recorded in the envelope.
        let opened = block_on(open_any_context(&router, &env, Aad::NONE)).unwrap();
        assert_eq!(opened.plaintext(), b"value");
        assert_eq!(opened.key_ref().to_string(), *want);
    }
}

/// Rules replaced while the router is in use reach every clone at once; a provider the new rules
/// no longer name but keep for decryption still opens what it sealed, for our own envelopes and
/// for a caller's blob alike; one dropped altogether does not.
#[test]
fn replaced_rules_reach_every_clone_and_decrypt_only_keys_still_open() {
    let managed = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let acme = OtherScheme::new("test-kms", "acme-key");
    let router = Router::new(managed);
    let serving = router.clone();
    let c = ctx(&[("organization_id", "org_acme")]);
    let before = block_on(seal(&serving, &c, b"v", Aad::NONE)).unwrap();
    assert_eq!(scheme_of(&before), "managed://root#v1");

    router.replace_rules(
        vault_crypto::Rules::new()
            .rule([("organization_id", "org_acme")], acme.clone())
            .unwrap(),
    );
    let byok = block_on(seal(&serving, &c, b"v", Aad::NONE)).unwrap();
    assert_eq!(scheme_of(&byok), "test-kms://acme-key#v1");
    assert_eq!(serving.current_rules().rules().len(), 1);

    // The rule goes; the key stays for decryption.
    router.replace_rules(vault_crypto::Rules::new().decrypt_only(acme));
    assert_eq!(
        scheme_of(&block_on(seal(&serving, &c, b"v", Aad::NONE)).unwrap()),
        "managed://root#v1"
    );
    assert_eq!(
        block_on(open_any_context(&serving, &byok, Aad::NONE))
            .unwrap()
            .plaintext(),
        b"v"
    );
    let parsed = Envelope::parse(&byok).unwrap();
    assert!(block_on(serving.unwrap_once(&parsed.wrapped_keys()[0], &c)).is_ok());
    assert!(block_on(open_any_context(&serving, &before, Aad::NONE)).is_ok());

    // Dropped altogether: nothing owns its wrapped keys any more.
    router.replace_rules(vault_crypto::Rules::new());
    let err = block_on(open_any_context(&serving, &byok, Aad::NONE)).unwrap_err();
    assert!(matches!(err, Error::NoProvider { .. }), "{err:?}");
}

#[test]
fn first_matching_rule_wins_and_all_pairs_must_match() {
    let managed = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let narrow = OtherScheme::new("narrow-kms", "k");
    let broad = OtherScheme::new("broad-kms", "k");
    let router = Router::new(managed)
        .rule([("organization_id", "org_1"), ("region", "eu")], narrow)
        .unwrap()
        .rule([("organization_id", "org_1")], broad)
        .unwrap();
    let eu = ctx(&[("organization_id", "org_1"), ("region", "eu")]);
    let us = ctx(&[("organization_id", "org_1"), ("region", "us")]);
    assert!(
        router
            .route(&eu)
            .owns(&vault_crypto::KeyRef::parse("narrow-kms://k#v1").unwrap())
    );
    assert!(
        router
            .route(&us)
            .owns(&vault_crypto::KeyRef::parse("broad-kms://k#v1").unwrap())
    );
}

#[test]
fn an_unknown_scheme_is_a_clear_error() {
    let byok = OtherScheme::new("test-kms", "acme-key");
    let with_byok = Router::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()))
        .rule([("organization_id", "org_acme")], byok)
        .unwrap();
    let env = block_on(seal(
        &with_byok,
        &ctx(&[("organization_id", "org_acme")]),
        b"v",
        Aad::NONE,
    ))
    .unwrap();

    // A router without that provider cannot open it, and says which key it lacks.
    let without = Router::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    match block_on(open_any_context(&without, &env, Aad::NONE)) {
        Err(Error::NoProvider { key_ref }) => assert_eq!(key_ref, "test-kms://acme-key#v1"),
        other => panic!("expected NoProvider, got {other:?}"),
    }
    let wrapped = &Envelope::parse(&env).unwrap().wrapped_keys()[0].clone();
    let e =
        block_on(without.unwrap(wrapped, &ctx(&[("organization_id", "org_acme")]))).unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::NotMine);
    assert!(e.to_string().contains("test-kms"), "{e}");
}

#[test]
fn changing_the_rules_never_strands_old_data() {
    let managed = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let byok = OtherScheme::new("test-kms", "acme-key");
    let acme = ctx(&[("organization_id", "org_acme")]);
    let before = Router::new(managed.clone())
        .rule([("organization_id", "org_acme")], byok.clone())
        .unwrap();
    let env = block_on(seal(&before, &acme, b"v", Aad::NONE)).unwrap();

    // The customer leaves BYOK: the rule is gone, the key kept for decryption only.
    let after = Router::new(managed).decrypt_only(byok);
    assert_eq!(
        block_on(open_any_context(&after, &env, Aad::NONE))
            .unwrap()
            .plaintext(),
        b"v"
    );
    // Rewrapping moves the data key to where the rules send the context now.
    let Rewrapped::Moved(moved) = block_on(rewrap_any_context(&after, &env)).unwrap() else {
        panic!("the key is no longer where the rules send the context");
    };
    assert_eq!(scheme_of(&moved), "managed://root#v1");
    assert_eq!(moved.key_ref().to_string(), "managed://root#v1");
    assert_eq!(
        block_on(open_any_context(&after, &moved, Aad::NONE))
            .unwrap()
            .plaintext(),
        b"v"
    );
}

#[test]
fn an_outage_is_reported_as_such_not_as_a_decryption_failure() {
    let env = {
        let byok = OtherScheme::new("test-kms", "acme-key");
        let r = Router::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()))
            .rule([("organization_id", "org_acme")], byok)
            .unwrap();
        block_on(seal(
            &r,
            &ctx(&[("organization_id", "org_acme")]),
            b"v",
            Aad::NONE,
        ))
        .unwrap()
    };
    let down = Router::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()))
        .decrypt_only(Arc::new(Down { scheme: "test-kms" }));
    match block_on(open_any_context(&down, &env, Aad::NONE)) {
        Err(Error::Provider(e)) => {
            assert_eq!(e.kind(), ProviderErrorKind::Unavailable);
            assert!(e.is_retryable());
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
    // Sealing through a provider that is down fails and produces nothing.
    let r = Router::new(Arc::new(Down { scheme: "test-kms" }));
    assert!(matches!(
        block_on(seal(&r, &ctx(&[("a", "b")]), b"v", Aad::NONE)),
        Err(Error::Provider(_))
    ));
}

#[test]
fn rules_are_validated_like_contexts() {
    let managed: Arc<dyn KeyProvider> = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    assert!(
        Router::new(managed.clone())
            .rule(Vec::<(String, String)>::new(), managed.clone())
            .is_err()
    );
    assert!(
        Router::new(managed.clone())
            .rule([("a", "1"), ("a", "2")], managed.clone())
            .is_err()
    );
    assert!(
        Router::new(managed.clone())
            .rule([("", "1")], managed)
            .is_err()
    );
}

proptest::proptest! {
    /// The indexed lookup picks exactly the rule a first-match scan of the rules would.
    #[test]
    fn routing_equals_a_first_match_scan(
        rules in proptest::collection::vec(
            proptest::collection::btree_map("[abc]", "[xy]", 1..=3), 0..12),
        context in proptest::collection::btree_map("[abcd]", "[xyz]", 1..=4),
    ) {
        let default: Arc<dyn KeyProvider> = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
        let mut router = Router::new(default.clone());
        for (i, r) in rules.iter().enumerate() {
            let p: Arc<dyn KeyProvider> = Arc::new(ManagedKeyProvider::in_memory(&format!("r{i}")).unwrap());
            router = router.rule(r.clone(), p).unwrap();
        }
        let ctx = vault_crypto::KeyContext::from_pairs(context).unwrap();
        let rules = router.current_rules();
        let scanned = rules.rules().iter().find(|r| r.matches(&ctx)).map_or(&default, |r| r.provider());
        proptest::prop_assert!(Arc::ptr_eq(&router.route(&ctx), scanned));
    }
}

#[test]
fn key_refs_round_trip_through_their_text_form() {
    for text in [
        "managed://root#v7",
        "aws-kms://arn:aws:kms:us-east-1:111122223333:key/1234abcd",
        "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k#3",
    ] {
        let r = vault_crypto::KeyRef::parse(text).unwrap();
        assert_eq!(r.to_string(), text);
        assert_eq!(vault_crypto::KeyRef::parse(&r.to_string()).unwrap(), r);
    }
    for bad in [
        "managed:/root",
        "Managed://root",
        "managed://",
        "managed://a#b#c",
        "m://a\n",
    ] {
        assert!(vault_crypto::KeyRef::parse(bad).is_err(), "{bad}");
    }
    assert!(vault_crypto::KeyRef::new("managed", "a#b", "").is_err());
}

proptest::proptest! {
    /// A reference keeps its three parts exactly (they share one buffer), with or without a
    /// version, and its text form parses back to it.
    #[test]
    fn key_ref_parts_survive_their_shared_buffer(
        scheme in "[a-z][a-z0-9-]{0,31}",
        key_id in "[^#\\p{Cc}]{1,40}",
        version in "[^#\\p{Cc}]{0,10}",
    ) {
        let r = vault_crypto::KeyRef::new(&scheme, &key_id, &version).unwrap();
        proptest::prop_assert_eq!(r.scheme(), scheme.as_str());
        proptest::prop_assert_eq!(r.key_id(), key_id.as_str());
        proptest::prop_assert_eq!(r.version(), version.as_str());
        let text = r.to_string();
        let back = vault_crypto::KeyRef::parse(&text).unwrap();
        proptest::prop_assert_eq!(&back, &r);
        let other = vault_crypto::KeyRef::new(&scheme, format!("{key_id}x"), &version).unwrap();
        proptest::prop_assert_ne!(other, r);
    }
}

/// Parsing reuses the key reference it made last when the next envelope names the same one: an
/// envelope naming another key (another scheme, key id or version, in any order) still gets
/// its own.
#[test]
fn each_parsed_envelope_names_its_own_key() {
    let managed = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let k1 = OtherScheme::new("test-kms", "key-a");
    let k2 = OtherScheme::new("test-kms", "key-ab");
    let k3 = OtherScheme::new("test-kmsx", "key-a");
    let c = ctx(&[("organization_id", "org_1")]);
    let providers: [&dyn KeyProvider; 4] = [&*managed, &*k1, &*k2, &*k3];
    let envelopes: Vec<(Vec<u8>, String)> = providers
        .iter()
        .map(|p| {
            let sealed = block_on(seal(*p, &c, b"v", Aad::NONE)).unwrap();
            let expected = sealed.key_ref().to_string();
            (sealed.into_bytes(), expected)
        })
        .collect();
    let names: Vec<&str> = envelopes.iter().map(|(_, name)| name.as_str()).collect();
    assert!(names[0].starts_with("managed://"), "{}", names[0]);
    assert_eq!(
        names[1..],
        [
            "test-kms://key-a#v1",
            "test-kms://key-ab#v1",
            "test-kmsx://key-a#v1"
        ]
    );
    for i in [0, 1, 1, 2, 1, 3, 0, 3, 2, 2, 0] {
        let (bytes, expected) = &envelopes[i];
        assert_eq!(&scheme_of(bytes), expected, "envelope {i}");
    }
}
