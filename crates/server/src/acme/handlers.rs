//! ACME resources: directory, nonces, accounts, orders, authorizations, challenges,
//! finalization, certificates, revocation, key rollover and renewal information.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use certkeeper_acme::{
    AcmeError, ErrorType, Identifier, Jwk, Jws, KeyRef, Status, ari_cert_id, ari_window,
    key_authorization, new_token, order_status_from_authorizations, parse_ari_cert_id,
    verify_external_account_binding,
};
use certkeeper_pki::{RevocationReason, SanEntry, parse_certificate, parse_csr, to_pem};
use certkeeper_store::{AcmeKind, AuditEvent, CertificateSource, Change, Outcome, StoreError};
use serde_json::{Value, json};

use super::{
    AccountDoc, AcmeService, AuthzDoc, ChallengeDoc, Failure, Loaded, OrderDoc, Reply, ReplyBody,
    Urls, account_json, authz_json, authz_status, challenge_json, error_json, finish, new_id,
    new_object, order_json, unix_now,
};
use crate::auth::{Principal, Role};
use crate::issuance::{IssueRequest, rfc3339};
use crate::revocation::RevokeRequest;
use crate::{AppState, SharedState};

/// Most identifiers in one order.
const MAX_IDENTIFIERS: usize = 100;
/// How long a challenge response waits for its validation before answering "processing".
const VALIDATION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Most orders listed for an account.
const MAX_LISTED_ORDERS: i64 = 1000;

/// The ACME routes (served on the HTTPS listener).
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/acme/{tenant}/directory", get(directory))
        .route(
            "/acme/{tenant}/new-nonce",
            get(new_nonce_get).head(new_nonce_head),
        )
        .route(
            "/acme/{tenant}/new-account",
            post(new_account).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/account/{id}",
            post(account).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/account/{id}/orders",
            post(account_orders).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/new-order",
            post(new_order).fallback(post_only),
        )
        .route("/acme/{tenant}/order/{id}", post(order).fallback(post_only))
        .route(
            "/acme/{tenant}/order/{id}/finalize",
            post(finalize).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/authz/{id}",
            post(authorization).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/chall/{authz}/{index}",
            post(challenge).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/cert/{serial}",
            post(certificate).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/revoke-cert",
            post(revoke_cert).fallback(post_only),
        )
        .route(
            "/acme/{tenant}/key-change",
            post(key_change).fallback(post_only),
        )
        .route("/acme/{tenant}/renewal-info/{*id}", get(renewal_info))
        .layer(axum::middleware::map_request(host_from_authority))
}

/// Every ACME resource but the directory, newNonce and renewalInfo is POST only (RFC 8555 §6.3).
async fn post_only(
    State(state): State<SharedState>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = params.get("tenant").cloned().unwrap_or_default();
    run(state, tenant, &headers, |_| async {
        Err(Failure {
            error: AcmeError::malformed(
                "this resource only accepts POST; read it with POST-as-GET (an empty payload)",
            ),
            retry_after: None,
            status: Some(StatusCode::METHOD_NOT_ALLOWED),
        })
    })
    .await
}

/// HTTP/2 requests carry the host in the URI authority, not a Host header; URLs are built
/// from the Host header, so copy it there.
async fn host_from_authority(mut request: axum::extract::Request) -> axum::extract::Request {
    if !request.headers().contains_key(header::HOST)
        && let Some(value) = request
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    request
}

/// What every handler works with.
struct Ctx {
    state: SharedState,
    service: Arc<AcmeService>,
    tenant: String,
    require_eab: bool,
    urls: Urls,
}

impl Ctx {
    fn app(&self) -> &AppState {
        &self.state
    }
}

fn origin(service: &AcmeService, headers: &HeaderMap) -> String {
    match &service.config.base_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("https://{host}")
        }
    }
}

async fn run<F, Fut>(
    state: SharedState,
    tenant: String,
    headers: &HeaderMap,
    handler: F,
) -> Response
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<Reply, Failure>>,
{
    let Some(service) = state.acme.clone() else {
        return axum::response::IntoResponse::into_response(crate::problem::Problem::not_found(
            "the ACME server is disabled ([acme] enabled = false)",
        ));
    };
    let urls = Urls {
        base: format!("{}/acme/{tenant}", origin(&service, headers)),
    };
    let directory = urls.directory();
    let result = match service.tenant(&tenant) {
        Ok(require_eab) => {
            handler(Ctx {
                state: state.clone(),
                service: service.clone(),
                tenant,
                require_eab,
                urls,
            })
            .await
        }
        Err(error) => Err(error.into()),
    };
    finish(&service, &directory, result)
}

/// Who signed a request.
enum Signer {
    Account(Box<Loaded<AccountDoc>>),
    Key(Jwk),
}

struct Verified {
    jws: Jws,
    signer: Signer,
    nonce: (i64, i64),
}

impl Verified {
    fn account(&self) -> Result<&Loaded<AccountDoc>, Failure> {
        match &self.signer {
            Signer::Account(account) => Ok(account),
            Signer::Key(_) => Err(AcmeError::malformed(
                "this resource needs a request signed with an account's key and its `kid`",
            )
            .into()),
        }
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum KeyMode {
    /// Only `kid` (an existing account).
    Kid,
    /// Only `jwk` (newAccount).
    Jwk,
    /// Either (revokeCert).
    Either,
}

/// Checks content type, JWS, signer, signature, `url` and nonce (RFC 8555 §6.2-6.5).
async fn verify(
    ctx: &Ctx,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    mode: KeyMode,
) -> Result<Verified, Failure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/jose+json") {
        return Err(Failure {
            error: AcmeError::malformed(format!(
                "Content-Type is {content_type:?}; ACME requests are application/jose+json"
            )),
            retry_after: None,
            status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        });
    }
    let jws = Jws::parse(body)?;
    let signer = match (&jws.key, mode) {
        (KeyRef::Jwk(_), KeyMode::Kid) => {
            return Err(AcmeError::malformed(
                "this resource needs `kid` (the account URL) in the protected header, not `jwk`",
            )
            .into());
        }
        (KeyRef::Kid(_), KeyMode::Jwk) => {
            return Err(AcmeError::malformed(
                "newAccount needs `jwk` in the protected header, not `kid`",
            )
            .into());
        }
        (KeyRef::Jwk(jwk), _) => {
            jws.verify(jwk)?;
            Signer::Key(jwk.clone())
        }
        (KeyRef::Kid(kid), _) => {
            let account = load_account_by_kid(ctx, kid).await?;
            let jwk = Jwk::from_json(&account.doc.jwk)?;
            jws.verify(&jwk)?;
            Signer::Account(Box::new(account))
        }
    };
    let expected = format!("{}{}", origin(&ctx.service, headers), uri.path());
    if jws.url != expected {
        return Err(AcmeError::unauthorized(format!(
            "the JWS `url` header {:?} is not this request's URL {expected:?}",
            jws.url
        ))
        .into());
    }
    let nonce = ctx.service.use_nonce(jws.nonce.as_deref())?;
    Ok(Verified { jws, signer, nonce })
}

