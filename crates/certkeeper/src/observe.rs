//! `certkeeper scan` (probe TLS endpoints, report findings, record them) and
//! `certkeeper alert` (firing alerts, silences).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use certkeeper_server::observe_api::{
    AlertView, ScanEndpointPage, ScanEndpointView, ScanRecorded, SilenceView,
};
use certkeeper_server::scan::{
    RECORD_BATCH, ScanReport, ScanSettings, Scanner, expand_targets, scan_all, worth_recording,
};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use certkeeper_server::issuance::rfc3339;

use crate::ServerArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output::{OutputFormat, print_json, print_table};
use crate::remote::query_string;

/// `certkeeper scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Targets: host:port, host (on each --ports), [v6]:port, or CIDR ranges such as
    /// 10.0.0.0/24.
    targets: Vec<String>,
    /// Read more targets from a file, one per line (`#` starts a comment).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Ports for targets without one, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "443")]
    ports: Vec<u16>,
    /// Endpoints probed at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connection and handshake timeout, such as 5s.
    #[arg(long, default_value = "5s")]
    timeout: String,
    /// Trusted roots (PEM) for judging endpoints; repeatable. Always added: the system's
    /// bundle, and the server's root unless --no-record.
    #[arg(long = "trust")]
    trust: Vec<PathBuf>,
    /// Intermediates you know (PEM): a chain that verifies only with them is reported as
    /// incomplete rather than untrusted. The server's chain is added unless --no-record.
    #[arg(long)]
    intermediates: Option<PathBuf>,
    /// Report certificates expiring within this, such as 30d.
    #[arg(long, default_value = "30d")]
    warn_within: String,
    /// Do not check revocation (no CRL downloads, no OCSP requests).
    #[arg(long)]
    no_revocation: bool,
    /// Only print; do not record the results on the server.
    #[arg(long)]
    no_record: bool,
    /// Tenant that owns the recorded results (default: the token's, or `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// Exit with status 1 when any endpoint does not serve a valid certificate.
    #[arg(long)]
    check: bool,
    /// Instead of scanning, list what the server recorded (every page).
    #[arg(long, conflicts_with_all = ["targets", "file"])]
    recorded: bool,
    /// With --recorded: only endpoints that do not serve a valid certificate.
    #[arg(long, requires = "recorded")]
    invalid: bool,
    /// With --recorded: only endpoints with this finding, such as revoked.
    #[arg(long, requires = "recorded")]
    finding: Option<String>,
}

#[derive(Serialize)]
struct ReportLine<'a> {
    endpoint: &'a str,
    server_name: &'a str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: &'a Option<String>,
    findings: &'a [String],
    details: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<String>,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::file(path, e))
}

