//! Host agents: enrollment with one-time bootstrap tokens, identity certificates renewed by
//! possession, the mutual-TLS listener agents talk to, what each agent should serve (sync,
//! a long poll), and the rollout driver that moves new certificates through the fleet in waves.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use certkeeper_lifecycle::{
    AgentProgress, ManagedSpec, RolloutState, RolloutStep, desired_serial, next_step,
};
use certkeeper_pki::{
    CertificateSummary, ExtendedKeyUsage, KeyKind, KeyUsage, LeafRequest, Profile, SanEntry,
    SanKind, build_leaf, parse_certificate, parse_csr, random_serial, to_pem,
};
use certkeeper_store::{
    AgentBinding, AgentRecord, AuditEvent, BootstrapToken, CertificateSource, Change, FleetWrite,
    Outcome, RolloutRecord,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use utoipa::ToSchema;

use crate::config::AgentsSection;
use crate::problem::Problem;
use crate::{ServerError, SharedState, Tenant};

/// The audit actor of what the rollout driver does.
pub const DRIVER: &str = "rollouts";

/// Most agent connections at once (each enrolled agent holds one, long-polling).
const MAX_AGENT_CONNECTIONS: usize = 20_000;

/// Wakes long-polling agents when what they should serve may have changed, and the driver
/// when an agent reported.
pub struct FleetHub {
    generation: watch::Sender<u64>,
    reports: Notify,
    /// The `[agents]` settings.
    pub config: AgentsSection,
}

impl FleetHub {
    /// A hub for these settings.
    pub fn new(config: AgentsSection) -> FleetHub {
        FleetHub {
            generation: watch::channel(0).0,
            reports: Notify::new(),
            config,
        }
    }

    /// Something agents may need changed: every waiting sync looks again.
    pub fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The client certificate a connection presented (DER), if any.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn random_hex(bytes: usize) -> Result<String, Problem> {
    let mut buffer = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buffer).map_err(|_| Problem::internal("random generator failed"))?;
    Ok(hex::encode(buffer))
}

/// The URI in an agent's identity certificate.
fn agent_uri(id: &str) -> String {
    format!("urn:certkeeper:agent:{id}")
}

// ---------------------------------------------------------------------------------------
// Bootstrap tokens
// ---------------------------------------------------------------------------------------

/// A bootstrap token as created: the secret is shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BootstrapTokenCreated {
    /// The token for `certkeeper agent --bootstrap-token` (shown only now).
    pub token: String,
    /// Its id.
    pub id: String,
    /// Tenant of the agent it enrolls.
    pub tenant: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// Mints a bootstrap token (`ckb_<id>.<secret>`) valid for `ttl_seconds`.
pub fn mint_bootstrap(
    tenant: &str,
    ttl_seconds: i64,
    created_by: &str,
) -> Result<(String, BootstrapToken), Problem> {
    let fresh = crate::auth::FreshSecret::new()?;
    let now = now_s();
    Ok((
        format!("ckb_{}.{}", fresh.id, fresh.secret),
        BootstrapToken {
            id: fresh.id,
            secret_sha256: fresh.secret_sha256,
            tenant: tenant.to_string(),
            created_by: created_by.to_string(),
            created_at: now,
            expires_at: now + ttl_seconds,
            used_at: None,
            used_by: None,
        },
    ))
}

/// Checks a presented bootstrap token; the problem says exactly why it is refused.
async fn check_bootstrap(
    state: &SharedState,
    presented: &str,
    wanted_tenant: Option<&str>,
) -> Result<BootstrapToken, Problem> {
    let invalid = |why: &str| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-bootstrap-token",
            "Invalid bootstrap token",
            format!("{why}; create one with `certkeeper agent token create`"),
        )
    };
    let (id, secret) = presented
        .trim()
        .strip_prefix("ckb_")
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(|| invalid("a bootstrap token looks like ckb_<id>.<secret>"))?;
    let token = state
        .store
        .bootstrap_token(id)
        .await?
        .ok_or_else(|| invalid("no such bootstrap token"))?;
    if !crate::auth::secret_matches(&token.secret_sha256, secret) {
        return Err(invalid("no such bootstrap token"));
    }
    if let Some(used_at) = token.used_at {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "bootstrap-token-used",
            "Bootstrap token already used",
            format!(
                "bootstrap token {id} enrolled agent {} at {}; a token enrolls one agent once, create a new one with `certkeeper agent token create`",
                token.used_by.as_deref().unwrap_or("?"),
                crate::issuance::rfc3339(used_at)
            ),
        ));
    }
    if token.expires_at <= now_s() {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "bootstrap-token-expired",
            "Bootstrap token expired",
            format!(
                "bootstrap token {id} expired at {}; create a new one with `certkeeper agent token create`",
                crate::issuance::rfc3339(token.expires_at)
            ),
        ));
    }
    if let Some(wanted) = wanted_tenant
        && wanted != token.tenant
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "bootstrap-token-wrong-tenant",
            "Bootstrap token of another tenant",
            format!(
                "this agent enrolls into tenant {wanted:?} but bootstrap token {id} is for tenant {:?}; use a token created with `--tenant {wanted}`",
                token.tenant
            ),
        ));
    }
    Ok(token)
}

