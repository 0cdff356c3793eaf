//! The records the store keeps and the changes it applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a certificate came into the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateSource {
    /// Issued by this certkeeper.
    Issued,
    /// Loaded with `certkeeper import`.
    Imported,
    /// One of this certkeeper's own CA certificates.
    Ca,
    /// Obtained from an external ACME CA for a managed certificate.
    External,
    /// Seen served at a TLS endpoint by `certkeeper scan`.
    Discovered,
}

impl CertificateSource {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::Issued => "issued",
            CertificateSource::Imported => "imported",
            CertificateSource::Ca => "ca",
            CertificateSource::External => "external",
            CertificateSource::Discovered => "discovered",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, crate::StoreError> {
        match text {
            "issued" => Ok(CertificateSource::Issued),
            "imported" => Ok(CertificateSource::Imported),
            "ca" => Ok(CertificateSource::Ca),
            "external" => Ok(CertificateSource::External),
            "discovered" => Ok(CertificateSource::Discovered),
            other => Err(crate::StoreError::Corrupt(format!(
                "unknown certificate source {other:?}"
            ))),
        }
    }
}

/// Lifecycle status of a certificate. `expired` is derived from notAfter at query time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateStatus {
    /// Valid until notAfter.
    Active,
    /// Past notAfter (derived, never stored).
    Expired,
    /// Revoked.
    Revoked,
}

impl CertificateStatus {
    /// Name used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Active => "active",
            CertificateStatus::Expired => "expired",
            CertificateStatus::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for CertificateStatus {
    type Err = crate::StoreError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "active" => Ok(CertificateStatus::Active),
            "expired" => Ok(CertificateStatus::Expired),
            "revoked" => Ok(CertificateStatus::Revoked),
            other => Err(crate::StoreError::InvalidQuery(format!(
                "unknown status {other:?} (allowed: active, expired, revoked)"
            ))),
        }
    }
}

/// A certificate to add to the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCertificate {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject DN.
    pub subject: String,
    /// Subject CN.
    pub common_name: Option<String>,
    /// SANs as `DNS:name`, `IP:addr`, `URI:...`, `email:...`.
    pub sans: Vec<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Key label (`ecdsa-p256`, `rsa-2048`, ...).
    pub key_algorithm: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// SHA-256 of the certificate, hex (unique).
    pub fingerprint_sha256: String,
    /// Profile it was issued under.
    pub profile: Option<String>,
    /// Owning tenant.
    pub tenant: String,
    /// Who asked for it (token id, or `import`).
    pub requester: String,
    /// Where it came from.
    pub source: CertificateSource,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The CRL partition that lists it once revoked (0 when CRLs are not partitioned).
    #[serde(default)]
    pub crl_shard: i64,
}

/// Revocation facts of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationState {
    /// When certkeeper processed the revocation, Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code.
    pub reason: i64,
    /// When the key was compromised or the certificate became invalid, Unix seconds.
    pub invalidity_date: Option<i64>,
}

/// A revocation to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Inventory id of the certificate.
    pub certificate_id: i64,
    /// The requested state. If the certificate is already revoked, its first reason, time
    /// and invalidity date stand, unless this escalates to keyCompromise (reason 1), which
    /// replaces the reason and invalidity date (the revocation time stays).
    pub state: RevocationState,
}

/// A certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Inventory id.
    pub id: i64,
    /// Stored facts.
    #[serde(flatten)]
    pub certificate: NewCertificate,
    /// Status (with `expired` derived).
    pub status: CertificateStatus,
    /// Set once revoked.
    pub revocation: Option<RevocationState>,
    /// When it entered the inventory, Unix seconds.
    pub created_at: i64,
    /// Inventory id of the certificate that replaced this one (ACME ARI `replaces`).
    #[serde(default)]
    pub superseded_by: Option<i64>,
    /// Serial of that replacement.
    #[serde(default)]
    pub superseded_by_serial: Option<String>,
}

/// Result of an action, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by policy, profile, validation or authorisation.
    Denied,
    /// Failed for another reason.
    Failure,
}

impl Outcome {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who: a token id, `admin-bootstrap`, `cli`, `anonymous`.
    pub actor: String,
    /// What, such as `certificate.issue` or `token.create`.
    pub action: String,
    /// On what: a serial, token id, CA name.
    pub object: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Extra facts (never secrets).
    pub detail: serde_json::Value,
}

/// An audit entry as stored, with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub object: String,
    /// How it ended.
    pub outcome: String,
    /// Extra facts, JSON text.
    pub detail: String,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// Hash of this entry (covers every field above).
    pub hash: String,
}

