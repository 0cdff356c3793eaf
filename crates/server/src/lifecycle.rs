//! The reconciler of managed certificates: finds due work through the `next_action_at` index,
//! claims it with a lease (so two servers on one database never do it twice), issues, deploys
//! to the declared targets and records the attempt and the next action time.
//!
//! Issuers: the internal CA and external ACME CAs (`[[issuer]]`, see [`crate::upstream`]),
//! each with its own bound on attempts at once, with a fallback issuer after repeated
//! failures. Renewal at a lifetime fraction, before expiry, or inside the issuer's ARI window
//! (checked again whenever the issuer's `Retry-After` runs out), spread with jitter; backoff
//! after failures. Keys are new at every renewal, or kept sealed in the database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certkeeper_lifecycle::{
    AriAnswer, Backoff, IssuerChoice, ManagedSpec, RenewalPolicy, TargetSpec, choose_issuer,
    jitter_fraction, next_action, parse_mode,
};
use certkeeper_pki::{Signer, SoftwareKey};
use certkeeper_store::{
    AgentPayload, AuditEvent, CertificateSource, Change, FleetWrite, ManagedOutcome, ManagedRecord,
    ManagedReschedule, NewRollout, Outcome, RenewalAttempt, RolloutAgent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// One bound on attempts at once per issuer (`internal` and each `[[issuer]]`), with the load
/// each has seen: what `GET /api/v1/lifecycle/issuers` shows.
pub struct IssuerSlots {
    issuers: BTreeMap<String, IssuerSlot>,
}

struct IssuerSlot {
    bound: usize,
    permits: Semaphore,
    max_in_flight: AtomicUsize,
    attempts: AtomicU64,
}

impl IssuerSlot {
    /// Attempts holding a slot now.
    fn in_flight(&self) -> usize {
        self.bound - self.permits.available_permits()
    }
}

/// An issuer's bound and load.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuerLoad {
    /// `internal` or an `[[issuer]]` name.
    pub name: String,
    /// Attempts allowed at once.
    pub concurrency: usize,
    /// Attempts running now.
    pub in_flight: usize,
    /// Most attempts that ran at once since the server started.
    pub max_in_flight: usize,
    /// Attempts started since the server started.
    pub attempts: u64,
}

impl IssuerSlots {
    /// Bounds for the internal CA and each configured issuer.
    pub fn new(internal: usize, issuers: &[crate::config::IssuerConfig]) -> IssuerSlots {
        let slot = |bound: usize| IssuerSlot {
            bound: bound.max(1),
            permits: Semaphore::new(bound.max(1)),
            max_in_flight: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
        };
        let mut map = BTreeMap::new();
        map.insert("internal".to_string(), slot(internal));
        for issuer in issuers {
            map.insert(issuer.name.clone(), slot(issuer.concurrency));
        }
        IssuerSlots { issuers: map }
    }

    /// A free slot of `issuer`, held until the permit is dropped: `Err` when no such issuer
    /// is configured, `Ok(None)` when all its slots are taken (the attempt is put back, not
    /// queued, so that it neither holds a global slot nor outlives its lease while it waits).
    fn try_acquire(&self, issuer: &str) -> Result<Option<SemaphorePermit<'_>>, ()> {
        let slot = self.issuers.get(issuer).ok_or(())?;
        let Ok(permit) = slot.permits.try_acquire() else {
            return Ok(None);
        };
        slot.max_in_flight
            .fetch_max(slot.in_flight(), Ordering::SeqCst);
        slot.attempts.fetch_add(1, Ordering::SeqCst);
        Ok(Some(permit))
    }

    /// Each issuer's bound and load.
    pub fn loads(&self) -> Vec<IssuerLoad> {
        self.issuers
            .iter()
            .map(|(name, slot)| IssuerLoad {
                name: name.clone(),
                concurrency: slot.bound,
                in_flight: slot.in_flight(),
                max_in_flight: slot.max_in_flight.load(Ordering::SeqCst),
                attempts: slot.attempts.load(Ordering::SeqCst),
            })
            .collect()
    }
}

