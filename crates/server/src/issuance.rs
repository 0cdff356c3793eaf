//! Issuing a certificate: authorise, read the CSR (or generate a key), apply the profile and
//! the policy, build and sign, then commit inventory row and audit entry in one transaction.
//! The certificate is returned only after that commit is durable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use certkeeper_pki::{
    KeyAlgorithm, KeyKind, LeafRequest, Profile, PublicKeyInfo, SanEntry, Signer, SoftwareKey,
    build_leaf, build_pkcs12, parse_certificate, parse_csr, random_serial, to_pem,
};
use certkeeper_policy::{
    Decision, KeySpec, Request as PolicyRequest, RequestedName, normalize_dns_name,
};
use certkeeper_store::{AuditEvent, CertificateSource, Change, NewCertificate, Outcome};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::auth::{Permission, Principal};
use crate::config::parse_duration;
use crate::problem::Problem;
use crate::{AppState, Tenant};

/// A request for a certificate: either a CSR, or a key algorithm for server-side key generation.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Profile name: tls-server, tls-client, mtls or a custom one.
    pub profile: String,
    /// Tenant; defaults to the token's tenant, else `default`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// PKCS#10 CSR, PEM. Leave out to have the server generate the key.
    #[serde(default)]
    pub csr: Option<String>,
    /// Key algorithm for server-side generation (default ecdsa-p256).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "ecdsa-p256")]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// With server-side generation: also return a PKCS#12 bundle under this password.
    #[serde(default)]
    pub pkcs12_password: Option<String>,
    /// Subject common name; must be (or becomes) one of the SANs.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Names: DNS names, IP addresses, URIs (`spiffe://...`) and email addresses.
    /// With a CSR and no `sans`, the CSR's names are used.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Lifetime such as "30d" or "3600"; default: the profile's.
    #[serde(default)]
    pub lifetime: Option<String>,
    /// Labels stored with the certificate in the inventory.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

// Debug by hand: secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for IssueRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueRequest")
            .field("profile", &self.profile)
            .field("tenant", &self.tenant)
            .field("csr", &self.csr.as_ref().map(|_| "<csr>"))
            .field("key_algorithm", &self.key_algorithm)
            .field(
                "pkcs12_password",
                &self.pkcs12_password.as_ref().map(|_| "<redacted>"),
            )
            .field("common_name", &self.common_name)
            .field("sans", &self.sans)
            .field("lifetime", &self.lifetime)
            .field("labels", &self.labels)
            .finish()
    }
}

/// An issued certificate.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct IssueResponse {
    /// Serial number, hex.
    pub serial: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The issuing CA chain (without the root), PEM.
    pub chain_pem: String,
    /// Certificate followed by the chain, PEM (what a TLS server serves).
    pub full_chain_pem: String,
    /// The root CA certificate, PEM (what relying parties trust).
    pub root_pem: String,
    /// Profile used.
    pub profile: String,
    /// Tenant.
    pub tenant: String,
    /// Subject alternative names in the certificate.
    pub sans: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// The generated private key, PKCS#8 PEM (server-side generation only; returned this once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    /// PKCS#12 bundle, base64 (when a password was given; returned this once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs12_base64: Option<String>,
}

impl std::fmt::Debug for IssueResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueResponse")
            .field("serial", &self.serial)
            .field("profile", &self.profile)
            .field("tenant", &self.tenant)
            .field("sans", &self.sans)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "pkcs12_base64",
                &self.pkcs12_base64.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Seconds a certificate's notBefore is set before the moment of issuance, for clock skew.
const BACKDATE_SECONDS: i64 = 60;

