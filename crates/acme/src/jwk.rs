//! Public JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) and JWS signature
//! verification with them.

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{self, EcdsaVerificationAlgorithm, ParsedPublicKey, RsaParameters};
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, Oid,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::b64::{b64url_decode, b64url_encode};
use crate::error::AcmeError;

/// The JWS `alg` values this crate verifies.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
    "Ed25519",
];

/// Smallest accepted RSA modulus, in bits.
const RSA_MIN_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits (aws-lc verifies up to 8192).
const RSA_MAX_BITS: usize = 8192;
/// Largest accepted RSA public exponent, in bits (aws-lc's limit).
const RSA_MAX_EXPONENT_BITS: usize = 33;

/// JWK members that belong to private (or symmetric) keys.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A public JSON Web Key (RFC 7517) of an account or certificate key.
///
/// Supports EC P-256, P-384 and P-521, RSA 2048-8192 bits, and Ed25519 (OKP).
/// Values made by [`Jwk::from_json`] are valid keys; one built by hand may not
/// be, and then never verifies or matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// `"kty": "EC"`: `crv` is `P-256`, `P-384` or `P-521`; `x` and `y` are the
    /// full-length big-endian coordinates.
    Ec {
        /// Curve name.
        crv: String,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// `"kty": "RSA"`: modulus and public exponent, big-endian without
    /// leading zero octets.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// `"kty": "OKP"` (RFC 8037): `crv` is `Ed25519`, `x` the 32-byte key.
    Okp {
        /// Curve name.
        crv: String,
        /// Public key bytes.
        x: Vec<u8>,
    },
}

/// Coordinate length, verification algorithm, JWS `alg` and curve OID of a
/// supported EC curve.
fn ec_curve(
    crv: &str,
) -> Option<(
    usize,
    &'static EcdsaVerificationAlgorithm,
    &'static str,
    Oid<'static>,
)> {
    match crv {
        "P-256" => Some((
            32,
            &signature::ECDSA_P256_SHA256_FIXED,
            "ES256",
            OID_EC_P256,
        )),
        "P-384" => Some((
            48,
            &signature::ECDSA_P384_SHA384_FIXED,
            "ES384",
            OID_NIST_EC_P384,
        )),
        "P-521" => Some((
            66,
            &signature::ECDSA_P521_SHA512_FIXED,
            "ES512",
            OID_NIST_EC_P521,
        )),
        _ => None,
    }
}

/// The RSA verification parameters for a JWS `alg`.
fn rsa_params(alg: &str) -> Option<&'static RsaParameters> {
    Some(match alg {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// `04 || x || y`, the SEC1 uncompressed point.
fn uncompressed_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

/// `bytes` without leading zero octets.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bit length of a big-endian integer without leading zero octets.
fn bit_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

/// A required string member of a JWK.
fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, AcmeError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(AcmeError::malformed(format!(
            "JWK member \"{name}\" must be a string"
        ))),
        None => Err(AcmeError::malformed(format!(
            "JWK has no \"{name}\" member"
        ))),
    }
}

/// A required base64url member of a JWK, decoded.
fn bytes_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, AcmeError> {
    b64url_decode(str_member(obj, name)?, &format!("JWK member \"{name}\""))
}

