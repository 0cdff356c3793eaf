//! The ACME server (RFC 8555, with RFC 8737 tls-alpn-01, RFC 8738 IP identifiers and
//! RFC 9773 renewal information): one directory per tenant at `/acme/<tenant>/directory`.
//!
//! Protocol rules (JWS, nonces, identifiers, key authorizations) live in `certkeeper-acme`;
//! this module keeps state in the store, checks requests, issues through the same path as
//! the REST API and validates challenges in the background.

mod handlers;
mod objects;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use certkeeper_acme::{AcmeError, ErrorType, NonceKey};
use certkeeper_store::{AcmeKind, AcmeObject, Change, Store};
use tokio::sync::Semaphore;

use crate::ServerError;
use crate::config::AcmeSection;
use crate::lock;

pub(crate) use handlers::resume_validations;
pub use handlers::{certificate_ari_id, router};
pub(crate) use objects::*;

/// How long a nonce stays usable, in seconds.
const NONCE_LIFETIME: i64 = 600;
/// The settings row that holds the nonce MAC key (shared by servers on one database).
const NONCE_KEY_SETTING: &str = "acme.nonce_key";

/// The ACME server's state beside the shared application state.
pub struct AcmeService {
    /// Settings.
    pub config: AcmeSection,
    nonce_key: NonceKey,
    /// Used nonce ids with their expiry: checked first, persisted with each request.
    used_nonces: Mutex<HashMap<u64, i64>>,
    /// Nonces used by read-only requests, persisted in the background.
    unsaved_nonces: Mutex<Vec<(i64, i64)>>,
    limits: Mutex<RateWindows>,
    validations: Arc<Semaphore>,
    validator: validate::Validator,
    /// Tenants with a directory, and whether each requires external account binding.
    tenants: HashMap<String, bool>,
    /// Accounts read recently, by id (see [`ACCOUNT_CACHE_TTL`]).
    accounts: Mutex<HashMap<String, (Instant, Loaded<AccountDoc>)>>,
    /// Orders and authorizations this server wrote or read recently (see [`OBJECT_CACHE_TTL`]).
    objects: Mutex<HashMap<(AcmeKind, String), (Instant, AcmeObject)>>,
    /// Housekeeping rounds so far.
    rounds: std::sync::atomic::AtomicU64,
    /// Challenges (authorization id, index) this server is validating now.
    validating: Mutex<std::collections::HashSet<(String, usize)>>,
}

/// How long an order or authorization this server wrote or read is served from memory. The
/// store stays the record (a restart loses nothing); every update is still checked against
/// the stored version, so a stale copy can delay what a client sees, never overwrite a change.
const OBJECT_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long an account read from the store is trusted without reading it again. Changes made
/// through this server take effect at once; those made by another server sharing the database
/// (deactivation, key rollover) within this time.
const ACCOUNT_CACHE_TTL: Duration = Duration::from_secs(2);

