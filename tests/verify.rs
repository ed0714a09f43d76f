//! Live verification of customer keys (`vault keys verify`, `vault::byok::verify_connected`):
//! a good key verifies; a disabled key, a deleted key, a wrong key id and a missing permission
//! each fail at the step they fail at, naming the permission and what to do; the CLI exits 9
//! and records every outcome as `vault.byok_key.verification_completed`.
#![cfg(all(feature = "aws", feature = "gcp", feature = "azure"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::process::Output;

use common::fakes::{azure, gcp};
use common::vault_aws as vault;
use vault::byok::{Step, Verification, verify_connected};
use vault_crypto::ProviderErrorKind;
use vault_store::{AuditLog as _, SqlStore, events};
use vault_testkit::{azure_fake, gcp_fake};

/// A failure expected: step, kind, the permission named, a piece of the advice.
type Expected = Option<(Step, ProviderErrorKind, Option<&'static str>, &'static str)>;

/// What a failed verification must say: its step, kind, the permission it needed (if any) and
/// a piece of its advice.
#[track_caller]
fn assert_failed(
    v: &Verification,
    step: Step,
    kind: ProviderErrorKind,
    needs: Option<&str>,
    advice: &str,
) {
    let f = v.outcome.as_ref().expect_err("should not verify");
    assert_eq!(f.step, step, "{v}");
    assert_eq!(f.kind, Some(kind), "{v}");
    assert_eq!(f.needs, needs, "{v}");
    assert!(f.advice.contains(advice), "{v}");
    // The text form carries all of it.
    let text = v.to_string();
    assert!(
        text.contains("NOT verified") && text.contains(advice),
        "{text}"
    );
}

#[tokio::test]
async fn cloud_kms_keys_verify_or_say_what_to_grant_or_fix() {
    type Setup = fn(&gcp_fake::Fake);
    let cases: [(&str, Setup, Expected); 5] = [
        ("good", |_| {}, None),
        (
            "disabled",
            |f| f.set_enabled(gcp_fake::KEY, false),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::Disabled,
                Some("cloudkms.cryptoKeyVersions.useToEncrypt"),
                "enable it",
            )),
        ),
        (
            "deleted",
            |f| f.delete(gcp_fake::KEY),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::NotFound,
                Some("cloudkms.cryptoKeyVersions.useToEncrypt"),
                "check key_name",
            )),
        ),
        (
            "no encrypt permission",
            |f| f.deny("encrypt"),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::AccessDenied,
                Some("cloudkms.cryptoKeyVersions.useToEncrypt"),
                "grant cloudkms.cryptoKeyVersions.useToEncrypt",
            )),
        ),
        (
            "no decrypt permission",
            |f| f.deny("decrypt"),
            Some((
                Step::Unwrap,
                ProviderErrorKind::AccessDenied,
                Some("cloudkms.cryptoKeyVersions.useToDecrypt"),
                "grant cloudkms.cryptoKeyVersions.useToDecrypt",
            )),
        ),
    ];
    for (name, setup, expected) in cases {
        let (server, fake) = gcp_fake::start().await;
        setup(&fake);
        let provider = gcp(&server.uri()).await;
        let v = verify_connected(name, "gcp-kms", &*provider).await;
        match expected {
            None => {
                assert!(v.verified(), "{name}: {v}");
                assert!(v.outcome.as_ref().unwrap().starts_with("gcp-kms://"), "{v}");
            }
            Some((step, kind, needs, advice)) => assert_failed(&v, step, kind, needs, advice),
        }
    }
}

