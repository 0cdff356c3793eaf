//! Reading certificates: the facts the inventory keeps about each one.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::key::check_spki;
use crate::{PkiError, sha256_hex};

/// One subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum SanEntry {
    /// dNSName.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
    /// uniformResourceIdentifier.
    Uri(String),
    /// rfc822Name.
    Email(String),
}

impl SanEntry {
    /// The SAN kind of this entry.
    pub fn kind(&self) -> crate::SanKind {
        match self {
            SanEntry::Dns(_) => crate::SanKind::Dns,
            SanEntry::Ip(_) => crate::SanKind::Ip,
            SanEntry::Uri(_) => crate::SanKind::Uri,
            SanEntry::Email(_) => crate::SanKind::Email,
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, PkiError> {
        let ia5 = |value: &str| {
            value.to_string().try_into().map_err(|_| {
                PkiError::InvalidRequest(format!(
                    "name {value:?} is not ASCII (IA5String); use its punycode form"
                ))
            })
        };
        Ok(match self {
            SanEntry::Dns(name) => rcgen::SanType::DnsName(ia5(name)?),
            SanEntry::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            SanEntry::Uri(uri) => rcgen::SanType::URI(ia5(uri)?),
            SanEntry::Email(email) => rcgen::SanType::Rfc822Name(ia5(email)?),
        })
    }
}

impl fmt::Display for SanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanEntry::Dns(v) => write!(f, "DNS:{v}"),
            SanEntry::Ip(v) => write!(f, "IP:{v}"),
            SanEntry::Uri(v) => write!(f, "URI:{v}"),
            SanEntry::Email(v) => write!(f, "email:{v}"),
        }
    }
}

/// Collects the SAN entries certkeeper understands; other kinds are skipped.
pub(crate) fn san_entries<'a>(names: impl Iterator<Item = &'a GeneralName<'a>>) -> Vec<SanEntry> {
    names
        .filter_map(|name| match name {
            GeneralName::DNSName(v) => Some(SanEntry::Dns((*v).to_string())),
            GeneralName::URI(v) => Some(SanEntry::Uri((*v).to_string())),
            GeneralName::RFC822Name(v) => Some(SanEntry::Email((*v).to_string())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| SanEntry::Ip(IpAddr::from(b))),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| SanEntry::Ip(IpAddr::from(b))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// What the inventory records about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Issuer distinguished name (RFC 4514 form).
    pub issuer: String,
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub sans: Vec<SanEntry>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Key label such as `ecdsa-p256` or `rsa-2048` (or the OID for keys certkeeper cannot issue for).
    pub key_algorithm: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// SHA-256 of the whole certificate, hex.
    pub fingerprint_sha256: String,
    /// Whether basicConstraints says this is a CA.
    pub is_ca: bool,
    /// authorityKeyIdentifier, hex, if present.
    pub authority_key_id: Option<String>,
    /// subjectKeyIdentifier, hex, if present.
    pub subject_key_id: Option<String>,
}

/// Reads the inventory facts from a DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateSummary, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| {
        PkiError::MalformedCertificate(format!("not a DER X.509 certificate ({e})"))
    })?;
    if !rest.is_empty() {
        return Err(PkiError::MalformedCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    let tbs = &cert.tbs_certificate;
    let spki_der = tbs.subject_pki.raw;
    let key_algorithm = match check_spki(&tbs.subject_pki, spki_der) {
        Ok(info) => info.label(),
        Err(_) => tbs.subject_pki.algorithm.algorithm.to_id_string(),
    };
    let mut sans = Vec::new();
    let mut authority_key_id = None;
    let mut subject_key_id = None;
    for ext in tbs.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                sans = san_entries(san.general_names.iter())
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|k| hex::encode(k.0))
            }
            ParsedExtension::SubjectKeyIdentifier(ski) => subject_key_id = Some(hex::encode(ski.0)),
            _ => {}
        }
    }
    let common_name = tbs
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Ok(CertificateSummary {
        serial: serial_hex(tbs.raw_serial()),
        issuer: tbs.issuer.to_string(),
        subject: tbs.subject.to_string(),
        common_name,
        sans,
        not_before: tbs.validity.not_before.timestamp(),
        not_after: tbs.validity.not_after.timestamp(),
        key_algorithm,
        spki_sha256: sha256_hex(spki_der),
        fingerprint_sha256: sha256_hex(der),
        is_ca: tbs.is_ca(),
        authority_key_id,
        subject_key_id,
    })
}

/// Serial number bytes as lowercase hex, without DER's leading zero padding.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(first) => &raw[first..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    hex::encode(trimmed)
}

/// Extracts every certificate from PEM text, or treats the input as one DER certificate.
pub fn pem_to_der_certificates(input: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    if input.first() == Some(&0x30) {
        return Ok(vec![input.to_vec()]);
    }
    let blocks = pem::parse_many(input)
        .map_err(|e| PkiError::MalformedCertificate(format!("not PEM or DER ({e})")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(PkiError::MalformedCertificate(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(certs)
}