impl AcmeService {
    /// Loads (or creates) the nonce key and the used nonces, and prepares the validator.
    pub async fn start(config: AcmeSection, store: &Store) -> Result<AcmeService, ServerError> {
        let key = match store.setting(NONCE_KEY_SETTING).await? {
            Some(hex_key) => hex_key,
            None => {
                let mut bytes = [0u8; 32];
                random_bytes(&mut bytes)?;
                store
                    .apply(Change {
                        settings: vec![(NONCE_KEY_SETTING.into(), hex::encode(bytes))],
                        ..Change::default()
                    })
                    .await?;
                // Another server may have written its key first: use whatever is stored.
                store
                    .setting(NONCE_KEY_SETTING)
                    .await?
                    .unwrap_or_else(|| hex::encode(bytes))
            }
        };
        let key: [u8; 32] = hex::decode(&key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "the stored setting {NONCE_KEY_SETTING} is not 32 bytes of hex; delete it to have a new key made"
                ))
            })?;
        let now = unix_now();
        let used = store
            .acme_used_nonces(now)
            .await?
            .into_iter()
            .map(|(id, expires)| (id as u64, expires))
            .collect();
        let mut tenants: HashMap<String, bool> = config
            .tenants
            .iter()
            .map(|t| (t.name.clone(), t.require_eab))
            .collect();
        tenants
            .entry(crate::Tenant::DEFAULT.into())
            .or_insert(false);
        Ok(AcmeService {
            validator: validate::Validator::new(&config)?,
            validations: Arc::new(Semaphore::new(config.max_concurrent_validations)),
            nonce_key: NonceKey::from_bytes(&key),
            used_nonces: Mutex::new(used),
            unsaved_nonces: Mutex::new(Vec::new()),
            limits: Mutex::new(RateWindows::default()),
            accounts: Mutex::new(HashMap::new()),
            objects: Mutex::new(HashMap::new()),
            rounds: std::sync::atomic::AtomicU64::new(0),
            validating: Mutex::new(std::collections::HashSet::new()),
            tenants,
            config,
        })
    }

    /// A fresh nonce.
    pub fn new_nonce(&self) -> String {
        let mut random = [0u8; 8];
        // A failing system RNG leaves zeros; the MAC still makes the nonce unforgeable and
        // a repeat is refused as used, so the worst case is one badNonce for the client.
        let _ = random_bytes(&mut random);
        self.nonce_key
            .issue(u64::from_be_bytes(random), unix_now() + NONCE_LIFETIME)
    }

    /// Checks a nonce and marks it used. Returns what to persist: (id, expiry).
    fn use_nonce(&self, nonce: Option<&str>) -> Result<(i64, i64), AcmeError> {
        let nonce = nonce.ok_or_else(|| {
            AcmeError::new(
                ErrorType::BadNonce,
                "the protected header has no nonce; get one from newNonce",
            )
        })?;
        let (id, expires) = self.nonce_key.check(nonce, unix_now())?;
        let mut used = lock(&self.used_nonces);
        if used.insert(id, expires).is_some() {
            return Err(AcmeError::new(
                ErrorType::BadNonce,
                "this nonce was already used; retry with the nonce in this response's Replay-Nonce header",
            ));
        }
        Ok((id as i64, expires))
    }

    fn cached_account(&self, id: &str) -> Option<Loaded<AccountDoc>> {
        let accounts = lock(&self.accounts);
        let (read_at, account) = accounts.get(id)?;
        (read_at.elapsed() < ACCOUNT_CACHE_TTL).then(|| account.clone())
    }

    fn cache_account(&self, account: &Loaded<AccountDoc>) {
        lock(&self.accounts).insert(account.row.id.clone(), (Instant::now(), account.clone()));
    }

    fn forget_account(&self, id: &str) {
        lock(&self.accounts).remove(id);
    }

    /// An order or authorization: from memory when this server saw it within the TTL.
    async fn object(
        &self,
        store: &Store,
        kind: AcmeKind,
        id: &str,
    ) -> Result<Option<AcmeObject>, certkeeper_store::StoreError> {
        let key = (kind, id.to_string());
        if let Some((seen, object)) = lock(&self.objects).get(&key)
            && seen.elapsed() < OBJECT_CACHE_TTL
        {
            return Ok(Some(object.clone()));
        }
        let object = store.acme_object(kind, id).await?;
        if let Some(object) = &object {
            lock(&self.objects).insert(key, (Instant::now(), object.clone()));
        }
        Ok(object)
    }

    /// Applies a change through the store, keeping the cached objects in step with it.
    async fn apply(
        &self,
        store: &Store,
        change: Change,
    ) -> Result<certkeeper_store::ChangeOutcome, certkeeper_store::StoreError> {
        let objects = change.acme_objects.clone();
        let result = store.apply(change).await;
        self.written(&objects, result.is_ok());
        result
    }

    /// Keeps objects just committed (or forgets them when the commit failed).
    fn written(&self, objects: &[AcmeObject], committed: bool) {
        let mut cache = lock(&self.objects);
        for object in objects.iter().filter(|o| o.kind != AcmeKind::Account) {
            let key = (object.kind, object.id.clone());
            if committed {
                cache.insert(key, (Instant::now(), object.clone()));
            } else {
                cache.remove(&key);
            }
        }
    }

    /// Marks a challenge as being validated; false if it already is.
    fn start_validation(&self, authz_id: &str, index: usize) -> bool {
        lock(&self.validating).insert((authz_id.to_string(), index))
    }

    fn finish_validation(&self, authz_id: &str, index: usize) {
        lock(&self.validating).remove(&(authz_id.to_string(), index));
    }

    /// Queues a used nonce of a request that writes nothing else, to be persisted soon.
    fn remember_nonce(&self, nonce: (i64, i64)) {
        lock(&self.unsaved_nonces).push(nonce);
    }

    /// Whether `tenant` has a directory, and whether it requires external account binding.
    fn tenant(&self, tenant: &str) -> Result<bool, AcmeError> {
        self.tenants.get(tenant).copied().ok_or_else(|| {
            AcmeError::malformed(format!(
                "there is no ACME directory for tenant {tenant:?}; configure it with [[acme.tenant]]"
            ))
        })
    }

    /// The rate-limit window in seconds.
    fn window(&self) -> i64 {
        i64::try_from(self.config.rate_limits.window).unwrap_or(i64::MAX / 4)
    }

    /// Counts one use of each key and refuses (with seconds to wait) if any is over its limit.
    fn rate_limit(&self, keys: &[(String, u64)]) -> Result<(), (AcmeError, u64)> {
        let now = unix_now();
        let window = self.window();
        let mut limits = lock(&self.limits);
        for (key, limit) in keys {
            let (start, count) = limits.current(key, now, window);
            if count >= *limit {
                let wait = (start + window - now).max(1) as u64;
                return Err((
                    AcmeError::new(
                        ErrorType::RateLimited,
                        format!(
                            "too many requests for {key}: at most {limit} per {}s; retry after {wait}s",
                            window
                        ),
                    ),
                    wait,
                ));
            }
        }
        for (key, _) in keys {
            limits.add(key, now, window);
        }
        Ok(())
    }

    /// Counts a failed validation for an identifier.
    fn count_failed_validation(&self, identifier_key: &str) {
        let now = unix_now();
        let window = self.window();
        lock(&self.limits).add(&format!("failed:{identifier_key}"), now, window);
    }

    /// Failed validations counted for an identifier in the current window.
    fn failed_validations(&self, identifier_key: &str) -> (u64, u64) {
        let now = unix_now();
        let window = self.window();
        let (start, count) =
            lock(&self.limits).current(&format!("failed:{identifier_key}"), now, window);
        (count, (start + window - now).max(1) as u64)
    }

    /// Called every 200 ms: persists queued nonces; now and then forgets what expired in
    /// memory and deletes expired nonces and objects from the store.
    pub async fn housekeeping(&self, store: &Store) {
        let now = unix_now();
        let unsaved = std::mem::take(&mut *lock(&self.unsaved_nonces));
        if !unsaved.is_empty()
            && let Err(error) = store
                .apply(Change {
                    acme_nonces: unsaved,
                    ..Change::default()
                })
                .await
        {
            tracing::warn!(%error, "could not persist used ACME nonces");
        }
        let round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if round.is_multiple_of(10) {
            lock(&self.accounts).retain(|_, (read_at, _)| read_at.elapsed() < ACCOUNT_CACHE_TTL);
            lock(&self.objects).retain(|_, (seen, _)| seen.elapsed() < OBJECT_CACHE_TTL);
        }
        if round.is_multiple_of(50) {
            lock(&self.used_nonces).retain(|_, expires| *expires > now);
            lock(&self.limits).prune(now, self.window());
        }
        // Once a minute. Orders and authorizations are kept a day past expiry so that clients
        // polling late still see what happened.
        if round.is_multiple_of(300)
            && let Err(error) = store.acme_cleanup(now, now - 86_400).await
        {
            tracing::warn!(%error, "ACME clean-up failed");
        }
    }
}

