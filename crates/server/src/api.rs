//! HTTP routes. The REST API lives under `/api/v1` and is described by an OpenAPI document
//! generated from these handlers (`/api/v1/openapi.json`), so the two cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use certkeeper_store::{
    AuditEvent, CertificateQuery, CertificateRecord, CertificateSort, Change, Outcome,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Permission, Principal, Role, mint};
use crate::config::parse_duration;
use crate::issuance::{IssueRequest, IssueResponse, issue, rfc3339};
use crate::problem::Problem;
use crate::{SharedState, Tenant};

#[derive(OpenApi)]
#[openapi(
    info(title = "certkeeper API", description = "Certificate issuance, inventory, tokens and audit."),
    components(schemas(Problem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
    }
}

/// Largest import request, in bytes.
const IMPORT_MAX_BODY: usize = 8 * 1024 * 1024;
/// Most certificates in one import request.
const IMPORT_MAX_CERTIFICATES: usize = 1000;

/// The HTTPS application: REST API, OpenAPI document and the public endpoints.
pub fn router(state: SharedState) -> Router {
    let import = OpenApiRouter::new()
        .routes(routes!(import_certificates))
        .layer(DefaultBodyLimit::max(
            IMPORT_MAX_BODY.max(state.max_body_bytes),
        ));
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(issue_certificate, search_certificates))
        .routes(routes!(get_certificate))
        .routes(routes!(revoke_certificates))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(list_profiles))
        .routes(routes!(get_policy))
        .routes(routes!(get_ca))
        .routes(routes!(create_eab_key, list_eab_keys))
        .routes(routes!(apply_managed))
        .routes(routes!(list_managed))
        .routes(routes!(get_managed))
        .routes(routes!(renew_managed))
        .routes(routes!(issuer_loads))
        .merge(crate::fleet_api::routes())
        .merge(crate::observe_api::routes())
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .merge(import)
        .merge(
            crate::observe_api::scan_routes().layer(DefaultBodyLimit::max(
                crate::observe_api::SCAN_MAX_BODY.max(state.max_body_bytes),
            )),
        )
        .split_for_parts();
    let document = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    document.as_ref().clone(),
                )
            }
        }),
    )
    .route("/metrics", get(crate::metrics::handler))
    .merge(crate::observe_api::ui_routes())
    .merge(public_routes())
    .merge(crate::acme::router().layer(DefaultBodyLimit::max(state.max_body_bytes)))
    .fallback(not_found)
    .with_state(state)
}

/// The plain-HTTP application for relying parties.
pub fn public_router(state: SharedState) -> Router {
    public_routes().fallback(not_found).with_state(state)
}

fn public_routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/ca/root.crt", get(root_der))
        .route("/ca/intermediate.crt", get(intermediate_der))
        .route("/ca/chain.pem", get(chain_pem))
        .route("/crl/{name}", get(serve_crl))
        .route(
            "/ocsp",
            axum::routing::post(ocsp_post)
                .get(ocsp_get_empty)
                .layer(DefaultBodyLimit::max(
                    certkeeper_pki::MAX_OCSP_REQUEST_BYTES,
                )),
        )
        .route("/ocsp/", get(ocsp_get_empty))
        .route("/ocsp/{*request}", get(ocsp_get))
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; the API is described at /api/v1/openapi.json")
}

fn der_response(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response()
}

async fn root_der(State(state): State<SharedState>) -> Response {
    der_response(state.ca.root_der.clone())
}

async fn intermediate_der(State(state): State<SharedState>) -> Response {
    der_response(state.ca.issuer.certificate_der().to_vec())
}

async fn chain_pem(State(state): State<SharedState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        format!("{}{}", state.ca.chain_pem, state.ca.root_pem),
    )
        .into_response()
}

/// Format of HTTP dates (RFC 9110 IMF-fixdate).
const HTTP_DATE: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

async fn serve_crl(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(crl) = state.crls.get(&name) else {
        return Problem::not_found(format!(
            "no CRL named {name:?}; certificates name theirs in their CRL distribution point"
        ))
        .into_response();
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == crl.etag));
    let remaining = (crl.next_update - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    let max_age = remaining.min(300);
    let last_modified = crl.this_update.format(HTTP_DATE).unwrap_or_default();
    let expires = crl.next_update.format(HTTP_DATE).unwrap_or_default();
    let common = [
        (header::ETAG, crl.etag.clone()),
        (header::LAST_MODIFIED, last_modified),
        (header::EXPIRES, expires),
        (
            header::CACHE_CONTROL,
            format!("public, max-age={max_age}, no-transform, must-revalidate"),
        ),
    ];
    if not_modified {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, "application/pkix-crl".to_string())],
        crl.der.clone(),
    )
        .into_response()
}

async fn ocsp_post(
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => ocsp_reply(&state, &body, false).await,
        Err(_) => ocsp_bytes(crate::ocsp::malformed(), None),
    }
}

/// A GET without a request.
async fn ocsp_get_empty() -> Response {
    ocsp_bytes(crate::ocsp::malformed(), None)
}