// ---------------------------------------------------------------------------------------
// Identity certificates
// ---------------------------------------------------------------------------------------

/// A new identity certificate for an agent.
struct Identity {
    der: Vec<u8>,
    summary: CertificateSummary,
    chain_pem: String,
}

fn identity_profile(lifetime: u64) -> Profile {
    Profile {
        name: "certkeeper-agent".into(),
        description: "certkeeper host agent identity (mutual TLS)".into(),
        default_validity_seconds: lifetime,
        // Room for the minute of backdating.
        max_validity_seconds: lifetime + 120,
        key_kinds: vec![
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::Ed25519,
            KeyKind::Rsa,
        ],
        min_rsa_bits: 2048,
        key_usage: vec![KeyUsage::DigitalSignature],
        extended_key_usage: vec![ExtendedKeyUsage::ClientAuth],
        san_kinds: vec![SanKind::Uri],
        cabf_server: false,
    }
}

fn issue_identity(state: &SharedState, agent_id: &str, csr_pem: &str) -> Result<Identity, Problem> {
    let csr =
        parse_csr(csr_pem.as_bytes()).map_err(|e| Problem::malformed(format!("csr_pem: {e}")))?;
    let lifetime = state.fleet.config.identity_lifetime.max(10);
    let profile = identity_profile(lifetime);
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| Problem::internal(e.to_string()))?;
    let not_after = (now + time::Duration::seconds(lifetime as i64))
        .min(time::OffsetDateTime::from_unix_timestamp(state.ca.issuing_not_after).unwrap_or(now));
    let sans = [SanEntry::Uri(agent_uri(agent_id))];
    let serial = random_serial().map_err(|e| Problem::internal(e.to_string()))?;
    let der = build_leaf(
        &LeafRequest {
            profile: &profile,
            public_key: &csr.public_key,
            common_name: None,
            sans: &sans,
            serial,
            not_before: now - time::Duration::seconds(60),
            not_after,
            urls: &state.urls,
        },
        &state.ca.issuer,
    )
    .map_err(|e| Problem::malformed(format!("the agent's key cannot be certified: {e}")))?;
    state.metrics.key_use("issuing", "agent");
    let summary = parse_certificate(&der).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(Identity {
        der,
        summary,
        chain_pem: state.ca.chain_pem.clone(),
    })
}

fn identity_row(identity: &Identity, agent_id: &str) -> certkeeper_store::NewCertificate {
    let mut labels = BTreeMap::new();
    labels.insert("agent".to_string(), agent_id.to_string());
    crate::inventory::record(
        identity.summary.clone(),
        identity.der.clone(),
        crate::inventory::Provenance {
            profile: Some("certkeeper-agent".into()),
            tenant: Tenant::SYSTEM.into(),
            requester: "certkeeper".into(),
            source: CertificateSource::Issued,
            labels,
            crl_shard: 0,
        },
    )
}

/// The PEM every agent trusts: the root, the issuing chain, and the CA certificates added
/// ahead of their use (`certkeeper ca trust add`).
pub async fn trust_bundle(state: &SharedState) -> Result<String, Problem> {
    let mut bundle = format!("{}{}", state.ca.root_pem, state.ca.chain_pem);
    for anchor in state.store.trust_anchors(now_s()).await? {
        bundle.push_str(&anchor.certificate_pem);
    }
    Ok(bundle)
}

// ---------------------------------------------------------------------------------------
// The agent listener
// ---------------------------------------------------------------------------------------

