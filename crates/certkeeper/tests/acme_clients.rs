//! The ACME server with the clients users run, unmodified: certbot (Debian 2.1, and 5.8 from
//! PyPI for ACME Renewal Information) and lego, validating through pebble-challtestsrv's DNS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::acme::{DnsServer, acme_config};
use common::{TestServer, certkeeper, free_port, lint, text};
use serde_json::Value;

fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Certbot {
    program: String,
    work: PathBuf,
    directory: String,
    root: PathBuf,
}

impl Certbot {
    fn new(program: &str, work: &Path, server: &TestServer, tenant: &str) -> Certbot {
        Certbot {
            program: program.to_string(),
            work: work.to_path_buf(),
            directory: server.url(&format!("/acme/{tenant}/directory")),
            root: server.data_dir.join("ca/root.crt"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let w = |name: &str| self.work.join(name).to_str().unwrap().to_string();
        Command::new(&self.program)
            .args(args)
            .args(["--server", &self.directory])
            .args([
                "--config-dir",
                &w("conf"),
                "--work-dir",
                &w("work"),
                "--logs-dir",
                &w("logs"),
            ])
            .arg("--non-interactive")
            .env("REQUESTS_CA_BUNDLE", &self.root)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test", self.program))
    }

    fn live(&self, name: &str, file: &str) -> PathBuf {
        self.work.join("conf/live").join(name).join(file)
    }
}

fn serial_of(pem_file: &Path) -> String {
    let der = pem::parse(std::fs::read(pem_file).unwrap())
        .unwrap()
        .into_contents();
    certkeeper_pki::parse_certificate(&der).unwrap().serial
}

/// A dns-01 hook script that writes TXT records into pebble-challtestsrv.
fn hook(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn certificate_view(server: &TestServer, serial: &str) -> Value {
    let (status, view, text) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    view
}

#[tokio::test(flavor = "multi_thread")]
async fn certbot_http01_dns01_renew_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    // Public-form URLs in the certificates, so that pkilint judges them like production ones
    // (and nothing answers OCSP there: certbot's own OCSP check cannot trigger a renewal).
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--public-base-url",
            "http://pki.example.com",
        ],
    );
    let certbot = Certbot::new("certbot", &dir.path().join("certbot"), &server, "default");
    let port = http01_port.to_string();

    // Register and issue with the standalone http-01 server.
    let issued = certbot.run(&[
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--standalone",
        "--preferred-challenges",
        "http",
        "--http-01-port",
        &port,
        "--http-01-address",
        "127.0.0.1",
        "-d",
        "www.example.com",
        "-d",
        "example.com",
    ]);
    assert!(issued.status.success(), "{}", output_text(&issued));
    let cert = certbot.live("www.example.com", "cert.pem");
    let fullchain = certbot.live("www.example.com", "fullchain.pem");
    // The chain verifies to our root, and the certificate passes pkilint like REST ones.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(server.data_dir.join("ca/root.crt"))
        .arg("-untrusted")
        .arg(&fullchain)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", output_text(&verify));
    assert_eq!(lint("lint_cabf_serverauth_cert", &["-d"], &cert), "");
    assert_eq!(lint("lint_pkix_cert", &[], &cert), "");
    let first = serial_of(&cert);
    let view = certificate_view(&server, &first).await;
    assert_eq!(view["profile"], "tls-server");
    assert!(view["requester"].as_str().unwrap().starts_with("acme:"));

    // dns-01 through --manual hooks that write TXT records to the DNS server.
    let mgmt = dns.management_url();
    let auth = hook(
        dir.path(),
        "auth.sh",
        &format!(
            r#"curl -sf -X POST -d "{{\"host\":\"_acme-challenge.$CERTBOT_DOMAIN.\",\"value\":\"$CERTBOT_VALIDATION\"}}" {mgmt}/set-txt"#
        ),
    );
    let cleanup = hook(
        dir.path(),
        "cleanup.sh",
        &format!(
            r#"curl -sf -X POST -d "{{\"host\":\"_acme-challenge.$CERTBOT_DOMAIN.\"}}" {mgmt}/clear-txt"#
        ),
    );
    let manual = certbot.run(&[
        "certonly",
        "--manual",
        "--preferred-challenges",
        "dns",
        "--manual-auth-hook",
        auth.to_str().unwrap(),
        "--manual-cleanup-hook",
        cleanup.to_str().unwrap(),
        "-d",
        "api.example.com",
        "-d",
        "*.api.example.com",
    ]);
    assert!(manual.status.success(), "{}", output_text(&manual));
    let api_cert = certbot.live("api.example.com", "cert.pem");
    assert_eq!(lint("lint_cabf_serverauth_cert", &["-d"], &api_cert), "");

