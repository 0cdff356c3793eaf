//! Every bad input gets a specific problem+json, writes nothing to the inventory, and is audited.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use base64::Engine;
use common::*;

const POLICY: &str = r#"
[[rule]]
name = "default-web"
tenants = ["default"]
allow_dns = [".example.com", "example.com"]
allow_ip = ["192.0.2.0/24"]

[[rule]]
name = "blue-services"
tenants = ["blue"]
allow_dns = [".blue.example.com"]
"#;

struct Case {
    name: &'static str,
    token: Option<String>,
    body: Option<serde_json::Value>,
    raw_body: Option<Vec<u8>>,
    status: u16,
    problem: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_specifically_write_nothing_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let config = work.join("certkeeper.toml");
    std::fs::write(&config, POLICY).unwrap();
    let server = TestServer::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    let admin = server.token().to_string();
    let (_, issuer) = server.create_token("issuer", Some("default")).await;
    let (_, blue) = server.create_token("issuer", Some("blue")).await;
    let (revoked_id, revoked) = server.create_token("issuer", None).await;
    let response = server
        .client
        .delete(server.url(&format!("/api/v1/tokens/{revoked_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    let csr = |name: &str, spec: &[&str]| {
        let (_, path) = openssl_csr(
            work,
            name,
            spec,
            "/CN=www.example.com",
            "DNS:www.example.com",
        );
        std::fs::read_to_string(path).unwrap()
    };
    let good_csr = csr(
        "good",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let weak_csr = csr("weak", &["-newkey", "rsa:1024"]);
    let bad_signature = {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../pki/tests/vectors/p256-bad-signature.der"
        ))
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let json = |v: serde_json::Value| Some(v);
    let cases = vec![
        Case {
            name: "malformed CSR",
            token: Some(issuer.clone()),
            body: json(
                serde_json::json!({"profile": "tls-server", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
            ),
            raw_body: None,
            status: 400,
            problem: "malformed-csr",
        },
        Case {
            name: "CSR with a bad signature",
            token: Some(issuer.clone()),
            body: json(serde_json::json!({"profile": "tls-server", "csr": bad_signature})),
            raw_body: None,
            status: 400,
            problem: "bad-csr-signature",
        },
        Case {
            name: "RSA-1024 key",
            token: Some(issuer.clone()),
            body: json(serde_json::json!({"profile": "tls-server", "csr": weak_csr})),
            raw_body: None,
            status: 400,
            problem: "weak-key",
        },
        Case {
            name: "name outside policy",
            token: Some(issuer.clone()),
            body: json(
                serde_json::json!({"profile": "tls-server", "csr": good_csr, "sans": ["www.evil.com"]}),
            ),
            raw_body: None,
            status: 403,
            problem: "policy-denied",
        },
        Case {
            name: "lifetime above the profile maximum",
            token: Some(issuer.clone()),
            body: json(
                serde_json::json!({"profile": "tls-server", "csr": good_csr, "lifetime": "400d"}),
            ),
            raw_body: None,
            status: 400,
            problem: "lifetime-exceeds-profile",
        },
        Case {
            name: "unknown profile",
            token: Some(issuer.clone()),
            body: json(serde_json::json!({"profile": "no-such-profile", "csr": good_csr})),
            raw_body: None,
            status: 400,
            problem: "unknown-profile",
        },
        Case {
            name: "missing token",
            token: None,
            body: json(serde_json::json!({"profile": "tls-server", "csr": good_csr})),
            raw_body: None,
            status: 401,
            problem: "missing-token",
        },
        Case {
            name: "invalid token",
            token: Some("ck_000000000000.forged".into()),
            body: json(serde_json::json!({"profile": "tls-server", "csr": good_csr})),
            raw_body: None,
            status: 401,
            problem: "invalid-token",
        },
        Case {
            name: "revoked token",
            token: Some(revoked.clone()),
            body: json(serde_json::json!({"profile": "tls-server", "csr": good_csr})),
            raw_body: None,
            status: 401,
            problem: "revoked-token",
        },
        Case {
            name: "token of another tenant",
            token: Some(blue.clone()),
            body: json(
                serde_json::json!({"profile": "tls-server", "csr": good_csr, "tenant": "default"}),
            ),
            raw_body: None,
            status: 403,
            problem: "wrong-tenant",
        },
        Case {
            name: "oversized body",
            token: Some(issuer.clone()),
            body: None,
            raw_body: Some(
                format!(
                    "{{\"profile\":\"tls-server\",\"csr\":\"{}\"}}",
                    "A".repeat(200_000)
                )
                .into_bytes(),
            ),
            status: 413,
            problem: "body-too-large",
        },
        Case {
            name: "not JSON",
            token: Some(issuer.clone()),
            body: None,
            raw_body: Some(b"{not json".to_vec()),
            status: 400,
            problem: "malformed-request",
        },
    ];

    let inventory = server.inventory_count().await;
    for case in cases {
        let before = server.audit().await.len();
        let mut request = server
            .client
            .post(server.url("/api/v1/certificates"))
            .header("content-type", "application/json");
        if let Some(token) = &case.token {
            request = request.bearer_auth(token);
        }
        request = match (&case.body, &case.raw_body) {
            (Some(body), _) => request.json(body),
            (None, Some(raw)) => request.body(raw.clone()),
            (None, None) => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(content_type, "application/problem+json", "{}", case.name);
        assert_eq!(
            body["type"],
            format!("/problems/{}", case.problem),
            "{}: {body}",
            case.name
        );
        assert_eq!(body["status"], case.status, "{}", case.name);
        assert!(
            body["detail"].as_str().is_some_and(|d| d.len() > 10),
            "{}: a useful detail",
            case.name
        );
        if case.problem == "policy-denied" {
            let denials = body["denials"].as_array().unwrap();
            assert!(
                denials
                    .iter()
                    .any(|d| d.as_str().unwrap().contains("default-web")
                        && d.as_str().unwrap().contains("www.evil.com")),
                "{body}"
            );
        }
        assert_eq!(
            server.inventory_count().await,
            inventory,
            "{}: nothing written to the inventory",
            case.name
        );
        let audit = server.audit().await;
        assert_eq!(
            audit.len(),
            before + 1,
            "{}: exactly one audit entry",
            case.name
        );
        let entry = audit.last().unwrap();
        assert_eq!(entry["outcome"], "denied", "{}", case.name);
        assert_eq!(
            entry["detail"]["type"],
            format!("/problems/{}", case.problem),
            "{}",
            case.name
        );
    }

    // The same good CSR is accepted, so the refusals above were about what each case changed.
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(&issuer),
            &serde_json::json!({"profile": "tls-server", "csr": good_csr}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.inventory_count().await, inventory + 1);
    let (status, body, _) = server.get("/api/v1/audit/verify", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tenants_limit_what_a_token_sees_and_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(&config, POLICY).unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (_, blue) = server.create_token("issuer", Some("blue")).await;
    let (_, auditor) = server.create_token("auditor", None).await;
    let (status, body, _) = server
        .post("/api/v1/certificates", Some(&blue), &serde_json::json!({"profile": "mtls", "sans": ["api.blue.example.com"], "labels": {"team": "blue"}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["private_key_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    assert_eq!(body["tenant"], "blue");
    let serial = body["serial"].as_str().unwrap().to_string();
    let (status, _, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": ["www.example.com"]}),
        )
        .await;
    assert_eq!(status, 201);

    // The blue token sees only blue certificates.
    let (_, page, _) = server.get("/api/v1/certificates", Some(&blue)).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["serial"], serial.as_str());
    let (status, _, _) = server
        .get("/api/v1/certificates?tenant=default", Some(&blue))
        .await;
    assert_eq!(status, 403);
    let (status, body, _) = server
        .get(&format!("/api/v1/certificates/{serial}"), Some(&blue))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["certificate_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        body.get("private_key_pem").is_none(),
        "a key is never returned again"
    );
    let (_, page, _) = server
        .get("/api/v1/certificates?label=team=blue", Some(server.token()))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Auditors read but never write; issuers cannot manage tokens or read the audit log.
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(&auditor),
            &serde_json::json!({"profile": "tls-server", "sans": ["a.example.com"]}),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str().unwrap()),
        (403, "/problems/insufficient-role")
    );
    let (status, _, _) = server.get("/api/v1/audit", Some(&auditor)).await;
    assert_eq!(status, 200);
    let (status, _, _) = server.get("/api/v1/audit", Some(&blue)).await;
    assert_eq!(status, 403);
    let (status, _, _) = server
        .post(
            "/api/v1/tokens",
            Some(&blue),
            &serde_json::json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(status, 403);
}