async fn load_account_by_kid(ctx: &Ctx, kid: &str) -> Result<Loaded<AccountDoc>, Failure> {
    let prefix = ctx.urls.account("");
    let id = kid.strip_prefix(&prefix).ok_or_else(|| {
        AcmeError::new(
            ErrorType::AccountDoesNotExist,
            format!("`kid` {kid:?} is not an account URL of this directory ({prefix}...)"),
        )
    })?;
    let account = match ctx.service.cached_account(id) {
        Some(account) => account,
        None => {
            let row = ctx
                .app()
                .store
                .acme_object(AcmeKind::Account, id)
                .await?
                .ok_or_else(|| {
                    AcmeError::new(
                        ErrorType::AccountDoesNotExist,
                        format!("no account {kid}; create one with newAccount"),
                    )
                })?;
            let account = Loaded::<AccountDoc>::decode(row)?;
            ctx.service.cache_account(&account);
            account
        }
    };
    if account.row.tenant != ctx.tenant {
        return Err(AcmeError::new(
            ErrorType::AccountDoesNotExist,
            format!("no account {kid} in this directory; create one with newAccount"),
        )
        .into());
    }
    if account.doc.status != Status::Valid {
        // RFC 8555 §7.3.6: 401 for requests of a deactivated account.
        return Err(Failure {
            error: AcmeError::unauthorized(format!(
                "account {kid} is {}; it cannot be used any more",
                account.doc.status.as_str()
            )),
            retry_after: None,
            status: Some(StatusCode::UNAUTHORIZED),
        });
    }
    Ok(account)
}

fn json_reply(status: StatusCode, value: Value) -> Reply {
    Reply::json(status, value)
}

/// A committed change, or an object that another request changed first (its version moved).
enum Written {
    Done(certkeeper_store::ChangeOutcome),
    LostRace,
}

/// Applies a change; a used nonce found by the database is a badNonce, a lost race is left to
/// the caller (what it means depends on the resource).
async fn commit_racing(ctx: &Ctx, change: Change) -> Result<Written, Failure> {
    match ctx.service.apply(&ctx.app().store, change).await {
        Ok(outcome) => Ok(Written::Done(outcome)),
        Err(StoreError::Conflict(detail)) if detail.contains("nonce") => Err(AcmeError::new(
            ErrorType::BadNonce,
            "this nonce was already used; retry with the nonce in this response",
        )
        .into()),
        Err(StoreError::Conflict(detail)) => {
            tracing::debug!(%detail, "ACME write lost a race");
            Ok(Written::LostRace)
        }
        Err(error) => Err(error.into()),
    }
}

/// Applies a change; a lost race asks the client to fetch the object and retry.
async fn commit(ctx: &Ctx, change: Change) -> Result<certkeeper_store::ChangeOutcome, Failure> {
    match commit_racing(ctx, change).await? {
        Written::Done(outcome) => Ok(outcome),
        Written::LostRace => Err(AcmeError::new(
            ErrorType::Malformed,
            "the object changed while this request ran; fetch it and retry",
        )
        .into()),
    }
}

fn audit(actor: &str, action: &str, object: &str, detail: Value) -> AuditEvent {
    AuditEvent {
        actor: actor.to_string(),
        action: action.to_string(),
        object: object.to_string(),
        outcome: Outcome::Success,
        detail,
    }
}

fn actor(account_id: &str) -> String {
    format!("acme:{account_id}")
}

// ---- directory and nonces ----------------------------------------------------------------

async fn directory(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(state, tenant, &headers, |ctx| async move {
        let config = &ctx.service.config;
        let mut profiles = serde_json::Map::new();
        for name in offered_profiles(&ctx) {
            if let Ok(profile) = ctx.app().profile(&name) {
                profiles.insert(name.clone(), json!(profile.description));
            }
        }
        let mut meta = json!({
            "externalAccountRequired": ctx.require_eab,
            "caaIdentities": config.caa_identities,
            "profiles": profiles,
        });
        if let Some(url) = &config.terms_of_service {
            meta["termsOfService"] = json!(url);
        }
        if let Some(url) = &config.website {
            meta["website"] = json!(url);
        }
        let urls = &ctx.urls;
        Ok(json_reply(
            StatusCode::OK,
            json!({
                "newNonce": urls.endpoint("new-nonce"),
                "newAccount": urls.endpoint("new-account"),
                "newOrder": urls.endpoint("new-order"),
                "revokeCert": urls.endpoint("revoke-cert"),
                "keyChange": urls.endpoint("key-change"),
                "renewalInfo": urls.endpoint("renewal-info"),
                "meta": meta,
            }),
        ))
    })
    .await
}

fn offered_profiles(ctx: &Ctx) -> Vec<String> {
    if ctx.service.config.profiles.is_empty() {
        let mut names: Vec<String> = ctx.app().profiles.keys().cloned().collect();
        names.sort();
        names
    } else {
        ctx.service.config.profiles.clone()
    }
}

async fn new_nonce_head(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    nonce_reply(state, tenant, &headers, StatusCode::OK).await
}

async fn new_nonce_get(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    nonce_reply(state, tenant, &headers, StatusCode::NO_CONTENT).await
}

/// RFC 8555 §7.2: HEAD answers 200, GET 204; `finish` adds the nonce.
async fn nonce_reply(
    state: SharedState,
    tenant: String,
    headers: &HeaderMap,
    status: StatusCode,
) -> Response {
    run(state, tenant, headers, |_| async move {
        Ok(Reply {
            status,
            headers: HeaderMap::new(),
            body: ReplyBody::Empty,
        })
    })
    .await
}

// ---- accounts ---------------------------------------------------------------------------

fn payload_object(jws: &Jws) -> Result<serde_json::Map<String, Value>, Failure> {
    match jws.payload_json()? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(serde_json::Map::new()),
        _ => Err(AcmeError::malformed("the JWS payload must be a JSON object").into()),
    }
}

fn contacts(value: Option<&Value>) -> Result<Vec<String>, Failure> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let list = value
        .as_array()
        .ok_or_else(|| AcmeError::malformed("`contact` must be an array of URLs"))?;
    let mut contacts = Vec::new();
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| AcmeError::malformed("`contact` entries must be strings"))?;
        let Some(address) = text.strip_prefix("mailto:") else {
            return Err(AcmeError::new(
                ErrorType::UnsupportedContact,
                format!("contact {text:?} is not supported; use mailto: URLs"),
            )
            .into());
        };
        let valid = address.len() <= 254
            && !address.contains(',')
            && !address.contains('?')
            && address
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !valid {
            return Err(AcmeError::new(
                ErrorType::InvalidContact,
                format!("contact {text:?} is not a single valid email address"),
            )
            .into());
        }
        contacts.push(text.to_string());
    }
    Ok(contacts)
}

