//! BYOK end to end through the `vault` binary: a `vault.toml` sends one organization to a
//! customer's AWS KMS key (moto on loopback, from `scripts/with-moto`), everything else to the
//! managed ring; then a new rule moves another organization onto its own AWS key with
//! `vault keys rewrap --match`, and every value ciphertext stays byte for byte the same.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::moto_url;
use vault::crypto::Envelope;
use vault::store::{ObjectStore as _, SqlStore};

fn vault(dir: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .env("VAULT_DATA_DIR", dir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn moto_key(url: &str) -> String {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "t",
        ))
        .endpoint_url(url)
        .build();
    let out = aws_sdk_kms::Client::from_conf(config)
        .create_key()
        .send()
        .await
        .unwrap();
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

/// (object id, seq) -> (first key reference, the envelope without its wrapped keys).
async fn versions(dir: &Path) -> Vec<(String, i64, String, Vec<u8>)> {
    let store = SqlStore::open_sqlite(dir).await.unwrap();
    let mut out = Vec::new();
    for v in store.scan_versions(None, 1000).await.unwrap() {
        let env = Envelope::parse(&v.envelope).unwrap();
        let key = env.wrapped_keys()[0].key_ref().to_string();
        // Everything but the wrapped keys: header, commitment, nonce and ciphertext.
        let tail = v.envelope[v.envelope.len() - (env.plaintext_len() + 16)..].to_vec();
        let mut kept = env.message_id().to_vec();
        kept.extend_from_slice(env.context().canonical_bytes());
        kept.extend_from_slice(&tail);
        out.push((v.object_id, v.seq, key, kept));
    }
    store.close().await;
    out
}

#[tokio::test]
async fn byok_objects_and_a_rewrap_onto_a_customer_key() {
    let Some(url) = moto_url() else { return };
    let acme_key = moto_key(&url).await;
    let x_key = moto_key(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = d.join("before.toml");
    std::fs::write(
        &before,
        format!(
            r#"
default = "managed"
[providers.managed]
type = "managed"
[providers.acme]
type = "aws-kms"
key_id = "{acme_key}"
endpoint_url = "{url}"
[[rules]]
match = {{ organization_id = "org_acme" }}
provider = "acme"
"#
        ),
    )
    .unwrap();
    assert!(ok(vault(d, &before, &["config", "check"])).contains("ok (2 provider(s), 1 rule(s))"));

    let create = |name: &str, org: &str, value: &str| {
        let ctx = format!(r#"{{"organization_id":"{org}"}}"#);
        let out = ok(vault(
            d,
            &before,
            &[
                "kv",
                "create",
                "-e",
                "prod",
                "--name",
                name,
                "--context",
                &ctx,
                "--value",
                value,
                "--json",
            ],
        ));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let acme = create("acme-card", "org_acme", "4111");
    assert_eq!(acme["key_id"], format!("aws-kms://{acme_key}"));
    let x1 = create("x-card", "org_x", "4222");
    let x2 = create("x-ssn", "org_x", "123-45-6789");
    let other = create("other", "org_other", "kept");
    assert_eq!(x1["key_id"], "managed://root#v1");
    let x1_id = x1["id"].as_str().unwrap();
    ok(vault(
        d,
        &before,
        &["kv", "update", "-e", "prod", x1_id, "--value", "4333"],
    ));

    let old = versions(d).await;
    assert_eq!(old.len(), 5);

    // Organization x brings its own key: a new rule, then a rewrap of its stored versions.
    let after = d.join("after.toml");
    std::fs::write(
        &after,
        format!(
            r#"{}
[providers.x]
type = "aws-kms"
key_id = "{x_key}"
endpoint_url = "{url}"
cache = false
[[rules]]
match = {{ organization_id = "org_x" }}
provider = "x"
"#,
            std::fs::read_to_string(&before).unwrap()
        ),
    )
    .unwrap();
    let report = ok(vault(
        d,
        &after,
        &["keys", "rewrap", "--match", "organization_id=org_x"],
    ));
    assert!(
        report.contains("3 matched, 3 rewrapped, 0 already"),
        "{report}"
    );

    let new = versions(d).await;
    for ((id, seq, old_key, old_kept), (id2, seq2, new_key, new_kept)) in old.iter().zip(&new) {
        assert_eq!((id, seq), (id2, seq2));
        assert_eq!(
            old_kept, new_kept,
            "value ciphertext of {id} v{seq} changed"
        );
        let is_x = [x1_id, x2["id"].as_str().unwrap()].contains(&id.as_str());
        if is_x {
            assert_eq!(new_key, &format!("aws-kms://{x_key}"));
        } else {
            assert_eq!(new_key, old_key, "{id} was not to move");
        }
    }
    // Every object still opens, with the new configuration.
    for (id, value) in [
        (x1_id, "4333"),
        (x2["id"].as_str().unwrap(), "123-45-6789"),
        (acme["id"].as_str().unwrap(), "4111"),
        (other["id"].as_str().unwrap(), "kept"),
    ] {
        assert_eq!(
            ok(vault(d, &after, &["kv", "get", "-e", "prod", id])),
            value
        );
    }
    // Running it again finds nothing to do: an interrupted run resumes the same way.
    let again = ok(vault(
        d,
        &after,
        &["keys", "rewrap", "--match", "organization_id=org_x"],
    ));
    assert!(
        again.contains("3 matched, 0 rewrapped, 3 already"),
        "{again}"
    );
}

#[test]
fn config_check_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "default = \"managed\"\n[providers.managed]\ntype = \"managed\"\n\n[[rules]]\nmatch = { organization_id = \"o\" }\nprovider = \"nope\"\n").unwrap();
    let out = vault(dir.path(), &bad, &["config", "check"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 7: rule provider \"nope\" is not defined"),
        "{err}"
    );
}