/// RFC 5019 GET: the DER request, base64, in the path.
async fn ocsp_get(State(state): State<SharedState>, Path(encoded): Path<String>) -> Response {
    use base64::Engine;
    let trimmed = encoded.trim_start_matches('/');
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(trimmed));
    match decoded {
        Ok(request) if request.len() <= certkeeper_pki::MAX_OCSP_REQUEST_BYTES => {
            ocsp_reply(&state, &request, true).await
        }
        _ => ocsp_bytes(crate::ocsp::malformed(), None),
    }
}

async fn ocsp_reply(state: &SharedState, request: &[u8], cacheable: bool) -> Response {
    match state.ocsp.answer(&state.store, request).await {
        Ok(crate::ocsp::OcspReply::Signed(response)) => {
            ocsp_bytes(response.der.clone(), cacheable.then_some(&response))
        }
        Ok(crate::ocsp::OcspReply::Refused(der)) => ocsp_bytes(der, None),
        Err(error) => {
            tracing::error!(%error, "OCSP request failed");
            ocsp_bytes(
                certkeeper_pki::ocsp_refusal(certkeeper_pki::OcspRefusal::Internal),
                None,
            )
        }
    }
}

/// An OCSP response over HTTP; with RFC 5019 caching headers for cacheable (GET) answers.
fn ocsp_bytes(der: impl Into<Bytes>, cache: Option<&crate::ocsp::CachedResponse>) -> Response {
    let der: Bytes = der.into();
    let mut headers = vec![(
        header::CONTENT_TYPE,
        "application/ocsp-response".to_string(),
    )];
    match cache {
        Some(response) => {
            let at = |s: i64| {
                time::OffsetDateTime::from_unix_timestamp(s)
                    .ok()
                    .and_then(|t| t.format(HTTP_DATE).ok())
                    .unwrap_or_default()
            };
            let max_age = (response.next_update - now()).max(0);
            headers.push((
                header::CACHE_CONTROL,
                format!("max-age={max_age}, public, no-transform, must-revalidate"),
            ));
            headers.push((header::LAST_MODIFIED, at(response.this_update)));
            headers.push((header::EXPIRES, at(response.next_update)));
            headers.push((
                header::ETAG,
                format!("\"{}\"", &certkeeper_pki::sha256_hex(&der)[..32]),
            ));
        }
        None => headers.push((header::CACHE_CONTROL, "no-cache".to_string())),
    }
    let mut response = der.into_response();
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The expiry time (Unix seconds) of an optional `expires_in` duration such as "90d".
fn expiry(expires_in: Option<&str>) -> Result<Option<i64>, Problem> {
    expires_in
        .map(|text| {
            parse_duration(text)
                .map(|s| now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)))
                .map_err(Problem::malformed)
        })
        .transpose()
}

/// Who a failed request claimed to be, for the audit log.
fn claimed_actor(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|t| t.strip_prefix("ck_"))
        .and_then(|t| t.split_once('.'))
        .map(|(id, _)| format!("claimed:{}", &id[..id.len().min(32)]))
        .unwrap_or_else(|| "anonymous".into())
}

/// Authenticates and checks the role; failures are audited.
pub(crate) async fn authorize(
    state: &SharedState,
    headers: &HeaderMap,
    permission: Permission,
    action: &str,
) -> Result<Principal, Problem> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let checked = match state.tokens.verify(&state.store, header, now()).await {
        Ok(principal) => principal.require(permission).map(|()| principal),
        Err(problem) => Err(problem),
    };
    match checked {
        Ok(principal) => Ok(principal),
        Err(problem) => Err(state
            .audit_denial(&claimed_actor(headers), action, "api", problem)
            .await),
    }
}

/// The audit log spans every tenant, so only unscoped tokens may read it.
async fn require_unscoped(
    state: &SharedState,
    principal: &Principal,
    action: &str,
) -> Result<(), Problem> {
    match &principal.tenant {
        None => Ok(()),
        Some(tenant) => Err(state
            .audit_denial(
                &principal.token_id,
                action,
                "audit log",
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "tenant-scoped-token",
                    "Token scoped to a tenant",
                    format!("the audit log spans every tenant; this token is scoped to {tenant:?}, use an admin or auditor token without a tenant"),
                ),
            )
            .await),
    }
}

/// Decodes a JSON body; a bad or oversized body is audited and answered with a problem.
/// The tenant a request acts for: the one it names, else the token's own, else `default`. A
/// tenant the token may not act for, or an invalid name, is refused and the denial audited
/// as `action`.
pub(crate) async fn acting_tenant(
    state: &SharedState,
    principal: &Principal,
    requested: Option<String>,
    action: &str,
) -> Result<String, Problem> {
    let tenant = requested
        .or_else(|| principal.tenant.clone())
        .unwrap_or_else(|| Tenant::DEFAULT.into());
    match principal
        .require_tenant(&tenant)
        .and_then(|()| Tenant::validate(&tenant))
    {
        Ok(()) => Ok(tenant),
        Err(problem) => Err(state
            .audit_denial(&principal.token_id, action, &tenant, problem)
            .await),
    }
}

