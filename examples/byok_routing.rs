//! Bring your own key, routed from a `vault.toml`: one customer's objects are sealed under its
//! own key, everyone else's under the managed key, and the routing is in configuration, not code.
//!
//! Here the customer's key is a second managed ring so the example runs anywhere; in production
//! its provider is `type = "aws-kms"`, `"gcp-kms"` or `"azure-kv"` (see `docs/BYOK.md`), and
//! nothing else changes.
//!
//! ```text
//! cargo run --example byok_routing
//! ```

use vault::config::Config;
use vault_crypto::KeyContext;
use vault_store::Actor;

const VAULT_TOML: &str = r#"
default = "managed"

[providers.managed]
type = "managed"

# In production: type = "aws-kms", key_id = "arn:aws:kms:…" (the customer's key).
[providers.acme]
type = "managed"
ring = "acme"

[[rules]]
match = { organization_id = "org_acme" }
provider = "acme"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Strict: every problem is reported with its line (what `vault config check` prints).
    let config = Config::parse(VAULT_TOML, |_| None).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        lines.join("\n")
    })?;
    let vault = vault::open(dir.path(), &config).await?;
    let actor = Actor::new("example", "byok example");

    for org in ["org_acme", "org_other"] {
        let ctx = KeyContext::from_pairs([("organization_id", org)])?;
        let meta = vault
            .create(
                "production",
                &format!("{org}-api-token"),
                &ctx,
                None,
                b"s3cr3t",
                &actor,
            )
            .await?;
        let read = vault.read("production", &meta.id, &actor).await?;
        assert_eq!(read.value, b"s3cr3t");
        println!("{org}: sealed under {}", meta.key_id);
    }
    // The customer's objects are under its key, everyone else's under the managed one.
    let usage = vault.key_usage().await?;
    assert!(
        usage
            .iter()
            .any(|u| u.key_id.starts_with("managed://acme#"))
    );
    assert!(
        usage
            .iter()
            .any(|u| u.key_id.starts_with("managed://root#"))
    );
    Ok(())
}
