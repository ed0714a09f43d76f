//! The official WorkOS SDKs as real clients: `vault serve` on a loopback port with a fresh data
//! directory, then `tests/sdk/node_sdk.cjs` (with @workos-inc/node 11, then 12) and
//! `tests/sdk/python_sdk.py` (workos 10.x) exercise every Vault method, typed errors included.
//! Blobs cross over: the Rust library's blob is decrypted by the SDKs, Node's by Python, and
//! each SDK's by Rust.
//!
//! `scripts/with-sdks` installs the SDKs and sets `VAULT_TEST_SDK_NODE_PATH`,
//! `VAULT_TEST_SDK_NODE12_PATH` and `VAULT_TEST_SDK_PYTHON`; without them the test fails under
//! CI and is skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::Serve;
use common::client::ApiClient;
use hyper::Method;
use serde_json::{Value, json};
use vault_crypto::{danger, workos};

mod common;

const VAULT: &str = env!("CARGO_BIN_EXE_vault");

/// The SDKs' places: Node 11's modules, Python's interpreter, Node 12's modules.
fn sdk_paths() -> Option<(String, String, String)> {
    match (
        std::env::var("VAULT_TEST_SDK_NODE_PATH"),
        std::env::var("VAULT_TEST_SDK_PYTHON"),
        std::env::var("VAULT_TEST_SDK_NODE12_PATH"),
    ) {
        (Ok(node), Ok(python), Ok(node12)) => Some((node, python, node12)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_SDK_NODE_PATH / VAULT_TEST_SDK_NODE12_PATH / VAULT_TEST_SDK_PYTHON are not set: the SDK tests must run in CI"
            );
            eprintln!("SKIPPED: WorkOS SDK tests (run scripts/test, or scripts/with-sdks)");
            None
        }
    }
}

