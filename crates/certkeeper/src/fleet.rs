//! Fleet commands: bootstrap tokens, agents, rollouts and the compromise response.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use certkeeper_server::agents::BootstrapTokenCreated;
use certkeeper_server::fleet_api::{
    AgentView, CompromiseResponse, RolloutView, TrustAddRequest, TrustStatus,
};
use clap::Subcommand;

use crate::client::Client;
use crate::error::CliError;
use crate::output::{OutputFormat, print_json, print_table};
use crate::remote::urlencode;
use crate::{ServerArgs, agent};

/// `certkeeper agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the host agent (enrolls on first start with a bootstrap token).
    Run(agent::RunArgs),
    /// One-time bootstrap tokens for enrolling agents.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled agents, what they deploy and what each target serves.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke an agent: it is refused from now on and its identity certificate is revoked.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// Agent name or id.
        agent: String,
    },
}

/// `certkeeper agent token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (single use, short-lived, tenant-scoped); printed once.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Tenant the agent joins [default: default].
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, such as 15m [default: 1h].
        #[arg(long)]
        ttl: Option<String>,
    },
}

/// `certkeeper rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Rollouts and which agent serves which serial.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// One rollout's id.
        id: Option<i64>,
        /// Only this managed certificate's rollouts.
        #[arg(long)]
        certificate: Option<String>,
    },
    /// Stop releasing waves (released agents keep the new certificate).
    Pause {
        #[command(flatten)]
        server: ServerArgs,
        /// Rollout id.
        id: i64,
    },
    /// Go on with a paused or halted rollout (the current wave gets the new certificate again).
    Resume {
        #[command(flatten)]
        server: ServerArgs,
        /// Rollout id.
        id: i64,
    },
    /// Stop and send every agent back to the previous certificate.
    Abort {
        #[command(flatten)]
        server: ServerArgs,
        /// Rollout id.
        id: i64,
    },
}

/// `certkeeper compromise`.
#[derive(Debug, clap::Args)]
pub struct CompromiseArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Managed certificate name, or the serial of one of its certificates.
    certificate: String,
    /// Return once the replacement is requested instead of waiting for every agent.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for every agent to confirm, such as 5m.
    #[arg(long, default_value = "10m")]
    timeout: String,
}

