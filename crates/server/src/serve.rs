//! Starting the server: data directory, store, CA, bootstrap token, TLS, listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use certkeeper_store::{AuditEvent, Change, Outcome, Store, sqlite_url};
use tokio::task::JoinHandle;

use crate::auth::{Role, TokenVerifier, mint};
use crate::ca::{CaInit, CaPaths, issuer_urls};
use crate::config::CheckedConfig;
use crate::{AppState, ServerError, api, ca, files, tls};

/// How to run the server.
pub struct ServeOptions {
    /// Parsed and checked configuration.
    pub config: CheckedConfig,
    /// The data directory.
    pub data_dir: PathBuf,
}

/// A running server.
pub struct Started {
    /// HTTPS API address.
    pub https: SocketAddr,
    /// Plain-HTTP address (CA certificates, later CRL and OCSP).
    pub http: SocketAddr,
    /// Agent listener (mutual TLS), unless disabled.
    pub agents: Option<SocketAddr>,
    /// Where the root certificate is.
    pub root_path: PathBuf,
    /// SHA-256 fingerprint of the root certificate.
    pub root_fingerprint: String,
    /// The bootstrap admin token, set only on the start that created it.
    pub admin_token: Option<String>,
    /// The public base URL.
    pub base_url: String,
    handle: axum_server::Handle<SocketAddr>,
    http_shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    store: Store,
}

impl Started {
    /// Stops accepting, lets in-flight requests finish (up to 10 s), and closes the store.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        let _ = self.http_shutdown.send(true);
        for task in &self.background {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

/// Prepares everything and starts both listeners.
pub async fn start(options: ServeOptions) -> Result<Started, ServerError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ServeOptions {
        config: checked,
        data_dir,
    } = options;
    let config = &checked.config;
    files::create_private_dir(&data_dir)?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| sqlite_url(&data_dir));
    let key_path = config
        .audit_key_file
        .clone()
        .unwrap_or_else(|| crate::audit_key::default_path(&data_dir));
    let store = crate::audit_key::open_store(&database_url, &key_path, true).await?;
    let base_url = config.server.base_url();
    crate::config::validate_base_url(&base_url)?;

    let paths = CaPaths::new(&data_dir);
    if !paths.is_initialized() && !paths.intermediate_csr.exists() {
        let report = ca::initialize(&data_dir, &config.ca, &base_url, &CaInit::Generate)?;
        ca::record_ca_certificates(&store, &report.certificates, "certkeeper", "ca.init").await?;
    }
    let loaded = ca::load(&data_dir)?;
    record_policy(&store, &checked).await?;
    let admin_token = bootstrap_admin(&store).await?;
    let tls = tls::ensure(
        &data_dir,
        &loaded,
        &store,
        config.server.listen.ip(),
        &config.server.tls_names,
    )
    .await?;

    let root_fingerprint = loaded.root_fingerprint.clone();
    let ocsp = crate::ocsp::OcspService::start(&data_dir, &loaded, &store).await?;
    let acme = if config.acme.enabled {
        Some(Arc::new(
            crate::acme::AcmeService::start(config.acme.clone(), &store).await?,
        ))
    } else {
        None
    };
    let upstreams = Arc::new(crate::upstream::Upstreams::start(&config.issuers, &data_dir).await?);
    let state = Arc::new(AppState {
        store: store.clone(),
        urls: issuer_urls(&base_url, "intermediate"),
        ca: loaded,
        profiles: checked
            .profiles
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect(),
        policy: checked.policy.clone(),
        tokens: TokenVerifier::default(),
        max_body_bytes: config.server.max_body_bytes,
        data_dir: data_dir.clone(),
        base_url: base_url.clone(),
        crls: crate::crl::CrlPublisher::new(config.crl.clone()),
        ocsp,
        acme: acme.clone(),
        upstreams,
        issuer_slots: Arc::new(crate::lifecycle::IssuerSlots::new(
            config.lifecycle.internal_concurrency,
            &config.issuers,
        )),
        sealer: Arc::new(crate::sealing::KeySealer::load_or_create(
            &crate::sealing::KeySealer::default_path(&data_dir),
        )?),
        fleet: Arc::new(crate::agents::FleetHub::new(config.agents.clone())),
        metrics: Arc::new(crate::metrics::Metrics::new(crate::metrics::KeyUsePolicy {
            rate_per_minute: config.metrics.key_use_rate_per_minute,
            expected: config.metrics.expected_key_principals.clone(),
        })),
        metrics_settings: config.metrics.clone(),
        alerts: Arc::new(crate::alerting::AlertEngine::new(config.alerting.clone())?),
    });
    if state.ocsp.issued_at_start() {
        state.metrics.key_use("issuing", "ocsp");
    }
    state.crls.rebuild(&state).await?;
    let crl_task = crate::crl::spawn(state.clone());
    let rotation_state = state.clone();
    let ocsp_task = tokio::spawn(async move {
        // Every 10 minutes: refresh cached responses nearing nextUpdate; every hour: check
        // whether the responder certificate is due for replacement.
        for round in 1u64.. {
            tokio::time::sleep(Duration::from_secs(600)).await;
            let s = &rotation_state;
            s.ocsp.refresh_due(&s.store).await;
            if round % 6 == 0 {
                match s.ocsp.rotate_if_due(&s.data_dir, &s.ca, &s.store).await {
                    Ok(true) => s.metrics.key_use("issuing", "ocsp"),
                    Ok(false) => {}
                    Err(error) => tracing::error!(
                        %error,
                        "OCSP responder rotation failed; keeping the current one"
                    ),
                }
            }
        }
    });

