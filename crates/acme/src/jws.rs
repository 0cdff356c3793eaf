//! Flattened JWS parsing (RFC 7515 §7.2.2) with the extra rules of
//! RFC 8555 §6.2.

use serde_json::{Map, Value};

use crate::b64::b64url_decode;
use crate::error::AcmeError;
use crate::jwk::{Jwk, SUPPORTED_ALGORITHMS, unsupported_alg};

/// The protected header's key reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// An embedded public key (newAccount, revokeCert with the certificate key).
    Jwk(Jwk),
    /// An account URL.
    Kid(String),
}

/// A parsed flattened JWS (RFC 7515 §7.2.2, as RFC 8555 §6.2 requires).
///
/// Parsing checks the structure and the protected header; call
/// [`Jws::verify`] with the account's (or the embedded) key before trusting
/// anything in it.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The protected header's `alg` (one of [`SUPPORTED_ALGORITHMS`]).
    pub alg: String,
    /// The protected header's `nonce`, if any (not yet checked).
    pub nonce: Option<String>,
    /// The protected header's `url`.
    pub url: String,
    /// The protected header's `jwk` or `kid`.
    pub key: KeyRef,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    /// `protected || "." || payload`, as received.
    signing_input: Vec<u8>,
    /// The decoded signature.
    signature: Vec<u8>,
}

/// The three encoded members of a flattened JWS.
pub(crate) struct FlattenedParts<'a> {
    /// Encoded protected header.
    pub protected: &'a str,
    /// Encoded payload.
    pub payload: &'a str,
    /// Encoded signature.
    pub signature: &'a str,
}

impl<'a> FlattenedParts<'a> {
    /// Splits a flattened JWS object; `what` names it in error details.
    pub(crate) fn from_value(value: &'a Value, what: &str) -> Result<Self, AcmeError> {
        let obj = value.as_object().ok_or_else(|| {
            AcmeError::malformed(format!(
                "{what} must be a JSON object in flattened JWS serialization"
            ))
        })?;
        if obj.contains_key("signatures") {
            return Err(AcmeError::malformed(format!(
                "{what} uses the general JWS JSON serialization; ACME requires the flattened serialization with one signature (RFC 8555 §6.2)"
            )));
        }
        if obj.contains_key("header") {
            return Err(AcmeError::malformed(format!(
                "{what} has an unprotected header; put every header parameter in \"protected\" (RFC 8555 §6.2)"
            )));
        }
        let member = |name: &str| match obj.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(AcmeError::malformed(format!(
                "{what}: \"{name}\" must be a string"
            ))),
            None => Err(AcmeError::malformed(format!(
                "{what} has no \"{name}\" member"
            ))),
        };
        let parts = FlattenedParts {
            protected: member("protected")?,
            payload: member("payload")?,
            signature: member("signature")?,
        };
        if parts.protected.is_empty() {
            return Err(AcmeError::malformed(format!(
                "{what} has an empty protected header"
            )));
        }
        if parts.signature.is_empty() {
            return Err(AcmeError::malformed(format!(
                "{what} has an empty signature"
            )));
        }
        Ok(parts)
    }

    /// The decoded protected header, which must be a JSON object without
    /// `crit`.
    pub(crate) fn header(&self, what: &str) -> Result<Map<String, Value>, AcmeError> {
        let bytes = b64url_decode(self.protected, &format!("{what} protected header"))?;
        let header = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(AcmeError::malformed(format!(
                    "{what} protected header must be a JSON object"
                )));
            }
            Err(e) => {
                return Err(AcmeError::malformed(format!(
                    "{what} protected header is not JSON: {e}"
                )));
            }
        };
        if header.contains_key("crit") {
            return Err(AcmeError::malformed(format!(
                "{what} protected header has \"crit\"; no critical extensions are supported"
            )));
        }
        Ok(header)
    }

    /// `protected || "." || payload`, the JWS signing input.
    pub(crate) fn signing_input(&self) -> Vec<u8> {
        let mut input = Vec::with_capacity(self.protected.len() + 1 + self.payload.len());
        input.extend_from_slice(self.protected.as_bytes());
        input.push(b'.');
        input.extend_from_slice(self.payload.as_bytes());
        input
    }
}

/// An optional string header parameter.
pub(crate) fn optional_str<'a>(
    header: &'a Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<Option<&'a str>, AcmeError> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AcmeError::malformed(format!(
            "{what} protected header: \"{name}\" must be a string"
        ))),
    }
}