async fn new_account(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Jwk).await?;
        let Signer::Key(jwk) = &verified.signer else {
            return Err(AcmeError::malformed("newAccount needs `jwk`").into());
        };
        let payload = payload_object(&verified.jws)?;
        let thumbprint = jwk.thumbprint();
        if let Some(row) = ctx
            .app()
            .store
            .acme_account_by_key(&ctx.tenant, &thumbprint)
            .await?
        {
            ctx.service.remember_nonce(verified.nonce);
            let account = Loaded::<AccountDoc>::decode(row)?;
            if account.doc.status != Status::Valid {
                return Err(AcmeError::unauthorized(format!(
                    "the account of this key is {}",
                    account.doc.status.as_str()
                ))
                .into());
            }
            let url = ctx.urls.account(&account.row.id);
            return Ok(json_reply(
                StatusCode::OK,
                account_json(&ctx.urls, &account.row.id, &account.doc),
            )
            .with_header(header::LOCATION, &url));
        }
        if payload.get("onlyReturnExisting") == Some(&Value::Bool(true)) {
            ctx.service.remember_nonce(verified.nonce);
            return Err(AcmeError::new(
                ErrorType::AccountDoesNotExist,
                "no account has this key; send newAccount without onlyReturnExisting to create one",
            )
            .into());
        }
        let contact = contacts(payload.get("contact"))?;
        let agreed = payload.get("termsOfServiceAgreed") == Some(&Value::Bool(true));
        if let Some(terms) = &ctx.service.config.terms_of_service
            && !agreed
        {
            return Err(Failure::from(AcmeError::new(
                ErrorType::UserActionRequired,
                format!("agree to the terms of service at {terms} (termsOfServiceAgreed: true)"),
            )));
        }
        let eab_binding = payload.get("externalAccountBinding").cloned();
        let eab_kid = match payload.get("externalAccountBinding") {
            Some(binding) => Some(check_binding(&ctx, binding, jwk).await?),
            None if ctx.require_eab => {
                return Err(AcmeError::new(
                    ErrorType::ExternalAccountRequired,
                    format!(
                        "tenant {:?} requires external account binding; ask an administrator for a key (certkeeper acme eab create --tenant {})",
                        ctx.tenant, ctx.tenant
                    ),
                )
                .into());
            }
            None => None,
        };
        let id = new_id()?;
        let doc = AccountDoc {
            status: Status::Valid,
            contact,
            jwk: jwk.to_json(),
            created_at: unix_now(),
            eab_kid: eab_kid.clone(),
            eab: eab_binding,
            terms_agreed: agreed,
        };
        let object = new_object(
            AcmeKind::Account,
            &id,
            (&ctx.tenant, &id),
            &thumbprint,
            "valid",
            0,
            &doc,
        )?;
        commit(
            &ctx,
            Change {
                acme_objects: vec![object],
                acme_nonces: vec![verified.nonce],
                bind_eab: eab_kid.clone().map(|kid| (kid, id.clone())),
                audit: vec![audit(
                    &actor(&id),
                    "acme.account.create",
                    &id,
                    json!({"tenant": ctx.tenant, "contact": doc.contact, "eab_kid": eab_kid, "jwk_thumbprint": thumbprint}),
                )],
                ..Change::default()
            },
        )
        .await?;
        Ok(
            json_reply(StatusCode::CREATED, account_json(&ctx.urls, &id, &doc))
                .with_header(header::LOCATION, &ctx.urls.account(&id)),
        )
    })
    .await
}

/// Verifies an external account binding and returns its key id.
async fn check_binding(ctx: &Ctx, binding: &Value, jwk: &Jwk) -> Result<String, Failure> {
    let kid = binding
        .get("protected")
        .and_then(Value::as_str)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|header| {
            header
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| {
            AcmeError::malformed(
                "externalAccountBinding has no readable protected header with a `kid`",
            )
        })?;
    let record = ctx.app().store.eab_key(&kid).await?;
    let unusable = |why: &str| {
        Failure::from(AcmeError::unauthorized(format!(
            "external account binding key {kid:?} {why}; ask an administrator for a new one"
        )))
    };
    let record = match record {
        Some(record) if record.key.tenant == ctx.tenant => record,
        _ => {
            return Err(unusable(&format!(
                "is not known to tenant {:?}",
                ctx.tenant
            )));
        }
    };
    if record.account_id.is_some() {
        return Err(unusable("is already bound to an account"));
    }
    if record.key.expires_at.is_some_and(|at| at <= unix_now()) {
        return Err(unusable("has expired"));
    }
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(record.key.hmac_key.trim_end_matches('='))
        .map_err(|_| unusable("is stored in an unreadable form"))?;
    let url = ctx.urls.endpoint("new-account");
    let verified = verify_external_account_binding(binding, jwk, &url, |asked| {
        (asked == kid).then(|| hmac.clone())
    })?;
    Ok(verified)
}

async fn account(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let account = verified.account()?;
        if account.row.id != id {
            return Err(
                AcmeError::unauthorized("an account can only read or change itself").into(),
            );
        }
        let payload = payload_object(&verified.jws)?;
        let mut updated = account.clone();
        let mut changed = false;
        let mut action = "acme.account.update";
        if let Some(contact) = payload.get("contact") {
            updated.doc.contact = contacts(Some(contact))?;
            changed = true;
        }
        // RFC 8555 §7.3.2: other status values are ignored; only deactivation is a change.
        if payload.get("status").and_then(Value::as_str) == Some("deactivated") {
            updated.doc.status = Status::Deactivated;
            action = "acme.account.deactivate";
            changed = true;
        }
        if !changed {
            ctx.service.remember_nonce(verified.nonce);
            return Ok(json_reply(
                StatusCode::OK,
                account_json(&ctx.urls, &id, &account.doc),
            ));
        }
        let object = updated.updated(updated.doc.status.as_str(), None, 0)?;
        commit(
            &ctx,
            Change {
                acme_objects: vec![object],
                acme_nonces: vec![verified.nonce],
                audit: vec![audit(
                    &actor(&id),
                    action,
                    &id,
                    json!({"status": updated.doc.status.as_str(), "contact": updated.doc.contact}),
                )],
                ..Change::default()
            },
        )
        .await?;
        ctx.service.forget_account(&id);
        Ok(json_reply(
            StatusCode::OK,
            account_json(&ctx.urls, &id, &updated.doc),
        ))
    })
    .await
}

async fn account_orders(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        ctx.service.remember_nonce(verified.nonce);
        let account = verified.account()?;
        if account.row.id != id {
            return Err(AcmeError::unauthorized("an account can only list its own orders").into());
        }
        let rows = ctx
            .app()
            .store
            .acme_objects_of_account(&id, AcmeKind::Order, MAX_LISTED_ORDERS)
            .await?;
        let orders: Vec<String> = rows.iter().map(|r| ctx.urls.order(&r.id)).collect();
        Ok(json_reply(StatusCode::OK, json!({"orders": orders})))
    })
    .await
}

// ---- orders -----------------------------------------------------------------------------

fn san_of(identifier: &Identifier) -> Result<SanEntry, Failure> {
    match identifier.kind.as_str() {
        "ip" => identifier
            .value
            .parse::<IpAddr>()
            .map(SanEntry::Ip)
            .map_err(|_| {
                AcmeError::malformed(format!("{} is not an IP address", identifier.value)).into()
            }),
        _ => Ok(SanEntry::Dns(identifier.value.clone())),
    }
}

fn challenge_types(identifier: &Identifier) -> &'static [&'static str] {
    if identifier.kind == "ip" {
        &["http-01", "tls-alpn-01"]
    } else if identifier.is_wildcard() {
        &["dns-01"]
    } else {
        &["http-01", "dns-01", "tls-alpn-01"]
    }
}

fn random_token() -> Result<String, Failure> {
    let mut bytes = [0u8; 32];
    super::random_bytes(&mut bytes)
        .map_err(|e| AcmeError::new(ErrorType::ServerInternal, e.to_string()))?;
    Ok(new_token(&bytes))
}