/// Runs `certkeeper agent ...`.
pub async fn agent(command: AgentCommand) -> Result<ExitCode, CliError> {
    match command {
        AgentCommand::Run(args) => agent::run(args).await,
        AgentCommand::Token(TokenCommand::Create {
            server,
            tenant,
            ttl,
        }) => {
            let client = Client::new(&server)?;
            let created: BootstrapTokenCreated = client
                .post(
                    "/api/v1/agents/bootstrap-tokens",
                    &serde_json::json!({"tenant": tenant, "ttl": ttl}),
                )
                .await?;
            match server.output {
                OutputFormat::Json => print_json(&created)?,
                OutputFormat::Table => {
                    println!("{}", created.token);
                    eprintln!(
                        "bootstrap token {} for tenant {:?}, single use, expires {}; shown only now",
                        created.id, created.tenant, created.expires_at
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::List { server } => {
            let client = Client::new(&server)?;
            let agents: Vec<AgentView> = client.get("/api/v1/agents").await?;
            match server.output {
                OutputFormat::Json => print_json(&agents)?,
                OutputFormat::Table => print_table(
                    &[
                        "NAME",
                        "TENANT",
                        "STATUS",
                        "IDENTITY EXPIRES",
                        "CERTIFICATE",
                        "SERVING",
                        "ERROR",
                    ],
                    agent_rows(&agents),
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Revoke { server, agent } => {
            let client = Client::new(&server)?;
            let view: AgentView = client
                .post(
                    &format!("/api/v1/agents/{}/revoke", urlencode(&agent)),
                    &serde_json::json!({}),
                )
                .await?;
            match server.output {
                OutputFormat::Json => print_json(&view)?,
                OutputFormat::Table => println!(
                    "agent {} ({}) revoked; its identity certificate {} is revoked too",
                    view.name, view.id, view.identity_serial
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One row per binding; an agent without bindings gets one row with dashes.
fn agent_rows(agents: &[AgentView]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for agent in agents {
        let columns = [
            &agent.name,
            &agent.tenant,
            &agent.status,
            &agent.identity_not_after,
        ];
        let mut bindings: Vec<[String; 3]> = agent
            .bindings
            .iter()
            .map(|b| {
                [
                    b.certificate.clone(),
                    b.deployed_serial.clone().unwrap_or_else(|| "-".into()),
                    b.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if bindings.is_empty() {
            bindings.push(["-".into(), "-".into(), String::new()]);
        }
        for binding in bindings {
            rows.push(
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .chain(binding)
                    .collect(),
            );
        }
    }
    rows
}

fn print_rollouts(rollouts: &[RolloutView], format: OutputFormat) -> Result<(), CliError> {
    if format == OutputFormat::Json {
        return print_json(&rollouts);
    }
    print_table(
        &[
            "ID",
            "CERTIFICATE",
            "STATE",
            "WAVE",
            "SERIAL",
            "NEW/OTHER",
            "PARTIAL",
            "REASON",
        ],
        rollouts
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.certificate.clone(),
                    if r.urgent {
                        format!("{} (urgent)", r.state)
                    } else {
                        r.state.clone()
                    },
                    format!("{}/{}", r.current_wave, r.last_wave),
                    r.serial.clone(),
                    format!("{}/{}", r.serving_new, r.serving_other),
                    if r.partial { "yes".into() } else { "no".into() },
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    if let [one] = rollouts {
        print_table(
            &["AGENT", "WAVE", "SERVING", "CONFIRMED", "ERROR"],
            one.agents
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        if a.wave == 0 {
                            "0 (canary)".into()
                        } else {
                            a.wave.to_string()
                        },
                        a.serving.clone().unwrap_or_else(|| "-".into()),
                        a.confirmed_at_ms
                            .map(|at| format!("+{} ms", at - one.created_at_ms))
                            .unwrap_or_else(|| "-".into()),
                        a.error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

/// Runs `certkeeper rollout ...`.
pub async fn rollout(command: RolloutCommand) -> Result<ExitCode, CliError> {
    let (server, rollouts) = match command {
        RolloutCommand::Status {
            server,
            id: Some(id),
            ..
        } => {
            let client = Client::new(&server)?;
            let one: RolloutView = client.get(&format!("/api/v1/rollouts/{id}")).await?;
            (server, vec![one])
        }
        RolloutCommand::Status {
            server,
            id: None,
            certificate,
        } => {
            let client = Client::new(&server)?;
            let path = match certificate {
                Some(name) => format!("/api/v1/rollouts?certificate={}", urlencode(&name)),
                None => "/api/v1/rollouts".into(),
            };
            let all: Vec<RolloutView> = client.get(&path).await?;
            (server, all)
        }
        RolloutCommand::Pause { server, id } => act(server, id, "pause").await?,
        RolloutCommand::Resume { server, id } => act(server, id, "resume").await?,
        RolloutCommand::Abort { server, id } => act(server, id, "abort").await?,
    };
    print_rollouts(&rollouts, server.output)?;
    Ok(ExitCode::SUCCESS)
}

async fn act(
    server: ServerArgs,
    id: i64,
    action: &str,
) -> Result<(ServerArgs, Vec<RolloutView>), CliError> {
    let client = Client::new(&server)?;
    let view: RolloutView = client
        .post(
            &format!("/api/v1/rollouts/{id}/{action}"),
            &serde_json::json!({}),
        )
        .await?;
    Ok((server, vec![view]))
}

/// Runs `certkeeper compromise`: revoke with keyCompromise, new key, new certificate, urgent
/// rollout to every bound agent; waits until the last agent confirms and prints the time.
pub async fn compromise(args: CompromiseArgs) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let timeout = certkeeper_server::config::parse_duration(&args.timeout)
        .map_err(|e| CliError::Usage(format!("--timeout: {e}")))?;
    let client = Client::new(&args.server)?;
    let response: CompromiseResponse = client
        .post(
            "/api/v1/compromise",
            &serde_json::json!({"certificate": args.certificate}),
        )
        .await?;
    let json = args.server.output == OutputFormat::Json;
    if !json {
        for warning in &response.not_revoked {
            eprintln!("warning: not revoked here: {warning}");
        }
        println!(
            "{}: revoked {} (keyCompromise); a new key and certificate are on their way",
            response.certificate,
            if response.revoked.is_empty() {
                "nothing (no certificate in force)".into()
            } else {
                response.revoked.join(", ")
            }
        );
    }
    if args.no_wait {
        if json {
            print_json(&response)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let deadline = started + Duration::from_secs(timeout);
    let path = format!(
        "/api/v1/rollouts?certificate={}&limit=5",
        urlencode(&response.certificate)
    );
    loop {
        let rollouts: Vec<RolloutView> = client.get(&path).await?;
        let mine = rollouts
            .into_iter()
            .find(|r| r.urgent && r.requested_at_ms >= response.requested_at_ms);
        match mine {
            Some(rollout) if rollout.state == "completed" => {
                let elapsed = started.elapsed();
                bar.finish_and_clear();
                let last_confirmed = rollout
                    .agents
                    .iter()
                    .filter_map(|a| a.confirmed_at_ms)
                    .max();
                if json {
                    print_json(&serde_json::json!({
                        "certificate": response.certificate,
                        "revoked": response.revoked,
                        "not_revoked": response.not_revoked,
                        "new_serial": rollout.serial,
                        "agents": rollout.agents.len(),
                        "rollout": rollout.id,
                        "time_to_replace_ms": elapsed.as_millis() as u64,
                        "server_last_confirmed_after_ms": last_confirmed.map(|at| at - response.requested_at_ms),
                    }))?;
                } else {
                    println!(
                        "replaced by {} on {} agents (rollout {})",
                        rollout.serial,
                        rollout.agents.len(),
                        rollout.id
                    );
                    println!(
                        "time to replace: {:.3} s (from this command to the last agent confirming)",
                        elapsed.as_secs_f64()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Some(rollout) if rollout.state == "aborted" => {
                bar.finish_and_clear();
                return Err(CliError::Usage(format!(
                    "the replacement rollout {} was aborted: {}",
                    rollout.id,
                    rollout.reason.unwrap_or_default()
                )));
            }
            Some(rollout) => bar.set_message(format!(
                "rollout {}: {}/{} agents serve {}",
                rollout.id,
                rollout.serving_new,
                rollout.agents.len(),
                rollout.serial
            )),
            None => bar.set_message("issuing the replacement"),
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            return Err(CliError::Usage(format!(
                "not every agent confirmed within {}; see `certkeeper rollout status --certificate {}`",
                args.timeout, response.certificate
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `certkeeper ca trust ...`.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Add a CA certificate (a new intermediate or root) to every agent's trust bundle, ahead
    /// of its use.
    Add {
        #[command(flatten)]
        server: ServerArgs,
        /// The CA certificate, PEM.
        certificate: std::path::PathBuf,
    },
    /// The trust bundle and which agents hold it; exits 1 while some do not.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Wait up to this long (such as 5m) for every agent to hold it.
        #[arg(long)]
        wait: Option<String>,
    },
}

fn print_trust(status: &TrustStatus, format: OutputFormat) -> Result<(), CliError> {
    if format == OutputFormat::Json {
        return print_json(status);
    }
    print_table(
        &["SUBJECT", "KIND", "EXPIRES", "SHA-256"],
        status
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.subject.clone(),
                    c.kind.clone(),
                    c.not_after.clone(),
                    c.fingerprint.clone(),
                ]
            })
            .collect(),
    );
    println!(
        "{} of {} active agents hold this bundle{}",
        status.agents_holding,
        status.agents,
        if status.missing.is_empty() {
            String::new()
        } else {
            format!("; not yet: {}", status.missing.join(", "))
        }
    );
    Ok(())
}

/// Runs `certkeeper ca trust ...`.
pub async fn trust(command: TrustCommand) -> Result<ExitCode, CliError> {
    match command {
        TrustCommand::Add {
            server,
            certificate,
        } => {
            let pem = std::fs::read_to_string(&certificate)
                .map_err(|e| CliError::file(&certificate, e))?;
            let client = Client::new(&server)?;
            let status: TrustStatus = client
                .post(
                    "/api/v1/ca/trust",
                    &TrustAddRequest {
                        certificate_pem: pem,
                    },
                )
                .await?;
            print_trust(&status, server.output)?;
            if server.output == OutputFormat::Table {
                println!(
                    "agents pick it up at once; `certkeeper ca trust status --wait 5m` returns when all hold it"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TrustCommand::Status { server, wait } => {
            let wait = match wait {
                Some(text) => certkeeper_server::config::parse_duration(&text)
                    .map_err(|e| CliError::Usage(format!("--wait: {e}")))?,
                None => 0,
            };
            let client = Client::new(&server)?;
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                let status: TrustStatus = client.get("/api/v1/ca/trust").await?;
                if status.ready || Instant::now() >= deadline {
                    print_trust(&status, server.output)?;
                    return Ok(if status.ready {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
