//! Commands that work on the data directory directly: serve, init, ca, config, audit verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use certkeeper_pki::KeyAlgorithm;
use certkeeper_server::ca::{self, CaInit};
use certkeeper_server::config::{CheckedConfig, Config, parse_duration};
use certkeeper_server::{ServeOptions, ServerError};
use certkeeper_store::{Store, sqlite_url};
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::output::{OutputFormat, print_json, print_table};
use crate::{DataArgs, ServerArgs, client::Client};

/// `certkeeper serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// HTTPS API listener [default: 127.0.0.1:8443].
    #[arg(long, env = "CERTKEEPER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Plain-HTTP listener for CA certificates, CRLs and OCSP [default: 127.0.0.1:8080].
    #[arg(long, env = "CERTKEEPER_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Agent listener (mutual TLS) [default: 127.0.0.1:8444].
    #[arg(long, env = "CERTKEEPER_AGENTS_LISTEN")]
    agents_listen: Option<std::net::SocketAddr>,
    /// Base URL written into certificates (AIA, CRL distribution point) [default: http://<http-listen>].
    #[arg(long, env = "CERTKEEPER_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
}

/// Loads the configuration (or the defaults) and resolves the data directory.
fn load_config(data: &DataArgs) -> Result<(CheckedConfig, PathBuf), CliError> {
    let mut checked = match &data.config {
        Some(path) => Config::load(path)?,
        None => Config::default().check("", "defaults")?,
    };
    if let Some(url) = &data.database_url {
        checked.config.database_url = Some(url.clone());
    }
    let data_dir = data
        .data_dir
        .clone()
        .or_else(|| checked.config.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./certkeeper-data"));
    Ok((checked, data_dir))
}

/// Opens the store; `may_create_key` lets a new audit key be made (init only).
async fn open_store(
    checked: &CheckedConfig,
    data_dir: &Path,
    may_create_key: bool,
) -> Result<Store, CliError> {
    let url = checked
        .config
        .database_url
        .clone()
        .unwrap_or_else(|| sqlite_url(data_dir));
    if url.starts_with("sqlite:") {
        certkeeper_server::files::create_private_dir(data_dir)?;
    }
    let key_path = checked
        .config
        .audit_key_file
        .clone()
        .unwrap_or_else(|| certkeeper_server::audit_key::default_path(data_dir));
    Ok(certkeeper_server::audit_key::open_store(&url, &key_path, may_create_key).await?)
}

fn colon_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let (mut checked, data_dir) = load_config(&args.data)?;
    if let Some(listen) = args.listen {
        checked.config.server.listen = listen;
    }
    if let Some(listen) = args.http_listen {
        checked.config.server.http_listen = listen;
    }
    if let Some(listen) = args.agents_listen {
        checked.config.agents.listen = listen;
    }
    if let Some(url) = args.public_base_url {
        checked.config.server.public_base_url = Some(url);
    }
    let started = certkeeper_server::start(ServeOptions {
        config: checked,
        data_dir,
    })
    .await?;
    println!("certkeeper is running");
    println!(
        "  API (HTTPS):       https://{}/api/v1  (OpenAPI: https://{}/api/v1/openapi.json)",
        started.https, started.https
    );
    println!(
        "  Relying parties:   http://{}  (CA certificates: /ca/root.crt, /ca/chain.pem)",
        started.http
    );
    println!("  Web dashboard:     https://{}/ui/", started.https);
    if let Some(agents) = started.agents {
        println!("  Agents (mTLS):     https://{agents}");
    }
    println!("  Public base URL:   {}", started.base_url);
    println!("  Root certificate:  {}", started.root_path.display());
    println!(
        "  Root SHA-256:      {}",
        colon_hex(&started.root_fingerprint)
    );
    match &started.admin_token {
        Some(token) => {
            println!("  Admin token:       {token}");
            println!("                     (shown only this once; only its hash is stored)");
        }
        None => println!(
            "  Admin token:       created on first start (create more with `certkeeper token create`)"
        ),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tracing::info!("shutting down");
    started.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// `certkeeper init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Key algorithm for the CA keys: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, ed25519.
    #[arg(long)]
    key_algorithm: Option<KeyAlgorithm>,
    /// Root CA common name.
    #[arg(long)]
    root_cn: Option<String>,
    /// Intermediate CA common name.
    #[arg(long)]
    intermediate_cn: Option<String>,
    /// Organization name in both CA subjects.
    #[arg(long)]
    organization: Option<String>,
    /// Country (two letters) in both CA subjects.
    #[arg(long)]
    country: Option<String>,
    /// Root lifetime, such as 10y.
    #[arg(long, value_parser = parse_duration)]
    root_lifetime: Option<u64>,
    /// Intermediate lifetime, such as 5y.
    #[arg(long, value_parser = parse_duration)]
    intermediate_lifetime: Option<u64>,
    /// Keep the root offline: write its key to --root-key-out once and leave an intermediate CSR.
    #[arg(long, requires = "root_key_out", conflicts_with_all = ["external_root", "import_cert"])]
    offline_root: bool,
    /// Where the offline root key is written (mode 0600).
    #[arg(long)]
    root_key_out: Option<PathBuf>,
    /// Only create the intermediate key and CSR, for a root outside certkeeper.
    #[arg(long, conflicts_with = "import_cert")]
    external_root: bool,
    /// Import an existing CA: its certificate (PEM, optionally followed by its chain).
    #[arg(long, requires = "import_key")]
    import_cert: Option<PathBuf>,
    /// Import an existing CA: its private key (PEM).
    #[arg(long, requires = "import_cert")]
    import_key: Option<PathBuf>,
    /// Base URL for the intermediate's AIA and CRL DP [default: from the configuration].
    #[arg(long)]
    public_base_url: Option<String>,
}

/// Creates the CA.
pub async fn init(args: InitArgs) -> Result<ExitCode, CliError> {
    let (mut checked, data_dir) = load_config(&args.data)?;
    let section = &mut checked.config.ca;
    if let Some(v) = args.key_algorithm {
        section.key_algorithm = v;
    }
    if let Some(v) = args.root_cn {
        section.root_common_name = v;
    }
    if let Some(v) = args.intermediate_cn {
        section.intermediate_common_name = v;
    }
    if let Some(v) = args.organization {
        section.organization = Some(v);
    }
    if let Some(v) = args.country {
        section.country = Some(v);
    }
    if let Some(v) = args.root_lifetime {
        section.root_lifetime = v;
    }
    if let Some(v) = args.intermediate_lifetime {
        section.intermediate_lifetime = v;
    }
    let how = if args.offline_root {
        CaInit::OfflineRoot {
            root_key_out: args.root_key_out.clone().unwrap_or_default(),
        }
    } else if args.external_root {
        CaInit::ExternalRoot
    } else if let (Some(certificate), Some(key)) =
        (args.import_cert.clone(), args.import_key.clone())
    {
        CaInit::Import { certificate, key }
    } else {
        CaInit::Generate
    };
    let base_url = args
        .public_base_url
        .unwrap_or_else(|| checked.config.server.base_url());
    let report = ca::initialize(&data_dir, &checked.config.ca, &base_url, &how)?;
    let store = open_store(&checked, &data_dir, true).await?;
    if !report.certificates.is_empty() {
        let action = if matches!(how, CaInit::Import { .. }) {
            "ca.import"
        } else {
            "ca.init"
        };
        ca::record_ca_certificates(&store, &report.certificates, "cli", action).await?;
    }
    store.close().await;
    let paths = ca::CaPaths::new(&data_dir);
    println!("CA created in {}", data_dir.join("ca").display());
    if paths.root_cert.exists() {
        println!("  root certificate:  {}", paths.root_cert.display());
    }
    if let CaInit::OfflineRoot { root_key_out } = &how {
        println!(
            "  root key:          {} (written once; move it offline now)",
            root_key_out.display()
        );
    }
    if let Some(csr) = &report.pending_csr {
        println!("  intermediate CSR:  {}", csr.display());
        println!("next: sign it offline with");
        println!(
            "  certkeeper ca sign-intermediate --root-cert ROOT.crt --root-key ROOT.key --csr {} --out intermediate.crt",
            csr.display()
        );
        println!("then install it with");
        println!(
            "  certkeeper ca install-intermediate intermediate.crt --data-dir {}",
            data_dir.display()
        );
    } else {
        println!("  issuing CA:        {}", paths.intermediate_cert.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Sign an intermediate CSR with an offline root (needs no data directory).
    SignIntermediate {
        /// Root certificate, PEM.
        #[arg(long)]
        root_cert: PathBuf,
        /// Root private key, PEM.
        #[arg(long)]
        root_key: PathBuf,
        /// The intermediate's CSR (from `certkeeper init --offline-root`).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the intermediate certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// Intermediate lifetime (capped at the root's end).
        #[arg(long, value_parser = parse_duration, default_value = "5y")]
        lifetime: u64,
        /// Base URL for the intermediate's AIA and CRL DP (the root's CRL).
        #[arg(long)]
        public_base_url: Option<String>,
    },
    /// Install the intermediate certificate signed offline.
    InstallIntermediate {
        /// The intermediate certificate, PEM.
        certificate: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// The trust bundle agents keep: add a new intermediate or root ahead of its use, and
    /// see which agents hold it.
    #[command(subcommand)]
    Trust(crate::fleet::TrustCommand),
}

/// Runs a `ca` subcommand.
pub async fn ca(command: CaCommand) -> Result<ExitCode, CliError> {
    match command {
        CaCommand::SignIntermediate {
            root_cert,
            root_key,
            csr,
            out,
            lifetime,
            public_base_url,
        } => {
            let read = |path: &Path| std::fs::read(path).map_err(|e| CliError::file(path, e));
            let root_cert_pem = String::from_utf8_lossy(&read(&root_cert)?).into_owned();
            let root_key_pem = String::from_utf8_lossy(&read(&root_key)?).into_owned();
            let pem = ca::sign_intermediate_offline(
                &root_cert_pem,
                &root_key_pem,
                &read(&csr)?,
                lifetime,
                public_base_url.as_deref(),
            )?;
            if out.exists() {
                return Err(CliError::Usage(format!(
                    "{} exists; choose another --out",
                    out.display()
                )));
            }
            certkeeper_server::files::write_atomic(
                &out,
                pem.as_bytes(),
                certkeeper_server::files::PUBLIC,
            )?;
            println!("intermediate certificate written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::InstallIntermediate { certificate, data } => {
            let (checked, data_dir) = load_config(&data)?;
            let pem = std::fs::read_to_string(&certificate)
                .map_err(|e| CliError::file(&certificate, e))?;
            let der = ca::install_intermediate(&data_dir, &pem)?;
            let store = open_store(&checked, &data_dir, false).await?;
            ca::record_ca_certificates(&store, &[der], "cli", "ca.install-intermediate").await?;
            store.close().await;
            println!("intermediate installed; `certkeeper serve` will issue with it");
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Trust(command) => crate::fleet::trust(command).await,
    }
}

/// `certkeeper config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file; errors give the line, the key and what is allowed.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Runs a `config` subcommand.
pub fn config(command: ConfigCommand) -> Result<ExitCode, CliError> {
    match command {
        ConfigCommand::Check { file } => {
            let checked = Config::load(&file)?;
            println!(
                "{}: OK ({} profiles, {} policy rules)",
                file.display(),
                checked.profiles.len(),
                checked.policy.rules().len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `certkeeper audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Ask the server (needs an admin or auditor token) instead of reading the database.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Verifies the audit chain and prints every problem.
pub async fn audit_verify(args: AuditVerifyArgs) -> Result<ExitCode, CliError> {
    let (ok, entries, problems): (bool, i64, Vec<(i64, String)>) = if args.remote {
        let client = Client::new(&args.server)?;
        let report: certkeeper_server::api::AuditVerification =
            client.get("/api/v1/audit/verify").await?;
        (
            report.ok,
            report.entries,
            report
                .problems
                .into_iter()
                .map(|p| (p.seq, p.problem))
                .collect(),
        )
    } else {
        let (checked, data_dir) = load_config(&args.data)?;
        if checked.config.database_url.is_none() && !data_dir.join("certkeeper.db").exists() {
            return Err(CliError::Usage(format!(
                "no database in {}; pass --data-dir or --database-url",
                data_dir.display()
            )));
        }
        let store = open_store(&checked, &data_dir, false).await?;
        let report = store.verify_audit().await.map_err(ServerError::from)?;
        store.close().await;
        (
            report.ok(),
            report.entries,
            report
                .problems
                .into_iter()
                .map(|p| (p.seq, p.problem))
                .collect(),
        )
    };
    if args.server.output == OutputFormat::Json {
        print_json(
            &serde_json::json!({"ok": ok, "entries": entries, "problems": problems.iter().map(|(seq, problem)| serde_json::json!({"seq": seq, "problem": problem})).collect::<Vec<_>>()}),
        )?;
    } else if ok {
        println!("audit chain intact: {entries} entries verified");
    } else {
        println!("audit chain BROKEN ({entries} entries read):");
        print_table(
            &["entry", "problem"],
            problems
                .iter()
                .map(|(seq, p)| vec![seq.to_string(), p.clone()])
                .collect(),
        );
    }
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::AuditBroken)
    }
}