/// Starts the reconciler.
pub fn spawn(state: SharedState, config: LifecycleSection) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut id = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut id);
        let owner = format!("server-{}", hex::encode(id));
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let lease = i64::try_from(config.lease.max(30)).unwrap_or(300);
        let _ = ARI_POLL_MIN.set(i64::try_from(config.ari_poll_min.max(1)).unwrap_or(60));
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

/// One attempt: check the issuer's renewal window when the policy follows it, else renew and
/// deploy; then record the outcome and the next action.
async fn attempt(state: &SharedState, record: ManagedRecord, server: &str) {
    let started_at = unix_now();
    let clock = Instant::now();
    let spec: Result<ManagedSpec, String> = serde_json::from_str(&record.spec)
        .map_err(|e| format!("the stored declaration is unreadable ({e}); apply it again"));
    let mut replaces = None;
    if let Ok(spec) = &spec
        && follows_ari(state, spec, &record)
    {
        match check_ari(state, spec, &record).await {
            AriCheck::Later { at, reason } => {
                reschedule(state, &record.name, at, &reason).await;
                return;
            }
            AriCheck::RenewNow { current_der } => replaces = current_der,
        }
    }
    // The agents bound to it get the new certificate through a rollout.
    let bound_agents = match state.store.bindings_of(&record.name).await {
        Ok(bindings) => bindings,
        Err(error) => {
            tracing::warn!(%error, name = %record.name, "could not read the agents bound to a managed certificate");
            reschedule(
                state,
                &record.name,
                unix_now() + 1,
                &record.next_action_reason,
            )
            .await;
            return;
        }
    };
    // A declared key compromise makes the rollout urgent until a new certificate answers it.
    let urgent = record.compromised_at.is_some();
    let result = match &spec {
        Ok(spec) => {
            renew(
                state,
                &record,
                spec,
                replaces.as_deref(),
                !bound_agents.is_empty(),
            )
            .await
        }
        Err(error) => Err(Failed {
            error: error.clone(),
            issuer: "unknown".into(),
            issued: None,
            targets: Vec::new(),
            retry_after: None,
            busy: false,
        }),
    };
    let now = unix_now();
    if let Err(Failed { busy: true, .. }) = &result {
        reschedule(state, &record.name, now + 1, &record.next_action_reason).await;
        return;
    }
    let jitter = jitter_fraction(&record.name);
    match &result {
        Ok((issued, _)) => {
            state
                .metrics
                .renewal(&issued.issuer, true, clock.elapsed().as_secs_f64())
        }
        Err(failed) => state
            .metrics
            .renewal(&failed.issuer, false, clock.elapsed().as_secs_f64()),
    }
    let mut fleet = Vec::new();
    let (outcome, audit) = match result {
        Ok((issued, targets)) => {
            if let (Some(payload), Ok(spec)) = (issued.payload.clone(), &spec) {
                let waves = spec.rollout.waves(bound_agents.len(), urgent);
                let created_at = crate::agents::now_ms();
                // After a compromise there is nothing to go back to, and every agent (bound
                // now or later) gets the new certificate at once.
                let previous_serial = if urgent {
                    None
                } else {
                    state.store.fleet_serial(&record.name).await.ok().flatten()
                };
                fleet.push(FleetWrite::Payload(payload));
                fleet.push(FleetWrite::CreateRollout(NewRollout {
                    managed_name: record.name.clone(),
                    serial: issued.serial.clone(),
                    previous_serial,
                    urgent,
                    agents: bound_agents
                        .iter()
                        .zip(waves)
                        .map(|(binding, wave)| RolloutAgent {
                            agent_id: binding.agent_id.clone(),
                            wave: i64::from(wave),
                            previous_serial: if urgent {
                                None
                            } else {
                                binding.deployed_serial.clone()
                            },
                            confirmed_at: None,
                        })
                        .collect(),
                    requested_at: record.compromised_at.unwrap_or(created_at),
                    created_at,
                }));
                if urgent {
                    fleet.push(FleetWrite::FleetSerial {
                        managed_name: record.name.clone(),
                        serial: issued.serial.clone(),
                    });
                }
            }
            let policy = spec.as_ref().map(|s| s.renewal).unwrap_or_default();
            let (next, reason) =
                next_after_success(state, &issued, policy, jitter, now, &record.name).await;
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
                    key_sealed: issued.key_sealed.clone(),
                    compromise_seen: record.compromised_at,
                    compromise_answered: true,
                },
                audit_event(
                    &record.name,
                    Outcome::Success,
                    serde_json::json!({"serial": issued.serial, "issuer": issued.issuer, "tenant": record.tenant, "server": server, "replaces": replaces.is_some()}),
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
                    key_sealed: record.key_sealed.clone(),
                    compromise_seen: record.compromised_at,
                    compromise_answered: false,
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
            fleet,
            audit: vec![audit],
            ..Change::default()
        })
        .await
    {
        // The lease runs out and the attempt is made again.
        tracing::warn!(%error, name = %record.name, "could not record a renewal attempt");
    } else {
        state.fleet.bump();
    }
}

