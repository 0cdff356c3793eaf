//! Shared helpers for the end-to-end tests: the real `certkeeper` binary, openssl and pkilint.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod acme;
pub mod peers;

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `certkeeper serve`.
pub struct TestServer {
    pub child: Child,
    pub data_dir: PathBuf,
    pub https: String,
    pub http: String,
    /// The agent listener's URL.
    pub agents: Option<String>,
    pub token: Option<String>,
    pub client: reqwest::Client,
    pub banner: String,
}

impl TestServer {
    /// Starts `certkeeper serve` on free ports with `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TestServer {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(if extra.contains(&"--http-listen") {
                &[][..]
            } else {
                &["--http-listen", "127.0.0.1:0"][..]
            })
            .args(if extra.contains(&"--agents-listen") {
                &[][..]
            } else {
                &["--agents-listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env_remove("CERTKEEPER_CONFIG")
            .env("CERTKEEPER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start certkeeper serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut https, mut http, mut token, mut agents) = (None, None, None, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read banner") == 0 {
                panic!("certkeeper serve exited before it was ready; output so far:\n{banner}");
            }
            banner.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("API (HTTPS):") {
                https = rest
                    .split_whitespace()
                    .next()
                    .map(|u| u.trim_end_matches("/api/v1").to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("Agents (mTLS):") {
                agents = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(rest) = line.trim().strip_prefix("Relying parties:") {
                http = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(rest) = line.trim().strip_prefix("Admin token:") {
                let value = rest.trim();
                if value.starts_with("ck_") {
                    token = Some(value.to_string());
                }
                break;
            }
            assert!(Instant::now() < deadline, "server did not start in time");
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let root = std::fs::read(data_dir.join("ca/root.crt")).expect("root certificate");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&root).unwrap()])
            .build()
            .unwrap();
        TestServer {
            child,
            data_dir: data_dir.to_path_buf(),
            https: https.expect("https url in banner"),
            http: http.expect("http url in banner"),
            agents,
            token,
            client,
            banner,
        }
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().expect("admin token")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.https)
    }

    /// POST JSON with a token; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value, String) {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        respond(request).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value, String) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        respond(request).await
    }

    /// Creates a token through the API and returns it.
    pub async fn create_token(&self, role: &str, tenant: Option<&str>) -> (String, String) {
        let (status, body, _) = self
            .post("/api/v1/tokens", Some(self.token()), &serde_json::json!({"name": format!("{role}-test"), "role": role, "tenant": tenant}))
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }

    /// The `/metrics` text as `token` sees it.
    pub async fn metrics(&self, token: &str) -> String {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// Number of certificates in the inventory (admin view).
    pub async fn inventory_count(&self) -> usize {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/certificates?limit=1000&cursor={c}"),
                None => "/api/v1/certificates?limit=1000".to_string(),
            };
            let (status, body, _) = self.get(&path, Some(self.token())).await;
            assert_eq!(status, 200, "{body}");
            count += body["items"].as_array().unwrap().len();
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return count,
            }
        }
    }

    /// Every audit entry.
    pub async fn audit(&self) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let (status, body, _) = self
                .get(
                    &format!("/api/v1/audit?after={after}&limit=5000"),
                    Some(self.token()),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body.as_array().unwrap().clone();
            if page.is_empty() {
                return entries;
            }
            after = page.last().unwrap()["seq"].as_i64().unwrap();
            entries.extend(page);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn respond(request: reqwest::RequestBuilder) -> (u16, serde_json::Value, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, content_type)
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (scripts/test installs the tools the tests need)")
        })
}

