//! Exponential backoff with jitter, used when the server is unreachable: the poll loop's
//! reconnects and the retries of a worker's writes (100 ms doubling up to 5 s).

use std::time::Duration;

use rand::Rng as _;

/// Delays that double from `initial` up to `max`, each randomized to between half and all
/// of its nominal value so that many workers do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// 100 ms doubling up to 5 s.
    pub(crate) fn new() -> Self {
        Self::with_bounds(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Custom bounds.
    pub(crate) fn with_bounds(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures.min(20)))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row were seen.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (800, 1600),
            (1600, 3200),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay().as_millis();
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        for _ in 0..50 {
            let d = b.next_delay().as_millis();
            assert!((2_500..=5_000).contains(&d), "{d} above the cap");
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
