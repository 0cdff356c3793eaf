//! Real peers the lifecycle tests run against: Pebble (with its TLS certificate from
//! certkeeper), nginx (a private instance) and BIND 9 (a zone that takes TSIG-signed dynamic
//! updates).
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestServer, free_port};

/// A child process killed (and reaped) when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first: nginx and named stop their workers on it.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts Pebble on `port`, resolving names through the DNS server on `dns_port`, with a TLS
/// certificate for 127.0.0.1 issued by `server` (so that certkeeper's root is what the issuer
/// configuration trusts). `validity` sets the lifetime of the certificates it issues.
pub async fn start_pebble(
    dir: &Path,
    server: &TestServer,
    dns_port: u16,
    port: u16,
    http01_port: u16,
    validity: Option<u64>,
) -> Running {
    let cert = dir.join("pebble.crt");
    let key = dir.join("pebble.key");
    super::issue_to_files(
        server,
        serde_json::json!({"profile": "mtls", "sans": ["localhost", "127.0.0.1"]}),
        &cert,
        &key,
    )
    .await;
    let config = dir.join("pebble.json");
    let mut settings = serde_json::json!({
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{}", free_port()),
        "certificate": cert, "privateKey": key,
        "httpPort": http01_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    });
    if let Some(seconds) = validity {
        settings["certificateValidityPeriod"] = serde_json::json!(seconds);
    }
    std::fs::write(
        &config,
        serde_json::json!({ "pebble": settings }).to_string(),
    )
    .unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (Debian package pebble; scripts/test installs it)");
    let running = Running(child);
    wait_for_port(port, "pebble");
    running
}

pub fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
        .to_string()
}

/// Starts a private nginx with the configuration `http_block` (the inside of `http {}`) in
/// `work`, and waits until `port` accepts connections.
pub fn start_nginx(work: &Path, http_block: &str, port: u16) -> Running {
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let w = work.display();
    std::fs::write(
        work.join("nginx.conf"),
        format!(
            "worker_processes 1;\nerror_log {w}/error.log info;\npid {w}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {w}/tmp;\n{http_block}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new(nginx_binary())
        .args(["-p", &w.to_string(), "-c", &format!("{w}/nginx.conf")])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (scripts/test installs nginx-light)");
    let running = Running(child);
    wait_for_port(port, "nginx");
    running
}

/// BIND 9 serving the zone `example.test` (every name in it resolves to 127.0.0.1) that
/// takes TXT updates signed with the TSIG key `acme-key.`.
pub struct Bind {
    _named: Running,
    pub port: u16,
    /// The TSIG secret, base64.
    pub secret: String,
}

impl Bind {
    pub fn start(dir: &Path) -> Bind {
        let work = dir.join("bind");
        std::fs::create_dir_all(&work).unwrap();
        let port = free_port();
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).unwrap();
        let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret);
        let w = work.display();
        std::fs::write(
            work.join("example.test.zone"),
            "$TTL 60\n@ IN SOA ns1.example.test. hostmaster.example.test. ( 1 3600 600 86400 60 )\n  IN NS ns1.example.test.\nns1 IN A 127.0.0.1\n* IN A 127.0.0.1\n@ IN A 127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            work.join("named.conf"),
            format!(
                "options {{\n directory \"{w}\";\n pid-file none;\n session-keyfile none;\n managed-keys-directory \"{w}\";\n listen-on port {port} {{ 127.0.0.1; }};\n listen-on-v6 {{ none; }};\n recursion no;\n allow-query {{ 127.0.0.1; }};\n dnssec-validation no;\n notify no;\n}};\ncontrols {{ }};\nkey \"acme-key.\" {{\n algorithm hmac-sha256;\n secret \"{secret}\";\n}};\nzone \"example.test\" {{\n type primary;\n file \"{w}/example.test.zone\";\n update-policy {{ grant acme-key. zonesub TXT; }};\n}};\n"
            ),
        )
        .unwrap();
        let named = ["/usr/sbin/named", "/usr/bin/named"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("named");
        let child = Command::new(named)
            .args(["-g", "-c"])
            .arg(work.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("named.log")).unwrap())
            .spawn()
            .expect("named (Debian package bind9; scripts/test installs it)");
        let running = Running(child);
        wait_for_port(port, "named");
        Bind {
            _named: running,
            port,
            secret,
        }
    }

    /// The TXT values of `name` (absolute), through `dig`.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let output = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+short",
                "TXT",
                name,
            ])
            .output()
            .expect("dig (Debian package bind9-dnsutils; scripts/test installs it)");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_matches('"').to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// `cfssl ocspserve` (Debian `golang-cfssl`) on loopback `port`, answering from `responses`
/// (one base64 OCSP response per line, as `cfssl ocspsign` prints them).
pub fn start_cfssl_ocsp(responses: &Path, port: u16) -> Running {
    let child = Command::new("cfssl")
        .args([
            "ocspserve",
            "-address",
            "127.0.0.1",
            "-port",
            &port.to_string(),
        ])
        .arg("-responses")
        .arg(responses)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cfssl (scripts/test installs golang-cfssl)");
    let running = Running(child);
    wait_for_port(port, "cfssl ocspserve");
    running
}
