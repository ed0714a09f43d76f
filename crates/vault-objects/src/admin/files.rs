//! `vault encrypt` / `vault decrypt`: envelopes kept outside the store (files, pipes), sealed
//! and opened through the deployment's providers and rules.

use std::path::PathBuf;

use vault_crypto::stream::{self, StreamHead, StreamOpener, StreamSealer};
use vault_crypto::{Aad, Envelope, KeyContext, Opened, Router, Sealed};

use super::AdminError;
use crate::config::Config;
use crate::deployment::{Deployment, default_router, open_existing_managed};
use crate::rings::Rings;

/// The keys of envelopes kept outside the store.
#[derive(Debug)]
pub struct FileKeys {
    router: Router,
}

impl FileKeys {
    /// The deployment's router: the store's BYOK providers and rules join the file's wherever
    /// there is a store. With `create`, a ring that does not exist yet is made (encrypting);
    /// reading never makes one. `config_given`: a configuration file was named.
    ///
    /// # Errors
    /// If the store, a ring or a provider cannot be opened.
    pub async fn open(
        deployment: &Deployment,
        config: &Config,
        create: bool,
        config_given: bool,
    ) -> Result<Self, AdminError> {
        let d = deployment;
        let store = if d.has_store() {
            Some(d.store().await?)
        } else {
            None
        };
        let router = if let Some(store) = store.as_ref().filter(|_| d.rings_in_database()) {
            let rings = d.rings(store, config).await?;
            let config = d.merged(config, &rings, store).await?;
            config.router_for_store(&rings, create, None).await?
        } else if create || config_given || store.is_some() {
            // The store beside the ring files, if there is one: a ring file is never made
            // while it holds the ring or data under it.
            let rings = Rings::Files {
                dir: PathBuf::from(d.data_dir()),
                store: store.clone(),
            };
            let config = match &store {
                Some(s) => d.merged(config, &rings, s).await?,
                None => config.clone(),
            };
            config.router_for_store(&rings, create, None).await?
        } else {
            default_router(open_existing_managed(d.data_dir())?)
        };
        Ok(Self { router })
    }

    /// `plaintext` sealed for `context`, with `aad` bound to it.
    ///
    /// # Errors
    /// If the provider cannot wrap, or the plaintext is too large.
    pub async fn encrypt(
        &self,
        context: &KeyContext,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, AdminError> {
        Ok(vault_crypto::seal(&self.router, context, plaintext, Aad::new(aad)).await?)
    }

    /// `envelope` opened with `aad`, whatever (caller's) context it carries: the operator's
    /// file names none, and [`Opened::context`] says which it was.
    ///
    /// # Errors
    /// `DecryptionFailed` if it does not open, a reserved context, or a provider failure.
    pub async fn decrypt(&self, envelope: &Envelope<'_>, aad: &[u8]) -> Result<Opened, AdminError> {
        Ok(envelope
            .open_any_context(&self.router, Aad::new(aad))
            .await?)
    }

    /// Begins sealing a stream of any size for `context` (suite 4, in 64 KiB segments), with
    /// `aad` bound to every segment: write the plaintext through the sealer's writer.
    ///
    /// # Errors
    /// If the provider cannot wrap.
    pub async fn encrypt_stream(
        &self,
        context: &KeyContext,
        aad: &[u8],
    ) -> Result<StreamSealer, AdminError> {
        Ok(stream::seal(
            &self.router,
            context,
            Aad::new(aad),
            stream::DEFAULT_SEGMENT_SIZE,
        )
        .await?)
    }

    /// The segment key of a streamed envelope whose head was read, whatever (caller's) context
    /// it carries ([`StreamOpener::context`] says which), with `aad`.
    ///
    /// # Errors
    /// `DecryptionFailed` if its data key does not unwrap to the committed one, a reserved
    /// context, or a provider failure.
    pub async fn decrypt_stream(
        &self,
        head: &StreamHead,
        aad: &[u8],
    ) -> Result<StreamOpener, AdminError> {
        Ok(head.open_any_context(&self.router, Aad::new(aad)).await?)
    }
}
