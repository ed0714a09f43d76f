//! Onboarding a customer's key: a live round trip through each provider before it is trusted
//! ([`verify`]), BYOK rules and providers kept in the store next to `vault.toml`'s
//! ([`Config::with_store`]), and a router that follows the store's rules while it runs
//! ([`ByokWatch`]).

use std::time::Duration;

use vault_crypto::KeyContext;
use vault_store::Actor;

/// The key of the context every verification generates its data key under
/// (`{"vault_verification": "byok"}`); reserved, so no caller's context can be it.
pub const VERIFICATION_CONTEXT_KEY: &str = "vault_verification";

/// How often a running process asks the store whether its BYOK rules changed: a change made
/// anywhere routes everywhere within this plus the time to connect a new key.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How often a customer key that could not be connected is tried again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

/// The actor of verification events and rule changes made by the operator's tools.
pub fn actor() -> Actor {
    Actor::new("vault_byok", "vault byok")
}

/// The context of every verification round trip.
///
/// # Panics
/// Never: the context is a constant within every limit.
#[allow(clippy::expect_used)] // A constant pair, checked by a test.
pub fn verification_context() -> KeyContext {
    KeyContext::from_pairs([(VERIFICATION_CONTEXT_KEY, "byok")]).expect("a valid context")
}

/// The reserved context key the BYOK document is sealed under (`{"vault_byok": "config"}`).
pub const SEAL_CONTEXT_KEY: &str = "vault_byok";

mod document;
mod overlay;
mod verify;
mod watch;

pub use crate::config::Disconnected;
pub use document::*;
pub use overlay::*;
pub use verify::*;
pub use watch::*;
