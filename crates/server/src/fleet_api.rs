//! The operator side of the fleet (token-authenticated, on the main API): bootstrap tokens,
//! agents and their revocation, rollouts (status, pause, resume, abort) and the one-command
//! compromise response.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use certkeeper_lifecycle::RolloutState;
use certkeeper_store::{AuditEvent, Change, FleetWrite, Outcome, RolloutRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::SharedState;
use crate::agents::{BootstrapTokenCreated, mint_bootstrap, now_ms};
use crate::api::{authorize, json_body};
use crate::auth::{Permission, Principal};
use crate::issuance::rfc3339;
use crate::problem::Problem;
use crate::revocation::{RevokeRequest, revoke};

/// The fleet routes, documented in the OpenAPI document. Every one authenticates before it
/// reads a path parameter, a query or a body.
pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create_bootstrap))
        .routes(routes!(list_agents))
        .routes(routes!(revoke_agent))
        .routes(routes!(list_rollouts))
        .routes(routes!(get_rollout))
        .routes(routes!(act_on_rollout))
        .routes(routes!(compromise))
        .routes(routes!(trust_status, trust_add))
}

fn conflict(slug: &str, title: &str, detail: String) -> Problem {
    Problem::new(StatusCode::CONFLICT, slug, title, detail)
}

/// A bootstrap token request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    /// Tenant of the agent it enrolls (default: the token's own tenant, or `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Lifetime such as "15m" (default 1h, at most `[agents] bootstrap_token_max_ttl`).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Create a one-time bootstrap token for enrolling an agent (admin).
#[utoipa::path(
    post,
    path = "/api/v1/agents/bootstrap-tokens",
    request_body = BootstrapRequest,
    responses((status = 201, body = BootstrapTokenCreated), (status = 403, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn create_bootstrap(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BootstrapTokenCreated>), Problem> {
    let principal = authorize(
        &state,
        &headers,
        Permission::ManageTokens,
        "agent.token.create",
    )
    .await?;
    let request: BootstrapRequest =
        json_body(&state, &principal.token_id, "agent.token.create", body).await?;
    let tenant = request
        .tenant
        .clone()
        .or_else(|| principal.tenant.clone())
        .unwrap_or_else(|| crate::Tenant::DEFAULT.to_string());
    crate::Tenant::validate(&tenant)?;
    principal.require_tenant(&tenant)?;
    let max = state.fleet.config.bootstrap_token_max_ttl;
    let ttl = match &request.ttl {
        Some(text) => crate::config::parse_duration(text)
            .map_err(|e| Problem::malformed(format!("ttl: {e}")))?,
        None => 3600.min(max),
    };
    if ttl == 0 || ttl > max {
        return Err(Problem::malformed(format!(
            "ttl must be between 1s and {max}s ([agents] bootstrap_token_max_ttl); bootstrap tokens are short-lived"
        )));
    }
    let (secret, token) = mint_bootstrap(&tenant, ttl as i64, &principal.token_id)?;
    let created = BootstrapTokenCreated {
        token: secret,
        id: token.id.clone(),
        tenant: tenant.clone(),
        expires_at: rfc3339(token.expires_at),
    };
    state
        .store
        .apply(Change {
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "agent.token.create".into(),
                object: token.id.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({"tenant": tenant, "expires_at": created.expires_at}),
            }],
            fleet: vec![FleetWrite::BootstrapToken(token)],
            ..Change::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// An agent as shown by `certkeeper agent list`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Serial of its identity certificate.
    pub identity_serial: String,
    /// Its expiry, RFC 3339.
    pub identity_not_after: String,
    /// RFC 3339.
    pub enrolled_at: String,
    /// What it deploys, and what each target serves.
    pub bindings: Vec<BindingView>,
}

/// One binding as reported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BindingView {
    /// The managed certificate.
    pub certificate: String,
    /// The local target.
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    /// Serial it serves.
    pub deployed_serial: Option<String>,
    /// Serial last tried.
    pub attempted_serial: Option<String>,
    /// Why that failed.
    pub error: Option<String>,
    /// When the agent reported (Unix ms).
    pub reported_at_ms: i64,
}

async fn agent_view(
    state: &SharedState,
    agent: certkeeper_store::AgentRecord,
) -> Result<AgentView, Problem> {
    let bindings = state
        .store
        .agent_bindings(&agent.id)
        .await?
        .into_iter()
        .map(|b| BindingView {
            certificate: b.managed_name,
            target: serde_json::from_str(&b.target).unwrap_or(serde_json::Value::Null),
            deployed_serial: b.deployed_serial,
            attempted_serial: b.attempted_serial,
            error: b.error,
            reported_at_ms: b.reported_at,
        })
        .collect();
    Ok(AgentView {
        id: agent.id,
        name: agent.name,
        tenant: agent.tenant,
        status: agent.status,
        identity_serial: agent.identity_serial,
        identity_not_after: rfc3339(agent.identity_not_after),
        enrolled_at: rfc3339(agent.enrolled_at),
        bindings,
    })
}

/// Enrolled agents, what they deploy and what each target serves.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    responses((status = 200, body = Vec<AgentView>)),
    tag = "agents"
)]
async fn list_agents(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<AgentView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "agent.list").await?;
    let mut views = Vec::new();
    for agent in state.store.agents().await? {
        if principal.sees(&agent.tenant) {
            views.push(agent_view(&state, agent).await?);
        }
    }
    Ok(Json(views))
}

