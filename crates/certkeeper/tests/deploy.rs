//! Deployment targets against a real nginx: the new certificate is served after a deployment;
//! a reload that fails, or a probe that does not see the new serial, brings the previous
//! files back and nginx keeps serving the previous certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certkeeper_server::deploy::{DeployError, FileTarget, Material, deploy_files};
use common::{TestServer, free_port, wait_managed};

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
        .to_string()
}

struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM lets the master stop its workers.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

async fn issue(server: &TestServer, name: &str) -> Material {
    let (status, body, text) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": [name]}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    Material {
        serial: body["serial"].as_str().unwrap().to_string(),
        certificate_pem: body["certificate_pem"].as_str().unwrap().to_string(),
        chain_pem: body["chain_pem"].as_str().unwrap().to_string(),
        key_pem: body["private_key_pem"].as_str().unwrap().to_string(),
    }
}

/// The serial `openssl s_client` sees at `port`.
fn served_serial(port: u16) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername web.example.com </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
        .trim_start_matches("00")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_target_deploys_and_restores_on_a_failed_reload_or_probe() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let work = dir.path().join("nginx");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let w = work.display().to_string();
    let port = free_port();
    let config = format!(
        "worker_processes 1;\nerror_log {w}/error.log info;\npid {w}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {w}/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {w}/fullchain.pem;\n    ssl_certificate_key {w}/key.pem;\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
    );
    std::fs::write(work.join("nginx.conf"), &config).unwrap();
    let reload = format!("{} -p {w} -c {w}/nginx.conf -s reload", nginx_binary());
    let target = FileTarget::nginx(
        work.join("fullchain.pem"),
        work.join("key.pem"),
        format!("127.0.0.1:{port}"),
        Some(reload.clone()),
    );

    // First certificate: files only (nginx is not running yet), then start nginx.
    let first = issue(&server, "web.example.com").await;
    let files_only = FileTarget {
        fullchain: target.fullchain.clone(),
        key: target.key.clone(),
        ..FileTarget::default()
    };
    deploy_files(&files_only, &first).await.unwrap();
    let mode = std::fs::metadata(work.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the key is private");
    let _nginx = Nginx(
        Command::new(nginx_binary())
            .args([
                "-p",
                &w,
                "-c",
                &format!("{w}/nginx.conf"),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test installs nginx-light)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_serial(port) != first.serial {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A renewal: deployed, reloaded, probed; openssl sees the new serial.
    let second = issue(&server, "web.example.com").await;
    let deployed = deploy_files(&target, &second).await.unwrap();
    assert!(deployed.probed);
    assert_eq!(served_serial(port), second.serial);

    // A broken nginx configuration: the reload fails, the files come back, nginx keeps
    // serving the second certificate.
    std::fs::write(work.join("nginx.conf"), "this is not nginx configuration\n").unwrap();
    let third = issue(&server, "web.example.com").await;
    let error = deploy_files(&target, &third).await.unwrap_err();
    assert!(
        matches!(error, DeployError::Reload { restored: true, .. }),
        "{error}"
    );
    let on_disk = std::fs::read_to_string(work.join("fullchain.pem")).unwrap();
    assert!(
        on_disk.starts_with(&second.certificate_pem),
        "the previous files are back"
    );
    assert_eq!(served_serial(port), second.serial);
    std::fs::write(work.join("nginx.conf"), &config).unwrap();

    // Files nginx does not read: the reload succeeds but the probe still sees the second
    // serial, so the deployment is undone (the files did not exist before: removed).
    let elsewhere = FileTarget {
        fullchain: Some(work.join("other-fullchain.pem")),
        key: Some(work.join("other-key.pem")),
        probe_timeout: Duration::from_secs(1),
        ..target.clone()
    };
    let error = deploy_files(&elsewhere, &third).await.unwrap_err();
    match &error {
        DeployError::Probe {
            seen,
            expected,
            restored,
            ..
        } => {
            assert!(seen.contains(&second.serial), "{error}");
            assert_eq!(expected, &third.serial);
            assert!(restored);
        }
        other => panic!("expected a probe failure, got {other}"),
    }
    assert!(!work.join("other-fullchain.pem").exists());
    assert!(!work.join("other-key.pem").exists());
    assert_eq!(served_serial(port), second.serial);
    // Secrets stay out of error messages and debug output.
    assert!(!format!("{error} {third:?}").contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_certificate_renews_into_nginx_and_a_broken_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certkeeper.toml");
    std::fs::write(
        &config,
        "[lifecycle]\ntick_ms = 200\nbackoff_base = \"1h\"\n",
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let work = dir.path().join("nginx");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let w = work.display().to_string();
    let port = free_port();
    let nginx_config = format!(
        "worker_processes 1;\nerror_log {w}/error.log info;\npid {w}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {w}/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {w}/fullchain.pem;\n    ssl_certificate_key {w}/key.pem;\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
    );
    std::fs::write(work.join("nginx.conf"), &nginx_config).unwrap();
    // nginx needs a certificate to start: a first one from the API.
    let bootstrap = issue(&server, "web.example.com").await;
    deploy_files(
        &FileTarget {
            fullchain: Some(work.join("fullchain.pem")),
            key: Some(work.join("key.pem")),
            ..FileTarget::default()
        },
        &bootstrap,
    )
    .await
    .unwrap();
    let _nginx = Nginx(
        Command::new(nginx_binary())
            .args([
                "-p",
                &w,
                "-c",
                &format!("{w}/nginx.conf"),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test installs nginx-light)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_serial(port) != bootstrap.serial {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let reload = format!("{} -p {w} -c {w}/nginx.conf -s reload", nginx_binary());
    let declaration = serde_json::json!({"certificates": [{
        "name": "web", "sans": ["web.example.com"],
        "targets": [{"type": "nginx", "fullchain": format!("{w}/fullchain.pem"),
                     "key": format!("{w}/key.pem"), "probe": format!("127.0.0.1:{port}"),
                     "reload": reload}]
    }]});
    let (status, _, text) = server
        .post(
            "/api/v1/managed-certificates/apply",
            Some(server.token()),
            &declaration,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let first = wait_managed(&server, "web", "first deployment", |v| {
        v["state"] == "ready"
    })
    .await;
    let first_serial = first["current_serial"].as_str().unwrap().to_string();
    assert_eq!(first["targets"][0]["probed"], true);
    assert_eq!(served_serial(port), first_serial);

    // A renewal reaches nginx.
    let renew = |server: &TestServer| {
        let server_url = server.url("/api/v1/managed-certificates/web/renew");
        let client = server.client.clone();
        let token = server.token().to_string();
        async move {
            let response = client
                .post(server_url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 202);
        }
    };
    renew(&server).await;
    let second = wait_managed(&server, "web", "renewal", |v| {
        v["state"] == "ready" && v["current_serial"].as_str() != Some(first_serial.as_str())
    })
    .await;
    let second_serial = second["current_serial"].as_str().unwrap().to_string();
    assert_eq!(served_serial(port), second_serial);

    // nginx's configuration breaks: the next renewal's reload fails, the previous files come
    // back, nginx keeps serving the second certificate, and status says what failed.
    std::fs::write(work.join("nginx.conf"), "broken\n").unwrap();
    renew(&server).await;
    let failing = wait_managed(&server, "web", "failed renewal", |v| {
        v["state"] == "failing"
    })
    .await;
    let target = &failing["targets"][0];
    assert!(
        target["error"].as_str().unwrap().contains("reload"),
        "{failing:#}"
    );
    assert_eq!(
        failing["current_serial"],
        second_serial.as_str(),
        "the serial in force"
    );
    assert_ne!(
        failing["attempts"][0]["serial"],
        second_serial.as_str(),
        "the attempt's own"
    );
    assert_eq!(served_serial(port), second_serial);
    let on_disk = std::fs::read(work.join("fullchain.pem")).unwrap();
    let leaf = pem::parse_many(&on_disk).unwrap()[0].contents().to_vec();
    assert_eq!(
        certkeeper_pki::parse_certificate(&leaf).unwrap().serial,
        second_serial
    );
    std::fs::write(work.join("nginx.conf"), &nginx_config).unwrap();
}
