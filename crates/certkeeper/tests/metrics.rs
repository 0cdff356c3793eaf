//! `/metrics`: OpenMetrics text with the values the test arranged, behind a read token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::Running;
use common::{TestServer, apply_managed, free_port, metric_sample as sample, wait_managed};

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
    // M4: each REST issuance and the internal renewal, per protocol and profile.
    assert_eq!(
        sample(
            &text,
            "certkeeper_issuance_duration_seconds_count{protocol=\"rest\",profile=\"tls-server\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "certkeeper_issuance_duration_seconds_count{protocol=\"reconciler\",profile=\"tls-server\"}"
        ),
        1.0
    );
    // Key use: three API issuances, one by the reconciler, CRLs signed; no anomaly (M6).
    assert_eq!(
        sample(
            &text,
            "certkeeper_key_uses_total{key=\"issuing\",principal=\"api\"}"
        ),
        3.0
    );
    assert!(
        sample(
            &text,
            "certkeeper_key_uses_total{key=\"issuing\",principal=\"crl\"}"
        ) >= 1.0
    );
    // The OCSP responder certificate the first start signed with the issuing key.
    assert_eq!(
        sample(
            &text,
            "certkeeper_key_uses_total{key=\"issuing\",principal=\"ocsp\"}"
        ),
        1.0
    );
    for reason in ["unexpected_principal", "rate"] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "certkeeper_key_access_anomalies_total{{key=\"issuing\",reason=\"{reason}\"}}"
                ),
            ),
            0.0
        );
    }
    // Per managed certificate, for the few there are: expiry and readiness.
    assert_eq!(
        sample(
            &text,
            "certkeeper_managed_certificate_ready{name=\"ok\",tenant=\"default\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            "certkeeper_managed_certificate_expiry_timestamp_seconds{name=\"ok\",tenant=\"default\"}"
        ) > 0.0
    );
    // CRL and OCSP freshness, the OCSP signer's expiry.
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        sample(
            &text,
            "certkeeper_crl_next_update_timestamp_seconds{name=\"intermediate.crl\"}"
        ) > now_s
    );
    assert!(sample(&text, "certkeeper_ocsp_signer_expiry_timestamp_seconds") > now_s);
    // No scans yet: M1's targets are all zero.
    assert_eq!(
        sample(&text, "certkeeper_targets{kind=\"scan\",valid=\"true\"}"),
        0.0
    );
    assert_eq!(sample(&text, "certkeeper_rollouts_partial"), 0.0);
    let expiry = sample(
        &text,
        "certkeeper_ca_expiry_timestamp_seconds{ca=\"issuing\"}",
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(expiry > now, "{expiry}");
    // Every metric the shipped Grafana dashboard and Prometheus rules query exists.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist");
    for file in ["grafana/certkeeper.json", "prometheus/certkeeper-rules.yml"] {
        let shipped = std::fs::read_to_string(root.join(file)).unwrap();
        for (start, _) in shipped.match_indices("certkeeper_") {
            let name: String = shipped[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{file} queries {name}, which /metrics does not have"
            );
        }
    }
    // Bounded labels: no serial appears anywhere.
    for serial in &serials {
        assert!(!text.contains(serial.as_str()), "{serial} in the metrics");
    }
    // A tenant's token: its own certificates and managed certificates, not the fleet's.
    let (_, blue) = server.create_token("issuer", Some("blue")).await;
    let (status, _, body) = server
        .post(
            "/api/v1/certificates",
            Some(&blue),
            &serde_json::json!({"profile": "tls-server", "sans": ["blue.example.com"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let blue_text = server.metrics(&blue).await;
    assert_eq!(
        sample(&blue_text, "certkeeper_certificates{state=\"active\"}"),
        1.0
    );
    let fleet_text = server.metrics(&auditor).await;
    assert_eq!(
        sample(&fleet_text, "certkeeper_certificates{state=\"active\"}"),
        sample(&text, "certkeeper_certificates{state=\"active\"}") + 1.0,
        "the fleet's count has blue's certificate too"
    );
    assert!(
        !blue_text.contains("certkeeper_managed_certificate_ready{"),
        "blue has no managed certificates"
    );
}

/// Asks Prometheus for an instant query until it has a result (60 s at most).
async fn promql(port: u16, query: &str) -> f64 {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Prometheus may still be starting: a refused connection is retried.
        let answer: serde_json::Value = match client
            .get(
                reqwest::Url::parse_with_params(
                    &format!("http://127.0.0.1:{port}/api/v1/query"),
                    &[("query", query)],
                )
                .unwrap(),
            )
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        };
        if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
            return value.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "{query}: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_certkeeper_and_promql_answers_with_what_was_arranged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    // A failed renewal is not tried again during the test.
    std::fs::write(
        &config,
        "[lifecycle]\ntick_ms = 100\nbackoff_base = \"1h\"\n",
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (status, issued, text) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": ["soon.example.com"], "lifetime": "3d"}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    // M1: three scanned endpoints serve that certificate cleanly, one refused the connection.
    let der = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        pem_der(issued["certificate_pem"].as_str().unwrap()),
    );
    let mut results = Vec::new();
    for port in [1001, 1002, 1003] {
        results.push(serde_json::json!({
            "endpoint": format!("soon.example.com:{port}"), "server_name": "soon.example.com",
            "scanned_at": 1, "findings": [], "details": [], "chain": [der],
        }));
    }
    results.push(serde_json::json!({
        "endpoint": "gone.example.com:443", "server_name": "gone.example.com",
        "scanned_at": 1, "error": "connection refused",
    }));
    let (status, recorded, text) = server
        .post(
            "/api/v1/scans",
            Some(server.token()),
            &serde_json::json!({"results": results}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(recorded["endpoints"], 4, "{recorded}");
    // Already in the inventory (issued here): not discovered again.
    assert_eq!(recorded["discovered"], 0, "{recorded}");
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

    // Prometheus scrapes the HTTPS listener every second with an auditor's token.
    let (_, auditor) = server.create_token("auditor", None).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &auditor).unwrap();
    let target = server.https.trim_start_matches("https://").to_string();
    let port = free_port();
    let prometheus_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_yml,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: certkeeper\n    scheme: https\n    tls_config:\n      ca_file: {}\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            dir.path().join("data/ca/root.crt").display(),
            token_file.display()
        ),
    )
    .unwrap();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prometheus_yml.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (scripts/test installs it)"),
    );
    // The scrape works.
    assert_eq!(promql(port, "up{job=\"certkeeper\"} == 1").await, 1.0);
    // M2: one success (ok) and one failure (bad) so far.
    let m2 = promql(
        port,
        "sum(certkeeper_renewal_attempts_total{outcome=\"success\"}) / sum(certkeeper_renewal_attempts_total)",
    )
    .await;
    assert_eq!(
        m2,
        0.5,
        "{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap()
    );
    // M1: valid targets ÷ all targets, as arranged.
    let m1 = promql(
        port,
        "sum(certkeeper_targets{valid=\"true\"}) / sum(certkeeper_targets)",
    )
    .await;
    assert_eq!(m1, 0.75);
    // The certificate expiring in 3 days, and the managed states.
    assert_eq!(
        promql(port, "certkeeper_certificates_expiring{within=\"7d\"}").await,
        1.0
    );
    assert_eq!(
        promql(port, "certkeeper_managed_certificates{state=\"failing\"}").await,
        1.0
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap()
}

#[test]
fn the_shipped_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/prometheus");
    for args in [
        ["check", "rules", "certkeeper-rules.yml"],
        ["test", "rules", "certkeeper-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (scripts/test installs prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
