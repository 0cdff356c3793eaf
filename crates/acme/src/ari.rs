//! ACME Renewal Information (RFC 9773): certificate identifiers and the
//! suggested renewal window.

use crate::b64::{b64url_decode, b64url_encode};
use crate::error::AcmeError;

/// Validity periods shorter than this get their ideal renewal time at half
/// the lifetime instead of two thirds (as Boulder does).
const SHORT_LIVED_SECS: i128 = 10 * 86_400;

/// The ARI certificate identifier (RFC 9773 §4.1):
/// `base64url(AKI keyIdentifier) "." base64url(serial)`, unpadded.
///
/// `serial` is the serial number's DER INTEGER content octets (for example
/// x509-parser's `raw_serial()`), or its unsigned big-endian magnitude: it is
/// brought to the minimal positive DER form, so redundant leading zeros are
/// dropped and a `0x00` is added when the high bit is set.
pub fn ari_cert_id(authority_key_id: &[u8], serial: &[u8]) -> String {
    format!(
        "{}.{}",
        b64url_encode(authority_key_id),
        b64url_encode(positive_integer_content(serial))
    )
}

/// `magnitude` as minimal DER INTEGER content of a positive number.
fn positive_integer_content(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    match digits.first() {
        None => vec![0],
        Some(first) if first & 0x80 != 0 => {
            let mut out = Vec::with_capacity(digits.len() + 1);
            out.push(0);
            out.extend_from_slice(digits);
            out
        }
        Some(_) => digits.to_vec(),
    }
}

/// Parses an ARI certificate identifier into (AKI keyIdentifier, serial DER
/// INTEGER content octets).
///
/// # Errors
/// `malformed` unless the id is two non-empty unpadded base64url parts
/// joined by one `.`.
pub fn parse_ari_cert_id(id: &str) -> Result<(Vec<u8>, Vec<u8>), AcmeError> {
    let malformed = || {
        AcmeError::malformed(format!(
            "invalid ARI certificate identifier {id:?}: expected base64url(AKI) \".\" base64url(serial) (RFC 9773 §4.1)"
        ))
    };
    let (aki, serial) = id.split_once('.').ok_or_else(malformed)?;
    if aki.is_empty() || serial.is_empty() || serial.contains('.') {
        return Err(malformed());
    }
    let aki = b64url_decode(aki, "ARI authority key identifier").map_err(|_| malformed())?;
    let serial = b64url_decode(serial, "ARI serial number").map_err(|_| malformed())?;
    Ok((aki, serial))
}

