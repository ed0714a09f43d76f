//! Every provider together through the facade: the managed ring by default, BYOK rules for AWS
//! KMS (moto on loopback), Google Cloud KMS and Azure Key Vault (the wire-level fakes). Objects
//! of each kind, then a rewrap from each provider to each other one (all twelve directions),
//! with every value ciphertext unchanged and every object still opening.
#![cfg(all(feature = "aws", feature = "gcp", feature = "azure"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::fakes::{azure, gcp};
use common::moto_url;
use vault::{RewrapScope, Vault};
use vault_crypto::{Envelope, KeyContext, KeyProvider, ManagedKeyProvider, RetryPolicy, Router};
use vault_store::{Actor, SqlStore, Store};

async fn aws(url: &str) -> Arc<dyn KeyProvider> {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .endpoint_url(url)
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let key = client.create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    Arc::new(
        vault_kms_aws::AwsKmsProvider::from_client(client, &key, RetryPolicy::default())
            .await
            .unwrap(),
    )
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

/// Version -> (scheme of its wrapped key, envelope without its wrapped keys).
async fn snapshot(store: &dyn Store) -> HashMap<(String, i64), (String, Vec<u8>)> {
    let mut out = HashMap::new();
    for v in store.scan_versions(None, 1000).await.unwrap() {
        let env = Envelope::parse(&v.envelope).unwrap();
        let scheme = env.wrapped_keys()[0].key_ref().scheme().to_owned();
        let mut kept = env.message_id().to_vec();
        kept.extend_from_slice(&v.envelope[v.envelope.len() - (env.plaintext_len() + 16)..]);
        out.insert((v.object_id, v.seq), (scheme, kept));
    }
    out
}

#[tokio::test]
async fn objects_of_every_provider_and_rewraps_from_each_to_each() {
    let Some(moto) = moto_url() else { return };
    let (gcp_server, _gcp) = vault_testkit::gcp_fake::start().await;
    let (azure_server, _azure) = vault_testkit::azure_fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let managed: Arc<dyn KeyProvider> =
        Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let providers: [(&str, Arc<dyn KeyProvider>); 4] = [
        ("managed", managed.clone()),
        ("aws-kms", aws(&moto).await),
        ("gcp-kms", gcp(&gcp_server.uri()).await),
        ("azure-kv", azure(&azure_server.uri())),
    ];
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let actor = Actor::new("key_test", "test");

    // One organization per ordered pair of providers: created on the first, moved to the second.
    let mut pairs = Vec::new();
    for (from, _) in &providers {
        for (to, _) in &providers {
            if from != to {
                pairs.push((format!("org_{from}_to_{to}"), *from, *to));
            }
        }
    }
    assert_eq!(pairs.len(), 12);
    let provider = |scheme: &str| {
        providers
            .iter()
            .find(|(s, _)| *s == scheme)
            .unwrap()
            .1
            .clone()
    };
    let router_for = |pick: &dyn Fn(&(String, &str, &str)) -> String| {
        let mut r = Router::new(managed.clone());
        for pair in &pairs {
            r = r
                .rule(
                    [("organization_id", pair.0.as_str())],
                    provider(&pick(pair)),
                )
                .unwrap();
        }
        // Every provider stays able to open what it wrapped.
        providers
            .iter()
            .fold(r, |r, (_, p)| r.decrypt_only(p.clone()))
    };

    let before = Vault::new(
        Arc::new(router_for(&|p| p.1.to_owned())),
        store.clone(),
        fresh_integrity(),
    );
    let mut ids = Vec::new();
    for (org, from, _) in &pairs {
        let meta = before
            .create(
                "prod",
                org,
                &ctx(org),
                None,
                format!("value of {org}").as_bytes(),
                &actor,
            )
            .await
            .unwrap();
        assert!(meta.key_id.starts_with(from), "{org}: {}", meta.key_id);
        before
            .update(
                "prod",
                &meta.id,
                format!("value of {org}, v2").as_bytes(),
                None,
                None,
                &actor,
            )
            .await
            .unwrap();
        ids.push(meta.id);
    }
    let original = snapshot(&*store).await;
    for ((id, (_, from, _)), seq) in ids.iter().zip(&pairs).flat_map(|x| [(x, 1), (x, 2)]) {
        assert_eq!(&original[&(id.clone(), seq)].0, from);
    }

    let after = Vault::new(
        Arc::new(router_for(&|p| p.2.to_owned())),
        store.clone(),
        fresh_integrity(),
    );
    for (org, _, _) in &pairs {
        let report = after
            .rewrap(
                &RewrapScope::Matching(vec![("organization_id".into(), org.clone())]),
                &Actor::new("user_ops", "ops"),
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!((report.matched, report.rewrapped), (2, 2), "{org}");
    }
    let now = snapshot(&*store).await;
    for (id, (org, from, to)) in ids.iter().zip(&pairs) {
        for seq in [1, 2] {
            let (scheme, kept) = &now[&(id.clone(), seq)];
            assert_eq!(scheme, to, "{org} v{seq}: moved {from} -> {to}");
            assert_eq!(
                kept,
                &original[&(id.clone(), seq)].1,
                "{org} v{seq}: ciphertext changed"
            );
        }
        let object = after.read("prod", id, &actor).await.unwrap();
        assert_eq!(object.value, format!("value of {org}, v2").as_bytes());
    }
}

/// An integrity key of its own for a store made by the test (nothing it reads needs the
/// store's integrity record).
fn fresh_integrity() -> Arc<vault::objects::IntegrityKey> {
    Arc::new(vault::objects::IntegrityKey::generate().unwrap())
}
