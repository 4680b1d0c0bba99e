//! How long to wait before trying again: exponential, capped, jittered.

use std::time::Duration;

/// An exponential backoff with "equal jitter": retry `n` waits a random
/// point in the second half of `first × 2ⁿ⁻¹` (at most `max`), so things
/// that failed together do not all retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// About how long the first retry waits.
    pub first: Duration,
    /// The longest wait before any retry.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry `retry` (1 for the first).
    pub fn delay(&self, retry: u32) -> Duration {
        use std::hash::BuildHasher as _;
        let full = self
            .first
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.max);
        let random = std::collections::hash_map::RandomState::new().hash_one(retry);
        full / 2 + (full / 2).mul_f64((random % 1000) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap() {
        let backoff = Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        for retry in 1..40 {
            let full = (backoff.first * (1 << (retry - 1).min(10))).min(backoff.max);
            let delay = backoff.delay(retry);
            assert!(
                full / 2 <= delay && delay <= full,
                "retry {retry}: {delay:?}"
            );
        }
        assert!(backoff.delay(1) <= backoff.first && backoff.delay(2) >= backoff.first);
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| backoff.delay(3)).collect();
        assert!(spread.len() > 1, "jitter: {spread:?}");
    }
}
