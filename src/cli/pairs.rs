//! `--match KEY=VALUE` arguments.

use vault::objects::{CryptoError as Error, KeyContext};

use super::exit::{self, Failure};

/// `--match KEY=VALUE` arguments as pairs, checked as a context would be.
pub(crate) fn match_pairs(matches: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let pairs = matches
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure {
                    code: exit::BAD_INPUT,
                    message: format!("--match {m:?}: expected KEY=VALUE"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeyContext::from_pairs(pairs.clone()).map_err(Error::from)?;
    Ok(pairs)
}
