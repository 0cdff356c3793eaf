//! `/metrics` in the OpenMetrics text format (prometheus-client). Counts that live in the
//! database (certificates by status and expiry, managed certificates, agents, rollouts, CA
//! expiry) are read at each scrape; what happens in this process (renewal attempts and their
//! duration, times to replace after a compromise) is counted as it happens. Labels are bounded:
//! states, issuers, fixed expiry windows — nothing per certificate or serial.

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

fn renewal_histogram() -> Histogram {
    // 50 ms .. ~100 s.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// What this process counts as it happens.
pub struct Metrics {
    /// Renewal attempts by issuer and outcome (M2: successes ÷ all).
    pub renewal_attempts: Family<RenewalLabels, Counter>,
    /// Duration of renewal attempts that obtained a certificate, by issuer.
    pub renewal_seconds: Family<IssuerLabel, Histogram, fn() -> Histogram>,
    /// From a compromise declaration to the last agent confirming its replacement (M3).
    pub time_to_replace_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            renewal_attempts: Family::default(),
            renewal_seconds: Family::new_with_constructor(renewal_histogram),
            // 100 ms .. ~7 min.
            time_to_replace_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 12)),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
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

/// Renders every metric.
pub async fn render(state: &SharedState) -> Result<String, Problem> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut registry = Registry::default();

    let counts = state.store.certificate_counts(now).await?;
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
    for (grouping, name, help, states) in [
        (
            Grouping::ManagedByState,
            "certkeeper_managed_certificates",
            "Managed certificates by state (pending, ready, failing)",
            &["pending", "ready", "failing"][..],
        ),
        (
            Grouping::AgentsByStatus,
            "certkeeper_agents",
            "Enrolled agents by status (active, revoked)",
            &["active", "revoked"][..],
        ),
        (
            Grouping::RolloutsByState,
            "certkeeper_rollouts",
            "Rollouts by state",
            &["running", "paused", "halted", "aborted", "completed"][..],
        ),
    ] {
        let counts = state.store.group_counts(grouping).await?;
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
    let partial = Gauge::<i64>::default();
    partial.set(state.store.partial_rollouts().await?);
    registry.register(
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

    registry.register(
        "certkeeper_renewal_attempts",
        "Renewal attempts by issuer and outcome since the server started (M2)",
        state.metrics.renewal_attempts.clone(),
    );
    registry.register(
        "certkeeper_renewal_duration_seconds",
        "Duration of successful renewal attempts by issuer",
        state.metrics.renewal_seconds.clone(),
    );
    registry.register(
        "certkeeper_time_to_replace_seconds",
        "From a compromise declaration to the last agent confirming the replacement (M3)",
        state.metrics.time_to_replace_seconds.clone(),
    );

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(text)
}

/// `GET /metrics` (token with read access, such as an auditor's).
pub async fn handler(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Permission::Read, "metrics.read").await?;
    let text = render(&state).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