pub(crate) async fn json_body<T: DeserializeOwned>(
    state: &SharedState,
    actor: &str,
    action: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let problem = match body {
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::too_large(state.max_body_bytes)
        }
        Err(rejection) => Problem::malformed(format!("could not read the body: {rejection}")),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => return Ok(value),
            Err(error) => Problem::malformed(format!(
                "the body is not the JSON this endpoint takes: {error}"
            )),
        },
    };
    Err(state.audit_denial(actor, action, "api", problem).await)
}

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// Issue a certificate from a CSR, or with a server-generated key.
#[utoipa::path(
    post,
    path = "/api/v1/certificates",
    request_body = IssueRequest,
    responses(
        (status = 201, description = "Issued; stored and audited before this response", body = IssueResponse),
        (status = 400, description = "Malformed or weak request, or outside the profile", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid, revoked or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Denied by policy, role or tenant", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "certificates"
)]
async fn issue_certificate(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "certificate.issue").await?;
    let request: IssueRequest =
        json_body(&state, &principal.token_id, "certificate.issue", body).await?;
    Ok(created(issue(&state, &principal, request).await?))
}

/// Revoke certificates: by serial, by certificate, or every unexpired certificate of a key.
#[utoipa::path(
    post,
    path = "/api/v1/revocations",
    request_body = crate::revocation::RevokeRequest,
    responses(
        (status = 200, description = "Revoked (or already revoked); durable before this response", body = crate::revocation::RevokeResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such certificate in your tenants", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "certificates"
)]
async fn revoke_certificates(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::revocation::RevokeResponse>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "certificate.revoke").await?;
    let request: crate::revocation::RevokeRequest =
        json_body(&state, &principal.token_id, "certificate.revoke", body).await?;
    Ok(Json(
        crate::revocation::revoke(&state, &principal, request).await?,
    ))
}

/// Search query for the inventory.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    /// Only this tenant.
    tenant: Option<String>,
    /// active, expired or revoked.
    status: Option<String>,
    /// Text contained in the common name or a SAN.
    name: Option<String>,
    /// Only certificates expiring within this duration, such as "30d".
    expiring_within: Option<String>,
    /// Label filter `name=value`.
    label: Option<String>,
    /// Serial number, hex.
    serial: Option<String>,
    /// not_after (default), -not_after, created, -created.
    sort: Option<String>,
    /// Page size, 1-1000 (default 100).
    limit: Option<u32>,
    /// Cursor from the previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A certificate in the inventory.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// Inventory id.
    pub id: i64,
    /// Serial, hex.
    pub serial: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject DN.
    pub subject: String,
    /// Subject CN.
    pub common_name: Option<String>,
    /// SANs such as `DNS:www.example.com`.
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Key algorithm label.
    pub key_algorithm: String,
    /// SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// SHA-256 of the certificate.
    pub fingerprint_sha256: String,
    /// Profile.
    pub profile: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// Requesting token id, `import` or `certkeeper`.
    pub requester: String,
    /// issued, imported or ca.
    pub source: String,
    /// active, expired or revoked.
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When it entered the inventory, RFC 3339.
    pub created_at: String,
    /// Revocation time, RFC 3339, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Revocation reason, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    /// Serial of the certificate that replaced this one (ACME `replaces`), once replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// The certificate, PEM (single-certificate look-ups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
}

impl CertificateView {
    fn from_record(record: CertificateRecord, with_pem: bool) -> Self {
        let c = record.certificate;
        CertificateView {
            id: record.id,
            superseded_by: record.superseded_by_serial,
            certificate_pem: with_pem.then(|| certkeeper_pki::to_pem("CERTIFICATE", &c.der)),
            serial: c.serial,
            issuer: c.issuer,
            subject: c.subject,
            common_name: c.common_name,
            sans: c.sans,
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            key_algorithm: c.key_algorithm,
            spki_sha256: c.spki_sha256,
            fingerprint_sha256: c.fingerprint_sha256,
            profile: c.profile,
            tenant: c.tenant,
            requester: c.requester,
            source: c.source.as_str().into(),
            status: record.status.as_str().into(),
            labels: c.labels,
            created_at: rfc3339(record.created_at),
            revoked_at: record.revocation.map(|r| rfc3339(r.revoked_at)),
            revocation_reason: record.revocation.map(|r| {
                certkeeper_pki::RevocationReason::from_code(r.reason)
                    .map_or_else(|| r.reason.to_string(), |reason| reason.name().to_string())
            }),
        }
    }
}

/// One page of certificates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificatePage {
    /// The certificates.
    pub items: Vec<CertificateView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Search the inventory.
