//! Onboarding a customer's key: a live round trip through each provider before it is trusted
//! ([`verify`]), BYOK rules and providers kept in the store next to `vault.toml`'s
//! ([`Config::with_store`](crate::config::Config::with_store)), and a router that follows the store's rules while it runs
//! ([`ByokWatch`]).

use std::time::Duration;

use vault_crypto::{KeyContext, Reserved};
use vault_store::Actor;

/// How often a running process asks the store whether its BYOK rules changed: a change made
/// anywhere routes everywhere within this plus the time to connect a new key.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How often a customer key that could not be connected is tried again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

/// The actor of verification events and rule changes made by the operator's tools.
pub fn actor() -> Actor {
    Actor::new("vault_byok", "vault byok")
}

/// The context of every verification round trip (`{"vault_verification": "byok"}`); reserved,
/// so no caller's context can be it.
///
/// # Panics
/// Never: the context is a constant within every limit.
#[allow(clippy::expect_used)] // A constant pair, checked by a test.
pub fn verification_context() -> KeyContext {
    KeyContext::reserved(Reserved::ByokVerification).expect("a valid context")
}

mod document;
mod overlay;
mod verify;
mod watch;

pub use crate::config::Disconnected;
pub use document::*;
pub use overlay::*;
pub use verify::*;
pub use watch::*;
