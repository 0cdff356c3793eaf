//! Revocation end to end: CRLs that openssl and pkilint accept, idempotent revocation,
//! revocation by key, and durability under SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Starts a server whose certificates point at its own plain-HTTP listener, with `shards` CRL partitions.
fn start(dir: &Path, shards: u32) -> TestServer {
    let port = free_port();
    let config = dir.join("certkeeper.toml");
    std::fs::write(
        &config,
        format!("[crl]\nshards = {shards}\ndebounce_ms = 100\n"),
    )
    .unwrap();
    TestServer::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--http-listen",
            &format!("127.0.0.1:{port}"),
            "--public-base-url",
            &format!("http://127.0.0.1:{port}"),
        ],
    )
}

async fn issue(server: &TestServer, name: &str) -> serde_json::Value {
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": [name]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn revoke(server: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, response, _) = server
        .post("/api/v1/revocations", Some(server.token()), &body)
        .await;
    (status, response)
}

fn crl_url(work: &Path, cert_file: &str) -> String {
    let out = run(
        "openssl",
        &[
            "x509",
            "-in",
            cert_file,
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ],
        work,
    );
    let text = text(&out);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("URI:"))
        .expect("CRL DP URI")
        .to_string()
}

/// Downloads a CRL (DER), waiting until it lists `must_list` (uppercase hex serials).
async fn fetch_crl(
    url: &str,
    must_list: &[String],
    work: &Path,
    file: &str,
) -> reqwest::header::HeaderMap {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let headers = response.headers().clone();
        let der = response.bytes().await.unwrap();
        std::fs::write(work.join(format!("{file}.der")), &der).unwrap();
        let out = run(
            "openssl",
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                &format!("{file}.der"),
                "-out",
                &format!("{file}.pem"),
            ],
            work,
        );
        assert!(out.status.success(), "{}", text(&out));
        let listing = text(&run(
            "openssl",
            &["crl", "-in", &format!("{file}.pem"), "-noout", "-text"],
            work,
        ));
        if must_list
            .iter()
            .all(|serial| listing.contains(serial.as_str()))
        {
            return headers;
        }
        assert!(
            Instant::now() < deadline,
            "the CRL at {url} never listed {must_list:?}:\n{listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn crl_check(shards: u32) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = start(work, shards);
    let good = issue(&server, "good.example.com").await;
    let bad = issue(&server, "bad.example.com").await;
    std::fs::write(work.join("root.pem"), good["root_pem"].as_str().unwrap()).unwrap();
    std::fs::write(work.join("chain.pem"), good["chain_pem"].as_str().unwrap()).unwrap();
    std::fs::write(
        work.join("good.pem"),
        good["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("bad.pem"),
        bad["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();

    let env_owned = [
        ("CERTKEEPER_SERVER", server.https.clone()),
        ("CERTKEEPER_TOKEN", server.token().to_string()),
        (
            "CERTKEEPER_CA_FILE",
            server.data_dir.join("ca/root.crt").display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = certkeeper(
        &[
            "revoke",
            bad["serial"].as_str().unwrap(),
            "--reason",
            "keyCompromise",
        ],
        work,
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));

    let bad_serial = bad["serial"].as_str().unwrap().to_uppercase();
    let good_url = crl_url(work, "good.pem");
    let bad_url = crl_url(work, "bad.pem");
    if shards > 1 {
        assert!(
            bad_url.contains("/crl/intermediate-"),
            "each certificate names its partition: {bad_url}"
        );
    } else {
        assert!(bad_url.ends_with("/crl/intermediate.crl"), "{bad_url}");
    }
    let headers = fetch_crl(&bad_url, std::slice::from_ref(&bad_serial), work, "bad-crl").await;
    fetch_crl(&good_url, &[], work, "good-crl").await;
    assert_eq!(headers["content-type"], "application/pkix-crl");
    for name in ["etag", "last-modified", "cache-control", "expires"] {
        assert!(headers.contains_key(name), "missing {name}: {headers:?}");
    }
    let not_modified = reqwest::Client::new()
        .get(&bad_url)
        .header("if-none-match", headers["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status().as_u16(), 304);

    let verify = |cert: &str, crl: &str| {
        run(
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "chain.pem",
                "-CRLfile",
                crl,
                cert,
            ],
            work,
        )
    };
    let ok = verify("good.pem", "good-crl.pem");
    assert!(ok.status.success(), "good certificate: {}", text(&ok));
    let revoked = verify("bad.pem", "bad-crl.pem");
    assert!(
        !revoked.status.success(),
        "revoked certificate accepted: {}",
        text(&revoked)
    );
    assert!(
        text(&revoked).contains("certificate revoked"),
        "{}",
        text(&revoked)
    );
    let listing = text(&run(
        "openssl",
        &["crl", "-in", "bad-crl.pem", "-noout", "-text"],
        work,
    ));
    assert!(listing.contains("Key Compromise"), "{listing}");
    assert!(listing.contains("X509v3 CRL Number"), "{listing}");
    assert!(
        listing.contains("X509v3 Authority Key Identifier"),
        "{listing}"
    );
    assert_eq!(
        listing.contains("Issuing Distribution Point"),
        shards > 1,
        "{listing}"
    );

    // pkilint on every CRL served: the full CRL and each partition.
    let mut names = vec!["intermediate.crl".to_string()];
    if shards > 1 {
        names.extend((0..shards).map(|n| format!("intermediate-{n}.crl")));
    }
    let base = bad_url.rsplit_once("/crl/").unwrap().0.to_string();
    let mut findings = Vec::new();
    for name in names {
        let der = reqwest::get(format!("{base}/crl/{name}"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let file = work.join(&name);
        std::fs::write(&file, &der).unwrap();
        let found = lint("lint_crl", &["-t", "CRL", "-p", "BR"], &file);
        if !found.is_empty() {
            findings.push(format!("{name}:\n{found}"));
        }
    }
    assert!(findings.is_empty(), "pkilint:\n{}", findings.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_check_accepts_good_and_rejects_revoked_with_one_full_crl() {
    crl_check(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_check_accepts_good_and_rejects_revoked_with_eight_partitions() {
    crl_check(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_idempotent_audited_by_key_and_visible_in_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = start(work, 1);
    let cert = issue(&server, "one.example.com").await;
    let serial = cert["serial"].as_str().unwrap().to_string();

    let (status, first) = revoke(
        &server,
        serde_json::json!({"serial": serial, "reason": "superseded"}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["revoked"][0]["changed"], true);
    let (status, again) = revoke(
        &server,
        serde_json::json!({"serial": serial.to_uppercase(), "reason": "cessationOfOperation"}),
    )
    .await;
    assert_eq!(status, 200, "revoking twice is not an error: {again}");
    assert_eq!(again["revoked"][0]["changed"], false);
    assert_eq!(
        again["revoked"][0]["reason"], "superseded",
        "the first reason stands"
    );
    let (_, escalated) = revoke(&server, serde_json::json!({"serial": serial, "reason": "keyCompromise", "invalidity_date": "2026-01-01T00:00:00Z"})).await;
    assert_eq!(escalated["revoked"][0]["reason"], "keyCompromise");
    assert_eq!(
        escalated["revoked"][0]["revoked_at"],
        first["revoked"][0]["revoked_at"]
    );

    let (status, view, _) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revocation_reason"], "keyCompromise");
    let (_, page, _) = server
        .get("/api/v1/certificates?status=revoked", Some(server.token()))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Unknown serials and bad requests are refused clearly and audited.
    let before = server.audit().await.len();
    let (status, problem) =
        revoke(&server, serde_json::json!({"serial": "abcdef0123456789"})).await;
    assert_eq!(
        (status, problem["type"].as_str().unwrap()),
        (404, "/problems/unknown-certificate"),
        "{problem}"
    );
    let (status, problem) = revoke(
        &server,
        serde_json::json!({"serial": serial, "reason": "certificateHold"}),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = revoke(
        &server,
        serde_json::json!({"serial": serial, "spki_sha256": "00"}),
    )
    .await;
    assert_eq!(status, 400);
    let audit = server.audit().await;
    assert_eq!(audit.len(), before + 3);
    assert!(
        audit[before..]
            .iter()
            .all(|e| e["outcome"] == "denied" && e["action"] == "certificate.revoke")
    );

    // By key: two certificates for one key, both revoked with keyCompromise.
    let (_, csr) = openssl_csr(
        work,
        "shared",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=shared.example.com",
        "DNS:shared.example.com",
    );
    let csr = std::fs::read_to_string(csr).unwrap();
    let mut serials = Vec::new();
    for _ in 0..2 {
        let (status, body, _) = server
            .post(
                "/api/v1/certificates",
                Some(server.token()),
                &serde_json::json!({"profile": "tls-server", "csr": csr}),
            )
            .await;
        assert_eq!(status, 201);
        serials.push(body["serial"].as_str().unwrap().to_string());
    }
    let (status, by_key) = revoke(&server, serde_json::json!({"key_of_serial": serials[0]})).await;
    assert_eq!(status, 200, "{by_key}");
    let mut revoked: Vec<String> = by_key["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serial"].as_str().unwrap().to_string())
        .collect();
    revoked.sort();
    serials.sort();
    assert_eq!(revoked, serials);
    assert!(
        by_key["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["reason"] == "keyCompromise")
    );

    // A key revoked as compromised is never certified again (renewal with the old key too).
    let (status, problem, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "csr": csr}),
        )
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (400, Some("/problems/key-compromised")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("generate a new key")
    );

    // An imported certificate that copies a serial of ours does not block revoking ours.
    let victim = issue(&server, "victim.example.com").await;
    let victim_serial = victim["serial"].as_str().unwrap().to_string();
    let copy = run(
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
            "copy.key",
            "-out",
            "copy.pem",
            "-subj",
            "/CN=copy",
            "-days",
            "1",
            "-set_serial",
            &format!("0x{victim_serial}"),
        ],
        work,
    );
    assert!(copy.status.success(), "{}", text(&copy));
    let (_, importer) = server.create_token("issuer", Some("other")).await;
    let (status, body, _) = server
        .post("/api/v1/certificates/import", Some(&importer), &serde_json::json!({"certificates": [std::fs::read_to_string(work.join("copy.pem")).unwrap()]}))
        .await;
    assert_eq!(
        (status, body["imported"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, revoked_victim) =
        revoke(&server, serde_json::json!({"serial": victim_serial})).await;
    assert_eq!(status, 200, "{revoked_victim}");
    assert_eq!(revoked_victim["revoked"].as_array().unwrap().len(), 1);

    // Certificates that are not ours to revoke.
    let (status, problem) = revoke(
        &server,
        serde_json::json!({"certificate_pem": cert["root_pem"]}),
    )
    .await;
    assert!(status == 400 || status == 404, "{problem}");
    let (status, report, _) = server
        .get("/api/v1/audit/verify", Some(server.token()))
        .await;
    assert_eq!((status, report["ok"].as_bool()), (200, Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_of_revocations_loses_no_acknowledged_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let port = free_port();
    let args = [
        "--http-listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--public-base-url".to_string(),
        format!("http://127.0.0.1:{port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = TestServer::start(&work.join("data"), &args);
    let token = server.token().to_string();
    let mut serials = Vec::new();
    for i in 0..120 {
        serials.push(
            issue(&server, &format!("r{i}.example.com")).await["serial"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut streams = Vec::new();
    for chunk in serials.chunks(30) {
        let (client, url, token, chunk, acknowledged) = (
            server.client.clone(),
            server.url("/api/v1/revocations"),
            token.clone(),
            chunk.to_vec(),
            acknowledged.clone(),
        );
        streams.push(tokio::spawn(async move {
            for serial in chunk {
                let Ok(response) = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"serial": serial, "reason": "keyCompromise"}))
                    .send()
                    .await
                else {
                    break;
                };
                if response.status().as_u16() != 200 || response.bytes().await.is_err() {
                    break;
                }
                acknowledged.lock().unwrap().push(serial);
            }
        }));
    }
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 40 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    for stream in streams {
        stream.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 40);

    let mut server = TestServer::start(&work.join("data"), &args);
    server.token = Some(token.clone());
    for serial in &acknowledged {
        let (status, view, _) = server
            .get(&format!("/api/v1/certificates/{serial}"), Some(&token))
            .await;
        assert_eq!(
            (status, view["status"].as_str()),
            (200, Some("revoked")),
            "acknowledged revocation of {serial} was lost"
        );
    }
    // The CRL built at start lists every acknowledged revocation.
    let wanted: Vec<String> = acknowledged.iter().map(|s| s.to_uppercase()).collect();
    fetch_crl(
        &format!("http://127.0.0.1:{port}/crl/intermediate.crl"),
        &wanted,
        work,
        "after-restart",
    )
    .await;
    // OCSP answers revoked for every one of them too (32 CertIDs per request).
    std::fs::copy(
        work.join("data/ca/intermediate.crt"),
        work.join("issuing.pem"),
    )
    .unwrap();
    for chunk in acknowledged.chunks(32) {
        let mut args: Vec<String> = [
            "ocsp",
            "-no_nonce",
            "-issuer",
            "issuing.pem",
            "-CAfile",
            "data/ca/root.crt",
        ]
        .map(String::from)
        .to_vec();
        for serial in chunk {
            args.push("-serial".into());
            args.push(format!("0x{serial}"));
        }
        args.extend(["-url".to_string(), format!("http://127.0.0.1:{port}/ocsp")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = text(&run("openssl", &args, work));
        assert!(out.contains("Response verify OK"), "{out}");
        assert_eq!(out.matches(": revoked").count(), chunk.len(), "{out}");
    }
}