#[utoipa::path(
    get,
    path = "/api/v1/certificates",
    params(SearchParams),
    responses(
        (status = 200, body = CertificatePage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    tag = "certificates"
)]
async fn search_certificates(
    State(state): State<SharedState>,
    headers: HeaderMap,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<CertificatePage>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "certificate.search").await?;
    let Query(params) = params.map_err(|e| Problem::malformed(format!("query: {e}")))?;
    let tenant = match (&principal.tenant, params.tenant) {
        (Some(own), Some(wanted)) if *own != wanted => {
            return Err(state
                .audit_denial(
                    &principal.token_id,
                    "certificate.search",
                    &wanted,
                    Problem::wrong_tenant(own, &wanted),
                )
                .await);
        }
        (Some(own), _) => Some(own.clone()),
        (None, wanted) => wanted,
    };
    let label = match params.label {
        Some(text) => Some(
            text.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Problem::malformed("label must be written name=value"))?,
        ),
        None => None,
    };
    let expiring_within_seconds = match params.expiring_within {
        Some(text) => Some(
            i64::try_from(parse_duration(&text).map_err(Problem::malformed)?).unwrap_or(i64::MAX),
        ),
        None => None,
    };
    let query = CertificateQuery {
        tenant,
        status: params.status.map(|s| s.parse()).transpose()?,
        name_contains: params.name,
        expiring_within_seconds,
        label,
        serial: params.serial,
        sort: params
            .sort
            .map(|s| s.parse::<CertificateSort>())
            .transpose()?
            .unwrap_or_default(),
        limit: params.limit.unwrap_or(100),
        cursor: params.cursor,
        now: now(),
    };
    let page = state.store.search_certificates(&query).await?;
    Ok(Json(CertificatePage {
        items: page
            .items
            .into_iter()
            .map(|r| CertificateView::from_record(r, false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One certificate by serial, with its PEM.
#[utoipa::path(
    get,
    path = "/api/v1/certificates/{serial}",
    params(("serial" = String, Path, description = "Serial number, hex")),
    responses((status = 200, body = CertificateView), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "certificates"
)]
async fn get_certificate(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Result<Json<CertificateView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "certificate.get").await?;
    let record = state
        .store
        .certificates_by_serial(&serial, now())
        .await?
        .into_iter()
        .find(|r| {
            principal
                .tenant
                .as_deref()
                .is_none_or(|t| t == r.certificate.tenant)
        })
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no certificate with serial {serial} in your tenants"
            ))
        })?;
    Ok(Json(CertificateView::from_record(record, true)))
}

/// Certificates to add to the inventory.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// Tenant that owns them (default: the token's, else `default`).
    #[serde(default)]
    tenant: Option<String>,
    /// Labels for every imported certificate.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// PEM certificates (one per entry; a PEM bundle counts as its certificates).
    certificates: Vec<String>,
}

/// What an import did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportResponse {
    /// Certificates added.
    pub imported: usize,
    /// Certificates already in the inventory.
    pub duplicates: usize,
    /// Entries that could not be read: index and reason.
    pub errors: Vec<ImportError>,
}

/// An entry that could not be imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportError {
    /// Index in `certificates`.
    pub index: usize,
    /// Why.
    pub error: String,
}

/// Import existing certificates into the inventory (duplicates are skipped).
#[utoipa::path(
    post,
    path = "/api/v1/certificates/import",
    request_body = ImportRequest,
    responses((status = 200, body = ImportResponse), (status = 400, body = Problem, content_type = "application/problem+json")),
    tag = "certificates"
)]
async fn import_certificates(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportResponse>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "certificate.import").await?;
    let request: ImportRequest =
        json_body(&state, &principal.token_id, "certificate.import", body).await?;
    let tenant = acting_tenant(&state, &principal, request.tenant, "certificate.import").await?;
    if request.certificates.len() > IMPORT_MAX_CERTIFICATES {
        return Err(Problem::malformed(format!(
            "at most {IMPORT_MAX_CERTIFICATES} certificates per request"
        )));
    }
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (index, text) in request.certificates.iter().enumerate() {
        match certkeeper_pki::pem_to_der_certificates(text.as_bytes()) {
            Err(error) => errors.push(ImportError {
                index,
                error: error.to_string(),
            }),
            Ok(ders) => {
                for der in ders {
                    match certkeeper_pki::parse_certificate(&der) {
                        Err(error) => errors.push(ImportError {
                            index,
                            error: error.to_string(),
                        }),
                        Ok(summary) => records.push(crate::inventory::record(
                            summary,
                            der,
                            crate::inventory::Provenance {
                                profile: None,
                                tenant: tenant.clone(),
                                requester: principal.token_id.clone(),
                                source: certkeeper_store::CertificateSource::Imported,
                                labels: request.labels.clone(),
                                crl_shard: 0,
                            },
                        )),
                    }
                }
            }
        }
    }
    let submitted = records.len();
    if submitted > IMPORT_MAX_CERTIFICATES {
        return Err(Problem::malformed(format!(
            "at most {IMPORT_MAX_CERTIFICATES} certificates per request (bundles count each certificate)"
        )));
    }
    if submitted == 0 {
        return Ok(Json(ImportResponse {
            imported: 0,
            duplicates: 0,
            errors,
        }));
    }
    let audit = AuditEvent {
        actor: principal.token_id.clone(),
        action: "certificate.import".into(),
        object: format!("{submitted} certificates"),
        outcome: Outcome::Success,
        detail: serde_json::json!({
            "tenant": tenant,
            "serials": records.iter().map(|r| r.serial.as_str()).collect::<Vec<_>>(),
        }),
    };
    let outcome = state
        .store
        .apply(Change {
            certificates: records,
            skip_duplicate_certificates: true,
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(Json(ImportResponse {
        imported: outcome.inserted_certificate_ids.len(),
        duplicates: outcome.duplicate_fingerprints.len(),
        errors,
    }))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    /// Human name.
    name: String,
    /// admin, issuer or auditor.
    role: Role,
    /// Tenant scope; leave out for every tenant.
    #[serde(default)]
    tenant: Option<String>,
    /// Lifetime such as "90d"; leave out for no expiry.
    #[serde(default)]
    expires_in: Option<String>,
}

/// A token (never its secret, except once on creation).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Tenant scope.
    pub tenant: Option<String>,
    /// Creator.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// The token itself; present only in the creation response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for TokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenView")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Create an API token (admin).
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    request_body = CreateTokenRequest,
    responses((status = 201, body = TokenView), (status = 403, body = Problem, content_type = "application/problem+json")),
    tag = "tokens"
)]
async fn create_token(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "token.create").await?;
    let request: CreateTokenRequest =
        json_body(&state, &principal.token_id, "token.create", body).await?;
    let checked = (|| {
        if request.name.trim().is_empty() || request.name.len() > 200 {
            return Err(Problem::malformed("name must be 1-200 characters"));
        }
        if let Some(tenant) = &request.tenant {
            Tenant::validate(tenant)?;
            principal.require_tenant(tenant)?;
        } else if principal.tenant.is_some() {
            return Err(Problem::malformed(
                "a tenant-scoped admin can only create tokens for its own tenant; set `tenant`",
            ));
        }
        expiry(request.expires_in.as_deref())
    })();
    let expires_at = match checked {
        Ok(expires_at) => expires_at,
        Err(problem) => {
            return Err(state
                .audit_denial(&principal.token_id, "token.create", &request.name, problem)
                .await);
        }
    };
    let minted = mint(
        &request.name,
        request.role,
        request.tenant.clone(),
        &principal.token_id,
        expires_at,
    )?;
    let audit = AuditEvent {
        actor: principal.token_id.clone(),
        action: "token.create".into(),
        object: minted.record.id.clone(),
        outcome: Outcome::Success,
        detail: serde_json::json!({"name": request.name, "role": request.role.as_str(), "tenant": request.tenant, "expires_at": expires_at}),
    };
    let record = minted.record.clone();
    state
        .store
        .apply(Change {
            tokens: vec![minted.record],
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(created(TokenView {
        id: record.id,
        name: record.name,
        role: record.role,
        tenant: record.tenant,
        created_by: record.created_by,
        created_at: rfc3339(now()),
        expires_at: record.expires_at.map(rfc3339),
        revoked_at: None,
        token: Some(minted.secret),
    }))
}

/// Managed-certificate declarations to apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Declarations (name, sans, issuer, profile, key, renewal, targets, owner, labels).
    #[schema(value_type = Vec<Object>)]
    pub certificates: Vec<serde_json::Value>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// What applying did (or would do).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// One entry per declaration: `create`, `update` (with the fields) or `unchanged`.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<serde_json::Value>,
    /// False for a dry run.
    pub applied: bool,
}

