//! After a failed attempt: when to try again, and with which issuer.

use serde::{Deserialize, Serialize};

/// Exponential backoff with a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failure, seconds.
    pub base_seconds: i64,
    /// Longest delay, seconds.
    pub cap_seconds: i64,
}

impl Default for Backoff {
    /// One minute, doubling up to six hours.
    fn default() -> Self {
        Backoff {
            base_seconds: 60,
            cap_seconds: 6 * 3600,
        }
    }
}

impl Backoff {
    /// When to try again after `failures` consecutive failures (1 after the first), at `now`.
    ///
    /// The delay doubles from `base_seconds` up to `cap_seconds` and is spread by `jitter`
    /// (in [0, 1)) over its upper half, so that certificates failing together do not retry
    /// together. An issuer's `Retry-After` (`retry_after`, Unix seconds; also sent with
    /// `rateLimited`) is a floor: the next attempt is never earlier, even beyond the cap.
    pub fn next_attempt(
        &self,
        failures: u32,
        retry_after: Option<i64>,
        jitter: f64,
        now: i64,
    ) -> i64 {
        let base = self.base_seconds.max(1);
        let cap = self.cap_seconds.max(base);
        let exponent = failures.saturating_sub(1).min(62);
        let delay = base.saturating_mul(1_i64 << exponent.min(40)).min(cap);
        let spread = delay / 2 + ((delay / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64;
        let at = now.saturating_add(spread.max(1));
        match retry_after {
            Some(floor) if floor > at => floor,
            _ => at,
        }
    }
}

/// Which issuer the next attempt goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerChoice {
    /// The managed certificate's issuer.
    Primary,
    /// Its fallback issuer.
    Fallback,
}

/// The primary issuer until it has failed `threshold` times in a row, then the fallback (when
/// one is declared). A success with either resets the count.
pub fn choose_issuer(
    consecutive_primary_failures: u32,
    threshold: u32,
    has_fallback: bool,
) -> IssuerChoice {
    if has_fallback && consecutive_primary_failures >= threshold.max(1) {
        IssuerChoice::Fallback
    } else {
        IssuerChoice::Primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::default();
        // Jitter 0: exactly half the delay; jitter ~1: the whole delay.
        assert_eq!(backoff.next_attempt(1, None, 0.0, 0), 30);
        assert_eq!(backoff.next_attempt(2, None, 0.0, 0), 60);
        assert_eq!(backoff.next_attempt(3, None, 0.0, 0), 120);
        assert_eq!(backoff.next_attempt(30, None, 0.0, 0), 3 * 3600);
        assert_eq!(backoff.next_attempt(1000, None, 0.999_999, 0), 6 * 3600 - 1);
    }

    #[test]
    fn retry_after_is_a_floor_even_past_the_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.next_attempt(1, Some(10_000), 0.5, 0), 10_000);
        assert_eq!(backoff.next_attempt(1, Some(100_000), 0.5, 0), 100_000);
        // A Retry-After already past does not pull the attempt earlier.
        assert_eq!(backoff.next_attempt(3, Some(5), 0.0, 1000), 1120);
    }

    #[test]
    fn fallback_after_the_threshold_only_when_declared() {
        assert_eq!(choose_issuer(2, 3, true), IssuerChoice::Primary);
        assert_eq!(choose_issuer(3, 3, true), IssuerChoice::Fallback);
        assert_eq!(choose_issuer(9, 3, false), IssuerChoice::Primary);
        assert_eq!(choose_issuer(1, 0, true), IssuerChoice::Fallback);
    }

    proptest! {
        #[test]
        fn the_next_attempt_is_later_bounded_and_monotonic(
            failures in 1u32..200,
            jitter in 0.0f64..1.0,
            now in 0i64..4_000_000_000,
            retry in proptest::option::of(0i64..5_000_000_000),
        ) {
            let backoff = Backoff::default();
            let at = backoff.next_attempt(failures, retry, jitter, now);
            prop_assert!(at > now);
            prop_assert!(at <= (now + backoff.cap_seconds).max(retry.unwrap_or(0)));
            if let Some(floor) = retry {
                prop_assert!(at >= floor);
            }
            // More failures never mean an earlier attempt (same jitter).
            prop_assert!(backoff.next_attempt(failures + 1, retry, jitter, now) >= at);
        }
    }
}