/// Issues a certificate for `principal`; every refusal is audited before it is returned.
pub async fn issue(
    state: &AppState,
    principal: &Principal,
    request: IssueRequest,
) -> Result<IssueResponse, Problem> {
    let tenant = request
        .tenant
        .clone()
        .or_else(|| principal.tenant.clone())
        .unwrap_or_else(|| Tenant::DEFAULT.to_string());
    let started = std::time::Instant::now();
    let object = request
        .sans
        .first()
        .cloned()
        .unwrap_or_else(|| "certificate request".into());
    match prepare_and_sign(state, principal, &tenant, request).await {
        Ok((record, response)) => {
            let audit = AuditEvent {
                actor: principal.token_id.clone(),
                action: "certificate.issue".into(),
                object: response.serial.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "profile": response.profile,
                    "tenant": response.tenant,
                    "sans": response.sans,
                    "not_after": response.not_after,
                    "spki_sha256": record.spki_sha256,
                    "server_generated_key": response.private_key_pem.is_some(),
                }),
            };
            state
                .store
                .apply(Change {
                    certificates: vec![record],
                    audit: vec![audit],
                    ..Change::default()
                })
                .await?;
            let protocol = match principal_kind(&principal.token_id) {
                "reconciler" => "reconciler",
                _ => "rest",
            };
            state
                .metrics
                .issued(protocol, &response.profile, started.elapsed().as_secs_f64());
            Ok(response)
        }
        Err(problem) => Err(state
            .audit_denial(&principal.token_id, "certificate.issue", &object, problem)
            .await),
    }
}

/// Who uses the issuing key, by kind: `acme` (an ACME account), `reconciler` (managed
/// certificates) or `api` (an API token).
pub fn principal_kind(token_id: &str) -> &'static str {
    if token_id.starts_with("acme:") {
        "acme"
    } else if token_id == crate::lifecycle::ACTOR {
        "reconciler"
    } else {
        "api"
    }
}

pub(crate) async fn prepare_and_sign(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    request: IssueRequest,
) -> Result<(NewCertificate, IssueResponse), Problem> {
    principal.require(Permission::Issue)?;
    principal.require_tenant(tenant)?;
    Tenant::validate(tenant)?;
    let profile = state.profile(&request.profile)?;

    let (public_key, csr_names, generated) = match (&request.csr, request.key_algorithm) {
        (Some(_), Some(_)) => {
            return Err(Problem::malformed(
                "send either `csr` or `key_algorithm`, not both",
            ));
        }
        (Some(csr), None) => {
            if request.pkcs12_password.is_some() {
                return Err(Problem::malformed(
                    "`pkcs12_password` needs server-side key generation (no `csr`)",
                ));
            }
            let info = parse_csr(csr.as_bytes())?;
            (info.public_key, Some((info.common_name, info.sans)), None)
        }
        (None, algorithm) => {
            let algorithm = algorithm.unwrap_or(KeyAlgorithm::EcdsaP256);
            let key = SoftwareKey::generate(algorithm)?;
            (key.public_key().clone(), None, Some(key))
        }
    };

    // A CN the caller asked for must be usable; one that only came from the CSR is dropped
    // when it is not a name the profile allows (the CN is only a copy of a SAN).
    let (requested_cn, csr_cn, mut sans) = match csr_names {
        Some((csr_cn, csr_sans)) if request.sans.is_empty() => {
            (request.common_name.clone(), csr_cn, csr_sans)
        }
        Some((csr_cn, _)) => (
            request.common_name.clone(),
            csr_cn,
            parse_names(&request.sans)?,
        ),
        None => (
            request.common_name.clone(),
            None,
            parse_names(&request.sans)?,
        ),
    };
    sans = normalize_sans(sans)?;
    let common_name = match (requested_cn, csr_cn) {
        (Some(cn), _) => Some(common_name_entry(&cn, profile)?),
        (None, Some(cn)) => common_name_entry(&cn, profile).ok(),
        (None, None) => None,
    };
    if let Some(entry) = &common_name
        && !sans.contains(entry)
    {
        sans.insert(0, entry.clone());
    }
    // The CN is the SAN's canonical text (RFC 5952 for IPv6), and only when it fits the
    // 64-character upper bound of RFC 5280; otherwise the subject stays empty.
    let common_name = common_name
        .map(|entry| match entry {
            SanEntry::Dns(v) | SanEntry::Uri(v) | SanEntry::Email(v) => v,
            SanEntry::Ip(ip) => ip.to_string(),
        })
        .filter(|text| text.len() <= 64);

    let lifetime = match &request.lifetime {
        Some(text) => {
            parse_duration(text).map_err(|e| Problem::malformed(format!("lifetime: {e}")))?
        }
        None => profile.default_validity_seconds,
    };
    profile.check(&public_key, common_name.as_deref(), &sans, lifetime)?;
    check_policy(state, tenant, profile, &public_key, &sans, lifetime)?;
    refuse_compromised_key(state, &public_key).await?;

    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| Problem::internal(e.to_string()))?;
    let not_before = now - Duration::seconds(BACKDATE_SECONDS);
    let lifetime_i64 =
        i64::try_from(lifetime).map_err(|_| Problem::malformed("lifetime is too large"))?;
    let not_after = not_before + Duration::seconds(lifetime_i64 - 1);
    if not_after.unix_timestamp() > state.ca.issuing_not_after {
        return Err(Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "lifetime-exceeds-ca",
            "Lifetime beyond the CA",
            "the certificate would outlive its issuing CA; ask for a shorter lifetime",
        ));
    }
    let serial = random_serial()?;
    let shards = state.crls.shards();
    let crl_shard = crate::crl::shard_of(&serial, shards);
    let mut urls = state.urls.clone();
    if shards > 1 {
        urls.crl = Some(format!(
            "{}/crl/{}",
            state.base_url,
            crate::crl::crl_name(Some(crl_shard))
        ));
    }
    let der = build_leaf(
        &LeafRequest {
            profile,
            public_key: &public_key,
            common_name: common_name.as_deref(),
            sans: &sans,
            serial,
            not_before,
            not_after,
            urls: &urls,
        },
        &state.ca.issuer,
    )?;
    state
        .metrics
        .key_use("issuing", principal_kind(&principal.token_id));
    let summary = parse_certificate(&der)?;

    let certificate_pem = to_pem("CERTIFICATE", &der);
    let (private_key_pem, pkcs12_base64) = match &generated {
        None => (None, None),
        Some(key) => {
            let p12 = match &request.pkcs12_password {
                Some(password) => Some(base64::engine::general_purpose::STANDARD.encode(
                    build_pkcs12(
                        &key.pkcs8_der(),
                        &der,
                        &state.ca.chain_der,
                        password,
                        &summary.serial,
                    )?,
                )),
                None => None,
            };
            (Some(key.pkcs8_pem()), p12)
        }
    };
    let record = crate::inventory::record(
        summary,
        der,
        crate::inventory::Provenance {
            profile: Some(profile.name.clone()),
            tenant: tenant.to_string(),
            requester: principal.token_id.clone(),
            source: CertificateSource::Issued,
            labels: request.labels,
            crl_shard,
        },
    );
    let response = IssueResponse {
        serial: record.serial.clone(),
        full_chain_pem: format!("{certificate_pem}{}", state.ca.chain_pem),
        certificate_pem,
        chain_pem: state.ca.chain_pem.clone(),
        root_pem: state.ca.root_pem.clone(),
        profile: profile.name.clone(),
        tenant: tenant.to_string(),
        sans: record.sans.clone(),
        not_before: rfc3339(record.not_before),
        not_after: rfc3339(record.not_after),
        private_key_pem,
        pkcs12_base64,
    };
    Ok((record, response))
}

