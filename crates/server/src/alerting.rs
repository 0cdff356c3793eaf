//! Built-in alerting: every `[alerting] interval` the rules below are evaluated from the
//! database and the server's own state; `certkeeper_lifecycle::Notifier` groups them (by
//! severity and `group_by` labels), holds back silenced ones and deduplicates; each due
//! notification is POSTed to every receiver taking its severity, as JSON or as a
//! Slack-compatible `{"text": ...}`, with retries.
//!
//! Rules:
//! - `CertificateExpiringUnrenewed` (page): a managed certificate whose last renewal failed
//!   expires within `expiring_within` (no successful renewal is scheduled before it).
//! - `RenewalFailing` (ticket): `renewal_failures` or more consecutive failed renewals.
//! - `PartialRollout` (page): a paused or halted rollout left agents on mixed certificates.
//! - `CaNearExpiry` (page): the root or issuing CA certificate expires within
//!   `ca_expiring_within`, or the OCSP signer within `ocsp_signer_expiring_within`.
//! - `CrlStale` (page): a CRL not rebuilt for two refresh periods, or past its nextUpdate.
//! - `OcspStale` (page): a cached OCSP response is past its nextUpdate.
//!
//! What the notifier remembers (which groups were told what, and when) is kept in the
//! database after every evaluation that changes it, and taken up again at the first
//! evaluation after a start, so a restarted server does not notify the same groups again.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use certkeeper_lifecycle::{
    Alert, Notification, NotificationStatus, Notifier, NotifierMemory, Severity, Silence,
    silenced_by,
};
use serde::Serialize;

use crate::SharedState;
use crate::config::{AlertingSection, ReceiverConfig, ReceiverKind};
use crate::issuance::rfc3339;

/// Most failing managed certificates one evaluation looks at (bounded work per interval).
const MAX_FAILING_EVALUATED: i64 = 100_000;
/// The setting that keeps the notifier's memory between restarts.
const NOTIFIER_MEMORY_SETTING: &str = "alerting.notifier_memory";
/// A larger memory is not kept (a restart would then notify firing groups once more).
const MAX_KEPT_MEMORY_BYTES: usize = 8 * 1024 * 1024;

/// An alert as last evaluated, with the silence holding it back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FiringAlert {
    /// The alert.
    #[schema(value_type = Object)]
    pub alert: Alert,
    /// Id of the silence holding it back, if any.
    pub silenced_by: Option<String>,
}

impl FiringAlert {
    /// Whether a token of `tenant` (any tenant when `None`) sees it: alerts about a tenant go
    /// to that tenant's tokens, those about the server itself to every token.
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        self.alert
            .labels
            .get("tenant")
            .is_none_or(|about| tenant.is_none_or(|own| own == about))
    }
}

/// The notifier, and what of its memory the database holds.
struct KeptNotifier {
    notifier: Notifier,
    /// The grouping labels: a memory kept under other ones is not taken up.
    group_by: Vec<String>,
    /// Whether the memory kept by an earlier run was taken up.
    restored: bool,
    /// The memory as last written or taken up (to write only changes).
    kept: Option<NotifierMemory>,
}

/// The notifier's memory as kept in the database, with the grouping it belongs to (written
/// from a borrowed memory, read into an owned one).
#[derive(Serialize, serde::Deserialize)]
struct KeptMemory<M = NotifierMemory> {
    group_by: Vec<String>,
    memory: M,
}

/// The alerting state of this process.
pub struct AlertEngine {
    settings: AlertingSection,
    notifier: tokio::sync::Mutex<KeptNotifier>,
    latest: RwLock<Vec<FiringAlert>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEngine").finish_non_exhaustive()
    }
}