/// A managed certificate's status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ManagedView {
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// `pending` (never issued), `ready` or `failing`.
    pub state: String,
    /// Serial in force.
    pub current_serial: Option<String>,
    /// Its expiry, RFC 3339.
    pub not_after: Option<String>,
    /// Next action, RFC 3339.
    pub next_action_at: String,
    /// Why then.
    pub next_action_reason: String,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Each target: kind, location, deployed serial, probe result, error.
    #[schema(value_type = Vec<Object>)]
    pub targets: Vec<serde_json::Value>,
    /// The declaration.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The latest attempts, newest first (single look-ups only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
}

/// One renewal attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// Start, RFC 3339.
    pub started_at: String,
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

fn managed_view(record: certkeeper_store::ManagedRecord) -> ManagedView {
    ManagedView {
        targets: serde_json::from_str(&record.targets).unwrap_or_default(),
        spec: serde_json::from_str(&record.spec).unwrap_or_default(),
        name: record.name,
        tenant: record.tenant,
        state: record.state,
        current_serial: record.current_serial,
        not_after: record.not_after.map(rfc3339),
        next_action_at: rfc3339(record.next_action_at),
        next_action_reason: record.next_action_reason,
        consecutive_failures: record.consecutive_failures,
        attempts: Vec::new(),
    }
}