/// A key that any certificate was revoked for as compromised is never certified again.
async fn refuse_compromised_key(state: &AppState, key: &PublicKeyInfo) -> Result<(), Problem> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let compromised = state
        .store
        .certificates_by_spki(&key.spki_sha256(), now)
        .await?
        .into_iter()
        .find(|record| {
            record
                .revocation
                .is_some_and(|r| r.reason == certkeeper_pki::RevocationReason::KeyCompromise.code())
        });
    match compromised {
        None => Ok(()),
        Some(record) => Err(Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "key-compromised",
            "Compromised key",
            format!(
                "certificate {} with this public key was revoked for key compromise; generate a new key",
                record.certificate.serial
            ),
        )),
    }
}

/// Formats Unix seconds as RFC 3339.
pub fn rfc3339(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// The SAN a common name stands for; refused when the profile does not allow that kind.
fn common_name_entry(cn: &str, profile: &Profile) -> Result<SanEntry, Problem> {
    let entry = normalize_sans(parse_names(&[cn.to_string()])?)?
        .into_iter()
        .next()
        .ok_or_else(|| Problem::malformed("empty common name"))?;
    if !profile.san_kinds.contains(&entry.kind()) {
        return Err(Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "profile-violation",
            "Request does not fit the profile",
            format!(
                "the common name {cn:?} is a {} name, which profile {:?} does not allow; leave the CN out",
                entry.kind().name(),
                profile.name
            ),
        ));
    }
    Ok(entry)
}