/// Starts the agent listener: TLS with optional client certificates verified against the CA
/// root; every route but enrollment then requires one (checked per request against the store,
/// so a revoked agent is refused at once).
pub async fn listen(
    state: SharedState,
    address: SocketAddr,
    chain_pem: &str,
    key_pem: &str,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let listen_error = |e: String| ServerError::Listen(format!("agent listener: {e}"));
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| listen_error(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| listen_error(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            state.ca.root_der.clone(),
        ))
        .map_err(|e| listen_error(e.to_string()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| listen_error(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| listen_error(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| ServerError::Listen(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| listen_error(e.to_string()))?;
    let app = router(state.clone());
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_AGENT_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(%error, "agent listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                // Over the bound: refuse by closing.
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let peer = PeerCertificate(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| c.as_ref().to_vec()),
                );
                let service = tower::ServiceExt::map_request(
                    app,
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(peer.clone());
                        request
                    },
                );
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let _ = builder
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(service),
                    )
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn router(state: SharedState) -> Router {
    Router::new()
        .route("/agent/v1/enroll", post(enroll))
        .route("/agent/v1/renew", post(renew_identity))
        .route("/agent/v1/sync", post(sync))
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .fallback(|| async {
            Problem::not_found("no such agent endpoint; agents use /agent/v1/enroll, /agent/v1/renew and /agent/v1/sync")
        })
        .with_state(state)
}

/// The agent presenting this connection's client certificate, if it is active and the
/// certificate is its current (or just renewed-from) identity.
async fn authenticate(
    state: &SharedState,
    peer: &PeerCertificate,
) -> Result<(AgentRecord, CertificateSummary), Problem> {
    let unauthorized = |slug: &str, title: &str, detail: String| {
        Problem::new(StatusCode::UNAUTHORIZED, slug, title, detail)
    };
    let der = peer.0.as_ref().ok_or_else(|| {
        unauthorized(
            "agent-identity-required",
            "Client certificate required",
            "this endpoint needs the agent's identity certificate (mutual TLS); enroll first with a bootstrap token".into(),
        )
    })?;
    let summary = parse_certificate(der).map_err(|e| Problem::malformed(e.to_string()))?;
    let agent_id = summary
        .sans
        .iter()
        .find_map(|s| match s {
            SanEntry::Uri(uri) => uri
                .strip_prefix("urn:certkeeper:agent:")
                .map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| {
            unauthorized(
                "not-an-agent-identity",
                "Not an agent identity",
                "the client certificate is not a certkeeper agent identity".into(),
            )
        })?;
    let agent = state.store.agent(&agent_id).await?.ok_or_else(|| {
        unauthorized(
            "unknown-agent",
            "Unknown agent",
            format!(
                "agent {agent_id} is not enrolled here; enroll again with a new bootstrap token"
            ),
        )
    })?;
    if agent.status != "active" {
        return Err(unauthorized(
            "agent-revoked",
            "Agent revoked",
            format!(
                "agent {} ({agent_id}) was revoked at {}; it must enroll again with a new bootstrap token",
                agent.name,
                crate::issuance::rfc3339(agent.revoked_at.unwrap_or(0))
            ),
        ));
    }
    if summary.serial != agent.identity_serial
        && agent.previous_identity_serial.as_deref() != Some(summary.serial.as_str())
    {
        return Err(unauthorized(
            "agent-identity-superseded",
            "Identity superseded",
            format!(
                "certificate {} is no longer agent {}'s identity; use the renewed one",
                summary.serial, agent.name
            ),
        ));
    }
    Ok((agent, summary))
}

// ---------------------------------------------------------------------------------------
// Enrollment and identity renewal
// ---------------------------------------------------------------------------------------

/// An enrollment request.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time bootstrap token.
    pub token: String,
    /// The agent's name (unique among active agents), such as the host name.
    pub name: String,
    /// The tenant the agent expects to join (refused if the token is for another).
    #[serde(default)]
    pub tenant: Option<String>,
    /// CSR for the identity key (PEM).
    pub csr_pem: String,
}

/// An identity certificate as delivered.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityResponse {
    /// Agent id.
    pub agent_id: String,
    /// Agent name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Identity certificate and chain (PEM).
    pub certificate_pem: String,
    /// CA certificates to trust (PEM).
    pub trust_bundle_pem: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

async fn enroll(
    State(state): State<SharedState>,
    Json(request): Json<EnrollRequest>,
) -> Result<Json<IdentityResponse>, Problem> {
    let actor = format!("agent:{}", request.name);
    match enroll_checked(&state, &request).await {
        Ok(response) => Ok(Json(response)),
        Err(problem) => Err(state
            .audit_denial(&actor, "agent.enroll", &request.name, problem)
            .await),
    }
}

async fn enroll_checked(
    state: &SharedState,
    request: &EnrollRequest,
) -> Result<IdentityResponse, Problem> {
    let token = check_bootstrap(state, &request.token, request.tenant.as_deref()).await?;
    if !valid_agent_name(&request.name) {
        return Err(Problem::malformed(
            "name must be 1-128 letters, digits, '.', '-' or '_'",
        ));
    }
    if state
        .store
        .active_agent_named(&request.name)
        .await?
        .is_some()
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "agent-name-taken",
            "Agent name taken",
            format!(
                "an active agent is already called {:?}; choose another name or revoke it first with `certkeeper agent revoke {}`",
                request.name, request.name
            ),
        ));
    }
    let agent_id = random_hex(16)?;
    let identity = issue_identity(state, &agent_id, &request.csr_pem)?;
    let agent = AgentRecord {
        id: agent_id.clone(),
        name: request.name.clone(),
        tenant: token.tenant.clone(),
        status: "active".into(),
        identity_serial: identity.summary.serial.clone(),
        previous_identity_serial: None,
        identity_not_after: identity.summary.not_after,
        enrolled_at: now_s(),
        revoked_at: None,
        trust_sha256: None,
    };
    let change = Change {
        certificates: vec![identity_row(&identity, &agent_id)],
        fleet: vec![FleetWrite::Enroll {
            token_id: token.id.clone(),
            agent,
        }],
        audit: vec![AuditEvent {
            actor: format!("bootstrap:{}", token.id),
            action: "agent.enroll".into(),
            object: agent_id.clone(),
            outcome: Outcome::Success,
            detail: serde_json::json!({"name": request.name, "tenant": token.tenant, "identity_serial": identity.summary.serial}),
        }],
        ..Change::default()
    };
    state.store.apply(change).await.map_err(|e| match e {
        certkeeper_store::StoreError::Conflict(message) if message.contains("bootstrap token") => Problem::new(
            StatusCode::CONFLICT,
            "bootstrap-token-used",
            "Bootstrap token already used",
            "the bootstrap token was used by another enrollment at the same time; create a new one with `certkeeper agent token create`",
        ),
        // The token was not used: the whole change rolled back.
        certkeeper_store::StoreError::Conflict(_) => Problem::new(
            StatusCode::CONFLICT,
            "agent-name-taken",
            "Agent name taken",
            format!(
                "an active agent called {:?} enrolled at the same time; choose another name (the bootstrap token is still unused)",
                request.name
            ),
        ),
        other => Problem::from(other),
    })?;
    Ok(IdentityResponse {
        agent_id,
        name: request.name.clone(),
        tenant: token.tenant,
        certificate_pem: format!(
            "{}{}",
            to_pem("CERTIFICATE", &identity.der),
            identity.chain_pem
        ),
        trust_bundle_pem: trust_bundle(state).await?,
        not_after: identity.summary.not_after,
    })
}

