//! Bounded retries for remote key providers: how many attempts, how long to wait between them,
//! how long one attempt may take. The providers (AWS, GCP, Azure) make every call through
//! [`RetryPolicy::call`] and retry only [retryable](crate::ProviderError::is_retryable)
//! failures.

use std::time::Duration;

use crate::error::{ProviderError, ProviderErrorKind};

/// How many calls to a key service one operation may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Our own data: retry transient failures as the provider's [`RetryPolicy`] allows.
    Retry,
    /// A caller's bytes: one attempt, never retried.
    Once,
}

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it, with jitter of ±50%.
    pub base_delay: Duration,
    /// The longest backoff (and the cap on a throttling answer's hint).
    pub max_delay: Duration,
    /// The longest one attempt may take.
    pub call_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Sets the number of attempts.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first backoff.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// Sets the per-attempt timeout.
    #[must_use]
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }

    /// The pause before retry number `attempt` (0 for the first retry): exponential, jittered
    /// by ±50%, at least a server's hint, at most `max_delay`.
    pub fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        // Jitter between 0.5x and 1.5x.
        let factor = 0.5 + f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX);
        let jittered = exp.mul_f64(factor);
        hint.map_or(jittered, |h| h.max(jittered))
            .min(self.max_delay)
    }

    /// Runs one call to a key service: each attempt under [`call_timeout`](Self::call_timeout)
    /// (a timeout is [`ProviderErrorKind::Unavailable`] from `scheme`), retried while it fails
    /// with a retryable error, up to [`max_attempts`](Self::max_attempts) attempts in all, or
    /// exactly one with [`Attempts::Once`]. Needs a tokio runtime with its timer.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn call<T, Op, Fut>(
        &self,
        attempts: Attempts,
        scheme: &'static str,
        mut op: Op,
    ) -> Result<T, ProviderError>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let policy = match attempts {
            Attempts::Retry => *self,
            Attempts::Once => self.max_attempts(1),
        };
        let attempt = || {
            let call = op();
            async move {
                tokio::time::timeout(policy.call_timeout, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ProviderError::new(
                            ProviderErrorKind::Unavailable,
                            scheme,
                            "the call timed out",
                        ))
                    })
            }
        };
        retry(&policy, attempt, tokio::time::sleep).await
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not
/// [retryable](ProviderError::is_retryable), or `policy.max_attempts` attempts have been made,
/// waiting with `sleep` between attempts (injected, so the tests need no clock).
async fn retry<T, Op, Fut, Sleep, SleepFut>(
    policy: &RetryPolicy,
    mut attempt: Op,
    sleep: Sleep,
) -> Result<T, ProviderError>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
    Sleep: Fn(Duration) -> SleepFut,
    SleepFut: Future<Output = ()>,
{
    let mut made = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                made += 1;
                if !e.is_retryable() || made >= policy.max_attempts {
                    return Err(e);
                }
                sleep(policy.delay(made - 1, e.retry_after())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn run<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn retries_only_retryable_failures_and_at_most_max_attempts() {
        let policy = RetryPolicy::default().max_attempts(4);
        for (kind, expected_calls) in [
            (ProviderErrorKind::Throttled, 4),
            (ProviderErrorKind::Unavailable, 4),
            (ProviderErrorKind::Disabled, 1),
            (ProviderErrorKind::InvalidCiphertext, 1),
        ] {
            let calls = Cell::new(0);
            let sleeps = Cell::new(Duration::ZERO);
            let result: Result<(), _> = run(retry(
                &policy,
                || {
                    calls.set(calls.get() + 1);
                    async move { Err(ProviderError::new(kind, "test", "")) }
                },
                |d| {
                    sleeps.set(sleeps.get() + d);
                    async {}
                },
            ));
            assert_eq!(result.unwrap_err().kind(), kind);
            assert_eq!(calls.get(), expected_calls, "{kind:?}");
            assert_eq!(sleeps.get().is_zero(), expected_calls == 1);
        }
        // Success after two transient failures.
        let calls = Cell::new(0);
        let got = run(retry(
            &policy,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(ProviderError::new(ProviderErrorKind::Unavailable, "t", ""))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| async {},
        ));
        assert_eq!(got.unwrap(), 3);
    }

    /// On tokio's paused clock: an attempt that never answers is cut off after exactly
    /// `call_timeout`, and `max_attempts` of them are made with backoffs between them.
    #[tokio::test(start_paused = true)]
    async fn each_attempt_is_cut_off_by_its_timeout() {
        let policy = RetryPolicy::default()
            .max_attempts(3)
            .call_timeout(Duration::from_millis(500))
            .base_delay(Duration::from_millis(10));
        for (attempts, made) in [(Attempts::Retry, 3), (Attempts::Once, 1)] {
            let calls = Cell::new(0);
            let started = tokio::time::Instant::now();
            let e = policy
                .call(attempts, "test", || {
                    calls.set(calls.get() + 1);
                    std::future::pending::<Result<(), ProviderError>>()
                })
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert_eq!(e.kind(), ProviderErrorKind::Unavailable);
            assert_eq!(calls.get(), made);
            let timeouts = Duration::from_millis(500) * made;
            // Backoffs: at most 1.5 × (10 + 20) ms in all.
            assert!(
                took >= timeouts && took <= timeouts + Duration::from_millis(45),
                "{attempts:?}: {took:?}"
            );
        }
    }

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let p = RetryPolicy::default();
        for attempt in 0..10 {
            let d = p.delay(attempt, None);
            let base = p.base_delay.saturating_mul(1 << attempt).min(p.max_delay);
            assert!(
                d >= base.mul_f64(0.5).min(p.max_delay) && d <= p.max_delay,
                "{attempt}: {d:?}"
            );
        }
        // A server's hint raises the delay, within the cap.
        assert!(p.delay(0, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        assert_eq!(p.delay(0, Some(Duration::from_secs(60))), p.max_delay);
    }
}
