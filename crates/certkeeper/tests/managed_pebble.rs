//! Managed certificates from an external ACME CA (Pebble, Let's Encrypt's test server) through
//! http-01 answered by certkeeper and dns-01 through a hook, and issuer fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::acme::DnsServer;
use common::{TestServer, free_port};
use serde_json::Value;

struct Pebble(Child);

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Pebble on `port` with a TLS certificate for 127.0.0.1 issued by `server` (so that
/// certkeeper's root is what the issuer configuration trusts).
async fn start_pebble(
    dir: &std::path::Path,
    server: &TestServer,
    dns: &DnsServer,
    port: u16,
    http01_port: u16,
) -> Pebble {
    let (status, body, text) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "mtls", "sans": ["localhost", "127.0.0.1"]}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let cert = dir.join("pebble.crt");
    let key = dir.join("pebble.key");
    std::fs::write(&cert, body["full_chain_pem"].as_str().unwrap()).unwrap();
    std::fs::write(&key, body["private_key_pem"].as_str().unwrap()).unwrap();
    let config = dir.join("pebble.json");
    std::fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{}", free_port()),
            "certificate": cert, "privateKey": key,
            "httpPort": http01_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        }})
        .to_string(),
    )
    .unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{}", dns.dns_port)])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (Debian package pebble; scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Pebble(child)
}

