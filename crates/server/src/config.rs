//! The TOML configuration file: every setting has a default, so an empty file is valid.

use std::net::SocketAddr;
use std::path::PathBuf;

use certkeeper_pki::{
    ExtendedKeyUsage, KeyAlgorithm, KeyKind, KeyUsage, Profile, SanKind, builtin_profiles,
};
use certkeeper_policy::{Policy, RuleConfig};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ServerError;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where certkeeper keeps its database, CA and TLS files (default `./certkeeper-data`).
    pub data_dir: Option<PathBuf>,
    /// `sqlite://...` or `postgres://...`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// The audit chain's HMAC key (default `<data_dir>/audit.key`); servers sharing a
    /// database must share this file.
    pub audit_key_file: Option<PathBuf>,
    /// Listeners and URLs.
    #[serde(default)]
    pub server: ServerSection,
    /// The CA created on first start (or by `certkeeper init`).
    #[serde(default)]
    pub ca: CaSection,
    /// Certificate revocation lists.
    #[serde(default)]
    pub crl: CrlSection,
    /// Custom profiles, in addition to tls-server, tls-client and mtls.
    #[serde(default, rename = "profile")]
    pub profiles: Vec<ProfileConfig>,
    /// Policy rules; without any, every request within the profiles is allowed.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// The ACME server.
    #[serde(default)]
    pub acme: AcmeSection,
    /// Managed certificates: the reconciler that renews and deploys them.
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    /// External ACME issuers managed certificates can name (`issuer = "<name>"`).
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    /// Host agents: their mTLS listener, identities and rollouts.
    #[serde(default)]
    pub agents: AgentsSection,
    /// What `/metrics` reports per managed certificate, and what counts as a key-use anomaly.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Built-in alerting: rules, grouping, receivers.
    #[serde(default)]
    pub alerting: AlertingSection,
    /// Scheduled scans of TLS endpoints (they feed M1, the valid ratio).
    #[serde(default, rename = "scan")]
    pub scans: Vec<ScanJobConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Most managed certificates given their own expiry and readiness series, the soonest to
    /// expire first (default 1000; the rest are only counted), so that series stay bounded.
    pub managed_certificate_series: usize,
    /// Uses of a CA key by one principal kind within a minute above which each further use
    /// counts as an anomaly (default 6000).
    pub key_use_rate_per_minute: u64,
    /// Principal kinds expected to use the issuing key (default: api, acme, reconciler,
    /// agent); a use by another counts as an anomaly.
    pub expected_key_principals: Vec<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            managed_certificate_series: 1000,
            key_use_rate_per_minute: 6000,
            expected_key_principals: ["api", "acme", "reconciler", "agent"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `[alerting]`: built-in rules evaluated every `interval`, notifications grouped and sent to
/// the receivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingSection {
    /// Evaluate the rules (default true; without receivers alerts are only shown).
    pub enabled: bool,
    /// How often the rules are evaluated, such as "30s".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub interval: u64,
    /// A managed certificate failing to renew and expiring within this pages (default 14d).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub expiring_within: u64,
    /// Consecutive failed renewals that open a ticket (default 3).
    pub renewal_failures: i64,
    /// A root or issuing CA certificate expiring within this pages (default 30d).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub ca_expiring_within: u64,
    /// The OCSP signer certificate expiring within this pages (default 7d; it lives 30 days
    /// and is replaced with 10 left, so this means its replacement failed).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub ocsp_signer_expiring_within: u64,
    /// Labels that group alerts into one notification (default ["owner"]).
    pub group_by: Vec<String>,
    /// How long a new group waits before its first notification, so that alerts starting
    /// together are sent together (default 30s).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub group_wait: u64,
    /// A group still firing is notified again after this (default 4h).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub repeat_interval: u64,
    /// Further tries of a failed delivery (default 3), with doubling waits from one second.
    pub retries: u32,
    /// Where notifications go.
    #[serde(rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
}