async fn new_order(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let payload = payload_object(&verified.jws)?;
        if payload.contains_key("notBefore") || payload.contains_key("notAfter") {
            return Err(AcmeError::malformed(
                "notBefore and notAfter are not supported; the profile sets the validity",
            )
            .into());
        }
        let raw: Vec<Identifier> = serde_json::from_value(
            payload.get("identifiers").cloned().unwrap_or(Value::Null),
        )
        .map_err(|e| AcmeError::malformed(format!("`identifiers` must be a list of {{type, value}}: {e}")))?;
        if raw.is_empty() || raw.len() > MAX_IDENTIFIERS {
            return Err(AcmeError::malformed(format!(
                "an order needs 1 to {MAX_IDENTIFIERS} identifiers"
            ))
            .into());
        }
        let mut identifiers = BTreeSet::new();
        for identifier in &raw {
            identifiers.insert(identifier.normalized()?);
        }
        let identifiers: Vec<Identifier> = identifiers.into_iter().collect();
        let profile_name = match payload.get("profile") {
            None => ctx.service.config.default_profile.clone(),
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(AcmeError::malformed("`profile` must be a string").into()),
        };
        let offered = offered_profiles(&ctx);
        if !offered.contains(&profile_name) {
            return Err(AcmeError::malformed(format!(
                "profile {profile_name:?} is not offered; the directory lists {offered:?}"
            ))
            .into());
        }
        let profile = ctx.app().profile(&profile_name).map_err(Failure::from)?;
        let sans: Vec<SanEntry> = identifiers.iter().map(san_of).collect::<Result<_, _>>()?;
        if let Err(problem) =
            crate::issuance::check_names(ctx.app(), &ctx.tenant, profile, &sans)
        {
            let problem = ctx
                .app()
                .audit_denial(&actor(&account.row.id), "acme.order.create", &identifiers[0].value, problem)
                .await;
            return Err(Failure::from(problem));
        }
        // Rate limits: failed validations first (they do not count an order), then orders.
        let limits = &ctx.service.config.rate_limits;
        for identifier in &identifiers {
            let (failed, wait) = ctx
                .service
                .failed_validations(&failure_key(&ctx.tenant, &account.row.id, &identifier.key()));
            if failed >= limits.failed_validations_per_name {
                return Err(Failure {
                    status: None,
                    error: AcmeError::new(
                        ErrorType::RateLimited,
                        format!(
                            "{} failed validation {failed} times in this window (limit {}); fix the challenge setup and retry after {wait}s",
                            identifier.value, limits.failed_validations_per_name
                        ),
                    ),
                    retry_after: Some(wait),
                });
            }
        }
        let mut keys = vec![
            (format!("account {}", account.row.id), limits.orders_per_account),
            (format!("tenant {}", ctx.tenant), limits.orders_per_tenant),
        ];
        keys.extend(identifiers.iter().map(|i| {
            (
                format!("name {} in tenant {} by account {}", i.key(), ctx.tenant, account.row.id),
                limits.orders_per_name,
            )
        }));
        ctx.service.rate_limit(&keys).map_err(|(error, wait)| Failure {
            error,
            retry_after: Some(wait),
            status: None,
        })?;

        let now = unix_now();
        let (replaces, replaces_certificate_id) = match payload.get("replaces") {
            None => (None, None),
            Some(Value::String(id)) => {
                let certificate = check_replaces(&ctx, &account, id, &identifiers).await?;
                (Some(id.clone()), Some(certificate))
            }
            Some(_) => return Err(AcmeError::malformed("`replaces` must be a string").into()),
        };
        let replaces_key = match &replaces {
            Some(id) => canonical_ari_id(id)?,
            None => String::new(),
        };
        let mut expires = now + i64::try_from(ctx.service.config.order_lifetime).unwrap_or(86_400);
        let mut objects = Vec::new();
        let mut authorization_ids = Vec::new();
        let mut statuses = Vec::new();
        for identifier in &identifiers {
            let key = identifier.key();
            if let Some(row) = ctx
                .app()
                .store
                .acme_reusable_authz(&account.row.id, &key, now)
                .await?
            {
                // The order cannot outlive an authorization it relies on.
                expires = expires.min(row.expires_at);
                authorization_ids.push(row.id.clone());
                statuses.push(Status::Valid);
                continue;
            }
            let id = new_id()?;
            let challenges = challenge_types(identifier)
                .iter()
                .map(|kind| {
                    Ok(ChallengeDoc {
                        kind: (*kind).to_string(),
                        token: random_token()?,
                        status: Status::Pending,
                        validated: None,
                        error: None,
                    })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let doc = AuthzDoc {
                status: Status::Pending,
                expires,
                identifier: identifier.base(),
                wildcard: identifier.is_wildcard(),
                challenges,
            };
            objects.push(new_object(
                AcmeKind::Authz,
                &id,
                (&ctx.tenant, &account.row.id),
                &key,
                "pending",
                expires,
                &doc,
            )?);
            authorization_ids.push(id);
            statuses.push(Status::Pending);
        }
        let order_id = new_id()?;
        let doc = OrderDoc {
            status: Status::Pending,
            expires,
            identifiers,
            authorizations: authorization_ids,
            profile: profile_name,
            error: None,
            certificate_serial: None,
            replaces: replaces.clone(),
            replaces_certificate_id,
        };
        objects.push(new_object(
            AcmeKind::Order,
            &order_id,
            (&ctx.tenant, &account.row.id),
            &replaces_key,
            "pending",
            expires,
            &doc,
        )?);
        commit(
            &ctx,
            Change {
                acme_objects: objects,
                acme_nonces: vec![verified.nonce],
                ..Change::default()
            },
        )
        .await?;
        let status = order_status_from_authorizations(&statuses);
        Ok(json_reply(
            StatusCode::CREATED,
            order_json(&ctx.urls, &order_id, &doc, status),
        )
        .with_header(header::LOCATION, &ctx.urls.order(&order_id)))
    })
    .await
}

/// The rate-limit key of failed validations: per tenant, account and identifier, so that no
/// account can use up another's allowance.
fn failure_key(tenant: &str, account_id: &str, identifier_key: &str) -> String {
    format!("{identifier_key} in tenant {tenant} by account {account_id}")
}

/// RFC 9773 §5: the replaced certificate must be this account's, share an identifier with the
/// order, and not be replaced already. Returns its inventory id.
async fn check_replaces(
    ctx: &Ctx,
    account: &Loaded<AccountDoc>,
    ari_id: &str,
    identifiers: &[Identifier],
) -> Result<i64, Failure> {
    let record = find_by_ari_id(ctx, ari_id).await?;
    if record.certificate.requester != actor(&account.row.id) {
        return Err(AcmeError::unauthorized(format!(
            "certificate {ari_id} was not issued to this account; `replaces` names one of your own certificates"
        ))
        .into());
    }
    let wanted: BTreeSet<String> = identifiers.iter().map(san_text).collect();
    if !record.certificate.sans.iter().any(|s| wanted.contains(s)) {
        return Err(AcmeError::malformed(format!(
            "certificate {ari_id} shares no identifier with this order"
        ))
        .into());
    }
    let earlier = ctx
        .app()
        .store
        .acme_orders_replacing(&canonical_ari_id(ari_id)?)
        .await?;
    for row in earlier {
        let order = Loaded::<OrderDoc>::decode(row.clone())?;
        if order_status(ctx, &order.doc).await? != Status::Invalid {
            return Err(AcmeError::new(
                ErrorType::AlreadyReplaced,
                format!(
                    "certificate {ari_id} is already being replaced by order {}",
                    ctx.urls.order(&row.id)
                ),
            )
            .into());
        }
    }
    Ok(record.id)
}