/// Runs `certkeeper scan`.
pub async fn scan(args: ScanArgs) -> Result<ExitCode, CliError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if args.recorded {
        return list_recorded(&args).await;
    }
    let mut specs = args.targets.clone();
    if let Some(path) = &args.file {
        let text = String::from_utf8(read_file(path)?)
            .map_err(|_| CliError::file(path, "not UTF-8 text"))?;
        specs.extend(
            text.lines()
                .map(|line| line.split('#').next().unwrap_or("").trim().to_string())
                .filter(|line| !line.is_empty()),
        );
    }
    if specs.is_empty() {
        return Err(CliError::Usage(
            "give targets (host:port, host, CIDR) or --file; see `certkeeper scan --help`".into(),
        ));
    }
    let targets = expand_targets(&specs, &args.ports).map_err(CliError::Usage)?;
    let timeout = certkeeper_server::config::parse_duration(&args.timeout)
        .map_err(|e| CliError::Usage(format!("--timeout: {e}")))?;
    let warn_within = certkeeper_server::config::parse_duration(&args.warn_within)
        .map_err(|e| CliError::Usage(format!("--warn-within: {e}")))?;
    if args.concurrency == 0 || timeout == 0 {
        return Err(CliError::Usage(
            "--concurrency and --timeout must be above zero".into(),
        ));
    }

    let client = if args.no_record {
        None
    } else {
        Some(Client::new(&args.server)?)
    };
    let mut roots_pem = certkeeper_server::scan::system_roots_pem();
    for path in &args.trust {
        roots_pem.push(b'\n');
        roots_pem.extend(read_file(path)?);
    }
    let mut intermediates_pem = match &args.intermediates {
        Some(path) => read_file(path)?,
        None => Vec::new(),
    };
    if let Some(client) = &client {
        let root = client.get_bytes("/ca/root.crt").await?;
        roots_pem.push(b'\n');
        roots_pem.extend(certkeeper_pki::to_pem("CERTIFICATE", &root).into_bytes());
        intermediates_pem.push(b'\n');
        intermediates_pem.extend(client.get_bytes("/ca/chain.pem").await?);
    }
    let scanner = Scanner::new(ScanSettings {
        roots_pem,
        known_intermediates_pem: intermediates_pem,
        warn_within_seconds: i64::try_from(warn_within).unwrap_or(i64::MAX),
        timeout: Duration::from_secs(timeout),
        check_revocation: !args.no_revocation,
    })
    .map_err(CliError::Usage)?;

    let progress = ProgressBar::new(targets.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} endpoints {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.server.output == OutputFormat::Json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let reports = scan_all(
        Arc::new(scanner),
        targets.clone(),
        args.concurrency,
        |report| {
            progress.inc(1);
            if !report.valid() {
                progress.set_message(format!("last problem: {}", report.endpoint));
            }
        },
    )
    .await;
    progress.finish_and_clear();

    let mut recorded = ScanRecorded {
        endpoints: 0,
        discovered: 0,
    };
    if let Some(client) = &client {
        // Named endpoints, and swept addresses that answered: a CIDR sweep would otherwise
        // record every silent address.
        let worth: Vec<&ScanReport> = targets
            .iter()
            .zip(&reports)
            .filter(|(target, report)| worth_recording(target, report))
            .map(|(_, report)| report)
            .collect();
        for batch in worth.chunks(RECORD_BATCH) {
            let answer: ScanRecorded = client
                .post(
                    "/api/v1/scans",
                    &serde_json::json!({ "tenant": args.tenant, "results": batch }),
                )
                .await?;
            recorded.endpoints += answer.endpoints;
            recorded.discovered += answer.discovered;
        }
    }

    let invalid = reports.iter().filter(|r| !r.valid()).count();
    match args.server.output {
        OutputFormat::Json => print_json(
            &reports
                .iter()
                .map(|r| ReportLine {
                    endpoint: &r.endpoint,
                    server_name: &r.server_name,
                    valid: r.valid(),
                    error: &r.error,
                    findings: &r.findings,
                    details: &r.details,
                    serial: &r.serial,
                    subject: &r.subject,
                    not_after: r.not_after.map(rfc3339),
                })
                .collect::<Vec<_>>(),
        )?,
        OutputFormat::Table => {
            print_table(
                &[
                    "endpoint",
                    "valid",
                    "serial",
                    "not after",
                    "findings / error",
                ],
                reports
                    .iter()
                    .map(|r| {
                        vec![
                            r.endpoint.clone(),
                            if r.valid() { "yes" } else { "NO" }.into(),
                            r.serial.clone().unwrap_or_default(),
                            r.not_after.map(rfc3339).unwrap_or_default(),
                            match &r.error {
                                Some(error) => error.clone(),
                                None => r.details.join("\n"),
                            },
                        ]
                    })
                    .collect(),
            );
            eprintln!(
                "{} endpoints scanned, {} not serving a valid certificate{}",
                reports.len(),
                invalid,
                if client.is_some() {
                    format!(
                        "; recorded {} (new in the inventory: {})",
                        recorded.endpoints, recorded.discovered
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if args.check && invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn list_recorded(args: &ScanArgs) -> Result<ExitCode, CliError> {
    let server = &args.server;
    let client = Client::new(server)?;
    let mut endpoints: Vec<ScanEndpointView> = Vec::new();
    let mut cursor = None;
    loop {
        let path = format!(
            "/api/v1/scans{}",
            query_string(&[
                ("valid", args.invalid.then(|| "false".to_string())),
                ("finding", args.finding.clone()),
                ("limit", Some("5000".into())),
                ("cursor", cursor.take()),
            ])
        );
        let page: ScanEndpointPage = client.get(&path).await?;
        endpoints.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    match server.output {
        OutputFormat::Json => print_json(&endpoints)?,
        OutputFormat::Table => print_table(
            &[
                "endpoint",
                "valid",
                "serial",
                "not after",
                "findings",
                "scanned",
            ],
            endpoints
                .into_iter()
                .map(|e| {
                    vec![
                        e.endpoint,
                        if e.valid { "yes" } else { "NO" }.into(),
                        e.serial.unwrap_or_default(),
                        e.not_after.unwrap_or_default(),
                        e.error.unwrap_or_else(|| e.findings.join(", ")),
                        e.scanned_at,
                    ]
                })
                .collect(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper alert ...`.
#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Alerts firing now (silenced ones marked).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Silences: hold matching alerts back for a maintenance window.
    #[command(subcommand)]
    Silence(SilenceCommand),
}

/// `certkeeper alert silence ...`.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence alerts whose labels match every --match.
    Add {
        #[command(flatten)]
        server: ServerArgs,
        /// label=value, such as owner=web or rule=RenewalFailing; repeatable.
        #[arg(long = "match", value_parser = parse_matcher, required = true)]
        matchers: Vec<(String, String)>,
        /// How long, such as 2h.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Start (RFC 3339), for a window ahead; default now.
        #[arg(long)]
        starts_at: Option<String>,
        /// Why (a ticket, a maintenance window).
        #[arg(long)]
        comment: String,
    },
    /// Silences in force or ahead.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        server: ServerArgs,
        /// Silence id.
        id: String,
    },
}

fn parse_matcher(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{text:?}: write label=value, such as owner=web")),
    }
}

fn print_silences(output: OutputFormat, silences: &[SilenceView]) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => print_json(&silences),
        OutputFormat::Table => {
            print_table(
                &["id", "state", "matchers", "starts", "ends", "comment", "by"],
                silences
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.state.clone(),
                            s.matchers
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            s.starts_at.clone(),
                            s.ends_at.clone(),
                            s.comment.clone(),
                            s.created_by.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
    }
}

/// Runs `certkeeper alert ...`.
pub async fn alert(command: AlertCommand) -> Result<ExitCode, CliError> {
    match command {
        AlertCommand::List { server } => {
            let alerts: Vec<AlertView> = Client::new(&server)?.get("/api/v1/alerts").await?;
            match server.output {
                OutputFormat::Json => print_json(&alerts)?,
                OutputFormat::Table => print_table(
                    &[
                        "severity", "rule", "subject", "summary", "labels", "since", "silenced",
                    ],
                    alerts
                        .into_iter()
                        .map(|a| {
                            vec![
                                a.severity,
                                a.rule,
                                a.subject,
                                a.summary,
                                a.labels
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(" "),
                                a.since,
                                a.silenced_by.unwrap_or_default(),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AlertCommand::Silence(SilenceCommand::Add {
            server,
            matchers,
            duration,
            starts_at,
            comment,
        }) => {
            let matchers: BTreeMap<String, String> = matchers.into_iter().collect();
            let silence: SilenceView = Client::new(&server)?
                .post(
                    "/api/v1/alerts/silences",
                    &serde_json::json!({
                        "matchers": matchers, "duration": duration,
                        "starts_at": starts_at, "comment": comment,
                    }),
                )
                .await?;
            print_silences(server.output, std::slice::from_ref(&silence))?;
        }
        AlertCommand::Silence(SilenceCommand::List { server }) => {
            let silences: Vec<SilenceView> =
                Client::new(&server)?.get("/api/v1/alerts/silences").await?;
            print_silences(server.output, &silences)?;
        }
        AlertCommand::Silence(SilenceCommand::Expire { server, id }) => {
            let client = Client::new(&server)?;
            let silence: SilenceView = client
                .send_delete(&format!("/api/v1/alerts/silences/{id}"))
                .await?;
            print_silences(server.output, std::slice::from_ref(&silence))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