impl Jws {
    /// Parses an ACME request body.
    ///
    /// # Errors
    /// - `malformed`: not JSON, not a flattened JWS (`signatures` or an
    ///   unprotected `header`), a missing or empty member, bad base64url
    ///   (padding included), a protected header that is not a JSON object,
    ///   `crit`, both or neither of `jwk` and `kid`, a non-string `nonce` or
    ///   one that is not base64url, or an invalid embedded `jwk` key;
    /// - `badSignatureAlgorithm`: `alg` missing, `none`, MAC-based (`HS*`) or
    ///   unsupported;
    /// - `unauthorized`: no `url` (RFC 8555 §6.4);
    /// - `badPublicKey`: an embedded `jwk` of an unsupported type or size.
    pub fn parse(body: &[u8]) -> Result<Jws, AcmeError> {
        const WHAT: &str = "JWS";
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| AcmeError::malformed(format!("request body is not JSON: {e}")))?;
        let parts = FlattenedParts::from_value(&value, "request body")?;
        let header = parts.header(WHAT)?;

        let alg = match header.get("alg") {
            None => {
                return Err(AcmeError::bad_signature_algorithm(
                    "JWS protected header has no \"alg\"",
                ));
            }
            Some(Value::String(alg)) => alg.as_str(),
            Some(_) => {
                return Err(AcmeError::bad_signature_algorithm(
                    "JWS protected header \"alg\" must be a string",
                ));
            }
        };
        if alg == "none" {
            return Err(AcmeError::bad_signature_algorithm(
                "JWS alg \"none\" is not allowed (RFC 8555 §6.2)",
            ));
        }
        if alg.starts_with("HS") {
            return Err(AcmeError::bad_signature_algorithm(format!(
                "JWS alg {alg:?} is MAC-based and not allowed (RFC 8555 §6.2); supported: {}",
                SUPPORTED_ALGORITHMS.join(", ")
            )));
        }
        if !SUPPORTED_ALGORITHMS.contains(&alg) {
            return Err(unsupported_alg(alg));
        }

        let key = match (header.get("jwk"), header.get("kid")) {
            (Some(_), Some(_)) => {
                return Err(AcmeError::malformed(
                    "JWS protected header has both \"jwk\" and \"kid\"; send exactly one (RFC 8555 §6.2)",
                ));
            }
            (None, None) => {
                return Err(AcmeError::malformed(
                    "JWS protected header has neither \"jwk\" nor \"kid\"; send exactly one (RFC 8555 §6.2)",
                ));
            }
            (Some(jwk), None) => KeyRef::Jwk(Jwk::from_json(jwk)?),
            (None, Some(Value::String(kid))) if !kid.is_empty() => KeyRef::Kid(kid.clone()),
            (None, Some(_)) => {
                return Err(AcmeError::malformed(
                    "JWS protected header \"kid\" must be a non-empty string (the account URL)",
                ));
            }
        };

        let url = optional_str(&header, "url", WHAT)?.ok_or_else(|| {
            AcmeError::unauthorized(
                "JWS protected header has no \"url\"; it must hold the request URL (RFC 8555 §6.4)",
            )
        })?;

        let nonce = optional_str(&header, "nonce", WHAT)?;
        if let Some(nonce) = nonce {
            b64url_decode(nonce, "JWS nonce")?;
        }

        let payload = b64url_decode(parts.payload, "JWS payload")?;
        let signature = b64url_decode(parts.signature, "JWS signature")?;

