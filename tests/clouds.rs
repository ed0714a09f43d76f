//! Every provider together through the facade: the managed ring by default, one BYOK rule for
//! AWS KMS (moto on loopback) and one for Google Cloud KMS (the wire-level fake). Objects of
//! each kind, then rewraps from each provider to each other, with every value ciphertext
//! unchanged and every object still opening.
#![cfg(all(feature = "aws", feature = "gcp"))]
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::moto_url;
use vault::Vault;
use vault::crypto::{Envelope, KeyContext, KeyProvider, ManagedKeyProvider, RetryPolicy, Router};
use vault::store::{Actor, SqlStore, Store};

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

async fn gcp(uri: &str) -> Arc<dyn KeyProvider> {
    let client = google_cloud_kms_v1::client::KeyManagementService::builder()
        .with_endpoint(uri)
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
        .build()
        .await
        .unwrap();
    Arc::new(
        vault_kms_gcp::GcpKmsProvider::from_client(
            client,
            vault_testkit::gcp_fake::KEY,
            RetryPolicy::default(),
        )
        .unwrap(),
    )
}

/// Per organization: the provider its rule names, and that provider's scheme.
type Phase<'a> = [(&'a str, &'a Arc<dyn KeyProvider>, &'a str); 3];

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
    let (gcp_server, _fake) = vault_testkit::gcp_fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let managed: Arc<dyn KeyProvider> =
        Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let (aws, gcp) = (aws(&moto).await, gcp(&gcp_server.uri()).await);
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let actor = Actor::new("key_test", "test");

    // Which provider each organization goes to, phase by phase: every object visits every
    // provider, so every direction of rewrap happens once.
    let phases: [Phase; 3] = [
        [
            ("org_a", &aws, "aws-kms"),
            ("org_g", &gcp, "gcp-kms"),
            ("org_m", &managed, "managed"),
        ],
        [
            ("org_a", &gcp, "gcp-kms"),
            ("org_g", &managed, "managed"),
            ("org_m", &aws, "aws-kms"),
        ],
        [
            ("org_a", &managed, "managed"),
            ("org_g", &aws, "aws-kms"),
            ("org_m", &gcp, "gcp-kms"),
        ],
    ];
    let router_for = |phase: &Phase| {
        let mut r = Router::new(managed.clone());
        for (org, provider, _) in phase {
            r = r
                .rule([("organization_id", *org)], (*provider).clone())
                .unwrap();
        }
        // Every provider stays able to open what it wrapped.
        r.decrypt_only(aws.clone()).decrypt_only(gcp.clone())
    };

    let vault = Vault::new(Arc::new(router_for(&phases[0])), store.clone());
    let mut ids = Vec::new();
    for (org, _, scheme) in &phases[0] {
        let meta = vault
            .create(
                "prod",
                org,
                &ctx(org),
                format!("value of {org}").as_bytes(),
                &actor,
            )
            .await
            .unwrap();
        assert!(meta.key_id.starts_with(scheme), "{org}: {}", meta.key_id);
        vault
            .update(
                "prod",
                &meta.id,
                format!("value of {org}, v2").as_bytes(),
                None,
                &actor,
            )
            .await
            .unwrap();
        ids.push((meta.id, *org));
    }
    let original = snapshot(&*store).await;

    for phase in &phases[1..] {
        let vault = Vault::new(Arc::new(router_for(phase)), store.clone());
        for (org, _, _) in phase {
            let report = vault
                .rewrap_matching(&[("organization_id".into(), (*org).into())], |_| {})
                .await
                .unwrap();
            assert_eq!((report.matched, report.rewrapped), (2, 2), "{org}");
        }
        let now = snapshot(&*store).await;
        for (id, org) in &ids {
            let scheme = phase.iter().find(|(o, _, _)| o == org).unwrap().2;
            for seq in [1, 2] {
                let (got_scheme, kept) = &now[&(id.clone(), seq)];
                assert_eq!(got_scheme, scheme, "{org} v{seq}");
                assert_eq!(
                    kept,
                    &original[&(id.clone(), seq)].1,
                    "{org} v{seq}: ciphertext changed"
                );
            }
            let object = vault.read("prod", id, &actor).await.unwrap();
            assert_eq!(object.value, format!("value of {org}, v2").as_bytes());
        }
    }
}
