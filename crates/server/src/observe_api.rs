//! What operators look at, on the main API: scan results (`/api/v1/scans`), built-in alerts
//! and their silences (`/api/v1/alerts`), the dashboard summary (`/api/v1/dashboard`), and the
//! web dashboard's static files (`/ui/`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use certkeeper_store::{AuditEvent, Change, ObserveWrite, Outcome, ScanQuery, SilenceRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::SharedState;
use crate::api::{acting_tenant, authorize, json_body};
use crate::auth::{Permission, Principal};
use crate::issuance::rfc3339;
use crate::problem::Problem;
use crate::scan::ScanReport;

/// Most endpoints in one scan submission.
const SCAN_MAX_RESULTS: usize = 1000;
/// Largest scan submission, in bytes (chains included).
pub const SCAN_MAX_BODY: usize = 8 * 1024 * 1024;
/// Longest silence.
const SILENCE_MAX_SECONDS: i64 = 90 * 86_400;

/// The documented routes of this module. Every one authenticates before it parses a path
/// parameter or a body.
pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_scans))
        .routes(routes!(list_alerts))
        .routes(routes!(create_silence, list_silences))
        .routes(routes!(expire_silence))
        .routes(routes!(dashboard))
}

/// Scan submissions may carry whole chains: a larger body limit than the rest of the API.
pub fn scan_routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(record_scans))
}

/// The web dashboard: static files, no data (the page reads the API with the token the user
/// types in).
pub fn ui_routes() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(file: &str) -> Response {
    let (body, content_type) = match file {
        "index.html" => (include_str!("../ui/index.html"), "text/html; charset=utf-8"),
        "app.js" => (
            include_str!("../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (include_str!("../ui/app.css"), "text/css; charset=utf-8"),
        _ => return Problem::not_found("no such file of the web dashboard").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Scan results to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanSubmission {
    /// Tenant that owns them (default: the token's tenant, or `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// One report per endpoint, as `certkeeper scan` makes them.
    pub results: Vec<ScanReport>,
}

/// What was recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanRecorded {
    /// Endpoints recorded (latest scan replaced).
    pub endpoints: usize,
    /// Served certificates new to the tenant's inventory (source `discovered`).
    pub discovered: usize,
}

/// Record what TLS endpoints serve: each served certificate into the inventory, the latest
/// scan of each endpoint for M1.
#[utoipa::path(
    post,
    path = "/api/v1/scans",
    request_body = ScanSubmission,
    responses((status = 200, body = ScanRecorded), (status = 400, body = Problem, content_type = "application/problem+json")),
    tag = "scans"
)]
async fn record_scans(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ScanRecorded>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "scan.record").await?;
    let submission: ScanSubmission =
        json_body(&state, &principal.token_id, "scan.record", body).await?;
    let tenant = acting_tenant(&state, &principal, submission.tenant, "scan.record").await?;
    if submission.results.len() > SCAN_MAX_RESULTS {
        return Err(Problem::malformed(format!(
            "at most {SCAN_MAX_RESULTS} endpoints per request"
        )));
    }
    let (endpoints, discovered) =
        crate::scan::record(&state, &principal.token_id, &tenant, &submission.results).await?;
    Ok(Json(ScanRecorded {
        endpoints,
        discovered,
    }))
}

/// The latest scan of an endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanEndpointView {
    /// `host:port`.
    pub endpoint: String,
    /// Name checked (SNI), empty for an address.
    pub server_name: String,
    /// Tenant.
    pub tenant: String,
    /// When, RFC 3339.
    pub scanned_at: String,
    /// Who scanned.
    pub scanner: String,
    /// Serial served.
    pub serial: Option<String>,
    /// Its notAfter, RFC 3339.
    pub not_after: Option<String>,
    /// Findings.
    pub findings: Vec<String>,
    /// Whether it serves a valid certificate (M1).
    pub valid: bool,
    /// Why nothing was read.
    pub error: Option<String>,
    /// Inventory id of the served certificate.
    pub certificate_id: Option<i64>,
}

