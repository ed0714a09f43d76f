#![no_main]
// Asserts the round-trip property of vault_crypto::fuzzing::workos_blob_layouts in each layout.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_crypto::fuzzing::workos_blob_layouts(data));
