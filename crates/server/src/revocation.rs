//! Revoking certificates: by serial, by certificate, or by key (every unexpired certificate
//! with the same public key). Idempotent: the first reason stands unless escalated to
//! keyCompromise. Every revocation is audited and triggers a CRL rebuild.

use axum::http::StatusCode;
use certkeeper_pki::{RevocationReason, parse_certificate, pem_to_der_certificates};
use certkeeper_store::{
    AuditEvent, CertificateRecord, CertificateSource, Change, Outcome, Revocation, RevocationState,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::issuance::rfc3339;
use crate::problem::Problem;

/// What to revoke (exactly one of `serial`, `certificate_pem`, `key_of_serial`, `spki_sha256`) and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The certificate's serial number, hex.
    #[serde(default)]
    pub serial: Option<String>,
    /// The certificate itself, PEM.
    #[serde(default)]
    pub certificate_pem: Option<String>,
    /// Revoke every unexpired certificate with the same public key as this one (key compromise).
    #[serde(default)]
    pub key_of_serial: Option<String>,
    /// Revoke every unexpired certificate with this SubjectPublicKeyInfo SHA-256 (key compromise).
    #[serde(default)]
    pub spki_sha256: Option<String>,
    /// unspecified (default), keyCompromise (default when revoking by key), affiliationChanged,
    /// superseded, cessationOfOperation, privilegeWithdrawn.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the key was compromised or the certificate became invalid, RFC 3339.
    #[serde(default)]
    pub invalidity_date: Option<String>,
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevokeResponse {
    /// Each certificate, with the revocation state now recorded.
    pub revoked: Vec<RevokedView>,
}

/// One revoked certificate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevokedView {
    /// Serial, hex.
    pub serial: String,
    /// Reason now recorded.
    pub reason: String,
    /// Revocation time, RFC 3339.
    pub revoked_at: String,
    /// Invalidity date, RFC 3339.
    pub invalidity_date: Option<String>,
    /// False when the certificate was already revoked exactly so (idempotent repeat).
    pub changed: bool,
}

fn unknown(what: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-certificate",
        "Unknown certificate",
        format!(
            "no certificate issued by this certkeeper matches {what} in your tenants; check the serial (hex) with `certkeeper list`"
        ),
    )
}

/// Revokes for `principal`; refusals are audited.
pub async fn revoke(
    state: &AppState,
    principal: &Principal,
    request: RevokeRequest,
) -> Result<RevokeResponse, Problem> {
    let object = request
        .serial
        .clone()
        .or_else(|| request.key_of_serial.clone())
        .or_else(|| request.spki_sha256.clone())
        .unwrap_or_else(|| "certificate".into());
    match revoke_checked(state, principal, request).await {
        Ok(response) => Ok(response),
        Err(problem) => Err(state
            .audit_denial(&principal.token_id, "certificate.revoke", &object, problem)
            .await),
    }
}

