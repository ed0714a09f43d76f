//! Unpublished: conformance suites and test doubles, downstream of every crate (as rustls keeps
//! its own test crate), so no crate's `cargo test` builds another's dependencies.
//!
//! - [`store`]: the `Store` checks, run on SQLite and PostgreSQL from `tests/store.rs`.
//! - [`provider`]: the `KeyProvider` checks, run on the managed provider, AWS KMS (moto), and
//!   the Cloud KMS and Key Vault fakes from `tests/`.
//! - [`gcp_fake`], [`azure_fake`]: loopback stand-ins for Cloud KMS and Key Vault.
//! - [`replay_corpus`]: a fuzz target's corpus as a plain test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)] // A test suite: a panic is a failure.

pub mod azure_fake;
mod corpus;
pub mod gcp_fake;
pub mod postgres;
pub mod provider;
pub mod ring;
pub mod store;

pub use corpus::replay_corpus;
pub use store::*;
