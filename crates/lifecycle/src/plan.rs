//! When to renew: at a fraction of the lifetime, a fixed time before expiry, or inside the
//! issuer's ARI window — spread with a per-certificate jitter so that certificates issued
//! together do not all renew in the same minute.

use serde::{Deserialize, Serialize};

/// When a certificate should be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RenewalPolicy {
    /// At this fraction of the lifetime (0 < f < 1; default 2/3).
    Fraction {
        /// Share of the lifetime elapsed at renewal.
        fraction: f64,
    },
    /// This many seconds before notAfter.
    BeforeExpiry {
        /// Seconds before notAfter.
        seconds: i64,
    },
    /// Inside the issuer's ARI suggested window when it gives one, else at 2/3.
    Ari,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        RenewalPolicy::Fraction {
            fraction: 2.0 / 3.0,
        }
    }
}

/// Why a renewal time was chosen (shown in status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalReason {
    /// The policy's fraction of the lifetime.
    LifetimeFraction,
    /// The policy's fixed time before expiry.
    BeforeExpiry,
    /// The issuer's ARI window.
    AriWindow,
    /// The issuer's ARI window lies in the past (revoked, CA rotated): renew now.
    AriUrgent,
    /// Not a renewal: ask the issuer for its ARI window again (see [`next_action`]).
    AriCheck,
}

impl RenewalReason {
    /// The reason as stored and shown in status, such as `lifetime_fraction`.
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalReason::LifetimeFraction => "lifetime_fraction",
            RenewalReason::BeforeExpiry => "before_expiry",
            RenewalReason::AriWindow => "ari_window",
            RenewalReason::AriUrgent => "ari_urgent",
            RenewalReason::AriCheck => "ari_check",
        }
    }
}

/// An issuer's suggested renewal window (RFC 9773 §4.2), Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriWindow {
    /// Start of the window.
    pub start: i64,
    /// End of the window.
    pub end: i64,
    /// Seconds until the issuer wants to be asked again (its `Retry-After`).
    pub retry_after: i64,
}

/// What asking an issuer for renewal information gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AriAnswer {
    /// The issuer does not offer renewal information (or the policy does not follow it).
    NotOffered,
    /// The issuer offers it but it could not be fetched.
    Unavailable,
    /// The window.
    Window(AriWindow),
}

/// Longest wait between two renewal-information checks, whatever the issuer's `Retry-After`
/// says (RFC 9773 §4.3.2 suggests treating longer values as one day).
pub const ARI_POLL_MAX: i64 = 86_400;
/// When renewal information could not be fetched, look again after this long (RFC 9773
/// §4.3.3 suggests six hours).
pub const ARI_RETRY_AFTER_ERROR: i64 = 6 * 3600;

/// The next action for a certificate valid [not_before, not_after]: its renewal time
/// ([`renewal_time`], inside the ARI window when there is one), or an earlier look at the
/// window when the issuer asks to be asked again before then (`Retry-After` clamped to
/// `poll_min` .. [`ARI_POLL_MAX`]; [`ARI_RETRY_AFTER_ERROR`] after a failed fetch).
pub fn next_action(
    not_before: i64,
    not_after: i64,
    policy: RenewalPolicy,
    ari: AriAnswer,
    jitter: f64,
    now: i64,
    poll_min: i64,
) -> (i64, RenewalReason) {
    let window = match ari {
        AriAnswer::Window(w) => Some((w.start, w.end)),
        _ => None,
    };
    let (renew_at, reason) = renewal_time(not_before, not_after, policy, window, jitter, now);
    let look_again = match ari {
        AriAnswer::Window(w) => Some(w.retry_after.clamp(poll_min.max(1), ARI_POLL_MAX)),
        AriAnswer::Unavailable => Some(ARI_RETRY_AFTER_ERROR),
        AriAnswer::NotOffered => None,
    };
    match look_again {
        Some(after) if now + after < renew_at => (now + after, RenewalReason::AriCheck),
        _ => (renew_at, reason),
    }
}

/// Share of the lifetime over which renewal times are spread (± half of it around the
/// policy's time), so that 10,000 certificates issued in one minute renew over hours.
const JITTER_SHARE: f64 = 0.10;

