//! External ACME issuers for managed certificates, through instant-acme: the account (created
//! once, with external account binding when configured, its key kept in
//! `<data_dir>/issuers/<name>.json`, mode 0600), http-01 answered by certkeeper's own
//! responder or dns-01 through a hook, then finalize with a fresh key and download.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use base64::Engine;
use certkeeper_lifecycle::AriWindow;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::IssuerConfig;
use crate::files::{PRIVATE, write_atomic};

/// A certificate obtained from an external issuer.
pub struct Obtained {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// The rest of the chain, PEM.
    pub chain_pem: String,
    /// The leaf, DER.
    pub der: Vec<u8>,
}

type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// The configured external issuers.
pub struct Upstreams {
    issuers: HashMap<String, Upstream>,
    tokens: Tokens,
}

struct Upstream {
    config: IssuerConfig,
    credentials_path: PathBuf,
    account: AsyncMutex<Option<Account>>,
    /// The last `Retry-After` the CA sent (Unix seconds), from any response.
    retry_after: Arc<Mutex<Option<i64>>>,
}

/// Why obtaining failed, and until when the CA asked not to be asked again.
pub struct ObtainError {
    /// What went wrong.
    pub message: String,
    /// The CA's `Retry-After` when it answered `rateLimited` (Unix seconds).
    pub retry_after: Option<i64>,
}

impl From<String> for ObtainError {
    fn from(message: String) -> Self {
        ObtainError {
            message,
            retry_after: None,
        }
    }
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    instant_acme::BodyWrapper<axum::body::Bytes>,
>;

/// instant-acme's HTTPS client, noting every `Retry-After` header the CA sends (instant-acme
/// reports problems without their headers).
#[derive(Clone)]
struct RetryAfterClient {
    inner: HyperClient,
    retry_after: Arc<Mutex<Option<i64>>>,
}

impl RetryAfterClient {
    fn new(ca_file: Option<&Path>, retry_after: Arc<Mutex<Option<i64>>>) -> Result<Self, String> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for certificate in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    roots
                        .add(certificate.map_err(|e| format!("{}: {e}", path.display()))?)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                builder.with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|e| format!("the system's certificate verifier: {e}"))?,
        };
        let connector = builder.https_only().enable_http1().enable_http2().build();
        Ok(RetryAfterClient {
            inner:
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
            retry_after,
        })
    }
}

type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>>
            + Send,
    >,
>;

impl instant_acme::HttpClient for RetryAfterClient {
    fn request(
        &self,
        request: axum::http::Request<instant_acme::BodyWrapper<axum::body::Bytes>>,
    ) -> ResponseFuture {
        let future = self.inner.request(request);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let response = future
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            if let Some(at) = response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                *retry_after
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
            }
            Ok(instant_acme::BytesResponse::from(response))
        })
    }
}