/// Puts a claimed managed certificate back with a new next action time and no attempt (the
/// lease is released; a renewal requested meanwhile keeps its time, see the store).
async fn reschedule(state: &SharedState, name: &str, at: i64, reason: &str) {
    let change = Change {
        managed_reschedules: vec![ManagedReschedule {
            name: name.to_string(),
            next_action_at: at,
            next_action_reason: reason.to_string(),
        }],
        ..Change::default()
    };
    if let Err(error) = state.store.apply(change).await {
        // The lease runs out and the work is claimed again.
        tracing::warn!(%error, %name, "could not put a managed certificate back");
    }
}

/// Whether this wake-up starts with the issuer's renewal information: the policy follows ARI,
/// an external issuer gave the certificate in force, nothing has failed since and nobody
/// asked for a renewal.
fn follows_ari(state: &SharedState, spec: &ManagedSpec, record: &ManagedRecord) -> bool {
    matches!(spec.renewal, RenewalPolicy::Ari)
        && state.upstreams.knows(&spec.issuer)
        && record.current_serial.is_some()
        && record.consecutive_failures == 0
        && !certkeeper_store::REQUESTED_REASONS.contains(&record.next_action_reason.as_str())
}

/// What a renewal-information check decided.
enum AriCheck {
    /// Not yet: look again at `at`.
    Later { at: i64, reason: String },
    /// Renew now, naming the certificate in force as replaced when it is known.
    RenewNow { current_der: Option<Vec<u8>> },
}

/// The shortest wait between two renewal-information checks (`[lifecycle] ari_poll_min`,
/// set once at start).
static ARI_POLL_MIN: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

fn ari_poll_min() -> i64 {
    ARI_POLL_MIN.get().copied().unwrap_or(60)
}

/// What `issuer` says about the renewal window of the certificate `der`.
async fn ari_answer(state: &SharedState, issuer: &str, der: &[u8], name: &str) -> AriAnswer {
    match state.upstreams.renewal_window(issuer, der).await {
        Ok(Some(window)) => AriAnswer::Window(window),
        Ok(None) => AriAnswer::NotOffered,
        Err(error) => {
            tracing::warn!(%error, %name, "renewal information unavailable; planning without it");
            AriAnswer::Unavailable
        }
    }
}

/// Asks the issuer for the renewal window of the certificate in force.
async fn check_ari(state: &SharedState, spec: &ManagedSpec, record: &ManagedRecord) -> AriCheck {
    let now = unix_now();
    let current = match &record.current_serial {
        Some(serial) => current_certificate(state, &record.name, serial).await,
        None => None,
    };
    let Some(der) = current else {
        return AriCheck::RenewNow { current_der: None };
    };
    let Ok(summary) = certkeeper_pki::parse_certificate(&der) else {
        return AriCheck::RenewNow { current_der: None };
    };
    let answer = ari_answer(state, &spec.issuer, &der, &record.name).await;
    let (at, reason) = next_action(
        summary.not_before,
        summary.not_after,
        spec.renewal,
        answer,
        jitter_fraction(&record.name),
        now,
        ari_poll_min(),
    );
    if at <= now {
        // `replaces` only to an issuer that offers renewal information (RFC 9773 §5).
        AriCheck::RenewNow {
            current_der: matches!(answer, AriAnswer::Window(_)).then_some(der),
        }
    } else {
        AriCheck::Later {
            at,
            reason: reason.as_str().to_string(),
        }
    }
}

