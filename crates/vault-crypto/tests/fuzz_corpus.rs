//! Replays the committed fuzz corpus (seeds and every past crash) through the same entry points
//! the cargo-fuzz targets call, so plain `cargo test` exercises every target on any toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

// Shared with the testkit as a file, so this crate's tests depend on no other crate.
#[allow(unreachable_pub)]
#[path = "../../vault-testkit/src/corpus.rs"]
mod corpus;

use corpus::replay_corpus as replay;

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
fn stream() {
    replay("stream", vault_crypto::fuzzing::stream);
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
fn master_key_file() {
    replay("master_key_file", vault_crypto::fuzzing::master_key_file);
}

#[test]
fn workos_blob() {
    replay("workos_blob", vault_crypto::fuzzing::workos_blob);
}

#[test]
fn workos_blob_layouts() {
    replay(
        "workos_blob_layouts",
        vault_crypto::fuzzing::workos_blob_layouts,
    );
}

#[test]
fn workos_blob_text() {
    replay("workos_blob_text", vault_crypto::fuzzing::workos_blob_text);
}