/// `Retry-After` as seconds or an HTTP date, to Unix seconds.
fn parse_retry_after(value: &str) -> Option<i64> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Ok(seconds) = value.trim().parse::<i64>() {
        return Some(now + seconds.max(0));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

impl Upstreams {
    /// Prepares the issuers and starts one http-01 responder per distinct listen address.
    pub async fn start(
        configs: &[IssuerConfig],
        data_dir: &Path,
    ) -> Result<Upstreams, crate::ServerError> {
        let tokens: Tokens = Arc::new(Mutex::new(HashMap::new()));
        let mut listening = Vec::new();
        for config in configs {
            if let Some(address) = config.http01_listen
                && !listening.contains(&address)
            {
                listening.push(address);
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    crate::ServerError::Listen(format!(
                        "issuer {:?}: cannot listen for http-01 on {address}: {e}",
                        config.name
                    ))
                })?;
                let router = axum::Router::new()
                    .route(
                        "/.well-known/acme-challenge/{token}",
                        axum::routing::get(answer),
                    )
                    .with_state(tokens.clone());
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
            }
        }
        let issuers = configs
            .iter()
            .map(|config| {
                (
                    config.name.clone(),
                    Upstream {
                        credentials_path: data_dir
                            .join("issuers")
                            .join(format!("{}.json", config.name)),
                        config: config.clone(),
                        account: AsyncMutex::new(None),
                        retry_after: Arc::new(Mutex::new(None)),
                    },
                )
            })
            .collect();
        Ok(Upstreams { issuers, tokens })
    }

    /// Whether `name` is a configured external issuer.
    pub fn knows(&self, name: &str) -> bool {
        self.issuers.contains_key(name)
    }

    /// The renewal window issuer `name` suggests for the certificate `der`, or `None` when
    /// the issuer does not offer renewal information (ARI).
    pub async fn renewal_window(
        &self,
        name: &str,
        der: &[u8],
    ) -> Result<Option<AriWindow>, String> {
        let upstream = self.issuers.get(name).ok_or_else(|| {
            format!("issuer {name:?} is not configured ([[issuer]] in the configuration)")
        })?;
        let account = upstream.account().await?;
        let certificate = rustls::pki_types::CertificateDer::from(der);
        let id = instant_acme::CertificateIdentifier::try_from(&certificate)
            .map_err(|e| format!("{name}: renewal information: {e}"))?;
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => Ok(Some(AriWindow {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                retry_after: i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(error) => Err(format!("{name}: renewal information: {}", describe(&error))),
        }
    }

    /// Obtains a certificate for `sans` from issuer `name` with the request `csr_der`; with
    /// `replaces` (the DER of the certificate it succeeds), the order names it (RFC 9773 §5).
    pub async fn obtain(
        &self,
        name: &str,
        sans: &[String],
        csr_der: &[u8],
        replaces: Option<&[u8]>,
    ) -> Result<Obtained, ObtainError> {
        let upstream = self.issuers.get(name).ok_or_else(|| {
            format!("issuer {name:?} is not configured ([[issuer]] in the configuration)")
        })?;
        let account = upstream.account().await?;
        let identifiers: Vec<Identifier> = sans
            .iter()
            .map(|san| match san.parse::<IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(san.clone()),
            })
            .collect();
        let new_order = || {
            let order = NewOrder::new(&identifiers);
            match &upstream.config.profile {
                Some(profile) => order.profile(profile),
                None => order,
            }
        };
        let replaced = replaces.and_then(|der| {
            instant_acme::CertificateIdentifier::try_from(&rustls::pki_types::CertificateDer::from(
                der,
            ))
            .ok()
        });
        *upstream
            .retry_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let mut ordered = match &replaced {
            Some(id) => account.new_order(&new_order().replaces(id.clone())).await,
            None => account.new_order(&new_order()).await,
        };
        // A CA that will not take `replaces` for this certificate (already replaced, not
        // ours) still issues a plain order (RFC 9773 §5: the field is advisory).
        if let Err(instant_acme::Error::Api(problem)) = &ordered
            && replaced.is_some()
            && matches!(
                problem.r#type.as_deref(),
                Some(
                    "urn:ietf:params:acme:error:alreadyReplaced"
                        | "urn:ietf:params:acme:error:malformed"
                )
            )
        {
            ordered = account.new_order(&new_order()).await;
        }
        let mut order = match ordered {
            Ok(order) => order,
            Err(error) => {
                let limited = matches!(&error, instant_acme::Error::Api(p)
                    if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited"));
                let retry_after = if limited {
                    *upstream
                        .retry_after
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                } else {
                    None
                };
                return Err(ObtainError {
                    message: format!("{name}: newOrder: {}", describe(&error)),
                    retry_after,
                });
            }
        };

        let mut cleanup = Vec::new();
        let mut tokens = Vec::new();
        let mut written = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization
                    .map_err(|e| format!("{name}: authorization: {}", describe(&e)))?;
                match authorization.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => return Err(format!("{name}: an authorization is {other:?}")),
                }
                if upstream.config.challenge == "dns-01" {
                    let mut challenge = authorization
                        .challenge(ChallengeType::Dns01)
                        .ok_or_else(|| format!("{name}: the CA offers no dns-01 challenge"))?;
                    let base = match challenge.identifier().identifier {
                        Identifier::Dns(dns) => dns.clone(),
                        other => return Err(format!("{name}: dns-01 cannot validate {other:?}")),
                    };
                    let record = format!("_acme-challenge.{base}.");
                    let value = challenge.key_authorization().dns_value();
                    dns01(&upstream.config, "present", &record, &value).await?;
                    cleanup.push((record, value));
                    challenge
                        .set_ready()
                        .await
                        .map_err(|e| format!("{name}: challenge: {}", describe(&e)))?;
                } else {
                    let mut challenge = authorization
                        .challenge(ChallengeType::Http01)
                        .ok_or_else(|| format!("{name}: the CA offers no http-01 challenge"))?;
                    let token = challenge.token.clone();
                    let key_authorization = challenge.key_authorization().as_str().to_string();
                    if let Some(webroot) = &upstream.config.http01_webroot {
                        let path = webroot_path(webroot, &token)?;
                        write_atomic(&path, key_authorization.as_bytes(), crate::files::PUBLIC)
                            .map_err(|e| format!("{name}: http-01 webroot: {e}"))?;
                        written.push(path);
                    } else {
                        self.tokens
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(token.clone(), key_authorization);
                        tokens.push(token);
                    }
                    challenge
                        .set_ready()
                        .await
                        .map_err(|e| format!("{name}: challenge: {}", describe(&e)))?;
                }
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(200))
                .backoff(1.5)
                .timeout(Duration::from_secs(120));
            let status = order
                .poll_ready(&retry)
                .await
                .map_err(|e| format!("{name}: waiting for validation: {}", describe(&e)))?;
            if status != OrderStatus::Ready {
                return Err(format!(
                    "{name}: the order became {status:?}; see the CA's authorization errors"
                ));
            }
            order
                .finalize_csr(csr_der)
                .await
                .map_err(|e| format!("{name}: finalize: {}", describe(&e)))?;
            let chain = order
                .poll_certificate(&retry)
                .await
                .map_err(|e| format!("{name}: download: {}", describe(&e)))?;
            Ok(chain)
        }
        .await;
        for (record, value) in cleanup {
            if let Err(error) = dns01(&upstream.config, "cleanup", &record, &value).await {
                tracing::warn!(%error, %record, "could not remove a dns-01 record");
            }
        }
        for path in written {
            let _ = std::fs::remove_file(&path);
        }
        {
            let mut map = self
                .tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for token in tokens {
                map.remove(&token);
            }
        }
        let chain = result?;
        let blocks = pem::parse_many(chain.as_bytes())
            .map_err(|e| format!("{name}: the chain is not PEM: {e}"))?;
        let leaf = blocks
            .first()
            .ok_or_else(|| format!("{name}: the CA sent no certificate"))?;
        Ok(Obtained {
            certificate_pem: pem::encode(leaf),
            chain_pem: blocks[1..].iter().map(pem::encode).collect(),
            der: leaf.contents().to_vec(),
        })
    }
}

