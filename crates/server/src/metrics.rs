//! `/metrics` in the OpenMetrics text format (prometheus-client). Counts that live in the
//! database (certificates by status and expiry, managed certificates, agents, rollouts,
//! targets and scan findings) and the state of CRLs, OCSP and the CA are read at each scrape;
//! what happens in this process (renewals, issuance latency, validations, key uses,
//! notifications, times to replace after a compromise) is counted as it happens. Labels are
//! bounded: states, issuers, profiles, protocols, fixed expiry windows, CRL names — nothing per
//! serial; per managed certificate only for the `[metrics] managed_certificate_series`
//! expiring soonest.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use certkeeper_store::Grouping;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::SharedState;
use crate::api::authorize;
use crate::auth::Permission;
use crate::problem::Problem;

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A renewal attempt's issuer and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    /// `internal` or an `[[issuer]]` name (configured, so bounded).
    pub issuer: String,
    /// `success` or `failure`.
    pub outcome: String,
}

/// An issuer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabel {
    /// `internal` or an `[[issuer]]` name.
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabel {
    within: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabel {
    ca: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// How a certificate was asked for, and under which profile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuanceLabels {
    /// `rest`, `acme`, `reconciler` or `agent`.
    pub protocol: String,
    /// Profile name (configured, so bounded).
    pub profile: String,
}

/// An ACME challenge validation's type and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    /// `http-01`, `dns-01` or `tls-alpn-01`.
    pub challenge: String,
    /// `valid` or `invalid`.
    pub outcome: String,
}

/// A use of a CA key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyUseLabels {
    /// `issuing` (the issuing CA key) or `ocsp` (the delegated responder key).
    pub key: String,
    /// `api`, `acme`, `reconciler`, `agent`, `crl` or `ocsp`.
    pub principal: String,
}

/// A key-access anomaly (M6).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    /// The key.
    pub key: String,
    /// `unexpected_principal` or `rate`.
    pub reason: String,
}

/// A notification delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Receiver name (configured).
    pub receiver: String,
    /// `delivered`, `retried` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ManagedLabels {
    name: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    kind: String,
    valid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabel {
    finding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    severity: String,
}

