//! Replays the committed corpus of the server's fuzz targets through the same entry points the
//! cargo-fuzz targets call, so plain `cargo test` exercises them on any toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

// Shared with the testkit as a file, so this crate's tests depend on no other crate.
#[allow(unreachable_pub)]
#[path = "../../vault-testkit/src/corpus.rs"]
mod corpus;

use corpus::replay_corpus as replay;

#[test]
fn request_body() {
    replay("request_body", vault_server::fuzzing::request_body);
}

#[test]
fn list_query() {
    replay("list_query", vault_server::fuzzing::list_query);
}

#[test]
fn http_framing() {
    replay("http_framing", vault_server::fuzzing::http_framing);
}

#[test]
fn blob_headers() {
    replay("blob_headers", vault_server::fuzzing::blob_headers);
}