/// Revoke an agent (by name or id): refused from now on, identity certificate revoked.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{agent}/revoke",
    params(("agent" = String, Path, description = "Agent name or id")),
    responses((status = 200, body = AgentView), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn revoke_agent(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(wanted): Path<String>,
) -> Result<Json<AgentView>, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "agent.revoke").await?;
    let agent = match state.store.agent(&wanted).await? {
        Some(agent) => Some(agent),
        None => state.store.active_agent_named(&wanted).await?,
    }
    .filter(|a| principal.sees(&a.tenant));
    let Some(agent) = agent else {
        return Err(state
            .audit_denial(
                &principal.token_id,
                "agent.revoke",
                &wanted,
                Problem::not_found(format!(
                    "no active agent named {wanted:?} (or with that id) in your tenants; see `certkeeper agent list`"
                )),
            )
            .await);
    };
    if agent.status != "active" {
        return Err(conflict(
            "agent-already-revoked",
            "Agent already revoked",
            format!("agent {} ({}) is already revoked", agent.name, agent.id),
        ));
    }
    state
        .store
        .apply(Change {
            fleet: vec![FleetWrite::RevokeAgent {
                agent_id: agent.id.clone(),
                at: time::OffsetDateTime::now_utc().unix_timestamp(),
            }],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "agent.revoke".into(),
                object: agent.id.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({"name": agent.name, "tenant": agent.tenant}),
            }],
            ..Change::default()
        })
        .await?;
    // Long polls it holds end now.
    state.fleet.bump();
    // Its identity certificates are revoked too, so CRL and OCSP say so.
    for serial in [
        Some(agent.identity_serial.clone()),
        agent.previous_identity_serial.clone(),
    ]
    .into_iter()
    .flatten()
    {
        let system = Principal {
            token_id: principal.token_id.clone(),
            role: crate::auth::Role::Admin,
            tenant: None,
        };
        if let Err(problem) = revoke(
            &state,
            &system,
            RevokeRequest {
                serial: Some(serial.clone()),
                reason: Some("privilegeWithdrawn".into()),
                ..RevokeRequest::default()
            },
        )
        .await
        {
            tracing::warn!(detail = %problem.detail, %serial, "could not revoke an agent identity certificate");
        }
    }
    let agent = state.store.agent(&agent.id).await?.unwrap_or(agent);
    Ok(Json(agent_view(&state, agent).await?))
}

/// A rollout as shown by `certkeeper rollout status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    /// Id.
    pub id: i64,
    /// The managed certificate.
    pub certificate: String,
    /// The new serial.
    pub serial: String,
    /// What agents go back to on a halt or abort.
    pub previous_serial: Option<String>,
    /// `running`, `paused`, `halted`, `aborted` or `completed`.
    pub state: String,
    /// A compromise response (one wave, no halt).
    pub urgent: bool,
    /// Wave released last (0 = canary).
    pub current_wave: i64,
    /// Highest wave.
    pub last_wave: i64,
    /// Why it halted or was aborted.
    pub reason: Option<String>,
    /// When the new certificate was asked for (Unix ms).
    pub requested_at_ms: i64,
    /// When the rollout began (Unix ms).
    pub created_at_ms: i64,
    /// When it finished (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// Agents serving the new serial.
    pub serving_new: usize,
    /// Agents serving something else.
    pub serving_other: usize,
    /// Some agents on the new serial and some not, while the rollout is not running (M5).
    pub partial: bool,
    /// Every agent of the rollout: its wave and what it serves.
    pub agents: Vec<RolloutAgentView>,
}