/// Filters and paging of the recorded scans.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ScanListParams {
    /// Only endpoints that serve a valid certificate (`true`) or that do not (`false`).
    valid: Option<bool>,
    /// Only endpoints with this finding, such as `revoked`.
    finding: Option<String>,
    /// Page size, 1-5000 (default 500).
    limit: Option<u32>,
    /// Cursor from the previous page's `next_cursor`.
    cursor: Option<String>,
}

/// One page of recorded scans.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanEndpointPage {
    /// The endpoints, by tenant, endpoint and name.
    pub items: Vec<ScanEndpointView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The latest scan of every endpoint (of the token's tenant), a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/scans",
    params(ScanListParams),
    responses(
        (status = 200, body = ScanEndpointPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    tag = "scans"
)]
async fn list_scans(
    State(state): State<SharedState>,
    headers: HeaderMap,
    params: Result<Query<ScanListParams>, QueryRejection>,
) -> Result<Json<ScanEndpointPage>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "scan.list").await?;
    let Query(params) = params.map_err(|e| Problem::malformed(format!("query: {e}")))?;
    if let Some(finding) = &params.finding
        && certkeeper_pki::Finding::parse(finding).is_none()
    {
        let known: Vec<&str> = certkeeper_pki::Finding::ALL
            .iter()
            .map(|f| f.as_str())
            .collect();
        return Err(Problem::malformed(format!(
            "unknown finding {finding:?}; use one of {}",
            known.join(", ")
        )));
    }
    let page = state
        .store
        .scan_endpoint_page(&ScanQuery {
            tenant: principal.tenant.clone(),
            valid: params.valid,
            finding: params.finding,
            limit: i64::from(params.limit.unwrap_or(500)),
            cursor: params.cursor,
        })
        .await?;
    Ok(Json(ScanEndpointPage {
        items: page
            .items
            .into_iter()
            .map(|e| ScanEndpointView {
                endpoint: e.record.endpoint,
                server_name: e.record.server_name,
                tenant: e.record.tenant,
                scanned_at: rfc3339(e.record.scanned_at),
                scanner: e.record.scanner,
                serial: e.record.serial,
                not_after: e.record.not_after.map(rfc3339),
                findings: e.record.findings,
                valid: e.record.valid,
                error: e.record.error,
                certificate_id: e.certificate_id,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A firing built-in alert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// Rule.
    pub rule: String,
    /// What it is about.
    pub subject: String,
    /// `page` or `ticket`.
    pub severity: String,
    /// Labels (owner, service, tenant, name, ...).
    pub labels: BTreeMap<String, String>,
    /// One line for a human.
    pub summary: String,
    /// Since when, RFC 3339.
    pub since: String,
    /// Whether a silence holds it back.
    pub silenced: bool,
    /// That silence's id.
    pub silenced_by: Option<String>,
}

fn visible_alerts(state: &SharedState, principal: &Principal) -> Vec<AlertView> {
    state
        .alerts
        .snapshot()
        .into_iter()
        .filter(|entry| entry.visible_to(principal.tenant.as_deref()))
        .map(|entry| AlertView {
            rule: entry.alert.rule,
            subject: entry.alert.subject,
            severity: entry.alert.severity.as_str().into(),
            labels: entry.alert.labels,
            summary: entry.alert.summary,
            since: rfc3339(entry.alert.since),
            silenced: entry.silenced_by.is_some(),
            silenced_by: entry.silenced_by,
        })
        .collect()
}

/// Built-in alerts firing at the latest evaluation, silenced ones marked.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    responses((status = 200, body = Vec<AlertView>)),
    tag = "alerts"
)]
async fn list_alerts(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<AlertView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "alert.list").await?;
    Ok(Json(visible_alerts(&state, &principal)))
}

/// A silence to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Label equality matchers, such as {"owner": "web"}; every one must match (`rule`,
    /// `subject` and `severity` are labels too).
    pub matchers: BTreeMap<String, String>,
    /// How long, such as "2h" (default 1h; at most 90d).
    #[serde(default)]
    pub duration: Option<String>,
    /// Start, RFC 3339 (default now): a maintenance window ahead.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Why.
    pub comment: String,
}