impl AlertEngine {
    /// An engine with nothing evaluated yet.
    pub fn new(settings: AlertingSection) -> Result<AlertEngine, crate::ServerError> {
        let group_by = settings.group_by.clone();
        let notifier = Notifier::new(
            settings.group_by.clone(),
            i64::try_from(settings.group_wait).unwrap_or(i64::MAX),
            i64::try_from(settings.repeat_interval).unwrap_or(i64::MAX),
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                crate::ServerError::Config(format!("cannot build the alerting HTTP client: {e}"))
            })?;
        Ok(AlertEngine {
            settings,
            notifier: tokio::sync::Mutex::new(KeptNotifier {
                notifier,
                group_by,
                restored: false,
                kept: None,
            }),
            latest: RwLock::new(Vec::new()),
            http,
        })
    }

    /// The alerts of the latest evaluation, silenced ones included.
    pub fn snapshot(&self) -> Vec<FiringAlert> {
        self.latest.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Evaluates the rules now, records the result and sends what is due. Returns the
    /// notifications sent (deliveries run in the background).
    pub async fn evaluate(&self, state: &SharedState) -> Result<Vec<Notification>, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let firing = firing_alerts(state, &self.settings, now)
            .await
            .map_err(|e| e.to_string())?;
        let silences: Vec<Silence> = state
            .store
            .silences(now)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| Silence {
                id: s.id,
                matchers: s.matchers,
                starts_at: s.starts_at,
                ends_at: s.ends_at,
            })
            .collect();
        let snapshot = firing
            .iter()
            .map(|alert| FiringAlert {
                alert: alert.clone(),
                silenced_by: silenced_by(alert, &silences, now).map(str::to_string),
            })
            .collect();
        if let Ok(mut latest) = self.latest.write() {
            *latest = snapshot;
        }
        let mut kept = self.notifier.lock().await;
        if !kept.restored {
            restore(&mut kept, state).await?;
        }
        let notifications = kept.notifier.evaluate(&firing, &silences, now);
        for notification in &notifications {
            for receiver in &self.settings.receivers {
                if receiver.severities.contains(&notification.severity) {
                    let body = payload(receiver, notification, now);
                    let (http, receiver, state) =
                        (self.http.clone(), receiver.clone(), state.clone());
                    let retries = self.settings.retries;
                    tokio::spawn(async move {
                        deliver(&http, &receiver, &body, retries, &state).await;
                    });
                }
            }
        }
        // Kept after the deliveries started: a crash in between notifies again rather than
        // not at all.
        keep(&mut kept, state).await;
        Ok(notifications)
    }
}

/// Takes up the memory an earlier run kept. An unreadable one, or one kept under other
/// grouping labels, is dropped with a warning; a database error leaves it for the next
/// evaluation.
async fn restore(kept: &mut KeptNotifier, state: &SharedState) -> Result<(), String> {
    let json = state
        .store
        .setting(NOTIFIER_MEMORY_SETTING)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(json) = json {
        match serde_json::from_str::<KeptMemory>(&json) {
            Ok::<KeptMemory, _>(stored) if stored.group_by == kept.group_by => {
                kept.notifier.restore(stored.memory.clone());
                kept.kept = Some(stored.memory);
            }
            Ok(_) => tracing::warn!(
                "the kept alert notification memory groups by other labels; starting afresh"
            ),
            Err(error) => tracing::warn!(
                %error,
                "the kept alert notification memory is unreadable; starting afresh"
            ),
        }
    }
    kept.restored = true;
    Ok(())
}

/// Writes the notifier's memory when it changed. One too large to keep is replaced by an
/// empty one, so that a restart starts afresh rather than from an outdated memory.
async fn keep(kept: &mut KeptNotifier, state: &SharedState) {
    let memory = kept.notifier.memory();
    if kept.kept.as_ref() == Some(memory) {
        return;
    }
    let encode = |memory: &NotifierMemory| {
        serde_json::to_string(&KeptMemory {
            group_by: kept.group_by.clone(),
            memory,
        })
    };
    let json = match encode(memory) {
        Ok(json) if json.len() <= MAX_KEPT_MEMORY_BYTES => json,
        Ok(json) => {
            tracing::warn!(
                bytes = json.len(),
                "the alert notification memory is too large to keep; a restart will notify firing groups again"
            );
            match encode(&NotifierMemory::default()) {
                Ok(empty) => empty,
                Err(_) => return,
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot encode the alert notification memory");
            return;
        }
    };
    let change = certkeeper_store::Change {
        settings: vec![(NOTIFIER_MEMORY_SETTING.to_string(), json)],
        ..certkeeper_store::Change::default()
    };
    match state.store.apply(change).await {
        Ok(_) => kept.kept = Some(memory.clone()),
        Err(error) => tracing::warn!(%error, "could not keep the alert notification memory"),
    }
}

/// Evaluates the rules every `[alerting] interval`.
pub fn spawn(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_secs(state.alerts.settings.interval.max(1));
        loop {
            if let Err(error) = state.alerts.evaluate(&state).await {
                tracing::error!(%error, "could not evaluate the alerting rules");
            }
            tokio::time::sleep(interval).await;
        }
    })
}