    let mut background = vec![crl_task, ocsp_task];
    if config.alerting.enabled {
        background.push(crate::alerting::spawn(state.clone()));
    }
    for job in &config.scans {
        background.push(crate::scan::spawn_job(state.clone(), job.clone()));
    }
    if config.lifecycle.enabled {
        background.push(crate::lifecycle::spawn(
            state.clone(),
            config.lifecycle.clone(),
        ));
    }
    if let Some(service) = acme {
        crate::acme::resume_validations(state.clone(), service.clone()).await;
        let housekeeping_state = state.clone();
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                service.housekeeping(&housekeeping_state.store).await;
            }
        }));
    }

    let https_listener = std::net::TcpListener::bind(config.server.listen).map_err(|e| {
        ServerError::Listen(format!("cannot listen on {}: {e}", config.server.listen))
    })?;
    https_listener
        .set_nonblocking(true)
        .map_err(|e| ServerError::Listen(e.to_string()))?;
    let https = https_listener
        .local_addr()
        .map_err(|e| ServerError::Listen(e.to_string()))?;
    let http_listener = tokio::net::TcpListener::bind(config.server.http_listen)
        .await
        .map_err(|e| {
            ServerError::Listen(format!(
                "cannot listen on {}: {e}",
                config.server.http_listen
            ))
        })?;
    let http = http_listener
        .local_addr()
        .map_err(|e| ServerError::Listen(e.to_string()))?;

    // The agent listener and driver stop with the background tasks (long polls never finish
    // on their own).
    let agents = if config.agents.enabled {
        let (address, task) = crate::agents::listen(
            state.clone(),
            config.agents.listen,
            &tls.chain_pem,
            &tls.key_pem,
        )
        .await?;
        background.push(task);
        background.push(crate::agents::spawn_driver(state.clone()));
        Some(address)
    } else {
        None
    };
    let rustls_config =
        RustlsConfig::from_pem(tls.chain_pem.into_bytes(), tls.key_pem.into_bytes())
            .await
            .map_err(|e| ServerError::Listen(format!("TLS configuration: {e}")))?;
    let handle = axum_server::Handle::new();
    // TCP_NODELAY: responses go out at once instead of waiting on the peer's delayed ACK.
    let https_server = axum_server::from_tcp_rustls(https_listener, rustls_config)
        .map_err(|e| ServerError::Listen(e.to_string()))?
        .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
        .handle(handle.clone());
    let api_router = api::router(state.clone());
    let https_task = tokio::spawn(async move {
        if let Err(error) = https_server.serve(api_router.into_make_service()).await {
            tracing::error!(%error, "HTTPS listener stopped");
        }
    });
    let (http_shutdown, mut http_stop) = tokio::sync::watch::channel(false);
    let public_router = api::public_router(state.clone());
    let http_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = http_stop.changed().await;
        };
        if let Err(error) = axum::serve(http_listener, public_router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "HTTP listener stopped");
        }
    });
    Ok(Started {
        https,
        http,
        agents,
        root_path: paths.root_cert,
        root_fingerprint,
        admin_token,
        base_url,
        handle,
        http_shutdown,
        tasks: vec![https_task, http_task],
        background,
        store,
    })
}

/// Audits the policy when it differs from the one last recorded.
async fn record_policy(store: &Store, checked: &CheckedConfig) -> Result<(), ServerError> {
    let rules = serde_json::to_string(checked.policy.rules())
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let profiles =
        serde_json::to_string(&checked.profiles).map_err(|e| ServerError::Config(e.to_string()))?;
    let digest = certkeeper_pki::sha256_hex(format!("{rules}\n{profiles}").as_bytes());
    if store.setting("policy_sha256").await?.as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
    let audit = AuditEvent {
        actor: "config".into(),
        action: "policy.change".into(),
        object: "policy".into(),
        outcome: Outcome::Success,
        detail: serde_json::json!({"sha256": digest, "rules": checked.policy.rules(), "profiles": checked.profiles.iter().map(|p| &p.name).collect::<Vec<_>>()}),
    };
    store
        .apply(Change {
            settings: vec![("policy_sha256".into(), digest)],
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(())
}

/// Creates the first admin token when there is none; returns it so it can be shown once.
async fn bootstrap_admin(store: &Store) -> Result<Option<String>, ServerError> {
    if !store.tokens().await?.is_empty() {
        return Ok(None);
    }
    let minted = mint("bootstrap admin", Role::Admin, None, "certkeeper", None)
        .map_err(|p| ServerError::Config(p.detail))?;
    let audit = AuditEvent {
        actor: "certkeeper".into(),
        action: "token.create".into(),
        object: minted.record.id.clone(),
        outcome: Outcome::Success,
        detail: serde_json::json!({"name": minted.record.name, "role": "admin", "tenant": null}),
    };
    store
        .apply(Change {
            tokens: vec![minted.record],
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(Some(minted.secret))
}
