#![no_main]
// Asserts the properties of vault_crypto::fuzzing::master_key_file, not only "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_crypto::fuzzing::master_key_file(data));
