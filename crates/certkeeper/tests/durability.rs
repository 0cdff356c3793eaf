//! SIGKILL in the middle of concurrent issuance loses nothing that a client received,
//! on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

async fn kill_during_issuance(extra: &[&str], verify_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, extra);
    let token = server.token().to_string();
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut streams = Vec::new();
    for stream in 0..4 {
        let client = server.client.clone();
        let url = server.url("/api/v1/certificates");
        let token = token.clone();
        let received = received.clone();
        streams.push(tokio::spawn(async move {
            for i in 0.. {
                let body = serde_json::json!({"profile": "tls-server", "sans": [format!("s{stream}-{i}.example.com")]});
                let Ok(response) = client.post(&url).bearer_auth(&token).json(&body).send().await else { break };
                if response.status().as_u16() != 201 {
                    break;
                }
                let Ok(json) = response.json::<serde_json::Value>().await else { break };
                received.lock().unwrap().push(json["serial"].as_str().unwrap().to_string());
            }
        }));
    }
    // Let the streams run, then SIGKILL the server while requests are in flight.
    let started = std::time::Instant::now();
    while received.lock().unwrap().len() < 60 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    for stream in streams {
        stream.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 60,
        "only {} certificates issued before the kill",
        received.len()
    );

    let mut server = TestServer::start(&data, extra);
    assert!(
        server.token.is_none(),
        "a restart must not mint another bootstrap token"
    );
    server.token = Some(token.clone());
    let audited: HashSet<String> = server
        .audit()
        .await
        .into_iter()
        .filter(|e| e["action"] == "certificate.issue" && e["outcome"] == "success")
        .map(|e| e["object"].as_str().unwrap().to_string())
        .collect();
    for serial in &received {
        let (status, body, _) = server
            .get(&format!("/api/v1/certificates/{serial}"), Some(&token))
            .await;
        assert_eq!(
            status, 200,
            "certificate {serial} was received by a client but is not in the inventory: {body}"
        );
        assert!(
            audited.contains(serial),
            "certificate {serial} was received but not audited"
        );
    }
    let (status, report, _) = server.get("/api/v1/audit/verify", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    let mut args = vec!["audit", "verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(verify_args);
    let verify = certkeeper(&args, dir.path(), &[]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("audit chain intact"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_four_issuance_streams_loses_nothing_on_sqlite() {
    kill_during_issuance(&[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_four_issuance_streams_loses_nothing_on_postgres() {
    let url = fresh_postgres_database("kill");
    kill_during_issuance(&["--database-url", &url], &["--database-url", &url]).await;
    let name = url.rsplit_once('/').unwrap().1;
    let _ = std::process::Command::new("psql")
        .args([
            &postgres_admin_url(),
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}