/// Apply managed-certificate declarations: create new ones, replace changed ones (never
/// deletes). With `dry_run`, only report what would change.
#[utoipa::path(
    post,
    path = "/api/v1/managed-certificates/apply",
    request_body = ApplyRequest,
    responses((status = 200, body = ApplyResponse), (status = 400, body = Problem, content_type = "application/problem+json")),
    tag = "managed"
)]
async fn apply_managed(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "managed.apply").await?;
    let request: ApplyRequest =
        json_body(&state, &principal.token_id, "managed.apply", body).await?;
    let checked = async {
        let mut desired = Vec::new();
        for (index, value) in request.certificates.into_iter().enumerate() {
            let spec: certkeeper_lifecycle::ManagedSpec = serde_json::from_value(value)
                .map_err(|e| Problem::malformed(format!("certificates[{index}]: {e}")))?;
            let tenant = spec
                .tenant
                .clone()
                .unwrap_or_else(|| Tenant::DEFAULT.into());
            Tenant::validate(&tenant)?;
            principal.require_tenant(&tenant)?;
            state.profile(&spec.profile)?;
            desired.push(spec);
        }
        let stored = state.store.managed_certificates(None).await?;
        let mut current = Vec::new();
        for record in &stored {
            if let Some(spec) = desired.iter().find(|s| s.name == record.name) {
                let tenant = spec
                    .tenant
                    .clone()
                    .unwrap_or_else(|| Tenant::DEFAULT.into());
                if record.tenant != tenant {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "name-taken",
                        "Name taken",
                        format!(
                            "managed certificate {:?} belongs to tenant {:?}; choose another name",
                            record.name, record.tenant
                        ),
                    ));
                }
                if let Ok(spec) = serde_json::from_str(&record.spec) {
                    current.push(spec);
                }
            }
        }
        let changes = certkeeper_lifecycle::diff_specs(&current, &desired)
            .map_err(|e| Problem::malformed(e.to_string()))?;
        Ok::<_, Problem>((desired, changes))
    }
    .await;
    let (desired, changes) = match checked {
        Ok(done) => done,
        Err(problem) => {
            return Err(state
                .audit_denial(
                    &principal.token_id,
                    "managed.apply",
                    "declarations",
                    problem,
                )
                .await);
        }
    };
    let changes_json: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    if !request.dry_run {
        let now = now();
        let mut declarations = Vec::new();
        let mut audit = Vec::new();
        for (spec, change) in desired.iter().zip(&changes) {
            if matches!(change, certkeeper_lifecycle::SpecChange::Unchanged { .. }) {
                continue;
            }
            let text = serde_json::to_string(spec).map_err(|e| Problem::internal(e.to_string()))?;
            declarations.push(certkeeper_store::ManagedDeclaration {
                name: spec.name.clone(),
                tenant: spec
                    .tenant
                    .clone()
                    .unwrap_or_else(|| Tenant::DEFAULT.into()),
                spec: text,
                next_action_at: now,
            });
            audit.push(AuditEvent {
                actor: principal.token_id.clone(),
                action: "managed.apply".into(),
                object: spec.name.clone(),
                outcome: Outcome::Success,
                detail: serde_json::to_value(change).unwrap_or_default(),
            });
        }
        if !declarations.is_empty() {
            state
                .store
                .apply(Change {
                    managed_declarations: declarations,
                    audit,
                    ..Change::default()
                })
                .await?;
        }
    }
    Ok(Json(ApplyResponse {
        changes: changes_json,
        applied: !request.dry_run,
    }))
}

/// Managed certificates with their status.
#[utoipa::path(get, path = "/api/v1/managed-certificates", responses((status = 200, body = Vec<ManagedView>)), tag = "managed")]
async fn list_managed(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ManagedView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "managed.list").await?;
    let records = state
        .store
        .managed_certificates(principal.tenant.as_deref())
        .await?;
    Ok(Json(records.into_iter().map(managed_view).collect()))
}

/// One managed certificate with its latest attempts.
#[utoipa::path(
    get,
    path = "/api/v1/managed-certificates/{name}",
    params(("name" = String, Path, description = "Managed certificate name")),
    responses((status = 200, body = ManagedView), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "managed"
)]
async fn get_managed(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ManagedView>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "managed.get").await?;
    let record = state
        .store
        .managed_certificate(&name)
        .await?
        .filter(|r| principal.sees(&r.tenant))
        .ok_or_else(|| {
            Problem::not_found(format!("no managed certificate {name:?} in your tenants"))
        })?;
    let mut view = managed_view(record);
    view.attempts = state
        .store
        .renewal_attempts(&name, 20)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            issuer: a.issuer,
            outcome: a.outcome,
            error: a.error,
            serial: a.serial,
        })
        .collect();
    Ok(Json(view))
}

