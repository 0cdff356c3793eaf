//! The OCSP responder against openssl and pkilint: good, revoked and unknown answers, several
//! CertIDs, SHA-1 and SHA-256 CertIDs, nonces, RFC 5019 GET, and bad requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

struct Setup {
    server: TestServer,
    ocsp_url: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--http-listen",
            &format!("127.0.0.1:{port}"),
            "--public-base-url",
            &format!("http://127.0.0.1:{port}"),
        ],
    );
    Setup {
        server,
        ocsp_url: format!("http://127.0.0.1:{port}/ocsp"),
        _dir: dir,
    }
}

async fn issue(server: &TestServer, work: &Path, name: &str) -> String {
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": [format!("{name}.example.com")]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(
        work.join(format!("{name}.pem")),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(work.join("chain.pem"), body["chain_pem"].as_str().unwrap()).unwrap();
    std::fs::write(work.join("root.pem"), body["root_pem"].as_str().unwrap()).unwrap();
    body["serial"].as_str().unwrap().to_string()
}

fn ocsp(work: &Path, args: &[&str]) -> String {
    let out = run(
        "openssl",
        &[
            &["ocsp", "-issuer", "chain.pem", "-CAfile", "root.pem"][..],
            args,
        ]
        .concat(),
        work,
    );
    text(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ocsp_reports_good_then_revoked_with_the_reason() {
    let setup = setup().await;
    let work = setup._dir.path();
    let url = setup.ocsp_url.as_str();
    let serial = issue(&setup.server, work, "web").await;
    let other = issue(&setup.server, work, "api").await;

    let out = ocsp(
        work,
        &["-cert", "web.pem", "-url", url, "-respout", "good.der"],
    );
    assert!(
        out.contains("Response verify OK") && out.contains("web.pem: good"),
        "{out}"
    );
    // Several CertIDs, SHA-256 CertIDs, and no nonce.
    let out = ocsp(
        work,
        &[
            "-sha256",
            "-no_nonce",
            "-cert",
            "web.pem",
            "-cert",
            "api.pem",
            "-url",
            url,
        ],
    );
    assert!(
        out.contains("web.pem: good")
            && out.contains("api.pem: good")
            && out.contains("Response verify OK"),
        "{out}"
    );

    // The exact request that is checked after the revocation, answered (and cached) before it.
    for _ in 0..2 {
        let out = ocsp(work, &["-no_nonce", "-cert", "web.pem", "-url", url]);
        assert!(out.contains("web.pem: good"), "{out}");
    }
    let (status, body, _) = setup
        .server
        .post(
            "/api/v1/revocations",
            Some(setup.server.token()),
            &serde_json::json!({"serial": serial, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The revocation answer comes back only after the cached response was re-signed: the very
    // next request (the same bytes as before) already reports revoked.
    let out = ocsp(
        work,
        &[
            "-no_nonce",
            "-cert",
            "web.pem",
            "-url",
            url,
            "-respout",
            "revoked.der",
        ],
    );
    assert!(out.contains("web.pem: revoked"), "{out}");
    assert!(
        out.contains("Reason: keyCompromise") && out.contains("Response verify OK"),
        "{out}"
    );
    let out = ocsp(work, &["-cert", "api.pem", "-url", url]);
    assert!(
        out.contains("api.pem: good"),
        "the other certificate is untouched: {out}"
    );
    let _ = other;
    let out = ocsp(
        work,
        &[
            "-serial",
            "0x1234567890",
            "-url",
            url,
            "-respout",
            "unknown.der",
        ],
    );
    assert!(
        out.contains("unknown") && out.contains("Response verify OK"),
        "{out}"
    );

    for file in ["good.der", "revoked.der", "unknown.der"] {
        let findings = lint("lint_ocsp_response", &[], &work.join(file));
        assert!(findings.is_empty(), "{file}: {findings}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5019_get_is_cacheable() {
    let setup = setup().await;
    let work = setup._dir.path();
    issue(&setup.server, work, "web").await;
    let out = ocsp(
        work,
        &["-no_nonce", "-cert", "web.pem", "-reqout", "req.der"],
    );
    assert!(std::fs::metadata(work.join("req.der")).is_ok(), "{out}");
    let request = std::fs::read(work.join("req.der")).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&request);
    let url = format!(
        "{}/{}",
        setup.ocsp_url,
        encoded
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/ocsp-response"
    );
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cache_control.contains("max-age=") && cache_control.contains("public"),
        "{cache_control}"
    );
    for name in ["etag", "last-modified", "expires"] {
        assert!(response.headers().contains_key(name), "missing {name}");
    }
    std::fs::write(work.join("get.der"), response.bytes().await.unwrap()).unwrap();
    let out = ocsp(work, &["-respin", "get.der", "-cert", "web.pem"]);
    assert!(
        out.contains("Response verify OK") && out.contains("web.pem: good"),
        "{out}"
    );
    // The same request again is served from the cache: byte-identical.
    let again = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        again.as_ref(),
        std::fs::read(work.join("get.der")).unwrap().as_slice()
    );
}

/// The OCSPResponseStatus of a DER response: 0 successful, 1 malformedRequest, 6 unauthorized.
fn response_status(der: &[u8]) -> u8 {
    assert!(
        der.len() >= 5 && der[0] == 0x30,
        "not an OCSPResponse: {der:02x?}"
    );
    let header = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    assert_eq!(der[header], 0x0a, "responseStatus is an ENUMERATED");
    der[header + 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_malformed_or_unauthorized_never_a_500() {
    let setup = setup().await;
    let work = setup._dir.path();
    issue(&setup.server, work, "web").await;
    ocsp(
        work,
        &["-no_nonce", "-cert", "web.pem", "-reqout", "good-req.der"],
    );
    let good = std::fs::read(work.join("good-req.der")).unwrap();
    // Another CA: its CertIDs name an issuer this responder does not serve.
    let other = work.join("other");
    let init = certkeeper(&["init", "--data-dir", other.to_str().unwrap()], work, &[]);
    assert!(init.status.success());
    let out = run(
        "openssl",
        &[
            "ocsp",
            "-no_nonce",
            "-issuer",
            other.join("ca/intermediate.crt").to_str().unwrap(),
            "-serial",
            "0x01",
            "-reqout",
            "foreign-req.der",
        ],
        work,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        "openssl",
        &[
            "ocsp",
            "-no_nonce",
            "-sha512",
            "-issuer",
            "chain.pem",
            "-cert",
            "web.pem",
            "-reqout",
            "sha512-req.der",
        ],
        work,
    );
    assert!(out.status.success(), "{}", text(&out));

    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("garbage", b"this is not DER".to_vec(), &[1]),
        ("truncated DER", good[..good.len() / 2].to_vec(), &[1]),
        ("empty body", Vec::new(), &[1]),
        (
            "wrong issuer hashes",
            std::fs::read(work.join("foreign-req.der")).unwrap(),
            &[6],
        ),
        (
            "unsupported hash (SHA-512)",
            std::fs::read(work.join("sha512-req.der")).unwrap(),
            &[1, 6],
        ),
        ("1 MB body", vec![0x30; 1024 * 1024], &[1]),
    ];
    let client = reqwest::Client::new();
    for (name, body, allowed) in cases {
        let response = client
            .post(&setup.ocsp_url)
            .header("content-type", "application/ocsp-request")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "{name}: errors are OCSP responses, never HTTP errors"
        );
        let der = response.bytes().await.unwrap();
        let status = response_status(&der);
        assert!(allowed.contains(&status), "{name}: responseStatus {status}");
    }
    for path in ["/%%%", "/bm90IGRlcg==", "/"] {
        let response = reqwest::get(format!("{}{path}", setup.ocsp_url))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        assert_eq!(
            response_status(&response.bytes().await.unwrap()),
            1,
            "GET {path}"
        );
    }
    // The responder still works.
    let out = ocsp(work, &["-cert", "web.pem", "-url", &setup.ocsp_url]);
    assert!(out.contains("web.pem: good"), "{out}");
}

/// SIGTERM lets the master stop its workers (SIGKILL would orphan them).
fn stop_nginx(nginx: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg(nginx.id().to_string())
        .status();
    let _ = nginx.wait();
}

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_staples_certkeepers_ocsp_response() {
    let setup = setup().await;
    let work = setup._dir.path();
    let (status, body, _) = setup
        .server
        .post("/api/v1/certificates", Some(setup.server.token()), &serde_json::json!({"profile": "tls-server", "sans": ["localhost"], "key_algorithm": "ecdsa-p256"}))
        .await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(
        work.join("fullchain.pem"),
        body["full_chain_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("key.pem"),
        body["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("trusted.pem"),
        format!(
            "{}{}",
            body["chain_pem"].as_str().unwrap(),
            body["root_pem"].as_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(work.join("root.pem"), body["root_pem"].as_str().unwrap()).unwrap();
    let port = free_port();
    let dir = work.display();
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    std::fs::write(
        work.join("nginx.conf"),
        format!(
            "worker_processes 1;\nerror_log {dir}/error.log info;\npid {dir}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {dir}/fullchain.pem;\n    ssl_certificate_key {dir}/key.pem;\n    ssl_stapling on;\n    ssl_stapling_verify on;\n    ssl_trusted_certificate {dir}/trusted.pem;\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut nginx = std::process::Command::new(nginx_binary())
        .args([
            "-p",
            &dir.to_string(),
            "-c",
            &format!("{dir}/nginx.conf"),
            "-g",
            "daemon off;",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx (scripts/test installs nginx-light)");
    // nginx fetches the OCSP response on the first handshakes and staples it from then on.
    let started = Instant::now();
    let stapled = loop {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
                "-status",
                "-CAfile",
                "root.pem",
            ])
            .current_dir(work)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let output = text(&out);
        if output.contains("OCSP Response Status: successful") {
            break output;
        }
        if started.elapsed() > Duration::from_secs(15) {
            stop_nginx(&mut nginx);
            let log = std::fs::read_to_string(work.join("error.log")).unwrap_or_default();
            panic!("nginx never stapled a response:\n{output}\nnginx error log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop_nginx(&mut nginx);
    assert!(stapled.contains("Cert Status: good"), "{stapled}");
    assert!(stapled.contains("Verify return code: 0 (ok)"), "{stapled}");
}
