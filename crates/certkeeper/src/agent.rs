//! `certkeeper agent run`: the host agent. It enrolls once with a bootstrap token, then talks to
//! the server's agent listener over mutual TLS only: it reports what each local target serves,
//! deploys what the server says (atomic write, reload, probe, restore on failure), keeps the
//! trust bundle current and renews its own identity before it expires. When the server cannot
//! be reached it changes nothing (the targets keep serving the last good certificates) and
//! catches up when the server is back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use certkeeper_lifecycle::TargetSpec;
use certkeeper_pki::{KeyAlgorithm, SoftwareKey, parse_certificate, pem_to_der_certificates};
use certkeeper_server::agents::{
    BindingReport, EnrollRequest, IdentityResponse, RenewIdentityRequest, SyncRequest, SyncResponse,
};
use certkeeper_server::deploy::Material;
use certkeeper_server::files::{PRIVATE, PUBLIC, create_private_dir, write_atomic};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The agent's configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's agent listener, such as `https://ca.example.net:8444`.
    #[serde(default)]
    pub server: Option<String>,
    /// This agent's name (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    /// The tenant it expects to join; a bootstrap token of another tenant is refused.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Where the identity, trust bundle and state live (default /var/lib/certkeeper-agent).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// CA certificate to trust for the first contact (afterwards the trust bundle).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding the one-time bootstrap token (first line).
    #[serde(default)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Also keep the CA bundle (PEM) here for local services.
    #[serde(default)]
    pub trust_bundle: Option<PathBuf>,
    /// Seconds a sync waits on the server for news (default 25).
    #[serde(default)]
    pub sync_wait: Option<u64>,
    /// Local targets: which managed certificate goes where.
    #[serde(default)]
    pub deploy: Vec<DeployConfig>,
}

/// One binding: a managed certificate deployed to a local target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The managed certificate's name.
    pub certificate: String,
    /// The target (`type = "file"` or `"nginx"`, as in managed-certificate declarations).
    pub target: TargetSpec,
}

/// `certkeeper agent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent configuration file (TOML).
    #[arg(long, env = "CERTKEEPER_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The server's agent listener URL [default: https://127.0.0.1:8444].
    #[arg(long, env = "CERTKEEPER_AGENT_SERVER")]
    server: Option<String>,
    /// Agent name [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Tenant to join.
    #[arg(long)]
    tenant: Option<String>,
    /// State directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// CA certificate to trust for enrollment.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// One-time bootstrap token (only needed until the agent has enrolled).
    #[arg(long, env = "CERTKEEPER_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Enroll (if needed), sync once and exit instead of running.
    #[arg(long)]
    once: bool,
}

/// What the agent runs with, after flags and file are merged.
struct Settings {
    server: String,
    name: String,
    tenant: Option<String>,
    state_dir: PathBuf,
    ca_file: Option<PathBuf>,
    bootstrap_token: Option<String>,
    trust_bundle: Option<PathBuf>,
    sync_wait: u64,
    deploy: Vec<DeployConfig>,
}

fn settings(args: &RunArgs) -> Result<Settings, CliError> {
    let config: AgentConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
            toml::from_str(&text).map_err(|e| CliError::file(path, e.message()))?
        }
        None => AgentConfig::default(),
    };
    let mut seen = std::collections::BTreeSet::new();
    for deploy in &config.deploy {
        if !seen.insert(deploy.certificate.as_str()) {
            return Err(CliError::Usage(format!(
                "{:?} is deployed twice; an agent deploys each managed certificate to one target (run a second agent for a second service)",
                deploy.certificate
            )));
        }
        if matches!(deploy.target, TargetSpec::Webhook { .. }) {
            return Err(CliError::Usage(format!(
                "deploy of {:?}: agents deploy to file and nginx targets; declare webhooks on the managed certificate instead",
                deploy.certificate
            )));
        }
    }
    let bootstrap_token = match (&args.bootstrap_token, &config.bootstrap_token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::file(path, e))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let name = args
        .name
        .clone()
        .or(config.name)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .ok_or_else(|| CliError::Usage("give the agent a name with --name".into()))?;
    Ok(Settings {
        server: args
            .server
            .clone()
            .or(config.server)
            .unwrap_or_else(|| "https://127.0.0.1:8444".into())
            .trim_end_matches('/')
            .to_string(),
        name,
        tenant: args.tenant.clone().or(config.tenant),
        state_dir: args
            .state_dir
            .clone()
            .or(config.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/certkeeper-agent")),
        ca_file: args.ca_file.clone().or(config.ca_file),
        bootstrap_token,
        trust_bundle: config.trust_bundle,
        sync_wait: config.sync_wait.unwrap_or(25),
        deploy: config.deploy,
    })
}