/// The ARI id in its canonical form (minimal serial encoding), as orders are stored under it.
fn canonical_ari_id(ari_id: &str) -> Result<String, Failure> {
    let (aki, serial) = parse_ari_cert_id(ari_id)?;
    Ok(ari_cert_id(&aki, &serial))
}

fn san_text(identifier: &Identifier) -> String {
    match identifier.kind.as_str() {
        "ip" => format!("IP:{}", identifier.value),
        _ => format!("DNS:{}", identifier.value),
    }
}

async fn find_by_ari_id(
    ctx: &Ctx,
    ari_id: &str,
) -> Result<certkeeper_store::CertificateRecord, Failure> {
    let (aki, serial) = parse_ari_cert_id(ari_id)?;
    let start = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    let serial_hex = hex::encode(&serial[start..]);
    let now = unix_now();
    let aki_hex = hex::encode(&aki);
    let record = ctx
        .app()
        .store
        .certificates_by_serial(&serial_hex, now)
        .await?
        .into_iter()
        .filter(|r| {
            r.certificate.tenant == ctx.tenant && r.certificate.source == CertificateSource::Issued
        })
        .find(|r| {
            parse_certificate(&r.certificate.der)
                .ok()
                .and_then(|s| s.authority_key_id)
                .is_some_and(|id| id.replace(':', "").eq_ignore_ascii_case(&aki_hex))
        });
    record.ok_or_else(|| {
        Failure::from(AcmeError::new(
            ErrorType::Malformed,
            format!("no certificate of this directory has the ARI id {ari_id}"),
        ))
    })
}

async fn load_owned<T>(
    ctx: &Ctx,
    kind: AcmeKind,
    id: &str,
    account: &Loaded<AccountDoc>,
) -> Result<Loaded<T>, Failure>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let row = ctx
        .service
        .object(&ctx.app().store, kind, id)
        .await?
        .filter(|row| row.tenant == ctx.tenant)
        .ok_or_else(|| {
            AcmeError::malformed(format!("no {} {id} in this directory", kind.as_str()))
        })?;
    if row.account_id != account.row.id {
        return Err(AcmeError::unauthorized(format!(
            "{} {id} belongs to another account",
            kind.as_str()
        ))
        .into());
    }
    Ok(Loaded::decode(row)?)
}

/// An order's status now: ready once every authorization is valid, invalid when one failed
/// or when the order expired unfinished.
async fn order_status(ctx: &Ctx, order: &OrderDoc) -> Result<Status, Failure> {
    match order.status {
        Status::Pending | Status::Ready => {}
        other => return Ok(other),
    }
    let now = unix_now();
    if order.expires <= now {
        return Ok(Status::Invalid);
    }
    let mut statuses = Vec::with_capacity(order.authorizations.len());
    for id in &order.authorizations {
        let status = match ctx
            .service
            .object(&ctx.app().store, AcmeKind::Authz, id)
            .await?
        {
            Some(row) => authz_status(&Loaded::<AuthzDoc>::decode(row)?.doc, now),
            None => Status::Expired,
        };
        statuses.push(status);
    }
    Ok(order_status_from_authorizations(&statuses))
}

async fn order(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        ctx.service.remember_nonce(verified.nonce);
        let order: Loaded<OrderDoc> =
            load_owned(&ctx, AcmeKind::Order, &id, verified.account()?).await?;
        let status = order_status(&ctx, &order.doc).await?;
        Ok(json_reply(
            StatusCode::OK,
            order_json(&ctx.urls, &id, &order.doc, status),
        ))
    })
    .await
}

async fn finalize(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let started = std::time::Instant::now();
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let order: Loaded<OrderDoc> = load_owned(&ctx, AcmeKind::Order, &id, &account).await?;
        let status = order_status(&ctx, &order.doc).await?;
        if status != Status::Ready {
            ctx.service.remember_nonce(verified.nonce);
            return Err(AcmeError::new(
                ErrorType::OrderNotReady,
                format!(
                    "the order is {}; finalize it once every authorization is valid (status ready)",
                    status.as_str()
                ),
            )
            .into());
        }
        let payload = payload_object(&verified.jws)?;
        let csr_text = payload
            .get("csr")
            .and_then(Value::as_str)
            .ok_or_else(|| AcmeError::malformed("finalize needs `csr`, a base64url DER CSR"))?;
        let csr_der = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(csr_text)
            .map_err(|_| AcmeError::new(ErrorType::BadCsr, "`csr` is not unpadded base64url"))?;
        let actor_id = actor(&account.row.id);
        // CSR checks that leave the order ready for a corrected CSR.
        if let Err(problem) = check_csr(&account, &order, &csr_der) {
            ctx.service.remember_nonce(verified.nonce);
            let problem = ctx
                .app()
                .audit_denial(&actor_id, "certificate.issue", &id, problem)
                .await;
            return Err(Failure::from(problem));
        }
        // Claim the order (ready -> processing) before anything is signed: of two concurrent
        // finalize requests only one signs, and no signed certificate goes unrecorded.
        let mut claimed = order.clone();
        claimed.doc.status = Status::Processing;
        let claim = claimed.updated("processing", None, order.row.expires_at)?;
        let claimed_change = Change {
            acme_objects: vec![claim.clone()],
            acme_nonces: vec![verified.nonce],
            ..Change::default()
        };
        if let Written::LostRace = commit_racing(&ctx, claimed_change).await? {
            return Err(AcmeError::new(
                ErrorType::OrderNotReady,
                "the order is being finalized by another request; fetch the order",
            )
            .into());
        }
        let order = Loaded {
            row: claim,
            doc: claimed.doc,
        };
        let outcome = finalize_checked(&ctx, &account, &order, &csr_der).await;
        let (record, response) = match outcome {
            Ok(done) => done,
            Err(problem) => {
                // Back to ready, so that the client can finalize with an acceptable CSR.
                let mut back = order.clone();
                back.doc.status = Status::Pending;
                if let Ok(object) = back.updated("pending", None, order.row.expires_at) {
                    let _ = commit(
                        &ctx,
                        Change {
                            acme_objects: vec![object],
                            ..Change::default()
                        },
                    )
                    .await;
                }
                let problem = ctx
                    .app()
                    .audit_denial(&actor_id, "certificate.issue", &id, problem)
                    .await;
                return Err(Failure::from(problem));
            }
        };
        let mut done = order.clone();
        done.doc.status = Status::Valid;
        done.doc.certificate_serial = Some(response.serial.clone());
        let object = done.updated("valid", None, order.row.expires_at)?;
        commit(
            &ctx,
            Change {
                certificates: vec![record.clone()],
                acme_objects: vec![object],
                supersede: order.doc.replaces_certificate_id.into_iter().collect(),
                audit: vec![audit(
                    &actor_id,
                    "certificate.issue",
                    &response.serial,
                    json!({
                        "protocol": "acme",
                        "profile": response.profile,
                        "tenant": response.tenant,
                        "sans": response.sans,
                        "not_after": response.not_after,
                        "spki_sha256": record.spki_sha256,
                        "order": id,
                        "replaces": order.doc.replaces,
                    }),
                )],
                ..Change::default()
            },
        )
        .await?;
        ctx.app()
            .metrics
            .issued("acme", &response.profile, started.elapsed().as_secs_f64());
        Ok(json_reply(
            StatusCode::OK,
            order_json(&ctx.urls, &id, &done.doc, Status::Valid),
        )
        .with_header(header::LOCATION, &ctx.urls.order(&id)))
    })
    .await
}