/// A deterministic value in [0, 1) for a managed certificate (so that its renewal time does
/// not move between reconciler runs), from SHA-256 of `seed`.
pub fn jitter_fraction(seed: &str) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    // 53 bits are all an f64 holds exactly.
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The renewal time (Unix seconds) of a certificate valid [not_before, not_after], and why.
///
/// The policy's time is spread by ±5 % of the lifetime using `jitter` (from
/// [`jitter_fraction`]), then clamped so that renewal always happens inside the validity and
/// at least a tenth of the lifetime before expiry — never after the certificate has expired.
/// With an ARI window (`ari`, start and end), [`RenewalPolicy::Ari`] picks a point inside it
/// (RFC 9773 §4.2 suggests a uniformly random one); a window entirely in the past means now.
pub fn renewal_time(
    not_before: i64,
    not_after: i64,
    policy: RenewalPolicy,
    ari: Option<(i64, i64)>,
    jitter: f64,
    now: i64,
) -> (i64, RenewalReason) {
    let lifetime = (not_after - not_before).max(1);
    let jitter = jitter.clamp(0.0, 1.0);
    if let (RenewalPolicy::Ari, Some((start, end))) = (policy, ari)
        && end > start
    {
        if end <= now {
            return (now, RenewalReason::AriUrgent);
        }
        let span = (end - start) as f64;
        let at = start + (span * jitter) as i64;
        return (at.max(now.min(end)), RenewalReason::AriWindow);
    }
    let (target, reason) = match policy {
        RenewalPolicy::Fraction { fraction } => (
            not_before + (lifetime as f64 * fraction.clamp(0.05, 0.95)) as i64,
            RenewalReason::LifetimeFraction,
        ),
        RenewalPolicy::BeforeExpiry { seconds } => {
            (not_after - seconds.max(0), RenewalReason::BeforeExpiry)
        }
        RenewalPolicy::Ari => (
            not_before + lifetime * 2 / 3,
            RenewalReason::LifetimeFraction,
        ),
    };
    let spread = (lifetime as f64 * JITTER_SHARE * (jitter - 0.5)) as i64;
    let latest = not_after - lifetime / 10;
    let at = (target + spread).clamp(not_before, latest.max(not_before));
    (at, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn two_thirds_of_ninety_days_is_day_sixty_within_the_jitter() {
        let (at, reason) = renewal_time(0, 90 * DAY, RenewalPolicy::default(), None, 0.5, 0);
        assert_eq!(reason, RenewalReason::LifetimeFraction);
        assert!((at - 60 * DAY).abs() <= 1, "{at}");
        let (early, _) = renewal_time(0, 90 * DAY, RenewalPolicy::default(), None, 0.0, 0);
        let (late, _) = renewal_time(0, 90 * DAY, RenewalPolicy::default(), None, 0.999, 0);
        assert!((60 * DAY - early - (9 * DAY) / 2).abs() <= 1, "{early}");
        assert!(late > 64 * DAY && late <= 65 * DAY, "{late}");
    }

    #[test]
    fn before_expiry_never_waits_past_the_last_tenth() {
        let policy = RenewalPolicy::BeforeExpiry { seconds: 0 };
        let (at, reason) = renewal_time(0, 10 * DAY, policy, None, 0.99, 0);
        assert_eq!(reason, RenewalReason::BeforeExpiry);
        assert!(at <= 9 * DAY);
    }

    #[test]
    fn ari_windows_are_followed_and_a_past_window_means_now() {
        let window = Some((50 * DAY, 51 * DAY));
        let (at, reason) = renewal_time(0, 90 * DAY, RenewalPolicy::Ari, window, 0.5, 0);
        assert_eq!(reason, RenewalReason::AriWindow);
        assert_eq!(at, 50 * DAY + DAY / 2);
        let past = Some((DAY, 2 * DAY));
        let (now_at, reason) = renewal_time(0, 90 * DAY, RenewalPolicy::Ari, past, 0.5, 3 * DAY);
        assert_eq!((now_at, reason), (3 * DAY, RenewalReason::AriUrgent));
        // No window from the issuer: two thirds.
        let (at, reason) = renewal_time(0, 90 * DAY, RenewalPolicy::Ari, None, 0.5, 0);
        assert_eq!(reason, RenewalReason::LifetimeFraction);
        assert!((at - 60 * DAY).abs() <= 1);
    }

    #[test]
    fn the_window_is_looked_at_again_when_the_issuer_asks_before_the_renewal() {
        let window = |retry_after| {
            AriAnswer::Window(AriWindow {
                start: 60 * DAY,
                end: 61 * DAY,
                retry_after,
            })
        };
        let next = |ari| next_action(0, 90 * DAY, RenewalPolicy::Ari, ari, 0.0, 0, 60);
        assert_eq!(next(window(6 * 3600)), (6 * 3600, RenewalReason::AriCheck));
        // Clamped: at least `poll_min`, at most a day.
        assert_eq!(next(window(0)), (60, RenewalReason::AriCheck));
        assert_eq!(next(window(90 * DAY)), (DAY, RenewalReason::AriCheck));
        // A failed fetch: two thirds, but look again in six hours.
        assert_eq!(
            next(AriAnswer::Unavailable),
            (ARI_RETRY_AFTER_ERROR, RenewalReason::AriCheck)
        );
        // No ARI at all: just the renewal time.
        let (at, reason) = next(AriAnswer::NotOffered);
        assert_eq!(reason, RenewalReason::LifetimeFraction);
        assert!((at - 60 * DAY).abs() <= DAY * 5);
        // The renewal comes first: renew, no check.
        let soon = next_action(
            0,
            90 * DAY,
            RenewalPolicy::Ari,
            window(DAY),
            0.0,
            60 * DAY - 10,
            60,
        );
        assert_eq!(soon, (60 * DAY, RenewalReason::AriWindow));
        // A window in the past: now.
        let past = next_action(
            0,
            90 * DAY,
            RenewalPolicy::Ari,
            window(60),
            0.5,
            70 * DAY,
            60,
        );
        assert_eq!(past, (70 * DAY, RenewalReason::AriUrgent));
    }

    #[test]
    fn reasons_read_as_their_serde_names() {
        for reason in [
            RenewalReason::LifetimeFraction,
            RenewalReason::BeforeExpiry,
            RenewalReason::AriWindow,
            RenewalReason::AriUrgent,
            RenewalReason::AriCheck,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
    }

    #[test]
    fn jitter_is_stable_and_spread() {
        assert_eq!(jitter_fraction("a"), jitter_fraction("a"));
        let values: Vec<f64> = (0..10_000)
            .map(|i| jitter_fraction(&format!("cert-{i}")))
            .collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        // Ten equal buckets each hold 10 % ± 2 %.
        let mut buckets = [0u32; 10];
        for v in &values {
            buckets[(v * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..=1200).contains(&n)),
            "{buckets:?}"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn renewal_is_inside_the_validity_and_before_the_last_tenth(
            not_before in 0i64..2_000_000_000,
            lifetime in 60i64..(400 * 86_400),
            fraction in 0.0f64..1.0,
            before in 0i64..(800 * 86_400),
            jitter in 0.0f64..1.0,
        ) {
            let not_after = not_before + lifetime;
            for policy in [
                RenewalPolicy::Fraction { fraction },
                RenewalPolicy::BeforeExpiry { seconds: before },
                RenewalPolicy::Ari,
            ] {
                let (at, _) = renewal_time(not_before, not_after, policy, None, jitter, not_before);
                prop_assert!(at >= not_before, "{policy:?}: {at}");
                prop_assert!(at <= not_after - lifetime / 10, "{policy:?}: {at}");
            }
        }

        #[test]
        fn an_ari_window_in_the_future_is_followed(
            start in 1_000i64..1_000_000,
            length in 1i64..100_000,
            jitter in 0.0f64..1.0,
        ) {
            let (at, reason) = renewal_time(0, 10_000_000, RenewalPolicy::Ari, Some((start, start + length)), jitter, 0);
            prop_assert_eq!(reason, RenewalReason::AriWindow);
            prop_assert!(at >= start && at <= start + length);
        }
    }
}
