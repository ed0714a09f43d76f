//! The contenders of the peer comparison, set up once and shared by the criterion bench
//! (`benches/peers.rs`) and the interleaved table (`src/bin/table.rs`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use asherah as ael;
use aws_esdk::client as esdk_client;
use aws_esdk::material_providers::client as mpl_client;
use aws_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_esdk::material_providers::types::AesWrappingAlg;
pub use aws_esdk::material_providers::types::EsdkAlgorithmSuiteId;
use aws_esdk::types::aws_encryption_sdk_config::AwsEncryptionSdkConfig;
use vault_crypto::{Aad, KeyContext, ManagedKeyProvider, blocking};

/// The sizes both peers are compared at.
pub const SIZES: [usize; 4] = [64, 1024, 8 * 1024, 64 * 1024];

type AesGcm = ael::aead::AES256GCM;
type Kms = ael::kms::StaticKMS<AesGcm>;
type Meta = ael::metastore::InMemoryMetastore;

/// Asherah with its in-memory metastore and static KMS (what `KMS=test-debug-static` builds),
/// one session kept hot.
pub struct Asherah {
    session: ael::session::PublicSession<AesGcm, Kms, Meta>,
}

impl Asherah {
    pub fn new() -> Self {
        let crypto = Arc::new(AesGcm::new());
        let metastore = Arc::new(Meta::new());
        let kms = Arc::new(Kms::new(crypto.clone(), vec![7_u8; 32]).unwrap());
        let factory = ael::api::new_session_factory(
            ael::Config::new("bench-service", "bench-product"),
            metastore,
            kms,
            crypto,
        );
        let session = factory.get_session("partition-1");
        // The first encrypt creates the system and intermediate keys: keep it out of the timing.
        session.encrypt(b"warm").unwrap();
        Self { session }
    }

    /// Encrypt, returning the struct (its real crypto cost).
    pub fn encrypt(&self, pt: &[u8]) -> ael::types::DataRowRecord {
        self.session.encrypt(pt).unwrap()
    }

    /// Encrypt and serialise as JSON, as its language bindings store it.
    pub fn encrypt_json(&self, pt: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&self.session.encrypt(pt).unwrap()).unwrap()
    }

    pub fn decrypt(&self, drr: ael::types::DataRowRecord) -> Vec<u8> {
        self.session.decrypt(drr).unwrap()
    }
}

impl Default for Asherah {
    fn default() -> Self {
        Self::new()
    }
}

/// Our envelope through the managed provider on an in-memory ring, called from synchronous
/// code (`vault_crypto::blocking`), as an Asherah user calls Asherah.
pub struct Vault {
    pub keys: ManagedKeyProvider,
    pub ctx: KeyContext,
}

impl Vault {
    pub fn new() -> Self {
        Self {
            keys: ManagedKeyProvider::in_memory("root").unwrap(),
            ctx: KeyContext::from_pairs([("organization_id", "org_1"), ("user_id", "u_9")])
                .unwrap(),
        }
    }

    pub fn seal(&self, pt: &[u8]) -> vault_crypto::Sealed {
        blocking::seal(&self.keys, &self.ctx, pt, Aad::NONE).unwrap()
    }

    /// Opens an envelope the caller owns, in its own buffer (as Asherah's decrypt consumes its
    /// record).
    pub fn open_owned(&self, envelope: Vec<u8>) -> Vec<u8> {
        blocking::open_in_place(&self.keys, envelope, &self.ctx, Aad::NONE)
            .unwrap()
            .into_plaintext()
    }

    /// Opens a borrowed envelope (copied once into the plaintext's buffer).
    pub fn open(&self, envelope: &[u8]) -> Vec<u8> {
        blocking::open(&self.keys, envelope, &self.ctx, Aad::NONE)
            .unwrap()
            .into_plaintext()
    }
}

impl Default for Vault {
    fn default() -> Self {
        Self::new()
    }
}

/// The AWS Encryption SDK with a raw AES keyring and the same two-pair encryption context, on
/// its own single-threaded runtime.
pub struct Esdk {
    pub rt: tokio::runtime::Runtime,
    client: esdk_client::Client,
    keyring: aws_esdk::material_providers::types::keyring::KeyringRef,
    ec: HashMap<String, String>,
}

impl Esdk {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client =
            esdk_client::Client::from_conf(AwsEncryptionSdkConfig::builder().build().unwrap())
                .unwrap();
        let mpl = mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap())
            .unwrap();
        let keyring = rt
            .block_on(
                mpl.create_raw_aes_keyring()
                    .key_name("bench-key")
                    .key_namespace("bench")
                    .wrapping_key(vec![7u8; 32])
                    .wrapping_alg(AesWrappingAlg::AlgAes256GcmIv12Tag16)
                    .send(),
            )
            .unwrap();
        let ec = HashMap::from([
            ("organization_id".to_string(), "org_1".to_string()),
            ("user_id".to_string(), "u_9".to_string()),
        ]);
        Self {
            rt,
            client,
            keyring,
            ec,
        }
    }

    pub fn seal(&self, pt: &[u8], suite: EsdkAlgorithmSuiteId) -> Vec<u8> {
        self.rt
            .block_on(
                self.client
                    .encrypt()
                    .plaintext(pt.to_vec())
                    .keyring(self.keyring.clone())
                    .encryption_context(self.ec.clone())
                    .algorithm_suite_id(suite)
                    .send(),
            )
            .unwrap()
            .ciphertext
            .unwrap()
            .into_inner()
    }

    pub fn open(&self, ct: &[u8]) -> Vec<u8> {
        self.rt
            .block_on(
                self.client
                    .decrypt()
                    .ciphertext(ct.to_vec())
                    .keyring(self.keyring.clone())
                    .encryption_context(self.ec.clone())
                    .send(),
            )
            .unwrap()
            .plaintext
            .unwrap()
            .into_inner()
    }
}

impl Default for Esdk {
    fn default() -> Self {
        Self::new()
    }
}
