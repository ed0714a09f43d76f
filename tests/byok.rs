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
use common::vault_aws as vault;
use vault_crypto::Envelope;
use vault_store::{ObjectStore as _, SqlStore};

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

/// `vault serve` running; a customer's AWS key added and routed with `vault byok` from another
/// process: within a second new objects of that organization are wrapped by the customer's key
/// and others by the managed ring; the verification is in the Events API and in `/metrics`;
/// after `vault byok remove`, within a second new objects go back to the managed ring and the
/// customer-wrapped ones still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_set_at_runtime_route_a_running_server_within_a_second() {
    use common::client::ApiClient;
    use hyper::Method;
    use serde_json::{Value, json};

    let Some(url) = moto_url() else { return };
    let acme_key = moto_key(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    // moto is plain HTTP on loopback: allowed for store providers by this file alone.
    std::fs::write(
        &config,
        "[providers.managed]\ntype = \"managed\"\n[byok]\nallow_http_endpoints = true\n",
    )
    .unwrap();
    let api_key = ok(vault(
        dir.path(),
        &config,
        &["apikey", "create", "-e", "prod", "--name", "t"],
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(["--config", config.to_str().unwrap()])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("VAULT_DATA_DIR", dir.path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    let _server = common::Serve(child);
    let client = ApiClient::new(&format!("http://{addr}"), api_key.trim());
    let mut n = 0;
    let mut create = async |org: &str| -> (String, String) {
        n += 1;
        let body = json!({"name": format!("obj-{n}"), "value": format!("value {n}"),
                          "key_context": {"organization_id": org}});
        let (status, meta) = client
            .call(Method::POST, "/vault/v1/kv", Some(&body))
            .await
            .unwrap();
        assert!((200..300).contains(&status), "{status} {meta}");
        (
            meta["id"].as_str().unwrap().to_owned(),
            meta["key_id"].as_str().unwrap().to_owned(),
        )
    };
    let (_, before) = create("org_acme").await;
    assert!(before.starts_with("managed://"), "{before}");

    let added = ok(vault(
        dir.path(),
        &config,
        &[
            "byok",
            "provider",
            "add",
            "acme",
            "--type",
            "aws-kms",
            "--key-id",
            &acme_key,
            "--region",
            "us-east-1",
            "--endpoint-url",
            &url,
        ],
    ));
    assert!(added.contains("acme (aws-kms): verified"), "{added}");
    let set = ok(vault(
        dir.path(),
        &config,
        &[
            "byok",
            "set",
            "--match",
            "organization_id=org_acme",
            "--provider",
            "acme",
        ],
    ));
    assert!(set.contains("rule set"), "{set}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (acme_id, acme_wrap) = create("org_acme").await;
    assert_eq!(
        acme_wrap,
        format!("aws-kms://{acme_key}"),
        "routed to the customer's key within 1 s"
    );
    let (_, other) = create("org_other").await;
    assert!(other.starts_with("managed://"), "{other}");

    let listed = ok(vault(dir.path(), &config, &["byok", "list", "--json"]));
    let rule: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(
        rule,
        json!({"match": "organization_id=org_acme", "provider": "acme", "source": "store", "verified": true})
    );

    // The verifications (provider add, rule set, and the server's own) in WorkOS's shape.
    let (status, page) = client
        .call(
            Method::GET,
            "/events?events=vault.byok_key.verification_completed&limit=100",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let data: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert!(
        data.contains(
            &&json!({"organization_id": "org_acme", "key_provider": "AWS_KMS", "verified": true})
        ),
        "{page}"
    );
    // The server verifies what the store adds, and says so in /metrics.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, _, body) = client
            .send(Method::GET, "/metrics", Vec::new(), &[])
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        if text.contains("vault_provider_verified{provider=\"acme\"} 1") {
            assert!(
                text.contains("vault_provider_verified{provider=\"managed\"} 1"),
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let removed = ok(vault(
        dir.path(),
        &config,
        &["byok", "remove", "--match", "organization_id=org_acme"],
    ));
    assert!(
        removed.contains("stays to decrypt the 1 stored object version(s)"),
        "{removed}"
    );
    assert!(
        removed.contains("vault keys rewrap --match organization_id=org_acme"),
        "{removed}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (_, back) = create("org_acme").await;
    assert!(
        back.starts_with("managed://"),
        "back to the managed ring within 1 s: {back}"
    );
    let (status, read) = client
        .call(Method::GET, &format!("/vault/v1/kv/{acme_id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["value"], "value 2", "{read}");

    // The provider stays: for a moment because values sealed under it may still be landing,
    // then because its key wraps data.
    let refused = |says: &str| {
        let out = vault(dir.path(), &config, &["byok", "provider", "remove", "acme"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(7), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    };
    refused("was routed to until moments ago");
    tokio::time::sleep(std::time::Duration::from_secs(vault::byok::QUIET_SECS)).await;
    refused("still wraps 1 stored object version(s)");

    // Moved off the key, it goes, and its organization is told: vault.byok_key.deleted, in
    // WorkOS's shape, in the environment that stored values for it.
    ok(vault(dir.path(), &config, &["keys", "rewrap", "--all"]));
    let gone = ok(vault(
        dir.path(),
        &config,
        &["byok", "provider", "remove", "acme"],
    ));
    assert!(gone.contains("provider \"acme\" removed"), "{gone}");
    let (status, page) = client
        .call(Method::GET, "/events?events=vault.byok_key.deleted", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let deleted: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(
        deleted,
        [&json!({"organization_id": "org_acme", "key_provider": "AWS_KMS"})],
        "{page}"
    );
    let (_, read) = client
        .call(Method::GET, &format!("/vault/v1/kv/{acme_id}"), None)
        .await
        .unwrap();
    assert_eq!(read["value"], "value 2", "readable after the move: {read}");
}

/// Runs one SQL statement on the data directory's SQLite store, as someone with write access to
/// the database file would (Python's sqlite3: no Rust driver needed).
fn sql(dir: &Path, statement: &str) {
    let db = dir.join("vault.db");
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
        .arg(&db)
        .arg(statement)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `vault byok` refuses bad input with a clear message and exit code, changing nothing; a rule
/// whose provider does not verify is not set (exit 9) unless `--unverified`; a rule both in the
/// store and in `vault.toml` is reported by `vault config check`.
#[tokio::test]
async fn byok_commands_refuse_bad_input_and_unverified_keys() {
    let Some(url) = moto_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    let file = "[byok]\nallow_http_endpoints = true\n[providers.managed]\ntype = \"managed\"\n[providers.filekey]\ntype = \"aws-kms\"\nkey_id = \"alias/x\"\n";
    std::fs::write(&config, file).unwrap();
    let missing = "arn:aws:kms:us-east-1:123456789012:key/0badc0de-0000-4000-8000-000000000000";
    let fails = |args: &[&str], code: i32, says: &str| {
        let out = vault(dir.path(), &config, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    let add = |name: &str, key: &str, extra: &[&str]| {
        let mut args = vec![
            "byok",
            "provider",
            "add",
            name,
            "--type",
            "aws-kms",
            "--key-id",
            key,
            "--region",
            "us-east-1",
            "--endpoint-url",
            &url,
        ];
        args.extend_from_slice(extra);
        vault(dir.path(), &config, &args)
    };

    fails(
        &[
            "byok",
            "set",
            "--match",
            "organization_id=org_a",
            "--provider",
            "nope",
        ],
        3,
        "no provider \"nope\"",
    );
    fails(
        &[
            "byok",
            "set",
            "--match",
            "organization_id",
            "--provider",
            "nope",
        ],
        3,
        "expected KEY=VALUE",
    );
    fails(
        &[
            "byok",
            "provider",
            "add",
            "x",
            "--type",
            "aws-kms",
            "--key-name",
            "k",
        ],
        3,
        "--key-name is not a field of a aws-kms provider",
    );
    fails(
        &["byok", "provider", "add", "x", "--type", "aws-kms"],
        3,
        "key_id",
    );
    fails(
        &[
            "byok", "provider", "add", "bad name", "--type", "aws-kms", "--key-id", "k",
        ],
        3,
        "must be 1 to 64",
    );
    fails(
        &[
            "byok",
            "provider",
            "add",
            "filekey",
            "--type",
            "aws-kms",
            "--key-id",
            "k",
            "--unverified",
        ],
        3,
        "defined in the configuration file",
    );
    fails(
        &["byok", "remove", "--match", "organization_id=org_a"],
        6,
        "no rule {\"organization_id\":\"org_a\"} in the store",
    );
    assert_eq!(
        ok(vault(
            dir.path(),
            &config,
            &["byok", "provider", "list", "--json"]
        )),
        ""
    );

    // A key that is not there: added (permissions may come later), reported, but no rule.
    let out = add("ghost", missing, &[]);
    let text = ok(out);
    assert!(
        text.contains("ghost (aws-kms): NOT verified") && text.contains("check key_id"),
        "{text}"
    );
    let out = add("ghost", missing, &["--unverified"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fails(
        &[
            "byok",
            "set",
            "--match",
            "organization_id=org_a",
            "--provider",
            "ghost",
        ],
        9,
        "the rule was not set",
    );
    assert_eq!(
        ok(vault(dir.path(), &config, &["byok", "list", "--json"])),
        ""
    );
    let set = ok(vault(
        dir.path(),
        &config,
        &[
            "byok",
            "set",
            "--match",
            "organization_id=org_a",
            "--provider",
            "ghost",
            "--unverified",
        ],
    ));
    assert!(set.contains("(not verified, as asked"), "{set}");
    let listed = ok(vault(dir.path(), &config, &["byok", "list"]));
    assert_eq!(
        listed,
        "organization_id=org_a  ->  ghost  [store]  (set unverified)\n"
    );
    fails(
        &["byok", "provider", "remove", "ghost"],
        7,
        "a rule sends contexts to provider \"ghost\"",
    );

    // The rules are sealed by the deployment's default key, which rotation, rewrap and destroy
    // treat as a stored value: after all three they still open.
    ok(vault(
        dir.path(),
        &config,
        &[
            "kv",
            "create",
            "-e",
            "prod",
            "--name",
            "n",
            "--context",
            "{\"organization_id\":\"org_b\"}",
            "--value",
            "v",
        ],
    ));
    ok(vault(dir.path(), &config, &["keys", "rotate"]));
    let moved = ok(vault(dir.path(), &config, &["keys", "rewrap", "--all"]));
    assert!(
        moved.contains("2 rewrapped"),
        "the object and the rules' seal: {moved}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(
        vault::DESTROY_QUIET_SECS + 1,
    ))
    .await;
    ok(vault(dir.path(), &config, &["keys", "destroy", "1"]));
    assert!(ok(vault(dir.path(), &config, &["byok", "list"])).contains("ghost"));

    // Whoever writes the database cannot change the rules: a document not sealed by the
    // deployment's key is refused whole, by every command that routes.
    sql(
        dir.path(),
        "UPDATE byok_config SET document = replace(document, 'org_a', 'org_z')",
    );
    fails(
        &["byok", "list"],
        5,
        "not sealed by this deployment's default key",
    );
    fails(
        &["encrypt", "--context", "{\"organization_id\":\"org_z\"}"],
        5,
        "not sealed by this deployment's default key",
    );
    std::fs::write(&config, file).unwrap();
    let out = vault(dir.path(), &config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(3));
    // Put back as it was: the seal opens again.
    sql(
        dir.path(),
        "UPDATE byok_config SET document = replace(document, 'org_z', 'org_a')",
    );
    assert!(ok(vault(dir.path(), &config, &["byok", "list"])).contains("org_a"));

    // The same rule in the file too: `config check` says where.
    std::fs::write(
        &config,
        format!(
            "{file}[[rules]]\nmatch = {{ organization_id = \"org_a\" }}\nprovider = \"filekey\"\n"
        ),
    )
    .unwrap();
    fails(
        &["config", "check"],
        3,
        "is both in the configuration file and in the store (`vault byok remove --match organization_id=org_a`",
    );
    // Until it is resolved, commands that route refuse rather than guess.
    fails(
        &["encrypt", "--context", "{\"organization_id\":\"org_a\"}"],
        5,
        "both in the configuration file and in the store",
    );
}
