//! Managed certificates from external ACME CAs: Pebble (Let's Encrypt's test server) through
//! http-01 answered by certkeeper or written to a webroot nginx serves, dns-01 through a hook
//! or RFC 2136 updates to BIND, issuer fallback, short-lived certificates renewed again and
//! again; and another certkeeper as CA for rate limits and ACME Renewal Information.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::acme::DnsServer;
use common::peers::{Bind, start_nginx, start_pebble};
use common::{TestServer, apply_managed, free_port, managed_view, wait_managed};
use serde_json::Value;

async fn wait_ready(server: &TestServer, name: &str) -> Value {
    wait_managed(server, name, "readiness", |v| v["state"] == "ready").await
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
    let (server, _pebble) = server_and_pebble(
        dir.path(),
        &config,
        dns.dns_port,
        pebble_port,
        http01_port,
        None,
    )
    .await;
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
    apply_managed(&server, serde_json::json!(declarations)).await;

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
    wait_managed(&server, "web", "a renewal from Pebble", |v| {
        v["current_serial"].as_str() != Some(serial) && v["state"] == "ready"
    })
    .await;
}

/// A certkeeper server with the configuration file `config`, then Pebble on `pebble_port`
/// (resolving through the DNS server on `dns_port`, validating http-01 on `http01_port`).
async fn server_and_pebble(
    dir: &std::path::Path,
    config: &std::path::Path,
    dns_port: u16,
    pebble_port: u16,
    http01_port: u16,
    validity: Option<u64>,
) -> (TestServer, common::peers::Running) {
    let server = TestServer::start(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    let pebble = start_pebble(dir, &server, dns_port, pebble_port, http01_port, validity).await;
    (server, pebble)
}

/// Another certkeeper as the upstream ACME CA (`acme_extra` in its `[acme]`), and a server
/// whose `[[issuer]] upstream` points at it over http-01 (`lifecycle_extra` in its
/// `[lifecycle]`). Names resolve through `dns` to 127.0.0.1.
fn upstream_and_server(
    dir: &std::path::Path,
    dns: &DnsServer,
    acme_extra: &str,
    lifecycle_extra: &str,
) -> (TestServer, TestServer) {
    let http01_port = free_port();
    let upstream_dir = dir.join("upstream");
    std::fs::create_dir_all(&upstream_dir).unwrap();
    let upstream_config =
        common::acme::acme_config(&upstream_dir, dns, http01_port, free_port(), acme_extra);
    let upstream = TestServer::start(
        &upstream_dir.join("data"),
        &["--config", upstream_config.to_str().unwrap()],
    );
    let config = dir.join("certkeeper.toml");
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\ntick_ms = 200\n{lifecycle_extra}\n[[issuer]]\nname = \"upstream\"\ndirectory = \"{}\"\nca_file = \"{}\"\nchallenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http01_port}\"\n",
            upstream.url("/acme/default/directory"),
            upstream_dir.join("data/ca/root.crt").display()
        ),
    )
    .unwrap();
    let server = TestServer::start(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    (upstream, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_answering_rate_limited_is_not_asked_again_before_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    // The upstream CA: another certkeeper whose ACME server allows one order per account and hour.
    let (_upstream, server) = upstream_and_server(
        dir.path(),
        &dns,
        "[acme.rate_limits]\norders_per_account = 1\nwindow = \"1h\"\n",
        "backoff_base = \"1s\"\nbackoff_cap = \"2s\"\n",
    );
    apply_managed(
        &server,
        serde_json::json!([
            {"name": "one", "sans": ["one.example.com"], "issuer": "upstream"},
            {"name": "two", "sans": ["two.example.com"], "issuer": "upstream"},
        ]),
    )
    .await;
    let view = |name: &'static str| managed_view(&server, name);
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

#[tokio::test(flavor = "multi_thread")]
async fn pebble_over_rfc2136_updates_to_bind_and_an_http01_webroot_served_by_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let bind = Bind::start(dir.path());
    let http01_port = free_port();
    let pebble_port = free_port();
    let webroot = dir.path().join("webroot");
    std::fs::create_dir_all(&webroot).unwrap();
    let _nginx = start_nginx(
        &dir.path().join("nginx"),
        &format!(
            "  server {{\n    listen 127.0.0.1:{http01_port};\n    root {};\n  }}",
            webroot.display()
        ),
        http01_port,
    );
    let directory = format!("https://127.0.0.1:{pebble_port}/dir");
    let root = dir.path().join("data/ca/root.crt");
    let config = dir.path().join("certkeeper.toml");
    let issuer = |name: &str, rest: &str| {
        format!(
            "[[issuer]]\nname = \"{name}\"\ndirectory = \"{directory}\"\nca_file = \"{}\"\n{rest}\n",
            root.display()
        )
    };
    let mut wrong = [0u8; 32];
    aws_lc_rs::rand::fill(&mut wrong).unwrap();
    let wrong = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, wrong);
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\ntick_ms = 200\nbackoff_base = \"1h\"\n\n{}{}{}",
            issuer(
                "pebble-rfc2136",
                &format!(
                    "challenge = \"dns-01\"\n[issuer.rfc2136]\nserver = \"127.0.0.1:{}\"\nzone = \"example.test\"\nkey_name = \"acme-key\"\nkey_secret = \"{}\"\n",
                    bind.port, bind.secret
                )
            ),
            issuer(
                "pebble-wrong-key",
                &format!(
                    "challenge = \"dns-01\"\n[issuer.rfc2136]\nserver = \"127.0.0.1:{}\"\nzone = \"example.test\"\nkey_name = \"acme-key\"\nkey_secret = \"{wrong}\"\n",
                    bind.port
                )
            ),
            issuer(
                "pebble-webroot",
                &format!(
                    "challenge = \"http-01\"\nhttp01_webroot = \"{}\"\n",
                    webroot.display()
                )
            ),
        ),
    )
    .unwrap();
    let (server, _pebble) = server_and_pebble(
        dir.path(),
        &config,
        bind.port,
        pebble_port,
        http01_port,
        None,
    )
    .await;
    let out = dir.path().join("out");
    let o = out.display();
    apply_managed(
        &server,
        serde_json::json!([
            {"name": "dyn", "sans": ["*.dyn.example.test", "dyn.example.test"], "issuer": "pebble-rfc2136",
             "targets": [{"type": "file", "cert": format!("{o}/dyn.crt"), "key": format!("{o}/dyn.key")}]},
            {"name": "static", "sans": ["www.example.test"], "issuer": "pebble-webroot",
             "targets": [{"type": "file", "cert": format!("{o}/static.crt"), "key": format!("{o}/static.key")}]},
            {"name": "refused", "sans": ["refused.example.test"], "issuer": "pebble-wrong-key"},
        ]),
    )
    .await;

    // dns-01 through TSIG-signed updates: the wildcard and its base name validated, and the
    // records removed afterwards.
    let _ = wait_ready(&server, "dyn").await;
    assert!(issuer_of(&out.join("dyn.crt")).contains("Pebble"));
    assert_eq!(
        bind.txt("_acme-challenge.dyn.example.test."),
        Vec::<String>::new()
    );
    // http-01 through files under the webroot nginx serves, removed afterwards.
    let _ = wait_ready(&server, "static").await;
    assert!(issuer_of(&out.join("static.crt")).contains("Pebble"));
    let left: Vec<_> = std::fs::read_dir(webroot.join(".well-known/acme-challenge"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A key BIND does not know: the update is refused, and the attempt says so.
    let refused = wait_managed(&server, "refused", "a failed attempt", |v| {
        v["state"] == "failing"
    })
    .await;
    let error = refused["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("refused the update"), "{error}");
}

/// The certificate nginx serves on `port`: (serial, notAfter as Unix seconds).
fn served(port: u16) -> Option<(String, i64)> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername short.example.com </dev/null 2>/dev/null | openssl x509 -noout -serial -enddate -dateopt iso_8601"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let serial = text
        .lines()
        .find_map(|l| l.strip_prefix("serial="))?
        .to_ascii_lowercase();
    let end = text.lines().find_map(|l| l.strip_prefix("notAfter="))?;
    let end = time::PrimitiveDateTime::parse(
        end.trim().trim_end_matches('Z'),
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()?
    .assume_utc()
    .unix_timestamp();
    Some((serial, end))
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificates_from_pebble_renew_again_and_again_and_nginx_never_serves_an_expired_one()
 {
    const VALIDITY: u64 = 40;
    const WATCH: Duration = Duration::from_secs(150);
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let pebble_port = free_port();
    let tls_port = free_port();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\ntick_ms = 200\nbackoff_base = \"1s\"\nbackoff_cap = \"2s\"\n\n[[issuer]]\nname = \"pebble\"\ndirectory = \"https://127.0.0.1:{pebble_port}/dir\"\nca_file = \"{}\"\nchallenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http01_port}\"\n",
            dir.path().join("data/ca/root.crt").display()
        ),
    )
    .unwrap();
    let (server, _pebble) = server_and_pebble(
        dir.path(),
        &config,
        dns.dns_port,
        pebble_port,
        http01_port,
        Some(VALIDITY),
    )
    .await;
    // nginx starts with a placeholder certificate from certkeeper's own CA.
    let work = dir.path().join("nginx");
    std::fs::create_dir_all(&work).unwrap();
    common::issue_to_files(
        &server,
        serde_json::json!({"profile": "tls-server", "sans": ["short.example.com"]}),
        &work.join("fullchain.pem"),
        &work.join("key.pem"),
    )
    .await;
    let w = work.display();
    let _nginx = start_nginx(
        &work,
        &format!(
            "  server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    ssl_certificate {w}/fullchain.pem;\n    ssl_certificate_key {w}/key.pem;\n  }}"
        ),
        tls_port,
    );
    let reload = format!(
        "{} -p {w} -c {w}/nginx.conf -s reload",
        common::peers::nginx_binary()
    );
    apply_managed(
        &server,
        serde_json::json!([{"name": "short", "sans": ["short.example.com"], "issuer": "pebble",
            "targets": [{"type": "nginx", "fullchain": format!("{w}/fullchain.pem"),
                "key": format!("{w}/key.pem"), "probe": format!("127.0.0.1:{tls_port}"), "reload": reload}]}]),
    )
    .await;
    let first = wait_ready(&server, "short").await;
    let not_after = time::OffsetDateTime::parse(
        first["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = not_after - time::OffsetDateTime::now_utc();
    assert!(
        lifetime <= time::Duration::seconds(VALIDITY as i64 + 5),
        "Pebble issued for {lifetime}"
    );
    // Watch what nginx serves, twice a second, for several lifetimes.
    let mut serials = std::collections::BTreeSet::new();
    let mut checks = 0;
    let mut tightest = i64::MAX;
    let end = Instant::now() + WATCH;
    while Instant::now() < end {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (serial, not_after) = served(tls_port).expect("nginx serves a certificate");
        assert!(
            not_after > now,
            "nginx served {serial}, expired at {not_after} (now {now})"
        );
        tightest = tightest.min(not_after - now);
        serials.insert(serial);
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let view = managed_view(&server, "short").await;
    let attempts = view["attempts"].as_array().unwrap();
    println!(
        "{checks} checks, {} serials served, least remaining validity seen {tightest} s, {} attempts",
        serials.len(),
        attempts.len()
    );
    assert!(
        serials.len() >= 4,
        "only {} certificates served in {WATCH:?}: {view:#}",
        serials.len()
    );
    assert!(
        attempts.iter().all(|a| a["outcome"] == "success"),
        "{attempts:#?}"
    );
    assert!(attempts.iter().all(|a| a["issuer"] == "pebble"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ari_window_from_the_issuer_is_followed_and_a_revocation_brings_the_renewal_forward() {
    // Pebble 2.4 (Debian 12) has no renewalInfo: the CA here is another certkeeper, whose
    // ACME server offers ARI and asks to be asked again after 1 s.
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (upstream, server) = upstream_and_server(
        dir.path(),
        &dns,
        "ari_retry_after = \"1s\"\n",
        "ari_poll_min = \"1s\"\n",
    );
    apply_managed(
        &server,
        serde_json::json!([{"name": "ari", "sans": ["ari.example.com"], "issuer": "upstream",
            "renewal": {"kind": "ari"}}]),
    )
    .await;
    let first = wait_ready(&server, "ari").await;
    let serial = first["current_serial"].as_str().unwrap().to_string();
    // The window lies at about 2/3 of the 90-day lifetime: the reconciler looks at it again
    // when the CA's Retry-After runs out, and does not renew.
    assert_eq!(first["next_action_reason"], "ari_check", "{first:#}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let view = managed_view(&server, "ari").await;
    assert_eq!(view["current_serial"], serial.as_str());
    assert_eq!(view["attempts"].as_array().unwrap().len(), 1, "{view:#}");
    let next = time::OffsetDateTime::parse(
        view["next_action_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        next <= time::OffsetDateTime::now_utc() + time::Duration::seconds(5),
        "checked again soon: {view:#}"
    );

    // The CA revokes it: the window moves into the past and the renewal happens at once,
    // naming the certificate it replaces.
    let (status, _, body) = upstream
        .post(
            "/api/v1/revocations",
            Some(upstream.token()),
            &serde_json::json!({"serial": serial, "reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let renewed = wait_managed(&server, "ari", "a renewal after revocation", |v| {
        v["current_serial"].as_str() != Some(serial.as_str()) && v["state"] == "ready"
    })
    .await;
    assert_eq!(renewed["attempts"].as_array().unwrap().len(), 2);
    let (_, old, _) = upstream
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(upstream.token()),
        )
        .await;
    assert_eq!(
        old["superseded_by"], renewed["current_serial"],
        "the order named the certificate it replaces: {old:#}"
    );
}
