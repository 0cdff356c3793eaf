//! `/metrics`: OpenMetrics text with the values the test arranged, behind a read token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{TestServer, apply_managed, metric_sample as sample, wait_managed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_what_was_arranged_and_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[lifecycle]\ntick_ms = 100\n").unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    // Three certificates: one expiring in 3 days, two in 60, one of those revoked.
    let mut serials = Vec::new();
    for (name, lifetime) in [("soon", "3d"), ("later", "60d"), ("gone", "60d")] {
        let (status, body, text) = server
            .post(
                "/api/v1/certificates",
                Some(server.token()),
                &serde_json::json!({"profile": "tls-server", "sans": [format!("{name}.example.com")], "lifetime": lifetime}),
            )
            .await;
        assert_eq!(status, 201, "{text}");
        serials.push(body["serial"].as_str().unwrap().to_string());
    }
    let (status, _, text) = server
        .post(
            "/api/v1/revocations",
            Some(server.token()),
            &serde_json::json!({"serial": serials[2]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    // Two managed certificates: one renewed by the internal CA, one whose issuer is missing.
    apply_managed(
        &server,
        serde_json::json!([
            {"name": "ok", "sans": ["ok.example.com"]},
            {"name": "bad", "sans": ["bad.example.com"], "issuer": "nowhere"}
        ]),
    )
    .await;
    wait_managed(&server, "ok", "issuance", |v| v["state"] == "ready").await;
    wait_managed(&server, "bad", "a failure", |v| v["state"] == "failing").await;

    // Without a token: a problem, no metrics.
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // With an auditor's token.
    let (_, auditor) = server.create_token("auditor", None).await;
    let response = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    // The managed certificate counts as an active certificate too.
    assert_eq!(
        sample(&text, "certkeeper_certificates{state=\"active\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "certkeeper_certificates{state=\"revoked\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "certkeeper_certificates{state=\"expired\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "certkeeper_certificates_expiring{within=\"1d\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "certkeeper_certificates_expiring{within=\"7d\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "certkeeper_managed_certificates{state=\"ready\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "certkeeper_managed_certificates{state=\"failing\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "certkeeper_renewal_attempts_total{issuer=\"internal\",outcome=\"success\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            "certkeeper_renewal_attempts_total{issuer=\"nowhere\",outcome=\"failure\"}"
        ) >= 1.0
    );
    assert_eq!(sample(&text, "certkeeper_agents{state=\"active\"}"), 0.0);
    assert_eq!(sample(&text, "certkeeper_rollouts_partial"), 0.0);
    let expiry = sample(
        &text,
        "certkeeper_ca_expiry_timestamp_seconds{ca=\"issuing\"}",
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(expiry > now, "{expiry}");
    // Bounded labels: no serial appears anywhere.
    for serial in &serials {
        assert!(!text.contains(serial.as_str()), "{serial} in the metrics");
    }
}