/// Runs `certkeeper` with args and env.
pub fn certkeeper(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("CERTKEEPER_TOKEN")
        .env_remove("CERTKEEPER_SERVER");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run certkeeper")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Makes a key and CSR with openssl; returns (key path, csr path).
pub fn openssl_csr(
    dir: &Path,
    name: &str,
    key_spec: &[&str],
    subject: &str,
    sans: &str,
) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend_from_slice(key_spec);
    let key_s = key.to_str().unwrap().to_string();
    let csr_s = csr.to_str().unwrap().to_string();
    let san_ext = format!("subjectAltName={sans}");
    args.extend_from_slice(&["-keyout", &key_s, "-out", &csr_s, "-subj", subject]);
    if !sans.is_empty() {
        args.extend_from_slice(&["-addext", &san_ext]);
    }
    let out = run("openssl", &args, dir);
    assert!(out.status.success(), "openssl req: {}", text(&out));
    (key, csr)
}

/// Where pkilint's commands are: CERTKEEPER_PKILINT_DIR, the project venv, or PATH.
pub fn pkilint(command: &str) -> String {
    if let Ok(dir) = std::env::var("CERTKEEPER_PKILINT_DIR") {
        return format!("{dir}/{command}");
    }
    let venv = format!("/opt/certkeeper-venv/bin/{command}");
    if Path::new(&venv).exists() {
        return venv;
    }
    command.to_string()
}

/// Lints with pkilint and returns ERROR/FATAL findings (empty = clean).
pub fn lint(command: &str, args: &[&str], file: &Path) -> String {
    let mut full: Vec<&str> = vec!["lint", "-s", "ERROR"];
    full.extend_from_slice(args);
    let file_s = file.to_str().unwrap();
    full.push(file_s);
    let output = Command::new(pkilint(command))
        .args(&full)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pkilint {command}: {e}; run scripts/test to install it")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        stderr.trim().is_empty() || output.status.code().is_some(),
        "{command} crashed: {stderr}"
    );
    if stdout.contains("(ERROR)") || stdout.contains("(FATAL)") || !stderr.trim().is_empty() {
        format!("{stdout}{stderr}")
    } else {
        String::new()
    }
}

/// The PostgreSQL server the suite uses (CERTKEEPER_TEST_POSTGRES_URL).
pub fn postgres_admin_url() -> String {
    std::env::var("CERTKEEPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh PostgreSQL database with psql and returns its URL.
pub fn fresh_postgres_database(tag: &str) -> String {
    let admin = postgres_admin_url();
    let name = format!("ck_e2e_{tag}_{}", std::process::id());
    let drop = std::process::Command::new("psql")
        .args([
            &admin,
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
    assert!(drop.is_ok(), "psql is required (scripts/test installs it)");
    let create = std::process::Command::new("psql")
        .args([&admin, "-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert!(
        create.status.success(),
        "PostgreSQL is required for this suite: {}",
        text(&create)
    );
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

/// A managed certificate's status with its latest attempts (`GET
/// /api/v1/managed-certificates/{name}`).
pub async fn managed_view(server: &TestServer, name: &str) -> serde_json::Value {
    let (status, view, text) = server
        .get(
            &format!("/api/v1/managed-certificates/{name}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    view
}

/// Polls a managed certificate until `done` holds (60 s at most); `what` names the wait in the
/// failure.
pub async fn wait_managed(
    server: &TestServer,
    name: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = managed_view(server, name).await;
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} did not happen: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies managed-certificate declarations through the API.
pub async fn apply_managed(server: &TestServer, certificates: serde_json::Value) {
    let (status, _, body) = server
        .post(
            "/api/v1/managed-certificates/apply",
            Some(server.token()),
            &serde_json::json!({ "certificates": certificates }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Issues a certificate with a server-made key (`request`, as `POST /api/v1/certificates`
/// takes it) and writes its full chain and key to these files, for a TLS server to use.
pub async fn issue_to_files(
    server: &TestServer,
    request: serde_json::Value,
    full_chain: &Path,
    key: &Path,
) {
    let (status, body, text) = server
        .post("/api/v1/certificates", Some(server.token()), &request)
        .await;
    assert_eq!(status, 201, "{text}");
    std::fs::write(full_chain, body["full_chain_pem"].as_str().unwrap()).unwrap();
    std::fs::write(key, body["private_key_pem"].as_str().unwrap()).unwrap();
}

/// The value of the sample `series` (name and labels exactly as rendered) in OpenMetrics text.
pub fn metric_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}
