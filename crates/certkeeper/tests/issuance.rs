//! Issuance against the real binary, checked with openssl and pkilint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_csr_is_issued_verified_and_used_for_a_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let work = dir.path();
    let (key, csr) = openssl_csr(
        work,
        "web",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=localhost",
        "DNS:localhost,IP:127.0.0.1",
    );
    let csr_pem = std::fs::read_to_string(&csr).unwrap();
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "csr": csr_pem}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(
        work.join("leaf.pem"),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(work.join("chain.pem"), body["chain_pem"].as_str().unwrap()).unwrap();
    std::fs::write(
        work.join("fullchain.pem"),
        body["full_chain_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(work.join("root.pem"), body["root_pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["sans"],
        serde_json::json!(["DNS:localhost", "IP:127.0.0.1"])
    );

    // leaf -> intermediate -> root
    let verify = run(
        "openssl",
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
        work,
    );
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("leaf.pem: OK"));
    // The same chain is rejected against a foreign root: the check can fail.
    let (_, other_csr) = openssl_csr(
        work,
        "other",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=x",
        "",
    );
    let _ = other_csr;
    let foreign = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "f.key",
            "-out",
            "foreign.pem",
            "-subj",
            "/CN=foreign",
            "-days",
            "1",
        ],
        work,
    );
    assert!(foreign.status.success());
    let wrong = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "foreign.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
        work,
    );
    assert!(!wrong.status.success());

    // s_server with the issued certificate, s_client trusting only the root.
    let port = free_port();
    let mut s_server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &port.to_string(),
            "-cert",
            "leaf.pem",
            "-cert_chain",
            "chain.pem",
            "-key",
        ])
        .arg(&key)
        .args(["-www", "-naccept", "1"])
        .current_dir(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut handshake = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
                "-CAfile",
                "root.pem",
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
            ])
            .current_dir(work)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if text(&out).contains("connect:errno") {
            continue;
        }
        handshake = Some(out);
        break;
    }
    let _ = s_server.kill();
    let _ = s_server.wait();
    let handshake = handshake.expect("s_server never accepted");
    let output = text(&handshake);
    assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// For each CA key algorithm: the CA certificates and client certificates pass lint_pkix_cert,
/// and (for CAs the Baseline Requirements allow) tls-server leaves of every allowed key type
/// pass lint_cabf_serverauth_cert. Names and URLs are in public form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkilint_finds_no_errors_for_any_key_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for ca_algorithm in [
        "ecdsa-p256",
        "ecdsa-p384",
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "ed25519",
    ] {
        let data = dir.path().join(format!("data-{ca_algorithm}"));
        let init = certkeeper(
            &[
                "init",
                "--data-dir",
                data.to_str().unwrap(),
                "--key-algorithm",
                ca_algorithm,
                "--country",
                "US",
                "--public-base-url",
                "http://pki.example.com",
            ],
            dir.path(),
            &[],
        );
        assert!(init.status.success(), "{}", text(&init));
        let server = TestServer::start(&data, &["--public-base-url", "http://pki.example.com"]);
        let ca_dir = data.join("ca");
        for ca_file in ["root.crt", "intermediate.crt"] {
            let findings = lint("lint_pkix_cert", &[], &ca_dir.join(ca_file));
            if !findings.is_empty() {
                failures.push(format!("{ca_algorithm} {ca_file}:\n{findings}"));
            }
        }
        if ca_algorithm == "ecdsa-p256" {
            // The linter is live: an internal name is rightly an ERROR for the CA/B Forum lints.
            let (status, body, _) = server
                .post(
                    "/api/v1/certificates",
                    Some(server.token()),
                    &serde_json::json!({"profile": "tls-server", "sans": ["db.internal"]}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            let file = dir.path().join("internal.pem");
            write(&file, body["certificate_pem"].as_str().unwrap());
            assert!(
                lint("lint_cabf_serverauth_cert", &["-d"], &file).contains("internal_domain_name")
            );
        }
        for leaf_algorithm in [
            "ecdsa-p256",
            "ecdsa-p384",
            "rsa-2048",
            "rsa-3072",
            "rsa-4096",
            "ed25519",
        ] {
            let mut profiles = vec!["tls-client", "mtls"];
            if ca_algorithm != "ed25519" && leaf_algorithm != "ed25519" {
                profiles.push("tls-server");
            }
            for profile in profiles {
                let (status, body, _) = server
                    .post(
                        "/api/v1/certificates",
                        Some(server.token()),
                        &serde_json::json!({"profile": profile, "key_algorithm": leaf_algorithm, "common_name": "www.example.com", "sans": ["www.example.com", "example.com"]}),
                    )
                    .await;
                assert_eq!(
                    status, 201,
                    "{ca_algorithm}/{leaf_algorithm}/{profile}: {body}"
                );
                let file = dir
                    .path()
                    .join(format!("{ca_algorithm}-{leaf_algorithm}-{profile}.pem"));
                write(&file, body["certificate_pem"].as_str().unwrap());
                let findings = if profile == "tls-server" {
                    lint("lint_cabf_serverauth_cert", &["-d"], &file)
                } else {
                    lint("lint_pkix_cert", &[], &file)
                };
                if !findings.is_empty() {
                    failures.push(format!(
                        "{ca_algorithm} CA, {leaf_algorithm} {profile} leaf:\n{findings}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pkilint findings:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let (status, doc, content_type) = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/certificates", "post"),
        ("/api/v1/certificates", "get"),
        ("/api/v1/certificates/{serial}", "get"),
        ("/api/v1/certificates/import", "post"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/audit", "get"),
        ("/api/v1/audit/verify", "get"),
        ("/api/v1/profiles", "get"),
        ("/api/v1/policy", "get"),
        ("/api/v1/ca", "get"),
        ("/api/v1/agents/bootstrap-tokens", "post"),
        ("/api/v1/agents", "get"),
        ("/api/v1/agents/{agent}/revoke", "post"),
        ("/api/v1/rollouts", "get"),
        ("/api/v1/rollouts/{id}", "get"),
        ("/api/v1/rollouts/{id}/{action}", "post"),
        ("/api/v1/compromise", "post"),
        ("/api/v1/ca/trust", "get"),
        ("/api/v1/ca/trust", "post"),
        ("/api/v1/scans", "post"),
        ("/api/v1/scans", "get"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/silences", "post"),
        ("/api/v1/alerts/silences", "get"),
        ("/api/v1/alerts/silences/{id}", "delete"),
        ("/api/v1/dashboard", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // And every documented operation answers (no 404/405 from the router).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = server.url(&path.replace("{serial}", "00").replace("{id}", "none"));
            let response = server
                .client
                .request(method.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_ne!(response.status().as_u16(), 405, "{method} {path}");
            assert!(
                response.status().as_u16() == 401,
                "{method} {path} must demand a token, got {}",
                response.status()
            );
        }
    }
    // Relying parties fetch CA certificates over plain HTTP.
    let root = reqwest::get(format!("{}/ca/root.crt", server.http))
        .await
        .unwrap();
    assert_eq!(root.headers()["content-type"], "application/pkix-cert");
    assert_eq!(root.bytes().await.unwrap().first(), Some(&0x30));
}