/// A silence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SilenceView {
    /// Id.
    pub id: String,
    /// Matchers.
    pub matchers: BTreeMap<String, String>,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// End, RFC 3339.
    pub ends_at: String,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
    /// `active` or `pending`.
    pub state: String,
}

fn silence_view(silence: SilenceRecord, now: i64) -> SilenceView {
    SilenceView {
        id: silence.id,
        matchers: silence.matchers,
        starts_at: rfc3339(silence.starts_at),
        ends_at: rfc3339(silence.ends_at),
        comment: silence.comment,
        created_by: silence.created_by,
        state: if silence.starts_at <= now {
            "active"
        } else {
            "pending"
        }
        .into(),
    }
}

/// Silence matching alerts for a while (a maintenance window). A tenant's token silences
/// only its tenant's alerts.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/silences",
    request_body = SilenceRequest,
    responses((status = 201, body = SilenceView), (status = 400, body = Problem, content_type = "application/problem+json")),
    tag = "alerts"
)]
async fn create_silence(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SilenceView>), Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "alert.silence").await?;
    let request: SilenceRequest =
        json_body(&state, &principal.token_id, "alert.silence", body).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut matchers = request.matchers;
    if matchers.is_empty() {
        return Err(Problem::malformed(
            "give at least one matcher, such as {\"owner\": \"web\"}: a silence must say what it covers",
        ));
    }
    if let Some(tenant) = &principal.tenant {
        match matchers.get("tenant") {
            Some(asked) if asked != tenant => {
                return Err(state
                    .audit_denial(
                        &principal.token_id,
                        "alert.silence",
                        asked,
                        Problem::wrong_tenant(tenant, asked),
                    )
                    .await);
            }
            _ => {
                matchers.insert("tenant".into(), tenant.clone());
            }
        }
    }
    let duration = match &request.duration {
        None => 3600,
        Some(text) => crate::config::parse_duration(text)
            .map_err(|e| Problem::malformed(format!("duration: {e}")))?
            as i64,
    };
    if duration <= 0 || duration > SILENCE_MAX_SECONDS {
        return Err(Problem::malformed(
            "duration must be above zero and at most 90d",
        ));
    }
    let starts_at = match &request.starts_at {
        None => now,
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| Problem::malformed(format!("starts_at {text:?} is not RFC 3339")))?
                .unix_timestamp()
        }
    };
    if request.comment.trim().is_empty() {
        return Err(Problem::malformed(
            "comment: say why (a ticket, a maintenance window)",
        ));
    }
    let id = crate::auth::FreshSecret::new()?.id;
    let silence = SilenceRecord {
        id: id.clone(),
        matchers,
        starts_at,
        ends_at: starts_at.max(now) + duration,
        comment: request.comment,
        created_by: principal.token_id.clone(),
        created_at: now,
    };
    state
        .store
        .apply(Change {
            observe: vec![ObserveWrite::Silence(silence.clone())],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "alert.silence".into(),
                object: id,
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "matchers": silence.matchers,
                    "starts_at": rfc3339(silence.starts_at),
                    "ends_at": rfc3339(silence.ends_at),
                    "comment": silence.comment,
                }),
            }],
            ..Change::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(silence_view(silence, now))))
}

/// Whether `principal` may see and end `silence`: everyone unscoped; a tenant's token only
/// the silences bound to its tenant (not fleet-wide ones, which would un-silence others).
fn silence_is_visible(principal: &Principal, silence: &SilenceRecord) -> bool {
    match &principal.tenant {
        None => true,
        Some(own) => silence.matchers.get("tenant") == Some(own),
    }
}

