//! Key algorithms, public-key inspection, software keys and the [`Signer`] trait.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::PkiError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";
const OID_CURVE_P384: &str = "1.3.132.0.34";

/// Smallest RSA modulus certkeeper certifies.
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus certkeeper certifies.
pub const MAX_RSA_BITS: u32 = 8192;

/// A key algorithm certkeeper can generate (for CA keys and server-side key generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 signatures (the default).
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384 signatures.
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 SHA-256 signatures.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 3072-bit, PKCS#1 v1.5 SHA-256 signatures.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    /// RSA 4096-bit, PKCS#1 v1.5 SHA-256 signatures.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order they are documented.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Ed25519,
    ];

    /// The configuration name, such as `ecdsa-p256`.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The kind and size of keys of this algorithm.
    pub fn kind_and_bits(self) -> (KeyKind, u32) {
        match self {
            KeyAlgorithm::EcdsaP256 => (KeyKind::EcdsaP256, 256),
            KeyAlgorithm::EcdsaP384 => (KeyKind::EcdsaP384, 384),
            KeyAlgorithm::Rsa2048 => (KeyKind::Rsa, 2048),
            KeyAlgorithm::Rsa3072 => (KeyKind::Rsa, 3072),
            KeyAlgorithm::Rsa4096 => (KeyKind::Rsa, 4096),
            KeyAlgorithm::Ed25519 => (KeyKind::Ed25519, 256),
        }
    }

    fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        self.kind_and_bits().0.rcgen_algorithm()
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                PkiError::UnsupportedKey(format!(
                    "unknown key algorithm {s:?} (allowed: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, ed25519)"
                ))
            })
    }
}

/// The family of a public key, independent of RSA modulus size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA of any supported size.
    Rsa,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// The configuration name, such as `rsa`.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// The signature algorithm a key of this kind signs with (and the SPKI algorithm it is encoded with).
    fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked subject public key: what it is, and its encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// Key family.
    pub kind: KeyKind,
    /// Size in bits (RSA modulus size; curve size for EC; 256 for Ed25519).
    pub bits: u32,
    /// The full SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents.
    pub raw_public_key: Vec<u8>,
}

impl PublicKeyInfo {
    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex (the inventory's key fingerprint).
    pub fn spki_sha256(&self) -> String {
        crate::sha256_hex(&self.spki_der)
    }

    /// A label such as `ecdsa-p256` or `rsa-3072`.
    pub fn label(&self) -> String {
        match self.kind {
            KeyKind::Rsa => format!("rsa-{}", self.bits),
            other => other.name().to_string(),
        }
    }
}

impl rcgen::PublicKeyData for PublicKeyInfo {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.kind.rcgen_algorithm()
    }
}

/// Decodes and checks a DER SubjectPublicKeyInfo: supported algorithm, not weak.
pub fn parse_public_key_info(spki_der: &[u8]) -> Result<PublicKeyInfo, PkiError> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| PkiError::UnsupportedKey(format!("undecodable public key ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::UnsupportedKey(
            "trailing bytes after the public key".into(),
        ));
    }
    check_spki(&spki, &spki_der[..spki_der.len() - rest.len()])
}

pub(crate) fn check_spki(
    spki: &SubjectPublicKeyInfo<'_>,
    spki_der: &[u8],
) -> Result<PublicKeyInfo, PkiError> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let raw_public_key = spki.subject_public_key.data.to_vec();
    let (kind, bits) = match algorithm.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .ok_or_else(|| PkiError::UnsupportedKey("EC key without a named curve".into()))?;
            match curve.as_str() {
                OID_CURVE_P256 => (KeyKind::EcdsaP256, 256),
                OID_CURVE_P384 => (KeyKind::EcdsaP384, 384),
                other => {
                    return Err(PkiError::UnsupportedKey(format!(
                        "EC curve {other} is not supported"
                    )));
                }
            }
        }
        OID_RSA_ENCRYPTION => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(PkiError::UnsupportedKey(
                    "undecodable RSA public key".into(),
                ));
            };
            let bits = u32::try_from(rsa.key_size()).unwrap_or(u32::MAX);
            let exponent = rsa
                .try_exponent()
                .map_err(|_| PkiError::UnsupportedKey("RSA public exponent is too large".into()))?;
            if exponent < 3 || exponent % 2 == 0 {
                return Err(PkiError::WeakKey(format!(
                    "RSA public exponent {exponent} is not allowed; use 65537"
                )));
            }
            if bits < MIN_RSA_BITS {
                return Err(PkiError::WeakKey(format!(
                    "RSA-{bits} is below the minimum of {MIN_RSA_BITS} bits; use RSA 2048 or larger, or ECDSA P-256"
                )));
            }
            if bits > MAX_RSA_BITS {
                return Err(PkiError::UnsupportedKey(format!(
                    "RSA-{bits} is above the maximum of {MAX_RSA_BITS} bits"
                )));
            }
            (KeyKind::Rsa, bits)
        }
        OID_ED25519 => {
            if raw_public_key.len() != 32 {
                return Err(PkiError::UnsupportedKey(
                    "Ed25519 key is not 32 bytes".into(),
                ));
            }
            (KeyKind::Ed25519, 256)
        }
        other => {
            return Err(PkiError::UnsupportedKey(format!(
                "public key algorithm {other} is not supported"
            )));
        }
    };
    Ok(PublicKeyInfo {
        kind,
        bits,
        spki_der: spki_der.to_vec(),
        raw_public_key,
    })
}