/// An API token to create. Only the SHA-256 of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// Public id (part of the token string).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Role: admin, issuer or auditor.
    pub role: String,
    /// Tenant scope; `None` means every tenant.
    pub tenant: Option<String>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Who created it.
    pub created_by: String,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
}

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Stored facts.
    #[serde(flatten)]
    pub token: NewToken,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Revocation time, Unix seconds.
    pub revoked_at: Option<i64>,
}

/// One atomic, audited change. Everything in it commits together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Certificates to add.
    pub certificates: Vec<NewCertificate>,
    /// Skip (and report) certificates already in the inventory instead of failing.
    pub skip_duplicate_certificates: bool,
    /// Tokens to create.
    pub tokens: Vec<NewToken>,
    /// Token id to revoke (must exist and not be revoked yet).
    pub revoke_token: Option<String>,
    /// Settings to upsert.
    pub settings: Vec<(String, String)>,
    /// Certificates to revoke (idempotent; see [`Revocation`]).
    pub revocations: Vec<Revocation>,
    /// ACME objects to insert (version 1) or update (version n replaces n - 1).
    pub acme_objects: Vec<AcmeObject>,
    /// ACME nonces consumed by this change: (nonce id, expiry). A nonce used before fails
    /// the change with [`crate::StoreError::Conflict`].
    pub acme_nonces: Vec<(i64, i64)>,
    /// External account binding keys to create.
    pub eab_keys: Vec<NewEabKey>,
    /// Binds an external account binding key (kid) to an account; fails if already bound.
    pub bind_eab: Option<(String, String)>,
    /// Certificates (inventory ids) superseded by the first certificate this change inserts.
    pub supersede: Vec<i64>,
    /// Managed-certificate declarations to create or replace (apply).
    pub managed_declarations: Vec<ManagedDeclaration>,
    /// Outcomes of reconciler attempts (each releases its lease).
    pub managed_outcomes: Vec<ManagedOutcome>,
    /// Managed certificates to act on at once (`certkeeper renew`).
    pub managed_renew_now: Vec<String>,
    /// New next action times without an attempt (each releases its lease).
    pub managed_reschedules: Vec<ManagedReschedule>,
    /// Host agents and rollouts.
    pub fleet: Vec<crate::FleetWrite>,
    /// Scan results and alert silences.
    pub observe: Vec<crate::ObserveWrite>,
    /// Audit entries describing the change (or a denial, alone).
    pub audit: Vec<AuditEvent>,
}

/// Kinds of ACME objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcmeKind {
    /// An account.
    Account,
    /// An order.
    Order,
    /// An authorization with its challenges.
    Authz,
}

impl AcmeKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeKind::Account => "account",
            AcmeKind::Order => "order",
            AcmeKind::Authz => "authz",
        }
    }
}

/// An ACME account, order or authorization as stored: a JSON body plus look-up columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeObject {
    /// Unique id (also the last segment of its URL).
    pub id: String,
    /// What it is.
    pub kind: AcmeKind,
    /// The tenant whose directory it belongs to.
    pub tenant: String,
    /// The owning account (an account's own id for accounts).
    pub account_id: String,
    /// Look-up key: an account's JWK thumbprint, an authorization's identifier key, an
    /// order's replaced ARI certificate id (or empty).
    pub lookup: String,
    /// ACME status.
    pub status: String,
    /// Expiry, Unix seconds (0: none).
    pub expires_at: i64,
    /// 1 when created; each update increments it.
    pub version: i64,
    /// The object, JSON.
    pub body: String,
}

/// An external account binding key to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEabKey {
    /// Key id given to the ACME client (`--eab-kid`).
    pub kid: String,
    /// Tenant whose directory accepts it.
    pub tenant: String,
    /// The HMAC key, base64url.
    pub hmac_key: String,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds after which it cannot bind an account.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for NewEabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEabKey")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .field("hmac_key", &"<redacted>")
            .field("created_by", &self.created_by)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An external account binding key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabKeyRecord {
    /// What was created.
    pub key: NewEabKey,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// The account it bound, once used.
    pub account_id: Option<String>,
}

/// What a committed change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeOutcome {
    /// Inventory ids of the inserted certificates.
    pub inserted_certificate_ids: Vec<i64>,
    /// Fingerprints skipped as already present.
    pub duplicate_fingerprints: Vec<String>,
    /// Sequence numbers of the appended audit entries.
    pub audit_seqs: Vec<i64>,
    /// For each revocation: the certificate id and the state now stored.
    pub revocations: Vec<(i64, RevocationState)>,
}