/// The next action after a successful renewal.
async fn next_after_success(
    state: &SharedState,
    issued: &Renewed,
    policy: RenewalPolicy,
    jitter: f64,
    now: i64,
    name: &str,
) -> (i64, String) {
    let answer = if matches!(policy, RenewalPolicy::Ari) && state.upstreams.knows(&issued.issuer) {
        ari_answer(state, &issued.issuer, &issued.der, name).await
    } else {
        AriAnswer::NotOffered
    };
    let (at, reason) = next_action(
        issued.not_before,
        issued.not_after,
        policy,
        answer,
        jitter,
        now,
        ari_poll_min(),
    );
    (at, reason.as_str().to_string())
}

/// The DER of the certificate in force, from the inventory.
async fn current_certificate(state: &SharedState, name: &str, serial: &str) -> Option<Vec<u8>> {
    let records = state
        .store
        .certificates_by_serial(serial, unix_now())
        .await
        .ok()?;
    let mine = records
        .iter()
        .find(|r| r.certificate.labels.get("managed").map(String::as_str) == Some(name));
    mine.or(records.first()).map(|r| r.certificate.der.clone())
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
    /// The leaf, DER.
    der: Vec<u8>,
    /// The issuer that provided it.
    issuer: String,
    /// Its key, sealed, when the declaration keeps the key across renewals.
    key_sealed: Option<String>,
    /// What bound agents receive (certificate, chain, sealed key), when there are any.
    payload: Option<AgentPayload>,
}

/// Why an attempt failed, with what it had obtained so far.
struct Failed {
    error: String,
    issuer: String,
    issued: Option<Renewed>,
    targets: Vec<TargetState>,
    /// The issuer's `Retry-After` (Unix seconds): the next attempt is not earlier.
    retry_after: Option<i64>,
    /// Not an attempt: the issuer had no free slot, so the work goes back to be claimed again.
    busy: bool,
}

/// The backoff in force (set once at start from `[lifecycle]`).
static BACKOFF: std::sync::OnceLock<Backoff> = std::sync::OnceLock::new();

/// The key for this renewal: the kept one when the declaration keeps its key (and the
/// algorithm is still the declared one), else a new one.
fn renewal_key(
    state: &SharedState,
    record: &ManagedRecord,
    spec: &ManagedSpec,
) -> Result<SoftwareKey, String> {
    if !spec.key.rotate
        && let Some(sealed) = &record.key_sealed
    {
        let kept = state.sealer.unseal(&record.name, sealed).and_then(|pem| {
            let text =
                std::str::from_utf8(&pem).map_err(|_| "the kept key is not PEM".to_string())?;
            SoftwareKey::from_pem(text).map_err(|e| e.to_string())
        });
        match kept {
            Ok(key) if key.public_key().label() == spec.key.algorithm.name() => return Ok(key),
            Ok(_) => {}
            // A key that cannot be opened must not stop renewals: a new key is made (and kept).
            Err(error) => {
                tracing::warn!(%error, name = %record.name, "the kept key cannot be used; making a new one");
            }
        }
    }
    SoftwareKey::generate(spec.key.algorithm).map_err(|e| format!("key generation: {e}"))
}

