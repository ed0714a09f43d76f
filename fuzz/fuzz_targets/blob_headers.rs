#![no_main]
// Asserts the properties of vault_server::fuzzing::blob_headers (ranges inside the blob, context failures typed 4xx naming the header), not only "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_server::fuzzing::blob_headers(data));
