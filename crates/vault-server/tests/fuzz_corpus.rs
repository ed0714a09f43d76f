//! Replays the committed corpus of the server's fuzz targets through the same entry points the
//! cargo-fuzz targets call, so plain `cargo test` exercises them on any toolchain.
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
fn request_body() {
    replay("request_body", vault_server::fuzzing::request_body);
}

#[test]
fn list_query() {
    replay("list_query", vault_server::fuzzing::list_query);
}