async fn wait_ready(server: &TestServer, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, view, body) = server
            .get(
                &format!("/api/v1/managed-certificates/{name}"),
                Some(server.token()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if view["state"] == "ready" {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became ready: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn issuer_of(path: &std::path::Path) -> String {
    let der = pem::parse(std::fs::read(path).unwrap())
        .unwrap()
        .into_contents();
    certkeeper_pki::parse_certificate(&der).unwrap().issuer
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_certificates_from_pebble_over_http01_and_dns01_and_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let pebble_port = free_port();
    let directory = format!("https://127.0.0.1:{pebble_port}/dir");
    let root = dir.path().join("data/ca/root.crt");
    let hook = dir.path().join("dns-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\ncase \"$1\" in\npresent) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" {m}/set-txt ;;\ncleanup) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\"}}\" {m}/clear-txt ;;\nesac\n",
            m = dns.management_url()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[lifecycle]
tick_ms = 200
backoff_base = "1s"
backoff_cap = "2s"

[[issuer]]
name = "pebble"
directory = "{directory}"
ca_file = "{cert}"
contact = "mailto:pki@example.com"
challenge = "http-01"
http01_listen = "127.0.0.1:{http01_port}"

[[issuer]]
name = "pebble-dns"
directory = "{directory}"
ca_file = "{cert}"
challenge = "dns-01"
dns01_hook = "{hook}"

[[issuer]]
name = "unreachable"
directory = "https://127.0.0.1:9/dir"
challenge = "http-01"
http01_listen = "127.0.0.1:{http01_port}"
"#,
            cert = root.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let _pebble = start_pebble(dir.path(), &server, &dns, pebble_port, http01_port).await;
    let out = dir.path().join("out");
    let o = out.display();
    let declarations: Vec<Value> = vec![
        serde_json::json!({"name": "web", "sans": ["www.example.com"], "issuer": "pebble",
            "targets": [{"type": "file", "fullchain": format!("{o}/web.pem"), "key": format!("{o}/web.key"), "cert": format!("{o}/web.crt")}]}),
        serde_json::json!({"name": "wild", "sans": ["*.apps.example.com", "apps.example.com"], "issuer": "pebble-dns",
            "targets": [{"type": "file", "cert": format!("{o}/wild.crt"), "key": format!("{o}/wild.key")}]}),
        serde_json::json!({"name": "fallback", "sans": ["fb.example.com"], "issuer": "unreachable",
            "fallback_issuer": "internal", "fallback_after": 2,
            "targets": [{"type": "file", "cert": format!("{o}/fb.crt"), "key": format!("{o}/fb.key")}]}),
    ];
    let (status, _, body) = server
        .post(
            "/api/v1/managed-certificates/apply",
            Some(server.token()),
            &serde_json::json!({"certificates": declarations}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // http-01 answered by certkeeper's own responder.
    let web = wait_ready(&server, "web").await;
    assert!(
        issuer_of(&out.join("web.crt")).contains("Pebble"),
        "{}",
        issuer_of(&out.join("web.crt"))
    );
    assert_eq!(web["attempts"][0]["issuer"], "pebble");
    // The account key is kept, private.
    let account = dir.path().join("data/issuers/pebble.json");
    assert_eq!(
        std::fs::metadata(&account).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The certificate from the external CA is in the inventory.
    let serial = web["current_serial"].as_str().unwrap();
    let (_, inventory, _) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(inventory["source"], "external");
    assert_eq!(inventory["labels"]["managed"], "web");

    // dns-01 through the hook, with a wildcard.
    let _ = wait_ready(&server, "wild").await;
    assert!(issuer_of(&out.join("wild.crt")).contains("Pebble"));

    // The primary cannot be reached: two failures, then the fallback issues.
    let fallback = wait_ready(&server, "fallback").await;
    let attempts = fallback["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert_eq!(attempts[0]["issuer"], "internal");
    assert_eq!(attempts[0]["outcome"], "success");
    assert!(
        attempts[1..]
            .iter()
            .all(|a| a["issuer"] == "unreachable" && a["outcome"] == "failure")
    );
    assert!(!issuer_of(&out.join("fb.crt")).contains("Pebble"));

    // Renew from Pebble: a new certificate replaces the first.
    let (status, _, body) = server
        .post(
            "/api/v1/managed-certificates/web/renew",
            Some(server.token()),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view, _) = server
            .get("/api/v1/managed-certificates/web", Some(server.token()))
            .await;
        if view["current_serial"].as_str() != Some(serial) && view["state"] == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal from Pebble: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_answering_rate_limited_is_not_asked_again_before_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    // The upstream CA: another certkeeper whose ACME server allows one order per account and hour.
    let upstream_config = common::acme::acme_config(
        dir.path(),
        &dns,
        http01_port,
        free_port(),
        "[acme.rate_limits]\norders_per_account = 1\nwindow = \"1h\"\n",
    );
    let upstream_dir = dir.path().join("upstream");
    std::fs::create_dir_all(&upstream_dir).unwrap();
    let upstream_toml = upstream_dir.join("certkeeper.toml");
    std::fs::rename(&upstream_config, &upstream_toml).unwrap();
    let upstream = TestServer::start(
        &upstream_dir.join("data"),
        &["--config", upstream_toml.to_str().unwrap()],
    );
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\ntick_ms = 200\nbackoff_base = \"1s\"\nbackoff_cap = \"2s\"\n\n[[issuer]]\nname = \"upstream\"\ndirectory = \"{}\"\nca_file = \"{}\"\nchallenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http01_port}\"\n",
            upstream.url("/acme/default/directory"),
            upstream_dir.join("data/ca/root.crt").display()
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let declarations = serde_json::json!({"certificates": [
        {"name": "one", "sans": ["one.example.com"], "issuer": "upstream"},
        {"name": "two", "sans": ["two.example.com"], "issuer": "upstream"},
    ]});
    let (status, _, body) = server
        .post(
            "/api/v1/managed-certificates/apply",
            Some(server.token()),
            &declarations,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let view = |name: &'static str| {
        let server = &server;
        async move {
            let (_, view, _) = server
                .get(
                    &format!("/api/v1/managed-certificates/{name}"),
                    Some(server.token()),
                )
                .await;
            view
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ready, limited) = loop {
        let (one, two) = (view("one").await, view("two").await);
        let states = (one["state"].clone(), two["state"].clone());
        if states == ("ready".into(), "failing".into()) {
            break (one, two);
        }
        if states == ("failing".into(), "ready".into()) {
            break (two, one);
        }
        assert!(Instant::now() < deadline, "{one:#} {two:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ready["current_serial"].is_string());
    let error = limited["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("rateLimited"), "{error}");
    assert_eq!(limited["next_action_reason"], "the issuer's Retry-After");
    // The backoff alone (1-2 s) would retry at once; Retry-After (about an hour) wins.
    let next = time::OffsetDateTime::parse(
        limited["next_action_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        next > time::OffsetDateTime::now_utc() + time::Duration::minutes(50),
        "{next}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let name = limited["name"].as_str().unwrap().to_string();
    let (_, again, _) = server
        .get(
            &format!("/api/v1/managed-certificates/{name}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(
        again["attempts"].as_array().unwrap().len(),
        1,
        "asked again: {again:#}"
    );
}
