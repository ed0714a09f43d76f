use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Instant;

use vault_crypto::{KeyProvider, Router};
use vault_store::Store;

use crate::config::{Config, ProviderConfig, config_error};
use crate::rings::Rings;
use crate::{IntegrityKey, VaultError};

use super::document::{ByokDocument, load};
use super::overlay::merge;
use super::{RECONNECT_INTERVAL, WATCH_INTERVAL};

/// Keeps a router's rules equal to the configuration's plus the store's, while the router is in
/// use: every [`WATCH_INTERVAL`] it reads the store's BYOK generation (one row), and when it
/// moved, reads and authenticates the document, connects the new keys, and swaps the rules in.
/// Customer keys that could not be connected are tried again every [`RECONNECT_INTERVAL`].
#[derive(Debug)]
pub struct ByokWatch {
    config: Config,
    rings: Rings,
    store: Arc<dyn Store>,
    integrity: Arc<IntegrityKey>,
    state: tokio::sync::Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The generation the rules in force were read at.
    generation: Option<u64>,
    /// The default provider as the document's seal is opened with: strict (see
    /// [`Config::default_provider`]), never accepting a wrap anyone could forge.
    opener: Option<Arc<dyn KeyProvider>>,
    /// Connected providers by name (the file's and the store's).
    built: BTreeMap<String, Arc<dyn KeyProvider>>,
    /// The store's providers' definitions, by name: a provider removed and added again with
    /// another definition is connected again.
    definitions: BTreeMap<String, String>,
    /// Providers put in as [`Disconnected`], and when to try them again.
    disconnected: BTreeSet<String>,
    retry_at: Option<Instant>,
}

