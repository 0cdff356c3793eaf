//! Commands that talk to a running server through the REST API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use certkeeper_pki::KeyAlgorithm;
use certkeeper_server::api::{
    ApplyResponse, AuditEntryView, CertificatePage, CertificateView, EabKeyView, ImportResponse,
    ManagedView, TokenView,
};
use certkeeper_server::auth::Role;
use certkeeper_server::files::{PRIVATE, PUBLIC, write_atomic};
use certkeeper_server::issuance::{IssueRequest, IssueResponse};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ServerArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output::{OutputFormat, print_json, print_table};

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {text:?} must be written name=value"))
}

/// `certkeeper issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Profile: tls-server, tls-client, mtls or a custom one.
    #[arg(long, default_value = "tls-server")]
    profile: String,
    /// CSR file (PEM). Without it the server generates the key.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Key algorithm for server-side generation.
    #[arg(long, conflicts_with = "csr")]
    key_algorithm: Option<KeyAlgorithm>,
    /// Subject alternative name (repeatable): DNS name, IP, URI or email.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Common name (becomes a SAN too).
    #[arg(long)]
    cn: Option<String>,
    /// Lifetime, such as 30d.
    #[arg(long)]
    lifetime: Option<String>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Label name=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Write the certificate here (PEM).
    #[arg(long)]
    out_cert: Option<PathBuf>,
    /// Write certificate + chain here (PEM).
    #[arg(long)]
    out_fullchain: Option<PathBuf>,
    /// Write the generated private key here (PEM, mode 0600).
    #[arg(long, conflicts_with = "csr")]
    out_key: Option<PathBuf>,
    /// Write a PKCS#12 bundle here; the password is read from CERTKEEPER_PKCS12_PASSWORD.
    #[arg(long, conflicts_with = "csr")]
    out_pkcs12: Option<PathBuf>,
}

