//! A command-line tool, not async, that encrypts notes to text files with a key ring on disk:
//! the ring is created once (`open_or_create`), opened as existing afterwards
//! (`open_existing`, which fails rather than start a new ring), and every seal and open runs
//! on the calling thread with no runtime.
//!
//! `cargo run -p vault-crypto --example blocking_files`

use std::error::Error as StdError;
use std::fs;

use vault_crypto::{Aad, Envelope, KeyContext, KeyRingError, ManagedKeyProvider, blocking};

fn main() -> Result<(), Box<dyn StdError>> {
    let dir = std::env::temp_dir().join(format!("vault-crypto-example-{}", std::process::id()));
    let ring_dir = dir.join("keys");
    let result = run(&dir, &ring_dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path, ring_dir: &std::path::Path) -> Result<(), Box<dyn StdError>> {
    // The service opens an existing ring; before set-up there is none, and it says so.
    let Err(missing) = ManagedKeyProvider::open_existing(ring_dir, "notes") else {
        return Err("a ring before set-up".into());
    };
    assert!(matches!(missing, KeyRingError::Missing { .. }));
    println!("before set-up: {missing}");

    // Set-up, once.
    ManagedKeyProvider::open_or_create(ring_dir, "notes")?;
    let keys = ManagedKeyProvider::open_existing(ring_dir, "notes")?;

    let owner = KeyContext::from_pairs([("user_id", "u_9")])?;
    let path = dir.join("note-1.txt");
    let sealed = blocking::seal(
        &keys,
        &owner,
        b"call the bank on monday",
        Aad::new(b"note-1"),
    )?;
    fs::write(&path, vault_crypto::encode_text(&sealed))?;
    println!(
        "wrote {} ({} bytes of text)",
        path.display(),
        fs::metadata(&path)?.len()
    );

    let bytes = Envelope::decode_text(&fs::read_to_string(&path)?)?;
    let opened = blocking::open(&keys, &bytes, &owner, Aad::new(b"note-1"))?;
    assert_eq!(opened.plaintext(), b"call the bank on monday");
    println!(
        "read back as {}: {}",
        opened.context(),
        String::from_utf8_lossy(opened.plaintext())
    );

    // Another user's context does not open it.
    let other = KeyContext::from_pairs([("user_id", "u_10")])?;
    let Err(refused) = blocking::open(&keys, &bytes, &other, Aad::new(b"note-1")) else {
        return Err("another user's context opened the note".into());
    };
    assert!(matches!(refused, vault_crypto::Error::ContextMismatch));
    println!("read as {other}: {refused}");
    Ok(())
}
