//! Test only (see `tests/fork.rs`): this crate has no code of its own.
#![forbid(unsafe_code)]