/// One agent of a rollout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutAgentView {
    /// Agent id.
    pub agent_id: String,
    /// Agent name.
    pub name: String,
    /// Wave (0 = canary).
    pub wave: i64,
    /// Serial it serves, as last reported.
    pub serving: Option<String>,
    /// When it confirmed the new serial (Unix ms).
    pub confirmed_at_ms: Option<i64>,
    /// Its last error.
    pub error: Option<String>,
}

/// Agent names by id (read once per answer, however many rollouts it shows).
async fn agent_names(state: &SharedState) -> Result<HashMap<String, String>, Problem> {
    Ok(state
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

async fn rollout_view(
    state: &SharedState,
    names: &HashMap<String, String>,
    rollout: RolloutRecord,
) -> Result<RolloutView, Problem> {
    let bindings: HashMap<String, certkeeper_store::AgentBinding> = state
        .store
        .bindings_of(&rollout.managed_name)
        .await?
        .into_iter()
        .map(|b| (b.agent_id.clone(), b))
        .collect();
    let agents: Vec<RolloutAgentView> = state
        .store
        .rollout_agents(rollout.id)
        .await?
        .into_iter()
        .map(|member| {
            let binding = bindings.get(&member.agent_id);
            RolloutAgentView {
                name: names.get(&member.agent_id).cloned().unwrap_or_default(),
                wave: member.wave,
                serving: binding.and_then(|b| b.deployed_serial.clone()),
                confirmed_at_ms: member.confirmed_at,
                error: binding.and_then(|b| b.error.clone()),
                agent_id: member.agent_id,
            }
        })
        .collect();
    let serving_new = agents
        .iter()
        .filter(|a| a.serving.as_deref() == Some(rollout.serial.as_str()))
        .count();
    let serving_other = agents.len() - serving_new;
    let running = rollout.state == RolloutState::Running.as_str();
    Ok(RolloutView {
        id: rollout.id,
        certificate: rollout.managed_name,
        serial: rollout.serial,
        previous_serial: rollout.previous_serial,
        state: rollout.state,
        urgent: rollout.urgent,
        current_wave: rollout.current_wave,
        last_wave: rollout.last_wave,
        reason: rollout.reason,
        requested_at_ms: rollout.requested_at,
        created_at_ms: rollout.created_at,
        finished_at_ms: rollout.finished_at,
        serving_new,
        serving_other,
        partial: !running && serving_new > 0 && serving_other > 0,
        agents,
    })
}

/// Which rollouts to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RolloutQuery {
    /// Only this managed certificate's.
    #[serde(default)]
    certificate: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    #[serde(default)]
    limit: Option<i64>,
}

async fn tenant_of(state: &SharedState, name: &str) -> Result<Option<String>, Problem> {
    Ok(state
        .store
        .managed_certificate(name)
        .await?
        .map(|m| m.tenant))
}

/// Rollouts, newest first, with which agent serves which serial.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    params(RolloutQuery),
    responses((status = 200, body = Vec<RolloutView>)),
    tag = "agents"
)]
async fn list_rollouts(
    State(state): State<SharedState>,
    headers: HeaderMap,
    query: Result<Query<RolloutQuery>, QueryRejection>,
) -> Result<Json<Vec<RolloutView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "rollout.list").await?;
    let Query(query) = query.map_err(|e| Problem::malformed(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let names = agent_names(&state).await?;
    let mut views = Vec::new();
    for rollout in state
        .store
        .rollouts(query.certificate.as_deref(), limit)
        .await?
    {
        let tenant = tenant_of(&state, &rollout.managed_name).await?;
        if tenant.is_some_and(|t| principal.sees(&t)) {
            views.push(rollout_view(&state, &names, rollout).await?);
        }
    }
    Ok(Json(views))
}

async fn find_rollout(
    state: &SharedState,
    principal: &Principal,
    id: i64,
) -> Result<RolloutRecord, Problem> {
    let missing = || {
        Problem::not_found(format!(
            "no rollout {id} in your tenants; see `certkeeper rollout status`"
        ))
    };
    let rollout = state.store.rollout(id).await?.ok_or_else(missing)?;
    match tenant_of(state, &rollout.managed_name).await? {
        Some(tenant) if principal.sees(&tenant) => Ok(rollout),
        _ => Err(missing()),
    }
}

fn rollout_id(text: &str) -> Result<i64, Problem> {
    text.parse().map_err(|_| {
        Problem::malformed(format!(
            "{text:?} is not a rollout id; see `certkeeper rollout status`"
        ))
    })
}

/// One rollout: its waves and which agent serves which serial.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}",
    params(("id" = i64, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutView), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn get_rollout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "rollout.get").await?;
    let id = rollout_id(&id)?;
    let rollout = find_rollout(&state, &principal, id).await?;
    Ok(Json(
        rollout_view(&state, &agent_names(&state).await?, rollout).await?,
    ))
}

