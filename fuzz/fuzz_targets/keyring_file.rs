#![no_main]
// Asserts the round-trip property of vault_crypto::fuzzing::keyring_file, not only "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_crypto::fuzzing::keyring_file(data));