impl Default for AlertingSection {
    fn default() -> Self {
        AlertingSection {
            enabled: true,
            interval: 30,
            expiring_within: 14 * DAY,
            renewal_failures: 3,
            ca_expiring_within: 30 * DAY,
            ocsp_signer_expiring_within: 7 * DAY,
            group_by: vec!["owner".into()],
            group_wait: 30,
            repeat_interval: 4 * 3600,
            retries: 3,
            receivers: Vec::new(),
        }
    }
}

/// How a receiver wants its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// JSON: status, group labels and every alert with its labels.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
}

/// `[[alerting.receiver]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name, in logs and metrics.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: ReceiverKind,
    /// Where to POST.
    pub url: String,
    /// Severities it receives (default both: page and ticket).
    #[serde(default = "all_severities")]
    pub severities: Vec<certkeeper_lifecycle::Severity>,
}

fn all_severities() -> Vec<certkeeper_lifecycle::Severity> {
    vec![
        certkeeper_lifecycle::Severity::Page,
        certkeeper_lifecycle::Severity::Ticket,
    ]
}

/// `[[scan]]`: endpoints the server scans on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanJobConfig {
    /// Name, recorded as the scanner.
    pub name: String,
    /// `host:port`, `host` or CIDR ranges.
    pub targets: Vec<String>,
    /// Ports for targets without one (default [443]).
    #[serde(default = "default_scan_ports")]
    pub ports: Vec<u16>,
    /// How often, such as "1h" (default 1h).
    #[serde(
        default = "default_scan_interval",
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub interval: u64,
    /// Tenant that owns the results (default "default").
    #[serde(default = "default_scan_tenant")]
    pub tenant: String,
    /// Trusted roots, PEM (default: this certkeeper's root and the system bundle).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Report certificates expiring within this (default 30d).
    #[serde(
        default = "default_warn_within",
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub warn_within: u64,
    /// Endpoints probed at once (default 32).
    #[serde(default = "default_scan_concurrency")]
    pub concurrency: usize,
}

fn default_scan_ports() -> Vec<u16> {
    vec![443]
}
fn default_scan_interval() -> u64 {
    3600
}
fn default_scan_tenant() -> String {
    "default".into()
}
fn default_warn_within() -> u64 {
    30 * DAY
}
fn default_scan_concurrency() -> usize {
    32
}

/// `[agents]`: the listener host agents enroll and sync on (mutual TLS), their identities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsSection {
    /// Run the agent listener (default true).
    pub enabled: bool,
    /// HTTPS listener for agents, client certificates required after enrollment
    /// (default 127.0.0.1:8444).
    pub listen: SocketAddr,
    /// Lifetime of an agent's identity certificate, such as "24h"; agents renew at two thirds.
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub identity_lifetime: u64,
    /// Longest lifetime of a bootstrap token, such as "24h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub bootstrap_token_max_ttl: u64,
    /// How long a sync request waits for news before answering, such as "25s".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub sync_wait: u64,
}

impl Default for AgentsSection {
    fn default() -> Self {
        AgentsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            identity_lifetime: 24 * 3600,
            bootstrap_token_max_ttl: 24 * 3600,
            sync_wait: 25,
        }
    }
}

/// `[[issuer]]`: an external ACME CA (Let's Encrypt, ZeroSSL, another certkeeper, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Name managed certificates use (`internal` is this certkeeper's CA).
    pub name: String,
    /// The ACME directory URL.
    pub directory: String,
    /// CA certificate (PEM) to trust for the directory's TLS (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Account contact, such as "mailto:pki@example.com".
    #[serde(default)]
    pub contact: Option<String>,
    /// External account binding key id.
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// External account binding HMAC key (base64url).
    #[serde(default)]
    pub eab_hmac_key: Option<String>,
    /// `http-01` (answered at `http01_listen` or written under `http01_webroot`) or `dns-01`
    /// (through `[issuer.rfc2136]` or `dns01_hook`).
    #[serde(default = "default_challenge")]
    pub challenge: String,
    /// Where certkeeper answers http-01 challenges, such as "0.0.0.0:80".
    #[serde(default)]
    pub http01_listen: Option<SocketAddr>,
    /// The document root of the web server that serves the names: http-01 answers are written
    /// to `<webroot>/.well-known/acme-challenge/<token>` and removed afterwards.
    #[serde(default)]
    pub http01_webroot: Option<PathBuf>,
    /// Command called as `<hook> present|cleanup <record name> <value>` for dns-01.
    #[serde(default)]
    pub dns01_hook: Option<String>,
    /// dns-01 records through RFC 2136 dynamic updates signed with TSIG.
    #[serde(default)]
    pub rfc2136: Option<Rfc2136Config>,
    /// ACME profile to ask for (when the CA offers profiles).
    #[serde(default)]
    pub profile: Option<String>,
    /// Attempts against this CA at once, whatever `[lifecycle] concurrency` allows (default 4).
    #[serde(default = "default_issuer_concurrency")]
    pub concurrency: usize,
}

