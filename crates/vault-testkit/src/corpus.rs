//! Replays a cargo-fuzz target's committed corpus as a plain test. A file of its own, so the
//! crates whose fuzz targets it replays can include it (`#[path]`) without depending on the
//! testkit.

/// Replays the committed corpus of cargo-fuzz target `target` (`fuzz/corpus/<target>/`) through
/// `check`, the entry point the target calls, so plain `cargo test` exercises every target on
/// any toolchain. Fails on any input that panics, and on a corpus of fewer than 10 inputs.
pub fn replay_corpus(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
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
