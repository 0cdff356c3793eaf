//! The reconciler of managed certificates: finds due work through the `next_action_at` index,
//! claims it with a lease (so two servers on one database never do it twice), issues, deploys
//! to the declared targets and records the attempt and the next action time.
//!
//! Built so far: the internal CA as issuer, file, nginx and webhook targets, renewal at a
//! lifetime fraction or before expiry with jitter, backoff after failures. External ACME
//! issuers, issuer fallback and key reuse are refused with a clear error until they are built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper_lifecycle::{
    Backoff, IssuerChoice, ManagedSpec, TargetSpec, choose_issuer, jitter_fraction, renewal_time,
};
use certkeeper_store::{
    AuditEvent, CertificateSource, Change, ManagedOutcome, ManagedRecord, Outcome, RenewalAttempt,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::auth::{Principal, Role};
use crate::config::LifecycleSection;
use crate::deploy::{FileTarget, Material, deploy_files};
use crate::issuance::IssueRequest;
use crate::{SharedState, Tenant};

/// The audit actor and requester of what the reconciler does.
pub const ACTOR: &str = "lifecycle";

/// One target's state after an attempt (shown in status).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetState {
    /// `file`, `nginx` or `webhook`.
    pub kind: String,
    /// Where (first path, or the URL).
    pub location: String,
    /// Serial deployed there.
    pub deployed_serial: Option<String>,
    /// Whether the probe confirmed it (file and nginx targets with a probe).
    pub probed: bool,
    /// What went wrong.
    pub error: Option<String>,
}

/// Starts the reconciler.
pub fn spawn(state: SharedState, config: LifecycleSection) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut id = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut id);
        let owner = format!("server-{}", hex::encode(id));
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let lease = i64::try_from(config.lease.max(30)).unwrap_or(300);
        let _ = BACKOFF.set(Backoff {
            base_seconds: i64::try_from(config.backoff_base.max(1)).unwrap_or(60),
            cap_seconds: i64::try_from(config.backoff_cap.max(1)).unwrap_or(21_600),
        });
        loop {
            tokio::time::sleep(Duration::from_millis(config.tick_ms.max(50))).await;
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let now = unix_now();
            let claimed = match state
                .store
                .claim_due_managed(&owner, now, now + lease, free as i64)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not look for due managed certificates");
                    continue;
                }
            };
            for record in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let state = state.clone();
                let owner = owner.clone();
                tokio::spawn(async move {
                    attempt(&state, record, &owner).await;
                    drop(permit);
                });
            }
        }
    })
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// One attempt: renew and deploy, then record the outcome and the next action.
async fn attempt(state: &SharedState, record: ManagedRecord, server: &str) {
    let started_at = unix_now();
    let clock = Instant::now();
    let spec: Result<ManagedSpec, String> = serde_json::from_str(&record.spec)
        .map_err(|e| format!("the stored declaration is unreadable ({e}); apply it again"));
    let result = match &spec {
        Ok(spec) => renew(state, &record, spec).await,
        Err(error) => Err(Failed {
            error: error.clone(),
            issuer: "unknown".into(),
            issued: None,
            targets: Vec::new(),
            retry_after: None,
        }),
    };
    let now = unix_now();
    let jitter = jitter_fraction(&record.name);
    let (outcome, audit) = match result {
        Ok((issued, targets)) => {
            let policy = spec.as_ref().map(|s| s.renewal).unwrap_or_default();
            let (next, reason) = renewal_time(
                issued.not_before,
                issued.not_after,
                policy,
                None,
                jitter,
                now,
            );
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "renewal".into());
            (
                ManagedOutcome {
                    name: record.name.clone(),
                    state: "ready".into(),
                    current_serial: Some(issued.serial.clone()),
                    not_after: Some(issued.not_after),
                    next_action_at: next,
                    next_action_reason: reason,
                    consecutive_failures: 0,
                    targets: serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into()),
                    attempt: RenewalAttempt {
                        managed_name: record.name.clone(),
                        started_at,
                        duration_ms: clock.elapsed().as_millis() as i64,
                        issuer: issued.issuer.clone(),
                        outcome: "success".into(),
                        error: None,
                        serial: Some(issued.serial.clone()),
                    },
                },
                audit_event(
                    &record.name,
                    Outcome::Success,
                    serde_json::json!({"serial": issued.serial, "issuer": issued.issuer, "tenant": record.tenant, "server": server}),
                ),
            )
        }
        Err(failed) => {
            let failures = record.consecutive_failures + 1;
            let next = BACKOFF.get().copied().unwrap_or_default().next_attempt(
                u32::try_from(failures).unwrap_or(u32::MAX),
                failed.retry_after,
                jitter,
                now,
            );
            (
                ManagedOutcome {
                    name: record.name.clone(),
                    state: "failing".into(),
                    // What is in force stays what it was: a certificate obtained but not
                    // deployed is only in the attempt's record.
                    current_serial: record.current_serial.clone(),
                    not_after: record.not_after,
                    next_action_at: next,
                    next_action_reason: if failed.retry_after.is_some() {
                        "the issuer's Retry-After".into()
                    } else {
                        "retry after a failed attempt".into()
                    },
                    consecutive_failures: failures,
                    targets: if failed.targets.is_empty() {
                        record.targets.clone()
                    } else {
                        serde_json::to_string(&failed.targets).unwrap_or_else(|_| "[]".into())
                    },
                    attempt: RenewalAttempt {
                        managed_name: record.name.clone(),
                        started_at,
                        duration_ms: clock.elapsed().as_millis() as i64,
                        issuer: failed.issuer.clone(),
                        outcome: "failure".into(),
                        error: Some(failed.error.clone()),
                        serial: failed.issued.as_ref().map(|i| i.serial.clone()),
                    },
                },
                audit_event(
                    &record.name,
                    Outcome::Failure,
                    serde_json::json!({"error": failed.error, "issuer": failed.issuer, "tenant": record.tenant, "server": server}),
                ),
            )
        }
    };
    if let Err(error) = state
        .store
        .apply(Change {
            managed_outcomes: vec![outcome],
            audit: vec![audit],
            ..Change::default()
        })
        .await
    {
        // The lease runs out and the attempt is made again.
        tracing::warn!(%error, name = %record.name, "could not record a renewal attempt");
    }
}