/// Pause, resume or abort a rollout.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts/{id}/{action}",
    params(("id" = i64, Path, description = "Rollout id"), ("action" = String, Path, description = "pause, resume or abort")),
    responses((status = 200, body = RolloutView), (status = 409, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn act_on_rollout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<RolloutView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "rollout.change").await?;
    let id = rollout_id(&id)?;
    let rollout = find_rollout(&state, &principal, id).await?;
    let current = RolloutState::parse(&rollout.state)
        .ok_or_else(|| Problem::internal("a stored rollout has an unknown state"))?;
    let now = now_ms();
    let (next, released_at, finished_at, reason) = match (action.as_str(), current) {
        ("pause", RolloutState::Running) => {
            (RolloutState::Paused, rollout.wave_released_at, None, None)
        }
        ("resume", RolloutState::Paused | RolloutState::Halted) => {
            // The current wave gets the new certificate again and a fresh health timeout.
            (RolloutState::Running, now, None, None)
        }
        ("abort", RolloutState::Running | RolloutState::Paused | RolloutState::Halted) => (
            RolloutState::Aborted,
            rollout.wave_released_at,
            Some(now),
            Some(format!("aborted by {}", principal.token_id)),
        ),
        ("pause" | "resume" | "abort", _) => {
            return Err(conflict(
                "rollout-state",
                "Not possible in this state",
                format!(
                    "rollout {id} is {}; pause needs a running rollout, resume a paused or halted one, abort an unfinished one",
                    rollout.state
                ),
            ));
        }
        _ => {
            return Err(Problem::not_found(format!(
                "no rollout action {action:?}; use pause, resume or abort"
            )));
        }
    };
    let applied = state
        .store
        .apply(Change {
            fleet: vec![FleetWrite::UpdateRollout {
                id,
                expected_state: rollout.state.clone(),
                expected_wave: rollout.current_wave,
                state: next.as_str().into(),
                current_wave: rollout.current_wave,
                wave_released_at: released_at,
                reason,
                finished_at,
            }],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: format!("rollout.{action}"),
                object: format!("{}#{id}", rollout.managed_name),
                outcome: Outcome::Success,
                detail: serde_json::json!({"from": rollout.state, "to": next.as_str()}),
            }],
            ..Change::default()
        })
        .await;
    match applied {
        Ok(_) => {}
        Err(certkeeper_store::StoreError::Conflict(message)) => {
            return Err(conflict(
                "rollout-moved",
                "The rollout moved on",
                format!("{message}: see `certkeeper rollout status {id}` and try again"),
            ));
        }
        Err(error) => return Err(error.into()),
    }
    state.fleet.bump();
    let rollout = find_rollout(&state, &principal, id).await?;
    Ok(Json(
        rollout_view(&state, &agent_names(&state).await?, rollout).await?,
    ))
}

/// A compromise response request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompromiseRequest {
    /// A managed certificate's name, or the serial of one of its certificates.
    pub certificate: String,
}

