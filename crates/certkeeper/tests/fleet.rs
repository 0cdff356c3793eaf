//! Host agents and fleet rollouts, end to end: a server and agents as separate processes on
//! loopback, each agent deploying to its own real nginx.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{Running, nginx_binary, start_nginx};
use common::{TestServer, apply_managed, certkeeper, free_port, issue_to_files, text};

const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// One agent with its nginx.
struct Agent {
    name: String,
    dir: PathBuf,
    port: u16,
    _nginx: Running,
    process: Option<Child>,
}

impl Agent {
    fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("agent.log")).unwrap();
        let child = Command::new(BIN)
            .args(["agent", "run", "--config"])
            .arg(self.config())
            .env("CERTKEEPER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The serial this agent's nginx serves, as `openssl s_client` sees it.
    fn served_serial(&self) -> String {
        served_serial(self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn served_serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// A server with fast ticks and short long polls, on fixed ports so it can be restarted.
struct Fleet {
    dir: PathBuf,
    server: TestServer,
    ports: [u16; 3],
    agents: Vec<Agent>,
}

fn start_server(dir: &Path, ports: [u16; 3]) -> TestServer {
    start_server_with(dir, ports, "sync_wait = \"5s\"\n")
}

fn start_server_with(dir: &Path, ports: [u16; 3], agents: &str) -> TestServer {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!("[lifecycle]\ntick_ms = 100\n\n[agents]\n{agents}"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", ports[0]);
    let http = format!("127.0.0.1:{}", ports[1]);
    let agents = format!("127.0.0.1:{}", ports[2]);
    TestServer::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
            "--http-listen",
            &http,
            "--agents-listen",
            &agents,
        ],
    )
}

impl Fleet {
    async fn new(dir: &Path, rollout: serde_json::Value) -> Fleet {
        let ports = [free_port(), free_port(), free_port()];
        let server = start_server(dir, ports);
        apply_managed(
            &server,
            serde_json::json!([{"name": "web", "sans": ["localhost"], "rollout": rollout}]),
        )
        .await;
        Fleet {
            dir: dir.to_path_buf(),
            server,
            ports,
            agents: Vec::new(),
        }
    }

    fn restart_server(&mut self) {
        let token = self.server.token.clone();
        self.server = start_server(&self.dir, self.ports);
        self.server.token = token;
    }

    /// A bootstrap token from the CLI.
    fn bootstrap_token(&self, extra: &[&str]) -> String {
        let mut args = vec!["agent", "token", "create"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--server",
            &self.server.https,
            "--token",
            self.server.token(),
        ]);
        let root = self.dir.join("data/ca/root.crt");
        let root = root.to_str().unwrap().to_string();
        all.extend_from_slice(&["--ca-file", &root]);
        certkeeper(&all, &self.dir, &[])
    }

    /// Adds `count` agents, each with an nginx serving a bootstrap certificate and a deploy of
    /// `web` to it, and starts them.
    async fn add_agents(&mut self, count: usize) {
        for _ in 0..count {
            let i = self.agents.len();
            let name = format!("agent-{i:02}");
            let dir = self.dir.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let fullchain = dir.join("web.pem");
            let key = dir.join("web.key");
            // Something to serve before the first deployment.
            issue_to_files(
                &self.server,
                serde_json::json!({"profile": "tls-server", "sans": ["localhost"]}),
                &fullchain,
                &key,
            )
            .await;
            let nginx = start_nginx(
                &dir,
                &format!(
                    "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    return 200 ok;\n  }}",
                    fullchain.display(),
                    key.display()
                ),
                port,
            );
            let token = self.bootstrap_token(&[]);
            std::fs::write(dir.join("token"), &token).unwrap();
            let d = dir.display();
            std::fs::write(
                dir.join("agent.toml"),
                format!(
                    r#"server = "{server}"
name = "{name}"
state_dir = "{d}/state"
ca_file = "{root}"
bootstrap_token_file = "{d}/token"
trust_bundle = "{d}/ca-bundle.pem"
sync_wait = 5

[[deploy]]
certificate = "web"
[deploy.target]
type = "nginx"
fullchain = "{d}/web.pem"
key = "{d}/web.key"
probe = "127.0.0.1:{port}"
reload = "test ! -e {d}/fail-reload && {nginx} -p {d} -c {d}/nginx.conf -s reload"
"#,
                    server = self.server.agents.as_deref().unwrap(),
                    root = self.dir.join("data/ca/root.crt").display(),
                    nginx = nginx_binary(),
                ),
            )
            .unwrap();
            let mut agent = Agent {
                name,
                dir,
                port,
                _nginx: nginx,
                process: None,
            };
            agent.start();
            self.agents.push(agent);
        }
    }

    async fn rollouts(&self) -> Vec<serde_json::Value> {
        let (status, body, text) = self
            .server
            .get(
                "/api/v1/rollouts?certificate=web",
                Some(self.server.token()),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        body.as_array().unwrap().clone()
    }

    /// Waits (up to `seconds`) for `done` over the newest rollout.
    async fn wait_rollout(
        &self,
        what: &str,
        seconds: u64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let rollouts = self.rollouts().await;
            if let Some(newest) = rollouts.first()
                && done(newest)
            {
                return newest.clone();
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| format!("--- {}\n{}", a.name, a.log()))
                    .collect();
                panic!(
                    "{what} did not happen: {:#}\n{}",
                    serde_json::Value::Array(rollouts),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every agent's nginx serves the same serial, and returns it.
    async fn wait_all_serving(&self, what: &str, not: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let served: Vec<String> = self.agents.iter().map(Agent::served_serial).collect();
            if !served[0].is_empty()
                && served.iter().all(|s| s == &served[0])
                && not != Some(served[0].as_str())
                && self
                    .rollouts()
                    .await
                    .first()
                    .is_some_and(|r| r["state"] == "completed")
            {
                return served[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: agents serve {served:?}; rollouts {:#}",
                serde_json::Value::Array(self.rollouts().await)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One sample of `/metrics` (series exactly as rendered).
    async fn metric(&self, series: &str) -> f64 {
        let text = self.server.metrics(self.server.token()).await;
        common::metric_sample(&text, series)
    }

    fn renew(&self) {
        let out = self.cli(&["renew", "web"]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_reaches_every_agent_and_a_failing_canary_halts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::new(
        dir.path(),
        serde_json::json!({"canary": "1", "wave": "2", "health_timeout_seconds": 60}),
    )
    .await;
    fleet.add_agents(5).await;
    // Binding a certificate the fleet has no copy of obtains one; every agent ends up serving it.
    let first = fleet.wait_all_serving("the first deployment", None).await;

    // A renewal rolls out canary first, then waves of two.
    fleet.renew();
    let second = fleet
        .wait_all_serving("the second rollout", Some(&first))
        .await;
    let rollout = fleet.rollouts().await[0].clone();
    assert_eq!(rollout["serial"], second.as_str(), "{rollout:#}");
    assert_eq!(rollout["last_wave"], 2, "{rollout:#}");
    let agents = rollout["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 5, "{rollout:#}");
    let waves: Vec<i64> = agents.iter().map(|a| a["wave"].as_i64().unwrap()).collect();
    assert_eq!(waves, vec![0, 1, 1, 2, 2]);
    // Each wave confirmed after the one before it.
    let confirmed = |wave: i64| -> Vec<i64> {
        agents
            .iter()
            .filter(|a| a["wave"] == wave)
            .map(|a| a["confirmed_at_ms"].as_i64().unwrap())
            .collect()
    };
    assert!(
        confirmed(0).iter().max() <= confirmed(1).iter().min(),
        "{rollout:#}"
    );
    assert!(
        confirmed(1).iter().max() <= confirmed(2).iter().min(),
        "{rollout:#}"
    );
    let status = fleet.cli(&["rollout", "status", &rollout["id"].to_string()]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("(canary)"), "{}", text(&status));

    // The canary's reload now fails: the rollout halts, the canary is restored, and the other
    // agents never receive the new certificate.
    let canary = &fleet.agents[0];
    std::fs::write(canary.dir.join("fail-reload"), "").unwrap();
    fleet.renew();
    let halted = fleet
        .wait_rollout("the halt", 60, |r| {
            r["serial"] != second.as_str() && r["state"] == "halted"
        })
        .await;
    let third = halted["serial"].as_str().unwrap().to_string();
    assert!(
        halted["reason"]
            .as_str()
            .unwrap()
            .contains("the canary failed"),
        "{halted:#}"
    );
    assert!(
        halted["reason"].as_str().unwrap().contains("reload"),
        "{halted:#}"
    );
    // Give any wrongly released agent time to act, then look.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for agent in &fleet.agents {
        assert_eq!(
            agent.served_serial(),
            second,
            "{} after the halt",
            agent.name
        );
        let state = std::fs::read_to_string(agent.dir.join("state/state.json")).unwrap();
        if agent.name != "agent-00" {
            assert!(
                !state.contains(&third),
                "{} received {third}: {state}",
                agent.name
            );
            assert!(
                !agent.log().contains(&third),
                "{}: {}",
                agent.name,
                agent.log()
            );
        }
    }
    let view = fleet.rollouts().await[0].clone();
    assert_eq!(view["serving_new"], 0, "{view:#}");
    let list = fleet.cli(&["agent", "list", "--output", "json"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 5);

    // Fixed: resume, and the rollout completes.
    std::fs::remove_file(fleet.agents[0].dir.join("fail-reload")).unwrap();
    let id = halted["id"].to_string();
    let resumed = fleet.cli(&["rollout", "resume", &id]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let done = fleet
        .wait_all_serving("the resumed rollout", Some(&second))
        .await;
    assert_eq!(done, third);
    // The trust bundle is kept where the configuration says.
    let bundle = std::fs::read_to_string(fleet.agents[1].dir.join("ca-bundle.pem")).unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_rollout_leaves_agents_serving_and_the_rollout_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::new(
        dir.path(),
        serde_json::json!({"canary": "1", "wave": "1", "bake_seconds": 2}),
    )
    .await;
    fleet.add_agents(5).await;
    let first = fleet.wait_all_serving("the first deployment", None).await;
    fleet.renew();
    // Kill the server once the canary confirmed and before the last wave.
    let mid = fleet
        .wait_rollout("the canary confirming", 60, |r| {
            r["serial"] != first.as_str()
                && r["state"] == "running"
                && r["current_wave"].as_i64() >= Some(1)
        })
        .await;
    assert!(
        mid["current_wave"].as_i64() < mid["last_wave"].as_i64(),
        "{mid:#}"
    );
    let new = mid["serial"].as_str().unwrap().to_string();
    fleet.server.kill();
    // Agents keep serving (old or new, never nothing) while the server is gone.
    for _ in 0..3 {
        for agent in &fleet.agents {
            let served = agent.served_serial();
            assert!(served == first || served == new, "{}: {served}", agent.name);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let on_new = fleet
        .agents
        .iter()
        .filter(|a| a.served_serial() == new)
        .count();
    assert!(
        (1..5).contains(&on_new),
        "{on_new} agents on the new serial mid-rollout"
    );
    fleet.restart_server();
    let done = fleet
        .wait_all_serving("the resumed rollout", Some(&first))
        .await;
    assert_eq!(done, new);
    let rollout = fleet.rollouts().await[0].clone();
    assert_eq!(
        rollout["id"], mid["id"],
        "the same rollout completed: {rollout:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_reused_expired_or_of_another_tenant_and_revoked_agents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(dir.path(), serde_json::json!({})).await;
    let root = fleet.dir.join("data/ca/root.crt");
    let agents_url = fleet.server.agents.clone().unwrap();
    let run_once = |name: &str, token: &str, tenant: Option<&str>| {
        let state = fleet.dir.join(name);
        let mut args = vec![
            "agent".to_string(),
            "run".into(),
            "--once".into(),
            "--server".into(),
            agents_url.clone(),
            "--name".into(),
            name.into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--ca-file".into(),
            root.display().to_string(),
            "--bootstrap-token".into(),
            token.into(),
        ];
        if let Some(tenant) = tenant {
            args.extend(["--tenant".into(), tenant.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (certkeeper(&args, &fleet.dir, &[]), state)
    };
    let enrolled = |fleet: &Fleet| -> usize {
        let out = fleet.cli(&["agent", "list", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };

    let token = fleet.bootstrap_token(&[]);
    let (out, _) = run_once("first", &token, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(enrolled(&fleet), 1);

    // Reused.
    let (out, state) = run_once("second", &token, None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Bootstrap token already used"),
        "{}",
        text(&out)
    );
    assert!(!state.join("identity.pem").exists());
    // Expired.
    let short = fleet.bootstrap_token(&["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (out, state) = run_once("third", &short, None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Bootstrap token expired"),
        "{}",
        text(&out)
    );
    assert!(!state.join("identity.pem").exists());
    // Another tenant's.
    let other = fleet.bootstrap_token(&["--tenant", "other"]);
    let (out, state) = run_once("fourth", &other, Some("default"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Bootstrap token of another tenant"),
        "{}",
        text(&out)
    );
    assert!(!state.join("identity.pem").exists());
    // Garbage.
    let (out, _) = run_once("fifth", "ckb_nope.nope", None);
    assert!(
        text(&out).contains("Invalid bootstrap token"),
        "{}",
        text(&out)
    );
    assert_eq!(enrolled(&fleet), 1, "nothing else was enrolled");

    // A revoked agent is refused, and its identity certificate is revoked.
    let revoke = fleet.cli(&["agent", "revoke", "first"]);
    assert!(revoke.status.success(), "{}", text(&revoke));
    let (out, _) = run_once("first", "unused", None);
    assert!(!out.status.success());
    assert!(text(&out).contains("Agent revoked"), "{}", text(&out));
    let identity = fleet.dir.join("first/identity.pem");
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&identity)
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let (status, body, _) = fleet
        .server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(fleet.server.token()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "revoked", "{body:#}");
    // The audit log names every refusal.
    let audit = fleet.server.audit().await;
    let denials = audit
        .iter()
        .filter(|e| e["action"] == "agent.enroll" && e["outcome"] == "denied")
        .count();
    assert_eq!(denials, 4, "{audit:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromise_replaces_the_certificate_on_twenty_agents_and_ocsp_says_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::new(
        dir.path(),
        serde_json::json!({"canary": "2", "wave": "50%"}),
    )
    .await;
    fleet.add_agents(20).await;
    let old = fleet.wait_all_serving("the first deployment", None).await;
    let old_pem = fleet.dir.join("old.pem");
    std::fs::copy(fleet.agents[0].dir.join("web.pem"), &old_pem).unwrap();

    let out = fleet.cli(&["compromise", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains(&format!("revoked {old}")), "{printed}");
    assert!(printed.contains("on 20 agents"), "{printed}");
    assert!(printed.contains("time to replace: "), "{printed}");

    // No agent serves the old serial any more.
    for agent in &fleet.agents {
        let served = agent.served_serial();
        assert!(
            !served.is_empty() && served != old,
            "{} serves {served}",
            agent.name
        );
    }
    let rollout = fleet.rollouts().await[0].clone();
    // M3 counted once, and the 20 agents are active.
    assert_eq!(
        fleet
            .metric("certkeeper_time_to_replace_seconds_count")
            .await,
        1.0
    );
    assert_eq!(
        fleet.metric("certkeeper_agents{state=\"active\"}").await,
        20.0
    );
    assert_eq!(rollout["urgent"], true, "{rollout:#}");
    assert_eq!(rollout["state"], "completed", "{rollout:#}");
    assert_eq!(
        rollout["last_wave"], 0,
        "one wave, no canary wait: {rollout:#}"
    );
    // OCSP answers revoked (keyCompromise) for the old certificate.
    let ocsp = Command::new("openssl")
        .args(["ocsp", "-noverify", "-issuer"])
        .arg(fleet.dir.join("data/ca/intermediate.crt"))
        .arg("-cert")
        .arg(&old_pem)
        .args(["-url", &format!("{}/ocsp", fleet.server.http)])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&ocsp.stdout).to_string();
    assert!(
        answer.contains(": revoked"),
        "{answer}{}",
        String::from_utf8_lossy(&ocsp.stderr)
    );
    assert!(answer.contains("keyCompromise"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_its_identity_by_possession_and_keeps_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let server = start_server_with(
        dir.path(),
        ports,
        "sync_wait = \"1s\"\nidentity_lifetime = \"15s\"\n",
    );
    let root = dir.path().join("data/ca/root.crt");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &server.https, "--token", server.token()]);
        let root = root.display().to_string();
        all.extend_from_slice(&["--ca-file", &root]);
        certkeeper(&all, dir.path(), &[])
    };
    let token = cli(&["agent", "token", "create"]);
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let state = dir.path().join("agent-state");
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(BIN)
        .args(["agent", "run", "--name", "sidecar", "--server"])
        .arg(server.agents.as_deref().unwrap())
        .arg("--state-dir")
        .arg(&state)
        .arg("--ca-file")
        .arg(&root)
        .env("CERTKEEPER_BOOTSTRAP_TOKEN", &token)
        .env("CERTKEEPER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let identity = || -> String {
        let out = cli(&["agent", "list", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        let agents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        agents[0]["identity_serial"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while identity().is_empty() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = identity();
    // Two renewals in a row, each with the identity before it (15 s lifetime, renewed at 5 s left).
    let mut seen = vec![first.clone()];
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "renewals seen: {seen:?}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        let now = identity();
        if !now.is_empty() && seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
    // The file the agent holds is the latest identity, key and certificate together, 0600.
    let pem = std::fs::read_to_string(state.join("identity.pem")).unwrap();
    assert!(pem.contains("PRIVATE KEY") && pem.contains("CERTIFICATE"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("identity.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(state.join("identity.pem"))
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let latest = identity();
    assert_eq!(serial, latest);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("identity renewed"), "{log_text}");
    assert!(
        !log_text.contains("refused") && !log_text.contains("revoked"),
        "{log_text}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A self-signed certificate made by openssl: a CA (new root) or not.
fn openssl_self_signed(dir: &Path, name: &str, ca: bool) -> PathBuf {
    let out = dir.join(format!("{name}.pem"));
    let constraints = if ca { "CA:true" } else { "CA:false" };
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&out)
        .args(["-days", "30", "-subj", &format!("/CN={name}")])
        .args([
            "-addext",
            &format!("basicConstraints=critical,{constraints}"),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ca_certificate_reaches_every_agent_trust_bundle_and_status_says_who_lacks_it() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let server = start_server_with(dir.path(), ports, "sync_wait = \"2s\"\n");
    let root = dir.path().join("data/ca/root.crt");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &server.https, "--token", server.token()]);
        let root = root.display().to_string();
        all.extend_from_slice(&["--ca-file", &root]);
        certkeeper(&all, dir.path(), &[])
    };
    let mut agents = Vec::new();
    for name in ["edge-1", "edge-2"] {
        let token = cli(&["agent", "token", "create"]);
        assert!(token.status.success(), "{}", text(&token));
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("token"),
            String::from_utf8_lossy(&token.stdout).trim(),
        )
        .unwrap();
        let h = home.display();
        std::fs::write(
            home.join("agent.toml"),
            format!(
                "server = \"{}\"\nname = \"{name}\"\nstate_dir = \"{h}/state\"\nca_file = \"{}\"\nbootstrap_token_file = \"{h}/token\"\ntrust_bundle = \"{h}/ca-bundle.pem\"\nsync_wait = 2\n",
                server.agents.as_deref().unwrap(),
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "run", "--config"])
            .arg(home.join("agent.toml"))
            .env("CERTKEEPER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        agents.push((home, child));
    }
    // Both agents enroll, then hold the bundle in force.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = cli(&["agent", "list", "--output", "json"]);
        let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        if listed.as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "agents did not enroll");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = cli(&["ca", "trust", "status", "--wait", "30s"]);
    assert!(ready.status.success(), "{}", text(&ready));
    assert!(
        text(&ready).contains("2 of 2 active agents hold this bundle"),
        "{}",
        text(&ready)
    );

    // A new root reaches both before anything could be signed with it.
    let next_root = openssl_self_signed(dir.path(), "next-root", true);
    let added = cli(&["ca", "trust", "add", next_root.to_str().unwrap()]);
    assert!(added.status.success(), "{}", text(&added));
    let ready = cli(&["ca", "trust", "status", "--wait", "30s", "--output", "json"]);
    assert!(ready.status.success(), "{}", text(&ready));
    let status: serde_json::Value = serde_json::from_slice(&ready.stdout).unwrap();
    assert_eq!(status["ready"], true, "{status:#}");
    assert!(
        status["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "added" && c["subject"].as_str().unwrap().contains("next-root"))
    );
    let body = std::fs::read_to_string(&next_root).unwrap();
    let body = body.trim();
    for (home, _) in &agents {
        let bundle = std::fs::read_to_string(home.join("ca-bundle.pem")).unwrap();
        assert!(
            bundle.contains(body),
            "{} lacks the new root",
            home.display()
        );
        let kept = std::fs::read_to_string(home.join("state/trust-bundle.pem")).unwrap();
        assert_eq!(kept, bundle);
    }

    // With one agent stopped, the next addition is not ready, and status names who lacks it.
    let (_, mut stopped) = agents.pop().unwrap();
    let _ = stopped.kill();
    let _ = stopped.wait();
    let another = openssl_self_signed(dir.path(), "another-root", true);
    let added = cli(&["ca", "trust", "add", another.to_str().unwrap()]);
    assert!(added.status.success(), "{}", text(&added));
    let not_ready = cli(&["ca", "trust", "status", "--wait", "6s"]);
    assert!(!not_ready.status.success(), "{}", text(&not_ready));
    assert!(
        text(&not_ready).contains("1 of 2 active agents hold this bundle; not yet: edge-2"),
        "{}",
        text(&not_ready)
    );
    let bundle = std::fs::read_to_string(agents[0].0.join("ca-bundle.pem")).unwrap();
    assert!(bundle.contains(std::fs::read_to_string(&another).unwrap().trim()));

    // Only CA certificates go into the bundle.
    let leaf = openssl_self_signed(dir.path(), "leaf", false);
    let refused = cli(&["ca", "trust", "add", leaf.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("is not a CA certificate"),
        "{}",
        text(&refused)
    );
    for (_, child) in &mut agents {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_releases_no_wave_and_an_aborted_one_sends_everyone_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::new(
        dir.path(),
        serde_json::json!({"canary": "1", "wave": "1", "bake_seconds": 2}),
    )
    .await;
    fleet.add_agents(3).await;
    let first = fleet.wait_all_serving("the first deployment", None).await;
    fleet.renew();
    let running = fleet
        .wait_rollout("the canary confirming", 60, |r| {
            r["serial"] != first.as_str()
                && r["agents"][0]["confirmed_at_ms"].is_i64()
                && r["state"] == "running"
        })
        .await;
    let id = running["id"].to_string();
    let paused = fleet.cli(&["rollout", "pause", &id]);
    assert!(paused.status.success(), "{}", text(&paused));
    let wave = fleet.rollouts().await[0]["current_wave"].clone();
    // Well past the bake time: no wave is released while paused.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = fleet.rollouts().await[0].clone();
    assert_eq!(view["state"], "paused", "{view:#}");
    assert_eq!(view["current_wave"], wave, "{view:#}");
    // The canary serves the new certificate, the others the old: a partial deployment (M5).
    assert_eq!(view["partial"], true, "{view:#}");
    assert_eq!(fleet.metric("certkeeper_rollouts_partial").await, 1.0);
    assert_eq!(
        fleet.metric("certkeeper_rollouts{state=\"paused\"}").await,
        1.0
    );
    // Pausing twice is refused with the reason.
    let again = fleet.cli(&["rollout", "pause", &id]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("pause needs a running rollout"),
        "{}",
        text(&again)
    );
    // Abort: every agent goes back to what it served before.
    let aborted = fleet.cli(&["rollout", "abort", &id]);
    assert!(aborted.status.success(), "{}", text(&aborted));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served: Vec<String> = fleet.agents.iter().map(Agent::served_serial).collect();
        if served.iter().all(|s| *s == first) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the abort agents serve {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An agent restores its files before it reports what it serves: wait for the reports.
    let view = fleet
        .wait_rollout("every agent reporting the old serial", 30, |r| {
            r["serving_new"] == 0
        })
        .await;
    assert_eq!(view["state"], "aborted", "{view:#}");
    assert_eq!(view["serving_other"], 3, "{view:#}");
}