fn audit_event(name: &str, outcome: Outcome, detail: serde_json::Value) -> AuditEvent {
    AuditEvent {
        actor: ACTOR.into(),
        action: "managed.renewal".into(),
        object: name.to_string(),
        outcome,
        detail,
    }
}

/// A certificate obtained in an attempt.
struct Renewed {
    serial: String,
    not_before: i64,
    not_after: i64,
    /// The issuer that provided it.
    issuer: String,
}

/// Why an attempt failed, with what it had obtained so far.
struct Failed {
    error: String,
    issuer: String,
    issued: Option<Renewed>,
    targets: Vec<TargetState>,
    /// The issuer's `Retry-After` (Unix seconds): the next attempt is not earlier.
    retry_after: Option<i64>,
}

/// The backoff in force (set once at start from `[lifecycle]`).
static BACKOFF: std::sync::OnceLock<Backoff> = std::sync::OnceLock::new();

/// Obtains a new certificate (from the primary issuer, or the fallback after repeated
/// failures) and deploys it to every target.
async fn renew(
    state: &SharedState,
    record: &ManagedRecord,
    spec: &ManagedSpec,
) -> Result<(Renewed, Vec<TargetState>), Failed> {
    let failures = u32::try_from(record.consecutive_failures).unwrap_or(u32::MAX);
    let issuer = match choose_issuer(
        failures,
        spec.fallback_after,
        spec.fallback_issuer.is_some(),
    ) {
        IssuerChoice::Fallback => spec
            .fallback_issuer
            .clone()
            .unwrap_or_else(|| spec.issuer.clone()),
        IssuerChoice::Primary => spec.issuer.clone(),
    };
    let refuse = |error: String| Failed {
        error,
        issuer: issuer.clone(),
        issued: None,
        targets: Vec::new(),
        retry_after: None,
    };
    if !spec.key.rotate {
        return Err(refuse(
            "key.rotate = false is not supported yet: a new key is made at every renewal".into(),
        ));
    }
    let tenant = spec
        .tenant
        .clone()
        .unwrap_or_else(|| Tenant::DEFAULT.to_string());
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    labels.insert("managed".into(), record.name.clone());
    if let Some(owner) = &spec.owner {
        labels.insert("owner".into(), owner.clone());
    }
    let (renewed, material) = if issuer == "internal" {
        let principal = Principal {
            token_id: ACTOR.into(),
            role: Role::Issuer,
            tenant: Some(tenant.clone()),
        };
        let issued = crate::issuance::issue(
            state,
            &principal,
            IssueRequest {
                profile: spec.profile.clone(),
                tenant: Some(tenant),
                csr: None,
                key_algorithm: Some(spec.key.algorithm),
                pkcs12_password: None,
                common_name: None,
                sans: spec.sans.clone(),
                lifetime: None,
                labels,
            },
        )
        .await
        .map_err(|problem| refuse(format!("issuance refused: {}", problem.detail)))?;
        (
            Renewed {
                serial: issued.serial.clone(),
                not_before: parse_time(&issued.not_before),
                not_after: parse_time(&issued.not_after),
                issuer: issuer.clone(),
            },
            Material {
                serial: issued.serial.clone(),
                certificate_pem: issued.certificate_pem.clone(),
                chain_pem: issued.chain_pem.clone(),
                key_pem: issued.private_key_pem.clone().unwrap_or_default(),
            },
        )
    } else if state.upstreams.knows(&issuer) {
        let obtained = state
            .upstreams
            .obtain(&issuer, &spec.sans, spec.key.algorithm)
            .await
            .map_err(|e| Failed {
                retry_after: e.retry_after,
                ..refuse(e.message)
            })?;
        let summary = certkeeper_pki::parse_certificate(&obtained.der)
            .map_err(|e| refuse(format!("{issuer} sent an unreadable certificate: {e}")))?;
        let row = crate::inventory::record(
            summary.clone(),
            obtained.der.clone(),
            crate::inventory::Provenance {
                profile: None,
                tenant: tenant.clone(),
                requester: ACTOR.into(),
                source: CertificateSource::External,
                labels,
                crl_shard: 0,
            },
        );
        // In the inventory (and the audit log) before anything is deployed.
        state
            .store
            .apply(Change {
                certificates: vec![row],
                audit: vec![AuditEvent {
                    actor: ACTOR.into(),
                    action: "certificate.obtain".into(),
                    object: summary.serial.clone(),
                    outcome: Outcome::Success,
                    detail: serde_json::json!({"issuer": issuer, "managed": record.name, "tenant": tenant, "issuer_dn": summary.issuer}),
                }],
                ..Change::default()
            })
            .await
            .map_err(|e| refuse(format!("recording the certificate from {issuer}: {e}")))?;
        (
            Renewed {
                serial: summary.serial.clone(),
                not_before: summary.not_before,
                not_after: summary.not_after,
                issuer: issuer.clone(),
            },
            Material {
                serial: summary.serial,
                certificate_pem: obtained.certificate_pem,
                chain_pem: obtained.chain_pem,
                key_pem: obtained.key_pem,
            },
        )
    } else {
        return Err(refuse(format!(
            "issuer {issuer:?} is not configured: use \"internal\" or add an [[issuer]] with that name"
        )));
    };
    let mut targets = Vec::new();
    for target in &spec.targets {
        targets.push(deploy(target, &record.name, &material).await);
    }
    let failed: Vec<String> = targets
        .iter()
        .filter_map(|t| {
            t.error
                .as_ref()
                .map(|e| format!("{} {}: {e}", t.kind, t.location))
        })
        .collect();
    if failed.is_empty() {
        Ok((renewed, targets))
    } else {
        Err(Failed {
            error: format!(
                "obtained {} from {issuer} but {} of {} targets failed: {}",
                renewed.serial,
                failed.len(),
                targets.len(),
                failed.join("; ")
            ),
            issuer,
            issued: Some(renewed),
            targets,
            retry_after: None,
        })
    }
}

