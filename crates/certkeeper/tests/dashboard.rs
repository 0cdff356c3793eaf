//! The web dashboard in headless Chromium (Debian `chromium` and `chromium-driver`, driven by
//! Selenium from PyPI through `tests/ui/dashboard.py`): login, every view, an inventory
//! search, a certificate's detail, an auditor without write controls, no console errors.
//! Screenshots go to `<target>/tmp/dashboard/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestServer, apply_managed, wait_managed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_every_view_logs_in_searches_and_opens_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[lifecycle]\ntick_ms = 100\nbackoff_base = \"1h\"\n",
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    // Something on every view: certificates to find, one revoked, a managed certificate that
    // renews and one that fails, an audit log.
    let mut serials = Vec::new();
    for name in [
        "shop.example.com",
        "search-me.example.com",
        "old.example.com",
    ] {
        let (status, body, text) = server
            .post(
                "/api/v1/certificates",
                Some(server.token()),
                &serde_json::json!({"profile": "tls-server", "sans": [name]}),
            )
            .await;
        assert_eq!(status, 201, "{text}");
        serials.push(body["serial"].as_str().unwrap().to_string());
    }
    let (status, _, text) = server
        .post(
            "/api/v1/revocations",
            Some(server.token()),
            &serde_json::json!({"serial": serials[2], "reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    apply_managed(
        &server,
        serde_json::json!([
            {"name": "web", "sans": ["web.example.com"], "owner": "web-team"},
            {"name": "broken", "sans": ["broken.example.com"], "issuer": "nowhere", "owner": "web-team"}
        ]),
    )
    .await;
    wait_managed(&server, "web", "issuance", |v| v["state"] == "ready").await;
    wait_managed(&server, "broken", "a failure", |v| v["state"] == "failing").await;
    let (_, auditor) = server.create_token("auditor", None).await;
    // One scanned endpoint serving the shop certificate: the valid ratio has a value.
    let (_, shop, _) = server
        .get(
            &format!("/api/v1/certificates/{}", serials[0]),
            Some(server.token()),
        )
        .await;
    let der: String = shop["certificate_pem"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let (status, _, text) = server
        .post(
            "/api/v1/scans",
            Some(server.token()),
            &serde_json::json!({"results": [{"endpoint": "shop.example.com:443",
                "server_name": "shop.example.com", "scanned_at": 1, "chain": [der]}]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");

    // A tenant's token sees its tenant's figures on the executive view, not the fleet's.
    let (_, blue) = server.create_token("issuer", Some("blue")).await;
    let executive = |token: String| {
        let server = &server;
        async move {
            let (status, body, text) = server.get("/api/v1/dashboard", Some(&token)).await;
            assert_eq!(status, 200, "{text}");
            body["executive"].clone()
        }
    };
    let fleet = executive(server.token().to_string()).await;
    assert!(
        fleet["certificates_active"].as_i64().unwrap() >= 2,
        "{fleet}"
    );
    assert_eq!(fleet["targets_total"], 1, "{fleet}");
    let (status, _, text) = server
        .post(
            "/api/v1/certificates",
            Some(&blue),
            &serde_json::json!({"profile": "tls-server", "sans": ["blue.example.com"]}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    // Reaching into another tenant is denied and audited: a policy violation of blue's.
    let (status, _, _) = server
        .get("/api/v1/certificates?tenant=default", Some(&blue))
        .await;
    assert_eq!(status, 403);
    let own = executive(blue.clone()).await;
    assert_eq!(own["certificates_active"], 1, "{own}");
    assert_eq!(own["targets_total"], 0, "{own}");
    assert_eq!(own["policy_violations_7d"], 1, "{own}");
    let fleet_after = executive(server.token().to_string()).await;
    assert_eq!(
        fleet_after["certificates_active"].as_i64().unwrap(),
        fleet["certificates_active"].as_i64().unwrap() + 1,
        "{fleet_after}"
    );

    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let _ = std::fs::remove_dir_all(&output);
    std::fs::create_dir_all(&output).unwrap();
    let python = std::env::var("CERTKEEPER_UI_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/dashboard.py");
    let run = Command::new(&python)
        .arg(&script)
        .args(["--base-url", &server.https])
        .args(["--admin-token", server.token()])
        .args(["--auditor-token", &auditor])
        .args(["--search", "search-me"])
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (scripts/test installs Selenium and sets CERTKEEPER_UI_PYTHON): {e}")
        });
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser run failed (screenshots in {}):\n{stdout}\n{stderr}",
        output.display()
    );
    let summary: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no summary in:\n{stdout}")),
    )
    .unwrap();
    assert_eq!(summary["console_errors"], 0, "{summary}");
    // A screenshot per view, the login, the certificate and the auditor's view: real PNGs.
    let shots: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(shots.len() >= 8, "{shots:?}");
    for shot in &shots {
        let bytes = std::fs::read(shot).unwrap();
        assert!(bytes.len() > 1000, "{}", shot.display());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", shot.display());
    }
    assert!(!output.join("failure.png").exists());
}
