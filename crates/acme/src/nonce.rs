//! Anti-replay nonces (RFC 8555 §6.5) that can be checked without storage.

use std::fmt;

use aws_lc_rs::{constant_time, hmac};

use crate::b64::b64url_encode;
use crate::error::AcmeError;

/// Length of an encoded nonce: base64url of 32 bytes, unpadded.
const NONCE_LEN: usize = 43;

/// The HMAC-SHA256 key that issues and checks nonces.
///
/// A nonce is `base64url(random (8 bytes) || expires_at (8 bytes, big-endian)
/// || first 16 bytes of HMAC-SHA256 over the previous 16)`. [`NonceKey::check`]
/// proves the server issued it and that it has not expired; single use is the
/// caller's job: remember the id it returns until the nonce expires, and
/// refuse an id seen before.
pub struct NonceKey(hmac::Key);

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    /// A nonce key from 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn tag(&self, body: &[u8]) -> [u8; 16] {
        let tag = hmac::sign(&self.0, body);
        let mut out = [0u8; 16];
        // An HMAC-SHA256 tag is 32 bytes, so the first 16 always exist.
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    /// A fresh nonce, valid until `expires_at` (Unix seconds, inclusive).
    /// `random` makes it unique and is its id.
    pub fn issue(&self, random: u64, expires_at: i64) -> String {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&random.to_be_bytes());
        raw[8..16].copy_from_slice(&expires_at.to_be_bytes());
        let tag = self.tag(&raw[..16]);
        raw[16..].copy_from_slice(&tag);
        b64url_encode(raw)
    }

    /// Checks the MAC and expiry; returns the nonce's unique id (its 8
    /// random bytes as a `u64`) and its expiry.
    ///
    /// # Errors
    /// `badNonce` when the nonce is not in this format, was not issued with
    /// this key, or `now` is past its expiry.
    pub fn check(&self, nonce: &str, now: i64) -> Result<(u64, i64), AcmeError> {
        let unknown = || AcmeError::bad_nonce("the nonce was not issued by this server");
        if nonce.len() != NONCE_LEN {
            return Err(unknown());
        }
        let decoded = crate::b64::b64url_decode(nonce, "nonce").map_err(|_| unknown())?;
        let raw: [u8; 32] = decoded.try_into().map_err(|_| unknown())?;
        constant_time::verify_slices_are_equal(&self.tag(&raw[..16]), &raw[16..])
            .map_err(|_| unknown())?;
        let mut random = [0u8; 8];
        random.copy_from_slice(&raw[..8]);
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&raw[8..16]);
        let expires_at = i64::from_be_bytes(expires);
        if now > expires_at {
            return Err(AcmeError::bad_nonce(
                "the nonce has expired; fetch a new one from newNonce",
            ));
        }
        Ok((u64::from_be_bytes(random), expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorType;
    use proptest::prelude::*;

    fn key() -> NonceKey {
        NonceKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn round_trip() {
        let key = key();
        let nonce = key.issue(42, 1_000);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(key.check(&nonce, 999).unwrap(), (42, 1_000));
        assert_eq!(key.check(&nonce, 1_000).unwrap(), (42, 1_000));
        assert_ne!(nonce, key.issue(43, 1_000));
        assert_eq!(format!("{key:?}"), "NonceKey(..)");
    }

    #[test]
    fn expired_nonce_fails() {
        let key = key();
        let e = key.check(&key.issue(1, 1_000), 1_001).unwrap_err();
        assert_eq!(e.kind, ErrorType::BadNonce);
        assert!(e.detail.contains("expired"));
    }

    #[test]
    fn tampered_and_foreign_nonces_fail() {
        let key = key();
        let nonce = key.issue(1, 1_000);
        let mut bytes = nonce.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            key.check(&tampered, 0).unwrap_err().kind,
            ErrorType::BadNonce
        );

        let other = NonceKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            other.check(&nonce, 0).unwrap_err().kind,
            ErrorType::BadNonce
        );

        for bad in ["", "AAAA", "not a nonce at all", &format!("{nonce}=")] {
            assert_eq!(key.check(bad, 0).unwrap_err().kind, ErrorType::BadNonce);
        }
    }

    proptest! {
        #[test]
        fn issued_nonces_check(random: u64, expires_at: i64, age in 0i64..1_000_000) {
            let key = key();
            let nonce = key.issue(random, expires_at);
            let now = expires_at.saturating_sub(age);
            prop_assert_eq!(key.check(&nonce, now).unwrap(), (random, expires_at));
            if let Some(later) = expires_at.checked_add(1) {
                prop_assert!(key.check(&nonce, later).is_err());
            }
        }

        #[test]
        fn any_bit_flip_fails(random: u64, expires_at in 0i64..i64::MAX, byte in 0usize..32, bit in 0u8..8) {
            let key = key();
            let nonce = key.issue(random, expires_at);
            let mut raw = crate::b64::b64url_decode(&nonce, "nonce").unwrap();
            raw[byte] ^= 1 << bit;
            prop_assert!(key.check(&b64url_encode(&raw), 0).is_err());
        }
    }
}
