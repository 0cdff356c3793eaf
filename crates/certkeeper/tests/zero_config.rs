//! `certkeeper serve` with no flags and no configuration: the README's first command.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_uses_the_documented_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_certkeeper"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("CERTKEEPER_DATA_DIR")
        .env_remove("CERTKEEPER_CONFIG")
        .env_remove("CERTKEEPER_DATABASE_URL")
        .env_remove("CERTKEEPER_LISTEN")
        .env_remove("CERTKEEPER_HTTP_LISTEN")
        .env_remove("CERTKEEPER_AGENTS_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Admin token") {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("serve exited: {banner}");
        }
        banner.push_str(&line);
    }
    let data = dir.path().join("certkeeper-data");
    assert!(banner.contains("https://127.0.0.1:8443/api/v1"), "{banner}");
    assert!(banner.contains("http://127.0.0.1:8080"), "{banner}");
    assert!(
        banner.contains("Agents (mTLS):     https://127.0.0.1:8444"),
        "{banner}"
    );
    assert!(banner.contains("./certkeeper-data/ca/root.crt"), "{banner}");
    let token = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("Admin token:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("ck_"), "{banner}");
    assert!(
        data.join("certkeeper.db").exists(),
        "embedded SQLite database"
    );

    // The fingerprint printed is the root certificate's.
    let root = std::fs::read(data.join("ca/root.crt")).unwrap();
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER"])
        .current_dir(&data)
        .arg("-in")
        .arg("ca/root.crt")
        .output()
        .unwrap()
        .stdout;
    let fingerprint = Command::new("openssl")
        .args(["dgst", "-sha256", "-hex"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(&der)?;
            p.wait_with_output()
        });
    let hex = String::from_utf8(fingerprint.unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_uppercase();
    let colon: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(
        banner.contains(&colon.join(":")),
        "{banner}\nexpected {}",
        colon.join(":")
    );
    // The root is ECDSA P-256.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "ca/root.crt"])
        .current_dir(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("NIST CURVE: P-256"));

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&root).unwrap()])
        .build()
        .unwrap();
    let response = client
        .post("https://127.0.0.1:8443/api/v1/certificates")
        .bearer_auth(&token)
        .json(&serde_json::json!({"profile": "tls-server", "sans": ["localhost"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let plain = reqwest::get("http://127.0.0.1:8080/healthz").await.unwrap();
    assert_eq!(plain.status().as_u16(), 200);

    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM stops the server cleanly"
    );
}