/// Key identifier per RFC 7093 section 2 method 1: the leftmost 160 bits of the SHA-256
/// of the subjectPublicKey bits.
pub(crate) fn key_identifier(key: &PublicKeyInfo) -> rcgen::KeyIdMethod {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key.raw_public_key);
    rcgen::KeyIdMethod::PreSpecified(digest.as_ref()[..20].to_vec())
}

/// Something that can sign with a CA key: a software key today, a PKCS#11 key later.
///
/// Issuance code only sees this trait, so a new key store never touches it.
pub trait Signer: Send + Sync {
    /// The key's public half.
    fn public_key(&self) -> &PublicKeyInfo;
    /// Signs `message` with the key's signature algorithm (ECDSA: DER-encoded signature).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError>;
}

/// Adapts a shared [`Signer`] to rcgen's signing interface.
#[derive(Clone)]
pub(crate) struct SharedSigner(pub Arc<dyn Signer>);

impl rcgen::PublicKeyData for SharedSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.0.public_key().raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.public_key().kind.rcgen_algorithm()
    }
}

impl rcgen::SigningKey for SharedSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// A private key held in memory (encrypted at rest by the caller's key store).
pub struct SoftwareKey {
    key_pair: rcgen::KeyPair,
    public_key: PublicKeyInfo,
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SoftwareKey")
            .field("algorithm", &self.public_key.label())
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// Generates a fresh key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, PkiError> {
        let key_pair = match algorithm {
            KeyAlgorithm::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
            other => rcgen::KeyPair::generate_for(other.rcgen_algorithm()),
        }
        .map_err(|e| PkiError::Signing(format!("key generation failed: {e}")))?;
        Self::from_key_pair(key_pair)
    }

    /// Loads a PKCS#8 (or PKCS#1 / SEC1) private key from PEM.
    pub fn from_pem(pem_text: &str) -> Result<Self, PkiError> {
        let key_pair = rcgen::KeyPair::from_pem(pem_text).map_err(|e| {
            PkiError::InvalidKey(format!(
                "could not read the private key ({e}); expected an unencrypted PEM private key"
            ))
        })?;
        Self::from_key_pair(key_pair)
    }

    /// Loads a PKCS#8 private key from DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        let key_pair = rcgen::KeyPair::try_from(der)
            .map_err(|e| PkiError::InvalidKey(format!("could not read the private key ({e})")))?;
        Self::from_key_pair(key_pair)
    }

    fn from_key_pair(key_pair: rcgen::KeyPair) -> Result<Self, PkiError> {
        let spki_der = rcgen::PublicKeyData::subject_public_key_info(&key_pair);
        let public_key = parse_public_key_info(&spki_der)?;
        Ok(SoftwareKey {
            key_pair,
            public_key,
        })
    }

    /// The private key as PKCS#8 DER. Handle with care: this is the secret.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key_pair.serialize_der()
    }

    /// The private key as PKCS#8 PEM. Handle with care: this is the secret.
    pub fn pkcs8_pem(&self) -> String {
        crate::to_pem("PRIVATE KEY", &self.pkcs8_der())
    }

    /// A PKCS#10 request (DER) for `sans` (DNS names and IP addresses) with an empty subject,
    /// signed by this key: what an ACME finalize or a CSR-based issuance takes.
    pub fn csr_der(&self, sans: &[String]) -> Result<Vec<u8>, PkiError> {
        let mut params = rcgen::CertificateParams::new(sans.to_vec())
            .map_err(|e| PkiError::InvalidRequest(format!("names for the CSR: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&self.key_pair)
            .map_err(|e| PkiError::Signing(format!("signing the CSR: {e}")))?;
        Ok(csr.der().to_vec())
    }
}

impl Signer for SoftwareKey {
    fn public_key(&self) -> &PublicKeyInfo {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        rcgen::SigningKey::sign(&self.key_pair, message)
            .map_err(|e| PkiError::Signing(e.to_string()))
    }
}

/// A certificate serial number: 16 bytes from the system CSPRNG, positive and
/// with a non-zero first byte so its DER encoding is always 16 bytes (126 random bits).
pub fn random_serial() -> Result<[u8; 16], PkiError> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial)
        .map_err(|_| PkiError::Signing("the system random generator failed".into()))?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_report_their_algorithm() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
        ] {
            let key = SoftwareKey::generate(algorithm).unwrap();
            let (kind, bits) = algorithm.kind_and_bits();
            assert_eq!(key.public_key().kind, kind);
            assert_eq!(key.public_key().bits, bits);
            let reloaded = SoftwareKey::from_pem(&key.pkcs8_pem()).unwrap();
            assert_eq!(reloaded.public_key(), key.public_key());
        }
    }

    #[test]
    fn serials_are_positive_and_full_length() {
        for _ in 0..100 {
            let serial = random_serial().unwrap();
            assert!(serial[0] & 0x80 == 0 && serial[0] != 0);
        }
        assert_ne!(random_serial().unwrap(), random_serial().unwrap());
    }

    #[test]
    fn key_algorithm_names_round_trip() {
        for algorithm in KeyAlgorithm::ALL {
            assert_eq!(algorithm.name().parse::<KeyAlgorithm>().unwrap(), algorithm);
        }
        assert!("rsa-1024".parse::<KeyAlgorithm>().is_err());
    }
}