impl Jwk {
    /// Parses and validates a public JWK.
    ///
    /// # Errors
    /// `malformed` for a non-object, missing or non-string members, bad
    /// base64url, or private key members (`d`, ...); `badPublicKey` for an
    /// unsupported `kty` or `crv`, coordinates of the wrong length, a point
    /// not on the curve, or an RSA key outside 2048-8192 bits or with an
    /// unusable exponent.
    pub fn from_json(value: &Value) -> Result<Jwk, AcmeError> {
        let obj = value
            .as_object()
            .ok_or_else(|| AcmeError::malformed("JWK must be a JSON object"))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(AcmeError::malformed(format!(
                "JWK contains the private key member \"{member}\"; send only the public key"
            )));
        }
        let kty = str_member(obj, "kty")?;
        match kty {
            "EC" => {
                let crv = str_member(obj, "crv")?;
                let (len, alg, _, _) = ec_curve(crv).ok_or_else(|| {
                    AcmeError::bad_public_key(format!(
                        "unsupported EC curve {crv:?}; use P-256, P-384 or P-521"
                    ))
                })?;
                let x = bytes_member(obj, "x")?;
                let y = bytes_member(obj, "y")?;
                if x.len() != len || y.len() != len {
                    return Err(AcmeError::bad_public_key(format!(
                        "{crv} coordinates must be {len} bytes each (got x {}, y {})",
                        x.len(),
                        y.len()
                    )));
                }
                ParsedPublicKey::new(alg, uncompressed_point(&x, &y)).map_err(|_| {
                    AcmeError::bad_public_key(format!("the JWK is not a point on {crv}"))
                })?;
                Ok(Jwk::Ec {
                    crv: crv.to_owned(),
                    x,
                    y,
                })
            }
            "RSA" => {
                let n = strip_leading_zeros(&bytes_member(obj, "n")?).to_vec();
                let e = strip_leading_zeros(&bytes_member(obj, "e")?).to_vec();
                let bits = bit_len(&n);
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                    return Err(AcmeError::bad_public_key(format!(
                        "RSA modulus is {bits} bits; use {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
                    )));
                }
                let e_odd = e.last().is_some_and(|b| b & 1 == 1);
                if !e_odd || bit_len(&e) < 2 || bit_len(&e) > RSA_MAX_EXPONENT_BITS {
                    return Err(AcmeError::bad_public_key(
                        "RSA public exponent must be odd, at least 3 and at most 33 bits",
                    ));
                }
                signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .map_err(|_| AcmeError::bad_public_key("the RSA JWK is not a valid key"))?;
                Ok(Jwk::Rsa { n, e })
            }
            "OKP" => {
                let crv = str_member(obj, "crv")?;
                if crv != "Ed25519" {
                    return Err(AcmeError::bad_public_key(format!(
                        "unsupported OKP curve {crv:?}; use Ed25519"
                    )));
                }
                let x = bytes_member(obj, "x")?;
                if x.len() != 32 {
                    return Err(AcmeError::bad_public_key(format!(
                        "Ed25519 public key must be 32 bytes (got {})",
                        x.len()
                    )));
                }
                ParsedPublicKey::new(&signature::ED25519, &x)
                    .map_err(|_| AcmeError::bad_public_key("the Ed25519 JWK is not a valid key"))?;
                Ok(Jwk::Okp {
                    crv: crv.to_owned(),
                    x,
                })
            }
            other => Err(AcmeError::bad_public_key(format!(
                "unsupported JWK key type {other:?}; use EC, RSA or OKP"
            ))),
        }
    }

    /// The JWK as JSON, public members only.
    pub fn to_json(&self) -> Value {
        match self {
            Jwk::Ec { crv, x, y } => serde_json::json!({
                "kty": "EC",
                "crv": crv,
                "x": b64url_encode(x),
                "y": b64url_encode(y),
            }),
            Jwk::Rsa { n, e } => serde_json::json!({
                "kty": "RSA",
                "n": b64url_encode(n),
                "e": b64url_encode(e),
            }),
            Jwk::Okp { crv, x } => serde_json::json!({
                "kty": "OKP",
                "crv": crv,
                "x": b64url_encode(x),
            }),
        }
    }

    /// The RFC 7638 thumbprint: base64url (unpadded) SHA-256 of the required
    /// members in lexicographic order, without whitespace.
    pub fn thumbprint(&self) -> String {
        // `Value::String`'s Display gives a correctly escaped JSON string.
        let s = |v: &str| Value::String(v.to_owned()).to_string();
        let canonical = match self {
            Jwk::Ec { crv, x, y } => format!(
                r#"{{"crv":{},"kty":"EC","x":"{}","y":"{}"}}"#,
                s(crv),
                b64url_encode(x),
                b64url_encode(y)
            ),
            Jwk::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64url_encode(e),
                b64url_encode(n)
            ),
            Jwk::Okp { crv, x } => format!(
                r#"{{"crv":{},"kty":"OKP","x":"{}"}}"#,
                s(crv),
                b64url_encode(x)
            ),
        };
        b64url_encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    }

    /// The DER SubjectPublicKeyInfo of this key, or an empty vector when the
    /// key is not valid (possible only for a `Jwk` built by hand).
    pub fn spki_der(&self) -> Vec<u8> {
        let der = match self {
            Jwk::Ec { crv, x, y } => ec_curve(crv)
                .and_then(|(_, alg, _, _)| ParsedPublicKey::new(alg, uncompressed_point(x, y)).ok())
                .and_then(|key| AsDer::<PublicKeyX509Der>::as_der(&key).ok()),
            Jwk::Rsa { n, e } => {
                AsDer::<PublicKeyX509Der>::as_der(&signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                })
                .ok()
            }
            Jwk::Okp { crv, x } if crv == "Ed25519" => ParsedPublicKey::new(&signature::ED25519, x)
                .ok()
                .and_then(|key| AsDer::<PublicKeyX509Der>::as_der(&key).ok()),
            Jwk::Okp { .. } => None,
        };
        der.map(|d| d.as_ref().to_vec()).unwrap_or_default()
    }

    /// Whether `spki_der` (a DER SubjectPublicKeyInfo, e.g. from a
    /// certificate) holds this same public key: same algorithm and curve, and
    /// the same point, modulus/exponent or Ed25519 key bytes.
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
            return false;
        };
        if !rest.is_empty() {
            return false;
        }
        let algorithm = &spki.algorithm.algorithm;
        let key_bytes: &[u8] = &spki.subject_public_key.data;
        match self {
            Jwk::Ec { crv, x, y } => {
                let Some((_, _, _, curve_oid)) = ec_curve(crv) else {
                    return false;
                };
                let params_curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| Oid::try_from(p).ok());
                *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
                    && params_curve.as_ref() == Some(&curve_oid)
                    && key_bytes == uncompressed_point(x, y).as_slice()
            }
            Jwk::Rsa { n, e } => {
                if *algorithm != OID_PKCS1_RSAENCRYPTION {
                    return false;
                }
                match spki.parsed() {
                    Ok(PublicKey::RSA(rsa)) => {
                        strip_leading_zeros(rsa.modulus) == strip_leading_zeros(n)
                            && strip_leading_zeros(rsa.exponent) == strip_leading_zeros(e)
                    }
                    _ => false,
                }
            }
            Jwk::Okp { crv, x } => {
                crv == "Ed25519" && *algorithm == OID_SIG_ED25519 && key_bytes == x.as_slice()
            }
        }
    }

    /// A short description of the key for error details, e.g. `"P-256"`.
    fn describe(&self) -> String {
        match self {
            Jwk::Ec { crv, .. } | Jwk::Okp { crv, .. } => crv.clone(),
            Jwk::Rsa { n, .. } => format!("RSA-{}", bit_len(strip_leading_zeros(n))),
        }
    }

    /// Verifies a JWS signature made with this key.
    ///
    /// `alg` must fit the key: ES256/ES384/ES512 for P-256/P-384/P-521
    /// (fixed-size `r || s` signatures), RS256/RS384/RS512 or PS256/PS384/PS512
    /// for RSA, EdDSA (or the fully-specified `Ed25519`) for Ed25519.
    ///
    /// # Errors
    /// `badSignatureAlgorithm` for an unknown `alg` or one that does not fit
    /// the key; `malformed` ("JWS signature does not verify") for a bad
    /// signature; `badPublicKey` for a hand-built key of an unsupported type.
    pub fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> Result<(), AcmeError> {
        if !SUPPORTED_ALGORITHMS.contains(&alg) {
            return Err(unsupported_alg(alg));
        }
        let mismatch = |wanted: &str| {
            AcmeError::bad_signature_algorithm(format!(
                "JWS alg {alg:?} does not fit the {} key; use {wanted}",
                self.describe()
            ))
        };
        let bad_signature = |_| AcmeError::malformed("JWS signature does not verify");
        match self {
            Jwk::Ec { crv, x, y } => {
                let (_, verification, wanted, _) = ec_curve(crv).ok_or_else(|| {
                    AcmeError::bad_public_key(format!("unsupported EC curve {crv:?}"))
                })?;
                if alg != wanted {
                    return Err(mismatch(wanted));
                }
                signature::UnparsedPublicKey::new(verification, uncompressed_point(x, y))
                    .verify(message, signature)
                    .map_err(bad_signature)
            }
            Jwk::Rsa { n, e } => {
                let params = rsa_params(alg).ok_or_else(|| mismatch("RS256"))?;
                signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .verify(params, message, signature)
                .map_err(bad_signature)
            }
            Jwk::Okp { crv, x } => {
                if crv != "Ed25519" {
                    return Err(AcmeError::bad_public_key(format!(
                        "unsupported OKP curve {crv:?}"
                    )));
                }
                if alg != "EdDSA" && alg != "Ed25519" {
                    return Err(mismatch("EdDSA"));
                }
                signature::UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, signature)
                    .map_err(bad_signature)
            }
        }
    }
}