/// A renewal of the agent's identity (by possession of the current one).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RenewIdentityRequest {
    /// CSR for the (new) identity key, PEM.
    pub csr_pem: String,
}

async fn renew_identity(
    State(state): State<SharedState>,
    Extension(peer): Extension<PeerCertificate>,
    Json(request): Json<RenewIdentityRequest>,
) -> Result<Json<IdentityResponse>, Problem> {
    let (agent, _) = match authenticate(&state, &peer).await {
        Ok(found) => found,
        Err(problem) => {
            return Err(state
                .audit_denial("agent:unknown", "agent.renew", "identity", problem)
                .await);
        }
    };
    let identity = issue_identity(&state, &agent.id, &request.csr_pem)?;
    state
        .store
        .apply(Change {
            certificates: vec![identity_row(&identity, &agent.id)],
            fleet: vec![FleetWrite::RenewIdentity {
                agent_id: agent.id.clone(),
                serial: identity.summary.serial.clone(),
                not_after: identity.summary.not_after,
            }],
            audit: vec![AuditEvent {
                actor: format!("agent:{}", agent.id),
                action: "agent.renew".into(),
                object: agent.id.clone(),
                outcome: Outcome::Success,
                detail: serde_json::json!({"name": agent.name, "identity_serial": identity.summary.serial, "previous": agent.identity_serial}),
            }],
            ..Change::default()
        })
        .await?;
    Ok(Json(IdentityResponse {
        agent_id: agent.id,
        name: agent.name,
        tenant: agent.tenant,
        certificate_pem: format!(
            "{}{}",
            to_pem("CERTIFICATE", &identity.der),
            identity.chain_pem
        ),
        trust_bundle_pem: trust_bundle(&state).await?,
        not_after: identity.summary.not_after,
    }))
}

