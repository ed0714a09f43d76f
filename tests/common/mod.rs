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
