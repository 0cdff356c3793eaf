//! `certkeeper`: the server and the command line that talks to it.
#![forbid(unsafe_code)]

mod agent;
mod client;
mod error;
mod fleet;
mod local;
mod observe;
mod output;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;
use crate::output::OutputFormat;

/// Certificate lifecycle automation: CA, policy, inventory, audit.
#[derive(Debug, Parser)]
#[command(name = "certkeeper", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a local command finds its data.
#[derive(Debug, Clone, Args)]
struct DataArgs {
    /// Data directory (database, CA, TLS files) [default: ./certkeeper-data].
    #[arg(long, env = "CERTKEEPER_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, env = "CERTKEEPER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Database URL (sqlite://... or postgres://...); overrides the configuration.
    #[arg(long, env = "CERTKEEPER_DATABASE_URL", global = true)]
    database_url: Option<String>,
}

/// How a client command reaches the server.
#[derive(Clone, Args)]
struct ServerArgs {
    /// Server URL.
    #[arg(
        long,
        env = "CERTKEEPER_SERVER",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    server: String,
    /// API token.
    #[arg(long, env = "CERTKEEPER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for the server; default ./certkeeper-data/ca/root.crt when present.
    #[arg(long, env = "CERTKEEPER_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    output: OutputFormat,
}

impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("output", &self.output)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates the data directory and CA on first start).
    Serve(local::ServeArgs),
    /// Create the CA explicitly: algorithms, names, lifetimes, import, offline root.
    Init(local::InitArgs),
    /// CA operations for the offline-root flow.
    #[command(subcommand)]
    Ca(local::CaCommand),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(local::ConfigCommand),
    /// Issue a certificate through the API.
    Issue(remote::IssueArgs),
    /// Search the inventory.
    #[command(alias = "search")]
    List(remote::ListArgs),
    /// Show one certificate.
    Show(remote::ShowArgs),
    /// Revoke certificates: by serial, by certificate file, or every certificate of a key.
    Revoke(remote::RevokeArgs),
    /// Load existing certificates (PEM or DER files, or directory trees) into the inventory.
    Import(remote::ImportArgs),
    /// API tokens.
    #[command(subcommand)]
    Token(remote::TokenCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The ACME server: external account binding keys.
    #[command(subcommand)]
    Acme(AcmeCommand),
    /// Declare managed certificates from a TOML file ([[certificate]] tables); idempotent.
    Apply(remote::ApplyArgs),
    /// Managed certificates: state, serial, next renewal and why, targets, last attempts.
    Status(remote::StatusArgs),
    /// Renew a managed certificate now.
    Renew(remote::RenewArgs),
    /// Host agents: run one, bootstrap tokens, list, revoke.
    #[command(subcommand)]
    Agent(fleet::AgentCommand),
    /// Rollouts of new certificates to agents: status, pause, resume, abort.
    #[command(subcommand)]
    Rollout(fleet::RolloutCommand),
    /// Key compromise: revoke, new key, new certificate, urgent rollout to every agent.
    Compromise(fleet::CompromiseArgs),
    /// Probe TLS endpoints (host:port, host, CIDR), report what is wrong with what they
    /// serve, and record it in the inventory.
    Scan(observe::ScanArgs),
    /// Built-in alerts: list firing ones, silence them for a maintenance window.
    #[command(subcommand)]
    Alert(observe::AlertCommand),
}

#[derive(Debug, Subcommand)]
enum AcmeCommand {
    /// External account binding keys (for tenants whose directory requires EAB).
    #[command(subcommand)]
    Eab(remote::EabCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the audit hash chain (reads the database directly; --remote asks the server).
    Verify(local::AuditVerifyArgs),
    /// List audit entries through the API.
    List(remote::AuditListArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CERTKEEPER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            error.print();
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve(args) => local::serve(args).await,
        Command::Init(args) => local::init(args).await,
        Command::Ca(command) => local::ca(command).await,
        Command::Config(command) => local::config(command),
        Command::Issue(args) => remote::issue(args).await,
        Command::List(args) => remote::list(args).await,
        Command::Show(args) => remote::show(args).await,
        Command::Import(args) => remote::import(args).await,
        Command::Revoke(args) => remote::revoke(args).await,
        Command::Token(command) => remote::token(command).await,
        Command::Audit(AuditCommand::Verify(args)) => local::audit_verify(args).await,
        Command::Audit(AuditCommand::List(args)) => remote::audit_list(args).await,
        Command::Acme(AcmeCommand::Eab(command)) => remote::eab(command).await,
        Command::Apply(args) => remote::apply(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Renew(args) => remote::renew(args).await,
        Command::Agent(command) => fleet::agent(command).await,
        Command::Rollout(command) => fleet::rollout(command).await,
        Command::Compromise(args) => fleet::compromise(args).await,
        Command::Scan(args) => observe::scan(args).await,
        Command::Alert(command) => observe::alert(command).await,
    }
}