/// RFC 8555 §7.4 and §11.1: the CSR names exactly the order's identifiers (in CN or SANs)
/// and its key is not the account's.
fn check_csr(
    account: &Loaded<AccountDoc>,
    order: &Loaded<OrderDoc>,
    csr_der: &[u8],
) -> Result<(), crate::problem::Problem> {
    let bad_csr = |detail: String| {
        crate::problem::Problem::new(StatusCode::BAD_REQUEST, "malformed-csr", "Bad CSR", detail)
    };
    let info = parse_csr(csr_der)?;
    let mut csr_names: BTreeSet<String> = info.sans.iter().map(san_entry_text).collect();
    if let Some(cn) = &info.common_name {
        let cn = cn.to_ascii_lowercase();
        match cn.parse::<IpAddr>() {
            Ok(ip) => csr_names.insert(format!("IP:{ip}")),
            Err(_) => csr_names.insert(format!("DNS:{cn}")),
        };
    }
    let wanted: BTreeSet<String> = order.doc.identifiers.iter().map(san_text).collect();
    if csr_names != wanted {
        return Err(bad_csr(format!(
            "the CSR names {csr_names:?} but the order is for {wanted:?}; they must be the same set"
        )));
    }
    let account_key = Jwk::from_json(&account.doc.jwk)
        .map_err(|e| crate::problem::Problem::internal(e.detail))?;
    if account_key.matches_spki(&info.public_key.spki_der) {
        return Err(bad_csr(
            "the CSR's key is the account key; certify a different key".to_string(),
        ));
    }
    Ok(())
}

/// Issues for a checked CSR through the same checks as the REST API (profile, policy,
/// compromised keys).
async fn finalize_checked(
    ctx: &Ctx,
    account: &Loaded<AccountDoc>,
    order: &Loaded<OrderDoc>,
    csr_der: &[u8],
) -> Result<
    (
        certkeeper_store::NewCertificate,
        crate::issuance::IssueResponse,
    ),
    crate::problem::Problem,
> {
    let principal = Principal {
        token_id: actor(&account.row.id),
        role: Role::Issuer,
        tenant: Some(ctx.tenant.clone()),
    };
    let mut labels = BTreeMap::new();
    labels.insert("acme_account".to_string(), account.row.id.clone());
    labels.insert("acme_order".to_string(), order.row.id.clone());
    let request = IssueRequest {
        profile: order.doc.profile.clone(),
        tenant: Some(ctx.tenant.clone()),
        csr: Some(to_pem("CERTIFICATE REQUEST", csr_der)),
        key_algorithm: None,
        pkcs12_password: None,
        common_name: None,
        sans: order
            .doc
            .identifiers
            .iter()
            .map(|i| i.value.clone())
            .collect(),
        lifetime: None,
        labels,
    };
    crate::issuance::prepare_and_sign(ctx.app(), &principal, &ctx.tenant, request).await
}

/// A CSR name as the inventory writes SANs, DNS names compared case-insensitively.
fn san_entry_text(entry: &SanEntry) -> String {
    match entry {
        SanEntry::Dns(v) => format!("DNS:{}", v.to_ascii_lowercase()),
        other => other.to_string(),
    }
}

// ---- authorizations and challenges -----------------------------------------------------

async fn authorization(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let authz: Loaded<AuthzDoc> =
            load_owned(&ctx, AcmeKind::Authz, &id, verified.account()?).await?;
        let payload = payload_object(&verified.jws)?;
        let now = unix_now();
        match payload.get("status") {
            None => {
                ctx.service.remember_nonce(verified.nonce);
                let status = authz_status(&authz.doc, now);
                Ok(json_reply(
                    StatusCode::OK,
                    authz_json(&ctx.urls, &id, &authz.doc, status),
                ))
            }
            Some(Value::String(s)) if s == "deactivated" => {
                let status = authz_status(&authz.doc, now);
                if !matches!(status, Status::Pending | Status::Valid) {
                    return Err(AcmeError::malformed(format!(
                        "only a pending or valid authorization can be deactivated; this one is {}",
                        status.as_str()
                    ))
                    .into());
                }
                let mut updated = authz.clone();
                updated.doc.status = Status::Deactivated;
                let object = updated.updated("deactivated", None, authz.row.expires_at)?;
                commit(
                    &ctx,
                    Change {
                        acme_objects: vec![object],
                        acme_nonces: vec![verified.nonce],
                        ..Change::default()
                    },
                )
                .await?;
                Ok(json_reply(
                    StatusCode::OK,
                    authz_json(&ctx.urls, &id, &updated.doc, Status::Deactivated),
                ))
            }
            Some(other) => Err(AcmeError::malformed(format!(
                "an authorization's status can only be set to \"deactivated\", not {other}"
            ))
            .into()),
        }
    })
    .await
}

async fn challenge(
    State(state): State<SharedState>,
    Path((tenant, authz_id, index)): Path<(String, String, usize)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let authz: Loaded<AuthzDoc> =
            load_owned(&ctx, AcmeKind::Authz, &authz_id, &account).await?;
        let Some(current) = authz.doc.challenges.get(index).cloned() else {
            return Err(AcmeError::malformed(format!(
                "authorization {authz_id} has no challenge {index}"
            ))
            .into());
        };
        let up = ctx.urls.authz(&authz_id);
        let now = unix_now();
        let busy = authz
            .doc
            .challenges
            .iter()
            .any(|c| c.status == Status::Processing);
        let start = !verified.jws.is_post_as_get()
            && authz_status(&authz.doc, now) == Status::Pending
            && current.status == Status::Pending
            && !busy;
        if !start {
            ctx.service.remember_nonce(verified.nonce);
            return Ok(json_reply(
                StatusCode::OK,
                challenge_json(&ctx.urls, &authz_id, index, &current),
            )
            .link(&up, "up"));
        }
        // A repeated POST while this server validates the challenge starts nothing new.
        if !ctx.service.start_validation(&authz_id, index) {
            ctx.service.remember_nonce(verified.nonce);
            let mut shown = current.clone();
            shown.status = Status::Processing;
            return Ok(json_reply(
                StatusCode::OK,
                challenge_json(&ctx.urls, &authz_id, index, &shown),
            )
            .link(&up, "up")
            .with_header(header::RETRY_AFTER, "1"));
        }
        let thumbprint = account.row.lookup.clone();
        let mut done = spawn_validation(
            ctx.state.clone(),
            ctx.service.clone(),
            authz.clone(),
            index,
            thumbprint,
        );
        // Most validations finish within moments: the outcome is recorded and shown in this
        // response. Nothing was acknowledged before, so a crash meanwhile loses nothing the
        // client was told.
        let shown = match tokio::time::timeout(VALIDATION_WAIT, &mut done).await {
            Ok(outcome) => {
                ctx.service.remember_nonce(verified.nonce);
                outcome.ok().flatten().unwrap_or(current)
            }
            Err(_) => {
                // Still running: record that it is before saying so, so that a restart
                // resumes it (the row's status marks it; clients still see "pending").
                let mut updated = authz.clone();
                updated.doc.challenges[index].status = Status::Processing;
                let object = updated.updated("processing", None, authz.row.expires_at)?;
                let change = Change {
                    acme_objects: vec![object],
                    acme_nonces: vec![verified.nonce],
                    ..Change::default()
                };
                match commit_racing(&ctx, change).await? {
                    Written::Done(_) => updated.doc.challenges[index].clone(),
                    // The validation recorded its outcome first.
                    Written::LostRace => {
                        ctx.service.remember_nonce(verified.nonce);
                        done.await.ok().flatten().unwrap_or(current)
                    }
                }
            }
        };
        let mut reply = json_reply(
            StatusCode::OK,
            challenge_json(&ctx.urls, &authz_id, index, &shown),
        )
        .link(&up, "up");
        if shown.status == Status::Processing {
            reply = reply.with_header(header::RETRY_AFTER, "1");
        }
        Ok(reply)
    })
    .await
}