async fn revoke_checked(
    state: &AppState,
    principal: &Principal,
    request: RevokeRequest,
) -> Result<RevokeResponse, Problem> {
    principal.require(Permission::Issue)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let selectors = [
        &request.serial,
        &request.certificate_pem,
        &request.key_of_serial,
        &request.spki_sha256,
    ]
    .iter()
    .filter(|s| s.is_some())
    .count();
    if selectors != 1 {
        return Err(Problem::malformed(
            "name exactly one of `serial`, `certificate_pem`, `key_of_serial` or `spki_sha256`",
        ));
    }
    let by_key = request.key_of_serial.is_some() || request.spki_sha256.is_some();
    let reason = match &request.reason {
        Some(text) => text.parse::<RevocationReason>()?,
        None if by_key => RevocationReason::KeyCompromise,
        None => RevocationReason::Unspecified,
    };
    if by_key && reason != RevocationReason::KeyCompromise {
        return Err(Problem::malformed(
            "revoking by key is for key compromise: use reason keyCompromise",
        ));
    }
    let invalidity_date = match &request.invalidity_date {
        Some(text) => {
            let date = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    Problem::malformed(format!("invalidity_date {text:?} is not RFC 3339: {e}"))
                })?
                .unix_timestamp();
            if date > now {
                return Err(Problem::malformed("invalidity_date is in the future"));
            }
            Some(date)
        }
        None => None,
    };

    let visible = |record: &CertificateRecord| {
        principal
            .tenant
            .as_deref()
            .is_none_or(|t| t == record.certificate.tenant)
    };
    let targets: Vec<CertificateRecord> = if let Some(serial) = &request.serial {
        let serial = normalize_serial(serial)?;
        let found: Vec<CertificateRecord> = state
            .store
            .certificates_by_serial(&serial, now)
            .await?
            .into_iter()
            .filter(visible)
            .collect();
        if found.is_empty() {
            return Err(unknown(&format!("serial {serial}")));
        }
        found
    } else if let Some(pem) = &request.certificate_pem {
        let der = pem_to_der_certificates(pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| Problem::malformed("certificate_pem holds no certificate"))?;
        let summary = parse_certificate(&der)?;
        let found: Vec<CertificateRecord> = state
            .store
            .certificates_by_serial(&summary.serial, now)
            .await?
            .into_iter()
            .filter(|r| r.certificate.fingerprint_sha256 == summary.fingerprint_sha256)
            .filter(visible)
            .collect();
        if found.is_empty() {
            return Err(unknown("that certificate"));
        }
        found
    } else {
        let spki = match (&request.key_of_serial, &request.spki_sha256) {
            (Some(serial), _) => {
                let serial = normalize_serial(serial)?;
                state
                    .store
                    .certificates_by_serial(&serial, now)
                    .await?
                    .into_iter()
                    .find(visible)
                    .ok_or_else(|| unknown(&format!("serial {serial}")))?
                    .certificate
                    .spki_sha256
            }
            (None, Some(spki)) => spki.to_ascii_lowercase(),
            (None, None) => return Err(Problem::malformed("nothing to revoke")),
        };
        let found: Vec<CertificateRecord> = state
            .store
            .certificates_by_spki(&spki, now)
            .await?
            .into_iter()
            .filter(|r| {
                r.certificate.source == CertificateSource::Issued && r.certificate.not_after >= now
            })
            .filter(visible)
            .collect();
        if found.is_empty() {
            return Err(unknown(&format!("key {spki}")));
        }
        found
    };
    // Only certificates this certkeeper issued can be revoked; a copy of a serial imported
    // elsewhere must not get in the way of revoking the real one.
    let (targets, others): (Vec<CertificateRecord>, Vec<CertificateRecord>) = targets
        .into_iter()
        .partition(|r| r.certificate.source == CertificateSource::Issued);
    if targets.is_empty()
        && let Some(other) = others.first()
    {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "not-issued-here",
            "Not issued by this certkeeper",
            format!(
                "certificate {} is {} in the inventory; only certificates this certkeeper issued can be revoked here",
                other.certificate.serial,
                match other.certificate.source {
                    CertificateSource::Ca => "one of its CA certificates",
                    CertificateSource::External => "obtained from an external CA",
                    CertificateSource::Discovered => "seen by a scan of a TLS endpoint",
                    _ => "imported",
                }
            ),
        ));
    }

    let requested = RevocationState {
        revoked_at: now,
        reason: reason.code(),
        invalidity_date,
    };
    let change = Change {
        revocations: targets
            .iter()
            .map(|r| Revocation {
                certificate_id: r.id,
                state: requested,
            })
            .collect(),
        audit: targets
            .iter()
            .map(|r| AuditEvent {
                actor: principal.token_id.clone(),
                action: "certificate.revoke".into(),
                object: r.certificate.serial.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "reason": reason.name(),
                    "invalidity_date": invalidity_date,
                    "tenant": r.certificate.tenant,
                    "already_revoked": r.revocation.is_some(),
                }),
            })
            .collect(),
        ..Change::default()
    };
    let outcome = state.store.apply(change).await?;
    state.crls.revoked();
    for record in &targets {
        state
            .ocsp
            .revoked(&state.store, &record.certificate.serial)
            .await;
    }
    let revoked = targets
        .iter()
        .zip(outcome.revocations)
        .map(|(record, (_, stored))| RevokedView {
            serial: record.certificate.serial.clone(),
            reason: RevocationReason::from_code(stored.reason)
                .map_or_else(|| stored.reason.to_string(), |r| r.name().to_string()),
            revoked_at: rfc3339(stored.revoked_at),
            invalidity_date: stored.invalidity_date.map(rfc3339),
            changed: record.revocation != Some(stored),
        })
        .collect();
    Ok(RevokeResponse { revoked })
}

/// Lower-case hex without separators or leading zero bytes.
pub(crate) fn normalize_serial(serial: &str) -> Result<String, Problem> {
    let hex_digits: String = serial
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if hex_digits.is_empty()
        || hex_digits.len() > 40
        || !hex_digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(Problem::malformed(format!(
            "serial {serial:?} is not a hex serial number"
        )));
    }
    let padded = if hex_digits.len() % 2 == 1 {
        format!("0{hex_digits}")
    } else {
        hex_digits
    };
    let trimmed = padded.trim_start_matches("00");
    Ok(if trimmed.is_empty() {
        "00".into()
    } else {
        trimmed.to_string()
    })
}
