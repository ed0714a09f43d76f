#![no_main]
// Asserts the properties of vault_server::fuzzing::http_framing (the same state however the bytes are cut), not only "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_server::fuzzing::http_framing(data));