/// Obtains a new certificate (from the primary issuer, or the fallback after repeated
/// failures) and deploys it to every target. With `replaces`, an external issuer's order
/// names the certificate it succeeds.
async fn renew(
    state: &SharedState,
    record: &ManagedRecord,
    spec: &ManagedSpec,
    replaces: Option<&[u8]>,
    for_agents: bool,
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
        busy: false,
    };
    let _slot = match state.issuer_slots.try_acquire(&issuer) {
        Ok(Some(slot)) => slot,
        Ok(None) => {
            return Err(Failed {
                busy: true,
                ..refuse(format!("every slot of issuer {issuer:?} is taken"))
            });
        }
        Err(()) => {
            return Err(refuse(format!(
                "issuer {issuer:?} is not configured: use \"internal\" or add an [[issuer]] with that name"
            )));
        }
    };
    let tenant = spec
        .tenant
        .clone()
        .unwrap_or_else(|| Tenant::DEFAULT.to_string());
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    labels.insert("managed".into(), record.name.clone());
    if let Some(owner) = &spec.owner {
        labels.insert("owner".into(), owner.clone());
    }
    let key = renewal_key(state, record, spec).map_err(|e| refuse(e.to_string()))?;
    let csr_der = key
        .csr_der(&spec.sans)
        .map_err(|e| refuse(format!("certificate request: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(key.pkcs8_pem());
    let key_sealed = if spec.key.rotate {
        None
    } else {
        Some(
            state
                .sealer
                .seal(&record.name, key_pem.as_bytes())
                .map_err(refuse)?,
        )
    };
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
                csr: Some(certkeeper_pki::to_pem("CERTIFICATE REQUEST", &csr_der)),
                key_algorithm: None,
                pkcs12_password: None,
                common_name: None,
                sans: spec.sans.clone(),
                lifetime: None,
                labels,
            },
        )
        .await
        .map_err(|problem| refuse(format!("issuance refused: {}", problem.detail)))?;
        let der = pem::parse(&issued.certificate_pem)
            .map(|p| p.into_contents())
            .map_err(|e| refuse(format!("the issued certificate is not PEM: {e}")))?;
        (
            Renewed {
                serial: issued.serial.clone(),
                not_before: parse_time(&issued.not_before),
                not_after: parse_time(&issued.not_after),
                der,
                issuer: issuer.clone(),
                key_sealed,
                payload: None,
            },
            Material {
                serial: issued.serial.clone(),
                certificate_pem: issued.certificate_pem.clone(),
                chain_pem: issued.chain_pem.clone(),
                key_pem: key_pem.to_string(),
            },
        )
    } else {
        let obtained = state
            .upstreams
            .obtain(&issuer, &spec.sans, &csr_der, replaces)
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
                der: obtained.der.clone(),
                issuer: issuer.clone(),
                key_sealed,
                payload: None,
            },
            Material {
                serial: summary.serial,
                certificate_pem: obtained.certificate_pem,
                chain_pem: obtained.chain_pem,
                key_pem: key_pem.to_string(),
            },
        )
    };
    let mut renewed = renewed;
    if for_agents {
        let aad = crate::agents::payload_aad(&record.name, &material.serial);
        renewed.payload = Some(AgentPayload {
            managed_name: record.name.clone(),
            serial: material.serial.clone(),
            certificate_pem: material.certificate_pem.clone(),
            chain_pem: material.chain_pem.clone(),
            key_sealed: state
                .sealer
                .seal(&aad, material.key_pem.as_bytes())
                .map_err(refuse)?,
        });
    }
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
            busy: false,
        })
    }
}

fn parse_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// Deploys to one target (files, nginx or a webhook) and says how it went.
pub async fn deploy(target: &TargetSpec, name: &str, material: &Material) -> TargetState {
    let path = |p: &Option<String>| p.as_ref().map(PathBuf::from);
    let (kind, file_target) = match target {
        TargetSpec::File {
            cert,
            chain,
            fullchain,
            key,
            pkcs12,
            pkcs12_password_file,
            owner,
            mode,
            key_mode,
            reload,
            probe,
        } => (
            "file",
            FileTarget {
                cert: path(cert),
                chain: path(chain),
                fullchain: path(fullchain),
                key: path(key),
                pkcs12: path(pkcs12).zip(path(pkcs12_password_file)),
                owner: owner.clone(),
                // Checked when the declaration was applied.
                mode: mode.as_deref().and_then(|m| parse_mode(m).ok()),
                key_mode: key_mode.as_deref().and_then(|m| parse_mode(m).ok()),
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
        &file_target.pkcs12.as_ref().map(|(p, _)| p.clone()),
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