fn renewal_histogram() -> Histogram {
    // 50 ms .. ~100 s.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

fn fast_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What this process counts as it happens.
pub struct Metrics {
    /// Renewal attempts by issuer and outcome (M2: successes ÷ all).
    pub renewal_attempts: Family<RenewalLabels, Counter>,
    /// Duration of renewal attempts that obtained a certificate, by issuer.
    pub renewal_seconds: Family<IssuerLabel, Histogram, fn() -> Histogram>,
    /// From a compromise declaration to the last agent confirming its replacement (M3).
    pub time_to_replace_seconds: Histogram,
    /// From request to certificate available, by protocol and profile (M4).
    pub issuance_seconds: Family<IssuanceLabels, Histogram, fn() -> Histogram>,
    /// ACME challenge validations by type and outcome.
    pub validations: Family<ValidationLabels, Counter>,
    /// Duration of ACME challenge validations, by type.
    pub validation_seconds: Family<ValidationLabels, Histogram, fn() -> Histogram>,
    /// Uses of the CA keys by principal kind.
    pub key_uses: Family<KeyUseLabels, Counter>,
    /// Key uses by an unexpected principal kind or above the expected rate (M6).
    pub key_anomalies: Family<AnomalyLabels, Counter>,
    /// Alert notification deliveries by receiver and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    key_policy: KeyUsePolicy,
    key_use_window: std::sync::Mutex<std::collections::HashMap<KeyUseLabels, (i64, u64)>>,
}

/// What counts as a key-access anomaly.
#[derive(Debug, Clone)]
pub struct KeyUsePolicy {
    /// Uses per principal kind per minute above which each use is an anomaly.
    pub rate_per_minute: u64,
    /// Principal kinds expected to use the issuing key (`crl` and `ocsp` always are).
    pub expected: Vec<String>,
}

impl Default for KeyUsePolicy {
    fn default() -> Self {
        let section = crate::config::MetricsSection::default();
        KeyUsePolicy {
            rate_per_minute: section.key_use_rate_per_minute,
            expected: section.expected_key_principals,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(KeyUsePolicy::default())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counters and histograms, with this key-use policy.
    pub fn new(key_policy: KeyUsePolicy) -> Metrics {
        let key_anomalies = Family::<AnomalyLabels, Counter>::default();
        // Present from the start at zero, so that `increase()` sees the first anomaly.
        for reason in ["unexpected_principal", "rate"] {
            let _zero = key_anomalies.get_or_create(&AnomalyLabels {
                key: "issuing".into(),
                reason: reason.into(),
            });
        }
        Metrics {
            renewal_attempts: Family::default(),
            renewal_seconds: Family::new_with_constructor(renewal_histogram),
            // 100 ms .. ~7 min.
            time_to_replace_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 12)),
            issuance_seconds: Family::new_with_constructor(fast_histogram),
            validations: Family::default(),
            validation_seconds: Family::new_with_constructor(fast_histogram),
            key_uses: Family::default(),
            key_anomalies,
            deliveries: Family::default(),
            key_policy,
            key_use_window: std::sync::Mutex::default(),
        }
    }

    /// Counts one renewal attempt.
    pub fn renewal(&self, issuer: &str, success: bool, seconds: f64) {
        self.renewal_attempts
            .get_or_create(&RenewalLabels {
                issuer: issuer.to_string(),
                outcome: if success { "success" } else { "failure" }.into(),
            })
            .inc();
        if success {
            self.renewal_seconds
                .get_or_create(&IssuerLabel {
                    issuer: issuer.to_string(),
                })
                .observe(seconds);
        }
    }

    /// Records a certificate made available `seconds` after its request arrived (M4).
    pub fn issued(&self, protocol: &str, profile: &str, seconds: f64) {
        self.issuance_seconds
            .get_or_create(&IssuanceLabels {
                protocol: protocol.into(),
                profile: profile.into(),
            })
            .observe(seconds);
    }

    /// Counts one ACME challenge validation.
    pub fn validation(&self, challenge: &str, valid: bool, seconds: f64) {
        let labels = ValidationLabels {
            challenge: challenge.into(),
            outcome: if valid { "valid" } else { "invalid" }.into(),
        };
        self.validations.get_or_create(&labels).inc();
        self.validation_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Counts one use of a CA key by a principal kind, and an anomaly when that kind is not
    /// expected or uses the key faster than the policy's rate.
    pub fn key_use(&self, key: &str, principal: &str) {
        let labels = KeyUseLabels {
            key: key.into(),
            principal: principal.into(),
        };
        self.key_uses.get_or_create(&labels).inc();
        let internal = matches!(principal, "crl" | "ocsp");
        if !internal && !self.key_policy.expected.iter().any(|p| p == principal) {
            self.anomaly(key, "unexpected_principal");
        }
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60;
        let over_rate = {
            let mut window = crate::lock(&self.key_use_window);
            let entry = window.entry(labels).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            entry.1 > self.key_policy.rate_per_minute
        };
        if over_rate {
            self.anomaly(key, "rate");
        }
    }

    fn anomaly(&self, key: &str, reason: &str) {
        tracing::warn!(key, reason, "key-access anomaly");
        self.key_anomalies
            .get_or_create(&AnomalyLabels {
                key: key.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a notification delivery outcome.
    pub fn delivery(&self, receiver: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                receiver: receiver.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// Registers one unlabelled gauge with `value`.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn gauge_family<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// Registers what this process counts (no database reads).
fn register_in_process(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "certkeeper_notifications",
        "Alert notification deliveries by receiver and outcome",
        metrics.deliveries.clone(),
    );
    registry.register(
        "certkeeper_issuance_duration_seconds",
        "From request to certificate available, by protocol and profile (M4)",
        metrics.issuance_seconds.clone(),
    );
    registry.register(
        "certkeeper_validations",
        "ACME challenge validations by challenge type and outcome",
        metrics.validations.clone(),
    );
    registry.register(
        "certkeeper_validation_duration_seconds",
        "Duration of ACME challenge validations",
        metrics.validation_seconds.clone(),
    );
    registry.register(
        "certkeeper_key_uses",
        "Signatures with the issuing CA key by principal kind (api, acme, reconciler, agent, crl)",
        metrics.key_uses.clone(),
    );
    registry.register(
        "certkeeper_key_access_anomalies",
        "Key uses by an unexpected principal kind or above [metrics] key_use_rate_per_minute (M6)",
        metrics.key_anomalies.clone(),
    );
    registry.register(
        "certkeeper_renewal_attempts",
        "Renewal attempts by issuer and outcome since the server started (M2)",
        metrics.renewal_attempts.clone(),
    );
    registry.register(
        "certkeeper_renewal_duration_seconds",
        "Duration of successful renewal attempts by issuer",
        metrics.renewal_seconds.clone(),
    );
    registry.register(
        "certkeeper_time_to_replace_seconds",
        "From a compromise declaration to the last agent confirming the replacement (M3)",
        metrics.time_to_replace_seconds.clone(),
    );
}

/// Only what this process counts, rendered (for the dashboard's debug view).
pub fn render_in_process(state: &SharedState) -> Result<String, Problem> {
    let mut registry = Registry::default();
    register_in_process(&mut registry, &state.metrics);
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(text)
}

/// The samples of an OpenMetrics text: (series name, labels, value). Comments and
/// unreadable lines are skipped.
pub fn samples(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = std::collections::BTreeMap::new();
        // Label values written by prometheus-client never contain `",` themselves here:
        // they are states, names and kinds from configuration.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((key, value)) = pair.split_once("=\"") {
                map.insert(key.to_string(), value.trim_end_matches('"').to_string());
            }
        }
        out.push((name.to_string(), map, value));
    }
    out
}

/// Renders every metric. Given a `tenant` (a tenant's token), the certificate and target
/// counts, the scan findings, the alerts and the per-managed-certificate series are that
/// tenant's; the managed,
/// agent and rollout states, the CA, CRL and OCSP figures and the in-process counters are the
/// server's.
pub async fn render(state: &SharedState, tenant: Option<&str>) -> Result<String, Problem> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut registry = Registry::default();

    // The database's figures, read concurrently on the pool's connections: the scrape takes
    // about as long as its slowest count, not the sum of them.
    let limit = state.metrics_settings.managed_certificate_series;
    let store = &state.store;
    let (counts, managed, agents, rollouts, partial, targets, findings, soonest) = tokio::try_join!(
        store.certificate_counts(now, tenant),
        store.group_counts(Grouping::ManagedByState),
        store.group_counts(Grouping::AgentsByStatus),
        store.group_counts(Grouping::RolloutsByState),
        store.partial_rollouts(),
        store.target_counts(now, tenant),
        store.scan_finding_counts(tenant),
        store.soonest_managed(tenant, i64::try_from(limit).unwrap_or(i64::MAX)),
    )?;

    gauge_family(
        &mut registry,
        "certkeeper_certificates",
        "Certificates in the inventory by status (active, expired, revoked)",
        [
            ("active", counts.active),
            ("expired", counts.expired),
            ("revoked", counts.revoked),
        ]
        .map(|(s, n)| (StateLabel { state: s.into() }, n)),
    );
    gauge_family(
        &mut registry,
        "certkeeper_certificates_expiring",
        "Active certificates expiring within 1, 7, 14 and 30 days",
        counts.expiring_within_days.map(|(days, n)| {
            (
                WithinLabel {
                    within: format!("{days}d"),
                },
                n,
            )
        }),
    );
    for (counts, name, help, states) in [
        (
            managed,
            "certkeeper_managed_certificates",
            "Managed certificates by state (pending, ready, failing)",
            &["pending", "ready", "failing"][..],
        ),
        (
            agents,
            "certkeeper_agents",
            "Enrolled agents by status (active, revoked)",
            &["active", "revoked"][..],
        ),
        (
            rollouts,
            "certkeeper_rollouts",
            "Rollouts by state",
            &["running", "paused", "halted", "aborted", "completed"][..],
        ),
    ] {
        // Every known state is reported, zero included, so a series never disappears.
        gauge_family(
            &mut registry,
            name,
            help,
            states.iter().map(|s| {
                let n = counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                (StateLabel { state: (*s).into() }, n)
            }),
        );
    }
    gauge(
        &mut registry,
        "certkeeper_rollouts_partial",
        "Paused or halted rollouts that left agents on mixed certificates (M5)",
        partial,
    );
    let ca_expiry = Family::<CaLabel, Gauge>::default();
    for (ca, der) in [
        ("root", Some(state.ca.root_der.as_slice())),
        ("issuing", Some(state.ca.issuer.certificate_der())),
    ] {
        if let Some(summary) = der.and_then(|d| certkeeper_pki::parse_certificate(d).ok()) {
            ca_expiry
                .get_or_create(&CaLabel { ca: ca.into() })
                .set(summary.not_after);
        }
    }
    registry.register(
        "certkeeper_ca_expiry_timestamp_seconds",
        "notAfter of the root and issuing CA certificates",
        ca_expiry,
    );

    let ocsp = state.ocsp.freshness();
    gauge(
        &mut registry,
        "certkeeper_ocsp_signer_expiry_timestamp_seconds",
        "notAfter of the delegated OCSP responder certificate",
        ocsp.responder_not_after,
    );
    gauge(
        &mut registry,
        "certkeeper_ocsp_oldest_response_age_seconds",
        "Age of the oldest cached OCSP response (0 with none cached)",
        ocsp.oldest_this_update.map_or(0, |t| (now - t).max(0)),
    );
    gauge(
        &mut registry,
        "certkeeper_ocsp_earliest_next_update_timestamp_seconds",
        "Earliest nextUpdate among cached OCSP responses (0 with none cached)",
        ocsp.earliest_next_update.unwrap_or(0),
    );
    gauge(
        &mut registry,
        "certkeeper_ocsp_cached_responses",
        "Signed OCSP responses in the cache",
        i64::try_from(ocsp.cached).unwrap_or(i64::MAX),
    );
    registry.register(
        "certkeeper_ocsp_responses_signed",
        "OCSP responses signed with the responder key since the server started",
        prometheus_client::metrics::counter::ConstCounter::new(state.ocsp.signatures()),
    );
    let (crl_this, crl_next) = (
        Family::<NameLabel, Gauge>::default(),
        Family::<NameLabel, Gauge>::default(),
    );
    for (name, this_update, next_update) in state.crls.freshness() {
        crl_this
            .get_or_create(&NameLabel { name: name.clone() })
            .set(this_update);
        crl_next.get_or_create(&NameLabel { name }).set(next_update);
    }
    registry.register(
        "certkeeper_crl_this_update_timestamp_seconds",
        "thisUpdate of each CRL being served",
        crl_this,
    );
    registry.register(
        "certkeeper_crl_next_update_timestamp_seconds",
        "nextUpdate of each CRL being served",
        crl_next,
    );

    gauge_family(
        &mut registry,
        "certkeeper_targets",
        "Targets by kind (scan: scanned endpoints; agent: agent deployments) and whether they serve a valid certificate (M1 = valid ÷ all)",
        [
            ("scan", "true", targets.scanned_valid),
            ("scan", "false", targets.scanned_invalid),
            ("agent", "true", targets.agent_valid),
            ("agent", "false", targets.agent_invalid),
        ]
        .map(|(kind, valid, n)| {
            (
                TargetLabels {
                    kind: kind.into(),
                    valid: valid.into(),
                },
                n,
            )
        }),
    );
    gauge_family(
        &mut registry,
        "certkeeper_scan_findings",
        "Scanned endpoints by finding (one endpoint may have several)",
        certkeeper_pki::Finding::ALL.map(|finding| {
            let n = findings
                .iter()
                .find(|(name, _)| name == finding.as_str())
                .map_or(0, |(_, n)| *n);
            (
                FindingLabel {
                    finding: finding.as_str().into(),
                },
                n,
            )
        }),
    );

    let (expiry, ready) = (
        Family::<ManagedLabels, Gauge>::default(),
        Family::<ManagedLabels, Gauge>::default(),
    );
    for (name, tenant, managed_state, not_after) in &soonest {
        let labels = ManagedLabels {
            name: name.clone(),
            tenant: tenant.clone(),
        };
        expiry.get_or_create(&labels).set(*not_after);
        ready
            .get_or_create(&labels)
            .set(i64::from(managed_state == "ready"));
    }
    registry.register(
        "certkeeper_managed_certificate_expiry_timestamp_seconds",
        "notAfter of the certificate in force, for the managed certificates expiring soonest ([metrics] managed_certificate_series of them)",
        expiry,
    );
    registry.register(
        "certkeeper_managed_certificate_ready",
        "1 when the managed certificate's last attempt succeeded, for the same managed certificates",
        ready,
    );

    let (firing, silenced) = (
        Family::<AlertLabels, Gauge>::default(),
        Gauge::<i64>::default(),
    );
    // A tenant's token counts the alerts about its tenant, and those about the server itself.
    let visible = state
        .alerts
        .snapshot()
        .into_iter()
        .filter(|entry| entry.visible_to(tenant));
    for entry in visible {
        if entry.silenced_by.is_some() {
            silenced.inc();
        } else {
            firing
                .get_or_create(&AlertLabels {
                    rule: entry.alert.rule.clone(),
                    severity: entry.alert.severity.as_str().into(),
                })
                .inc();
        }
    }
    registry.register(
        "certkeeper_alerts",
        "Built-in alerts firing and not silenced, by rule and severity",
        firing,
    );
    registry.register(
        "certkeeper_alerts_silenced",
        "Built-in alerts firing but held back by a silence",
        silenced,
    );
    register_in_process(&mut registry, &state.metrics);

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(text)
}

/// `GET /metrics` (token with read access, such as an auditor's).
pub async fn handler(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "metrics.read").await?;
    let text = render(&state, principal.tenant.as_deref()).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
