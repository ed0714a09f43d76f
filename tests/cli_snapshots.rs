//! The command line's output and exit codes as an operator sees them, one case per file in
//! `tests/cmd/` (arguments, standard input, the expected standard output, standard error and
//! exit code). `TRYCMD=overwrite cargo test --test cli_snapshots` rewrites them after a change
//! that is meant.
#![allow(clippy::expect_used)] // Test code: a panic is a failed test.

use std::path::Path;

#[test]
fn cli_output_and_exit_codes() {
    owner_only(Path::new("tests/cmd/operator.in/data"));
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .env("VAULT_LOG_FORMAT", "text")
        .case("tests/cmd/*.toml");
}

/// Git records only whether a file is executable, so a fresh clone gives the fixture's key
/// files the umask's mode (usually 0644), and the CLI rightly refuses a key ring that group
/// or others can read. Give them the mode `vault` itself writes before the sandboxes copy them.
fn owner_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).expect("the fixture data directory exists") {
        let path = entry.expect("a readable fixture entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("the fixture files can be chmodded");
    }
}