impl Upstream {
    /// The ACME account: loaded from its file, or created (and saved) on first use.
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let name = &self.config.name;
        let client =
            RetryAfterClient::new(self.config.ca_file.as_deref(), self.retry_after.clone())
                .map_err(|e| format!("{name}: HTTPS client: {e}"))?;
        let builder = || Ok::<_, String>(Account::builder_with_http(Box::new(client.clone())));
        let account = match std::fs::read(&self.credentials_path) {
            Ok(bytes) => {
                let credentials: AccountCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| {
                        format!(
                            "{}: unreadable ({e}); remove it to register a new account",
                            self.credentials_path.display()
                        )
                    })?;
                builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("{name}: account: {}", describe(&e)))?
            }
            Err(_) => {
                let eab = match (&self.config.eab_kid, &self.config.eab_hmac_key) {
                    (Some(kid), Some(key)) => {
                        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(key.trim_end_matches('='))
                            .map_err(|_| format!("{name}: eab_hmac_key is not base64url"))?;
                        Some(ExternalAccountKey::new(kid.clone(), &key))
                    }
                    _ => None,
                };
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(|e| format!("{name}: newAccount: {}", describe(&e)))?;
                let text = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
                write_atomic(&self.credentials_path, &text, PRIVATE).map_err(|e| e.to_string())?;
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// An instant-acme error with the CA's problem detail when there is one.
fn describe(error: &instant_acme::Error) -> String {
    match error {
        instant_acme::Error::Api(problem) => format!(
            "{} ({})",
            problem.detail.clone().unwrap_or_default(),
            problem.r#type.clone().unwrap_or_default()
        ),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// Where an http-01 answer goes under a webroot; the token must be base64url (RFC 8555 §8.3),
/// so it cannot leave the directory.
fn webroot_path(webroot: &Path, token: &str) -> Result<PathBuf, String> {
    if token.is_empty() {
        return Err("the CA sent an empty http-01 token".into());
    }
    certkeeper_acme::b64url_decode(token, "the CA's http-01 token").map_err(|e| e.to_string())?;
    Ok(webroot
        .join(".well-known")
        .join("acme-challenge")
        .join(token))
}

/// Presents or removes a dns-01 record through RFC 2136 or the hook, as configured.
async fn dns01(
    config: &IssuerConfig,
    action: &str,
    record: &str,
    value: &str,
) -> Result<(), String> {
    match (&config.rfc2136, &config.dns01_hook) {
        (Some(rfc2136), _) if action == "present" => {
            crate::rfc2136::present(rfc2136, record, value).await
        }
        (Some(rfc2136), _) => crate::rfc2136::cleanup(rfc2136, record, value).await,
        (None, Some(hook)) => run_hook(hook, action, record, value).await,
        (None, None) => Err(format!(
            "issuer {:?} has neither [issuer.rfc2136] nor dns01_hook for dns-01",
            config.name
        )),
    }
}

async fn run_hook(hook: &str, action: &str, record: &str, value: &str) -> Result<(), String> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(hook)
            .args([action, record, value])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("dns-01 hook {hook} {action} did not finish within 60 s"))?
    .map_err(|e| format!("dns-01 hook {hook}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dns-01 hook {hook} {action} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn answer(
    State(tokens): State<Tokens>,
    UrlPath(token): UrlPath<String>,
) -> (axum::http::StatusCode, String) {
    let found = tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&token)
        .cloned();
    match found {
        Some(key_authorization) => (axum::http::StatusCode::OK, key_authorization),
        None => (axum::http::StatusCode::NOT_FOUND, String::new()),
    }
}