/// Fixed-window counters.
#[derive(Default)]
struct RateWindows {
    counters: HashMap<String, (i64, u64)>,
}

impl RateWindows {
    fn current(&mut self, key: &str, now: i64, window: i64) -> (i64, u64) {
        match self.counters.get(key) {
            Some((start, count)) if now < start + window => (*start, *count),
            _ => (now, 0),
        }
    }

    fn add(&mut self, key: &str, now: i64, window: i64) {
        let entry = self.counters.entry(key.to_string()).or_insert((now, 0));
        if now >= entry.0 + window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    fn prune(&mut self, now: i64, window: i64) {
        self.counters.retain(|_, (start, _)| now < *start + window);
    }
}

fn random_bytes(out: &mut [u8]) -> Result<(), ServerError> {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| ServerError::Config("the system random generator failed".into()))
}

/// A random id for accounts, orders, authorizations (128 bits, base64url).
fn new_id() -> Result<String, AcmeError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)
        .map_err(|e| AcmeError::new(ErrorType::ServerInternal, e.to_string()))?;
    Ok(b64(&bytes))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An ACME error on its way to the client, with Retry-After for rate limits.
pub(crate) struct Failure {
    error: AcmeError,
    retry_after: Option<u64>,
    /// An HTTP status other than the error type's usual one (415, 401, 405).
    status: Option<StatusCode>,
}

