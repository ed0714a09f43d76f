//! Bring-your-own-key with AWS KMS: one customer's values wrapped by the customer's own KMS
//! key, everyone else's by the service's managed ring, with a data-key cache in front of KMS.
//!
//! ```text
//! cargo run -p vault-kms-aws --example customer_key -- <key id or ARN> [--endpoint URL]
//! cargo run -p vault-kms-aws --example customer_key -- --create --endpoint http://127.0.0.1:5000
//! ```
//!
//! Credentials and region come from the standard AWS chain (environment, profile, instance
//! role). `--create` makes a new key first, for an emulator (moto, LocalStack).

use std::error::Error as StdError;
use std::sync::Arc;

use vault_crypto::{Aad, CacheLimits, CachingProvider, KeyContext, ManagedKeyProvider, Router};
use vault_kms_aws::{AwsKmsProvider, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args
        .iter()
        .position(|a| a == "--endpoint")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let key_id = if args.iter().any(|a| a == "--create") {
        create_key(endpoint).await?
    } else {
        args.first()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .ok_or(
                "usage: customer_key <key id or ARN> [--endpoint URL] | --create --endpoint URL",
            )?
    };

    let acme_kms = AwsKmsProvider::connect(&key_id, None, endpoint, RetryPolicy::default()).await?;
    println!("org_acme's key: {}", acme_kms.key_arn());
    // One KMS call per 1,000 values (or 5 minutes), not one per value.
    let acme = Arc::new(CachingProvider::new(
        Arc::new(acme_kms),
        CacheLimits::default(),
    ));
    let managed = Arc::new(ManagedKeyProvider::in_memory("root")?);
    let router = Router::new(managed).rule([("organization_id", "org_acme")], acme.clone())?;

    for org in ["org_acme", "org_globex"] {
        let ctx = KeyContext::from_pairs([("organization_id", org), ("user_id", "u_1")])?;
        let mut last = None;
        for i in 0..100u32 {
            let value = format!("{org} secret {i}");
            last = Some((
                value.clone(),
                vault_crypto::seal(&router, &ctx, value.as_bytes(), Aad::NONE).await?,
            ));
        }
        let (value, sealed) = last.ok_or("nothing sealed")?;
        let opened = vault_crypto::open(&router, &sealed, &ctx, Aad::NONE).await?;
        assert_eq!(opened.plaintext(), value.as_bytes());
        println!("{org}: 100 values under {}", sealed.key_ref().scheme());
        let expected = if org == "org_acme" {
            "aws-kms"
        } else {
            "managed"
        };
        assert_eq!(sealed.key_ref().scheme(), expected);
    }
    let stats = acme.stats();
    println!(
        "AWS KMS calls for org_acme's 100 values and one read: {} ({} seals from the cache)",
        stats.provider_calls, stats.encrypt_hits
    );
    assert_eq!(
        stats.provider_calls, 1,
        "one GenerateDataKey; the read used the cached key"
    );
    Ok(())
}

/// A new symmetric key, for an emulator.
async fn create_key(endpoint: Option<&str>) -> Result<String, Box<dyn StdError>> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let client = aws_sdk_kms::Client::new(&loader.load().await);
    let created = client
        .create_key()
        .description("vault-kms-aws example")
        .send()
        .await?;
    let arn = created
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or("CreateKey returned no ARN")?;
    Ok(arn.to_owned())
}