fn default_issuer_concurrency() -> usize {
    4
}

/// `[issuer.rfc2136]`: the authoritative DNS server that takes dynamic updates for dns-01.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The primary server, such as "192.0.2.53:53" (updates go over TCP).
    pub server: SocketAddr,
    /// The zone the `_acme-challenge` records are updated in, such as "example.com".
    pub zone: String,
    /// TSIG key name, as the server knows it.
    pub key_name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub key_algorithm: String,
    /// TSIG secret, base64 (as `tsig-keygen` prints it).
    pub key_secret: String,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

fn default_challenge() -> String {
    "http-01".into()
}

/// `[lifecycle]`: the reconciler of managed certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// Run the reconciler (default true).
    pub enabled: bool,
    /// Attempts running at once, over all issuers.
    pub concurrency: usize,
    /// Attempts against the internal CA at once (each `[[issuer]]` has its own `concurrency`).
    pub internal_concurrency: usize,
    /// How often due work is looked for, in milliseconds.
    pub tick_ms: u64,
    /// How long a claimed attempt is this server's before another may take it over, such as "5m".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub lease: u64,
    /// Wait after the first failed attempt, doubling after each further one, such as "1m".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub backoff_base: u64,
    /// Shortest wait between two checks of an issuer's renewal information (ARI), whatever
    /// its `Retry-After` says, such as "1m" (RFC 9773 §4.3.2's example).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub ari_poll_min: u64,
    /// Longest wait between attempts, such as "6h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub backoff_cap: u64,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection {
            enabled: true,
            concurrency: 8,
            internal_concurrency: 8,
            tick_ms: 1000,
            lease: 300,
            backoff_base: 60,
            backoff_cap: 6 * 3600,
            ari_poll_min: 60,
        }
    }
}

/// `[acme]`: the ACME server (RFC 8555) on the HTTPS listener, one directory per tenant at
/// `/acme/<tenant>/directory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSection {
    /// Serve ACME at all (default true).
    pub enabled: bool,
    /// URL of the HTTPS listener as clients reach it (default: from each request's Host).
    pub base_url: Option<String>,
    /// `meta.termsOfService` in the directory.
    pub terms_of_service: Option<String>,
    /// `meta.website` in the directory.
    pub website: Option<String>,
    /// CAA issuer domains that authorise this CA (RFC 8659); `meta.caaIdentities`.
    pub caa_identities: Vec<String>,
    /// Check CAA records before an authorization becomes valid (default true).
    pub check_caa: bool,
    /// Profiles offered in the directory (default: every profile).
    pub profiles: Vec<String>,
    /// Profile of orders that name none (default tls-server).
    pub default_profile: String,
    /// How long an order stays open, such as "24h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub order_lifetime: u64,
    /// How long a valid authorization is reused for new orders of the same account.
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub authz_reuse: u64,
    /// DNS server used for validation look-ups (A, AAAA, TXT, CAA), such as "127.0.0.1:53";
    /// default: the system's resolvers.
    pub dns_resolver: Option<SocketAddr>,
    /// Port http-01 validation connects to (RFC 8555: 80).
    pub http01_port: u16,
    /// Port tls-alpn-01 validation connects to (RFC 8737: 443).
    pub tlsalpn01_port: u16,
    /// Timeout of one validation attempt, such as "10s".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub validation_timeout: u64,
    /// Attempts per validation (connection and DNS errors are retried).
    pub validation_attempts: u32,
    /// Validations running at once.
    pub max_concurrent_validations: usize,
    /// Rate limits.
    pub rate_limits: AcmeRateLimits,
    /// How long clients should wait before asking for renewal information again (the
    /// `Retry-After` of renewalInfo, RFC 9773 §4.3), such as "6h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub ari_retry_after: u64,
    /// Tenants with their own directory (the `default` tenant always has one).
    #[serde(rename = "tenant")]
    pub tenants: Vec<AcmeTenant>,
}

