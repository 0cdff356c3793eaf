//! Certificate revocation lists (RFC 5280 section 5; CA/B Forum BR 7.2).

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::ca::CaIssuer;
use crate::{PkiError, parse_certificate};

/// Why a certificate was revoked: the RFC 5280 CRLReason codes a subscriber certificate may
/// carry under the Baseline Requirements (7.2.2). certificateHold, removeFromCRL and the CA
/// reasons are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// No reason given (no reasonCode extension is written).
    Unspecified,
    /// The private key was, or may have been, compromised.
    KeyCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// The certificate was replaced.
    Superseded,
    /// The certificate is no longer needed.
    CessationOfOperation,
    /// The subscriber no longer has the privilege the certificate stands for.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason, in RFC order.
    pub const ALL: [RevocationReason; 6] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 code.
    pub fn code(self) -> i64 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    /// The reason for a stored code.
    pub fn from_code(code: i64) -> Option<Self> {
        RevocationReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC 5280 name, such as `keyCompromise`.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    fn to_rcgen(self) -> Option<rcgen::RevocationReason> {
        match self {
            // BR 7.2.2: an unspecified reason is expressed by omitting reasonCode.
            RevocationReason::Unspecified => None,
            RevocationReason::KeyCompromise => Some(rcgen::RevocationReason::KeyCompromise),
            RevocationReason::AffiliationChanged => {
                Some(rcgen::RevocationReason::AffiliationChanged)
            }
            RevocationReason::Superseded => Some(rcgen::RevocationReason::Superseded),
            RevocationReason::CessationOfOperation => {
                Some(rcgen::RevocationReason::CessationOfOperation)
            }
            RevocationReason::PrivilegeWithdrawn => {
                Some(rcgen::RevocationReason::PrivilegeWithdrawn)
            }
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = PkiError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(&text.replace(['-', '_'], "")))
            .ok_or_else(|| {
                PkiError::InvalidRequest(format!(
                    "unknown revocation reason {text:?} (allowed: unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn)"
                ))
            })
    }
}

/// One revoked certificate on a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial number, hex.
    pub serial: String,
    /// Revocation time, Unix seconds.
    pub revoked_at: i64,
    /// Reason.
    pub reason: RevocationReason,
    /// Invalidity date, Unix seconds.
    pub invalidity_date: Option<i64>,
}

/// A CRL to build.
#[derive(Debug, Clone)]
pub struct CrlRequest<'a> {
    /// cRLNumber: must grow with every CRL of this scope.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub entries: &'a [CrlEntry],
    /// For a partition: its URL, written into the IssuingDistributionPoint extension
    /// (user certificates only). `None` for a full CRL (no IDP, per BR 7.2.2).
    pub partition_url: Option<&'a str>,
}

fn timestamp(seconds: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| PkiError::InvalidRequest(e.to_string()))
}

/// Builds and signs a CRL with the issuing CA.
pub fn build_crl(request: &CrlRequest<'_>, ca: &CaIssuer) -> Result<Vec<u8>, PkiError> {
    let ca_summary = parse_certificate(ca.certificate_der())?;
    let key_id = ca_summary
        .subject_key_id
        .as_deref()
        .and_then(|hex_id| hex::decode(hex_id).ok())
        .ok_or_else(|| {
            PkiError::InvalidRequest("the CA certificate has no subjectKeyIdentifier".into())
        })?;
    let mut revoked_certs = Vec::with_capacity(request.entries.len());
    for entry in request.entries {
        let serial = hex::decode(&entry.serial).map_err(|_| {
            PkiError::InvalidRequest(format!("serial {:?} is not hex", entry.serial))
        })?;
        revoked_certs.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&serial),
            revocation_time: timestamp(entry.revoked_at)?,
            reason_code: entry.reason.to_rcgen(),
            invalidity_date: entry.invalidity_date.map(timestamp).transpose()?,
        });
    }
    let number = request.number.to_be_bytes();
    let first = number
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(number.len() - 1);
    let params = rcgen::CertificateRevocationListParams {
        this_update: request.this_update,
        next_update: request.next_update,
        crl_number: rcgen::SerialNumber::from_slice(&number[first..]),
        issuing_distribution_point: request.partition_url.map(|url| {
            rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint {
                    uris: vec![url.to_string()],
                },
                scope: Some(rcgen::CrlScope::UserCertsOnly),
            }
        }),
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(key_id),
    };
    let crl = params.signed_by(ca.rcgen_issuer())?;
    Ok(crl.der().to_vec())
}
