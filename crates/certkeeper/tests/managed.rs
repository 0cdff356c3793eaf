//! Managed certificates end to end: `certkeeper apply` (dry run, create, idempotent),
//! the reconciler issuing and deploying to file and webhook targets, `certkeeper status`,
//! `certkeeper renew`, and a declaration that cannot be served failing visibly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, certkeeper, text, wait_managed};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver: keeps every request body, answers 204.
async fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 65536];
                loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            kept.lock().unwrap().push(body.to_string());
                            break;
                        }
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, bodies)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_issue_deploy_status_renew() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(&config, "[lifecycle]\ntick_ms = 200\n").unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (hook_port, bodies) = receiver().await;
    let out = dir.path().join("deployed");
    let o = out.display();
    let declarations = dir.path().join("managed.toml");
    let password_file = dir.path().join("p12.pass");
    std::fs::write(&password_file, "correct horse\n").unwrap();
    let pw = password_file.display();
    // As root, hand the files to another user; otherwise to ourselves (chown needs root).
    let me = std::fs::metadata("/proc/self").unwrap();
    let (owner, expected_uid, expected_gid) = if me.uid() == 0 {
        ("nobody:nogroup".to_string(), 65534, 65534)
    } else {
        (format!("{}:{}", me.uid(), me.gid()), me.uid(), me.gid())
    };
    std::fs::write(
        &declarations,
        format!(
            r#"
[[certificate]]
name = "web"
sans = ["www.example.com", "example.com"]
owner = "team-web"
labels = {{ env = "prod" }}

[[certificate.targets]]
type = "file"
cert = "{o}/web.crt"
chain = "{o}/web.chain"
fullchain = "{o}/web.fullchain"
key = "{o}/web.key"

[[certificate]]
name = "api"
sans = ["api.example.com"]

[[certificate.targets]]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/deploy"

[[certificate]]
name = "external"
sans = ["ext.example.com"]
issuer = "letsencrypt"

[[certificate]]
name = "kept"
sans = ["kept.example.com"]
key = {{ algorithm = "ecdsa-p384", rotate = false }}

[[certificate.targets]]
type = "file"
fullchain = "{o}/kept.pem"
key = "{o}/kept.key"
pkcs12 = "{o}/kept.p12"
pkcs12_password_file = "{pw}"
owner = "{owner}"
mode = "0640"
key_mode = "0640"
"#
        ),
    )
    .unwrap();
    let root = server.data_dir.join("ca/root.crt");
    let cli = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&[
            "--server",
            &server.https,
            "--token",
            server.token(),
            "--ca-file",
            root.to_str().unwrap(),
        ]);
        certkeeper(&full, dir.path(), &[])
    };

    // Dry run: four creations, nothing stored.
    let dry = cli(&[
        "apply",
        declarations.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    assert!(dry.status.success(), "{}", text(&dry));
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["applied"], false);
    assert_eq!(report["changes"].as_array().unwrap().len(), 4);
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["change"] == "create")
    );
    let (_, list, _) = server
        .get("/api/v1/managed-certificates", Some(server.token()))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 0);

    // Apply: the reconciler issues and deploys.
    let applied = cli(&["apply", declarations.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let web = wait_managed(&server, "web", "first issuance", |v| v["state"] == "ready").await;
    let serial = web["current_serial"].as_str().unwrap().to_string();
    assert_eq!(web["targets"][0]["deployed_serial"], serial.as_str());
    let key_mode = std::fs::metadata(out.join("web.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(out.join("web.chain"))
        .arg(out.join("web.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    let (_, inventory, _) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(inventory["labels"]["managed"], "web");
    assert_eq!(inventory["labels"]["owner"], "team-web");
    // The next renewal is planned inside the lifetime, with its reason.
    assert_eq!(web["next_action_reason"], "lifetime_fraction");

    let api = wait_managed(&server, "api", "webhook deployment", |v| {
        v["state"] == "ready"
    })
    .await;
    let hooks = bodies.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook: Value = serde_json::from_str(&hooks[0]).unwrap();
    assert_eq!(hook["serial"], api["current_serial"]);
    assert!(
        hook.get("private_key_pem").is_none(),
        "the key is only sent when allowed"
    );

    // An issuer that is not configured: failing, with the reason, and retried with backoff.
    let external = wait_managed(&server, "external", "a failed attempt", |v| {
        v["state"] == "failing"
    })
    .await;
    assert_eq!(external["consecutive_failures"], 1);
    assert!(
        external["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("letsencrypt")
    );

    // Applying the same file again changes nothing.
    let again = cli(&["apply", declarations.to_str().unwrap(), "--output", "json"]);
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["change"] == "unchanged"),
        "{report}"
    );

    // Renew now: a new certificate, deployed; both attempts recorded.
    let web_key_before = std::fs::read_to_string(out.join("web.key")).unwrap();
    let renewed = cli(&["renew", "web"]);
    assert!(renewed.status.success(), "{}", text(&renewed));
    let web = wait_managed(&server, "web", "the requested renewal", |v| {
        v["current_serial"].as_str() != Some(serial.as_str()) && v["state"] == "ready"
    })
    .await;
    let new_serial = web["current_serial"].as_str().unwrap();
    let on_disk = std::fs::read_to_string(out.join("web.crt")).unwrap();
    let der = pem::parse(&on_disk).unwrap().into_contents();
    assert_eq!(
        certkeeper_pki::parse_certificate(&der).unwrap().serial,
        new_serial
    );
    assert_eq!(web["attempts"].as_array().unwrap().len(), 2);

    // A kept key: PKCS#12 and PEM files with the declared owner and modes; a renewal brings a
    // new certificate for the same key.
    let kept = wait_managed(&server, "kept", "first issuance", |v| v["state"] == "ready").await;
    let first_serial = kept["current_serial"].as_str().unwrap().to_string();
    let key_before = std::fs::read_to_string(out.join("kept.key")).unwrap();
    for (file, mode) in [
        ("kept.pem", 0o640),
        ("kept.key", 0o640),
        ("kept.p12", 0o640),
    ] {
        let meta = std::fs::metadata(out.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (expected_uid, expected_gid),
            "{file}"
        );
    }
    let p12_serial = |serial: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl pkcs12 -in '{}' -passin 'file:{}' -nokeys -clcerts | openssl x509 -noout -serial",
                out.join("kept.p12").display(),
                password_file.display()
            ))
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            shown.contains(&format!("serial={serial}")),
            "{shown} {}",
            text(&out)
        );
    };
    p12_serial(&first_serial);
    assert!(cli(&["renew", "kept"]).status.success());
    let kept = wait_managed(&server, "kept", "the kept-key renewal", |v| {
        v["current_serial"].as_str() != Some(first_serial.as_str()) && v["state"] == "ready"
    })
    .await;
    let second_serial = kept["current_serial"].as_str().unwrap();
    p12_serial(second_serial);
    assert_eq!(
        std::fs::read_to_string(out.join("kept.key")).unwrap(),
        key_before,
        "rotate = false keeps the key"
    );
    assert!(key_before.contains("PRIVATE KEY"));
    let fullchain = std::fs::read_to_string(out.join("kept.pem")).unwrap();
    let leaf = certkeeper_pki::parse_certificate(&pem::parse(&fullchain).unwrap().into_contents())
        .unwrap();
    assert_eq!(leaf.serial, second_serial);
    assert_eq!(leaf.key_algorithm, "ecdsa-p384");
    assert_eq!(leaf.spki_sha256, key_spki_sha256(&key_before));
    // Web's key changed at its renewal (rotate defaults to true).
    assert_ne!(
        std::fs::read_to_string(out.join("web.key")).unwrap(),
        web_key_before
    );

    // Status as a table and as JSON.
    let table = cli(&["status"]);
    assert!(table.status.success(), "{}", text(&table));
    let shown = String::from_utf8_lossy(&table.stdout);
    assert!(
        shown.contains("web") && shown.contains("failing"),
        "{shown}"
    );
    let unknown = cli(&["renew", "nope"]);
    assert!(!unknown.status.success());
}

