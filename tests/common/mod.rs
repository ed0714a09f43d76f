//! Helpers shared by the end-to-end tests.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

/// moto's URL from `scripts/with-moto`; `None` (reported as skipped) outside CI without it.
pub fn moto_url() -> Option<String> {
    match std::env::var("VAULT_TEST_MOTO_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_MOTO_URL is not set: the AWS KMS tests must run in CI"
            );
            eprintln!("SKIPPED: AWS KMS tests (run scripts/test, or set VAULT_TEST_MOTO_URL)");
            None
        }
    }
}
