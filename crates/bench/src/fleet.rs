//! `certkeeper-fleet-bench`: time-to-replace after `certkeeper compromise` for fleets of
//! agents, and the server's memory and CPU per idle connected agent.
//!
//! It starts `certkeeper serve` and N `certkeeper agent run` processes on loopback (each agent
//! deploying one managed certificate to files), waits until every agent serves the fleet's
//! certificate, then:
//! - measures the server's resident memory and CPU time over an idle window, with no agents
//!   and then with N agents connected (long-polling);
//! - runs `certkeeper compromise` a few times and reads the time from the command to the last
//!   agent confirming.
//!
//! Usage: certkeeper-fleet-bench --certkeeper target/release/certkeeper --agents 20,100

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[allow(dead_code)] // each benchmark binary uses part of it
mod server;

use server::{Killed, Server, start_server};

#[derive(Parser)]
struct Args {
    /// The certkeeper binary (a release build).
    #[arg(long, default_value = "target/release/certkeeper")]
    certkeeper: PathBuf,
    /// Fleet sizes, ascending (agents are added to reach each).
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    agents: Vec<usize>,
    /// Compromise rounds per fleet size.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of the idle window for memory and CPU.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
}

fn cli(binary: &Path, server: &Server, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .args(args)
        .args(["--server", &server.https, "--token", &server.token])
        .arg("--ca-file")
        .arg(&server.root)
        .output()
        .map_err(|e| format!("run certkeeper: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "certkeeper {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn start_agent(binary: &Path, server: &Server, dir: &Path, index: usize) -> Result<Killed, String> {
    let name = format!("agent-{index:03}");
    let home = dir.join(&name);
    std::fs::create_dir_all(&home).map_err(|e| format!("agent directory: {e}"))?;
    let token = cli(binary, server, &["agent", "token", "create"])?;
    std::fs::write(home.join("token"), token.trim()).map_err(|e| format!("token file: {e}"))?;
    let h = home.display();
    std::fs::write(
        home.join("agent.toml"),
        format!(
            "server = \"{}\"\nname = \"{name}\"\nstate_dir = \"{h}/state\"\nca_file = \"{}\"\nbootstrap_token_file = \"{h}/token\"\n\n[[deploy]]\ncertificate = \"bench\"\n[deploy.target]\ntype = \"file\"\nfullchain = \"{h}/bench.pem\"\nkey = \"{h}/bench.key\"\n",
            server.agents_url,
            server.root.display()
        ),
    )
    .map_err(|e| format!("agent configuration: {e}"))?;
    let child = Command::new(binary)
        .args(["agent", "run", "--config"])
        .arg(home.join("agent.toml"))
        .env("CERTKEEPER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start certkeeper agent: {e}"))?;
    Ok(Killed(child))
}

/// Waits until `count` agents serve one serial, the newest completed rollout's.
fn wait_converged(binary: &Path, server: &Server, count: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let agents: serde_json::Value =
            serde_json::from_str(&cli(binary, server, &["agent", "list", "-o", "json"])?)
                .map_err(|e| format!("agent list: {e}"))?;
        let served: Vec<Option<&str>> = agents
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|agent| agent["bindings"][0]["deployed_serial"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let rollouts: serde_json::Value = serde_json::from_str(&cli(
            binary,
            server,
            &["rollout", "status", "--certificate", "bench", "-o", "json"],
        )?)
        .map_err(|e| format!("rollouts: {e}"))?;
        let newest = &rollouts[0];
        if served.len() == count
            && newest["state"] == "completed"
            && served.iter().all(|s| *s == newest["serial"].as_str())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the fleet did not converge: {served:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Resident memory (bytes) and CPU time (seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    (rss_kib * 1024, ticks / 100.0)
}

/// Memory and CPU share of one core over an idle window.
fn idle(pid: u32, seconds: u64) -> (u64, f64) {
    let (_, cpu_before) = usage(pid);
    std::thread::sleep(Duration::from_secs(seconds));
    let (rss, cpu_after) = usage(pid);
    (rss, (cpu_after - cpu_before) / seconds as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("certkeeper-fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("work directory: {e}"))?;
    let binary = &args.certkeeper;
    let server = start_server(binary, &dir, &[])?;
    let pid = server.process.0.id();
    std::fs::write(
        dir.join("managed.toml"),
        "[[certificate]]\nname = \"bench\"\nsans = [\"bench.example.com\"]\n",
    )
    .map_err(|e| format!("managed.toml: {e}"))?;
    let managed = dir.join("managed.toml");
    cli(binary, &server, &["apply", &managed.display().to_string()])?;
    std::thread::sleep(Duration::from_secs(2));
    let (rss_0, cpu_0) = idle(pid, args.idle_seconds);
    println!(
        "server with no agents: {:.1} MiB resident, {:.3} % of a core",
        rss_0 as f64 / 1048576.0,
        cpu_0 * 100.0
    );
    println!(
        "| agents | time to replace, median of {} (min..max) | goal | server memory per idle agent | server CPU per idle agent |",
        args.rounds
    );
    println!("|---|---|---|---|---|");
    let mut agents = Vec::new();
    for &size in &args.agents {
        while agents.len() < size {
            agents.push(start_agent(binary, &server, &dir, agents.len())?);
        }
        wait_converged(binary, &server, size)?;
        let (rss_n, cpu_n) = idle(pid, args.idle_seconds);
        let mut times = Vec::new();
        for _ in 0..args.rounds {
            let out = cli(binary, &server, &["compromise", "bench", "-o", "json"])?;
            let report: serde_json::Value =
                serde_json::from_str(&out).map_err(|e| format!("compromise report: {e}"))?;
            let ms = report["time_to_replace_ms"]
                .as_f64()
                .ok_or("no time_to_replace_ms")?;
            if report["agents"].as_u64() != Some(size as u64) {
                return Err(format!("the rollout did not cover {size} agents: {report}"));
            }
            times.push(ms / 1000.0);
            std::thread::sleep(Duration::from_secs(2));
        }
        let per_agent_bytes = rss_n.saturating_sub(rss_0) as f64 / size as f64;
        let per_agent_cpu = (cpu_n - cpu_0).max(0.0) / size as f64;
        println!(
            "| {size} | {:.2} s ({:.2}..{:.2}) | 10 s ({:.0} % of it) | {:.0} KiB | {:.4} % of a core |",
            median(times.clone()),
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(0.0, f64::max),
            median(times.clone()) / 10.0 * 100.0,
            per_agent_bytes / 1024.0,
            per_agent_cpu * 100.0,
        );
    }
    drop(agents);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