// ---------------------------------------------------------------------------------------
// Sync: report and learn what to serve
// ---------------------------------------------------------------------------------------

/// What an agent reports about one of its local targets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BindingReport {
    /// The managed certificate deployed there.
    pub certificate: String,
    /// The target (the agent's declaration, for status).
    pub target: serde_json::Value,
    /// Serial the target serves now.
    #[serde(default)]
    pub deployed_serial: Option<String>,
    /// Serial last tried.
    #[serde(default)]
    pub attempted_serial: Option<String>,
    /// The offer that try answered ([`Delivery::attempt`]).
    #[serde(default)]
    pub attempt: i64,
    /// Why that try failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A sync request.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Every local target, with its state.
    pub bindings: Vec<BindingReport>,
    /// SHA-256 of the trust bundle the agent holds.
    #[serde(default)]
    pub trust_sha256: Option<String>,
    /// Wait up to this many seconds for news (capped by `[agents] sync_wait`).
    #[serde(default)]
    pub wait_seconds: u64,
}

/// A certificate for the agent to deploy.
#[derive(Serialize, Deserialize)]
pub struct Delivery {
    /// The managed certificate.
    pub certificate: String,
    /// Serial.
    pub serial: String,
    /// Leaf, PEM.
    pub certificate_pem: String,
    /// Chain without the leaf, PEM.
    pub chain_pem: String,
    /// Private key, PEM (delivered only here, over mutual TLS).
    pub key_pem: String,
    /// Which offer of this serial this is: a serial that failed is tried again only when the
    /// offer changes (a resumed rollout makes a new one).
    pub attempt: i64,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("certificate", &self.certificate)
            .field("serial", &self.serial)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What the server says about one binding.
#[derive(Debug, Serialize, Deserialize)]
pub struct BindingAnswer {
    /// The managed certificate.
    pub certificate: String,
    /// The serial the agent should serve (none yet: leave the target as it is).
    pub desired_serial: Option<String>,
    /// Which offer of that serial this is (see [`Delivery::attempt`]).
    pub attempt: i64,
    /// Why the binding cannot be served.
    pub error: Option<String>,
}

/// The answer to a sync.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The agent's id.
    pub agent_id: String,
    /// Per binding: what to serve.
    pub bindings: Vec<BindingAnswer>,
    /// Certificates to deploy now.
    pub deliveries: Vec<Delivery>,
    /// CA certificates to trust (PEM).
    pub trust_bundle_pem: String,
    /// Its SHA-256.
    pub trust_sha256: String,
    /// Renew the identity now (two thirds of its life are over).
    pub renew_identity: bool,
}

