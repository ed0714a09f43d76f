//! Replays the committed fuzz corpus (seeds and every past crash) through the same entry points
//! the cargo-fuzz targets call, so plain `cargo test` exercises every target on any toolchain.
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count >= 10, "{target}: only {count} corpus entries");
}

#[test]
fn context_json() {
    replay("context_json", vault_crypto::fuzzing::context_json);
}

#[test]
fn context_canonical() {
    replay(
        "context_canonical",
        vault_crypto::fuzzing::context_canonical,
    );
}

#[test]
fn envelope() {
    replay("envelope", vault_crypto::fuzzing::envelope);
}

#[test]
fn envelope_text() {
    replay("envelope_text", vault_crypto::fuzzing::envelope_text);
}

#[test]
fn keyring_file() {
    replay("keyring_file", vault_crypto::fuzzing::keyring_file);
}

#[test]
fn workos_blob() {
    replay("workos_blob", vault_crypto::fuzzing::workos_blob);
}

#[test]
fn workos_blob_text() {
    replay("workos_blob_text", vault_crypto::fuzzing::workos_blob_text);
}