/// What the compromise command started.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CompromiseResponse {
    /// The managed certificate.
    pub certificate: String,
    /// Serials revoked with keyCompromise.
    pub revoked: Vec<String>,
    /// Serials that could not be revoked here (issued elsewhere: revoke them at their CA),
    /// with why; the replacement goes ahead regardless.
    #[serde(default)]
    pub not_revoked: Vec<String>,
    /// When the replacement was requested (Unix ms): its rollout has `requested_at_ms` from
    /// this second on.
    pub requested_at_ms: i64,
}

/// Key compromise: revoke (keyCompromise), new key and certificate at once, urgent rollout.
#[utoipa::path(
    post,
    path = "/api/v1/compromise",
    request_body = CompromiseRequest,
    responses((status = 202, body = CompromiseResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn compromise(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CompromiseResponse>), Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "managed.compromise").await?;
    let request: CompromiseRequest =
        json_body(&state, &principal.token_id, "managed.compromise", body).await?;
    let requested_at_ms = now_ms();
    let wanted = request.certificate.trim().to_string();
    let managed = match state.store.managed_certificate(&wanted).await? {
        Some(record) => Some(record),
        None => {
            let serial = crate::revocation::normalize_serial(&wanted)
                .unwrap_or_else(|_| wanted.to_ascii_lowercase());
            let records = state
                .store
                .certificates_by_serial(&serial, time::OffsetDateTime::now_utc().unix_timestamp())
                .await?;
            let name = records
                .iter()
                .find_map(|r| r.certificate.labels.get("managed").cloned());
            match name {
                Some(name) => state.store.managed_certificate(&name).await?,
                None => None,
            }
        }
    };
    let Some(managed) = managed.filter(|m| principal.sees(&m.tenant)) else {
        return Err(state
            .audit_denial(
                &principal.token_id,
                "managed.compromise",
                &wanted,
                Problem::not_found(format!(
                    "{wanted:?} is neither a managed certificate nor the serial of one in your tenants; see `certkeeper status`"
                )),
            )
            .await);
    };
    // Everything the fleet may serve for it: the certificate in force and the fleet's.
    let mut serials: Vec<String> = [managed.current_serial.clone(), managed.fleet_serial.clone()]
        .into_iter()
        .flatten()
        .collect();
    serials.sort();
    serials.dedup();
    let mut revoked = Vec::new();
    let mut not_revoked = Vec::new();
    for serial in &serials {
        match revoke(
            &state,
            &principal,
            RevokeRequest {
                serial: Some(serial.clone()),
                reason: Some("keyCompromise".into()),
                ..RevokeRequest::default()
            },
        )
        .await
        {
            Ok(response) => revoked.extend(response.revoked.into_iter().map(|r| r.serial)),
            // An external issuer's certificate: the key is replaced all the same.
            Err(problem) => not_revoked.push(format!("{serial}: {}", problem.detail)),
        }
    }
    state
        .store
        .apply(Change {
            fleet: vec![FleetWrite::Compromise {
                managed_name: managed.name.clone(),
                at_ms: requested_at_ms,
            }],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "managed.compromise".into(),
                object: managed.name.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({"revoked": revoked, "not_revoked": not_revoked}),
            }],
            ..Change::default()
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CompromiseResponse {
            certificate: managed.name,
            revoked,
            not_revoked,
            requested_at_ms,
        }),
    ))
}

/// Adds a CA certificate to every agent's trust bundle.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustAddRequest {
    /// The CA certificate (a new intermediate or root), PEM.
    pub certificate_pem: String,
}

/// One certificate of the trust bundle.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TrustEntry {
    /// Subject.
    pub subject: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// `in force` (root and issuing chain) or `added` (ahead of its use).
    pub kind: String,
}

/// The trust bundle and which agents hold it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TrustStatus {
    /// SHA-256 of the bundle agents should hold.
    pub bundle_sha256: String,
    /// Its certificates.
    pub certificates: Vec<TrustEntry>,
    /// Active agents.
    pub agents: usize,
    /// Active agents that said they hold this bundle.
    pub agents_holding: usize,
    /// Active agents that have not (yet): names.
    pub missing: Vec<String>,
    /// Every active agent holds it: what it adds may now be used.
    pub ready: bool,
}

