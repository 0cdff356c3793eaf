//! Turning a certificate into an inventory record.

use std::collections::BTreeMap;

use certkeeper_pki::{CertificateSummary, parse_certificate};
use certkeeper_store::{AuditEvent, CertificateSource, Change, NewCertificate, Outcome, Store};

use crate::{ServerError, Tenant};

/// Who a certificate belongs to and how it came in.
pub struct Provenance {
    /// Profile it was issued under (none for imports and CA certificates).
    pub profile: Option<String>,
    /// Owning tenant.
    pub tenant: String,
    /// Token id, `cli` or `certkeeper`.
    pub requester: String,
    /// Issued, imported or CA.
    pub source: CertificateSource,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// CRL partition that lists it once revoked.
    pub crl_shard: i64,
}

/// The inventory record for a certificate read with `parse_certificate`.
pub fn record(summary: CertificateSummary, der: Vec<u8>, provenance: Provenance) -> NewCertificate {
    NewCertificate {
        sans: summary.sans.iter().map(ToString::to_string).collect(),
        serial: summary.serial,
        issuer: summary.issuer,
        subject: summary.subject,
        common_name: summary.common_name,
        not_before: summary.not_before,
        not_after: summary.not_after,
        key_algorithm: summary.key_algorithm,
        spki_sha256: summary.spki_sha256,
        fingerprint_sha256: summary.fingerprint_sha256,
        profile: provenance.profile,
        tenant: provenance.tenant,
        requester: provenance.requester,
        source: provenance.source,
        labels: provenance.labels,
        crl_shard: provenance.crl_shard,
        der,
    }
}

/// Records a certificate certkeeper issued for itself (its TLS listener, its OCSP responder)
/// in the inventory, with an audit entry saying what it is for.
pub async fn record_own_certificate(
    store: &Store,
    der: &[u8],
    profile: &str,
    detail: serde_json::Value,
) -> Result<(), ServerError> {
    let summary = parse_certificate(der)?;
    let serial = summary.serial.clone();
    let record = record(
        summary,
        der.to_vec(),
        Provenance {
            profile: Some(profile.into()),
            tenant: Tenant::SYSTEM.into(),
            requester: "certkeeper".into(),
            source: CertificateSource::Issued,
            labels: Default::default(),
            crl_shard: 0,
        },
    );
    let audit = AuditEvent {
        actor: "certkeeper".into(),
        action: "certificate.issue".into(),
        object: serial,
        outcome: Outcome::Success,
        detail,
    };
    store
        .apply(Change {
            certificates: vec![record],
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(())
}