/// The error for an `alg` this crate does not verify.
pub(crate) fn unsupported_alg(alg: &str) -> AcmeError {
    AcmeError::bad_signature_algorithm(format!(
        "unsupported JWS alg {alg:?}; supported: {}",
        SUPPORTED_ALGORITHMS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair,
    };
    use serde_json::json;

    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn ec_jwk(pair: &EcdsaKeyPair, crv: &str) -> Value {
        let point = pair.public_key().as_ref();
        let len = (point.len() - 1) / 2;
        json!({
            "kty": "EC",
            "crv": crv,
            "x": b64url_encode(&point[1..1 + len]),
            "y": b64url_encode(&point[1 + len..]),
        })
    }

    #[test]
    fn rfc7638_thumbprint_vector() {
        let jwk = Jwk::from_json(&json!({
            "kty": "RSA",
            "n": RFC7638_N,
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(
            jwk.to_json(),
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})
        );
    }

    #[test]
    fn ec_and_okp_thumbprints_use_rfc7638_member_order() {
        // RFC 8037 Appendix A.3: thumbprint of the Ed25519 example key.
        let jwk = Jwk::from_json(&json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rejects_private_and_unsupported_keys() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let mut value = ec_jwk(&pair, "P-256");
        assert!(Jwk::from_json(&value).is_ok());
        value["d"] = json!("AAAA");
        assert_eq!(
            Jwk::from_json(&value).unwrap_err().kind,
            crate::ErrorType::Malformed
        );

        let bad = |v: Value| Jwk::from_json(&v).unwrap_err().kind;
        use crate::ErrorType::*;
        assert_eq!(bad(json!({"kty": "oct", "k": "AAAA"})), Malformed);
        assert_eq!(bad(json!({"kty": "foo"})), BadPublicKey);
        assert_eq!(
            bad(json!({"kty": "OKP", "crv": "X25519", "x": "AAAA"})),
            BadPublicKey
        );
        assert_eq!(
            bad(json!({"kty": "OKP", "crv": "Ed448", "x": "AAAA"})),
            BadPublicKey
        );
        assert_eq!(
            bad(json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})),
            BadPublicKey
        );
        assert_eq!(
            bad(json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"})),
            BadPublicKey
        );
        assert_eq!(bad(json!("not an object")), Malformed);
        assert_eq!(bad(json!({"crv": "P-256"})), Malformed);

        // Wrong coordinate length: P-256 coordinates in a P-384 JWK.
        let mut wrong = ec_jwk(&pair, "P-256");
        wrong["crv"] = json!("P-384");
        assert_eq!(bad(wrong), BadPublicKey);

        // A point not on the curve: flip a bit of y.
        let point = pair.public_key().as_ref();
        let mut y = point[33..].to_vec();
        y[31] ^= 1;
        let off_curve = json!({
            "kty": "EC", "crv": "P-256",
            "x": b64url_encode(&point[1..33]), "y": b64url_encode(&y),
        });
        let err = Jwk::from_json(&off_curve).unwrap_err();
        assert_eq!(err.kind, BadPublicKey, "{err}");

        // Short RSA key: the RFC 7638 modulus with its first 129 bytes dropped.
        let n = b64url_decode(RFC7638_N, "n").unwrap();
        let short = json!({"kty": "RSA", "n": b64url_encode(&n[129..]), "e": "AQAB"});
        assert_eq!(bad(short), BadPublicKey);
        // Even exponent.
        assert_eq!(
            bad(json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAC"})),
            BadPublicKey
        );
        // Padded base64url.
        assert_eq!(
            bad(json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB="})),
            Malformed
        );
    }

    #[test]
    fn rsa_leading_zeros_are_normalised() {
        let n = b64url_decode(RFC7638_N, "n").unwrap();
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        let jwk =
            Jwk::from_json(&json!({"kty": "RSA", "n": b64url_encode(&padded), "e": "AAEAAQ"}))
                .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn verify_checks_alg_fits_key() {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jwk = Jwk::from_json(&ec_jwk(&pair, "P-256")).unwrap();
        let sig = pair.sign(&rng, b"msg").unwrap();
        jwk.verify("ES256", b"msg", sig.as_ref()).unwrap();
        assert_eq!(
            jwk.verify("ES256", b"msh", sig.as_ref())
                .unwrap_err()
                .detail,
            "JWS signature does not verify"
        );
        assert_eq!(
            jwk.verify("ES384", b"msg", sig.as_ref()).unwrap_err().kind,
            crate::ErrorType::BadSignatureAlgorithm
        );
        assert_eq!(
            jwk.verify("RS256", b"msg", sig.as_ref()).unwrap_err().kind,
            crate::ErrorType::BadSignatureAlgorithm
        );
        assert_eq!(
            jwk.verify("HS256", b"msg", sig.as_ref()).unwrap_err().kind,
            crate::ErrorType::BadSignatureAlgorithm
        );

        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let jwk = Jwk::from_json(&ec_jwk(&pair, "P-384")).unwrap();
        let sig = pair.sign(&rng, b"msg").unwrap();
        jwk.verify("ES384", b"msg", sig.as_ref()).unwrap();
        assert!(jwk.verify("ES256", b"msg", sig.as_ref()).is_err());

        let pair = Ed25519KeyPair::generate().unwrap();
        let jwk = Jwk::from_json(&json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64url_encode(pair.public_key().as_ref()),
        }))
        .unwrap();
        let sig = pair.sign(b"msg");
        jwk.verify("EdDSA", b"msg", sig.as_ref()).unwrap();
        jwk.verify("Ed25519", b"msg", sig.as_ref()).unwrap();
        assert!(jwk.verify("ES256", b"msg", sig.as_ref()).is_err());
    }

    #[test]
    fn spki_round_trip() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jwk = Jwk::from_json(&ec_jwk(&pair, "P-256")).unwrap();
        let expected = AsDer::<PublicKeyX509Der>::as_der(pair.public_key()).unwrap();
        assert_eq!(jwk.spki_der(), expected.as_ref());
        assert!(jwk.matches_spki(expected.as_ref()));

        let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let other_spki = AsDer::<PublicKeyX509Der>::as_der(other.public_key()).unwrap();
        assert!(!jwk.matches_spki(other_spki.as_ref()));
        assert!(!jwk.matches_spki(b"garbage"));

        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_jwk = Jwk::from_json(&json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64url_encode(ed.public_key().as_ref()),
        }))
        .unwrap();
        let ed_spki = AsDer::<PublicKeyX509Der>::as_der(ed.public_key()).unwrap();
        assert_eq!(ed_jwk.spki_der(), ed_spki.as_ref());
        assert!(ed_jwk.matches_spki(ed_spki.as_ref()));
        assert!(!ed_jwk.matches_spki(expected.as_ref()));
        assert!(!jwk.matches_spki(ed_spki.as_ref()));

        let rsa = Jwk::from_json(&json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})).unwrap();
        let rsa_spki = rsa.spki_der();
        assert!(!rsa_spki.is_empty());
        assert!(rsa.matches_spki(&rsa_spki));
        assert!(!rsa.matches_spki(expected.as_ref()));
        assert!(!jwk.matches_spki(&rsa_spki));
    }
}