fn spec_labels(spec: &str) -> BTreeMap<String, String> {
    let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    let mut labels = BTreeMap::new();
    if let Some(owner) = spec.get("owner").and_then(|o| o.as_str()) {
        labels.insert("owner".to_string(), owner.to_string());
    }
    if let Some(extra) = spec.get("labels").and_then(|l| l.as_object()) {
        for (name, value) in extra {
            if let Some(value) = value.as_str()
                && !matches!(name.as_str(), "rule" | "subject" | "severity")
            {
                labels
                    .entry(name.clone())
                    .or_insert_with(|| value.to_string());
            }
        }
    }
    labels
}

fn days(seconds: i64) -> String {
    format!("{:.1} days", seconds as f64 / 86_400.0)
}

/// Every alert firing at `now`.
pub async fn firing_alerts(
    state: &SharedState,
    settings: &AlertingSection,
    now: i64,
) -> Result<Vec<Alert>, certkeeper_store::StoreError> {
    let mut alerts = Vec::new();
    let expiring_within = i64::try_from(settings.expiring_within).unwrap_or(i64::MAX);
    for (managed, last_error) in state
        .store
        .failing_managed(None, MAX_FAILING_EVALUATED)
        .await?
    {
        let mut labels = spec_labels(&managed.spec);
        labels.insert("tenant".into(), managed.tenant.clone());
        labels.insert("name".into(), managed.name.clone());
        let last_error = last_error.unwrap_or_else(|| "unknown error".into());
        let since = managed.updated_at;
        if let Some(not_after) = managed.not_after
            && not_after - now <= expiring_within
        {
            alerts.push(Alert {
                rule: "CertificateExpiringUnrenewed".into(),
                subject: managed.name.clone(),
                severity: Severity::Page,
                labels: labels.clone(),
                summary: format!(
                    "{} expires at {} (in {}) and its renewal failed {} time(s): {last_error}",
                    managed.name,
                    rfc3339(not_after),
                    days(not_after - now),
                    managed.consecutive_failures
                ),
                since,
            });
        }
        if managed.consecutive_failures >= settings.renewal_failures {
            alerts.push(Alert {
                rule: "RenewalFailing".into(),
                subject: managed.name.clone(),
                severity: Severity::Ticket,
                labels,
                summary: format!(
                    "{} failed to renew {} times in a row: {last_error}",
                    managed.name, managed.consecutive_failures
                ),
                since,
            });
        }
    }
    for rollout in state.store.partial_rollout_list().await? {
        let mut labels = spec_labels(&rollout.spec);
        if !rollout.tenant.is_empty() {
            labels.insert("tenant".into(), rollout.tenant.clone());
        }
        labels.insert("name".into(), rollout.managed_name.clone());
        alerts.push(Alert {
            rule: "PartialRollout".into(),
            subject: format!("rollout-{}", rollout.id),
            severity: Severity::Page,
            labels,
            summary: format!(
                "rollout {} of {} is {} in wave {} with agents on mixed certificates",
                rollout.id, rollout.managed_name, rollout.state, rollout.wave
            ),
            since: now,
        });
    }
    let ca_within = i64::try_from(settings.ca_expiring_within).unwrap_or(i64::MAX);
    let signer_within = i64::try_from(settings.ocsp_signer_expiring_within).unwrap_or(i64::MAX);
    let ocsp = state.ocsp.freshness();
    let signer_not_after = ocsp.responder_not_after;
    let ca_not_after = |der: &[u8]| {
        certkeeper_pki::parse_certificate(der)
            .map(|s| s.not_after)
            .unwrap_or(0)
    };
    for (subject, not_after, within) in [
        ("root", ca_not_after(&state.ca.root_der), ca_within),
        (
            "issuing",
            ca_not_after(state.ca.issuer.certificate_der()),
            ca_within,
        ),
        ("ocsp-signer", signer_not_after, signer_within),
    ] {
        if not_after != 0 && not_after - now <= within {
            alerts.push(Alert {
                rule: "CaNearExpiry".into(),
                subject: subject.into(),
                severity: Severity::Page,
                labels: BTreeMap::from([("owner".to_string(), "pki".to_string())]),
                summary: format!(
                    "the {subject} certificate expires at {} (in {})",
                    rfc3339(not_after),
                    days(not_after - now)
                ),
                since: now,
            });
        }
    }
    let refresh = i64::try_from(state.crls.refresh_seconds()).unwrap_or(i64::MAX);
    for (name, this_update, next_update) in state.crls.freshness() {
        if next_update <= now || now - this_update > 2 * refresh {
            alerts.push(Alert {
                rule: "CrlStale".into(),
                subject: name.clone(),
                severity: Severity::Page,
                labels: BTreeMap::from([("owner".to_string(), "pki".to_string())]),
                summary: format!(
                    "{name} was last built at {} (nextUpdate {})",
                    rfc3339(this_update),
                    rfc3339(next_update)
                ),
                since: this_update,
            });
        }
    }
    if let Some(next_update) = ocsp.earliest_next_update
        && next_update <= now
    {
        alerts.push(Alert {
            rule: "OcspStale".into(),
            subject: "ocsp".into(),
            severity: Severity::Page,
            labels: BTreeMap::from([("owner".to_string(), "pki".to_string())]),
            summary: format!(
                "a cached OCSP response is past its nextUpdate ({})",
                rfc3339(next_update)
            ),
            since: next_update,
        });
    }
    Ok(alerts)
}