/// Issues a certificate.
pub async fn issue(args: IssueArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let csr = match &args.csr {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?),
        None => None,
    };
    let pkcs12_password = match &args.out_pkcs12 {
        Some(_) => Some(std::env::var("CERTKEEPER_PKCS12_PASSWORD").map_err(|_| {
            CliError::Usage("--out-pkcs12 needs the password in the CERTKEEPER_PKCS12_PASSWORD environment variable".into())
        })?),
        None => None,
    };
    if csr.is_none()
        && args.out_key.is_none()
        && args.out_pkcs12.is_none()
        && args.server.output == OutputFormat::Table
    {
        return Err(CliError::Usage(
            "the server will generate the key: pass --out-key (or --out-pkcs12) so it is saved, or --output json".into(),
        ));
    }
    let request = IssueRequest {
        profile: args.profile,
        tenant: args.tenant,
        csr,
        key_algorithm: args.key_algorithm,
        pkcs12_password,
        common_name: args.cn,
        sans: args.sans,
        lifetime: args.lifetime,
        labels: args.labels.into_iter().collect(),
    };
    let response: IssueResponse = client.post("/api/v1/certificates", &request).await?;
    let write = |path: &Option<PathBuf>, contents: &[u8], mode: u32| -> Result<(), CliError> {
        if let Some(path) = path {
            write_atomic(path, contents, mode)?;
        }
        Ok(())
    };
    // The key first: it exists nowhere else.
    if let Some(key) = &response.private_key_pem {
        write(&args.out_key, key.as_bytes(), PRIVATE)?;
    }
    if let Some(p12) = &response.pkcs12_base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p12)
            .map_err(|e| CliError::Http(format!("bad PKCS#12 from the server: {e}")))?;
        write(&args.out_pkcs12, &bytes, PRIVATE)?;
    }
    write(&args.out_cert, response.certificate_pem.as_bytes(), PUBLIC)?;
    write(
        &args.out_fullchain,
        response.full_chain_pem.as_bytes(),
        PUBLIC,
    )?;
    match args.server.output {
        OutputFormat::Json => print_json(&response)?,
        OutputFormat::Table => {
            print_table(
                &["serial", "profile", "tenant", "names", "not after"],
                vec![vec![
                    response.serial.clone(),
                    response.profile.clone(),
                    response.tenant.clone(),
                    response.sans.join(", "),
                    response.not_after.clone(),
                ]],
            );
            if args.out_cert.is_none() && args.out_fullchain.is_none() {
                print!("{}", response.certificate_pem);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only certificates expiring within this duration, such as 30d.
    #[arg(long)]
    expiring_within: Option<String>,
    /// Name (CN or SAN) contains this text.
    #[arg(long)]
    name: Option<String>,
    /// active, expired or revoked.
    #[arg(long)]
    status: Option<String>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Label name=value.
    #[arg(long)]
    label: Option<String>,
    /// not_after, -not_after, created, -created.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue from this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Fetch every page.
    #[arg(long)]
    all: bool,
}

pub(crate) fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Searches the inventory.
pub async fn list(args: ListArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let mut items = Vec::new();
    let mut cursor = args.cursor.clone();
    let next = loop {
        let path = format!(
            "/api/v1/certificates{}",
            query_string(&[
                ("expiring_within", args.expiring_within.clone()),
                ("name", args.name.clone()),
                ("status", args.status.clone()),
                ("tenant", args.tenant.clone()),
                ("label", args.label.clone()),
                ("sort", args.sort.clone()),
                ("limit", Some(args.limit.to_string())),
                ("cursor", cursor.clone()),
            ])
        );
        let page: CertificatePage = client.get(&path).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) if args.all => cursor = Some(next),
            other => break other,
        }
    };
    match args.server.output {
        OutputFormat::Json => print_json(&CertificatePage {
            items,
            next_cursor: next,
        })?,
        OutputFormat::Table => {
            print_table(
                &[
                    "serial",
                    "names",
                    "not after",
                    "status",
                    "tenant",
                    "profile",
                    "source",
                ],
                items
                    .iter()
                    .map(|c| {
                        vec![
                            c.serial.clone(),
                            if c.sans.is_empty() {
                                c.subject.clone()
                            } else {
                                c.sans.join(", ")
                            },
                            c.not_after.clone(),
                            c.status.clone(),
                            c.tenant.clone(),
                            c.profile.clone().unwrap_or_default(),
                            c.source.clone(),
                        ]
                    })
                    .collect(),
            );
            if let Some(next) = next {
                println!("more: --cursor {next}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Serial number, hex.
    serial: String,
}

/// Shows one certificate.
pub async fn show(args: ShowArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let view: CertificateView = client
        .get(&format!("/api/v1/certificates/{}", urlencode(&args.serial)))
        .await?;
    match args.server.output {
        OutputFormat::Json => print_json(&view)?,
        OutputFormat::Table => {
            let labels: Vec<String> = view
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            print_table(
                &["field", "value"],
                vec![
                    vec!["serial".into(), view.serial.clone()],
                    vec!["subject".into(), view.subject.clone()],
                    vec!["issuer".into(), view.issuer.clone()],
                    vec!["names".into(), view.sans.join(", ")],
                    vec!["not before".into(), view.not_before.clone()],
                    vec!["not after".into(), view.not_after.clone()],
                    vec!["status".into(), view.status.clone()],
                    vec!["key".into(), view.key_algorithm.clone()],
                    vec!["SPKI SHA-256".into(), view.spki_sha256.clone()],
                    vec!["SHA-256".into(), view.fingerprint_sha256.clone()],
                    vec!["profile".into(), view.profile.clone().unwrap_or_default()],
                    vec!["tenant".into(), view.tenant.clone()],
                    vec!["requester".into(), view.requester.clone()],
                    vec!["source".into(), view.source.clone()],
                    vec!["labels".into(), labels.join(", ")],
                ],
            );
            print!("{}", view.certificate_pem.unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Files or directories (searched recursively) with PEM or DER certificates.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Tenant that owns the imported certificates.
    #[arg(long)]
    tenant: Option<String>,
    /// Label name=value for every imported certificate (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

/// Certificates sent per request.
const IMPORT_BATCH: usize = 200;

/// Reads one file into PEM certificate texts, or says why it cannot.
fn read_certificates(path: &Path) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let ders = certkeeper_pki::pem_to_der_certificates(&bytes).map_err(|e| e.to_string())?;
    let mut pems = Vec::new();
    for der in ders {
        certkeeper_pki::parse_certificate(&der).map_err(|e| e.to_string())?;
        pems.push(certkeeper_pki::to_pem("CERTIFICATE", &der));
    }
    Ok(pems)
}

/// Imports certificates with a progress bar; unreadable files are listed at the end.
pub async fn import(args: ImportArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).follow_links(true) {
                match entry {
                    Ok(entry) if entry.file_type().is_file() => files.push(entry.into_path()),
                    Ok(_) => {}
                    Err(error) => files.push(
                        error
                            .path()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| path.clone()),
                    ),
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    let progress = ProgressBar::new(files.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.server.output == OutputFormat::Json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let mut unreadable: Vec<(String, String)> = Vec::new();
    let (mut imported, mut duplicates) = (0usize, 0usize);
    let mut batch: Vec<String> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let mut pending = match read_certificates(file) {
            Ok(pems) => pems,
            Err(error) => {
                unreadable.push((file.display().to_string(), error));
                Vec::new()
            }
        };
        progress.set_position(index as u64 + 1);
        // Send full batches (a large bundle spans several), and the rest after the last file.
        loop {
            let take = pending.len().min(IMPORT_BATCH - batch.len());
            sources.extend(std::iter::repeat_n(file.display().to_string(), take));
            batch.extend(pending.drain(..take));
            let last_file = index + 1 == files.len() && pending.is_empty();
            if batch.is_empty() || (batch.len() < IMPORT_BATCH && !last_file) {
                break;
            }
            let body =
                serde_json::json!({"tenant": args.tenant, "labels": labels, "certificates": batch});
            let response: ImportResponse =
                client.post("/api/v1/certificates/import", &body).await?;
            imported += response.imported;
            duplicates += response.duplicates;
            for error in response.errors {
                let source = sources.get(error.index).cloned().unwrap_or_default();
                unreadable.push((source, error.error));
            }
            progress.set_message(format!("{imported} imported, {duplicates} duplicates"));
            batch.clear();
            sources.clear();
        }
    }
    progress.finish_and_clear();
    match args.server.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "files": files.len(),
            "imported": imported,
            "duplicates": duplicates,
            "unreadable": unreadable.iter().map(|(f, e)| serde_json::json!({"file": f, "error": e})).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Table => {
            println!(
                "{} files: {imported} certificates imported, {duplicates} already in the inventory, {} unreadable",
                files.len(),
                unreadable.len()
            );
            if !unreadable.is_empty() {
                print_table(
                    &["unreadable file", "why"],
                    unreadable
                        .iter()
                        .map(|(f, e)| vec![f.clone(), e.clone()])
                        .collect(),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Human name.
        #[arg(long)]
        name: String,
        /// admin, issuer or auditor.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Tenant scope (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime such as 90d (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// Token id.
        id: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("role {text:?} is not one of admin, issuer, auditor"))
}

fn token_rows(tokens: &[TokenView]) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.role.clone(),
                t.tenant.clone().unwrap_or_else(|| "*".into()),
                t.created_at.clone(),
                t.expires_at.clone().unwrap_or_default(),
                t.revoked_at.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

/// Runs a `token` subcommand.
pub async fn token(command: TokenCommand) -> Result<ExitCode, CliError> {
    match command {
        TokenCommand::Create {
            server,
            name,
            role,
            tenant,
            expires_in,
        } => {
            let client = Client::new(&server)?;
            let body = serde_json::json!({"name": name, "role": role, "tenant": tenant, "expires_in": expires_in});
            let view: TokenView = client.post("/api/v1/tokens", &body).await?;
            match server.output {
                OutputFormat::Json => print_json(&view)?,
                OutputFormat::Table => {
                    print_table(
                        &[
                            "id", "name", "role", "tenant", "created", "expires", "revoked",
                        ],
                        token_rows(std::slice::from_ref(&view)),
                    );
                    println!("token (shown once): {}", view.token.unwrap_or_default());
                }
            }
        }
        TokenCommand::List { server } => {
            let client = Client::new(&server)?;
            let tokens: Vec<TokenView> = client.get("/api/v1/tokens").await?;
            match server.output {
                OutputFormat::Json => print_json(&tokens)?,
                OutputFormat::Table => print_table(
                    &[
                        "id", "name", "role", "tenant", "created", "expires", "revoked",
                    ],
                    token_rows(&tokens),
                ),
            }
        }
        TokenCommand::Revoke { server, id } => {
            let client = Client::new(&server)?;
            client
                .delete(&format!("/api/v1/tokens/{}", urlencode(&id)))
                .await?;
            match server.output {
                OutputFormat::Json => print_json(&serde_json::json!({"revoked": id}))?,
                OutputFormat::Table => println!("token {id} revoked"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// TOML file with `[[certificate]]` tables.
    file: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `certkeeper apply`.
pub async fn apply(args: ApplyArgs) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let parsed: toml::Value = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.file.display())))?;
    let certificates = parsed
        .get("certificate")
        .and_then(toml::Value::as_array)
        .cloned()
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: no [[certificate]] tables; each declares one managed certificate",
                args.file.display()
            ))
        })?;
    let certificates: Vec<serde_json::Value> = certificates
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let client = Client::new(&args.server)?;
    let body = serde_json::json!({"certificates": certificates, "dry_run": args.dry_run});
    let response: ApplyResponse = client
        .post("/api/v1/managed-certificates/apply", &body)
        .await?;
    match args.server.output {
        OutputFormat::Json => print_json(&response)?,
        OutputFormat::Table => {
            let rows = response
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["change"].as_str().unwrap_or_default().to_string(),
                        c["fields"]
                            .as_array()
                            .map(|f| {
                                f.iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["name", "change", "fields"], rows);
            if !response.applied {
                println!("dry run: nothing was changed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// One managed certificate (with its attempts); default: all.
    name: Option<String>,
}

fn managed_rows(list: &[ManagedView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|m| {
            let targets = m
                .targets
                .iter()
                .map(|t| {
                    format!(
                        "{} {}: {}",
                        t["kind"].as_str().unwrap_or_default(),
                        t["location"].as_str().unwrap_or_default(),
                        t["error"]
                            .as_str()
                            .map(|e| format!("failed ({e})"))
                            .or_else(|| t["deployed_serial"].as_str().map(str::to_string))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                m.name.clone(),
                m.state.clone(),
                m.current_serial.clone().unwrap_or_default(),
                m.not_after.clone().unwrap_or_default(),
                format!("{} ({})", m.next_action_at, m.next_action_reason),
                m.consecutive_failures.to_string(),
                targets,
            ]
        })
        .collect()
}

/// Runs `certkeeper status`.
pub async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let headers = [
        "name",
        "state",
        "serial",
        "expires",
        "next action",
        "failures",
        "targets",
    ];
    match &args.name {
        None => {
            let list: Vec<ManagedView> = client.get("/api/v1/managed-certificates").await?;
            match args.server.output {
                OutputFormat::Json => print_json(&list)?,
                OutputFormat::Table => print_table(&headers, managed_rows(&list)),
            }
        }
        Some(name) => {
            let view: ManagedView = client
                .get(&format!("/api/v1/managed-certificates/{}", urlencode(name)))
                .await?;
            match args.server.output {
                OutputFormat::Json => print_json(&view)?,
                OutputFormat::Table => {
                    let attempts = view
                        .attempts
                        .iter()
                        .map(|a| {
                            vec![
                                a.started_at.clone(),
                                a.outcome.clone(),
                                format!("{} ms", a.duration_ms),
                                a.serial.clone().unwrap_or_default(),
                                a.error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print_table(&headers, managed_rows(std::slice::from_ref(&view)));
                    print_table(&["attempt", "outcome", "took", "serial", "error"], attempts);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The managed certificate.
    name: String,
}

/// Runs `certkeeper renew`.
pub async fn renew(args: RenewArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let _: serde_json::Value = client
        .post(
            &format!(
                "/api/v1/managed-certificates/{}/renew",
                urlencode(&args.name)
            ),
            &serde_json::json!({}),
        )
        .await?;
    match args.server.output {
        OutputFormat::Json => print_json(&serde_json::json!({"renewal_requested": args.name}))?,
        OutputFormat::Table => println!(
            "{}: renewal requested; see `certkeeper status {}`",
            args.name, args.name
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper acme eab ...`.
#[derive(Debug, Subcommand)]
pub enum EabCommand {
    /// Create a key; the HMAC key is printed once. Give both to the ACME client
    /// (certbot `--eab-kid`/`--eab-hmac-key`, lego `--eab --kid --hmac`).
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Tenant whose directory (/acme/TENANT/directory) accepts the key.
        #[arg(long)]
        tenant: String,
        /// How long the key can bind an account, such as 7d (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List keys (without their secrets).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn eab_rows(keys: &[EabKeyView]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.tenant.clone(),
                k.directory_path.clone(),
                k.created_at.clone(),
                k.expires_at.clone().unwrap_or_default(),
                k.account.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

/// Runs an `acme eab` subcommand.
pub async fn eab(command: EabCommand) -> Result<ExitCode, CliError> {
    let headers = [
        "kid",
        "tenant",
        "directory",
        "created",
        "expires",
        "account",
    ];
    match command {
        EabCommand::Create {
            server,
            tenant,
            expires_in,
        } => {
            let client = Client::new(&server)?;
            let body = serde_json::json!({"tenant": tenant, "expires_in": expires_in});
            let view: EabKeyView = client.post("/api/v1/acme/eab-keys", &body).await?;
            match server.output {
                OutputFormat::Json => print_json(&view)?,
                OutputFormat::Table => {
                    print_table(&headers, eab_rows(std::slice::from_ref(&view)));
                    println!(
                        "hmac key (shown once): {}",
                        view.hmac_key.unwrap_or_default()
                    );
                }
            }
        }
        EabCommand::List { server } => {
            let client = Client::new(&server)?;
            let keys: Vec<EabKeyView> = client.get("/api/v1/acme/eab-keys").await?;
            match server.output {
                OutputFormat::Json => print_json(&keys)?,
                OutputFormat::Table => print_table(&headers, eab_rows(&keys)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Entries after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// How many.
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

/// Lists audit entries.
pub async fn audit_list(args: AuditListArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let entries: Vec<AuditEntryView> = client
        .get(&format!(
            "/api/v1/audit?after={}&limit={}",
            args.after, args.limit
        ))
        .await?;
    match args.server.output {
        OutputFormat::Json => print_json(&entries)?,
        OutputFormat::Table => print_table(
            &["seq", "time", "actor", "action", "object", "outcome"],
            entries
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        e.time.clone(),
                        e.actor.clone(),
                        e.action.clone(),
                        e.object.clone(),
                        e.outcome.clone(),
                    ]
                })
                .collect(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `certkeeper revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Serial number (hex) of the certificate to revoke.
    #[arg(required_unless_present_any = ["cert", "key_of", "spki"], conflicts_with_all = ["cert", "key_of", "spki"])]
    serial: Option<String>,
    /// Revoke the certificate in this PEM file.
    #[arg(long, conflicts_with_all = ["key_of", "spki"])]
    cert: Option<PathBuf>,
    /// Revoke every unexpired certificate with the same key as this serial (key compromise).
    #[arg(long, conflicts_with = "spki")]
    key_of: Option<String>,
    /// Revoke every unexpired certificate with this SPKI SHA-256 (key compromise).
    #[arg(long)]
    spki: Option<String>,
    /// unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn.
    #[arg(long)]
    reason: Option<String>,
    /// When the key was compromised, RFC 3339 (such as 2026-11-27T10:00:00Z).
    #[arg(long)]
    invalidity_date: Option<String>,
}

/// Revokes certificates.
pub async fn revoke(args: RevokeArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.server)?;
    let certificate_pem = match &args.cert {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?),
        None => None,
    };
    let body = serde_json::json!({
        "serial": args.serial,
        "certificate_pem": certificate_pem,
        "key_of_serial": args.key_of,
        "spki_sha256": args.spki,
        "reason": args.reason,
        "invalidity_date": args.invalidity_date,
    });
    let response: certkeeper_server::revocation::RevokeResponse =
        client.post("/api/v1/revocations", &body).await?;
    match args.server.output {
        OutputFormat::Json => print_json(&response)?,
        OutputFormat::Table => print_table(
            &[
                "serial",
                "reason",
                "revoked at",
                "invalidity date",
                "changed",
            ],
            response
                .revoked
                .iter()
                .map(|r| {
                    vec![
                        r.serial.clone(),
                        r.reason.clone(),
                        r.revoked_at.clone(),
                        r.invalidity_date.clone().unwrap_or_default(),
                        if r.changed {
                            "yes".into()
                        } else {
                            "no (already revoked)".into()
                        },
                    ]
                })
                .collect(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
