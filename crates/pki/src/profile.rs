//! Certificate profiles: what a certificate of each kind may contain.

use serde::{Deserialize, Serialize};

use crate::KeyKind;

const DAY: u64 = 86_400;

/// A kind of subject alternative name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanKind {
    /// dNSName.
    Dns,
    /// iPAddress.
    Ip,
    /// uniformResourceIdentifier (including spiffe://).
    Uri,
    /// rfc822Name.
    Email,
}

impl SanKind {
    /// The name used in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            SanKind::Dns => "dns",
            SanKind::Ip => "ip",
            SanKind::Uri => "uri",
            SanKind::Email => "email",
        }
    }
}

/// A keyUsage bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyUsage {
    /// digitalSignature.
    DigitalSignature,
    /// keyEncipherment (RSA keys only; dropped for other keys).
    KeyEncipherment,
    /// keyAgreement (EC keys only; dropped for other keys).
    KeyAgreement,
    /// contentCommitment (nonRepudiation).
    ContentCommitment,
}

impl KeyUsage {
    pub(crate) fn to_rcgen(self) -> rcgen::KeyUsagePurpose {
        match self {
            KeyUsage::DigitalSignature => rcgen::KeyUsagePurpose::DigitalSignature,
            KeyUsage::KeyEncipherment => rcgen::KeyUsagePurpose::KeyEncipherment,
            KeyUsage::KeyAgreement => rcgen::KeyUsagePurpose::KeyAgreement,
            KeyUsage::ContentCommitment => rcgen::KeyUsagePurpose::ContentCommitment,
        }
    }

    /// Whether a key of `kind` may carry this usage.
    pub(crate) fn fits(self, kind: KeyKind) -> bool {
        match self {
            KeyUsage::KeyEncipherment => kind == KeyKind::Rsa,
            KeyUsage::KeyAgreement => matches!(kind, KeyKind::EcdsaP256 | KeyKind::EcdsaP384),
            KeyUsage::DigitalSignature | KeyUsage::ContentCommitment => true,
        }
    }
}

/// An extendedKeyUsage purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtendedKeyUsage {
    /// id-kp-serverAuth.
    ServerAuth,
    /// id-kp-clientAuth.
    ClientAuth,
    /// id-kp-codeSigning.
    CodeSigning,
    /// id-kp-emailProtection.
    EmailProtection,
    /// id-kp-timeStamping.
    TimeStamping,
}

impl ExtendedKeyUsage {
    pub(crate) fn to_rcgen(self) -> rcgen::ExtendedKeyUsagePurpose {
        match self {
            ExtendedKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsage::CodeSigning => rcgen::ExtendedKeyUsagePurpose::CodeSigning,
            ExtendedKeyUsage::EmailProtection => rcgen::ExtendedKeyUsagePurpose::EmailProtection,
            ExtendedKeyUsage::TimeStamping => rcgen::ExtendedKeyUsagePurpose::TimeStamping,
        }
    }
}

/// What a certificate issued under this profile may contain and how long it may live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Profile name used in requests (`tls-server`, ...).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Lifetime when the request names none, in seconds.
    pub default_validity_seconds: u64,
    /// Longest lifetime a request may ask for, in seconds.
    pub max_validity_seconds: u64,
    /// Key families a subject key may have.
    pub key_kinds: Vec<KeyKind>,
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: u32,
    /// keyUsage bits (usages that do not fit the subject key are left out).
    pub key_usage: Vec<KeyUsage>,
    /// extendedKeyUsage purposes.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// Subject alternative name kinds a request may contain.
    pub san_kinds: Vec<SanKind>,
    /// Apply the CA/Browser Forum Baseline Requirements TLS server profile
    /// (DV policy OID, no subjectKeyIdentifier, only DNS and IP names).
    pub cabf_server: bool,
}

/// The built-in profiles: `tls-server`, `tls-client` and `mtls`.
pub fn builtin_profiles() -> Vec<Profile> {
    use ExtendedKeyUsage::*;
    use KeyUsage::*;
    vec![
        Profile {
            name: "tls-server".into(),
            description: "TLS server certificate (CA/B Forum Baseline Requirements profile)".into(),
            default_validity_seconds: 90 * DAY,
            // BR 6.3.2: at most 200 days for certificates issued from 2026-03-15; keep a day of margin.
            max_validity_seconds: 199 * DAY,
            key_kinds: vec![KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Rsa],
            min_rsa_bits: 2048,
            key_usage: vec![DigitalSignature, KeyEncipherment],
            extended_key_usage: vec![ServerAuth],
            san_kinds: vec![SanKind::Dns, SanKind::Ip],
            cabf_server: true,
        },
        Profile {
            name: "tls-client".into(),
            description: "TLS client certificate".into(),
            default_validity_seconds: 90 * DAY,
            max_validity_seconds: 397 * DAY,
            key_kinds: vec![
                KeyKind::EcdsaP256,
                KeyKind::EcdsaP384,
                KeyKind::Rsa,
                KeyKind::Ed25519,
            ],
            min_rsa_bits: 2048,
            key_usage: vec![DigitalSignature],
            extended_key_usage: vec![ClientAuth],
            san_kinds: vec![SanKind::Dns, SanKind::Ip, SanKind::Uri, SanKind::Email],
            cabf_server: false,
        },
        Profile {
            name: "mtls".into(),
            description: "Mutual TLS (server and client authentication, SPIFFE IDs allowed)".into(),
            default_validity_seconds: 30 * DAY,
            max_validity_seconds: 397 * DAY,
            key_kinds: vec![
                KeyKind::EcdsaP256,
                KeyKind::EcdsaP384,
                KeyKind::Rsa,
                KeyKind::Ed25519,
            ],
            min_rsa_bits: 2048,
            key_usage: vec![DigitalSignature, KeyEncipherment],
            extended_key_usage: vec![ServerAuth, ClientAuth],
            san_kinds: vec![SanKind::Dns, SanKind::Ip, SanKind::Uri],
            cabf_server: false,
        },
    ]
}