/// Renew a managed certificate now.
#[utoipa::path(
    post,
    path = "/api/v1/managed-certificates/{name}/renew",
    params(("name" = String, Path, description = "Managed certificate name")),
    responses((status = 202, description = "Scheduled"), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "managed"
)]
async fn renew_managed(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    let principal = authorize(&state, &headers, Permission::Issue, "managed.renew").await?;
    let visible = state
        .store
        .managed_certificate(&name)
        .await?
        .is_some_and(|r| principal.sees(&r.tenant));
    if !visible {
        return Err(state
            .audit_denial(
                &principal.token_id,
                "managed.renew",
                &name,
                Problem::not_found(format!("no managed certificate {name:?} in your tenants")),
            )
            .await);
    }
    state
        .store
        .apply(Change {
            managed_renew_now: vec![name.clone()],
            audit: vec![AuditEvent {
                actor: principal.token_id.clone(),
                action: "managed.renew".into(),
                object: name,
                outcome: Outcome::Success,
                detail: serde_json::json!({"requested": true}),
            }],
            ..Change::default()
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Each issuer's bound on renewal attempts at once and the load it has seen.
#[utoipa::path(
    get,
    path = "/api/v1/lifecycle/issuers",
    responses((status = 200, body = Vec<crate::lifecycle::IssuerLoad>)),
    tag = "managed"
)]
async fn issuer_loads(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::lifecycle::IssuerLoad>>, Problem> {
    authorize(&state, &headers, Permission::Read, "lifecycle.issuers").await?;
    Ok(Json(state.issuer_slots.loads()))
}

/// Request to create an ACME external account binding key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEabKeyRequest {
    /// The tenant whose ACME directory accepts the key.
    pub tenant: String,
    /// How long the key can bind an account, such as "7d" (default: no expiry).
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// An ACME external account binding key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct EabKeyView {
    /// Key id (`--eab-kid`).
    pub kid: String,
    /// Tenant.
    pub tenant: String,
    /// The tenant's ACME directory URL path.
    pub directory_path: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The account it bound, once used.
    #[serde(default)]
    pub account: Option<String>,
    /// HMAC key, base64url (`--eab-hmac-key`); only in the creation response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<String>,
}

impl std::fmt::Debug for EabKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EabKeyView")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Create an ACME external account binding key for a tenant (admin).
#[utoipa::path(
    post,
    path = "/api/v1/acme/eab-keys",
    request_body = CreateEabKeyRequest,
    responses((status = 201, body = EabKeyView), (status = 403, body = Problem, content_type = "application/problem+json")),
    tag = "acme"
)]
async fn create_eab_key(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let principal = authorize(
        &state,
        &headers,
        Permission::ManageTokens,
        "acme.eab.create",
    )
    .await?;
    let request: CreateEabKeyRequest =
        json_body(&state, &principal.token_id, "acme.eab.create", body).await?;
    let checked = (|| {
        Tenant::validate(&request.tenant)?;
        principal.require_tenant(&request.tenant)?;
        expiry(request.expires_in.as_deref())
    })();
    let expires_at = match checked {
        Ok(expires_at) => expires_at,
        Err(problem) => {
            return Err(state
                .audit_denial(
                    &principal.token_id,
                    "acme.eab.create",
                    &request.tenant,
                    problem,
                )
                .await);
        }
    };
    let mut secret = [0u8; 32];
    let mut id = [0u8; 12];
    {
        use aws_lc_rs::rand::SecureRandom;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        rng.fill(&mut secret)
            .and_then(|()| rng.fill(&mut id))
            .map_err(|_| Problem::internal("the system random generator failed"))?;
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let kid = format!("eab_{}", b64(&id));
    let key = certkeeper_store::NewEabKey {
        kid: kid.clone(),
        tenant: request.tenant.clone(),
        hmac_key: b64(&secret),
        created_by: principal.token_id.clone(),
        expires_at,
    };
    let audit = AuditEvent {
        actor: principal.token_id.clone(),
        action: "acme.eab.create".into(),
        object: kid.clone(),
        outcome: Outcome::Success,
        detail: serde_json::json!({"tenant": request.tenant, "expires_at": expires_at}),
    };
    state
        .store
        .apply(Change {
            eab_keys: vec![key.clone()],
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(created(EabKeyView {
        kid,
        directory_path: format!("/acme/{}/directory", request.tenant),
        tenant: request.tenant,
        created_at: rfc3339(now()),
        expires_at: expires_at.map(rfc3339),
        account: None,
        hmac_key: Some(key.hmac_key),
    }))
}

/// List ACME external account binding keys (admin; secrets are never listed).
#[utoipa::path(get, path = "/api/v1/acme/eab-keys", responses((status = 200, body = Vec<EabKeyView>)), tag = "acme")]
async fn list_eab_keys(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<EabKeyView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "acme.eab.list").await?;
    let keys = state.store.eab_keys(principal.tenant.as_deref()).await?;
    Ok(Json(
        keys.into_iter()
            .map(|k| EabKeyView {
                directory_path: format!("/acme/{}/directory", k.key.tenant),
                kid: k.key.kid,
                tenant: k.key.tenant,
                created_at: rfc3339(k.created_at),
                expires_at: k.key.expires_at.map(rfc3339),
                account: k.account_id,
                hmac_key: None,
            })
            .collect(),
    ))
}

/// List API tokens (admin).
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<TokenView>)), tag = "tokens")]
async fn list_tokens(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<TokenView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "token.list").await?;
    let tokens = state.store.tokens().await?;
    Ok(Json(
        tokens
            .into_iter()
            .filter(|t| principal.tenant.is_none() || t.token.tenant == principal.tenant)
            .map(|t| TokenView {
                id: t.token.id,
                name: t.token.name,
                role: t.token.role,
                tenant: t.token.tenant,
                created_by: t.token.created_by,
                created_at: rfc3339(t.created_at),
                expires_at: t.token.expires_at.map(rfc3339),
                revoked_at: t.revoked_at.map(rfc3339),
                token: None,
            })
            .collect(),
    ))
}

/// Revoke an API token (admin).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = Problem, content_type = "application/problem+json")),
    tag = "tokens"
)]
async fn revoke_token(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let principal = authorize(&state, &headers, Permission::ManageTokens, "token.revoke").await?;
    let target = state.store.token(&id).await?;
    let visible = target
        .as_ref()
        .is_some_and(|t| principal.tenant.is_none() || t.token.tenant == principal.tenant);
    if !visible {
        return Err(state
            .audit_denial(
                &principal.token_id,
                "token.revoke",
                &id,
                Problem::not_found(format!("no token {id}")),
            )
            .await);
    }
    let audit = AuditEvent {
        actor: principal.token_id.clone(),
        action: "token.revoke".into(),
        object: id.clone(),
        outcome: Outcome::Success,
        detail: serde_json::json!({}),
    };
    state
        .store
        .apply(Change {
            revoke_token: Some(id.clone()),
            audit: vec![audit],
            ..Change::default()
        })
        .await
        .map_err(|e| match e {
            certkeeper_store::StoreError::NotFound(_) => Problem::new(
                StatusCode::CONFLICT,
                "already-revoked",
                "Already revoked",
                format!("token {id} is already revoked"),
            ),
            other => Problem::from(other),
        })?;
    state.tokens.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Entries after this sequence number (default 0).
    after: Option<i64>,
    /// Page size, 1-5000 (default 100).
    limit: Option<i64>,
}