        Ok(Jws {
            alg: alg.to_owned(),
            nonce: nonce.map(str::to_owned),
            url: url.to_owned(),
            key,
            payload,
            signing_input: parts.signing_input(),
            signature,
        })
    }

    /// Verifies the signature with `key` (the embedded `jwk`, or the key of
    /// the account named by `kid`).
    ///
    /// # Errors
    /// As [`Jwk::verify`]: `badSignatureAlgorithm` when `alg` does not fit
    /// `key`, `malformed` when the signature does not verify.
    pub fn verify(&self, key: &Jwk) -> Result<(), AcmeError> {
        key.verify(&self.alg, &self.signing_input, &self.signature)
    }

    /// The embedded key, if the header has `jwk`.
    pub fn jwk(&self) -> Option<&Jwk> {
        match &self.key {
            KeyRef::Jwk(jwk) => Some(jwk),
            KeyRef::Kid(_) => None,
        }
    }

    /// The account URL, if the header has `kid`.
    pub fn kid(&self) -> Option<&str> {
        match &self.key {
            KeyRef::Kid(kid) => Some(kid),
            KeyRef::Jwk(_) => None,
        }
    }

    /// The payload as JSON; POST-as-GET (empty payload) gives `Value::Null`.
    ///
    /// # Errors
    /// `malformed` when a non-empty payload is not JSON.
    pub fn payload_json(&self) -> Result<Value, AcmeError> {
        if self.payload.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| AcmeError::malformed(format!("JWS payload is not JSON: {e}")))
    }

    /// Whether this is a POST-as-GET request (empty payload, RFC 8555 §6.3).
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorType;
    use crate::b64::b64url_encode;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
        RsaKeyPair,
    };
    use serde_json::json;

    /// A test signer: a key pair with its JWK and JWS alg.
    pub(crate) enum TestKey {
        Ec(EcdsaKeyPair),
        Rsa(RsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl TestKey {
        pub(crate) fn ec() -> Self {
            TestKey::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
        }

        pub(crate) fn alg(&self) -> &'static str {
            match self {
                TestKey::Ec(_) => "ES256",
                TestKey::Rsa(_) => "RS256",
                TestKey::Ed(_) => "EdDSA",
            }
        }

        pub(crate) fn jwk_json(&self) -> Value {
            match self {
                TestKey::Ec(pair) => {
                    let p = pair.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "x": b64url_encode(&p[1..33]), "y": b64url_encode(&p[33..])})
                }
                TestKey::Rsa(pair) => {
                    let public = pair.public_key();
                    json!({
                        "kty": "RSA",
                        "n": b64url_encode(public.modulus().big_endian_without_leading_zero()),
                        "e": b64url_encode(public.exponent().big_endian_without_leading_zero()),
                    })
                }
                TestKey::Ed(pair) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(pair.public_key().as_ref())})
                }
            }
        }

        pub(crate) fn jwk(&self) -> Jwk {
            Jwk::from_json(&self.jwk_json()).unwrap()
        }

        pub(crate) fn sign(&self, input: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                TestKey::Ec(pair) => pair.sign(&rng, input).unwrap().as_ref().to_vec(),
                TestKey::Rsa(pair) => {
                    let mut sig = vec![0; pair.public_modulus_len()];
                    pair.sign(&RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                    sig
                }
                TestKey::Ed(pair) => pair.sign(input).as_ref().to_vec(),
            }
        }

        /// A flattened JWS with the given protected header and payload.
        pub(crate) fn jws(&self, header: &Value, payload: &[u8]) -> Value {
            let protected = b64url_encode(header.to_string());
            let payload = b64url_encode(payload);
            let sig = self.sign(format!("{protected}.{payload}").as_bytes());
            json!({"protected": protected, "payload": payload, "signature": b64url_encode(sig)})
        }
    }

    fn header(key: &TestKey) -> Value {
        json!({"alg": key.alg(), "jwk": key.jwk_json(), "nonce": "AAAA", "url": "https://ca/new-acct"})
    }

    fn parse(v: &Value) -> Result<Jws, AcmeError> {
        Jws::parse(v.to_string().as_bytes())
    }

    fn round_trip(key: &TestKey) {
        let body = key.jws(&header(key), br#"{"termsOfServiceAgreed":true}"#);
        let jws = parse(&body).unwrap();
        assert_eq!(jws.alg, key.alg());
        assert_eq!(jws.url, "https://ca/new-acct");
        assert_eq!(jws.nonce.as_deref(), Some("AAAA"));
        assert_eq!(jws.jwk(), Some(&key.jwk()));
        assert!(!jws.is_post_as_get());
        assert_eq!(
            jws.payload_json().unwrap(),
            json!({"termsOfServiceAgreed": true})
        );
        jws.verify(&key.jwk()).unwrap();

        // Tampered payload: re-encode a different payload under the old signature.
        let mut tampered = body.clone();
        tampered["payload"] = json!(b64url_encode(br#"{"termsOfServiceAgreed":false}"#));
        let err = parse(&tampered).unwrap().verify(&key.jwk()).unwrap_err();
        assert_eq!(err.kind, ErrorType::Malformed);
        assert_eq!(err.detail, "JWS signature does not verify");
    }

    #[test]
    fn es256_round_trip() {
        round_trip(&TestKey::ec());
    }

    #[test]
    fn rs256_round_trip() {
        round_trip(&TestKey::Rsa(
            RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        ));
    }

    #[test]
    fn eddsa_round_trip() {
        round_trip(&TestKey::Ed(Ed25519KeyPair::generate().unwrap()));
    }

    #[test]
    fn wrong_key_fails() {
        let key = TestKey::ec();
        let other = TestKey::ec();
        let jws = parse(&key.jws(&header(&key), b"{}")).unwrap();
        assert_eq!(
            jws.verify(&other.jwk()).unwrap_err().kind,
            ErrorType::Malformed
        );
        let ed = TestKey::Ed(Ed25519KeyPair::generate().unwrap());
        assert_eq!(
            jws.verify(&ed.jwk()).unwrap_err().kind,
            ErrorType::BadSignatureAlgorithm
        );
    }

    #[test]
    fn kid_and_post_as_get() {
        let key = TestKey::ec();
        let h = json!({"alg": "ES256", "kid": "https://ca/acct/1", "nonce": "AAAA", "url": "https://ca/order/1"});
        let jws = parse(&key.jws(&h, b"")).unwrap();
        assert_eq!(jws.kid(), Some("https://ca/acct/1"));
        assert_eq!(jws.key, KeyRef::Kid("https://ca/acct/1".into()));
        assert!(jws.is_post_as_get());
        assert_eq!(jws.payload_json().unwrap(), Value::Null);
        jws.verify(&key.jwk()).unwrap();
    }

    fn header_error(h: Value) -> AcmeError {
        let key = TestKey::ec();
        parse(&key.jws(&h, b"{}")).unwrap_err()
    }

    #[test]
    fn header_rules() {
        let key = TestKey::ec();
        let jwk = key.jwk_json();
        let url = "https://ca/x";

        let e = header_error(
            json!({"alg": "ES256", "jwk": jwk, "kid": "https://ca/acct/1", "nonce": "AAAA", "url": url}),
        );
        assert_eq!(e.kind, ErrorType::Malformed);
        assert!(e.detail.contains("both"), "{e}");

        let e = header_error(json!({"alg": "ES256", "nonce": "AAAA", "url": url}));
        assert_eq!(e.kind, ErrorType::Malformed);
        assert!(e.detail.contains("neither"), "{e}");

        for alg in ["none", "HS256", "HS512", "ES257", "RSA-OAEP"] {
            let e = header_error(json!({"alg": alg, "jwk": jwk, "nonce": "AAAA", "url": url}));
            assert_eq!(e.kind, ErrorType::BadSignatureAlgorithm, "{alg}");
        }
        let e = header_error(json!({"jwk": jwk, "nonce": "AAAA", "url": url}));
        assert_eq!(e.kind, ErrorType::BadSignatureAlgorithm);

        let e = header_error(json!({"alg": "ES256", "jwk": jwk, "nonce": "AAAA"}));
        assert_eq!(e.kind, ErrorType::Unauthorized);

        let e = header_error(
            json!({"alg": "ES256", "jwk": jwk, "nonce": "AAAA", "url": url, "crit": ["b64"], "b64": false}),
        );
        assert_eq!(e.kind, ErrorType::Malformed);

        let e = header_error(json!({"alg": "ES256", "jwk": jwk, "nonce": "AA==", "url": url}));
        assert_eq!(e.kind, ErrorType::Malformed);

        let e = header_error(json!({"alg": "ES256", "kid": 7, "nonce": "AAAA", "url": url}));
        assert_eq!(e.kind, ErrorType::Malformed);

        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        let e = header_error(json!({"alg": "ES256", "jwk": private, "nonce": "AAAA", "url": url}));
        assert_eq!(e.kind, ErrorType::Malformed);

        // No nonce parses (the caller answers badNonce).
        let jws = parse(&key.jws(&json!({"alg": "ES256", "jwk": jwk, "url": url}), b"{}")).unwrap();
        assert_eq!(jws.nonce, None);
    }

    #[test]
    fn structure_rules() {
        let key = TestKey::ec();
        let body = key.jws(&header(&key), b"{}");

        assert_eq!(
            Jws::parse(b"not json").unwrap_err().kind,
            ErrorType::Malformed
        );
        assert_eq!(
            parse(&json!([1, 2])).unwrap_err().kind,
            ErrorType::Malformed
        );

        for member in ["protected", "payload", "signature"] {
            let mut missing = body.clone();
            missing.as_object_mut().unwrap().remove(member);
            let e = parse(&missing).unwrap_err();
            assert_eq!(e.kind, ErrorType::Malformed);
            assert!(e.detail.contains(member), "{e}");
        }

        let general = json!({
            "payload": body["payload"],
            "signatures": [{"protected": body["protected"], "signature": body["signature"]}],
        });
        let e = parse(&general).unwrap_err();
        assert!(e.detail.contains("flattened"), "{e}");

        let mut unprotected = body.clone();
        unprotected["header"] = json!({"kid": "x"});
        assert_eq!(parse(&unprotected).unwrap_err().kind, ErrorType::Malformed);

        // Padded base64url in any member is rejected.
        for member in ["protected", "payload", "signature"] {
            let mut padded = body.clone();
            let text = padded[member].as_str().unwrap().to_owned();
            let pad = if text.len() % 4 == 2 { "==" } else { "=" };
            padded[member] = json!(format!("{text}{pad}"));
            let e = parse(&padded).unwrap_err();
            assert_eq!(e.kind, ErrorType::Malformed, "{member}");
        }
        // Standard-alphabet characters are rejected.
        let mut std_alphabet = body.clone();
        std_alphabet["signature"] = json!("ab+/");
        assert_eq!(parse(&std_alphabet).unwrap_err().kind, ErrorType::Malformed);

        // A payload that is not JSON parses but payload_json fails.
        let jws = parse(&key.jws(&header(&key), b"not json")).unwrap();
        assert_eq!(jws.payload_json().unwrap_err().kind, ErrorType::Malformed);
    }
}
