//! Key contexts and rule matches on the command line: `--context` and `--match` each take a
//! JSON object (`{"organization_id":"org_1"}`) or `KEY=VALUE`, repeatable, all given merged.

use vault::objects::{CryptoError as Error, KeyContext};

use super::exit::{self, Failure};

/// The context of `args` given to `--flag`, each a JSON object or `KEY=VALUE`, checked together
/// as a context is (no key twice, 1 to 10 pairs, the limits on keys and values).
fn context(flag: &str, args: &[String]) -> Result<KeyContext, Failure> {
    let mut pairs = Vec::new();
    for arg in args {
        if arg.trim_start().starts_with('{') {
            let ctx = KeyContext::parse_json(arg.as_bytes()).map_err(|e| Failure {
                code: exit::BAD_INPUT,
                message: format!("--{flag}: {}", Error::from(e)),
            })?;
            pairs.extend(ctx.pairs().map(|(k, v)| (k.to_owned(), v.to_owned())));
        } else {
            let (k, v) = arg.split_once('=').ok_or_else(|| Failure {
                code: exit::BAD_INPUT,
                message: format!(
                    "--{flag} {arg:?}: expected KEY=VALUE or a JSON object such as {{\"organization_id\":\"org_1\"}}"
                ),
            })?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    KeyContext::from_pairs(pairs).map_err(|e| Failure {
        code: exit::BAD_INPUT,
        message: format!("--{flag}: {}", Error::from(e)),
    })
}

/// `--match` arguments as the pairs of a rule.
pub(crate) fn match_pairs(matches: &[String]) -> Result<Vec<(String, String)>, Failure> {
    Ok(context("match", matches)?
        .pairs()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `--context` arguments as a key context.
pub(crate) fn context_arg(args: &[String]) -> Result<KeyContext, Failure> {
    context("context", args)
}