fn parse_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

async fn deploy(target: &TargetSpec, name: &str, material: &Material) -> TargetState {
    let path = |p: &Option<String>| p.as_ref().map(PathBuf::from);
    let (kind, file_target) = match target {
        TargetSpec::File {
            cert,
            chain,
            fullchain,
            key,
            reload,
            probe,
        } => (
            "file",
            FileTarget {
                cert: path(cert),
                chain: path(chain),
                fullchain: path(fullchain),
                key: path(key),
                reload: reload.clone(),
                reload_timeout: Duration::from_secs(30),
                probe: probe.clone(),
                probe_name: None,
                probe_timeout: Duration::from_secs(10),
            },
        ),
        TargetSpec::Nginx {
            fullchain,
            key,
            probe,
            reload,
        } => (
            "nginx",
            FileTarget::nginx(fullchain.into(), key.into(), probe.clone(), reload.clone()),
        ),
        TargetSpec::Webhook { url, include_key } => {
            return webhook(url, *include_key, name, material).await;
        }
    };
    let location = [
        &file_target.fullchain,
        &file_target.cert,
        &file_target.key,
        &file_target.chain,
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|p| p.display().to_string())
    .unwrap_or_default();
    match deploy_files(&file_target, material).await {
        Ok(done) => TargetState {
            kind: kind.into(),
            location,
            deployed_serial: Some(done.serial),
            probed: done.probed,
            error: None,
        },
        Err(error) => TargetState {
            kind: kind.into(),
            location,
            deployed_serial: None,
            probed: false,
            error: Some(error.to_string()),
        },
    }
}

/// One HTTP client (connection pool) for every webhook target.
static WEBHOOK_CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();

async fn webhook(url: &str, include_key: bool, name: &str, material: &Material) -> TargetState {
    let mut body = serde_json::json!({
        "managed_certificate": name,
        "serial": material.serial,
        "certificate_pem": material.certificate_pem,
        "chain_pem": material.chain_pem,
        "full_chain_pem": format!("{}{}", material.certificate_pem, material.chain_pem),
    });
    if include_key {
        body["private_key_pem"] = serde_json::json!(material.key_pem);
    }
    let result = async {
        let client = match WEBHOOK_CLIENT.get() {
            Some(client) => client.clone(),
            None => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| e.to_string())?;
                WEBHOOK_CLIENT.get_or_init(|| client).clone()
            }
        };
        let response = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", response.status()))
        }
    }
    .await;
    TargetState {
        kind: "webhook".into(),
        location: url.to_string(),
        deployed_serial: result.is_ok().then(|| material.serial.clone()),
        probed: false,
        error: result.err(),
    }
}
