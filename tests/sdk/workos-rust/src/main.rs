//! `workos-blob-check encrypt DATA_KEY_B64 ENCRYPTED_KEYS_B64 AAD PLAINTEXT` prints the blob the
//! `workos` crate makes; `decrypt DATA_KEY_B64 AAD BLOB` prints its plaintext; `keys BLOB`
//! prints its encrypted keys (base64). Exit status 1 with the crate's error otherwise.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["encrypt", key, keys, aad, plaintext] => workos::local_encrypt(plaintext, key, keys, aad),
        ["decrypt", key, aad, blob] => workos::local_decrypt(blob, key, aad),
        ["keys", blob] => workos::extract_encrypted_keys(blob),
        _ => {
            eprintln!("usage: encrypt KEY KEYS AAD PLAINTEXT | decrypt KEY AAD BLOB | keys BLOB");
            std::process::exit(2);
        }
    };
    match out {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