fn psql(url: &str, sql: &str) -> String {
    let output = std::process::Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .expect("psql (scripts/test installs it)");
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_postgres_issue_each_managed_certificate_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_postgres_database("managed_two");
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 4194304\n\n[lifecycle]\ntick_ms = 100\nconcurrency = 8\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--database-url", &url];
    let first = TestServer::start(&dir.path().join("a"), &args);
    // The second server shares the database, the CA and the audit key.
    let second_dir = dir.path().join("b");
    std::fs::create_dir_all(&second_dir).unwrap();
    std::fs::set_permissions(&second_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    copy_dir(&dir.path().join("a/ca"), &second_dir.join("ca"));
    std::fs::copy(dir.path().join("a/audit.key"), second_dir.join("audit.key")).unwrap();
    let second = TestServer::start(&second_dir, &args);

    let declarations: Vec<Value> = (0..1000)
        .map(|i| serde_json::json!({"name": format!("svc-{i:04}"), "sans": [format!("svc{i}.example.com")]}))
        .collect();
    let (status, body, text) = first
        .post(
            "/api/v1/managed-certificates/apply",
            Some(first.token()),
            &serde_json::json!({"certificates": declarations}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["changes"].as_array().unwrap().len(), 1000);

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = psql(
            &url,
            "SELECT count(*) FROM managed_certificates WHERE state = 'ready'",
        );
        if ready == "1000" {
            break;
        }
        assert!(Instant::now() < deadline, "only {ready} of 1000 ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Exactly one attempt and one certificate per managed certificate, from either server.
    let repeated = psql(
        &url,
        "SELECT count(*) FROM (SELECT managed_name FROM renewal_attempts GROUP BY managed_name HAVING count(*) <> 1) AS r",
    );
    assert_eq!(repeated, "0");
    let issued = psql(
        &url,
        "SELECT count(*) FROM certificate_labels WHERE name = 'managed'",
    );
    assert_eq!(issued, "1000");
    let distinct = psql(
        &url,
        "SELECT count(DISTINCT value) FROM certificate_labels WHERE name = 'managed'",
    );
    assert_eq!(distinct, "1000");
    // Both servers took part.
    let servers = psql(
        &url,
        "SELECT count(DISTINCT detail::json->>'server') FROM audit_log WHERE action = 'managed.renewal'",
    );
    assert_eq!(servers, "2", "both servers should have renewed some");
    drop(second);
    drop(first);
    let name = url.rsplit_once('/').unwrap().1.to_string();
    let admin = url.rsplit_once('/').unwrap().0.to_string() + "/postgres";
    let _ = std::process::Command::new("psql")
        .args([
            &admin,
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}

/// SHA-256 (hex) of the SubjectPublicKeyInfo of a PEM private key.
fn key_spki_sha256(key_pem: &str) -> String {
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_renewal_burst_leaves_no_mismatch_no_stuck_certificate_no_loop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 4194304\n\n[lifecycle]\ntick_ms = 100\nconcurrency = 4\nlease = \"30s\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let args = ["--config", config.to_str().unwrap(), "--listen", &listen];
    let mut server = TestServer::start(&data, &args);
    let token = server.token().to_string();
    let out = dir.path().join("out");
    let count = 1000;
    let declarations: Vec<Value> = (0..count)
        .map(|i| {
            serde_json::json!({"name": format!("svc-{i:04}"), "sans": [format!("svc{i}.example.com")],
                "targets": [{"type": "file",
                    "cert": out.join(format!("svc-{i:04}.crt")), "key": out.join(format!("svc-{i:04}.key"))}]})
        })
        .collect();
    let (status, _, body) = server
        .post(
            "/api/v1/managed-certificates/apply",
            Some(&token),
            &serde_json::json!({"certificates": declarations}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Kill it in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list, _) = server
            .get("/api/v1/managed-certificates", Some(&token))
            .await;
        let ready = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "ready")
            .count();
        if ready >= 40 {
            assert!(ready < count, "the burst finished before the kill");
            break;
        }
        assert!(Instant::now() < deadline, "the burst did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();

    let mut server = TestServer::start(&data, &args);
    server.token = Some(token.clone());
    // Attempts cut by the kill are taken over once their lease (30 s) has passed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let list = loop {
        let (_, list, _) = server
            .get("/api/v1/managed-certificates", Some(&token))
            .await;
        let ready = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "ready")
            .count();
        if ready == count {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "stuck: only {ready} of {count} ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for managed in list.as_array().unwrap() {
        let name = managed["name"].as_str().unwrap();
        // Every target holds a certificate that matches its key, and it is the one in force.
        let cert = std::fs::read(out.join(format!("{name}.crt"))).unwrap();
        let der = pem::parse(&cert).unwrap().into_contents();
        let summary = certkeeper_pki::parse_certificate(&der).unwrap();
        let key = std::fs::read_to_string(out.join(format!("{name}.key"))).unwrap();
        assert_eq!(
            summary.spki_sha256,
            key_spki_sha256(&key),
            "{name}: certificate and key differ"
        );
        assert_eq!(managed["current_serial"], summary.serial.as_str(), "{name}");
    }
    // No issuance loop: at most one repeat, for the attempts the kill cut short.
    let view_of = |name: String| {
        let server = &server;
        let token = token.clone();
        async move {
            let (_, view, _) = server
                .get(
                    &format!("/api/v1/managed-certificates/{name}"),
                    Some(&token),
                )
                .await;
            view["attempts"].as_array().unwrap().len()
        }
    };
    let mut repeated = 0;
    for i in 0..count {
        let attempts = view_of(format!("svc-{i:04}")).await;
        assert!(attempts <= 2, "svc-{i:04}: {attempts} attempts");
        repeated += usize::from(attempts == 2);
    }
    assert!(
        repeated <= 8,
        "{repeated} repeated attempts for a concurrency of 4"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_managed_certificates_issued_together_plan_their_renewals_apart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 16777216\n\n[lifecycle]\ntick_ms = 50\nconcurrency = 16\ninternal_concurrency = 6\n",
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let count = 10_000;
    let declarations: Vec<Value> = (0..count)
        .map(|i| serde_json::json!({"name": format!("m{i:05}"), "sans": [format!("m{i}.example.com")]}))
        .collect();
    common::apply_managed(&server, serde_json::json!(declarations)).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let list = loop {
        let (_, list, _) = server
            .get("/api/v1/managed-certificates", Some(server.token()))
            .await;
        let ready = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "ready")
            .count();
        if ready == count {
            break list;
        }
        assert!(Instant::now() < deadline, "only {ready} of {count} issued");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // The internal CA's bound held: never more than 6 attempts at once, and the bound was
    // reached (the work queued behind it rather than running one by one).
    let (status, loads, _) = server
        .get("/api/v1/lifecycle/issuers", Some(server.token()))
        .await;
    assert_eq!(status, 200, "{loads}");
    let internal = loads
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "internal")
        .unwrap();
    println!("internal CA load: {internal}");
    assert_eq!(internal["concurrency"], 6);
    assert_eq!(internal["attempts"], count);
    let max = internal["max_in_flight"].as_u64().unwrap();
    assert!((2..=6).contains(&max), "{max} attempts at once");
    // The planned renewal times: a histogram per day, and no minute with more than 0.1 %.
    let mut per_minute: std::collections::BTreeMap<i64, usize> = Default::default();
    for managed in list.as_array().unwrap() {
        let at = time::OffsetDateTime::parse(
            managed["next_action_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        *per_minute.entry(at / 60).or_default() += 1;
    }
    let first_minute = *per_minute.keys().next().unwrap();
    let mut per_day: std::collections::BTreeMap<i64, usize> = Default::default();
    for (minute, n) in &per_minute {
        *per_day.entry((minute - first_minute) / 1440).or_default() += n;
    }
    for (day, n) in &per_day {
        println!("day +{day:>2}: {n:>5} {}", "#".repeat(n / 50));
    }
    let busiest = per_minute.values().copied().max().unwrap();
    println!("busiest minute: {busiest} of {count}");
    assert!(
        busiest <= count / 1000,
        "{busiest} renewals planned in one minute"
    );
    assert!(
        per_day.len() >= 8,
        "renewals spread over {} days only",
        per_day.len()
    );
}