impl Default for AcmeSection {
    fn default() -> Self {
        AcmeSection {
            enabled: true,
            base_url: None,
            terms_of_service: None,
            website: None,
            caa_identities: Vec::new(),
            check_caa: true,
            profiles: Vec::new(),
            default_profile: "tls-server".into(),
            order_lifetime: DAY,
            authz_reuse: DAY,
            dns_resolver: None,
            http01_port: 80,
            tlsalpn01_port: 443,
            validation_timeout: 10,
            validation_attempts: 2,
            max_concurrent_validations: 64,
            rate_limits: AcmeRateLimits::default(),
            ari_retry_after: 6 * 3600,
            tenants: Vec::new(),
        }
    }
}

/// `[acme.rate_limits]`: counted per window; exceeding one answers `rateLimited` with
/// Retry-After.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeRateLimits {
    /// Length of a window, such as "1h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub window: u64,
    /// New orders per account and window.
    pub orders_per_account: u64,
    /// New orders per tenant and window.
    pub orders_per_tenant: u64,
    /// New orders naming one identifier per window.
    pub orders_per_name: u64,
    /// Failed validations per identifier and window; beyond it new orders for it are refused.
    pub failed_validations_per_name: u64,
}

impl Default for AcmeRateLimits {
    fn default() -> Self {
        AcmeRateLimits {
            window: 3_600,
            orders_per_account: 100_000,
            orders_per_tenant: 1_000_000,
            orders_per_name: 1_000,
            failed_validations_per_name: 50,
        }
    }
}

/// `[[acme.tenant]]`: a tenant's ACME directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeTenant {
    /// Tenant name (its directory is `/acme/<name>/directory`).
    pub name: String,
    /// Accounts must be bound to an external account binding key of this tenant.
    #[serde(default)]
    pub require_eab: bool,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// HTTPS listener for the API (default 127.0.0.1:8443).
    pub listen: SocketAddr,
    /// Plain-HTTP listener for relying parties: CA certificates, CRLs, OCSP (default 127.0.0.1:8080).
    pub http_listen: SocketAddr,
    /// Base URL written into certificates' AIA and CRL distribution points
    /// (default `http://` + http_listen). Relying parties fetch these over plain HTTP.
    pub public_base_url: Option<String>,
    /// Largest request body accepted, in bytes (default 65536).
    pub max_body_bytes: usize,
    /// Extra DNS names for the server's own TLS certificate.
    pub tls_names: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            max_body_bytes: 64 * 1024,
            tls_names: Vec::new(),
        }
    }
}

impl ServerSection {
    /// The public base URL, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.public_base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.http_listen),
        }
    }
}

/// `[ca]`: how the CA hierarchy is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSection {
    /// Key algorithm for root and intermediate.
    pub key_algorithm: KeyAlgorithm,
    /// Root commonName.
    pub root_common_name: String,
    /// Intermediate commonName.
    pub intermediate_common_name: String,
    /// organizationName for both.
    pub organization: Option<String>,
    /// countryName for both.
    pub country: Option<String>,
    /// Root lifetime, such as "10y".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub root_lifetime: u64,
    /// Intermediate lifetime, such as "5y".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub intermediate_lifetime: u64,
}

impl Default for CaSection {
    fn default() -> Self {
        CaSection {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            root_common_name: "certkeeper Root CA".into(),
            intermediate_common_name: "certkeeper Intermediate CA".into(),
            organization: Some("certkeeper".into()),
            country: None,
            root_lifetime: 10 * YEAR,
            intermediate_lifetime: 5 * YEAR,
        }
    }
}

