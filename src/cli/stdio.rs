//! Standard input and output of envelopes, and the configuration file.

use std::io::{self, Read, Write};

use vault::config::Config;
use vault::objects::{CryptoError as Error, Envelope, EnvelopeError, MAGIC, encode_text};
use zeroize::Zeroizing;

use super::exit::{self, Failure};

pub(crate) fn read_stdin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::new());
    io::stdin().lock().read_to_end(&mut buf)?;
    Ok(buf)
}

/// An envelope's bytes from binary or base64 text input. The caller parses them (once), before
/// any key is loaded.
pub(crate) fn envelope_bytes(input: &[u8]) -> Result<Vec<u8>, Failure> {
    let bytes = if input.starts_with(&MAGIC) {
        input.to_vec()
    } else {
        let text = std::str::from_utf8(input)
            .map_err(|_| Error::from(EnvelopeError::Base64))?
            .trim_ascii();
        Envelope::decode_text(text).map_err(Error::from)?
    };
    Ok(bytes)
}

/// Writes an envelope as binary, or as base64 text and a newline.
pub(crate) fn write_envelope(out: &mut dyn Write, bytes: &[u8], binary: bool) -> io::Result<()> {
    if binary {
        out.write_all(bytes)?;
    } else {
        out.write_all(encode_text(bytes).as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The configuration given, or the embedded default (the managed ring only).
pub(crate) fn load_config(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    match path {
        None => Ok(Config::embedded()),
        Some(path) => Config::load(path).map_err(|problems| Failure {
            code: exit::BAD_INPUT,
            message: problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}
