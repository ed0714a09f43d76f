#![doc = include_str!("../../../crates/vault-crypto/README.md")]
#![forbid(unsafe_code)]