async fn sync(
    State(state): State<SharedState>,
    Extension(peer): Extension<PeerCertificate>,
    Json(request): Json<SyncRequest>,
) -> Result<Json<SyncResponse>, Problem> {
    let (agent, identity) = match authenticate(&state, &peer).await {
        Ok(found) => found,
        Err(problem) => {
            return Err(state
                .audit_denial("agent:unknown", "agent.sync", "sync", problem)
                .await);
        }
    };
    let mut updates = state.fleet.subscribe();
    let errors = record_reports(&state, &agent, &request.bindings).await?;
    // What the agent holds now, for `certkeeper ca trust status`.
    if let Some(held) = &request.trust_sha256
        && agent.trust_sha256.as_deref() != Some(held.as_str())
    {
        state
            .store
            .apply(Change {
                fleet: vec![FleetWrite::TrustAck {
                    agent_id: agent.id.clone(),
                    sha256: held.clone(),
                }],
                ..Change::default()
            })
            .await?;
    }
    // Renew when a third of the configured lifetime is left (the certificate's own validity
    // starts a minute early, so it is not the measure).
    let lifetime = i64::try_from(state.fleet.config.identity_lifetime.max(10)).unwrap_or(86_400);
    let renew_identity = now_s() >= identity.not_after - lifetime / 3;
    let wait = Duration::from_secs(request.wait_seconds.min(state.fleet.config.sync_wait));
    let deadline = tokio::time::Instant::now() + wait;
    let mut first: Option<Vec<(Option<String>, i64)>> = None;
    loop {
        updates.borrow_and_update();
        // Revoked while waiting: nothing more for it.
        let current = state.store.agent(&agent.id).await?;
        if current.as_ref().is_none_or(|a| a.status != "active") {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "agent-revoked",
                "Agent revoked",
                format!(
                    "agent {} ({}) was revoked; it must enroll again with a new bootstrap token (remove identity.pem from its state directory first)",
                    agent.name, agent.id
                ),
            ));
        }
        let (answers, deliveries) = desired(&state, &agent, &request.bindings, &errors).await?;
        let bundle = trust_bundle(&state).await?;
        let bundle_sha = certkeeper_pki::sha256_hex(bundle.as_bytes());
        let offers: Vec<(Option<String>, i64)> = answers
            .iter()
            .map(|a| (a.desired_serial.clone(), a.attempt))
            .collect();
        let changed = first.as_ref().is_some_and(|f| *f != offers);
        first.get_or_insert(offers);
        let news = !deliveries.is_empty()
            || changed
            || renew_identity
            || request.trust_sha256.as_deref() != Some(bundle_sha.as_str());
        if news
            || tokio::time::timeout_at(deadline, updates.changed())
                .await
                .is_err()
        {
            return Ok(Json(SyncResponse {
                agent_id: agent.id,
                bindings: answers,
                deliveries,
                trust_bundle_pem: bundle,
                trust_sha256: bundle_sha,
                renew_identity,
            }));
        }
    }
}

/// Stores what changed in the agent's reports (and forgets bindings it no longer has);
/// returns, per certificate, why a binding cannot be served.
async fn record_reports(
    state: &SharedState,
    agent: &AgentRecord,
    reports: &[BindingReport],
) -> Result<HashMap<String, String>, Problem> {
    let stored: HashMap<String, AgentBinding> = state
        .store
        .agent_bindings(&agent.id)
        .await?
        .into_iter()
        .map(|b| (b.managed_name.clone(), b))
        .collect();
    let mut errors = HashMap::new();
    let mut writes = Vec::new();
    let mut renew_now = Vec::new();
    for report in reports {
        let managed = state.store.managed_certificate(&report.certificate).await?;
        let Some(managed) = managed.filter(|m| m.tenant == agent.tenant) else {
            errors.insert(
                report.certificate.clone(),
                format!(
                    "no managed certificate {:?} in tenant {:?}; declare it with `certkeeper apply`",
                    report.certificate, agent.tenant
                ),
            );
            continue;
        };
        let target = report.target.to_string();
        let changed = stored.get(&report.certificate).is_none_or(|s| {
            s.target != target
                || s.deployed_serial != report.deployed_serial
                || s.attempted_serial != report.attempted_serial
                || s.attempt != report.attempt
                || s.error != report.error
        });
        if changed {
            writes.push(FleetWrite::Binding(AgentBinding {
                agent_id: agent.id.clone(),
                managed_name: report.certificate.clone(),
                target,
                deployed_serial: report.deployed_serial.clone(),
                attempted_serial: report.attempted_serial.clone(),
                attempt: report.attempt,
                error: report.error.clone(),
                reported_at: now_ms(),
            }));
        }
        // A first binding of a certificate the fleet has no current copy of (none yet, or
        // one older than the certificate in force): obtain one now.
        if !stored.contains_key(&report.certificate)
            && managed.fleet_serial.as_deref().is_none_or(|fleet| {
                managed
                    .current_serial
                    .as_deref()
                    .is_some_and(|current| current != fleet)
            })
            && state
                .store
                .rollouts(Some(&managed.name), 1)
                .await?
                .first()
                .is_none_or(|r| !RolloutState::parse(&r.state).is_some_and(|s| s.is_active()))
        {
            renew_now.push(managed.name.clone());
        }
    }
    for name in stored.keys() {
        if !reports.iter().any(|r| &r.certificate == name) {
            writes.push(FleetWrite::Unbind {
                agent_id: agent.id.clone(),
                managed_name: name.clone(),
            });
        }
    }
    if !writes.is_empty() || !renew_now.is_empty() {
        state
            .store
            .apply(Change {
                fleet: writes,
                managed_renew_now: renew_now,
                ..Change::default()
            })
            .await?;
        state.fleet.reports.notify_one();
    }
    Ok(errors)
}