/// Sort orders for certificate search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CertificateSort {
    /// Soonest expiry first.
    #[default]
    #[serde(rename = "not_after")]
    NotAfterAsc,
    /// Latest expiry first.
    #[serde(rename = "-not_after")]
    NotAfterDesc,
    /// Oldest in the inventory first.
    #[serde(rename = "created")]
    CreatedAsc,
    /// Newest in the inventory first.
    #[serde(rename = "-created")]
    CreatedDesc,
}

impl std::str::FromStr for CertificateSort {
    type Err = crate::StoreError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "not_after" => Ok(CertificateSort::NotAfterAsc),
            "-not_after" => Ok(CertificateSort::NotAfterDesc),
            "created" => Ok(CertificateSort::CreatedAsc),
            "-created" => Ok(CertificateSort::CreatedDesc),
            other => Err(crate::StoreError::InvalidQuery(format!(
                "unknown sort {other:?} (allowed: not_after, -not_after, created, -created)"
            ))),
        }
    }
}

/// A certificate search.
#[derive(Debug, Clone, Default)]
pub struct CertificateQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this status.
    pub status: Option<CertificateStatus>,
    /// Subject CN or a SAN contains this text (case-insensitive).
    pub name_contains: Option<String>,
    /// Only certificates still valid that expire within this many seconds.
    pub expiring_within_seconds: Option<i64>,
    /// Only certificates carrying this label name and value.
    pub label: Option<(String, String)>,
    /// Only this serial (hex).
    pub serial: Option<String>,
    /// Order.
    pub sort: CertificateSort,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// "Now", Unix seconds, for expiry filters.
    pub now: i64,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// A managed certificate's declaration, as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedDeclaration {
    /// Unique name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// The declaration, JSON.
    pub spec: String,
    /// When the reconciler should look at it (now, for a new or changed declaration).
    pub next_action_at: i64,
}

/// A managed certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedRecord {
    /// Unique name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// The declaration, JSON.
    pub spec: String,
    /// `pending` (never issued), `ready` or `failing`.
    pub state: String,
    /// Serial of the certificate in force.
    pub current_serial: Option<String>,
    /// Its notAfter, Unix seconds.
    pub not_after: Option<i64>,
    /// When the reconciler acts next, Unix seconds.
    pub next_action_at: i64,
    /// Why then.
    pub next_action_reason: String,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Each target's state, JSON.
    pub targets: String,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Last changed, Unix seconds.
    pub updated_at: i64,
    /// The sealed private key kept across renewals (`key.rotate = false`).
    pub key_sealed: Option<String>,
    /// When a key compromise was declared and not yet answered (Unix milliseconds).
    pub compromised_at: Option<i64>,
    /// What agents outside a running rollout serve.
    pub fleet_serial: Option<String>,
}

/// What one reconciler attempt ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedOutcome {
    /// The managed certificate.
    pub name: String,
    /// New state.
    pub state: String,
    /// Serial in force afterwards.
    pub current_serial: Option<String>,
    /// Its notAfter.
    pub not_after: Option<i64>,
    /// Next action time.
    pub next_action_at: i64,
    /// Why then.
    pub next_action_reason: String,
    /// Failures since the last success.
    pub consecutive_failures: i64,
    /// Each target's state, JSON.
    pub targets: String,
    /// The attempt, for the record.
    pub attempt: RenewalAttempt,
    /// The sealed key kept for the next renewal (`key.rotate = false`), or none.
    pub key_sealed: Option<String>,
    /// The compromise declaration the attempt saw when it was claimed. A newer one (declared
    /// during the attempt) wins over the outcome: renewal at once, no kept key.
    pub compromise_seen: Option<i64>,
    /// The attempt answered the compromise it saw (a new certificate was obtained).
    pub compromise_answered: bool,
}

/// Next action reasons a person set (a renewal requested, a declaration new or changed): the
/// reconciler acts at once, and a [`ManagedReschedule`] racing with one keeps it.
pub const REQUESTED_REASONS: [&str; 4] = [
    "renewal requested",
    "declaration changed",
    "declared",
    crate::COMPROMISE_REASON,
];

/// A new next action time without an attempt (such as after an ARI check that found the
/// renewal window still ahead); releases the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedReschedule {
    /// The managed certificate.
    pub name: String,
    /// Next action time.
    pub next_action_at: i64,
    /// Why then.
    pub next_action_reason: String,
}

/// One renewal attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalAttempt {
    /// The managed certificate.
    pub managed_name: String,
    /// Start, Unix seconds.
    pub started_at: i64,
    /// Duration in milliseconds.
    pub duration_ms: i64,
    /// Issuer asked.
    pub issuer: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// What went wrong.
    pub error: Option<String>,
    /// Serial obtained.
    pub serial: Option<String>,
}