/// The suggested renewal window `(start, end)` in Unix seconds for a
/// certificate valid from `not_before` to `not_after` (both inclusive).
///
/// This follows Let's Encrypt's Boulder (`core.RenewalInfoSimple`): the
/// ideal renewal time is when one third of the lifetime is left (one half for
/// lifetimes under 10 days), and the window extends 1% of the lifetime (at
/// least one second) either side of it, clamped to the validity period. A
/// narrow window centred early enough leaves time for retries before
/// expiry while still spreading renewals.
///
/// If `urgent` (revoked, or the CA is being rotated), or the validity period
/// is empty, the window is `[now - 1 day, now - 1 hour]`: entirely in the
/// past, which tells clients to renew immediately (RFC 9773 §4.2), with an
/// hour of slack for clients whose clocks run behind.
pub fn ari_window(not_before: i64, not_after: i64, urgent: bool, now: i64) -> (i64, i64) {
    if urgent || not_after <= not_before {
        return (now.saturating_sub(86_400), now.saturating_sub(3_600));
    }
    let (nb, na) = (i128::from(not_before), i128::from(not_after));
    let validity = na - nb + 1;
    let offset = if validity < SHORT_LIVED_SECS {
        validity / 2
    } else {
        validity / 3
    };
    let ideal = na - offset;
    let margin = (validity / 100).max(1);
    let start = (ideal - margin).max(nb);
    let end = (ideal + margin).min(na);
    // Both values lie in [not_before, not_after], so they fit in an i64.
    (
        i64::try_from(start).unwrap_or(not_before),
        i64::try_from(end).unwrap_or(not_after),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC9773_AKI: [u8; 20] = [
        0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE,
        0x2C, 0xDE, 0x01, 0xC8, 0xD4,
    ];

    #[test]
    fn rfc9773_example() {
        let id = ari_cert_id(&RFC9773_AKI, &[0x00, 0x87, 0x65, 0x43, 0x21]);
        assert_eq!(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        // The unsigned magnitude gives the same id.
        assert_eq!(ari_cert_id(&RFC9773_AKI, &[0x87, 0x65, 0x43, 0x21]), id);
        let (aki, serial) = parse_ari_cert_id(&id).unwrap();
        assert_eq!(aki, RFC9773_AKI);
        assert_eq!(serial, [0x00, 0x87, 0x65, 0x43, 0x21]);
    }

    #[test]
    fn serial_normalisation() {
        assert_eq!(positive_integer_content(&[0, 0, 0x12]), [0x12]);
        assert_eq!(positive_integer_content(&[0, 0, 0x92]), [0, 0x92]);
        assert_eq!(positive_integer_content(&[]), [0]);
    }

    #[test]
    fn bad_ids() {
        for id in [
            "",
            ".",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.",
            ".AIdlQyE",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE.x",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ=.AIdlQyE",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE=",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdl+yE",
        ] {
            let e = parse_ari_cert_id(id).unwrap_err();
            assert_eq!(e.kind, crate::ErrorType::Malformed, "{id:?}");
        }
    }

    #[test]
    fn ninety_day_window_matches_boulder() {
        let nb = 1_700_000_000;
        let na = nb + 90 * 86_400 - 1;
        let (start, end) = ari_window(nb, na, false, nb);
        let validity = 90 * 86_400;
        let ideal = na - validity / 3;
        assert_eq!(start, ideal - validity / 100);
        assert_eq!(end, ideal + validity / 100);
    }

    #[test]
    fn urgent_window_is_in_the_past() {
        let now = 1_700_000_000;
        let (start, end) = ari_window(now - 10, now + 1_000_000, true, now);
        assert!(start < end && end < now);
        let (start, end) = ari_window(now, now, false, now);
        assert!(start < end && end < now);
    }

    proptest! {
        #[test]
        fn window_within_validity(
            not_before in -4_000_000_000i64..4_000_000_000,
            lifetime in 1i64..(20 * 365 * 86_400),
            now in -4_000_000_000i64..4_000_000_000,
        ) {
            let not_after = not_before + lifetime;
            let (start, end) = ari_window(not_before, not_after, false, now);
            prop_assert!(start < end, "{start} < {end}");
            prop_assert!(not_before <= start && end <= not_after);
            // The window is in the later part of the lifetime.
            prop_assert!(end - not_before >= (not_after - not_before) / 2);
        }

        #[test]
        fn urgent_window_before_now(
            not_before: i64,
            not_after: i64,
            now in (i64::MIN / 2)..(i64::MAX / 2),
        ) {
            let (start, end) = ari_window(not_before, not_after, true, now);
            prop_assert!(start < end && end < now);
        }

        #[test]
        fn extreme_inputs_do_not_panic(not_before: i64, not_after: i64, urgent: bool, now: i64) {
            let _ = ari_window(not_before, not_after, urgent, now);
        }

        #[test]
        fn cert_id_round_trip(aki in proptest::collection::vec(any::<u8>(), 1..40), serial in proptest::collection::vec(any::<u8>(), 1..20)) {
            let id = ari_cert_id(&aki, &serial);
            let (aki2, serial2) = parse_ari_cert_id(&id).unwrap();
            prop_assert_eq!(aki2, aki);
            prop_assert_eq!(serial2, positive_integer_content(&serial));
        }
    }
}
