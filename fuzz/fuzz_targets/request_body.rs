#![no_main]
// Asserts the properties of vault_server::fuzzing::request_body (every failure a typed 4xx), not only "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_server::fuzzing::request_body(data));
