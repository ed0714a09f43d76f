//! What the commands show on a terminal besides their answers.

use std::io;

use vault::objects::Timestamp;

/// A progress bar on a terminal, nothing otherwise.
pub(crate) fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Seconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .map_or_else(|| secs.to_string(), |us| Timestamp(us).to_rfc3339())
}
