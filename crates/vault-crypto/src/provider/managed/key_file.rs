//! A 32-byte key kept in a file of its own: one line, a prefix naming what it is and the key in
//! base64; mode 0600, never overwritten. The master key of a [`MasterKeySeal`](super::MasterKeySeal)
//! and a single machine's [integrity key](crate::integrity::IntegrityKey) are kept this way.

// A parser of outside bytes: no index or arithmetic that can panic.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::aead::KEY_LEN;
use crate::error::KeyRingError;

/// The longest key file read.
const MAX_LEN: u64 = 256;

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyRingError + '_ {
    move |source| KeyRingError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `key` to a new file at `path` (which must not exist), mode 0600, synced with its
/// directory.
pub(crate) fn create(path: &Path, prefix: &str, key: &[u8; KEY_LEN]) -> Result<(), KeyRingError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    let text = Zeroizing::new(format!("{prefix}{}\n", STANDARD.encode(key)));
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Reads the key of a file written by [`create`], refusing one that group or others can access.
pub(crate) fn read(path: &Path, prefix: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mode = file.metadata().map_err(io(path))?.mode();
    if mode & 0o077 != 0 {
        return Err(KeyRingError::Permissions {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    let mut text = Zeroizing::new(Vec::new());
    file.take(MAX_LEN)
        .read_to_end(&mut text)
        .map_err(io(path))?;
    parse(&text, prefix)
}

/// The key of a key file's text.
pub(crate) fn parse(text: &[u8], prefix: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
    let malformed = || KeyRingError::Malformed {
        reason: format!("a key file is one line: {prefix:?} and 32 bytes in base64"),
    };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let encoded = body.strip_prefix(prefix.as_bytes()).ok_or_else(malformed)?;
    if encoded.len() != 44 {
        return Err(malformed());
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut decoded = Zeroizing::new([0u8; 33]);
    match STANDARD.decode_slice(encoded, decoded.as_mut()) {
        Ok(KEY_LEN) => {}
        _ => return Err(malformed()),
    }
    key.copy_from_slice(decoded.get(..KEY_LEN).ok_or_else(malformed)?);
    Ok(key)
}
