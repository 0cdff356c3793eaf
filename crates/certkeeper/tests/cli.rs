//! The command line: config check, init variants, offline root, tokens, import, audit verify.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn ok(output: &std::process::Output) -> String {
    let all = text(output);
    assert!(output.status.success(), "command failed: {all}");
    all
}

fn fails(output: &std::process::Output) -> String {
    let all = text(output);
    assert!(
        !output.status.success(),
        "command should have failed: {all}"
    );
    all
}

#[test]
fn config_check_accepts_good_files_and_locates_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:9443\"\n\n[[rule]]\nname = \"web\"\nallow_dns = [\".example.com\"]\n").unwrap();
    assert!(
        ok(&certkeeper(
            &["config", "check", good.to_str().unwrap()],
            dir.path(),
            &[]
        ))
        .contains("OK (3 profiles, 1 policy rules)")
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:9443\"\nlisen = \"oops\"\n",
    )
    .unwrap();
    let out = fails(&certkeeper(
        &["config", "check", bad.to_str().unwrap()],
        dir.path(),
        &[],
    ));
    assert!(
        out.contains("bad.toml:3:1")
            && out.contains("unknown field `lisen`")
            && out.contains("expected one of"),
        "{out}"
    );

    std::fs::write(&bad, "[ca]\nkey_algorithm = \"dsa\"\n").unwrap();
    let out = fails(&certkeeper(
        &["config", "check", bad.to_str().unwrap()],
        dir.path(),
        &[],
    ));
    assert!(
        out.contains("bad.toml:2:") && out.contains("ecdsa-p256"),
        "{out}"
    );

    std::fs::write(
        &bad,
        "[[rule]]\nname = \"web\"\nallow_dns = [\"*.*.example.com\"]\n",
    )
    .unwrap();
    let out = fails(&certkeeper(
        &["config", "check", bad.to_str().unwrap()],
        dir.path(),
        &[],
    ));
    assert!(out.contains("bad.toml:2:") && out.contains("web"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_root_flow_issues_from_an_intermediate_signed_offline() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("data");
    let data_s = data.to_str().unwrap();
    let out = ok(&certkeeper(
        &[
            "init",
            "--data-dir",
            data_s,
            "--offline-root",
            "--root-key-out",
            "offline/root.key",
            "--key-algorithm",
            "ecdsa-p384",
        ],
        work,
        &[],
    ));
    assert!(out.contains("sign-intermediate"), "{out}");
    assert!(
        !data.join("ca/root.key").exists(),
        "the root key is not kept"
    );
    let root_key = work.join("offline/root.key");
    assert_eq!(
        std::fs::metadata(&root_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        fails(&certkeeper(&["init", "--data-dir", data_s], work, &[])).contains("already exists")
    );

    // The server refuses to start until the intermediate is installed, and says how.
    let serve = fails(&certkeeper(
        &[
            "serve",
            "--data-dir",
            data_s,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        work,
        &[],
    ));
    assert!(serve.contains("certkeeper ca sign-intermediate"), "{serve}");

    ok(&certkeeper(
        &[
            "ca",
            "sign-intermediate",
            "--root-cert",
            &format!("{data_s}/ca/root.crt"),
            "--root-key",
            "offline/root.key",
            "--csr",
            &format!("{data_s}/ca/intermediate.csr"),
            "--out",
            "intermediate.crt",
            "--lifetime",
            "2y",
        ],
        work,
        &[],
    ));
    // A certificate for another key is refused at install.
    let other = work.join("other");
    ok(&certkeeper(
        &["init", "--data-dir", other.to_str().unwrap()],
        work,
        &[],
    ));
    let wrong = fails(&certkeeper(
        &[
            "ca",
            "install-intermediate",
            other.join("ca/intermediate.crt").to_str().unwrap(),
            "--data-dir",
            data_s,
        ],
        work,
        &[],
    ));
    assert!(wrong.contains("does not belong"), "{wrong}");
    ok(&certkeeper(
        &[
            "ca",
            "install-intermediate",
            "intermediate.crt",
            "--data-dir",
            data_s,
        ],
        work,
        &[],
    ));

    let server = TestServer::start(&data, &[]);
    let (status, body, _) = server
        .post(
            "/api/v1/certificates",
            Some(server.token()),
            &serde_json::json!({"profile": "tls-server", "sans": ["www.example.com"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(
        work.join("leaf.pem"),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let verify = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &format!("{data_s}/ca/root.crt"),
            "-untrusted",
            "intermediate.crt",
            "leaf.pem",
        ],
        work,
    );
    assert!(verify.status.success(), "{}", text(&verify));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_ca_issues_certificates_that_chain_to_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let existing = work.join("existing");
    ok(&certkeeper(
        &[
            "init",
            "--data-dir",
            existing.to_str().unwrap(),
            "--key-algorithm",
            "rsa-2048",
        ],
        work,
        &[],
    ));
    let bundle = work.join("issuing-with-chain.pem");
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(existing.join("ca/intermediate.crt")).unwrap(),
        std::fs::read_to_string(existing.join("ca/root.crt")).unwrap()
    );
    std::fs::write(&bundle, chain).unwrap();
    let data = work.join("data");
    // A key that does not match is refused and nothing is created.
    let mismatch = fails(&certkeeper(
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--import-cert",
            bundle.to_str().unwrap(),
            "--import-key",
            existing.join("ca/root.key").to_str().unwrap(),
        ],
        work,
        &[],
    ));
    assert!(mismatch.contains("does not belong"), "{mismatch}");
    assert!(!data.join("ca/intermediate.crt").exists());
    ok(&certkeeper(
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--import-cert",
            bundle.to_str().unwrap(),
            "--import-key",
            existing.join("ca/intermediate.key").to_str().unwrap(),
        ],
        work,
        &[],
    ));
    let server = TestServer::start(&data, &[]);
    let (status, body, _) = server
        .post("/api/v1/certificates", Some(server.token()), &serde_json::json!({"profile": "tls-client", "sans": ["spiffe://example.com/worker"], "key_algorithm": "ed25519"}))
        .await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(
        work.join("leaf.pem"),
        body["full_chain_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(work.join("chain.pem"), body["chain_pem"].as_str().unwrap()).unwrap();
    let verify = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            existing.join("ca/root.crt").to_str().unwrap(),
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
        work,
    );
    assert!(verify.status.success(), "{}", text(&verify));
}

fn cli_env(server: &TestServer, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CERTKEEPER_SERVER", server.https.clone()),
        ("CERTKEEPER_TOKEN", token.to_string()),
        (
            "CERTKEEPER_CA_FILE",
            server.data_dir.join("ca/root.crt").display().to_string(),
        ),
    ]
}

fn with_env<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issue_import_and_list_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = TestServer::start(&work.join("data"), &[]);
    let admin_env = cli_env(&server, server.token());
    let env = with_env(&admin_env);

    let created = ok(&certkeeper(
        &[
            "token", "create", "--name", "ci", "--role", "issuer", "--tenant", "payments",
            "--output", "json",
        ],
        work,
        &env,
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let issuer_token = created["token"].as_str().unwrap().to_string();
    let issuer_id = created["id"].as_str().unwrap().to_string();
    let listed = ok(&certkeeper(&["token", "list"], work, &env));
    assert!(
        listed.contains(&issuer_id) && listed.contains("payments"),
        "{listed}"
    );
    assert!(!listed.contains(&issuer_token), "secrets are never listed");

    // Server-side key generation through the CLI: key file is private.
    let issuer_env_owned = cli_env(&server, &issuer_token);
    let issuer_env = with_env(&issuer_env_owned);
    let out = ok(&certkeeper(
        &[
            "issue",
            "--profile",
            "tls-server",
            "--san",
            "pay.example.com",
            "--key-algorithm",
            "ecdsa-p384",
            "--label",
            "team=payments",
            "--out-cert",
            "pay.crt",
            "--out-key",
            "pay.key",
            "--out-fullchain",
            "pay-full.pem",
        ],
        work,
        &issuer_env,
    ));
    assert!(out.contains("pay.example.com"), "{out}");
    assert_eq!(
        std::fs::metadata(work.join("pay.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let modulus = run(
        "openssl",
        &["x509", "-in", "pay.crt", "-noout", "-pubkey"],
        work,
    );
    let key_pub = run("openssl", &["pkey", "-in", "pay.key", "-pubout"], work);
    assert_eq!(
        modulus.stdout, key_pub.stdout,
        "the returned key belongs to the certificate"
    );
    // Refused without somewhere to put the generated key.
    let refused = fails(&certkeeper(
        &["issue", "--san", "x.example.com"],
        work,
        &issuer_env,
    ));
    assert!(refused.contains("--out-key"), "{refused}");

    // Import a directory tree: three new certificates (this server's root is new to the
    // tenant), one already known (issued above), one unreadable file.
    let tree = work.join("existing");
    std::fs::create_dir_all(tree.join("nested/deeper")).unwrap();
    std::fs::copy(work.join("pay.crt"), tree.join("dup.pem")).unwrap();
    std::fs::copy(
        server.data_dir.join("ca/root.crt"),
        tree.join("nested/root.pem"),
    )
    .unwrap();
    let other = work.join("other");
    ok(&certkeeper(
        &["init", "--data-dir", other.to_str().unwrap()],
        work,
        &[],
    ));
    let der = run(
        "openssl",
        &[
            "x509",
            "-in",
            other.join("ca/root.crt").to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            tree.join("nested/deeper/foreign.der").to_str().unwrap(),
        ],
        work,
    );
    assert!(der.status.success());
    std::fs::copy(
        other.join("ca/intermediate.crt"),
        tree.join("nested/deeper/foreign-intermediate.crt"),
    )
    .unwrap();
    std::fs::write(tree.join("notes.txt"), "not a certificate").unwrap();
    let out = ok(&certkeeper(
        &[
            "import",
            tree.to_str().unwrap(),
            "--tenant",
            "payments",
            "--label",
            "source=legacy",
            "--output",
            "json",
        ],
        work,
        &issuer_env,
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["files"], 5, "{report}");
    assert_eq!(report["imported"], 3, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(
        report["unreadable"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        report["unreadable"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("notes.txt")
    );
    // Importing again changes nothing.
    let again: serde_json::Value = serde_json::from_str(&ok(&certkeeper(
        &[
            "import",
            tree.to_str().unwrap(),
            "--tenant",
            "payments",
            "--output",
            "json",
        ],
        work,
        &issuer_env,
    )))
    .unwrap();
    assert_eq!(
        (again["imported"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(4))
    );

    let listed = ok(&certkeeper(
        &["list", "--label", "source=legacy", "--output", "json"],
        work,
        &issuer_env,
    ));
    let page: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let table = ok(&certkeeper(
        &["list", "--name", "pay.example"],
        work,
        &issuer_env,
    ));
    assert!(
        table.contains("DNS:pay.example.com") && table.contains("payments"),
        "{table}"
    );
    let serial = serde_json::from_str::<serde_json::Value>(&ok(&certkeeper(
        &["list", "--name", "pay.example", "-o", "json"],
        work,
        &issuer_env,
    )))
    .unwrap()["items"][0]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ok(&certkeeper(&["show", &serial], work, &issuer_env)).contains("BEGIN CERTIFICATE"));

    ok(&certkeeper(&["token", "revoke", &issuer_id], work, &env));
    let revoked = fails(&certkeeper(&["list"], work, &issuer_env));
    assert!(revoked.contains("revoked"), "{revoked}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn sqlite(db: &Path, sql: &str) {
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({:?})\nc.executescript({sql:?})\nc.commit()\nc.close()\n",
        db.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_a_real_log_and_names_tampered_entries() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("data");
    let mut server = TestServer::start(&data, &[]);
    for name in ["a", "b", "c"] {
        let (status, _, _) = server
            .post("/api/v1/certificates", Some(server.token()), &serde_json::json!({"profile": "tls-server", "sans": [format!("{name}.example.com")]}))
            .await;
        assert_eq!(status, 201);
    }
    let (status, _, _) = server
        .post("/api/v1/certificates", None, &serde_json::json!({}))
        .await;
    assert_eq!(status, 401);
    server.stop();

    let intact = ok(&certkeeper(
        &["audit", "verify", "--data-dir", data.to_str().unwrap()],
        work,
        &[],
    ));
    assert!(intact.contains("audit chain intact"), "{intact}");

    for (scenario, sql, expected) in [
        (
            "edited",
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4;",
            "entry 4 was edited",
        ),
        (
            "deleted",
            "DELETE FROM audit_log WHERE seq = 3;",
            "entries 3 to 3 are missing",
        ),
        (
            "swapped",
            "UPDATE audit_log SET seq = 1000 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 1000;",
            "entry 5 does not follow",
        ),
        (
            "inserted",
            "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= 7; UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000; INSERT INTO audit_log (seq, at_ms, actor, action, object, outcome, detail, prev_hash, hash) SELECT 7, at_ms, 'mallory', 'certificate.issue', 'forged', 'success', '{}', hash, hash FROM audit_log WHERE seq = 6;",
            "entry 7",
        ),
    ] {
        let copy = work.join(format!("tampered-{scenario}"));
        copy_dir(&data, &copy);
        sqlite(&copy.join("certkeeper.db"), sql);
        let out = fails(&certkeeper(
            &["audit", "verify", "--data-dir", copy.to_str().unwrap()],
            work,
            &[],
        ));
        assert!(
            out.contains("BROKEN") && out.contains(expected),
            "{scenario}: {out}"
        );
    }

    // The chain's key is part of the data directory: without it nothing verifies, and the
    // server refuses to start a new key over an existing chain.
    let no_key = work.join("no-key");
    copy_dir(&data, &no_key);
    std::fs::remove_file(no_key.join("audit.key")).unwrap();
    let out = fails(&certkeeper(
        &["audit", "verify", "--data-dir", no_key.to_str().unwrap()],
        work,
        &[],
    ));
    assert!(out.contains("audit.key"), "{out}");
    let out = fails(&certkeeper(
        &[
            "serve",
            "--data-dir",
            no_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        work,
        &[],
    ));
    assert!(out.contains("restore the audit key"), "{out}");
    assert!(
        !no_key.join("audit.key").exists(),
        "no new key was left behind"
    );
    let mode = std::fs::metadata(data.join("audit.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