/// `[crl]`: how CRLs are partitioned, how long they are valid and how often they are rebuilt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlSection {
    /// Number of CRL partitions (1 = one full CRL). Each certificate's CRL distribution point
    /// names its partition.
    pub shards: u32,
    /// nextUpdate - thisUpdate, such as "24h" (at most 10 days, BR 4.9.7).
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub validity: u64,
    /// How often CRLs are rebuilt even without revocations, such as "1h".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub refresh: u64,
    /// How long after a revocation the CRLs are rebuilt (revocations in between share one rebuild), in milliseconds.
    pub debounce_ms: u64,
}

impl Default for CrlSection {
    fn default() -> Self {
        CrlSection {
            shards: 1,
            validity: DAY,
            refresh: 3_600,
            debounce_ms: 1_000,
        }
    }
}

const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;

/// `[[profile]]`: a custom profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Name used in requests.
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Lifetime when a request names none, such as "30d".
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub default_validity: u64,
    /// Longest lifetime allowed.
    #[serde(
        deserialize_with = "duration_seconds",
        serialize_with = "serialize_seconds"
    )]
    pub max_validity: u64,
    /// Allowed key kinds: ecdsa-p256, ecdsa-p384, rsa, ed25519.
    pub key_algorithms: Vec<KeyKind>,
    /// Smallest RSA modulus (default 2048).
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: u32,
    /// keyUsage: digital-signature, key-encipherment, key-agreement, content-commitment.
    pub key_usage: Vec<KeyUsage>,
    /// extendedKeyUsage: server-auth, client-auth, code-signing, email-protection, time-stamping.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// Allowed SAN kinds: dns, ip, uri, email.
    pub san_kinds: Vec<SanKind>,
}

fn default_min_rsa_bits() -> u32 {
    2048
}

/// Parses "90d", "12h", "30m", "45s", "1y" or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration; write a number with a unit, such as 90d, 12h or 30m")
    })?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => DAY,
        "y" => YEAR,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (allowed: s, m, h, d, y)"
            ));
        }
    };
    match number.checked_mul(factor) {
        Some(seconds) if seconds <= MAX_DURATION => Ok(seconds),
        _ => Err(format!("duration {text:?} is too large (at most 100y)")),
    }
}

/// Longest duration accepted anywhere: 100 years.
const MAX_DURATION: u64 = 100 * YEAR;

/// Checks a public base URL: plain http, ASCII, no spaces (it goes into IA5String URIs).
pub fn validate_base_url(url: &str) -> Result<(), ServerError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ServerError::Config(format!(
            "server.public_base_url {url:?} must start with http:// (relying parties fetch CRLs and OCSP over plain HTTP)"
        ))
    })?;
    if rest.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServerError::Config(format!(
            "server.public_base_url {url:?} must be an ASCII URL with a host and no spaces (use the punycode form of international names)"
        )));
    }
    Ok(())
}

fn duration_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(seconds),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn serialize_seconds<S: serde::Serializer>(
    seconds: &u64,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{seconds}s"))
}

/// A configuration that parsed and whose parts were checked.
#[derive(Debug)]
pub struct CheckedConfig {
    /// The raw configuration.
    pub config: Config,
    /// Built-in and custom profiles.
    pub profiles: Vec<Profile>,
    /// The compiled policy.
    pub policy: Policy,
}