    // Renew: a new certificate replaces the first.
    let renewed = certbot.run(&[
        "renew",
        "--cert-name",
        "www.example.com",
        "--force-renewal",
        "--no-random-sleep-on-renew",
    ]);
    assert!(renewed.status.success(), "{}", output_text(&renewed));
    let second = serial_of(&cert);
    assert_ne!(first, second, "renewal must bring a new certificate");

    // Revoke with reason keyCompromise, signed by the account key.
    let revoked = certbot.run(&[
        "revoke",
        "--cert-path",
        api_cert.to_str().unwrap(),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    ]);
    assert!(revoked.status.success(), "{}", output_text(&revoked));
    let view = certificate_view(&server, &serial_of(&api_cert)).await;
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revocation_reason"], "keyCompromise");
}

#[tokio::test(flavor = "multi_thread")]
async fn certbot_with_external_account_binding() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(
        dir.path(),
        &dns,
        http01_port,
        free_port(),
        "[[acme.tenant]]\nname = \"team-a\"\nrequire_eab = true\n",
    );
    // Public-form URLs in the certificates, so that pkilint judges them like production ones
    // (and nothing answers OCSP there: certbot's own OCSP check cannot trigger a renewal).
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--public-base-url",
            "http://pki.example.com",
        ],
    );
    let port = http01_port.to_string();
    let issue = |certbot: &Certbot, extra: &[&str]| {
        let mut args = vec![
            "certonly",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--standalone",
            "--preferred-challenges",
            "http",
            "--http-01-port",
            &port,
            "--http-01-address",
            "127.0.0.1",
            "-d",
            "eab.example.com",
        ];
        args.extend_from_slice(extra);
        certbot.run(&args)
    };

    // Without a binding the tenant's directory refuses to register.
    let plain = Certbot::new("certbot", &dir.path().join("plain"), &server, "team-a");
    let refused = issue(&plain, &[]);
    assert!(!refused.status.success());
    let said = output_text(&refused);
    assert!(
        said.contains("external account binding") || said.contains("externalAccountRequired"),
        "{said}"
    );

    // An administrator creates a key for the tenant with the CLI.
    let root = server.data_dir.join("ca/root.crt");
    let created = certkeeper(
        &[
            "acme",
            "eab",
            "create",
            "--tenant",
            "team-a",
            "--server",
            &server.https,
            "--token",
            server.token(),
            "--ca-file",
            root.to_str().unwrap(),
            "--output",
            "json",
        ],
        dir.path(),
        &[],
    );
    assert!(created.status.success(), "{}", text(&created));
    let key: Value = serde_json::from_slice(&created.stdout).unwrap();
    let kid = key["kid"].as_str().unwrap();
    let hmac = key["hmac_key"].as_str().unwrap();

    let bound = Certbot::new("certbot", &dir.path().join("bound"), &server, "team-a");
    let issued = issue(&bound, &["--eab-kid", kid, "--eab-hmac-key", hmac]);
    assert!(issued.status.success(), "{}", output_text(&issued));
    let view = certificate_view(
        &server,
        &serial_of(&bound.live("eab.example.com", "cert.pem")),
    )
    .await;
    assert_eq!(view["tenant"], "team-a");

    // The key binds one account only; a wrong HMAC key is refused too.
    let again = Certbot::new("certbot", &dir.path().join("again"), &server, "team-a");
    let reused = issue(&again, &["--eab-kid", kid, "--eab-hmac-key", hmac]);
    assert!(!reused.status.success());
    assert!(
        output_text(&reused).contains("already bound"),
        "{}",
        output_text(&reused)
    );
    let wrong = Certbot::new("certbot", &dir.path().join("wrong"), &server, "team-a");
    let forged = issue(
        &wrong,
        &[
            "--eab-kid",
            kid,
            "--eab-hmac-key",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ],
    );
    assert!(!forged.status.success());
    // Listing shows the binding but never the secret.
    let listed = certkeeper(
        &[
            "acme",
            "eab",
            "list",
            "--server",
            &server.https,
            "--token",
            server.token(),
            "--ca-file",
            root.to_str().unwrap(),
            "--output",
            "json",
        ],
        dir.path(),
        &[],
    );
    assert!(listed.status.success(), "{}", text(&listed));
    let keys: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(keys[0]["account"].is_string());
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(hmac));
}