/// Validates a challenge in the background (bounded by the validation semaphore) and records
/// the outcome in its authorization; the receiver gets the challenge as recorded.
pub(crate) fn spawn_validation(
    state: SharedState,
    service: Arc<AcmeService>,
    authz: Loaded<AuthzDoc>,
    index: usize,
    thumbprint: String,
) -> tokio::sync::oneshot::Receiver<Option<ChallengeDoc>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let id = authz.row.id.clone();
        let outcome = record_validation(&state, &service, authz, index, &thumbprint).await;
        service.finish_validation(&id, index);
        let _ = done.send(outcome);
    });
    finished
}

async fn record_validation(
    state: &SharedState,
    service: &AcmeService,
    authz: Loaded<AuthzDoc>,
    index: usize,
    thumbprint: &str,
) -> Option<ChallengeDoc> {
    let _permit = service.validations.clone().acquire_owned().await.ok()?;
    let challenge = authz.doc.challenges.get(index)?.clone();
    let started = std::time::Instant::now();
    let key_authz = key_authorization(&challenge.token, thumbprint);
    let identifier = authz.doc.identifier.clone();
    let attempts = service.config.validation_attempts.max(1);
    let mut result = Err(AcmeError::new(ErrorType::ServerInternal, "not attempted"));
    for attempt in 0..attempts {
        result = service
            .validator
            .validate(&challenge.kind, &identifier, &key_authz, &challenge.token)
            .await;
        let retry =
            matches!(&result, Err(e) if matches!(e.kind, ErrorType::Connection | ErrorType::Dns));
        if !retry || attempt + 1 == attempts {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            500 * u64::from(attempt + 1),
        ))
        .await;
    }
    if result.is_ok() && service.config.check_caa && identifier.kind == "dns" {
        result = service
            .validator
            .check_caa(
                &identifier.value,
                authz.doc.wildcard,
                &service.config.caa_identities,
            )
            .await;
    }
    state.metrics.validation(
        &challenge.kind,
        result.is_ok(),
        started.elapsed().as_secs_f64(),
    );
    if result.is_err() {
        service.count_failed_validation(&failure_key(
            &authz.row.tenant,
            &authz.row.account_id,
            &authz.row.lookup,
        ));
    }
    // Record the outcome; if the authorization changed meanwhile, read it again and retry.
    let mut current = authz;
    for attempt in 0..5 {
        if attempt > 0 {
            let row = state
                .store
                .acme_object(AcmeKind::Authz, &current.row.id)
                .await
                .ok()??;
            current = Loaded::<AuthzDoc>::decode(row).ok()?;
        }
        let now_challenge = current.doc.challenges.get(index)?;
        let open = matches!(now_challenge.status, Status::Pending | Status::Processing);
        if !open || current.doc.status != Status::Pending {
            return Some(now_challenge.clone());
        }
        let now = unix_now();
        let mut next = current.clone();
        let (row_status, expires) = match &result {
            Ok(()) => {
                let reuse = i64::try_from(service.config.authz_reuse).unwrap_or(86_400);
                next.doc.status = Status::Valid;
                next.doc.challenges[index].status = Status::Valid;
                next.doc.challenges[index].validated = Some(now);
                next.doc.expires = now + reuse;
                ("valid", now + reuse)
            }
            Err(error) => {
                next.doc.status = Status::Invalid;
                next.doc.challenges[index].status = Status::Invalid;
                next.doc.challenges[index].error = Some(error_json(error));
                ("invalid", current.row.expires_at)
            }
        };
        let object = next.updated(row_status, None, expires).ok()?;
        let written = service
            .apply(
                &state.store,
                Change {
                    acme_objects: vec![object],
                    ..Change::default()
                },
            )
            .await;
        match written {
            Ok(_) => return Some(next.doc.challenges[index].clone()),
            Err(StoreError::Conflict(_)) => continue,
            Err(error) => {
                tracing::warn!(%error, authz = %current.row.id, "could not record a validation result");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    None
}

/// Restarts validations that a stopped server left in flight.
pub(crate) async fn resume_validations(state: SharedState, service: Arc<AcmeService>) {
    let rows = match state
        .store
        .acme_objects_with_status(AcmeKind::Authz, "processing")
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "cannot list ACME validations to resume");
            return;
        }
    };
    for row in rows {
        let account_id = row.account_id.clone();
        let Ok(authz) = Loaded::<AuthzDoc>::decode(row) else {
            continue;
        };
        let Some(index) = authz
            .doc
            .challenges
            .iter()
            .position(|c| c.status == Status::Processing)
        else {
            continue;
        };
        let Ok(Some(account)) = state
            .store
            .acme_object(AcmeKind::Account, &account_id)
            .await
        else {
            continue;
        };
        service.start_validation(&authz.row.id, index);
        // Nobody waits for the outcome: it is recorded in the authorization.
        drop(spawn_validation(
            state.clone(),
            service.clone(),
            authz,
            index,
            account.lookup,
        ));
    }
}

// ---- certificates, revocation, key rollover, renewal information -----------------------

async fn certificate(
    State(state): State<SharedState>,
    Path((tenant, serial)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        ctx.service.remember_nonce(verified.nonce);
        let account = verified.account()?;
        let owner = actor(&account.row.id);
        let record = ctx
            .app()
            .store
            .certificates_by_serial(&serial.to_ascii_lowercase(), unix_now())
            .await?
            .into_iter()
            .find(|r| r.certificate.tenant == ctx.tenant && r.certificate.requester == owner)
            .ok_or_else(|| {
                AcmeError::unauthorized(format!(
                    "certificate {serial} was not issued to this account in this directory"
                ))
            })?;
        let pem = format!(
            "{}{}",
            to_pem("CERTIFICATE", &record.certificate.der),
            ctx.app().ca.chain_pem
        );
        Ok(Reply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: ReplyBody::Pem(pem),
        })
    })
    .await
}