/// The agent's identity: its key followed by its certificate and chain, in one file
/// (`identity.pem`, mode 0600) written atomically, so key and certificate always match.
struct Identity {
    pem: zeroize::Zeroizing<String>,
    /// Expiry of the certificate, Unix seconds.
    not_after: i64,
}

fn identity_path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity.pem")
}

fn read_identity(pem: String) -> Result<Identity, String> {
    let pem = zeroize::Zeroizing::new(pem);
    let der = pem_to_der_certificates(pem.as_bytes())
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no certificate in it")?;
    let summary = parse_certificate(&der).map_err(|e| e.to_string())?;
    Ok(Identity {
        pem,
        not_after: summary.not_after,
    })
}

fn load_identity(state_dir: &Path) -> Result<Option<Identity>, CliError> {
    let path = identity_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(pem) => read_identity(pem)
            .map(Some)
            .map_err(|e| CliError::file(&path, format!("{e}; remove it and enroll again"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::file(&path, e)),
    }
}

fn save_identity(
    state_dir: &Path,
    response: &IdentityResponse,
    key_pem: &str,
) -> Result<Identity, CliError> {
    let path = identity_path(state_dir);
    let pem = zeroize::Zeroizing::new(format!("{key_pem}{}", response.certificate_pem));
    write_atomic(&path, pem.as_bytes(), PRIVATE).map_err(|e| CliError::file(&path, e))?;
    let bundle = state_dir.join("trust-bundle.pem");
    write_atomic(&bundle, response.trust_bundle_pem.as_bytes(), PUBLIC)
        .map_err(|e| CliError::file(&bundle, e))?;
    read_identity(pem.to_string()).map_err(|e| CliError::file(&path, e))
}

/// Refuses to go on with an identity that has expired: the server cannot accept it, and only
/// a new enrollment helps.
fn check_not_expired(identity: &Identity, state_dir: &Path) -> Result<(), CliError> {
    if identity.not_after <= unix_now() {
        return Err(CliError::Usage(format!(
            "the agent identity in {} expired (the agent was off longer than its lifetime); remove that file and enroll again with a new bootstrap token (`certkeeper agent token create`)",
            identity_path(state_dir).display()
        )));
    }
    Ok(())
}

fn trust_roots(settings: &Settings) -> Result<Vec<reqwest::Certificate>, CliError> {
    let bundle = settings.state_dir.join("trust-bundle.pem");
    let path = if bundle.exists() {
        bundle
    } else {
        settings.ca_file.clone().ok_or_else(|| {
            CliError::Usage(
                "first contact: give the server's root certificate with --ca-file (or ca_file in the configuration)".into(),
            )
        })?
    };
    let pem = std::fs::read(&path).map_err(|e| CliError::file(&path, e))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| CliError::file(&path, format!("not PEM certificates: {e}")))
}

fn client(settings: &Settings, identity: Option<&Identity>) -> Result<reqwest::Client, CliError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("certkeeper-agent/", env!("CARGO_PKG_VERSION")))
        .tls_certs_only(trust_roots(settings)?)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(settings.sync_wait + 30));
    if let Some(identity) = identity {
        let id = reqwest::Identity::from_pem(identity.pem.as_bytes())
            .map_err(|e| CliError::Http(format!("the agent identity cannot be used: {e}")))?;
        builder = builder.identity(id);
    }
    builder
        .build()
        .map_err(|e| CliError::Http(format!("cannot build the HTTP client: {e}")))
}

async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    body: &B,
) -> Result<T, CliError> {
    crate::client::exchange(http.post(&url).json(body), &url).await
}

fn new_key_and_csr() -> Result<(zeroize::Zeroizing<String>, String), CliError> {
    let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256)
        .map_err(|e| CliError::Usage(format!("key generation: {e}")))?;
    let csr = key
        .csr_der(&[])
        .map_err(|e| CliError::Usage(format!("certificate request: {e}")))?;
    Ok((
        zeroize::Zeroizing::new(key.pkcs8_pem()),
        certkeeper_pki::to_pem("CERTIFICATE REQUEST", &csr),
    ))
}

async fn enroll(settings: &Settings) -> Result<Identity, CliError> {
    let token = settings.bootstrap_token.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no identity yet: give a bootstrap token with --bootstrap-token (create one with `certkeeper agent token create`)",
            settings.state_dir.display()
        ))
    })?;
    let (key_pem, csr_pem) = new_key_and_csr()?;
    let http = client(settings, None)?;
    let response: IdentityResponse = call(
        &http,
        format!("{}/agent/v1/enroll", settings.server),
        &EnrollRequest {
            token,
            name: settings.name.clone(),
            tenant: settings.tenant.clone(),
            csr_pem,
        },
    )
    .await?;
    tracing::info!(agent = %response.agent_id, name = %response.name, tenant = %response.tenant, "enrolled");
    save_identity(&settings.state_dir, &response, &key_pem)
}