/// Silences in force or ahead.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/silences",
    responses((status = 200, body = Vec<SilenceView>)),
    tag = "alerts"
)]
async fn list_silences(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SilenceView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "alert.silence.list").await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(Json(
        state
            .store
            .silences(now)
            .await?
            .into_iter()
            .filter(|s| silence_is_visible(&principal, s))
            .map(|s| silence_view(s, now))
            .collect(),
    ))
}

/// End a silence now.
#[utoipa::path(
    delete,
    path = "/api/v1/alerts/silences/{id}",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, body = SilenceView), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "alerts"
)]
async fn expire_silence(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SilenceView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "alert.silence.expire").await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let silence = state
        .store
        .silences(now)
        .await?
        .into_iter()
        .find(|s| s.id == id && silence_is_visible(&principal, s));
    let Some(mut silence) = silence else {
        return Err(state
            .audit_denial(
                &principal.token_id,
                "alert.silence.expire",
                &id,
                Problem::not_found(format!(
                    "no silence {id:?} in force or ahead; see `certkeeper alert silence list`"
                )),
            )
            .await);
    };
    state
        .store
        .apply(Change {
            observe: vec![ObserveWrite::ExpireSilence {
                id: id.clone(),
                at: now,
            }],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "alert.silence.expire".into(),
                object: id,
                outcome: Outcome::Success,
                detail: serde_json::json!({ "matchers": silence.matchers }),
            }],
            ..Change::default()
        })
        .await?;
    silence.starts_at = silence.starts_at.min(now);
    silence.ends_at = now;
    Ok(Json(silence_view(silence, now)))
}

/// The dashboard summary: executive, on-call and debug figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DashboardView {
    /// When, RFC 3339.
    pub generated_at: String,
    /// Who is looking.
    #[schema(value_type = Object)]
    pub principal: serde_json::Value,
    /// Fleet-wide figures: valid ratio (M1), active certificates, expiring in 7 days,
    /// incidents (firing alerts), policy violations in 7 days.
    #[schema(value_type = Object)]
    pub executive: serde_json::Value,
    /// Renewals in progress, failures, partial rollouts, recent revocations, alerts.
    #[schema(value_type = Object)]
    pub oncall: serde_json::Value,
    /// Issuance latency per protocol and profile, renewals per issuer, validation failures,
    /// key use and key-access anomalies (since this server started).
    #[schema(value_type = Object)]
    pub debug: serde_json::Value,
    /// Newest audit entry's sequence number.
    pub audit_latest_seq: i64,
}

