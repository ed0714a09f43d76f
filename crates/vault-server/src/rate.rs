//! A token bucket per API key: `rate` requests per second with a burst of `rate`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: Option<f64>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept at most; idle ones are dropped beyond it.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub(crate) fn new(rate: Option<u32>) -> Self {
        Self {
            rate: rate.filter(|&r| r > 0).map(f64::from),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` if `key` may make a request now, else the seconds until it may.
    pub(crate) fn check(&self, key: &str) -> Result<(), u64> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / rate).ceil();
            // A small positive number of seconds.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Err(wait.max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_key() {
        let r = RateLimiter::new(Some(3));
        assert!((0..3).all(|_| r.check("a").is_ok()));
        assert_eq!(r.check("a"), Err(1));
        assert!(r.check("b").is_ok(), "keys have their own buckets");
        let off = RateLimiter::new(None);
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }
}
