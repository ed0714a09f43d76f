#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use vault_objects as objects;
pub use vault_server as server;

pub use vault_objects::{
    DEFAULT_DATA_DIR, DESTROY_QUIET_SECS, Deployment, DestroyReport, KeyUsage, MANAGED_RING,
    Object, RewrapReport, RewrapScope, Rings, Shred, Vault, VaultError, byok, config,
    default_router, deployment, open, open_embedded, open_existing_managed,
};