async fn revoke_cert(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Either).await?;
        ctx.service.remember_nonce(verified.nonce);
        let payload = payload_object(&verified.jws)?;
        let der = payload
            .get("certificate")
            .and_then(Value::as_str)
            .and_then(|text| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok())
            .ok_or_else(|| AcmeError::malformed("revokeCert needs `certificate`, base64url DER"))?;
        let reason = match payload.get("reason") {
            None => RevocationReason::Unspecified,
            Some(value) => value
                .as_i64()
                .and_then(RevocationReason::from_code)
                .ok_or_else(|| {
                    AcmeError::new(
                        ErrorType::BadRevocationReason,
                        format!(
                            "reason {value} is not accepted; use 0 (unspecified), 1 (keyCompromise), 3 (affiliationChanged), 4 (superseded) or 5 (cessationOfOperation)"
                        ),
                    )
                })?,
        };
        let summary = parse_certificate(&der).map_err(|e| {
            AcmeError::malformed(format!("`certificate` is not a certificate: {e}"))
        })?;
        let record = ctx
            .app()
            .store
            .certificates_by_serial(&summary.serial, unix_now())
            .await?
            .into_iter()
            .find(|r| {
                r.certificate.fingerprint_sha256 == summary.fingerprint_sha256
                    && r.certificate.tenant == ctx.tenant
                    && r.certificate.source == CertificateSource::Issued
            })
            .ok_or_else(|| {
                AcmeError::malformed("this certificate was not issued by this directory")
            })?;
        let who = match &verified.signer {
            Signer::Key(jwk) => {
                let spki = spki_of(&der)?;
                if !jwk.matches_spki(&spki) {
                    return Err(AcmeError::unauthorized(
                        "the request is signed with a `jwk` that is not the certificate's key",
                    )
                    .into());
                }
                format!("acme:certificate-key:{}", jwk.thumbprint())
            }
            Signer::Account(account) => {
                let owner = actor(&account.row.id);
                if record.certificate.requester != owner
                    && !holds_authorizations(&ctx, &account.row.id, &record.certificate.sans).await?
                {
                    return Err(AcmeError::unauthorized(
                        "this account neither holds this certificate nor valid authorizations for all its names",
                    )
                    .into());
                }
                owner
            }
        };
        if record.revocation.is_some() {
            return Err(AcmeError::new(
                ErrorType::AlreadyRevoked,
                format!("certificate {} is already revoked", record.certificate.serial),
            )
            .into());
        }
        let principal = Principal {
            token_id: who,
            role: Role::Issuer,
            tenant: Some(ctx.tenant.clone()),
        };
        crate::revocation::revoke(
            ctx.app(),
            &principal,
            RevokeRequest {
                serial: None,
                certificate_pem: Some(to_pem("CERTIFICATE", &der)),
                key_of_serial: None,
                spki_sha256: None,
                reason: Some(reason.name().to_string()),
                invalidity_date: None,
            },
        )
        .await
        .map_err(Failure::from)?;
        Ok(Reply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: ReplyBody::Empty,
        })
    })
    .await
}

fn spki_of(der: &[u8]) -> Result<Vec<u8>, Failure> {
    use x509_parser::prelude::FromDer;
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| AcmeError::malformed(format!("`certificate` does not parse: {e}")))?;
    Ok(certificate.tbs_certificate.subject_pki.raw.to_vec())
}

async fn holds_authorizations(
    ctx: &Ctx,
    account_id: &str,
    sans: &[String],
) -> Result<bool, Failure> {
    let now = unix_now();
    for san in sans {
        let key = if let Some(name) = san.strip_prefix("DNS:") {
            format!("dns:{name}")
        } else if let Some(ip) = san.strip_prefix("IP:") {
            format!("ip:{ip}")
        } else {
            return Ok(false);
        };
        if ctx
            .app()
            .store
            .acme_reusable_authz(account_id, &key, now)
            .await?
            .is_none()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn key_change(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    run(state, tenant, &headers.clone(), |ctx| async move {
        let verified = verify(&ctx, &headers, &uri, &body, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let inner = Jws::parse(&verified.jws.payload)?;
        let KeyRef::Jwk(new_key) = &inner.key else {
            return Err(AcmeError::malformed("the inner JWS of keyChange needs `jwk` (the new key)").into());
        };
        inner.verify(new_key)?;
        if inner.url != verified.jws.url {
            return Err(AcmeError::malformed("the inner JWS `url` must equal the outer one").into());
        }
        let payload = inner.payload_json()?;
        let account_url = ctx.urls.account(&account.row.id);
        if payload.get("account").and_then(Value::as_str) != Some(account_url.as_str()) {
            return Err(AcmeError::malformed(format!(
                "the inner payload's `account` must be {account_url}"
            ))
            .into());
        }
        let old_key = Jwk::from_json(payload.get("oldKey").unwrap_or(&Value::Null))?;
        if old_key.thumbprint() != account.row.lookup {
            return Err(AcmeError::malformed("`oldKey` is not the account's current key").into());
        }
        let thumbprint = new_key.thumbprint();
        if let Some(other) = ctx.app().store.acme_account_by_key(&ctx.tenant, &thumbprint).await? {
            // RFC 8555 §7.3.5: 409 Conflict with the other account's URL.
            let url = ctx.urls.account(&other.id);
            return Ok(json_reply(
                StatusCode::CONFLICT,
                json!({
                    "type": ErrorType::Malformed.urn(),
                    "detail": format!("the new key already belongs to account {url}"),
                    "status": 409,
                }),
            )
            .with_header(header::LOCATION, &url));
        }
        let mut updated = account.clone();
        updated.doc.jwk = new_key.to_json();
        let object = updated.updated("valid", Some(&thumbprint), 0)?;
        commit(
            &ctx,
            Change {
                acme_objects: vec![object],
                acme_nonces: vec![verified.nonce],
                audit: vec![audit(
                    &actor(&account.row.id),
                    "acme.account.key-change",
                    &account.row.id,
                    json!({"old_jwk_thumbprint": account.row.lookup, "new_jwk_thumbprint": thumbprint}),
                )],
                ..Change::default()
            },
        )
        .await?;
        ctx.service.forget_account(&account.row.id);
        Ok(json_reply(
            StatusCode::OK,
            account_json(&ctx.urls, &account.row.id, &updated.doc),
        ))
    })
    .await
}

async fn renewal_info(
    State(state): State<SharedState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    run(state, tenant, &headers, |ctx| async move {
        let record = find_by_ari_id(&ctx, &id).await.map_err(|mut f| {
            if f.error.kind == ErrorType::Malformed {
                f.error.detail = format!("{} (renewalInfo)", f.error.detail);
            }
            f
        })?;
        let summary = parse_certificate(&record.certificate.der).map_err(|e| {
            AcmeError::new(
                ErrorType::ServerInternal,
                format!("stored certificate: {e}"),
            )
        })?;
        let issuing_ski = ctx
            .app()
            .ca
            .chain_der
            .first()
            .and_then(|der| parse_certificate(der).ok())
            .and_then(|s| s.subject_key_id);
        // Revoked, or signed by a CA that is no longer the issuing one: renew now.
        let urgent = record.revocation.is_some() || summary.authority_key_id != issuing_ski;
        let (start, end) = ari_window(
            record.certificate.not_before,
            record.certificate.not_after,
            urgent,
            unix_now(),
        );
        let mut body = json!({
            "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)},
        });
        if urgent {
            body["explanationURL"] = json!(ctx.urls.directory());
        }
        Ok(json_reply(StatusCode::OK, body).with_header(
            header::RETRY_AFTER,
            &ctx.service.config.ari_retry_after.max(1).to_string(),
        ))
    })
    .await
}

/// The ARI id of a certificate (for tests and the CLI).
pub fn certificate_ari_id(der: &[u8]) -> Option<String> {
    let summary = parse_certificate(der).ok()?;
    let aki = hex::decode(summary.authority_key_id?.replace(':', "")).ok()?;
    let mut serial = hex::decode(&summary.serial).ok()?;
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        serial.insert(0, 0);
    }
    Some(ari_cert_id(&aki, &serial))
}