/// The body sent to `receiver`.
fn payload(receiver: &ReceiverConfig, notification: &Notification, now: i64) -> serde_json::Value {
    let status = match notification.status {
        NotificationStatus::Firing => "firing",
        NotificationStatus::Resolved => "resolved",
    };
    match receiver.kind {
        ReceiverKind::Webhook => serde_json::json!({
            "version": "1",
            "receiver": receiver.name,
            "status": status,
            "severity": notification.severity.as_str(),
            "group_key": notification.group_key,
            "group_labels": notification.group_labels,
            "sent_at": rfc3339(now),
            "alerts": notification.alerts.iter().map(|alert| serde_json::json!({
                "rule": alert.rule,
                "subject": alert.subject,
                "severity": alert.severity.as_str(),
                "labels": alert.labels,
                "summary": alert.summary,
                "since": rfc3339(alert.since),
            })).collect::<Vec<_>>(),
        }),
        ReceiverKind::Slack => {
            let group: Vec<String> = notification
                .group_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut text = format!(
                "*[{}] {}* {} ({} alert{})",
                status.to_uppercase(),
                notification.severity.as_str(),
                group.join(" "),
                notification.alerts.len(),
                if notification.alerts.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            for alert in &notification.alerts {
                text.push_str(&format!(
                    "\n• {} {}: {}",
                    alert.rule, alert.subject, alert.summary
                ));
            }
            serde_json::json!({ "text": text })
        }
    }
}

/// POSTs `body`, retrying failures (network errors and non-2xx answers) `retries` times with
/// doubling waits from one second.
async fn deliver(
    http: &reqwest::Client,
    receiver: &ReceiverConfig,
    body: &serde_json::Value,
    retries: u32,
    state: &SharedState,
) {
    let mut wait = Duration::from_secs(1);
    for attempt in 0..=retries {
        let result = http.post(&receiver.url).json(body).send().await;
        let error = match result {
            Ok(response) if response.status().is_success() => {
                state.metrics.delivery(&receiver.name, "delivered");
                return;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            // Without the URL: a Slack-style webhook URL is itself the credential.
            Err(error) => error.without_url().to_string(),
        };
        if attempt < retries {
            state.metrics.delivery(&receiver.name, "retried");
            tracing::warn!(receiver = %receiver.name, %error, "notification not delivered; retrying");
            tokio::time::sleep(wait).await;
            wait *= 2;
        } else {
            state.metrics.delivery(&receiver.name, "failed");
            tracing::error!(receiver = %receiver.name, %error, "notification not delivered; giving up");
        }
    }
}
