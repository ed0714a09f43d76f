#![no_main]
// Streamed envelopes: heads read from raw bytes, and truncated, reordered, duplicated, extended
// or flipped segments of a valid stream; asserts vault_crypto::fuzzing::stream's properties.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_crypto::fuzzing::stream(data));