fn apikey(dir: &Path, environment: &str, name: &str) -> String {
    let out = Command::new(VAULT)
        .args(["--data-dir"])
        .arg(dir)
        .args([
            "apikey",
            "create",
            "--environment",
            environment,
            "--name",
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        key.starts_with("sk_") && key.len() == 46,
        "the key alone on stdout"
    );
    key
}

/// Starts `vault serve` on a free loopback port, over TLS with `tls` = (certificate chain,
/// key) files; returns it and its address.
fn serve(dir: &Path, tls: Option<(&Path, &Path)>) -> (Serve, String) {
    let mut cmd = Command::new(VAULT);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some((cert, key)) = tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    (Serve(child), addr)
}

fn run(cmd: &mut Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap()
}

async fn rust_decrypt(client: &ApiClient, blob: &Value) -> String {
    let bytes = workos::LocalBlob::decode_text(blob["blob"].as_str().unwrap()).unwrap();
    let parsed = workos::LocalBlob::parse(&bytes).unwrap();
    let (status, key) = client
        .call(
            Method::POST,
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": STANDARD.encode(parsed.encrypted_keys())})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{key}");
    let key: [u8; 32] = STANDARD
        .decode(key["data_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let plain = parsed
        .decrypt(
            &danger::data_key_from_bytes(key),
            vault_crypto::Aad::new(blob["aad"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
    String::from_utf8(plain).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_work_unchanged() {
    exercise_the_sdks(false).await;
}

/// The same over HTTPS, `vault serve` terminating TLS itself with a certificate made here, which
/// the SDKs trust through their runtimes' usual settings (`NODE_EXTRA_CA_CERTS`,
/// `SSL_CERT_FILE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_work_unchanged_over_https() {
    exercise_the_sdks(true).await;
}

async fn exercise_the_sdks(https: bool) {
    let Some((node_path, python, node12_path)) = sdk_paths() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_a = apikey(dir.path(), "sdk_a", "SDK key A");
    let key_b = apikey(dir.path(), "sdk_b", "SDK key B");
    // The Rust side's plain loopback client talks to a server of its own over the same data
    // (processes sharing a data directory see one store and one key ring).
    let (_plain, plain_addr) = serve(dir.path(), None);
    let client = ApiClient::new(&format!("http://{plain_addr}"), &key_a);
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    common::make_certificate(&certs, "sdk");
    let ca = certs.join("sdk-ca.pem");
    let (_tls_server, addr) = if https {
        let (cert, key) = (certs.join("sdk-cert.pem"), certs.join("sdk-key.pem"));
        let (server, addr) = serve(dir.path(), Some((&cert, &key)));
        (Some(server), addr)
    } else {
        (None, plain_addr.clone())
    };
    let (host, port) = addr.rsplit_once(':').unwrap();
    let base = format!("{}://{addr}", if https { "https" } else { "http" });

    // A blob made by the Rust library with a data key from the server, for both SDKs to open.
    let (status, dk) = client
        .call(
            Method::POST,
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": "org_rust"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{dk}");
    let key: [u8; 32] = STANDARD
        .decode(dk["data_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let rust_blob = workos::encrypt(
        &danger::data_key_from_bytes(key),
        &STANDARD
            .decode(dk["encrypted_keys"].as_str().unwrap())
            .unwrap(),
        "rust secret ✓".as_bytes(),
        vault_crypto::Aad::new(b"rust-aad"),
    )
    .unwrap();
    let rust_blob = json!({"blob": rust_blob, "aad": "rust-aad", "plaintext": "rust secret ✓"});

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The same script with each major of the Node SDK, each on names of its own.
    let node_run = |modules: &str, prefix: &str| {
        let out = run(
            Command::new("node")
                .arg(root.join("tests/sdk/node_sdk.cjs"))
                .env("NODE_PATH", modules)
                .env("NODE_EXTRA_CA_CERTS", &ca)
                .env("VAULT_TEST_HTTPS", if https { "1" } else { "0" })
                .env("VAULT_TEST_HOST", host)
                .env("VAULT_TEST_PORT", port)
                .env("VAULT_TEST_KEY_A", &key_a)
                .env("VAULT_TEST_KEY_B", &key_b)
                .env("VAULT_TEST_PREFIX", prefix)
                .env("VAULT_TEST_RUST_BLOB", rust_blob.to_string()),
            &format!("the Node SDK script ({prefix})"),
        );
        assert!(out["checks"].as_u64().unwrap() >= 44, "{out}");
        out
    };
    let node = node_run(&node_path, "node");
    let node12 = node_run(&node12_path, "node12");

    let python = run(
        Command::new(&python)
            .arg(root.join("tests/sdk/python_sdk.py"))
            .env("SSL_CERT_FILE", &ca)
            .env("VAULT_TEST_URL", &base)
            .env("VAULT_TEST_KEY_A", &key_a)
            .env("VAULT_TEST_KEY_A_NAME", "SDK key A")
            .env("VAULT_TEST_KEY_B", &key_b)
            .env("VAULT_TEST_PREFIX", "python")
            .env("VAULT_TEST_RUST_BLOB", rust_blob.to_string())
            .env("VAULT_TEST_NODE_BLOB", node["blob"].to_string()),
        "the Python SDK script",
    );
    assert!(python["checks"].as_u64().unwrap() >= 43, "{python}");

    // The other way round: Rust opens what each SDK encrypted.
    assert_eq!(rust_decrypt(&client, &node["blob"]).await, "node secret ✓");
    assert_eq!(
        rust_decrypt(&client, &node12["blob"]).await,
        "node secret ✓"
    );
    assert_eq!(
        rust_decrypt(&client, &python["blob"]).await,
        "python secret ✓"
    );
}

/// The SDKs' events, webhooks and idempotency: `listEvents` / `list_events` page through the
/// Events API with filters and a time range; a create whose first answer is lost is retried by
/// the Node SDK with its own `Idempotency-Key` and answers the object made the first time; a
/// reused key is a 422; deliveries of a webhook endpoint pass `constructEvent` / `verify_event`,
/// and a changed body, an old timestamp or another secret do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_read_events_verify_webhooks_and_retry_idempotently() {
    let Some((node_path, python, _)) = sdk_paths() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = apikey(dir.path(), "sdk_events", "SDK events");
    let receiver = common::receiver::Receiver::start("127.0.0.1:0".parse().unwrap(), 200).await;
    let port = receiver.addr.port();
    let out = Command::new(VAULT)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "webhook",
            "create",
            "-e",
            "sdk_events",
            "--events",
            "vault.data.created",
        ])
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}/hook"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let (_server, addr) = serve(dir.path(), None);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let node = run(
        Command::new("node")
            .arg(root.join("tests/sdk/node_events.cjs"))
            .env("NODE_PATH", &node_path)
            .env("VAULT_TEST_MODE", "api")
            .env("VAULT_TEST_HOST", host)
            .env("VAULT_TEST_PORT", port)
            .env("VAULT_TEST_KEY", &key),
        "the Node SDK events script",
    );
    assert!(node["checks"].as_u64().unwrap() >= 20, "{node}");
    let python_out = run(
        Command::new(&python)
            .arg(root.join("tests/sdk/python_events.py"))
            .env("VAULT_TEST_MODE", "api")
            .env("VAULT_TEST_URL", format!("http://{addr}"))
            .env("VAULT_TEST_KEY", &key),
        "the Python SDK events script",
    );
    assert!(python_out["checks"].as_u64().unwrap() >= 10, "{python_out}");

    // Node made 7 objects (one through a retry), Python 6: each one delivery.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while receiver.accepted().len() < 13 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries: {}",
            receiver.accepted().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let deliveries: Vec<Value> = receiver
        .got()
        .iter()
        .map(|g| json!({"body": String::from_utf8(g.body.clone()).unwrap(), "signature": g.signature}))
        .collect();
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let node = run(
        Command::new("node")
            .arg(root.join("tests/sdk/node_events.cjs"))
            .env("NODE_PATH", &node_path)
            .env("VAULT_TEST_MODE", "webhooks")
            .env("VAULT_TEST_SECRET", &secret)
            .env("VAULT_TEST_DELIVERIES", &file),
        "the Node SDK webhook script",
    );
    assert!(node["checks"].as_u64().unwrap() >= 2 * 13 + 4, "{node}");
    let python_out = run(
        Command::new(&python)
            .arg(root.join("tests/sdk/python_events.py"))
            .env("VAULT_TEST_MODE", "webhooks")
            .env("VAULT_TEST_SECRET", &secret)
            .env("VAULT_TEST_DELIVERIES", &file),
        "the Python SDK webhook script",
    );
    assert!(
        python_out["checks"].as_u64().unwrap() >= 2 * 13 + 4,
        "{python_out}"
    );
}

/// Runs the Rust `workos` crate's blob helper (`tests/sdk/workos-rust`); its standard output.
fn workos_rust(bin: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The KeysFirst layout against the official Rust `workos` crate 3.4 (`local_encrypt`,
/// `local_decrypt`, `extract_encrypted_keys`), with a data key from our server: the crate opens
/// what we write in its layout, we tell its blobs apart and open them, and it cannot read the
/// Node layout (the two differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_workos_crate_and_we_read_each_others_blobs() {
    if sdk_paths().is_none() {
        return;
    }
    let bin = std::env::var("VAULT_TEST_SDK_RUST")
        .expect("VAULT_TEST_SDK_RUST (scripts/with-sdks builds tests/sdk/workos-rust)");
    let dir = tempfile::tempdir().unwrap();
    let key = apikey(dir.path(), "sdk_rust", "SDK Rust");
    let (_server, addr) = serve(dir.path(), None);
    let client = ApiClient::new(&format!("http://{addr}"), &key);
    let (status, dk) = client
        .call(
            Method::POST,
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": "org_rust_crate"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{dk}");
    let data_key_b64 = dk["data_key"].as_str().unwrap();
    let keys_b64 = dk["encrypted_keys"].as_str().unwrap();
    let data_key: [u8; 32] = STANDARD.decode(data_key_b64).unwrap().try_into().unwrap();
    let data_key = danger::data_key_from_bytes(data_key);
    let keys = STANDARD.decode(keys_b64).unwrap();

    // Ours, in the crate's layout: the crate opens it and finds the same keys.
    let ours = workos::encrypt_as(
        workos::Layout::KeysFirst,
        &data_key,
        &keys,
        "from the vault ✓".as_bytes(),
        vault_crypto::Aad::new(b"aad-1"),
    )
    .unwrap();
    assert_eq!(
        workos_rust(&bin, &["decrypt", data_key_b64, "aad-1", &ours]).unwrap(),
        "from the vault ✓"
    );
    assert!(workos_rust(&bin, &["decrypt", data_key_b64, "aad-2", &ours]).is_err());
    assert_eq!(workos_rust(&bin, &["keys", &ours]).unwrap(), keys_b64);
    // Node's layout is not the crate's: it cannot read it.
    let node_layout = workos::encrypt(&data_key, &keys, b"x", vault_crypto::Aad::NONE).unwrap();
    assert!(workos_rust(&bin, &["decrypt", data_key_b64, "", &node_layout]).is_err());

    // The crate's: told apart as KeysFirst, its keys recovered by our server, opened.
    let theirs = workos_rust(
        &bin,
        &[
            "encrypt",
            data_key_b64,
            keys_b64,
            "aad-3",
            "from the crate ✓",
        ],
    )
    .unwrap();
    let bytes = workos::LocalBlob::decode_text(&theirs).unwrap();
    let blob = workos::LocalBlob::parse(&bytes).unwrap();
    assert_eq!(blob.layout(), workos::Layout::KeysFirst);
    let (status, recovered) = client
        .call(
            Method::POST,
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": STANDARD.encode(blob.encrypted_keys())})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["data_key"], data_key_b64);
    assert_eq!(
        blob.decrypt(&data_key, vault_crypto::Aad::new(b"aad-3"))
            .unwrap(),
        "from the crate ✓".as_bytes()
    );
}