#[tokio::test]
async fn key_vault_keys_verify_or_say_what_to_grant_or_fix() {
    type Setup = fn(&azure_fake::Fake);
    let cases: [(&str, Setup, Expected); 6] = [
        ("good", |_| {}, None),
        (
            "disabled",
            |f| f.set_enabled(azure_fake::KEY, false),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::Disabled,
                Some("keys/wrapKey"),
                "enable it",
            )),
        ),
        (
            "deleted",
            |f| f.delete(azure_fake::KEY),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::NotFound,
                Some("keys/wrapKey"),
                "check vault_url, key_name",
            )),
        ),
        (
            "no wrapKey permission",
            |f| f.deny("wrapkey"),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::AccessDenied,
                Some("keys/wrapKey"),
                "grant keys/wrapKey",
            )),
        ),
        (
            "no sign permission",
            |f| f.deny("sign"),
            Some((
                Step::GenerateDataKey,
                ProviderErrorKind::AccessDenied,
                Some("keys/sign"),
                "grant keys/sign",
            )),
        ),
        (
            "no unwrapKey permission",
            |f| f.deny("unwrapkey"),
            Some((
                Step::Unwrap,
                ProviderErrorKind::AccessDenied,
                Some("keys/unwrapKey"),
                "grant keys/unwrapKey",
            )),
        ),
    ];
    for (name, setup, expected) in cases {
        let (server, fake) = azure_fake::start().await;
        setup(&fake);
        let provider = azure(&server.uri());
        let v = verify_connected(name, "azure-kv", &*provider).await;
        match expected {
            None => {
                assert!(v.verified(), "{name}: {v}");
                assert!(
                    v.outcome.as_ref().unwrap().starts_with("azure-kv://"),
                    "{v}"
                );
            }
            Some((step, kind, needs, advice)) => assert_failed(&v, step, kind, needs, advice),
        }
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn aws_keys_verify_through_the_cli_with_exit_codes_and_events() {
    let Some(url) = common::moto_url() else {
        return;
    };
    let kms = common::aws_client(&url);
    // (ARN, key id): moto changes a key's state by its id only.
    let new_key = || async {
        let k = kms.create_key().send().await.unwrap();
        let m = k.key_metadata().unwrap();
        (m.arn().unwrap().to_owned(), m.key_id().to_owned())
    };
    let (good, _) = new_key().await;
    let (disabled, disabled_id) = new_key().await;
    let (deleted, deleted_id) = new_key().await;
    let missing = "arn:aws:kms:us-east-1:123456789012:key/0badc0de-0000-4000-8000-000000000000";

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    let mut toml = "[providers.managed]\ntype = \"managed\"\n".to_owned();
    for (name, key) in [
        ("good", &*good),
        ("disabled", &*disabled),
        ("deleted", &*deleted),
        ("missing", missing),
    ] {
        toml.push_str(&format!(
            "[providers.{name}]\ntype = \"aws-kms\"\nkey_id = \"{key}\"\nendpoint_url = \"{url}\"\n"
        ));
    }
    for org in ["good", "disabled"] {
        toml.push_str(&format!(
            "[[rules]]\nmatch = {{ organization_id = \"org_{org}\" }}\nprovider = \"{org}\"\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    // An environment for the events to land in; the managed ring does not exist yet.
    let out = vault(
        dir.path(),
        &config,
        &["apikey", "create", "-e", "prod", "--name", "t"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vault(
        dir.path(),
        &config,
        &["keys", "verify", "--provider", "managed", "--json"],
    );
    assert_eq!(out.status.code(), Some(9));
    assert!(
        json_lines(&out)[0]["advice"]
            .as_str()
            .unwrap()
            .contains("the first write makes it")
    );
    // Objects of both organizations while their keys work: the environment used them, so
    // their verifications are recorded there.
    for org in ["org_good", "org_disabled"] {
        let context = format!("{{\"organization_id\":\"{org}\"}}");
        let out = vault(
            dir.path(),
            &config,
            &[
                "kv",
                "create",
                "-e",
                "prod",
                "--name",
                org,
                "--context",
                &context,
                "--value",
                "v",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kms.disable_key().key_id(&disabled_id).send().await.unwrap();
    kms.schedule_key_deletion()
        .key_id(&deleted_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    let out = vault(
        dir.path(),
        &config,
        &["keys", "verify", "--provider", "good"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "good (aws-kms): verified (wrapped under aws-kms://{good}"
        )),
        "{text}"
    );

    // (provider, step, kind, a piece of the advice, a piece of the error)
    let failing = [
        (
            "disabled",
            "connect",
            "key disabled",
            "kms:EnableKey",
            "Disabled",
        ),
        (
            "deleted",
            "connect",
            "key disabled",
            "kms:CancelKeyDeletion",
            "PendingDeletion",
        ),
        (
            "missing",
            "connect",
            "key not found",
            "check key_id",
            "NotFoundException",
        ),
    ];
    for (name, step, kind, advice, error) in failing {
        let out = vault(
            dir.path(),
            &config,
            &["keys", "verify", "--provider", name, "--json"],
        );
        assert_eq!(
            out.status.code(),
            Some(9),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = &json_lines(&out)[0];
        assert_eq!(v["provider"], name);
        assert_eq!(v["verified"], false, "{v}");
        assert_eq!(v["step"], step, "{v}");
        assert_eq!(v["kind"], kind, "{v}");
        assert!(v["advice"].as_str().unwrap().contains(advice), "{v}");
        assert!(v["error"].as_str().unwrap().contains(error), "{v}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 provider(s) not verified"));
    }

    // All of them: the managed ring and the good key verify, the other three do not.
    let out = vault(dir.path(), &config, &["keys", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(9));
    let all = json_lines(&out);
    let verified: Vec<(&str, bool)> = all
        .iter()
        .map(|v| {
            (
                v["provider"].as_str().unwrap(),
                v["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verified,
        [
            ("deleted", false),
            ("disabled", false),
            ("good", true),
            ("managed", true),
            ("missing", false)
        ]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 of 5 provider(s) not verified"));

    // The verifications of the keys that route an organization this environment used are in
    // its audit trail (twice each: alone and in the full run), with the outcome; the others'
    // (no rule, or an organization it never used) and the managed ring's are not.
    let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
    let mut recorded: Vec<(String, String)> = store
        .audit_events("prod", 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == events::BYOK_VERIFIED)
        .map(|e| (e.key_context.unwrap(), e.detail.unwrap()))
        .collect();
    recorded.sort();
    let (good, bad) = (
        (
            r#"{"organization_id":"org_good"}"#.to_owned(),
            r#"{"verified":true}"#.to_owned(),
        ),
        (
            r#"{"organization_id":"org_disabled"}"#.to_owned(),
            r#"{"verified":false}"#.to_owned(),
        ),
    );
    assert_eq!(recorded, [bad.clone(), bad, good.clone(), good]);
    store.close().await;
}
