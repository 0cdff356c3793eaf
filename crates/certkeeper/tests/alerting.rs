//! Built-in alerting end to end: managed certificates expiring within 14 days whose renewals
//! keep failing produce exactly one grouped notification per owner at a local webhook (after
//! one retried delivery) and at a Slack-compatible webhook; a silence holds another owner's
//! group back; its end brings it back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::{TestServer, apply_managed, certkeeper, text, wait_managed};

/// What the receiver got: (path, HTTP status it answered, body).
type Received = Arc<Mutex<Vec<(String, u16, serde_json::Value)>>>;

/// A local webhook receiver: answers 503 to the very first request (to exercise retries),
/// 200 afterwards, and keeps every body.
async fn start_receiver() -> (u16, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{path}",
            axum::routing::post(
                |State(received): State<Received>,
                 Path(path): Path<String>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let mut received = received.lock().unwrap();
                    let status = if received.is_empty() { 503 } else { 200 };
                    received.push((path, status, body));
                    StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

/// Accepted notifications at `path` whose group is `owner`.
fn accepted(received: &Received, path: &str, owner: &str) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, status, body)| {
            p == path
                && *status == 200
                && (body["group_labels"]["owner"] == owner
                    || body["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("owner={owner}"))))
        })
        .map(|(_, _, body)| body.clone())
        .collect()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Declares two managed certificates of `owner`, issued at once with a 10-day profile, then
/// moves them to an issuer that does not exist and renews: every renewal fails while the
/// certificates in force expire within 14 days.
async fn failing_pair(server: &TestServer, owner: &str) {
    let names = [format!("{owner}-1"), format!("{owner}-2")];
    let declare = |issuer: &str| {
        serde_json::json!(
            names
                .iter()
                .map(|name| serde_json::json!({
                    "name": name, "sans": [format!("{name}.example.com")], "profile": "short",
                    "owner": owner, "issuer": issuer,
                    "renewal": {"kind": "before_expiry", "seconds": 30 * 86_400},
                }))
                .collect::<Vec<_>>()
        )
    };
    apply_managed(server, declare("internal")).await;
    for name in &names {
        wait_managed(server, name, "issuance", |v| v["state"] == "ready").await;
    }
    apply_managed(server, declare("nowhere")).await;
    for name in &names {
        let (status, _, body) = server
            .post(
                &format!("/api/v1/managed-certificates/{name}/renew"),
                Some(server.token()),
                &serde_json::json!({}),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    for name in &names {
        wait_managed(server, name, "a failed renewal", |v| {
            v["state"] == "failing"
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_renewals_notify_once_per_group_and_silences_hold_them_back() {
    let (port, received) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[lifecycle]
tick_ms = 100
backoff_base = "1h"

[[profile]]
name = "short"
default_validity = "10d"
max_validity = "10d"
key_algorithms = ["ecdsa-p256"]
key_usage = ["digital-signature"]
extended_key_usage = ["server-auth"]
san_kinds = ["dns"]

[alerting]
interval = "1s"
group_wait = "3s"
repeat_interval = "1h"
renewal_failures = 5
retries = 3

[[alerting.receiver]]
name = "oncall"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
severities = ["page"]

[[alerting.receiver]]
name = "chat"
kind = "slack"
url = "http://127.0.0.1:{port}/slack"
severities = ["page"]
"#
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let root = dir.path().join("data/ca/root.crt");
    let env = [
        ("CERTKEEPER_SERVER", server.https.as_str()),
        ("CERTKEEPER_TOKEN", server.token()),
        ("CERTKEEPER_CA_FILE", root.to_str().unwrap()),
    ];

    // A maintenance window for owner "db", declared before its certificates fail.
    let out = certkeeper(
        &[
            "alert",
            "silence",
            "add",
            "--match",
            "owner=db",
            "--duration",
            "1h",
            "--comment",
            "db maintenance",
            "-o",
            "json",
        ],
        dir.path(),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let silence: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let silence_id = silence[0]["id"].as_str().unwrap().to_string();
    assert_eq!(silence[0]["state"], "active");

    // Owner "web": both certificates fail; one notification groups them.
    failing_pair(&server, "web").await;
    wait_for("the web notification", || {
        !accepted(&received, "hook", "web").is_empty()
    })
    .await;
    let web = accepted(&received, "hook", "web");
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(web[0]["status"], "firing");
    assert_eq!(web[0]["severity"], "page");
    let mut subjects: Vec<&str> = web[0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["rule"], "CertificateExpiringUnrenewed", "{a}");
            a["subject"].as_str().unwrap()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["web-1", "web-2"]);
    // The first delivery (to either receiver) was refused with 503 and retried with the same
    // body a second later.
    let retried = |received: &Received| {
        let all = received.lock().unwrap();
        let refused: Vec<_> = all.iter().filter(|(_, status, _)| *status == 503).collect();
        assert_eq!(refused.len(), 1);
        all.iter()
            .filter(|(p, status, body)| {
                p == &refused[0].0 && *status == 200 && *body == refused[0].2
            })
            .count()
    };
    wait_for("the retried delivery", || retried(&received) > 0).await;
    assert_eq!(retried(&received), 1);
    // The Slack-compatible receiver got the same group as text.
    wait_for("the slack notification", || {
        !accepted(&received, "slack", "web").is_empty()
    })
    .await;
    let slack = accepted(&received, "slack", "web");
    let message = slack[0]["text"].as_str().unwrap();
    assert!(message.starts_with("*[FIRING] page*"), "{message}");
    assert!(
        message.contains("web-1") && message.contains("web-2"),
        "{message}"
    );

    // Owner "db": its certificates fail too, but the silence holds the group back.
    failing_pair(&server, "db").await;
    let (_, alerts, body) = server.get("/api/v1/alerts", Some(server.token())).await;
    let db_alerts: Vec<&serde_json::Value> = alerts
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter(|a| a["labels"]["owner"] == "db")
        .collect();
    // The alerts are evaluated every second: wait until both show, silenced.
    if db_alerts.len() < 2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (_, alerts, _) = server.get("/api/v1/alerts", Some(server.token())).await;
    let db_alerts: Vec<&serde_json::Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["owner"] == "db" && a["rule"] == "CertificateExpiringUnrenewed")
        .collect();
    assert_eq!(db_alerts.len(), 2, "{alerts}");
    assert!(
        db_alerts
            .iter()
            .all(|a| a["silenced_by"] == silence_id.as_str()),
        "{alerts}"
    );
    // Several evaluations and more than the group wait later: nothing for db, nothing new
    // for web (deduplicated).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(accepted(&received, "hook", "db").is_empty());
    assert_eq!(accepted(&received, "hook", "web").len(), 1);
    let out = certkeeper(&["alert", "list"], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&silence_id), "{}", text(&out));

    // The end of the silence brings the db group back: one notification with both.
    let out = certkeeper(
        &["alert", "silence", "expire", &silence_id],
        dir.path(),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the db notification", || {
        !accepted(&received, "hook", "db").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = accepted(&received, "hook", "db");
    assert_eq!(db.len(), 1, "{db:?}");
    assert_eq!(db[0]["alerts"].as_array().unwrap().len(), 2, "{db:?}");
    assert_eq!(accepted(&received, "hook", "web").len(), 1);

    // A silence without matchers is refused and writes nothing; expiring it twice is a 404.
    let (status, problem, _) = server
        .post(
            "/api/v1/alerts/silences",
            Some(server.token()),
            &serde_json::json!({"matchers": {}, "comment": "everything"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let out = certkeeper(
        &["alert", "silence", "expire", &silence_id],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no silence"), "{}", text(&out));
    // A tenant's token: its silences are bound to its tenant, and it can neither see nor end
    // a fleet-wide one.
    let (status, global, text_) = server
        .post(
            "/api/v1/alerts/silences",
            Some(server.token()),
            &serde_json::json!({"matchers": {"rule": "RenewalFailing"}, "comment": "fleet-wide"}),
        )
        .await;
    assert_eq!(status, 201, "{text_}");
    let (_, tenant_token) = server.create_token("issuer", Some("shop")).await;
    let (status, own, text_) = server
        .post(
            "/api/v1/alerts/silences",
            Some(&tenant_token),
            &serde_json::json!({"matchers": {"owner": "web"}, "comment": "shop window"}),
        )
        .await;
    assert_eq!(status, 201, "{text_}");
    assert_eq!(own["matchers"]["tenant"], "shop", "{own}");
    let (_, listed, _) = server
        .get("/api/v1/alerts/silences", Some(&tenant_token))
        .await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [own["id"].as_str().unwrap()], "{listed}");
    let response = server
        .client
        .delete(server.url(&format!(
            "/api/v1/alerts/silences/{}",
            global["id"].as_str().unwrap()
        )))
        .bearer_auth(&tenant_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    // Auditors read alerts but cannot silence.
    let (_, auditor) = server.create_token("auditor", None).await;
    let (status, _, _) = server
        .post(
            "/api/v1/alerts/silences",
            Some(&auditor),
            &serde_json::json!({"matchers": {"owner": "web"}, "comment": "no"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = server.get("/api/v1/alerts", Some(&auditor)).await;
    assert_eq!(status, 200);

    // /metrics counts the firing alerts for the fleet's tokens, not for another tenant's.
    let series = "certkeeper_alerts{rule=\"CertificateExpiringUnrenewed\",severity=\"page\"}";
    assert!(
        server.metrics(&auditor).await.contains(series),
        "the auditor sees the firing alerts"
    );
    assert!(
        !server.metrics(&tenant_token).await.contains(series),
        "the shop tenant's token does not see the default tenant's alerts"
    );

    // A restart forgets nothing: the groups told already are not told again once the alerts
    // are evaluated anew (well past the group wait).
    let token = server.token.clone();
    let mut server = server;
    server.stop();
    let mut restarted = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    restarted.token = token;
    wait_for_alerts(&restarted, "web").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(accepted(&received, "hook", "web").len(), 1);
    assert_eq!(accepted(&received, "hook", "db").len(), 1);
}

/// Waits until the restarted server's first evaluations show `owner`'s alerts again.
async fn wait_for_alerts(server: &TestServer, owner: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, alerts, _) = server.get("/api/v1/alerts", Some(server.token())).await;
        if alerts
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["labels"]["owner"] == owner))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {owner} alerts after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