/// An audit entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the chain.
    pub seq: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub object: String,
    /// success, denied or failure.
    pub outcome: String,
    /// Extra facts.
    pub detail: serde_json::Value,
    /// This entry's hash.
    pub hash: String,
}

/// Read the audit log (admin, auditor).
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams), responses((status = 200, body = Vec<AuditEntryView>)), tag = "audit")]
async fn list_audit(
    State(state): State<SharedState>,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Vec<AuditEntryView>>, Problem> {
    let principal = authorize(&state, &headers, Permission::Audit, "audit.read").await?;
    require_unscoped(&state, &principal, "audit.read").await?;
    let Query(params) = params.map_err(|e| Problem::malformed(format!("query: {e}")))?;
    let entries = state
        .store
        .audit_entries(params.after.unwrap_or(0), params.limit.unwrap_or(100))
        .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditEntryView {
                time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(e.at_ms) * 1_000_000,
                )
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
                seq: e.seq,
                actor: e.actor,
                action: e.action,
                object: e.object,
                outcome: e.outcome,
                detail: serde_json::from_str(&e.detail)
                    .unwrap_or(serde_json::Value::String(e.detail)),
                hash: e.hash,
            })
            .collect(),
    ))
}

/// Result of an audit-chain verification.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether the chain is intact.
    pub ok: bool,
    /// Entries checked.
    pub entries: i64,
    /// Problems found: entry and description.
    pub problems: Vec<AuditProblemView>,
}

/// One problem in the chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditProblemView {
    /// The entry.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// Verify the audit hash chain (admin, auditor).
#[utoipa::path(get, path = "/api/v1/audit/verify", responses((status = 200, body = AuditVerification)), tag = "audit")]
async fn verify_audit(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<AuditVerification>, Problem> {
    let principal = authorize(&state, &headers, Permission::Audit, "audit.verify").await?;
    require_unscoped(&state, &principal, "audit.verify").await?;
    let report = state.store.verify_audit().await?;
    Ok(Json(AuditVerification {
        ok: report.ok(),
        entries: report.entries,
        problems: report
            .problems
            .into_iter()
            .map(|p| AuditProblemView {
                seq: p.seq,
                problem: p.problem,
            })
            .collect(),
    }))
}

/// A profile as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Seconds.
    pub default_validity_seconds: u64,
    /// Seconds.
    pub max_validity_seconds: u64,
    /// Allowed key kinds.
    pub key_algorithms: Vec<String>,
    /// Allowed SAN kinds.
    pub san_kinds: Vec<String>,
    /// Follows the CA/B Forum TLS server profile.
    pub cabf_server: bool,
}

/// List profiles.
#[utoipa::path(get, path = "/api/v1/profiles", responses((status = 200, body = Vec<ProfileView>)), tag = "configuration")]
async fn list_profiles(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ProfileView>>, Problem> {
    authorize(&state, &headers, Permission::Read, "profile.list").await?;
    let mut profiles: Vec<ProfileView> = state
        .profiles
        .values()
        .map(|p| ProfileView {
            name: p.name.clone(),
            description: p.description.clone(),
            default_validity_seconds: p.default_validity_seconds,
            max_validity_seconds: p.max_validity_seconds,
            key_algorithms: p.key_kinds.iter().map(|k| k.name().to_string()).collect(),
            san_kinds: p.san_kinds.iter().map(|k| k.name().to_string()).collect(),
            cabf_server: p.cabf_server,
        })
        .collect();
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(profiles))
}

/// The policy rules in force.
#[utoipa::path(get, path = "/api/v1/policy", responses((status = 200, body = serde_json::Value)), tag = "configuration")]
async fn get_policy(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Problem> {
    let principal = authorize(&state, &headers, Permission::Read, "policy.read").await?;
    let rules: Vec<_> = state
        .policy
        .rules()
        .iter()
        .filter(|rule| match &principal.tenant {
            None => true,
            Some(tenant) => {
                rule.tenants.is_empty() || rule.tenants.iter().any(|t| t == "*" || t == tenant)
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "rules": rules })))
}

/// The CA certificates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaView {
    /// Root certificate, PEM.
    pub root_pem: String,
    /// Issuing CA chain, PEM.
    pub chain_pem: String,
    /// SHA-256 of the root certificate.
    pub root_fingerprint_sha256: String,
}

/// The CA certificates (also served without authentication at /ca/root.crt and /ca/chain.pem).
#[utoipa::path(get, path = "/api/v1/ca", responses((status = 200, body = CaView)), tag = "configuration")]
async fn get_ca(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<CaView>, Problem> {
    authorize(&state, &headers, Permission::Read, "ca.read").await?;
    Ok(Json(CaView {
        root_pem: state.ca.root_pem.clone(),
        chain_pem: state.ca.chain_pem.clone(),
        root_fingerprint_sha256: state.ca.root_fingerprint.clone(),
    }))
}
