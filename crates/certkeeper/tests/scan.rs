//! `certkeeper scan` against a real nginx serving five endpoints: a good certificate, an
//! expired one, a wrong name, a missing intermediate and a revoked certificate (found in the
//! issuer's CRL). Each finding is reported, recorded on the server, and feeds M1. Revocation
//! of certificates that name no CRL is found through their OCSP responder (cfssl's).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use common::peers::{start_cfssl_ocsp, start_nginx};
use common::{TestServer, certkeeper, free_port, metric_sample, text};

/// A test root with an expired leaf for `localhost`, outside certkeeper: (root PEM, leaf PEM,
/// leaf key PEM).
fn expired_chain() -> (String, String, String) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "Scan Test Root");
    root.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2020, 6, 1);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (root_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

async fn issue(server: &TestServer, sans: &[&str]) -> serde_json::Value {
    let (status, body, text) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": sans, "key_algorithm": "ecdsa-p256"}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_reports_each_finding_records_it_and_feeds_m1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[crl]\ndebounce_ms = 50\n").unwrap();
    // A fixed relying-party port: certificates name their CRL there.
    let http_listen = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--http-listen",
            &http_listen,
        ],
    );
    let work = dir.path().join("nginx");
    std::fs::create_dir_all(&work).unwrap();

    // What each endpoint serves: (name, certificate file contents, key).
    let good = issue(&server, &["localhost"]).await;
    let wrong = issue(&server, &["wrong.example.com"]).await;
    let partial = issue(&server, &["localhost"]).await;
    let revoked = issue(&server, &["localhost"]).await;
    let (test_root, expired_leaf, expired_key) = expired_chain();
    let pem = |v: &serde_json::Value, field: &str| v[field].as_str().unwrap().to_string();
    let endpoints = [
        (
            "good",
            pem(&good, "full_chain_pem"),
            pem(&good, "private_key_pem"),
        ),
        ("expired", expired_leaf, expired_key),
        (
            "wrong",
            pem(&wrong, "full_chain_pem"),
            pem(&wrong, "private_key_pem"),
        ),
        // The leaf alone: the intermediate is missing.
        (
            "partial",
            pem(&partial, "certificate_pem"),
            pem(&partial, "private_key_pem"),
        ),
        (
            "revoked",
            pem(&revoked, "full_chain_pem"),
            pem(&revoked, "private_key_pem"),
        ),
    ];
    let mut block = String::new();
    let mut ports = Vec::new();
    for (name, chain, key) in &endpoints {
        let port = free_port();
        ports.push(port);
        std::fs::write(work.join(format!("{name}.crt")), chain).unwrap();
        std::fs::write(work.join(format!("{name}.key")), key).unwrap();
        block.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {w}/{name}.crt; ssl_certificate_key {w}/{name}.key; location / {{ return 200; }} }}\n",
            w = work.display()
        ));
    }
    let _nginx = start_nginx(&work, &block, ports[4]);
    let test_root_file = dir.path().join("test-root.pem");
    std::fs::write(&test_root_file, test_root).unwrap();

    // Revoke one, and wait until the CRL relying parties fetch lists it.
    let revoked_serial = pem(&revoked, "serial");
    let (status, _, text_) = server
        .post(
            "/api/v1/revocations",
            Some(server.token()),
            &serde_json::json!({"serial": revoked_serial, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, 200, "{text_}");
    let crl_url = format!("{}/crl/intermediate.crl", server.http);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let der = reqwest::get(&crl_url).await.unwrap().bytes().await.unwrap();
        let crl = dir.path().join("crl.der");
        std::fs::write(&crl, &der).unwrap();
        let listed = common::run(
            "openssl",
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl.to_str().unwrap(),
                "-noout",
                "-text",
            ],
            dir.path(),
        );
        if text(&listed)
            .to_lowercase()
            .contains(&format!("serial number: {revoked_serial}"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CRL never listed {revoked_serial}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let root = dir.path().join("data/ca/root.crt");
    let env = [
        ("CERTKEEPER_SERVER", server.https.as_str()),
        ("CERTKEEPER_TOKEN", server.token()),
        ("CERTKEEPER_CA_FILE", root.to_str().unwrap()),
    ];
    let targets: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
    let mut args = vec![
        "scan",
        "--trust",
        test_root_file.to_str().unwrap(),
        "--check",
        "-o",
        "json",
    ];
    args.extend(targets.iter().map(String::as_str));
    let out = certkeeper(&args, dir.path(), &env);
    // --check: some endpoints do not serve a valid certificate.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.len(), 5, "{}", text(&out));
    let expected: [(&str, &[&str]); 5] = [
        ("good", &[]),
        ("expired", &["expired"]),
        ("wrong", &["name_mismatch"]),
        ("partial", &["incomplete_chain"]),
        ("revoked", &["revoked"]),
    ];
    for ((name, findings), (report, port)) in expected.iter().zip(reports.iter().zip(&ports)) {
        assert_eq!(report["endpoint"], format!("localhost:{port}"));
        let got: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(&got, findings, "{name}: {report}");
        assert_eq!(report["valid"], findings.is_empty(), "{name}: {report}");
    }
    assert_eq!(reports[4]["serial"], revoked_serial.as_str());

    // Recorded: the latest scan of each endpoint, and the expired certificate (issued
    // elsewhere) is new in the inventory as discovered.
    let (status, recorded, body) = server.get("/api/v1/scans", Some(server.token())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(recorded["items"].as_array().unwrap().len(), 5, "{recorded}");
    // The broken ones among them, and the revoked one, by filter; pages of two by cursor.
    let (_, invalid, _) = server
        .get("/api/v1/scans?valid=false", Some(server.token()))
        .await;
    assert_eq!(invalid["items"].as_array().unwrap().len(), 4, "{invalid}");
    let (_, with_revoked, _) = server
        .get("/api/v1/scans?finding=revoked", Some(server.token()))
        .await;
    let items = with_revoked["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{with_revoked}");
    assert_eq!(items[0]["serial"], revoked_serial.as_str());
    let mut paged = Vec::new();
    let mut path = "/api/v1/scans?limit=2".to_string();
    loop {
        let (status, page, body) = server.get(&path, Some(server.token())).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["endpoint"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/scans?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let all: Vec<serde_json::Value> = recorded["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].clone())
        .collect();
    assert_eq!(paged, all);
    // The same from the CLI.
    let listed = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["scan", "--recorded", "-o", "json"];
        args.extend_from_slice(extra);
        let out = certkeeper(&args, dir.path(), &env);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(listed(&[]).len(), 5);
    assert_eq!(listed(&["--invalid"]).len(), 4);
    let revoked_only = listed(&["--finding", "revoked"]);
    assert_eq!(revoked_only.len(), 1);
    assert_eq!(revoked_only[0]["serial"], revoked_serial.as_str());
    let table = certkeeper(&["scan", "--recorded", "--invalid"], dir.path(), &env);
    assert!(table.status.success(), "{}", text(&table));
    assert_eq!(text(&table).matches(" NO ").count(), 4, "{}", text(&table));
    let bad = certkeeper(
        &["scan", "--recorded", "--finding", "bogus"],
        dir.path(),
        &env,
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown finding"), "{}", text(&bad));
    for bad in ["finding=bogus", "valid=maybe", "cursor=zz", "colour=red"] {
        let (status, problem, body) = server
            .get(&format!("/api/v1/scans?{bad}"), Some(server.token()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(problem["detail"].is_string(), "{bad}: {body}");
    }
    let (_, found, body) = server
        .get(
            "/api/v1/certificates?name=localhost&status=expired",
            Some(server.token()),
        )
        .await;
    let items = found["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["source"], "discovered", "{body}");
    let audit = server.audit().await;
    assert!(
        audit.iter().any(|e| e["action"] == "scan.record"),
        "no scan.record audit entry"
    );

    // M1 from /metrics: one valid endpoint of five.
    let metrics = server.metrics(server.token()).await;
    assert_eq!(
        metric_sample(&metrics, "certkeeper_targets{kind=\"scan\",valid=\"true\"}"),
        1.0
    );
    assert_eq!(
        metric_sample(
            &metrics,
            "certkeeper_targets{kind=\"scan\",valid=\"false\"}"
        ),
        4.0
    );
    assert_eq!(
        metric_sample(&metrics, "certkeeper_scan_findings{finding=\"revoked\"}"),
        1.0
    );
    // Another tenant's token counts none of the default tenant's endpoints.
    let (_, blue) = server.create_token("auditor", Some("blue")).await;
    let blue_metrics = server.metrics(&blue).await;
    for series in [
        "certkeeper_scan_findings{finding=\"revoked\"}",
        "certkeeper_targets{kind=\"scan\",valid=\"true\"}",
        "certkeeper_targets{kind=\"scan\",valid=\"false\"}",
    ] {
        assert_eq!(metric_sample(&blue_metrics, series), 0.0, "{series}");
    }

    // The good endpoint alone passes --check; a CIDR sweep by address finds that the
    // certificate does not name the address (offline: nothing recorded).
    let good_target = targets[0].clone();
    let out = certkeeper(&["scan", "--check", &good_target], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
    let good_port = ports[0].to_string();
    let out = certkeeper(
        &[
            "scan",
            "--no-record",
            "-o",
            "json",
            "127.0.0.1/32",
            "--ports",
            &good_port,
        ],
        dir.path(),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let sweep: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sweep[0]["endpoint"], format!("127.0.0.1:{good_port}"));
    assert!(
        sweep[0]["findings"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("name_mismatch")),
        "{sweep:?}"
    );

    // Bad input: a clear error, exit 2, nothing recorded.
    for bad in [["scan", "localhost:0"], ["scan", "10.0.0.0/33"]] {
        let out = certkeeper(&bad, dir.path(), &env);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("error:"), "{}", text(&out));
    }
    let (_, recorded, _) = server.get("/api/v1/scans", Some(server.token())).await;
    assert_eq!(recorded["items"].as_array().unwrap().len(), 5);
    // A bad submission to the API is a problem, and writes nothing.
    let (status, problem, _) = server
        .post(
            "/api/v1/scans",
            Some(server.token()),
            &serde_json::json!({"results": [{"endpoint": "x:1", "server_name": "x", "scanned_at": 1, "chain": ["not base64!"]}]}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let (_, recorded, _) = server.get("/api/v1/scans", Some(server.token())).await;
    assert_eq!(recorded["items"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_scan_records_what_it_finds_and_feeds_m1() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let silent = free_port();
    let config = dir.path().join("server.toml");
    // A named endpoint (nothing listens yet) and a swept address on a silent port.
    std::fs::write(
        &config,
        format!(
            "[[scan]]\nname = \"edge\"\ntargets = [\"localhost:{port}\", \"127.0.0.1/32\"]\nports = [{silent}]\ninterval = \"10s\"\n"
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let scans = || async {
        let (status, body, text_) = server.get("/api/v1/scans", Some(server.token())).await;
        assert_eq!(status, 200, "{text_}");
        body["items"].as_array().unwrap().clone()
    };
    // The first run: the named endpoint is recorded as failing; the silent swept address is not.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let recorded = scans().await;
        if !recorded.is_empty() {
            break recorded;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled scan recorded nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["endpoint"], format!("localhost:{port}"));
    assert_eq!(first[0]["valid"], false);
    assert!(
        first[0]["error"].as_str().unwrap().contains("connect"),
        "{first:?}"
    );
    assert_eq!(first[0]["scanner"], "scan:edge");

    // nginx starts serving a certificate of this CA: the next run finds it valid.
    let issued = issue(&server, &["localhost"]).await;
    let work = dir.path().join("nginx");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("c.pem"),
        issued["full_chain_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("k.pem"),
        issued["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let _nginx = start_nginx(
        &work,
        &format!(
            "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {w}/c.pem; ssl_certificate_key {w}/k.pem; }}\n",
            w = work.display()
        ),
        port,
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let recorded = scans().await;
        if recorded.len() == 1 && recorded[0]["valid"] == true {
            assert_eq!(recorded[0]["serial"], issued["serial"]);
            break;
        }
        assert!(Instant::now() < deadline, "never valid: {recorded:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = server.metrics(server.token()).await;
    assert_eq!(
        metric_sample(&metrics, "certkeeper_targets{kind=\"scan\",valid=\"true\"}"),
        1.0
    );
    assert_eq!(
        metric_sample(
            &metrics,
            "certkeeper_targets{kind=\"scan\",valid=\"false\"}"
        ),
        0.0
    );
}

/// Runs openssl in `dir` and insists that it worked.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = common::run("openssl", args, dir);
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// Has the CA `ca` (`ca.crt`, `ca.key`) sign a certificate for `name` with the extensions
/// `ext` (openssl extension-file lines); leaves `name.crt` and `name.key` in `dir`.
fn openssl_issue(dir: &std::path::Path, ca: &str, name: &str, subject: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "90",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

#[test]
fn revocation_is_found_by_ocsp_when_a_certificate_names_no_crl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let ocsp_port = free_port();
    // A CA made with openssl; its leaves name an OCSP responder and no CRL. The responder is
    // cfssl's, with answers that cfssl signs through a delegated responder certificate.
    openssl(
        pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.crt",
            "-subj",
            "/CN=OCSP Scan Test Root",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl_issue(
        pki,
        "root",
        "intermediate",
        "/CN=OCSP Scan Test Intermediate",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    openssl_issue(
        pki,
        "intermediate",
        "responder",
        "/CN=OCSP Scan Test Responder",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
    );
    let leaf_ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{ocsp_port}/\n"
    );
    let intermediate = std::fs::read_to_string(pki.join("intermediate.crt")).unwrap();
    for name in ["good", "revoked", "unknown"] {
        openssl_issue(pki, "intermediate", name, "/CN=localhost", &leaf_ext);
        let leaf = std::fs::read_to_string(pki.join(format!("{name}.crt"))).unwrap();
        std::fs::write(pki.join(format!("{name}.chain")), leaf + &intermediate).unwrap();
    }
    // Look-alikes of the intermediate: its name and its key written compressed, each signed
    // by a throwaway key. Served ahead of the real one, they must not hide the revoked answer.
    openssl(
        pki,
        &[
            "ec",
            "-in",
            "intermediate.key",
            "-pubout",
            "-conv_form",
            "compressed",
            "-out",
            "intermediate-compressed.pub",
        ],
    );
    let mut look_alike_chain = std::fs::read_to_string(pki.join("revoked.crt")).unwrap();
    for i in 0..4 {
        let name = format!("look-alike-{i}");
        openssl(
            pki,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                "/CN=OCSP Scan Test Intermediate",
            ],
        );
        openssl(
            pki,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-signkey",
                &format!("{name}.key"),
                "-force_pubkey",
                "intermediate-compressed.pub",
                "-days",
                "30",
                "-out",
                &format!("{name}.crt"),
            ],
        );
        look_alike_chain += &std::fs::read_to_string(pki.join(format!("{name}.crt"))).unwrap();
    }
    look_alike_chain += &intermediate;
    std::fs::write(pki.join("look-alike.chain"), look_alike_chain).unwrap();
    std::fs::copy(pki.join("revoked.key"), pki.join("look-alike.key")).unwrap();
    // Answers for two of the three: the responder refuses to speak of the third.
    let mut responses = String::new();
    for (name, status) in [
        ("good", &["-status", "good"][..]),
        ("revoked", &["-status", "revoked", "-reason", "1"][..]),
    ] {
        let mut args = vec![
            "ocspsign",
            "-ca",
            "intermediate.crt",
            "-responder",
            "responder.crt",
            "-responder-key",
            "responder.key",
            "-cert",
        ];
        let cert = format!("{name}.crt");
        args.push(&cert);
        args.extend_from_slice(status);
        let out = common::run("cfssl", &args, pki);
        assert!(out.status.success(), "cfssl ocspsign: {}", text(&out));
        let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        responses.push_str(signed["ocspResponse"].as_str().unwrap());
        responses.push('\n');
    }
    std::fs::write(pki.join("responses.txt"), responses).unwrap();
    let responder = start_cfssl_ocsp(&pki.join("responses.txt"), ocsp_port);

    let work = pki.join("nginx");
    std::fs::create_dir_all(&work).unwrap();
    let mut block = String::new();
    let mut targets = Vec::new();
    for name in ["good", "revoked", "unknown", "look-alike"] {
        let port = free_port();
        targets.push(format!("localhost:{port}"));
        block.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {p}/{name}.chain; ssl_certificate_key {p}/{name}.key; location / {{ return 200; }} }}\n",
            p = pki.display()
        ));
    }
    let last_port: u16 = targets[3].rsplit(':').next().unwrap().parse().unwrap();
    let _nginx = start_nginx(&work, &block, last_port);

    let scan = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["scan", "--no-record", "--trust", "root.crt", "-o", "json"];
        args.extend_from_slice(extra);
        args.extend(targets.iter().map(String::as_str));
        let out = certkeeper(&args, pki, &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let findings = |report: &serde_json::Value| -> Vec<String> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    let details = |report: &serde_json::Value| report["details"].to_string();

    let reports = scan(&[]);
    assert!(findings(&reports[0]).is_empty(), "{}", reports[0]);
    assert_eq!(findings(&reports[1]), ["revoked"], "{}", reports[1]);
    assert!(
        details(&reports[1]).contains("keyCompromise, says its issuer's OCSP responder"),
        "{}",
        reports[1]
    );
    // cfssl answers "unauthorized" about a certificate it has no answer for: not revoked as
    // far as anyone can tell, and the report says why revocation was not checked.
    assert!(findings(&reports[2]).is_empty(), "{}", reports[2]);
    assert!(
        details(&reports[2]).contains("revocation not checked")
            && details(&reports[2]).contains("unauthorized"),
        "{}",
        reports[2]
    );
    // Four look-alike issuers served first: the chain still leads to the trusted root through
    // the real intermediate, and asking with each distinct issuer key finds the revocation.
    assert_eq!(findings(&reports[3]), ["revoked"], "{}", reports[3]);

    // Without revocation checks the revoked certificate looks fine: OCSP is what found it.
    let unchecked = scan(&["--no-revocation"]);
    assert!(findings(&unchecked[1]).is_empty(), "{}", unchecked[1]);

    // The responder gone: nothing is called revoked, and the report says it was not checked.
    drop(responder);
    let offline = scan(&[]);
    assert!(findings(&offline[1]).is_empty(), "{}", offline[1]);
    assert!(
        details(&offline[1]).contains("revocation not checked"),
        "{}",
        offline[1]
    );
}