/// Add a CA certificate (a new intermediate or root) to every agent's trust bundle (admin).
#[utoipa::path(
    post,
    path = "/api/v1/ca/trust",
    request_body = TrustAddRequest,
    responses((status = 200, body = TrustStatus), (status = 400, body = Problem, content_type = "application/problem+json")),
    tag = "agents"
)]
async fn trust_add(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TrustStatus>, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "ca.trust.add").await?;
    let request: TrustAddRequest =
        json_body(&state, &principal.token_id, "ca.trust.add", body).await?;
    let ders = certkeeper_pki::pem_to_der_certificates(request.certificate_pem.as_bytes())
        .map_err(|e| Problem::malformed(format!("certificate_pem: {e}")))?;
    let [der] = ders.as_slice() else {
        return Err(Problem::malformed(format!(
            "certificate_pem holds {} certificates; add one CA certificate at a time",
            ders.len()
        )));
    };
    let summary = certkeeper_pki::parse_certificate(der)
        .map_err(|e| Problem::malformed(format!("certificate_pem: {e}")))?;
    if !summary.is_ca {
        return Err(Problem::malformed(format!(
            "{} is not a CA certificate (basicConstraints cA is not set); the trust bundle takes roots and intermediates",
            summary.subject
        )));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if summary.not_after <= now {
        return Err(Problem::malformed(format!(
            "{} expired at {}",
            summary.subject,
            rfc3339(summary.not_after)
        )));
    }
    let anchor = certkeeper_store::TrustAnchor {
        fingerprint: summary.fingerprint_sha256.clone(),
        certificate_pem: certkeeper_pki::to_pem("CERTIFICATE", der),
        subject: summary.subject.clone(),
        not_after: summary.not_after,
        added_by: principal.token_id.clone(),
        added_at: now,
    };
    state
        .store
        .apply(Change {
            fleet: vec![FleetWrite::TrustAnchor(anchor)],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "ca.trust.add".into(),
                object: summary.fingerprint_sha256.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({"subject": summary.subject, "not_after": rfc3339(summary.not_after)}),
            }],
            ..Change::default()
        })
        .await?;
    // Waiting agents get the new bundle now.
    state.fleet.bump();
    Ok(Json(trust_view(&state, &principal).await?))
}

/// The trust bundle agents should hold, and which active agents do not yet.
#[utoipa::path(
    get,
    path = "/api/v1/ca/trust",
    responses((status = 200, body = TrustStatus)),
    tag = "agents"
)]
async fn trust_status(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<TrustStatus>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "ca.trust.read").await?;
    Ok(Json(trust_view(&state, &principal).await?))
}

async fn trust_view(state: &SharedState, principal: &Principal) -> Result<TrustStatus, Problem> {
    let bundle = crate::agents::trust_bundle(state).await?;
    let bundle_sha256 = certkeeper_pki::sha256_hex(bundle.as_bytes());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let added: std::collections::HashSet<String> = state
        .store
        .trust_anchors(now)
        .await?
        .into_iter()
        .map(|a| a.fingerprint)
        .collect();
    let mut certificates = Vec::new();
    for der in certkeeper_pki::pem_to_der_certificates(bundle.as_bytes())
        .map_err(|e| Problem::internal(e.to_string()))?
    {
        let summary = certkeeper_pki::parse_certificate(&der)
            .map_err(|e| Problem::internal(e.to_string()))?;
        certificates.push(TrustEntry {
            kind: if added.contains(&summary.fingerprint_sha256) {
                "added".into()
            } else {
                "in force".into()
            },
            subject: summary.subject,
            fingerprint: summary.fingerprint_sha256,
            not_after: rfc3339(summary.not_after),
        });
    }
    let active: Vec<certkeeper_store::AgentRecord> = state
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.status == "active" && principal.sees(&a.tenant))
        .collect();
    let missing: Vec<String> = active
        .iter()
        .filter(|a| a.trust_sha256.as_deref() != Some(bundle_sha256.as_str()))
        .map(|a| a.name.clone())
        .collect();
    Ok(TrustStatus {
        bundle_sha256,
        certificates,
        agents: active.len(),
        agents_holding: active.len() - missing.len(),
        ready: missing.is_empty(),
        missing,
    })
}