/// What each binding should serve, and the deliveries for those that serve something else.
async fn desired(
    state: &SharedState,
    agent: &AgentRecord,
    reports: &[BindingReport],
    errors: &HashMap<String, String>,
) -> Result<(Vec<BindingAnswer>, Vec<Delivery>), Problem> {
    let mut answers = Vec::new();
    let mut deliveries = Vec::new();
    for report in reports {
        if let Some(error) = errors.get(&report.certificate) {
            answers.push(BindingAnswer {
                certificate: report.certificate.clone(),
                desired_serial: None,
                attempt: 0,
                error: Some(error.clone()),
            });
            continue;
        }
        let (serial, attempt) = desired_for(state, &report.certificate, &agent.id).await?;
        let mut error = None;
        if let Some(serial) = &serial
            && report.deployed_serial.as_deref() != Some(serial.as_str())
        {
            match payload(state, &report.certificate, serial, attempt).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(why) => error = Some(why),
            }
        }
        answers.push(BindingAnswer {
            certificate: report.certificate.clone(),
            desired_serial: serial,
            attempt,
            error,
        });
    }
    Ok((answers, deliveries))
}

/// The serial `agent_id` should serve for a managed certificate, and which offer of it this is
/// (the release time of the rollout's current wave, or 0 outside rollouts).
pub async fn desired_for(
    state: &SharedState,
    managed_name: &str,
    agent_id: &str,
) -> Result<(Option<String>, i64), Problem> {
    if let Some((rollout, Some(member))) = state
        .store
        .latest_rollout_for(managed_name, agent_id)
        .await?
        && let Some(rollout_state) = RolloutState::parse(&rollout.state)
        && rollout_state != RolloutState::Completed
    {
        // Back to what this agent served when the rollout began.
        let previous = member
            .previous_serial
            .as_deref()
            .or(rollout.previous_serial.as_deref());
        let serial = desired_serial(
            rollout_state,
            u32::try_from(member.wave).unwrap_or(0),
            u32::try_from(rollout.current_wave).unwrap_or(0),
            &rollout.serial,
            previous,
        )
        .map(str::to_string);
        return Ok((serial, rollout.wave_released_at));
    }
    Ok((state.store.fleet_serial(managed_name).await?, 0))
}

async fn payload(
    state: &SharedState,
    name: &str,
    serial: &str,
    attempt: i64,
) -> Result<Delivery, String> {
    let payload = state
        .store
        .agent_payload(name, serial)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the server has no copy of {serial} for agents"))?;
    let key = state
        .sealer
        .unseal(&payload_aad(name, serial), &payload.key_sealed)?;
    let key_pem = String::from_utf8(key.to_vec()).map_err(|_| "the stored key is not PEM")?;
    Ok(Delivery {
        certificate: name.to_string(),
        serial: serial.to_string(),
        certificate_pem: payload.certificate_pem,
        chain_pem: payload.chain_pem,
        key_pem,
        attempt,
    })
}

/// The associated data a payload key is sealed with.
pub fn payload_aad(name: &str, serial: &str) -> String {
    format!("agent-payload:{name}:{serial}")
}

// ---------------------------------------------------------------------------------------
// Rollouts
// ---------------------------------------------------------------------------------------

/// Starts the rollout driver: every 250 ms (or at once after an agent reported) each running
/// rollout confirms agents, releases the next wave, completes or halts.
pub fn spawn_driver(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = state.fleet.reports.notified() => {}
            }
            match state.store.running_rollouts().await {
                Ok(rollouts) => {
                    for rollout in rollouts {
                        if let Err(error) = drive(&state, &rollout).await {
                            tracing::warn!(error = %error.detail, id = rollout.id, "could not move a rollout on");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read running rollouts"),
            }
        }
    })
}