async fn renew_identity(settings: &Settings, http: &reqwest::Client) -> Result<Identity, CliError> {
    let (key_pem, csr_pem) = new_key_and_csr()?;
    let response: IdentityResponse = call(
        http,
        format!("{}/agent/v1/renew", settings.server),
        &RenewIdentityRequest { csr_pem },
    )
    .await?;
    tracing::info!(not_after = response.not_after, "identity renewed");
    save_identity(&settings.state_dir, &response, &key_pem)
}

/// What the agent remembers per binding between syncs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct BindingState {
    deployed_serial: Option<String>,
    attempted_serial: Option<String>,
    /// The server's offer the last try answered.
    #[serde(default)]
    attempt: i64,
    /// When the last try failed (Unix seconds).
    #[serde(default)]
    failed_at: i64,
    error: Option<String>,
}

/// A failed serial is tried again after this long even when the server's offer is the same.
const RETRY_FAILED_AFTER_SECONDS: i64 = 60;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

fn load_state(state_dir: &Path) -> HashMap<String, BindingState> {
    std::fs::read(state_path(state_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_state(state_dir: &Path, state: &HashMap<String, BindingState>) {
    let path = state_path(state_dir);
    match serde_json::to_vec_pretty(state) {
        Ok(bytes) => {
            if let Err(error) = write_atomic(&path, &bytes, PRIVATE) {
                tracing::warn!(%error, "cannot save the agent state");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot save the agent state"),
    }
}

/// The serial a target serves, read from its certificate file when it has one.
fn serial_on_disk(target: &TargetSpec) -> Option<String> {
    let path = match target {
        TargetSpec::File {
            cert, fullchain, ..
        } => cert.clone().or_else(|| fullchain.clone())?,
        TargetSpec::Nginx { fullchain, .. } => fullchain.clone(),
        TargetSpec::Webhook { .. } => return None,
    };
    let pem = std::fs::read(path).ok()?;
    let der = pem_to_der_certificates(&pem).ok()?.into_iter().next()?;
    parse_certificate(&der).ok().map(|c| c.serial)
}

fn reports(settings: &Settings, state: &HashMap<String, BindingState>) -> Vec<BindingReport> {
    settings
        .deploy
        .iter()
        .map(|d| {
            let remembered = state.get(&d.certificate).cloned().unwrap_or_default();
            BindingReport {
                certificate: d.certificate.clone(),
                target: serde_json::to_value(&d.target).unwrap_or(serde_json::Value::Null),
                deployed_serial: serial_on_disk(&d.target).or(remembered.deployed_serial),
                attempted_serial: remembered.attempted_serial,
                attempt: remembered.attempt,
                error: remembered.error,
            }
        })
        .collect()
}

/// Runs the agent until it is stopped.
pub async fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let settings = settings(&args)?;
    create_private_dir(&settings.state_dir).map_err(|e| CliError::file(&settings.state_dir, e))?;
    let mut identity = match load_identity(&settings.state_dir)? {
        Some(identity) => identity,
        None => enroll(&settings).await?,
    };
    let mut http = client(&settings, Some(&identity))?;
    let mut state = load_state(&settings.state_dir);
    // What it holds already (checked against every copy at the first answer).
    let kept = std::fs::read(settings.state_dir.join("trust-bundle.pem")).ok();
    let mut trust_sha256: Option<String> = kept
        .as_ref()
        .filter(|bundle| {
            settings
                .trust_bundle
                .as_ref()
                .is_none_or(|path| std::fs::read(path).ok().as_ref() == Some(*bundle))
        })
        .map(|bundle| certkeeper_pki::sha256_hex(bundle));
    let mut failures = 0u32;
    let mut wait = 0;
    let mut renewal_failed_at = 0;
    loop {
        check_not_expired(&identity, &settings.state_dir)?;
        let request = SyncRequest {
            bindings: reports(&settings, &state),
            trust_sha256: trust_sha256.clone(),
            wait_seconds: wait,
        };
        let response: Result<SyncResponse, CliError> = call(
            &http,
            format!("{}/agent/v1/sync", settings.server),
            &request,
        )
        .await;
        let response = match response {
            Ok(response) => response,
            Err(CliError::Api(mut problem)) if problem.status == 401 => {
                // Refused for good (revoked, unknown): say so and stop.
                problem.detail.push_str(&format!(
                    " (this agent's identity is {})",
                    identity_path(&settings.state_dir).display()
                ));
                return Err(CliError::Api(problem));
            }
            Err(error) => {
                if args.once {
                    return Err(error);
                }
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis((250u64 << failures.min(7)).min(30_000));
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "server unreachable; targets keep their certificates");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        failures = 0;
        if trust_sha256.as_deref() != Some(response.trust_sha256.as_str())
            && keep_trust_bundle(&settings, &response.trust_bundle_pem)
        {
            trust_sha256 = Some(response.trust_sha256.clone());
        }
        for answer in &response.bindings {
            if let Some(error) = &answer.error {
                tracing::warn!(certificate = %answer.certificate, %error, "binding not served");
            }
        }
        let mut deployed_any = false;
        let mut held_back = false;
        for delivery in response.deliveries {
            let Some(binding) = settings
                .deploy
                .iter()
                .find(|d| d.certificate == delivery.certificate)
            else {
                continue;
            };
            let entry = state.entry(delivery.certificate.clone()).or_default();
            // A serial that failed here is not tried again until the server offers it anew
            // (a resumed rollout) or a minute has passed, so a broken reload does not loop.
            if entry.attempted_serial.as_deref() == Some(delivery.serial.as_str())
                && entry.attempt == delivery.attempt
                && entry.error.is_some()
                && unix_now() - entry.failed_at < RETRY_FAILED_AFTER_SECONDS
            {
                held_back = true;
                continue;
            }
            let material = Material {
                serial: delivery.serial.clone(),
                certificate_pem: delivery.certificate_pem,
                chain_pem: delivery.chain_pem,
                key_pem: delivery.key_pem,
            };
            let outcome = certkeeper_server::lifecycle::deploy(
                &binding.target,
                &delivery.certificate,
                &material,
            )
            .await;
            entry.attempted_serial = Some(delivery.serial.clone());
            entry.attempt = delivery.attempt;
            entry.failed_at = unix_now();
            entry.error = outcome.error.clone();
            if outcome.error.is_none() {
                entry.deployed_serial = Some(delivery.serial.clone());
                tracing::info!(certificate = %delivery.certificate, serial = %delivery.serial, "deployed");
            } else {
                tracing::warn!(certificate = %delivery.certificate, serial = %delivery.serial, error = ?outcome.error, "deployment failed; the previous certificate was restored");
            }
            deployed_any = true;
        }
        save_state(&settings.state_dir, &state);
        // Still due after this round (failed now, or failed less than a minute ago).
        let mut renewal_pending = response.renew_identity;
        if response.renew_identity && unix_now() - renewal_failed_at >= 60 {
            match renew_identity(&settings, &http).await {
                Ok(renewed) => {
                    identity = renewed;
                    http = client(&settings, Some(&identity))?;
                    renewal_pending = false;
                }
                Err(error) => {
                    renewal_failed_at = unix_now();
                    tracing::warn!(%error, "identity renewal failed; trying again in a minute");
                }
            }
        }
        if args.once && !deployed_any {
            let failed = state.values().any(|entry| entry.error.is_some());
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        // Report a deployment at once. A held-back retry or a failed renewal would make the
        // server answer at once again, so pause first; otherwise wait on the server for news.
        wait = if deployed_any { 0 } else { settings.sync_wait };
        if !deployed_any && (held_back || renewal_pending) {
            tokio::time::sleep(Duration::from_secs(settings.sync_wait.max(1))).await;
        }
    }
}

/// Writes the trust bundle where the agent keeps it (and where local services read it); true
/// when every copy holds it, so the agent may tell the server it has it.
fn keep_trust_bundle(settings: &Settings, pem: &str) -> bool {
    let mut paths = vec![settings.state_dir.join("trust-bundle.pem")];
    paths.extend(settings.trust_bundle.clone());
    let mut kept = true;
    for path in paths {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(pem) {
            continue;
        }
        if let Err(error) = write_atomic(&path, pem.as_bytes(), PUBLIC) {
            kept = false;
            tracing::warn!(%error, path = %path.display(), "cannot write the trust bundle");
        } else {
            tracing::info!(path = %path.display(), "trust bundle updated");
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_configuration_reads() {
        let text = include_str!("../../../dist/agent.toml");
        let config: AgentConfig = toml::from_str(text).unwrap();
        assert_eq!(config.deploy.len(), 2);
        assert!(matches!(config.deploy[0].target, TargetSpec::Nginx { .. }));
        assert!(config.bootstrap_token_file.is_some());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let wrong = "server = \"https://x\"\nsevrer = \"typo\"\n";
        assert!(toml::from_str::<AgentConfig>(wrong).is_err());
    }
}
