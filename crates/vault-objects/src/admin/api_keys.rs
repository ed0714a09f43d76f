//! `vault apikey`: the deployment's API keys, their rows tagged with its integrity key.

use std::sync::Arc;

use vault_store::SqlStore;

use super::AdminError;
use crate::ApiKeys;
use crate::config::Config;
use crate::deployment::Deployment;
use crate::integrity::Upgrade;

/// The API keys of a deployment's store, for the operator's commands.
#[derive(Debug)]
pub struct ApiKeyAdmin {
    store: SqlStore,
    keys: ApiKeys,
}

impl ApiKeyAdmin {
    /// The store of `deployment`, its integrity record checked.
    ///
    /// # Errors
    /// If the store cannot be opened, or its integrity record fails.
    pub async fn open(deployment: &Deployment, config: &Config) -> Result<Self, AdminError> {
        let store = deployment.store().await?;
        let key = deployment
            .integrity(&store, config, Upgrade::Refuse)
            .await?;
        let keys = ApiKeys::new(Arc::new(store.clone()), key);
        Ok(Self { store, keys })
    }

    /// The keys: create ([`crate::api_keys::create`]), list, revoke.
    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// Closes the store.
    pub async fn close(self) {
        self.store.close().await;
    }
}