#[tokio::test(flavor = "multi_thread")]
async fn certbot_fetches_renewal_information_and_renews_when_the_window_opens() {
    let Ok(program) = std::env::var("CERTKEEPER_CERTBOT_ARI") else {
        panic!(
            "CERTKEEPER_CERTBOT_ARI is not set: run the tests through scripts/test, which installs certbot 5.8"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    // Public-form URLs in the certificates, so that pkilint judges them like production ones
    // (and nothing answers OCSP there: certbot's own OCSP check cannot trigger a renewal).
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--public-base-url",
            "http://pki.example.com",
        ],
    );
    let certbot = Certbot::new(&program, &dir.path().join("certbot"), &server, "default");
    let port = http01_port.to_string();
    let issued = certbot.run(&[
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--standalone",
        "--preferred-challenges",
        "http",
        "--http-01-port",
        &port,
        "--http-01-address",
        "127.0.0.1",
        "-d",
        "ari.example.com",
    ]);
    assert!(issued.status.success(), "{}", output_text(&issued));
    let cert = certbot.live("ari.example.com", "cert.pem");
    let first = serial_of(&cert);

    // A fresh certificate: certbot asks renewalInfo, and the window is not open yet.
    let renew = || {
        certbot.run(&[
            "renew",
            "--no-random-sleep-on-renew",
            "--cert-name",
            "ari.example.com",
        ])
    };
    let early = renew();
    assert!(early.status.success(), "{}", output_text(&early));
    assert_eq!(serial_of(&cert), first, "{}", output_text(&early));
    let log = std::fs::read_to_string(dir.path().join("certbot/logs/letsencrypt.log")).unwrap();
    assert!(
        log.contains("/acme/default/renewal-info/"),
        "certbot did not ask for renewalInfo:\n{log}"
    );
    // certbot waits Retry-After before asking again; let it ask now.
    let renewal_conf = dir.path().join("certbot/conf/renewal/ari.example.com.conf");
    let conf = std::fs::read_to_string(&renewal_conf).unwrap();
    let conf: String = conf
        .lines()
        .filter(|l| !l.starts_with("ari_retry_after") && !l.starts_with("[acme_renewal_info]"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&renewal_conf, conf).unwrap();

    // Revoked: the suggested window moves into the past and certbot renews.
    let (status, _, text) = server
        .post(
            "/api/v1/revocations",
            Some(server.token()),
            &serde_json::json!({"serial": first, "reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let due = renew();
    assert!(due.status.success(), "{}", output_text(&due));
    assert_ne!(serial_of(&cert), first, "{}", output_text(&due));
}

#[tokio::test(flavor = "multi_thread")]
async fn lego_http01_tlsalpn01_dns01_wildcard_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let tlsalpn01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, tlsalpn01_port, "");
    // Public-form URLs in the certificates, so that pkilint judges them like production ones
    // (and nothing answers OCSP there: certbot's own OCSP check cannot trigger a renewal).
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--public-base-url",
            "http://pki.example.com",
        ],
    );
    let directory = server.url("/acme/default/directory");
    let root = server.data_dir.join("ca/root.crt");
    let path = dir.path().join("lego");
    let mgmt = dns.management_url();
    let exec = hook(
        dir.path(),
        "lego-dns.sh",
        &format!(
            r#"case "$1" in
present) curl -sf -X POST -d "{{\"host\":\"$2\",\"value\":\"$3\"}}" {mgmt}/set-txt ;;
cleanup) curl -sf -X POST -d "{{\"host\":\"$2\"}}" {mgmt}/clear-txt ;;
esac"#
        ),
    );
    let resolver = format!("127.0.0.1:{}", dns.dns_port);
    let lego = |args: &[&str]| {
        Command::new("lego")
            .args([
                "--server",
                &directory,
                "--email",
                "ops@example.com",
                "--accept-tos",
            ])
            .arg("--path")
            .arg(&path)
            .args(args)
            .env("LEGO_CA_CERTIFICATES", &root)
            .env("EXEC_PATH", &exec)
            .env("EXEC_POLLING_INTERVAL", "1")
            .env("EXEC_PROPAGATION_TIMEOUT", "20")
            .env("EXEC_SEQUENCE_INTERVAL", "0")
            .output()
            .expect("lego (Debian package lego; scripts/test installs it)")
    };
    let certificate = |name: &str| path.join("certificates").join(format!("{name}.crt"));

    let http = lego(&[
        "-d",
        "h.example.com",
        "--http",
        "--http.port",
        &format!("127.0.0.1:{http01_port}"),
        "run",
    ]);
    assert!(http.status.success(), "{}", output_text(&http));
    let tls = lego(&[
        "-d",
        "t.example.com",
        "--tls",
        "--tls.port",
        &format!("127.0.0.1:{tlsalpn01_port}"),
        "run",
    ]);
    assert!(tls.status.success(), "{}", output_text(&tls));
    let dns01 = lego(&[
        "-d",
        "d.example.com",
        "--dns",
        "exec",
        "--dns.resolvers",
        &resolver,
        "--dns.disable-cp",
        "run",
    ]);
    assert!(dns01.status.success(), "{}", output_text(&dns01));
    let wildcard = lego(&[
        "-d",
        "*.w.example.com",
        "-d",
        "w.example.com",
        "--dns",
        "exec",
        "--dns.resolvers",
        &resolver,
        "--dns.disable-cp",
        "run",
    ]);
    assert!(wildcard.status.success(), "{}", output_text(&wildcard));
    let wildcard_cert = certificate("_.w.example.com");
    let sans = certificate_view(&server, &serial_of(&wildcard_cert)).await["sans"].clone();
    assert!(
        sans.as_array()
            .unwrap()
            .contains(&Value::from("DNS:*.w.example.com")),
        "{sans}"
    );
    for name in ["h.example.com", "t.example.com", "d.example.com"] {
        // lego writes leaf and chain into one file; pkilint reads one certificate per file.
        let bundle = std::fs::read(certificate(name)).unwrap();
        let leaf = dir.path().join(format!("{name}.leaf.pem"));
        std::fs::write(&leaf, pem::encode(&pem::parse_many(&bundle).unwrap()[0])).unwrap();
        assert_eq!(
            lint("lint_cabf_serverauth_cert", &["-d"], &leaf),
            "",
            "{name}"
        );
    }

    let serial = serial_of(&certificate("h.example.com"));
    let revoke = lego(&["-d", "h.example.com", "revoke", "--keep"]);
    assert!(revoke.status.success(), "{}", output_text(&revoke));
    assert_eq!(
        certificate_view(&server, &serial).await["status"],
        "revoked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certbot_issues_for_an_ip_address() {
    let Ok(program) = std::env::var("CERTKEEPER_CERTBOT_ARI") else {
        panic!(
            "CERTKEEPER_CERTBOT_ARI is not set: run the tests through scripts/test, which installs certbot 5.8"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let certbot = Certbot::new(&program, &dir.path().join("certbot"), &server, "default");
    let port = http01_port.to_string();
    let issued = certbot.run(&[
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--standalone",
        "--http-01-port",
        &port,
        "--http-01-address",
        "127.0.0.1",
        "--ip-address",
        "127.0.0.1",
    ]);
    assert!(issued.status.success(), "{}", output_text(&issued));
    let live = dir.path().join("certbot/conf/live");
    let lineage = std::fs::read_dir(&live)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir())
        .expect("a certificate lineage")
        .path();
    let view = certificate_view(&server, &serial_of(&lineage.join("cert.pem"))).await;
    assert_eq!(view["sans"], serde_json::json!(["IP:127.0.0.1"]));
}
