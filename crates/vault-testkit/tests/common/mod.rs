//! Helpers shared by the AWS tests: the moto endpoint and a client for it.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};

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

/// A KMS client for `url` with test credentials and the SDK's own retries off.
pub fn client(url: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(url)
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kms::Client::from_conf(config)
}