impl ByokWatch {
    /// A watch over `config`'s file providers and `store`'s BYOK document (its generation
    /// checked against the integrity record with `integrity`).
    pub fn new(
        config: Config,
        rings: Rings,
        store: Arc<dyn Store>,
        integrity: Arc<IntegrityKey>,
    ) -> Self {
        Self {
            config,
            rings,
            store,
            integrity,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Builds the router (managed rings created if `create`).
    ///
    /// # Errors
    /// If the store cannot be read, its document is not authentic or does not merge, or the
    /// default provider or a managed ring cannot be opened.
    pub async fn router(&self, create: bool) -> Result<Router, VaultError> {
        let mut state = self.state.lock().await;
        // The file's providers first: the default one authenticates the store's document.
        let usage = if self.config.needs_key_usage() {
            Some(self.store.key_usage().await?)
        } else {
            None
        };
        let mut disconnected = self
            .config
            .connect_providers(&self.rings, create, usage.as_deref(), &mut state.built)
            .await?;
        let default = state
            .built
            .get(self.config.default.get_ref())
            .cloned()
            .ok_or_else(|| config_error("the default provider is not defined"))?;
        // The router's default may accept unsigned Azure RSA wraps (while the store holds
        // some); the document's seal is opened by a strict instance that never does.
        let opener = match self.config.providers.get(self.config.default.get_ref()) {
            Some(p) if matches!(p.get_ref(), ProviderConfig::AzureKv { .. }) => {
                self.config.default_provider(&self.rings, false).await?
            }
            _ => default.clone(),
        };
        let (generation, document) = load(&*self.store, &*opener, &self.integrity).await?;
        state.opener = Some(opener);
        let merged = merge(&self.config, &document)?;
        let usage = if merged.needs_key_usage() && usage.is_none() {
            Some(self.store.key_usage().await?)
        } else {
            usage
        };
        disconnected.extend(
            merged
                .connect_providers(&self.rings, create, usage.as_deref(), &mut state.built)
                .await?,
        );
        let attempted: BTreeSet<String> = state.built.keys().cloned().collect();
        let rules = merged.rules_with(&state.built)?;
        state.note(generation, definitions(&document), &attempted, disconnected);
        Ok(Router::with_rules(default, rules))
    }

    /// Brings `router`'s rules up to date if the store's document changed (or a disconnected key
    /// is due for another try). Returns whether the rules were replaced.
    ///
    /// # Errors
    /// If the store cannot be read, the document is not authentic or does not merge: the rules
    /// in force stay.
    pub async fn refresh(&self, router: &Router) -> Result<bool, VaultError> {
        let mut state = self.state.lock().await;
        let generation = self.store.byok_generation().await?;
        let retry_due = state.retry_at.is_some_and(|at| Instant::now() >= at);
        if state.generation == Some(generation) && !retry_due {
            return Ok(false);
        }
        // One read of the document: its generation, providers and rules belong together.
        let opener = state
            .opener
            .clone()
            .unwrap_or_else(|| router.default_provider().clone());
        let (generation, document) = load(&*self.store, &*opener, &self.integrity).await?;
        if state.generation.is_some_and(|seen| generation < seen) {
            return Err(config_error(format!(
                "the store's BYOK rules went back from generation {} to {generation}: refused (a restored backup?)",
                state.generation.unwrap_or_default()
            )));
        }
        let merged = merge(&self.config, &document)?;
        let definitions = definitions(&document);
        // Forget the store's providers that went or changed, and those to try again.
        let stale: Vec<String> = state
            .built
            .keys()
            .filter(|name| {
                let from_store = !self.config.providers.contains_key(*name);
                (from_store && definitions.get(*name) != state.definitions.get(*name))
                    || (retry_due && state.disconnected.contains(*name))
            })
            .cloned()
            .collect();
        for name in &stale {
            state.built.remove(name);
        }
        let usage = if merged.needs_key_usage() {
            Some(self.store.key_usage().await?)
        } else {
            None
        };
        let mut built = std::mem::take(&mut state.built);
        let before: BTreeSet<String> = built.keys().cloned().collect();
        let connected = merged
            .connect_providers(&self.rings, false, usage.as_deref(), &mut built)
            .await;
        state.built = built;
        let disconnected = connected?;
        let attempted: BTreeSet<String> = state
            .built
            .keys()
            .filter(|n| !before.contains(*n))
            .cloned()
            .collect();
        let rules = merged.rules_with(&state.built)?;
        router.replace_rules(rules);
        state.note(generation, definitions, &attempted, disconnected);
        Ok(true)
    }

    /// Follows the store's rules for `router` until it is dropped. After a failed refresh it
    /// waits [`RECONNECT_INTERVAL`] before the next try.
    pub fn spawn(self: Arc<Self>, router: Weak<Router>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(router) = router.upgrade() else {
                    break;
                };
                if let Err(e) = self.refresh(&router).await {
                    tracing::warn!(
                        target: "vault::byok",
                        error = %e,
                        "BYOK rules not refreshed; the rules in force stay"
                    );
                    drop(router);
                    tokio::time::sleep(RECONNECT_INTERVAL).await;
                }
            }
        })
    }
}

/// The store providers' definitions by name.
fn definitions(document: &ByokDocument) -> BTreeMap<String, String> {
    document
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.definition.clone()))
        .collect()
}

impl WatchState {
    /// Records a pass: the generation read, the store's definitions, and which providers
    /// were connected on it (`attempted`) and failed (`disconnected`).
    fn note(
        &mut self,
        generation: u64,
        definitions: BTreeMap<String, String>,
        attempted: &BTreeSet<String>,
        disconnected: Vec<String>,
    ) {
        self.generation = Some(generation);
        self.definitions = definitions;
        self.disconnected.retain(|n| !attempted.contains(n));
        self.disconnected.extend(disconnected);
        let built = &self.built;
        self.disconnected.retain(|n| built.contains_key(n));
        if self.disconnected.is_empty() {
            self.retry_at = None;
        } else if self.retry_at.is_none_or(|at| Instant::now() >= at) {
            self.retry_at = Some(Instant::now() + RECONNECT_INTERVAL);
        }
    }
}
