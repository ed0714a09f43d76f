//! Helpers shared by the end-to-end tests.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

/// The loopback API client of `vault bench server`, a CLI internal shared with the tests.
#[path = "../../src/cli/client.rs"]
pub mod client;
pub mod receiver;

// moto's URL (`scripts/with-moto`), from the AWS crate's test helpers, shared as a file.
#[path = "../../crates/vault-kms-aws/tests/common/mod.rs"]
mod aws;
#[allow(unused_imports)] // Each test binary uses a different subset.
pub use aws::{client as aws_client, moto_url};

/// Runs the `vault` binary with `--config config`, the data directory `dir` and moto's test
/// credentials (the AWS profile ignored), standard input closed.
pub fn vault_aws(
    dir: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vault"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("VAULT_DATA_DIR", dir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the vault binary runs")
}

/// Providers of the customer key of the Cloud KMS and Key Vault fakes (`vault-testkit`).
#[cfg(all(feature = "gcp", feature = "azure"))]
pub mod fakes {
    use std::sync::Arc;

    use vault_crypto::{KeyProvider, RetryPolicy};
    use vault_testkit::{azure_fake, gcp_fake};

    /// The Cloud KMS fake's crypto key [`gcp_fake::KEY`], at `uri`, without credentials or
    /// client retries.
    pub async fn gcp(uri: &str) -> Arc<dyn KeyProvider> {
        let client = google_cloud_kms_v1::client::KeyManagementService::builder()
            .with_endpoint(uri)
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
            .build()
            .await
            .expect("a client of the fake");
        Arc::new(
            vault_kms_gcp::GcpKmsProvider::from_client(
                client,
                gcp_fake::KEY,
                RetryPolicy::default(),
            )
            .expect("the fake's key name"),
        )
    }

    /// The Key Vault fake's RSA key [`azure_fake::KEY`], reached at `uri`.
    pub fn azure(uri: &str) -> Arc<dyn KeyProvider> {
        Arc::new(
            vault_kms_azure::AzureKeyVaultProvider::with_credential(
                azure_fake::VAULT_URL,
                azure_fake::KEY,
                None,
                vault_kms_azure::WrapAlgorithm::RsaOaep256,
                Arc::new(azure_fake::FixedToken),
                Some(azure_fake::transport(uri)),
                RetryPolicy::default(),
            )
            .expect("the fake's key"),
        )
    }
}

/// A `vault serve` child process, killed when dropped.
pub struct Serve(pub std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a `vault serve` child's standard error (piped) until its "listening on" line; returns
/// the address it names (`host:port`) and drains the rest of the stream in a thread.
pub fn listening_address(child: &mut std::process::Child) -> String {
    use std::io::{BufRead as _, BufReader};
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line
            .strip_prefix("vault: listening on http://")
            .or_else(|| line.strip_prefix("vault: listening on https://"))
        {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, as PEM files in `dir`:
/// `<name>-ca.pem`, `<name>-cert.pem`, `<name>-key.pem`.
pub fn make_certificate(dir: &std::path::Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("vault test CA {name}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca_cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), leaf.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}-key.pem")),
        leaf_key.serialize_pem(),
    )
    .unwrap();
}
