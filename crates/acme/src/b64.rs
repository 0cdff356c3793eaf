//! Unpadded base64url (RFC 7515 §2), the only encoding ACME uses for binary
//! values.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::AcmeError;

/// Encodes `bytes` as base64url without padding.
pub fn b64url_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes strict unpadded base64url: padding, characters outside the
/// URL-safe alphabet and non-zero trailing bits are rejected.
///
/// `what` names the value in the error detail.
///
/// # Errors
/// `malformed` when `text` is not canonical unpadded base64url.
pub fn b64url_decode(text: &str, what: &str) -> Result<Vec<u8>, AcmeError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|e| {
        AcmeError::malformed(format!(
            "{what} is not unpadded base64url (RFC 7515 §2): {e}"
        ))
    })
}
