//! Exponential reconnect backoff with random jitter.
//!
//! Delays grow 1, 2, 4, 8, 16 s and stop at 30 s; every delay gets a uniform 0–5 s jitter drawn
//! from the caller's RNG, so a relay restart does not make every client redial in the same
//! instant (thundering herd).

use std::time::Duration;

use rand_core::CryptoRng;

/// Tunables of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Largest delay before jitter; the doubling stops here.
    pub cap: Duration,
    /// Upper bound (inclusive, millisecond resolution) of the uniform jitter added to each delay.
    pub max_jitter: Duration,
}

impl BackoffConfig {
    /// 1 s base, 30 s cap, 0–5 s jitter.
    pub const DEFAULT: BackoffConfig = BackoffConfig {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(30),
        max_jitter: Duration::from_secs(5),
    };

    /// The largest delay [`Backoff::next_delay`] can ever return with this configuration.
    pub fn max_delay(&self) -> Duration {
        self.cap.max(self.base).saturating_add(self.max_jitter)
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Reconnect delay generator: call [`next_delay`](Self::next_delay) after each failure and
/// [`reset`](Self::reset) after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    /// Failures since the last reset (saturating).
    failures: u32,
}

impl Backoff {
    /// A backoff with no failures recorded.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Failures recorded since the last [`reset`](Self::reset); saturates at `u32::MAX`.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay (without jitter) that the next call to [`next_delay`](Self::next_delay) is
    /// based on: `base · 2^failures`, capped.
    pub fn base_delay(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        let cap = self.config.cap.max(self.config.base);
        self.config.base.saturating_mul(factor).min(cap)
    }

    /// Records a failure and returns how long to wait before the next attempt: the current
    /// base delay plus a uniform jitter in `0..=max_jitter` (millisecond resolution).
    pub fn next_delay<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let delay = self.base_delay().saturating_add(self.jitter(rng));
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Forgets all failures: the next delay starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn jitter<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Duration {
        self.jitter_within(self.config.max_jitter, rng)
    }

    /// A uniform draw in `0..=max` (millisecond resolution); records nothing.
    pub fn jitter_within<R: CryptoRng + ?Sized>(&self, max: Duration, rng: &mut R) -> Duration {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        let Some(span) = max_ms.checked_add(1) else {
            return Duration::from_millis(rng.next_u64());
        };
        // Multiply-shift maps a 64-bit draw onto 0..span with negligible bias.
        let ms = (u128::from(rng.next_u64()) * u128::from(span)) >> 64;
        Duration::from_millis(u64::try_from(ms).unwrap_or(max_ms))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BackoffConfig::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn no_jitter() -> Backoff {
        Backoff::new(BackoffConfig {
            max_jitter: Duration::ZERO,
            ..BackoffConfig::DEFAULT
        })
    }

    #[test]
    fn delays_double_from_one_second_and_cap_at_thirty() {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let mut b = no_jitter();
        let secs: Vec<u64> = (0..8).map(|_| b.next_delay(&mut rng).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn jitter_stays_within_zero_to_five_seconds_and_varies() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1000 {
            let mut b = Backoff::default();
            let d = b.next_delay(&mut rng);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(6),
                "{d:?}"
            );
            seen_low |= d < Duration::from_millis(1500);
            seen_high |= d > Duration::from_millis(5500);
        }
        assert!(
            seen_low && seen_high,
            "jitter should cover the whole 0–5 s range"
        );
    }

    #[test]
    fn reset_returns_to_base() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut b = no_jitter();
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.base_delay(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(&mut rng), Duration::from_secs(1));
    }

    #[test]
    fn failure_counter_saturates_without_overflow() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut b = Backoff {
            failures: u32::MAX - 1,
            ..Backoff::default()
        };
        for _ in 0..5 {
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(35));
        }
        assert_eq!(b.failures(), u32::MAX);
        assert_eq!(b.base_delay(), Duration::from_secs(30));
    }

    #[test]
    fn delay_never_exceeds_cap_plus_jitter() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut b = Backoff::default();
        for _ in 0..10_000 {
            assert!(b.next_delay(&mut rng) <= BackoffConfig::DEFAULT.max_delay());
        }
        assert_eq!(BackoffConfig::DEFAULT.max_delay(), Duration::from_secs(35));
    }

    #[test]
    fn extreme_configs_do_not_panic() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut b = Backoff::new(BackoffConfig {
            base: Duration::MAX,
            cap: Duration::MAX,
            max_jitter: Duration::MAX,
        });
        for _ in 0..40 {
            b.next_delay(&mut rng);
        }
        let mut z = Backoff::new(BackoffConfig {
            base: Duration::ZERO,
            cap: Duration::ZERO,
            max_jitter: Duration::ZERO,
        });
        assert_eq!(z.next_delay(&mut rng), Duration::ZERO);
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = ChaCha20Rng::seed_from_u64(9);
        let mut b = ChaCha20Rng::seed_from_u64(9);
        let mut x = Backoff::default();
        let mut y = Backoff::default();
        for _ in 0..20 {
            assert_eq!(x.next_delay(&mut a), y.next_delay(&mut b));
        }
    }
}