impl Config {
    /// Parses TOML text; errors carry the line, column and key.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ServerError> {
        toml::from_str(text).map_err(|e| {
            let position = e.span().map(|span| line_and_column(text, span.start));
            let message = e.message().to_string();
            let key = e.span().and_then(|span| key_at(text, span.start));
            ServerError::Config(match position {
                Some((line, column)) => format!(
                    "{origin}:{line}:{column}: {message}{}",
                    key.map(|k| format!(" (key `{k}`)")).unwrap_or_default()
                ),
                None => format!("{origin}: {message}"),
            })
        })
    }

    /// Loads and checks a file.
    pub fn load(path: &std::path::Path) -> Result<CheckedConfig, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())?.check(&text, &path.display().to_string())
    }

    /// Checks profiles and policy; errors name the key (and line where it can be found).
    pub fn check(self, text: &str, origin: &str) -> Result<CheckedConfig, ServerError> {
        let located = |needle: &str, message: String| {
            let line = text.lines().position(|l| l.contains(needle)).map(|i| i + 1);
            ServerError::Config(match line {
                Some(line) => format!("{origin}:{line}: {message}"),
                None => format!("{origin}: {message}"),
            })
        };
        let mut profiles = builtin_profiles();
        for (index, custom) in self.profiles.iter().enumerate() {
            let at = format!("name = \"{}\"", custom.name);
            let key = format!("profile[{index}]");
            if custom.name.is_empty()
                || !custom
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(located(
                    &at,
                    format!(
                        "{key}.name {:?} must be letters, digits, '-' or '_'",
                        custom.name
                    ),
                ));
            }
            if profiles.iter().any(|p| p.name == custom.name) {
                return Err(located(
                    &at,
                    format!(
                        "{key}.name {:?} is already defined (built-in: tls-server, tls-client, mtls)",
                        custom.name
                    ),
                ));
            }
            if custom.default_validity == 0 || custom.default_validity > custom.max_validity {
                return Err(located(
                    &at,
                    format!("{key}: default_validity must be above zero and at most max_validity"),
                ));
            }
            if custom.key_algorithms.is_empty()
                || custom.san_kinds.is_empty()
                || custom.key_usage.is_empty()
            {
                return Err(located(
                    &at,
                    format!(
                        "{key}: key_algorithms, key_usage and san_kinds must each list at least one value"
                    ),
                ));
            }
            profiles.push(Profile {
                name: custom.name.clone(),
                description: custom.description.clone(),
                default_validity_seconds: custom.default_validity,
                max_validity_seconds: custom.max_validity,
                key_kinds: custom.key_algorithms.clone(),
                min_rsa_bits: custom.min_rsa_bits.max(2048),
                key_usage: custom.key_usage.clone(),
                extended_key_usage: custom.extended_key_usage.clone(),
                san_kinds: custom.san_kinds.clone(),
                cabf_server: false,
            });
        }
        if let Some(url) = &self.server.public_base_url
            && let Err(error) = validate_base_url(url)
        {
            let message = error.to_string();
            return Err(located(
                "public_base_url",
                message.trim_start_matches("configuration: ").to_string(),
            ));
        }
        let acme = &self.acme;
        for name in acme
            .profiles
            .iter()
            .chain(std::iter::once(&acme.default_profile))
        {
            if !profiles.iter().any(|p| &p.name == name) {
                return Err(located(
                    "profile",
                    format!("acme: profile {name:?} is not defined (define it with [[profile]])"),
                ));
            }
        }
        if !acme.profiles.is_empty() && !acme.profiles.contains(&acme.default_profile) {
            return Err(located(
                "default_profile",
                format!(
                    "acme.default_profile {:?} must be one of acme.profiles",
                    acme.default_profile
                ),
            ));
        }
        for tenant in &acme.tenants {
            crate::Tenant::validate(&tenant.name).map_err(|p| {
                located(
                    &format!("name = \"{}\"", tenant.name),
                    format!("acme.tenant: {}", p.detail),
                )
            })?;
        }
        if let Some(url) = &acme.base_url
            && (!url.starts_with("https://") || !url.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(located(
                "base_url",
                format!("acme.base_url {url:?} must be an https:// URL without spaces"),
            ));
        }
        if acme.validation_timeout == 0
            || acme.validation_attempts == 0
            || acme.max_concurrent_validations == 0
            || acme.rate_limits.window == 0
        {
            return Err(located(
                "[acme",
                "acme: validation_timeout, validation_attempts, max_concurrent_validations and rate_limits.window must be above zero".into(),
            ));
        }
        for issuer in &self.issuers {
            let at = format!("name = \"{}\"", issuer.name);
            if issuer.name == "internal" || issuer.name.is_empty() {
                return Err(located(
                    &at,
                    "issuer.name must be set and must not be \"internal\" (the built-in CA)".into(),
                ));
            }
            match issuer.challenge.as_str() {
                "http-01" if issuer.http01_listen.is_none() == issuer.http01_webroot.is_none() => {
                    return Err(located(
                        &at,
                        format!(
                            "issuer {:?}: http-01 needs one of http01_listen (where certkeeper answers challenges) or http01_webroot (where your web server serves them from)",
                            issuer.name
                        ),
                    ));
                }
                "dns-01" if issuer.dns01_hook.is_none() == issuer.rfc2136.is_none() => {
                    return Err(located(
                        &at,
                        format!(
                            "issuer {:?}: dns-01 needs one of [issuer.rfc2136] (dynamic DNS updates) or dns01_hook",
                            issuer.name
                        ),
                    ));
                }
                "http-01" | "dns-01" => {}
                other => {
                    return Err(located(
                        &at,
                        format!(
                            "issuer {:?}: challenge {other:?} is not one of http-01, dns-01",
                            issuer.name
                        ),
                    ));
                }
            }
            if let Some(rfc2136) = &issuer.rfc2136
                && let Err(problem) = crate::rfc2136::check(rfc2136)
            {
                return Err(located(&at, format!("issuer {:?}: {problem}", issuer.name)));
            }
            if issuer.concurrency == 0 {
                return Err(located(
                    &at,
                    format!("issuer {:?}: concurrency must be above zero", issuer.name),
                ));
            }
            if issuer.eab_kid.is_some() != issuer.eab_hmac_key.is_some() {
                return Err(located(
                    &at,
                    format!(
                        "issuer {:?}: set both eab_kid and eab_hmac_key, or neither",
                        issuer.name
                    ),
                ));
            }
        }
        let crl = &self.crl;
        if !(1..=1024).contains(&crl.shards) {
            return Err(located(
                "shards",
                format!("crl.shards is {}; use 1 to 1024", crl.shards),
            ));
        }
        if crl.validity == 0 || crl.validity > 10 * DAY {
            return Err(located(
                "validity",
                "crl.validity must be above zero and at most 10d (BR 4.9.7)".into(),
            ));
        }
        if crl.refresh == 0 || crl.refresh >= crl.validity {
            return Err(located(
                "refresh",
                "crl.refresh must be above zero and shorter than crl.validity".into(),
            ));
        }
        let alerting = &self.alerting;
        if alerting.interval == 0 || alerting.repeat_interval == 0 {
            return Err(located(
                "interval",
                "alerting.interval and alerting.repeat_interval must be above zero".into(),
            ));
        }
        if alerting.renewal_failures < 1 {
            return Err(located(
                "renewal_failures",
                "alerting.renewal_failures must be at least 1".into(),
            ));
        }
        for receiver in &alerting.receivers {
            if !(receiver.url.starts_with("http://") || receiver.url.starts_with("https://"))
                || receiver.url.parse::<reqwest::Url>().is_err()
            {
                return Err(located(
                    &receiver.url,
                    format!(
                        "alerting.receiver {:?}: url {:?} must be an http:// or https:// URL",
                        receiver.name, receiver.url
                    ),
                ));
            }
            if receiver.severities.is_empty() {
                return Err(located(
                    &format!("name = \"{}\"", receiver.name),
                    format!(
                        "alerting.receiver {:?}: severities must list page, ticket or both",
                        receiver.name
                    ),
                ));
            }
        }
        for job in &self.scans {
            let at = format!("name = \"{}\"", job.name);
            crate::scan::expand_targets(&job.targets, &job.ports)
                .map_err(|e| located(&at, format!("scan {:?}: {e}", job.name)))?;
            if job.interval < 10 || job.concurrency == 0 {
                return Err(located(
                    &at,
                    format!(
                        "scan {:?}: interval must be at least 10s and concurrency at least 1",
                        job.name
                    ),
                ));
            }
            crate::Tenant::validate(&job.tenant)
                .map_err(|p| located(&at, format!("scan {:?}: {}", job.name, p.detail)))?;
        }
        let policy = if self.rules.is_empty() {
            Policy::permissive_default()
        } else {
            Policy::new(self.rules.clone()).map_err(|e| {
                let needle = self
                    .rules
                    .iter()
                    .find(|r| e.to_string().contains(&format!("\"{}\"", r.name)))
                    .map(|r| format!("name = \"{}\"", r.name))
                    .unwrap_or_else(|| "[[rule]]".into());
                located(&needle, format!("rule: {e}"))
            })?
        };
        Ok(CheckedConfig {
            config: self,
            profiles,
            policy,
        })
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The key written at the start of the line containing `offset`, if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_settings_that_cannot_work_are_refused_at_start() {
        let issuer = "[[issuer]]\nname = \"ca\"\ndirectory = \"https://ca.example/dir\"\n";
        let cases = [
            ("challenge = \"http-01\"\n", "http01_listen"),
            (
                "challenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:80\"\nhttp01_webroot = \"/var/www\"\n",
                "one of http01_listen",
            ),
            ("challenge = \"dns-01\"\n", "dns01_hook"),
            (
                "challenge = \"dns-01\"\n[issuer.rfc2136]\nserver = \"127.0.0.1:53\"\nzone = \"example.com\"\nkey_name = \"k\"\nkey_secret = \"not base64!\"\n",
                "key_secret is not base64",
            ),
            (
                "challenge = \"dns-01\"\n[issuer.rfc2136]\nserver = \"127.0.0.1:53\"\nzone = \"example.com\"\nkey_name = \"k\"\nkey_algorithm = \"hmac-md5\"\nkey_secret = \"c2VjcmV0\"\n",
                "hmac-sha256",
            ),
            (
                "http01_listen = \"127.0.0.1:80\"\nconcurrency = 0\n",
                "concurrency",
            ),
        ];
        for (rest, expected) in cases {
            let text = format!("{issuer}{rest}");
            let err = Config::parse(&text, "c.toml")
                .and_then(|c| c.check(&text, "c.toml"))
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"))
                .to_string();
            assert!(err.contains(expected), "{text}\n{err}");
        }
        let good = format!(
            "{issuer}challenge = \"dns-01\"\n[issuer.rfc2136]\nserver = \"127.0.0.1:53\"\nzone = \"example.com\"\nkey_name = \"k\"\nkey_secret = \"c2VjcmV0\"\n"
        );
        Config::parse(&good, "c.toml")
            .unwrap()
            .check(&good, "c.toml")
            .unwrap();
    }

    #[test]
    fn empty_file_is_valid() {
        let checked = Config::parse("", "x").unwrap().check("", "x").unwrap();
        assert_eq!(checked.profiles.len(), 3);
        assert_eq!(checked.config.server.listen.port(), 8443);
    }

    #[test]
    fn errors_name_line_and_key() {
        let text = "[server]\nlisten = \"127.0.0.1:9443\"\nlisen = \"x\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert!(err.contains("c.toml:3:1"), "{err}");
        assert!(err.contains("unknown field `lisen`"), "{err}");

        let text = "[ca]\nkey_algorithm = \"rsa-1024\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert!(err.contains("c.toml:2:"), "{err}");
        assert!(err.contains("ecdsa-p256"), "lists what is allowed: {err}");

        let text = "[ca]\nroot_lifetime = \"10 weeks\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert!(
            err.contains("c.toml:2:") && err.contains("duration"),
            "{err}"
        );
    }

    #[test]
    fn bad_policy_rules_are_located() {
        let text = "[[rule]]\nname = \"web\"\nallow_dns = [\"exa mple.com\"]\n";
        let err = Config::parse(text, "c.toml")
            .unwrap()
            .check(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("configuration: c.toml:2:"), "{err}");
        assert!(err.contains("exa mple.com"), "{err}");
    }

    #[test]
    fn custom_profiles_are_checked() {
        let text = "[[profile]]\nname = \"iot\"\ndefault_validity = \"30d\"\nmax_validity = \"1y\"\nkey_algorithms = [\"ecdsa-p256\"]\nkey_usage = [\"digital-signature\"]\nextended_key_usage = [\"client-auth\"]\nsan_kinds = [\"uri\"]\n";
        let checked = Config::parse(text, "c").unwrap().check(text, "c").unwrap();
        let iot = checked.profiles.iter().find(|p| p.name == "iot").unwrap();
        assert_eq!(iot.max_validity_seconds, 365 * 86_400);
        let dup = text.replace("\"iot\"", "\"mtls\"");
        let err = Config::parse(&dup, "c")
            .unwrap()
            .check(&dup, "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already defined"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("").is_err());
    }
}