/// The figures behind the web dashboard. A tenant's token sees its tenant's counts and lists;
/// the debug view's in-process counters are the server's.
#[utoipa::path(
    get,
    path = "/api/v1/dashboard",
    responses((status = 200, body = DashboardView)),
    tag = "dashboard"
)]
async fn dashboard(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<DashboardView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "dashboard.read").await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tenant = principal.tenant.as_deref();
    let counts = state.store.certificate_counts(now, tenant).await?;
    let targets = state.store.target_counts(now, tenant).await?;
    let total = targets.scanned_valid
        + targets.scanned_invalid
        + targets.agent_valid
        + targets.agent_invalid;
    let valid = targets.scanned_valid + targets.agent_valid;
    let alerts = visible_alerts(&state, &principal);
    let violations = state
        .store
        .audit_denials_since((now - 7 * 86_400) * 1000, tenant)
        .await?;
    let executive = serde_json::json!({
        "targets_total": total,
        "targets_valid": valid,
        "valid_ratio": (total > 0).then(|| valid as f64 / total as f64),
        "certificates_active": counts.active,
        "expiring_7d": counts.expiring_within_days[1].1,
        "incidents": alerts.iter().filter(|a| !a.silenced).count(),
        "policy_violations_7d": violations,
    });

    let in_progress: Vec<serde_json::Value> = state
        .store
        .managed_in_progress(tenant, now, 100)
        .await?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name, "tenant": m.tenant, "state": m.state,
                "next_action_at": rfc3339(m.next_action_at),
            })
        })
        .collect();
    let failures: Vec<serde_json::Value> = state
        .store
        .failing_managed(tenant, 100)
        .await?
        .into_iter()
        .map(|(managed, last_error)| {
            serde_json::json!({
                "name": managed.name, "tenant": managed.tenant,
                "consecutive_failures": managed.consecutive_failures,
                "last_error": last_error,
                "not_after": managed.not_after.map(rfc3339),
            })
        })
        .collect();
    let partial: Vec<serde_json::Value> = state
        .store
        .partial_rollout_list()
        .await?
        .into_iter()
        .filter(|r| principal.tenant.is_none() || principal.sees(&r.tenant))
        .map(|r| {
            serde_json::json!({
                "id": r.id, "managed": r.managed_name, "state": r.state, "wave": r.wave,
            })
        })
        .collect();
    let revocations: Vec<serde_json::Value> = state
        .store
        .recent_revocations(tenant, 10)
        .await?
        .into_iter()
        .map(|(serial, subject, revoked_at, reason, _)| {
            serde_json::json!({
                "serial": serial, "subject": subject, "revoked_at": rfc3339(revoked_at),
                "reason": certkeeper_pki::RevocationReason::from_code(reason)
                    .map_or("unspecified", |r| r.name()),
            })
        })
        .collect();
    let oncall = serde_json::json!({
        "renewals_in_progress": in_progress,
        "failures": failures,
        "partial_rollouts": partial,
        "recent_revocations": revocations,
        "alerts": alerts,
    });

    let text = crate::metrics::render_in_process(&state)?;
    let samples = crate::metrics::samples(&text);
    let mut latency: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut renewals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut validation_failures: BTreeMap<String, f64> = BTreeMap::new();
    let mut key_use = Vec::new();
    let mut anomalies = 0.0;
    for (name, labels, value) in &samples {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        match name.as_str() {
            "certkeeper_issuance_duration_seconds_count" => {
                latency
                    .entry((label("protocol"), label("profile")))
                    .or_default()
                    .0 = *value;
            }
            "certkeeper_issuance_duration_seconds_sum" => {
                latency
                    .entry((label("protocol"), label("profile")))
                    .or_default()
                    .1 = *value;
            }
            "certkeeper_renewal_attempts_total" => {
                let entry = renewals.entry(label("issuer")).or_default();
                if label("outcome") == "success" {
                    entry.0 += value;
                } else {
                    entry.1 += value;
                }
            }
            "certkeeper_validations_total" if label("outcome") == "invalid" => {
                *validation_failures.entry(label("challenge")).or_default() += value;
            }
            "certkeeper_key_uses_total" => key_use.push(serde_json::json!({
                "key": label("key"), "principal_kind": label("principal"), "uses": value,
            })),
            "certkeeper_key_access_anomalies_total" => anomalies += value,
            _ => {}
        }
    }
    let debug = serde_json::json!({
        "issuance_latency": latency.into_iter().map(|((protocol, profile), (count, sum))| serde_json::json!({
            "protocol": protocol, "profile": profile, "count": count,
            "mean_seconds": if count > 0.0 { sum / count } else { 0.0 },
        })).collect::<Vec<_>>(),
        "renewals": renewals.into_iter().map(|(issuer, (success, failure))| serde_json::json!({
            "issuer": issuer, "success": success, "failure": failure,
        })).collect::<Vec<_>>(),
        "validation_failures": validation_failures.into_iter().map(|(challenge, count)| serde_json::json!({
            "challenge": challenge, "count": count,
        })).collect::<Vec<_>>(),
        "key_use": key_use,
        "key_anomalies": anomalies,
    });
    Ok(Json(DashboardView {
        generated_at: rfc3339(now),
        principal: serde_json::json!({
            "name": principal.token_id,
            "role": principal.role.as_str(),
            "tenant": principal.tenant,
        }),
        executive,
        oncall,
        debug,
        audit_latest_seq: state.store.audit_latest_seq().await?,
    }))
}