/// Reads names: `dns:`, `ip:`, `uri:`, `email:` prefixes, or guessed from the form.
fn parse_names(names: &[String]) -> Result<Vec<SanEntry>, Problem> {
    names
        .iter()
        .map(|raw| {
            let name = raw.trim();
            let lower = name.to_ascii_lowercase();
            let entry =
                if let Some(rest) = lower.strip_prefix("dns:") {
                    SanEntry::Dns(rest.to_string())
                } else if lower.starts_with("ip:") {
                    SanEntry::Ip(name[3..].parse().map_err(|_| {
                        Problem::malformed(format!("{name:?} is not an IP address"))
                    })?)
                } else if lower.starts_with("email:") {
                    SanEntry::Email(name[6..].to_string())
                } else if lower.starts_with("uri:") {
                    SanEntry::Uri(name[4..].to_string())
                } else if name.contains("://") || lower.starts_with("urn:") {
                    SanEntry::Uri(name.to_string())
                } else if let Ok(ip) = name.parse::<IpAddr>() {
                    SanEntry::Ip(ip)
                } else if name.contains('@') {
                    SanEntry::Email(name.to_string())
                } else {
                    SanEntry::Dns(name.to_string())
                };
            Ok(entry)
        })
        .collect()
}

/// Normalises DNS names (lower case, no trailing dot, valid labels) and removes duplicates.
fn normalize_sans(sans: Vec<SanEntry>) -> Result<Vec<SanEntry>, Problem> {
    let mut out: Vec<SanEntry> = Vec::with_capacity(sans.len());
    for san in sans {
        let san = match san {
            SanEntry::Dns(name) => SanEntry::Dns(normalize_dns_name(&name).map_err(|e| {
                Problem::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid-name",
                    "Invalid name",
                    e.to_string(),
                )
            })?),
            SanEntry::Ip(ip) => SanEntry::Ip(match ip {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            }),
            other => other,
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    if out.len() > 100 {
        return Err(Problem::malformed(
            "at most 100 subject alternative names per certificate",
        ));
    }
    Ok(out)
}

/// The SANs as the policy sees them.
fn requested_names(sans: &[SanEntry]) -> Vec<RequestedName> {
    sans.iter()
        .map(|san| match san {
            SanEntry::Dns(v) => RequestedName::Dns(v.clone()),
            SanEntry::Ip(v) => RequestedName::Ip(*v),
            SanEntry::Uri(v) => RequestedName::Uri(v.clone()),
            SanEntry::Email(v) => RequestedName::Email(v.clone()),
        })
        .collect()
}

/// Checks only the names of a request against the policy (for ACME newOrder, before any key
/// is known): denials about keys or lifetimes are left to issuance.
pub(crate) fn check_names(
    state: &AppState,
    tenant: &str,
    profile: &Profile,
    sans: &[SanEntry],
) -> Result<(), Problem> {
    let names = requested_names(sans);
    let decision = state.policy.evaluate(&PolicyRequest {
        tenant,
        profile: &profile.name,
        names: &names,
        lifetime_seconds: profile.default_validity_seconds,
        key: KeySpec {
            kind: certkeeper_policy::KeyKind::EcdsaP256,
            bits: 256,
        },
    });
    let denials: Vec<String> = decision
        .denials()
        .iter()
        .filter(|d| {
            !matches!(
                d.kind,
                certkeeper_policy::SubjectKind::Key | certkeeper_policy::SubjectKind::Lifetime
            )
        })
        .map(ToString::to_string)
        .collect();
    if denials.is_empty() {
        Ok(())
    } else {
        Err(Problem::policy_denied(denials))
    }
}

fn check_policy(
    state: &AppState,
    tenant: &str,
    profile: &Profile,
    key: &PublicKeyInfo,
    sans: &[SanEntry],
    lifetime: u64,
) -> Result<(), Problem> {
    let names = requested_names(sans);
    let kind = match key.kind {
        KeyKind::EcdsaP256 => certkeeper_policy::KeyKind::EcdsaP256,
        KeyKind::EcdsaP384 => certkeeper_policy::KeyKind::EcdsaP384,
        KeyKind::Rsa => certkeeper_policy::KeyKind::Rsa,
        KeyKind::Ed25519 => certkeeper_policy::KeyKind::Ed25519,
    };
    let decision = state.policy.evaluate(&PolicyRequest {
        tenant,
        profile: &profile.name,
        names: &names,
        lifetime_seconds: lifetime,
        key: KeySpec {
            kind,
            bits: key.bits,
        },
    });
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny(denials) => Err(Problem::policy_denied(
            denials.iter().map(ToString::to_string).collect(),
        )),
    }
}