async fn drive(state: &SharedState, rollout: &RolloutRecord) -> Result<(), Problem> {
    let spec: ManagedSpec = match state
        .store
        .managed_certificate(&rollout.managed_name)
        .await?
    {
        Some(record) => serde_json::from_str(&record.spec)
            .map_err(|e| Problem::internal(format!("stored declaration: {e}")))?,
        None => return Ok(()),
    };
    let bindings: HashMap<String, AgentBinding> = state
        .store
        .bindings_of(&rollout.managed_name)
        .await?
        .into_iter()
        .map(|b| (b.agent_id.clone(), b))
        .collect();
    let agents = state.store.rollout_agents(rollout.id).await?;
    let now = now_ms();
    let mut writes = Vec::new();
    let mut current = Vec::new();
    for member in &agents {
        // Agents revoked or unbound since the rollout began are not waited for.
        let Some(binding) = bindings.get(&member.agent_id) else {
            continue;
        };
        let serving = binding.deployed_serial.as_deref() == Some(rollout.serial.as_str());
        if serving && member.confirmed_at.is_none() && member.wave <= rollout.current_wave {
            writes.push(FleetWrite::Confirm {
                rollout_id: rollout.id,
                agent_id: member.agent_id.clone(),
                at: binding.reported_at,
            });
        }
        if member.wave != rollout.current_wave {
            continue;
        }
        let progress = if serving {
            AgentProgress::Confirmed {
                at: binding.reported_at / 1000,
            }
        } else if binding.attempted_serial.as_deref() == Some(rollout.serial.as_str())
            && binding.attempt == rollout.wave_released_at
            && let Some(error) = &binding.error
        {
            AgentProgress::Failed {
                error: error.clone(),
            }
        } else {
            AgentProgress::Waiting
        };
        current.push((member.agent_id.clone(), progress));
    }
    let step = next_step(
        &spec.rollout,
        rollout.urgent,
        u32::try_from(rollout.current_wave).unwrap_or(0),
        u32::try_from(rollout.last_wave).unwrap_or(0),
        rollout.wave_released_at / 1000,
        &current,
        now / 1000,
    );
    let (update, action, detail) = match step {
        RolloutStep::Wait => (None, "", serde_json::Value::Null),
        RolloutStep::Release(wave) => (
            Some(FleetWrite::UpdateRollout {
                id: rollout.id,
                expected_state: rollout.state.clone(),
                expected_wave: rollout.current_wave,
                state: RolloutState::Running.as_str().into(),
                current_wave: i64::from(wave),
                wave_released_at: now,
                reason: None,
                finished_at: None,
            }),
            "rollout.wave",
            serde_json::json!({"wave": wave, "serial": rollout.serial}),
        ),
        RolloutStep::Complete => {
            writes.push(FleetWrite::FleetSerial {
                managed_name: rollout.managed_name.clone(),
                serial: rollout.serial.clone(),
            });
            (
                Some(FleetWrite::UpdateRollout {
                    id: rollout.id,
                    expected_state: rollout.state.clone(),
                    expected_wave: rollout.current_wave,
                    state: RolloutState::Completed.as_str().into(),
                    current_wave: rollout.current_wave,
                    wave_released_at: rollout.wave_released_at,
                    reason: None,
                    finished_at: Some(now),
                }),
                "rollout.complete",
                serde_json::json!({"serial": rollout.serial, "agents": agents.len(), "duration_ms": now - rollout.requested_at}),
            )
        }
        RolloutStep::Halt(reason) => (
            Some(FleetWrite::UpdateRollout {
                id: rollout.id,
                expected_state: rollout.state.clone(),
                expected_wave: rollout.current_wave,
                state: RolloutState::Halted.as_str().into(),
                current_wave: rollout.current_wave,
                wave_released_at: rollout.wave_released_at,
                reason: Some(reason.clone()),
                finished_at: Some(now),
            }),
            "rollout.halt",
            serde_json::json!({"serial": rollout.serial, "reason": reason, "wave": rollout.current_wave}),
        ),
    };
    if writes.is_empty() && update.is_none() {
        return Ok(());
    }
    let mut audit = Vec::new();
    if let Some(update) = update {
        writes.push(update);
        audit.push(AuditEvent {
            actor: DRIVER.into(),
            action: action.into(),
            object: format!("{}#{}", rollout.managed_name, rollout.id),
            outcome: if action == "rollout.halt" {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            detail,
        });
    }
    match state
        .store
        .apply(Change {
            fleet: writes,
            audit,
            ..Change::default()
        })
        .await
    {
        Ok(_) => {
            if rollout.urgent && action == "rollout.complete" {
                state
                    .metrics
                    .time_to_replace_seconds
                    .observe((now - rollout.requested_at).max(0) as f64 / 1000.0);
            }
        }
        // Paused, aborted or moved on by someone else since it was read: look again next tick.
        Err(certkeeper_store::StoreError::Conflict(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    state.fleet.bump();
    Ok(())
}
