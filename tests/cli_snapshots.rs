//! The command line's output and exit codes as an operator sees them, one case per file in
//! `tests/cmd/` (arguments, standard input, the expected standard output, standard error and
//! exit code). `TRYCMD=overwrite cargo test --test cli_snapshots` rewrites them after a change
//! that is meant.

#[test]
fn cli_output_and_exit_codes() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .env("VAULT_LOG_FORMAT", "text")
        .case("tests/cmd/*.toml");
}
