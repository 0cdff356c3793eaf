//! External account binding (RFC 8555 §7.3.4).

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::b64::b64url_decode;
use crate::error::{AcmeError, ErrorType};
use crate::jwk::Jwk;
use crate::jws::{FlattenedParts, optional_str};

const WHAT: &str = "externalAccountBinding";

/// Verifies the `externalAccountBinding` member of a newAccount payload and
/// returns its key id.
///
/// `eab` must be a flattened JWS with a MAC `alg` (HS256, HS384 or HS512), a
/// `kid` (the EAB key id), `url` equal to `expected_url` (the newAccount URL),
/// no `nonce`, and a payload equal to `outer_jwk` (the account key of the
/// outer JWS). `lookup(kid)` returns the HMAC key bytes for a known key id.
///
/// # Errors
/// `malformed` for structural problems (not a flattened JWS, bad base64url,
/// non-MAC `alg`, `nonce` or `jwk` present, missing `kid` or `url`, payload
/// not a JWK); `unauthorized` for an unknown `kid`, a MAC that does not
/// verify, a wrong `url`, or a payload that is not the account key;
/// `serverInternal` when `lookup` gives an empty key.
pub fn verify_external_account_binding(
    eab: &Value,
    outer_jwk: &Jwk,
    expected_url: &str,
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<String, AcmeError> {
    let parts = FlattenedParts::from_value(eab, WHAT)?;
    let header = parts.header(WHAT)?;

    let alg = optional_str(&header, "alg", WHAT)?
        .ok_or_else(|| AcmeError::malformed(format!("{WHAT} protected header has no \"alg\"")))?;
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => {
            return Err(AcmeError::malformed(format!(
                "{WHAT} alg {other:?} is not a MAC algorithm; use HS256 (RFC 8555 §7.3.4)"
            )));
        }
    };
    if header.contains_key("nonce") {
        return Err(AcmeError::malformed(format!(
            "{WHAT} must not have a \"nonce\" (RFC 8555 §7.3.4)"
        )));
    }
    if header.contains_key("jwk") {
        return Err(AcmeError::malformed(format!(
            "{WHAT} must name its key with \"kid\", not \"jwk\""
        )));
    }
    let kid = optional_str(&header, "kid", WHAT)?
        .filter(|kid| !kid.is_empty())
        .ok_or_else(|| {
            AcmeError::malformed(format!(
                "{WHAT} protected header has no \"kid\" (the EAB key id)"
            ))
        })?;
    let url = optional_str(&header, "url", WHAT)?
        .ok_or_else(|| AcmeError::malformed(format!("{WHAT} protected header has no \"url\"")))?;
    let signature = b64url_decode(parts.signature, &format!("{WHAT} signature"))?;
    let payload = b64url_decode(parts.payload, &format!("{WHAT} payload"))?;

    let key = lookup(kid).ok_or_else(|| {
        AcmeError::unauthorized(format!("unknown external account key id {kid:?}"))
    })?;
    if key.is_empty() {
        return Err(AcmeError::new(
            ErrorType::ServerInternal,
            format!("the external account key for {kid:?} is empty"),
        ));
    }
    hmac::verify(
        &hmac::Key::new(algorithm, &key),
        &parts.signing_input(),
        &signature,
    )
    .map_err(|_| {
        AcmeError::unauthorized(format!(
            "{WHAT} MAC does not verify with the key for {kid:?}"
        ))
    })?;

    if url != expected_url {
        return Err(AcmeError::unauthorized(format!(
            "{WHAT} url {url:?} is not the newAccount URL {expected_url:?}"
        )));
    }
    let payload: Value = serde_json::from_slice(&payload)
        .map_err(|e| AcmeError::malformed(format!("{WHAT} payload is not JSON: {e}")))?;
    let bound = Jwk::from_json(&payload).map_err(|e| {
        AcmeError::malformed(format!("{WHAT} payload is not a valid JWK: {}", e.detail))
    })?;
    if bound != *outer_jwk {
        return Err(AcmeError::unauthorized(format!(
            "{WHAT} binds a different key than the one signing the newAccount request"
        )));
    }
    Ok(kid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64::b64url_encode;
    use crate::jws::tests::TestKey;
    use serde_json::json;

    const URL: &str = "https://ca/acme/new-account";
    const KID: &str = "kid-1";
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn make_eab(alg: &str, mac_key: &[u8], header: Value, payload: &Value) -> Value {
        let protected = b64url_encode(header.to_string());
        let payload = b64url_encode(payload.to_string());
        let algorithm = match alg {
            "HS384" => hmac::HMAC_SHA384,
            "HS512" => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        };
        let tag = hmac::sign(
            &hmac::Key::new(algorithm, mac_key),
            format!("{protected}.{payload}").as_bytes(),
        );
        json!({"protected": protected, "payload": payload, "signature": b64url_encode(tag)})
    }

    fn lookup(kid: &str) -> Option<Vec<u8>> {
        (kid == KID).then(|| KEY.to_vec())
    }

    #[test]
    fn round_trip() {
        let account = TestKey::ec();
        for alg in ["HS256", "HS384", "HS512"] {
            let eab = make_eab(
                alg,
                KEY,
                json!({"alg": alg, "kid": KID, "url": URL}),
                &account.jwk_json(),
            );
            assert_eq!(
                verify_external_account_binding(&eab, &account.jwk(), URL, lookup).unwrap(),
                KID
            );
        }
    }

    #[test]
    fn failures() {
        let account = TestKey::ec();
        let jwk = account.jwk();
        let good_header = json!({"alg": "HS256", "kid": KID, "url": URL});
        let check = |eab: &Value| verify_external_account_binding(eab, &jwk, URL, lookup);

        // Wrong MAC key.
        let eab = make_eab(
            "HS256",
            b"wrong key",
            good_header.clone(),
            &account.jwk_json(),
        );
        let e = check(&eab).unwrap_err();
        assert_eq!(e.kind, ErrorType::Unauthorized);
        assert!(e.detail.contains("MAC"), "{e}");

        // Unknown kid.
        let eab = make_eab(
            "HS256",
            KEY,
            json!({"alg": "HS256", "kid": "other", "url": URL}),
            &account.jwk_json(),
        );
        assert_eq!(check(&eab).unwrap_err().kind, ErrorType::Unauthorized);

        // Wrong url.
        let eab = make_eab(
            "HS256",
            KEY,
            json!({"alg": "HS256", "kid": KID, "url": "https://ca/acme/other"}),
            &account.jwk_json(),
        );
        let e = check(&eab).unwrap_err();
        assert_eq!(e.kind, ErrorType::Unauthorized);
        assert!(e.detail.contains("url"), "{e}");

        // Payload is a different key.
        let other = TestKey::ec();
        let eab = make_eab("HS256", KEY, good_header.clone(), &other.jwk_json());
        let e = check(&eab).unwrap_err();
        assert_eq!(e.kind, ErrorType::Unauthorized);
        assert!(e.detail.contains("different key"), "{e}");

        // Payload is not a JWK.
        let eab = make_eab("HS256", KEY, good_header.clone(), &json!({"hello": 1}));
        assert_eq!(check(&eab).unwrap_err().kind, ErrorType::Malformed);

        // Not a MAC algorithm.
        let eab = make_eab(
            "HS256",
            KEY,
            json!({"alg": "ES256", "kid": KID, "url": URL}),
            &account.jwk_json(),
        );
        assert_eq!(check(&eab).unwrap_err().kind, ErrorType::Malformed);

        // A nonce is not allowed.
        let eab = make_eab(
            "HS256",
            KEY,
            json!({"alg": "HS256", "kid": KID, "url": URL, "nonce": "AAAA"}),
            &account.jwk_json(),
        );
        assert_eq!(check(&eab).unwrap_err().kind, ErrorType::Malformed);

        // Missing kid.
        let eab = make_eab(
            "HS256",
            KEY,
            json!({"alg": "HS256", "url": URL}),
            &account.jwk_json(),
        );
        assert_eq!(check(&eab).unwrap_err().kind, ErrorType::Malformed);

        // Not an object.
        assert_eq!(check(&json!("eab")).unwrap_err().kind, ErrorType::Malformed);

        // Empty key from lookup.
        let eab = make_eab("HS256", KEY, good_header, &account.jwk_json());
        let e = verify_external_account_binding(&eab, &jwk, URL, |_| Some(Vec::new())).unwrap_err();
        assert_eq!(e.kind, ErrorType::ServerInternal);
    }
}