impl From<AcmeError> for Failure {
    fn from(error: AcmeError) -> Self {
        Failure {
            error,
            retry_after: None,
            status: None,
        }
    }
}

impl From<certkeeper_store::StoreError> for Failure {
    fn from(error: certkeeper_store::StoreError) -> Self {
        tracing::error!(%error, "ACME store operation failed");
        AcmeError::new(
            ErrorType::ServerInternal,
            "the database did not complete the operation; retry later",
        )
        .into()
    }
}

/// Maps a REST-side problem (issuance, policy, CSR checks) to the ACME error type.
impl From<crate::problem::Problem> for Failure {
    fn from(problem: crate::problem::Problem) -> Self {
        let kind = match problem.slug() {
            "policy-denied" | "wrong-tenant" => ErrorType::RejectedIdentifier,
            // The CSR's key: badPublicKey is about the JWS key (RFC 8555 §6.7).
            "weak-key"
            | "unsupported-key"
            | "invalid-key"
            | "key-compromised"
            | "malformed-csr"
            | "bad-csr-signature"
            | "profile-violation"
            | "invalid-request"
            | "malformed-request"
            | "lifetime-exceeds-profile"
            | "lifetime-exceeds-ca" => ErrorType::BadCsr,
            "unknown-certificate" | "not-found" => ErrorType::Malformed,
            _ if problem.status >= 500 => ErrorType::ServerInternal,
            _ => ErrorType::Malformed,
        };
        AcmeError::new(kind, problem.detail).into()
    }
}

/// A response with the headers every ACME response carries (Replay-Nonce, index link).
pub(crate) struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: ReplyBody,
}

pub(crate) enum ReplyBody {
    Json(serde_json::Value),
    Pem(String),
    Empty,
}

impl Reply {
    fn json(status: StatusCode, value: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: ReplyBody::Json(value),
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: &str) -> Reply {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.append(name, value);
        }
        self
    }

    fn link(self, url: &str, rel: &str) -> Reply {
        self.with_header(header::LINK, &format!("<{url}>;rel=\"{rel}\""))
    }
}

/// Finishes a reply (or failure) with a fresh nonce and the directory link.
pub(crate) fn finish(
    service: &AcmeService,
    directory_url: &str,
    result: Result<Reply, Failure>,
) -> Response {
    let mut reply = match result {
        Ok(reply) => reply,
        Err(failure) => {
            let status = failure.status.unwrap_or_else(|| {
                StatusCode::from_u16(failure.error.kind.http_status())
                    .unwrap_or(StatusCode::BAD_REQUEST)
            });
            let mut body = serde_json::json!({
                "type": failure.error.kind.urn(),
                "detail": failure.error.detail,
                "status": status.as_u16(),
            });
            // RFC 8555 §6.2: the algorithms this server accepts.
            if failure.error.kind == ErrorType::BadSignatureAlgorithm {
                body["algorithms"] = serde_json::json!(certkeeper_acme::SUPPORTED_ALGORITHMS);
            }
            let mut reply = Reply {
                status,
                headers: HeaderMap::new(),
                body: ReplyBody::Json(body),
            };
            if status == StatusCode::METHOD_NOT_ALLOWED {
                reply = reply.with_header(header::ALLOW, "POST");
            }
            if let Some(seconds) = failure.retry_after {
                reply = reply.with_header(header::RETRY_AFTER, &seconds.to_string());
            }
            reply
        }
    };
    reply = reply
        .with_header(
            header::HeaderName::from_static("replay-nonce"),
            &service.new_nonce(),
        )
        .link(directory_url, "index")
        .with_header(header::CACHE_CONTROL, "no-store");
    let (content_type, body) = match reply.body {
        ReplyBody::Json(value)
            if reply.status.is_client_error() || reply.status.is_server_error() =>
        {
            ("application/problem+json", value.to_string())
        }
        ReplyBody::Json(value) => ("application/json", value.to_string()),
        ReplyBody::Pem(text) => ("application/pem-certificate-chain", text),
        ReplyBody::Empty => ("", String::new()),
    };
    if !content_type.is_empty()
        && let Ok(value) = HeaderValue::from_str(content_type)
    {
        reply.headers.insert(header::CONTENT_TYPE, value);
    }
    (reply.status, reply.headers, body).into_response()
}
