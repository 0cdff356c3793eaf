//! The store suite. Every test runs on SQLite and on PostgreSQL; PostgreSQL is never skipped:
//! point CERTKEEPER_TEST_POSTGRES_URL at a server (default postgres://postgres@127.0.0.1:5432/postgres).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;

use certkeeper_store::*;
use sqlx::{AnyConnection, Connection, Executor};

struct TestDb {
    url: String,
    postgres_name: Option<String>,
}

impl TestDb {
    async fn drop_database(&self) {
        if let Some(name) = &self.postgres_name {
            let mut conn = AnyConnection::connect(&admin_url()).await.unwrap();
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }
}

fn key() -> AuditKey {
    AuditKey::from_bytes(&[7u8; AuditKey::LEN])
}

fn admin_url() -> String {
    std::env::var("CERTKEEPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn sqlite_db(dir: &tempfile::TempDir) -> TestDb {
    TestDb {
        url: sqlite_url(dir.path()),
        postgres_name: None,
    }
}

async fn postgres_db() -> TestDb {
    sqlx::any::install_default_drivers();
    let admin = admin_url();
    let mut conn = AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for the store suite: {e}"));
    let mut name_bytes = [0u8; 6];
    aws_lc_rs_fill(&mut name_bytes);
    let name = format!("ck_test_{}", hex::encode(name_bytes));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .unwrap();
    TestDb {
        url: format!("{base}/{name}"),
        postgres_name: Some(name),
    }
}

fn aws_lc_rs_fill(bytes: &mut [u8]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = nanos ^ (std::process::id() as u128) << 64 ^ (bytes.as_ptr() as u128);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (seed >> (i * 8 % 120)) as u8 ^ (i as u8).wrapping_mul(37);
    }
}

macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let db = sqlite_db(&dir).await;
                let body = $body;
                body(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = postgres_db().await;
                let url = db.url.clone();
                let name = db.postgres_name.clone();
                let body = $body;
                body(db).await;
                TestDb {
                    url,
                    postgres_name: name,
                }
                .drop_database()
                .await;
            }
        }
    };
}

fn certificate(
    serial: &str,
    cn: &str,
    tenant: &str,
    not_after: i64,
    labels: &[(&str, &str)],
) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        issuer: "CN=Test Intermediate".into(),
        subject: format!("CN={cn}"),
        common_name: Some(cn.into()),
        sans: vec![format!("DNS:{cn}")],
        not_before: not_after - 90 * 86_400,
        not_after,
        key_algorithm: "ecdsa-p256".into(),
        spki_sha256: format!("spki-{serial}"),
        fingerprint_sha256: format!("fp-{serial}"),
        profile: Some("tls-server".into()),
        tenant: tenant.into(),
        requester: "tok1".into(),
        source: CertificateSource::Issued,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        crl_shard: 0,
    }
}

fn event(action: &str, object: &str) -> AuditEvent {
    AuditEvent {
        actor: "tester".into(),
        action: action.into(),
        object: object.into(),
        outcome: Outcome::Success,
        detail: serde_json::json!({"n": object}),
    }
}

fn issue_change(cert: NewCertificate) -> Change {
    let object = cert.serial.clone();
    Change {
        certificates: vec![cert],
        audit: vec![event("certificate.issue", &object)],
        ..Change::default()
    }
}

const NOW: i64 = 1_800_000_000;

both_backends!(
    inventory_search_filters_and_paginates,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        for i in 0..25 {
            let tenant = if i % 2 == 0 { "blue" } else { "green" };
            let team = if i % 5 == 0 { "payments" } else { "web" };
            let cert = certificate(
                &format!("{i:04x}"),
                &format!("host{i}.example.com"),
                tenant,
                NOW + i * 86_400 - 3 * 86_400,
                &[("team", team)],
            );
            store.apply(issue_change(cert)).await.unwrap();
        }
        assert_eq!(store.count_certificates().await.unwrap(), 25);

        let found = store.certificates_by_serial("000A", NOW).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].certificate.common_name.as_deref(),
            Some("host10.example.com")
        );

        let base = CertificateQuery {
            now: NOW,
            limit: 100,
            ..CertificateQuery::default()
        };
        let blue = store
            .search_certificates(&CertificateQuery {
                tenant: Some("blue".into()),
                ..base.clone()
            })
            .await
            .unwrap();
        assert_eq!(blue.items.len(), 13);
        assert!(blue.items.iter().all(|c| c.certificate.tenant == "blue"));

        let expired = store
            .search_certificates(&CertificateQuery {
                status: Some(CertificateStatus::Expired),
                ..base.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            expired.items.len(),
            3,
            "certificates 0..=2 ended before NOW"
        );
        assert!(
            expired
                .items
                .iter()
                .all(|c| c.status == CertificateStatus::Expired)
        );

        let soon = store
            .search_certificates(&CertificateQuery {
                expiring_within_seconds: Some(7 * 86_400),
                ..base.clone()
            })
            .await
            .unwrap();
        let soon_serials: Vec<&str> = soon
            .items
            .iter()
            .map(|c| c.certificate.serial.as_str())
            .collect();
        assert_eq!(
            soon_serials,
            [
                "0003", "0004", "0005", "0006", "0007", "0008", "0009", "000a"
            ]
        );

        let by_name = store
            .search_certificates(&CertificateQuery {
                name_contains: Some("HOST1".into()),
                ..base.clone()
            })
            .await
            .unwrap();
        assert_eq!(by_name.items.len(), 11, "host1 and host10..host19");
        let wildcard_literal = store
            .search_certificates(&CertificateQuery {
                name_contains: Some("%".into()),
                ..base.clone()
            })
            .await
            .unwrap();
        assert!(
            wildcard_literal.items.is_empty(),
            "LIKE metacharacters are escaped"
        );
        // A NUL byte: PostgreSQL refuses it in text, which is the caller's fault (a 400), not
        // an unavailable database (a 503); SQLite simply finds nothing.
        let nul = store
            .search_certificates(&CertificateQuery {
                name_contains: Some("host\0".into()),
                ..base.clone()
            })
            .await;
        match nul {
            Ok(page) => assert!(page.items.is_empty()),
            Err(error) => assert!(matches!(error, StoreError::InvalidQuery(_)), "{error:?}"),
        }

        let payments = store
            .search_certificates(&CertificateQuery {
                label: Some(("team".into(), "payments".into())),
                ..base.clone()
            })
            .await
            .unwrap();
        assert_eq!(payments.items.len(), 5);

        for sort in [
            CertificateSort::NotAfterAsc,
            CertificateSort::NotAfterDesc,
            CertificateSort::CreatedAsc,
            CertificateSort::CreatedDesc,
        ] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .search_certificates(&CertificateQuery {
                        limit: 4,
                        cursor: cursor.clone(),
                        sort,
                        ..base.clone()
                    })
                    .await
                    .unwrap();
                assert!(page.items.len() <= 4);
                seen.extend(page.items.iter().map(|c| c.certificate.not_after));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 25, "{sort:?}: every certificate exactly once");
            let mut sorted = seen.clone();
            sorted.sort();
            if matches!(
                sort,
                CertificateSort::NotAfterDesc | CertificateSort::CreatedDesc
            ) {
                sorted.reverse();
            }
            assert_eq!(seen, sorted, "{sort:?}");
        }
        let bad = store
            .search_certificates(&CertificateQuery {
                cursor: Some("garbage".into()),
                ..base.clone()
            })
            .await;
        assert!(matches!(bad, Err(StoreError::InvalidQuery(_))));
        store.close().await;
    }
);

both_backends!(duplicates_are_skipped_or_refused, |db: TestDb| async move {
    let store = Store::open(&db.url, key()).await.unwrap();
    store
        .apply(issue_change(certificate(
            "01",
            "a.example.com",
            "t",
            NOW,
            &[],
        )))
        .await
        .unwrap();
    let dup = store
        .apply(issue_change(certificate(
            "01",
            "a.example.com",
            "t",
            NOW,
            &[],
        )))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let outcome = store
        .apply(Change {
            certificates: vec![
                certificate("01", "a.example.com", "t", NOW, &[]),
                certificate("02", "b.example.com", "t", NOW, &[]),
            ],
            skip_duplicate_certificates: true,
            audit: vec![event("certificate.import", "2 files")],
            ..Change::default()
        })
        .await
        .unwrap();
    assert_eq!(outcome.inserted_certificate_ids.len(), 1);
    assert_eq!(outcome.duplicate_fingerprints, vec!["fp-01".to_string()]);
    assert_eq!(store.count_certificates().await.unwrap(), 2);
    // The refused duplicate wrote no audit entry: 1 issue + 1 import.
    assert_eq!(store.audit_entries(0, 100).await.unwrap().len(), 2);
    assert!(store.verify_audit().await.unwrap().ok());
    store.close().await;
});

both_backends!(a_failing_change_writes_nothing, |db: TestDb| async move {
    let store = Store::open(&db.url, key()).await.unwrap();
    let result = store
        .apply(Change {
            certificates: vec![certificate("99", "x.example.com", "t", NOW, &[("a", "b")])],
            revoke_token: Some("no-such-token".into()),
            audit: vec![event("token.revoke", "no-such-token")],
            ..Change::default()
        })
        .await;
    assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
    assert_eq!(store.count_certificates().await.unwrap(), 0);
    assert!(store.audit_entries(0, 10).await.unwrap().is_empty());
    store.close().await;
});

both_backends!(
    tokens_are_created_and_revoked_once,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        let token = NewToken {
            id: "abc123".into(),
            name: "ci".into(),
            role: "issuer".into(),
            tenant: Some("blue".into()),
            secret_sha256: "00".repeat(32),
            created_by: "admin".into(),
            expires_at: None,
        };
        store
            .apply(Change {
                tokens: vec![token.clone()],
                audit: vec![event("token.create", "abc123")],
                ..Change::default()
            })
            .await
            .unwrap();
        let again = store
            .apply(Change {
                tokens: vec![token.clone()],
                ..Change::default()
            })
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))));
        let stored = store.token("abc123").await.unwrap().unwrap();
        assert_eq!(stored.token, token);
        assert_eq!(stored.revoked_at, None);
        store
            .apply(Change {
                revoke_token: Some("abc123".into()),
                audit: vec![event("token.revoke", "abc123")],
                ..Change::default()
            })
            .await
            .unwrap();
        assert!(
            store
                .token("abc123")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        let twice = store
            .apply(Change {
                revoke_token: Some("abc123".into()),
                ..Change::default()
            })
            .await;
        assert!(matches!(twice, Err(StoreError::NotFound(_))));
        assert_eq!(store.tokens().await.unwrap().len(), 1);
        store.close().await;
    }
);

both_backends!(
    concurrent_changes_commit_in_one_chain,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        store
            .apply(issue_change(certificate(
                "pre",
                "pre.example.com",
                "t",
                NOW,
                &[],
            )))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .apply(issue_change(certificate(
                        &format!("c{i}"),
                        &format!("h{i}.example.com"),
                        "t",
                        NOW,
                        &[],
                    )))
                    .await
            }));
        }
        // A duplicate certificate among simple changes fails alone (the multi-row fast path
        // falls back to one savepoint per change).
        let duplicate = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply(Change {
                        certificates: vec![
                            certificate("dup-extra", "x.example.com", "t", NOW, &[]),
                            certificate("pre", "pre.example.com", "t", NOW, &[]),
                        ],
                        audit: vec![event("certificate.issue", "dup")],
                        ..Change::default()
                    })
                    .await
            })
        };
        // One bad change in the middle of the group must not spoil the others.
        let bad = store.apply(Change {
            revoke_token: Some("missing".into()),
            audit: vec![event("token.revoke", "missing")],
            ..Change::default()
        });
        assert!(bad.await.is_err());
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.unwrap().unwrap().audit_seqs);
        }
        let duplicate = duplicate.await.unwrap();
        assert!(
            matches!(duplicate, Err(StoreError::Conflict(_))),
            "{duplicate:?}"
        );
        seqs.sort();
        assert_eq!(seqs, (2..=301).collect::<Vec<i64>>());
        assert_eq!(
            store.count_certificates().await.unwrap(),
            301,
            "the failed change left nothing"
        );
        let report = store.verify_audit().await.unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.entries, 301);
        store.close().await;
    }
);

async fn tamper(url: &str, sql: &str) {
    let mut conn = AnyConnection::connect(url).await.unwrap();
    conn.execute(sql).await.unwrap();
    conn.close().await.unwrap();
}

async fn chain_of_five(db: &TestDb) -> Store {
    let store = Store::open(&db.url, key()).await.unwrap();
    for i in 1..=5 {
        store
            .apply(Change {
                audit: vec![event("test.event", &format!("object-{i}"))],
                ..Change::default()
            })
            .await
            .unwrap();
    }
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok() && report.entries == 5, "{report:?}");
    store
}

both_backends!(
    audit_verify_names_an_edited_entry,
    |db: TestDb| async move {
        let store = chain_of_five(&db).await;
        tamper(
            &db.url,
            "UPDATE audit_log SET object = 'forged' WHERE seq = 3",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].seq, 3);
        assert!(report.problems[0].problem.contains("edited"));
    }
);

both_backends!(
    audit_verify_names_a_deleted_entry,
    |db: TestDb| async move {
        let store = chain_of_five(&db).await;
        tamper(&db.url, "DELETE FROM audit_log WHERE seq = 2").await;
        let report = store.verify_audit().await.unwrap();
        assert!(!report.ok());
        assert_eq!(report.problems[0].seq, 3);
        assert!(
            report.problems[0]
                .problem
                .contains("entries 2 to 2 are missing"),
            "{report:?}"
        );

        tamper(&db.url, "DELETE FROM audit_log WHERE seq = 5").await;
        let report = store.verify_audit().await.unwrap();
        assert!(
            report.problems.iter().any(|p| p
                .problem
                .contains("entries 5 to 5 are missing (deleted from the end)")),
            "{report:?}"
        );
    }
);

both_backends!(
    audit_verify_names_swapped_entries,
    |db: TestDb| async move {
        let store = chain_of_five(&db).await;
        tamper(&db.url, "UPDATE audit_log SET seq = 100 WHERE seq = 2").await;
        tamper(&db.url, "UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
        tamper(&db.url, "UPDATE audit_log SET seq = 3 WHERE seq = 100").await;
        let report = store.verify_audit().await.unwrap();
        assert!(!report.ok());
        assert_eq!(report.problems[0].seq, 2, "{report:?}");
        assert!(
            report.problems[0].problem.contains("does not follow"),
            "{report:?}"
        );
    }
);

both_backends!(
    audit_verify_names_an_inserted_entry,
    |db: TestDb| async move {
        let store = chain_of_five(&db).await;
        let last = store.audit_entries(4, 1).await.unwrap().remove(0);
        let forged = entry_hash(
            &key(),
            6,
            last.at_ms,
            "intruder",
            "test.event",
            "x",
            "success",
            "{}",
            &last.hash,
        );
        tamper(
        &db.url,
        &format!(
            "INSERT INTO audit_log (seq, at_ms, actor, action, object, outcome, detail, prev_hash, hash) \
             VALUES (6, {}, 'intruder', 'test.event', 'x', 'success', '{{}}', '{}', '{forged}')",
            last.at_ms, last.hash
        ),
    )
    .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].seq, 6);
        assert!(report.problems[0].problem.contains("inserted"));
    }
);

both_backends!(data_survives_reopen, |db: TestDb| async move {
    let store = Store::open(&db.url, key()).await.unwrap();
    store
        .apply(issue_change(certificate(
            "aa",
            "keep.example.com",
            "t",
            NOW,
            &[],
        )))
        .await
        .unwrap();
    store.close().await;
    let store = Store::open(&db.url, key()).await.unwrap();
    assert_eq!(
        store.certificates_by_serial("aa", NOW).await.unwrap().len(),
        1
    );
    assert!(store.verify_audit().await.unwrap().ok());
});

both_backends!(
    audit_verify_detects_a_chain_rewritten_without_the_key,
    |db: TestDb| async move {
        let store = chain_of_five(&db).await;
        // Someone with write access to the database, but not the key, edits entry 3 and
        // recomputes the chain from there on with plain SHA-256 (or any other key).
        let entries = store.audit_entries(0, 10).await.unwrap();
        let wrong = AuditKey::from_bytes(&[9u8; AuditKey::LEN]);
        let mut prev = entries[1].hash.clone();
        for entry in &entries[2..] {
            let object = if entry.seq == 3 {
                "forged"
            } else {
                entry.object.as_str()
            };
            let hash = entry_hash(
                &wrong,
                entry.seq,
                entry.at_ms,
                &entry.actor,
                &entry.action,
                object,
                &entry.outcome,
                &entry.detail,
                &prev,
            );
            tamper(
                &db.url,
                &format!("UPDATE audit_log SET object = '{object}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}", entry.seq),
            )
            .await;
            prev = hash;
        }
        tamper(
            &db.url,
            &format!("UPDATE audit_head SET hash = '{prev}' WHERE id = 1"),
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        let edited: Vec<i64> = report
            .problems
            .iter()
            .filter(|p| p.problem.contains("edited"))
            .map(|p| p.seq)
            .collect();
        assert_eq!(edited, vec![3, 4, 5], "{report:?}");
        // With the right key the same chain verifies: the check is the key, not luck.
        drop(store);
        let reopened = Store::open(&db.url, wrong).await.unwrap();
        let report = reopened.verify_audit().await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.seq <= 2 || !p.problem.contains("edited")),
            "{report:?}"
        );
    }
);

both_backends!(
    revocation_is_idempotent_and_escalates_only_to_key_compromise,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        let mut sharded = certificate("b2", "b.example.com", "t", NOW + 100, &[]);
        sharded.crl_shard = 3;
        let ids = store
            .apply(Change {
                certificates: vec![
                    certificate("a1", "a.example.com", "t", NOW + 100, &[]),
                    sharded,
                    certificate("c3", "old.example.com", "t", NOW - 1, &[]),
                ],
                audit: vec![event("certificate.issue", "three")],
                ..Change::default()
            })
            .await
            .unwrap()
            .inserted_certificate_ids;
        let revoke = |id: i64, reason: i64, at: i64, invalid: Option<i64>| Change {
            revocations: vec![Revocation {
                certificate_id: id,
                state: RevocationState {
                    revoked_at: at,
                    reason,
                    invalidity_date: invalid,
                },
            }],
            audit: vec![event("certificate.revoke", &id.to_string())],
            ..Change::default()
        };
        // superseded (4) first; a second request with another reason changes nothing.
        let first = store.apply(revoke(ids[0], 4, NOW, None)).await.unwrap();
        assert_eq!(
            first.revocations[0].1,
            RevocationState {
                revoked_at: NOW,
                reason: 4,
                invalidity_date: None
            }
        );
        let again = store
            .apply(revoke(ids[0], 5, NOW + 10, None))
            .await
            .unwrap();
        assert_eq!(
            again.revocations[0].1, first.revocations[0].1,
            "the first reason stands"
        );
        // keyCompromise (1) escalates the reason and invalidity date, not the time.
        let escalated = store
            .apply(revoke(ids[0], 1, NOW + 20, Some(NOW - 500)))
            .await
            .unwrap();
        assert_eq!(
            escalated.revocations[0].1,
            RevocationState {
                revoked_at: NOW,
                reason: 1,
                invalidity_date: Some(NOW - 500)
            }
        );
        let after = store
            .apply(revoke(ids[0], 4, NOW + 30, None))
            .await
            .unwrap();
        assert_eq!(
            after.revocations[0].1.reason, 1,
            "nothing de-escalates keyCompromise"
        );

        store.apply(revoke(ids[1], 1, NOW, None)).await.unwrap();
        store.apply(revoke(ids[2], 1, NOW, None)).await.unwrap();
        let record = &store.certificates_by_serial("a1", NOW).await.unwrap()[0];
        assert_eq!(record.status, CertificateStatus::Revoked);
        assert_eq!(record.revocation.unwrap().reason, 1);
        let revoked = store
            .search_certificates(&CertificateQuery {
                status: Some(CertificateStatus::Revoked),
                now: NOW,
                limit: 10,
                ..CertificateQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(revoked.items.len(), 3);

        // CRL reads: unexpired only, optionally one shard.
        let all = store
            .revoked_entries("CN=Test Intermediate", None, NOW)
            .await
            .unwrap();
        let mut serials: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
        serials.sort();
        assert_eq!(serials, ["a1", "b2"], "the expired c3 has left the CRL");
        let shard3 = store
            .revoked_entries("CN=Test Intermediate", Some(3), NOW)
            .await
            .unwrap();
        assert_eq!(shard3.len(), 1);
        assert_eq!(shard3[0].0, "b2");
        assert!(
            store
                .revoked_entries("CN=Test Intermediate", Some(0), NOW)
                .await
                .unwrap()
                .iter()
                .all(|(s, _)| s == "a1")
        );

        let missing = store.apply(revoke(999_999, 1, NOW, None)).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
        assert!(store.verify_audit().await.unwrap().ok());
        let by_key = store.certificates_by_spki("spki-a1", NOW).await.unwrap();
        assert_eq!(by_key.len(), 1);
    }
);

fn acme_object(
    kind: AcmeKind,
    id: &str,
    lookup: &str,
    status: &str,
    expires_at: i64,
) -> AcmeObject {
    AcmeObject {
        id: id.into(),
        kind,
        tenant: "default".into(),
        account_id: "acct".into(),
        lookup: lookup.into(),
        status: status.into(),
        expires_at,
        version: 1,
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

both_backends!(acme_objects_nonces_and_eab_keys, |db: TestDb| async move {
    let store = Store::open(&db.url, key()).await.unwrap();
    let account = acme_object(AcmeKind::Account, "acct", "thumb", "valid", 0);
    let fresh = acme_object(
        AcmeKind::Authz,
        "fresh",
        "dns:a.example.com",
        "valid",
        NOW + 3600,
    );
    let stale = acme_object(AcmeKind::Order, "stale", "", "pending", NOW - 7200);
    store
        .apply(Change {
            acme_objects: vec![account.clone(), fresh.clone(), stale.clone()],
            acme_nonces: vec![(1, NOW + 600), (2, NOW - 10)],
            eab_keys: vec![NewEabKey {
                kid: "kid1".into(),
                tenant: "default".into(),
                hmac_key: "c2VjcmV0".into(),
                created_by: "admin".into(),
                expires_at: None,
            }],
            ..Change::default()
        })
        .await
        .unwrap();
    // Look-ups by key, by identifier, and the used nonces still valid.
    let found = store
        .acme_account_by_key("default", "thumb")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, account);
    let reusable = store
        .acme_reusable_authz("acct", "dns:a.example.com", NOW)
        .await
        .unwrap();
    assert_eq!(reusable.map(|o| o.id), Some("fresh".to_string()));
    assert!(
        store
            .acme_reusable_authz("acct", "dns:a.example.com", NOW + 7200)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.acme_used_nonces(NOW).await.unwrap(),
        vec![(1, NOW + 600)]
    );

    // A nonce is used once.
    let again = store
        .apply(Change {
            acme_nonces: vec![(1, NOW + 600)],
            ..Change::default()
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("nonce")),
        "{again:?}"
    );
    // An update must name the version it replaces.
    let mut updated = fresh.clone();
    updated.version = 2;
    updated.status = "invalid".into();
    store
        .apply(Change {
            acme_objects: vec![updated.clone()],
            ..Change::default()
        })
        .await
        .unwrap();
    let lost = store
        .apply(Change {
            acme_objects: vec![updated],
            ..Change::default()
        })
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
    // One account per key and tenant.
    let twin = store
        .apply(Change {
            acme_objects: vec![acme_object(AcmeKind::Account, "acct2", "thumb", "valid", 0)],
            ..Change::default()
        })
        .await;
    assert!(matches!(twin, Err(StoreError::Conflict(_))), "{twin:?}");
    // An EAB key binds one account.
    store
        .apply(Change {
            bind_eab: Some(("kid1".into(), "acct".into())),
            ..Change::default()
        })
        .await
        .unwrap();
    let rebind = store
        .apply(Change {
            bind_eab: Some(("kid1".into(), "other".into())),
            ..Change::default()
        })
        .await;
    assert!(matches!(rebind, Err(StoreError::Conflict(_))), "{rebind:?}");
    assert_eq!(
        store
            .eab_key("kid1")
            .await
            .unwrap()
            .unwrap()
            .account_id
            .as_deref(),
        Some("acct")
    );

    // Clean-up: expired nonces and objects go, accounts and live objects stay.
    let removed = store.acme_cleanup(NOW, NOW - 3600).await.unwrap();
    assert_eq!(removed, 2, "one nonce and one order");
    assert!(
        store
            .acme_object(AcmeKind::Order, "stale")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .acme_object(AcmeKind::Authz, "fresh")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .acme_object(AcmeKind::Account, "acct")
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
});

both_backends!(
    managed_certificates_are_claimed_once,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        let declare = |name: &str, at: i64| ManagedDeclaration {
            name: name.into(),
            tenant: "default".into(),
            spec: format!("{{\"name\":\"{name}\"}}"),
            next_action_at: at,
        };
        store
            .apply(Change {
                managed_declarations: vec![
                    declare("a", NOW),
                    declare("b", NOW - 5),
                    declare("later", NOW + 3600),
                ],
                ..Change::default()
            })
            .await
            .unwrap();
        // Due work comes oldest first; what is leased is not claimed again.
        let first = store
            .claim_due_managed("server-1", NOW, NOW + 300, 10)
            .await
            .unwrap();
        let names: Vec<&str> = first.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(
            store
                .claim_due_managed("server-2", NOW, NOW + 300, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // An expired lease (a crashed attempt) is claimable again.
        let again = store
            .claim_due_managed("server-2", NOW + 301, NOW + 600, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 2);
        // An outcome releases the lease and records the attempt.
        store
            .apply(Change {
                managed_outcomes: vec![ManagedOutcome {
                    name: "a".into(),
                    state: "ready".into(),
                    current_serial: Some("01".into()),
                    not_after: Some(NOW + 7200),
                    next_action_at: NOW + 5000,
                    next_action_reason: "lifetime_fraction".into(),
                    consecutive_failures: 0,
                    targets: "[]".into(),
                    attempt: RenewalAttempt {
                        managed_name: "a".into(),
                        started_at: NOW,
                        duration_ms: 12,
                        issuer: "internal".into(),
                        outcome: "success".into(),
                        error: None,
                        serial: Some("01".into()),
                    },
                    key_sealed: Some("v1:sealed".into()),
                    compromise_seen: None,
                    compromise_answered: true,
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        let a = store.managed_certificate("a").await.unwrap().unwrap();
        assert_eq!(
            (a.state.as_str(), a.current_serial.as_deref()),
            ("ready", Some("01"))
        );
        assert_eq!(store.renewal_attempts("a", 10).await.unwrap().len(), 1);
        assert_eq!(a.key_sealed.as_deref(), Some("v1:sealed"));
        // A reschedule moves the next action and releases the lease, with no attempt.
        store
            .claim_due_managed("server-1", NOW + 5000, NOW + 5300, 10)
            .await
            .unwrap();
        store
            .apply(Change {
                managed_reschedules: vec![ManagedReschedule {
                    name: "a".into(),
                    next_action_at: NOW + 6000,
                    next_action_reason: "ari_check".into(),
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        let a = store.managed_certificate("a").await.unwrap().unwrap();
        assert_eq!(
            (a.next_action_at, a.next_action_reason.as_str()),
            (NOW + 6000, "ari_check")
        );
        assert_eq!(store.renewal_attempts("a", 10).await.unwrap().len(), 1);
        let claimed = store
            .claim_due_managed("server-2", NOW + 6000, NOW + 6300, 10)
            .await
            .unwrap();
        assert!(claimed.iter().any(|r| r.name == "a"), "lease not released");
        // A requested renewal makes it due now; re-declaring keeps the record.
        store
            .apply(Change {
                managed_renew_now: vec!["a".into()],
                ..Change::default()
            })
            .await
            .unwrap();
        let a = store.managed_certificate("a").await.unwrap().unwrap();
        assert!(a.next_action_at <= NOW + 5000);
        assert_eq!(a.next_action_reason, "renewal requested");
        // A reschedule racing with the request does not lose it.
        store
            .apply(Change {
                managed_reschedules: vec![ManagedReschedule {
                    name: "a".into(),
                    next_action_at: NOW + 9000,
                    next_action_reason: "ari_check".into(),
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        let kept = store.managed_certificate("a").await.unwrap().unwrap();
        assert_eq!(
            (kept.next_action_at, kept.next_action_reason.as_str()),
            (a.next_action_at, "renewal requested")
        );
        let unknown = store
            .apply(Change {
                managed_renew_now: vec!["nope".into()],
                ..Change::default()
            })
            .await;
        assert!(
            matches!(unknown, Err(StoreError::NotFound(_))),
            "{unknown:?}"
        );
        assert_eq!(store.managed_certificates(None).await.unwrap().len(), 3);
        store.close().await;
    }
);

both_backends!(
    bootstrap_tokens_enroll_once_and_rollouts_supersede,
    |db: TestDb| async move {
        let store = Store::open(&db.url, key()).await.unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = BootstrapToken {
            id: "b1".into(),
            secret_sha256: "00".repeat(32),
            tenant: "default".into(),
            created_by: "admin".into(),
            created_at: now,
            expires_at: now + 600,
            used_at: None,
            used_by: None,
        };
        store
            .apply(Change {
                fleet: vec![FleetWrite::BootstrapToken(token)],
                ..Change::default()
            })
            .await
            .unwrap();
        let agent = |id: &str, name: &str| AgentRecord {
            id: id.into(),
            name: name.into(),
            tenant: "default".into(),
            status: "active".into(),
            identity_serial: format!("{id}-serial"),
            previous_identity_serial: None,
            identity_not_after: now + 86_400,
            enrolled_at: now,
            revoked_at: None,
            trust_sha256: None,
        };
        let enroll = |id: &str, name: &str| Change {
            fleet: vec![FleetWrite::Enroll {
                token_id: "b1".into(),
                agent: agent(id, name),
            }],
            ..Change::default()
        };
        store.apply(enroll("a1", "web-1")).await.unwrap();
        // The token enrolls once: a second use fails and writes no agent.
        let again = store.apply(enroll("a2", "web-2")).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert!(store.agent("a2").await.unwrap().is_none());
        let used = store.bootstrap_token("b1").await.unwrap().unwrap();
        assert_eq!(used.used_by.as_deref(), Some("a1"));

        // Identity renewal keeps the previous serial; revocation is final.
        store
            .apply(Change {
                fleet: vec![FleetWrite::RenewIdentity {
                    agent_id: "a1".into(),
                    serial: "a1-serial-2".into(),
                    not_after: now + 2 * 86_400,
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        let renewed = store.agent("a1").await.unwrap().unwrap();
        assert_eq!(renewed.identity_serial, "a1-serial-2");
        assert_eq!(
            renewed.previous_identity_serial.as_deref(),
            Some("a1-serial")
        );

        // A binding, a rollout, and a newer rollout that aborts the older one.
        store
            .apply(Change {
                managed_declarations: vec![ManagedDeclaration {
                    name: "web".into(),
                    tenant: "default".into(),
                    spec: "{}".into(),
                    next_action_at: now + 3600,
                }],
                fleet: vec![FleetWrite::Binding(AgentBinding {
                    agent_id: "a1".into(),
                    managed_name: "web".into(),
                    target: "{}".into(),
                    deployed_serial: None,
                    attempted_serial: None,
                    attempt: 0,
                    error: None,
                    reported_at: now * 1000,
                })],
                ..Change::default()
            })
            .await
            .unwrap();
        assert_eq!(store.bindings_of("web").await.unwrap().len(), 1);
        let rollout = |serial: &str| NewRollout {
            managed_name: "web".into(),
            serial: serial.into(),
            previous_serial: None,
            urgent: false,
            agents: vec![RolloutAgent {
                agent_id: "a1".into(),
                wave: 0,
                previous_serial: Some("s0".into()),
                confirmed_at: None,
            }],
            requested_at: now * 1000,
            created_at: now * 1000,
        };
        for serial in ["s1", "s2"] {
            store
                .apply(Change {
                    fleet: vec![FleetWrite::CreateRollout(rollout(serial))],
                    ..Change::default()
                })
                .await
                .unwrap();
        }
        let rollouts = store.rollouts(Some("web"), 10).await.unwrap();
        assert_eq!(rollouts.len(), 2);
        assert_eq!(rollouts[0].serial, "s2");
        assert_eq!(rollouts[0].state, "running");
        assert_eq!(rollouts[1].state, "aborted");
        assert_eq!(store.running_rollouts().await.unwrap().len(), 1);
        let (latest, member) = store
            .latest_rollout_for("web", "a1")
            .await
            .unwrap()
            .unwrap();
        let member = member.unwrap();
        assert_eq!(latest.serial, "s2");
        assert_eq!(
            (member.wave, member.previous_serial.as_deref()),
            (0, Some("s0"))
        );
        // A rollout moves on only from the state it was read in.
        let update = |expected: &str| Change {
            fleet: vec![FleetWrite::UpdateRollout {
                id: latest.id,
                expected_state: expected.into(),
                expected_wave: 0,
                state: "paused".into(),
                current_wave: 0,
                wave_released_at: 0,
                reason: None,
                finished_at: None,
            }],
            ..Change::default()
        };
        let stale = store.apply(update("halted")).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        store.apply(update("running")).await.unwrap();
        assert_eq!(
            store.rollout(latest.id).await.unwrap().unwrap().state,
            "paused"
        );

        store
            .apply(Change {
                fleet: vec![FleetWrite::RevokeAgent {
                    agent_id: "a1".into(),
                    at: now,
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        assert_eq!(store.agent("a1").await.unwrap().unwrap().status, "revoked");
        // Revoked agents' bindings no longer count.
        assert!(store.bindings_of("web").await.unwrap().is_empty());

        // A compromise declared while an attempt runs survives that attempt's outcome; the
        // attempt that saw it clears it.
        store
            .apply(Change {
                fleet: vec![FleetWrite::Compromise {
                    managed_name: "web".into(),
                    at_ms: now * 1000,
                }],
                ..Change::default()
            })
            .await
            .unwrap();
        let outcome = |seen: Option<i64>| ManagedOutcome {
            name: "web".into(),
            state: "ready".into(),
            current_serial: Some("s3".into()),
            not_after: Some(now + 86_400),
            next_action_at: now + 50_000,
            next_action_reason: "fraction".into(),
            consecutive_failures: 0,
            targets: "[]".into(),
            attempt: RenewalAttempt {
                managed_name: "web".into(),
                started_at: now,
                duration_ms: 1,
                issuer: "internal".into(),
                outcome: "success".into(),
                error: None,
                serial: Some("s3".into()),
            },
            key_sealed: Some("v1:kept".into()),
            compromise_seen: seen,
            compromise_answered: true,
        };
        store
            .apply(Change {
                managed_outcomes: vec![outcome(None)],
                ..Change::default()
            })
            .await
            .unwrap();
        let record = store.managed_certificate("web").await.unwrap().unwrap();
        assert_eq!(record.compromised_at, Some(now * 1000));
        assert_eq!(record.next_action_reason, COMPROMISE_REASON);
        assert!(record.next_action_at <= now + 5);
        assert_eq!(record.key_sealed, None);
        store
            .apply(Change {
                managed_outcomes: vec![outcome(Some(now * 1000))],
                ..Change::default()
            })
            .await
            .unwrap();
        let record = store.managed_certificate("web").await.unwrap().unwrap();
        assert_eq!(record.compromised_at, None);
        assert_eq!(record.next_action_at, now + 50_000);
        assert_eq!(record.key_sealed.as_deref(), Some("v1:kept"));
    }
);

both_backends!(
    scans_replace_per_endpoint_and_silences_expire_once,
    |db: TestDb| async move {
        use certkeeper_store::{ObserveWrite, ScanRecord, SilenceRecord};
        let store = Store::open(&db.url, key()).await.unwrap();
        store
            .apply(issue_change(certificate(
                "0a",
                "web.example.com",
                "t",
                NOW + 86_400,
                &[],
            )))
            .await
            .unwrap();
        let scan = |valid: bool, findings: &[&str], at: i64| {
            ObserveWrite::Scan(ScanRecord {
                tenant: "t".into(),
                endpoint: "web.example.com:443".into(),
                server_name: "web.example.com".into(),
                scanned_at: at,
                scanner: "tester".into(),
                fingerprint_sha256: Some("fp-0a".into()),
                serial: Some("0a".into()),
                not_after: Some(NOW + 86_400),
                findings: findings.iter().map(|f| f.to_string()).collect(),
                valid,
                error: None,
            })
        };
        for (valid, findings, at) in [(false, &["expired"][..], NOW), (true, &[][..], NOW + 60)] {
            store
                .apply(Change {
                    observe: vec![scan(valid, findings, at)],
                    audit: vec![event("scan.record", "1 endpoints")],
                    ..Change::default()
                })
                .await
                .unwrap();
        }
        // The second scan replaced the first, linked to the inventory row.
        let list = |tenant: &str| certkeeper_store::ScanQuery {
            tenant: Some(tenant.to_string()),
            limit: 10,
            ..Default::default()
        };
        let endpoints = store.scan_endpoint_page(&list("t")).await.unwrap().items;
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints[0].record.valid);
        assert_eq!(endpoints[0].record.scanned_at, NOW + 60);
        assert!(endpoints[0].certificate_id.is_some());
        assert!(
            store
                .scan_endpoint_page(&list("other"))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let counts = store.target_counts(NOW, None).await.unwrap();
        assert_eq!((counts.scanned_valid, counts.scanned_invalid), (1, 0));
        assert!(store.scan_finding_counts(None).await.unwrap().is_empty());

        let silence = SilenceRecord {
            id: "s1".into(),
            matchers: BTreeMap::from([("owner".to_string(), "web".to_string())]),
            starts_at: NOW,
            ends_at: NOW + 3600,
            comment: "maintenance".into(),
            created_by: "tester".into(),
            created_at: NOW,
        };
        store
            .apply(Change {
                observe: vec![ObserveWrite::Silence(silence.clone())],
                audit: vec![event("alert.silence", "s1")],
                ..Change::default()
            })
            .await
            .unwrap();
        assert_eq!(store.silences(NOW).await.unwrap(), vec![silence]);
        let expire = || Change {
            observe: vec![ObserveWrite::ExpireSilence {
                id: "s1".into(),
                at: NOW + 10,
            }],
            audit: vec![event("alert.silence.expire", "s1")],
            ..Change::default()
        };
        store.apply(expire()).await.unwrap();
        assert!(store.silences(NOW + 10).await.unwrap().is_empty());
        // Expiring it again fails and writes nothing (not even its audit entry).
        let before = store.audit_latest_seq().await.unwrap();
        assert!(store.apply(expire()).await.is_err());
        assert_eq!(store.audit_latest_seq().await.unwrap(), before);
    }
);

both_backends!(
    recorded_scans_page_by_endpoint_and_filter_by_validity_and_finding,
    |db: TestDb| async move {
        use certkeeper_store::{ObserveWrite, ScanQuery, ScanRecord};
        let store = Store::open(&db.url, key()).await.unwrap();
        let scan = |tenant: &str, endpoint: &str, findings: &[&str]| {
            ObserveWrite::Scan(ScanRecord {
                tenant: tenant.into(),
                endpoint: endpoint.into(),
                server_name: endpoint.split(':').next().unwrap().into(),
                scanned_at: NOW,
                scanner: "tester".into(),
                fingerprint_sha256: None,
                serial: None,
                not_after: None,
                findings: findings.iter().map(|f| f.to_string()).collect(),
                valid: findings.iter().all(|f| *f == "expiring_soon"),
                error: None,
            })
        };
        let writes = vec![
            scan("t", "a.example:443", &[]),
            scan("t", "b.example:443", &["expired", "weak_key"]),
            scan("t", "c.example:443", &["expiring_soon"]),
            scan("t", "d.example:443", &["revoked"]),
            scan("t", "e.example:443", &["weak_key"]),
            // `_` must not act as a LIKE wildcard: this one is not `weak_key`.
            scan("t", "f.example:443", &["weakXkey"]),
            scan("u", "a.example:443", &["weak_key"]),
        ];
        store
            .apply(Change {
                observe: writes,
                audit: vec![event("scan.record", "7 endpoints")],
                ..Change::default()
            })
            .await
            .unwrap();
        let endpoints = |page: &certkeeper_store::Page<certkeeper_store::ScanEndpoint>| {
            page.items
                .iter()
                .map(|e| format!("{}/{}", e.record.tenant, e.record.endpoint))
                .collect::<Vec<_>>()
        };
        // Every tenant, two at a time: each row once, in (tenant, endpoint, name) order.
        let mut seen = Vec::new();
        let mut query = ScanQuery {
            limit: 2,
            ..Default::default()
        };
        loop {
            let page = store.scan_endpoint_page(&query).await.unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(endpoints(&page));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "t/a.example:443",
                "t/b.example:443",
                "t/c.example:443",
                "t/d.example:443",
                "t/e.example:443",
                "t/f.example:443",
                "u/a.example:443"
            ]
        );
        let only = |tenant: Option<&str>, only_invalid: bool, finding: Option<&str>| ScanQuery {
            tenant: tenant.map(str::to_string),
            valid: only_invalid.then_some(false),
            finding: finding.map(str::to_string),
            limit: 100,
            cursor: None,
        };
        let page = store
            .scan_endpoint_page(&only(Some("t"), true, None))
            .await
            .unwrap();
        assert_eq!(
            endpoints(&page),
            [
                "t/b.example:443",
                "t/d.example:443",
                "t/e.example:443",
                "t/f.example:443"
            ]
        );
        let page = store
            .scan_endpoint_page(&only(None, false, Some("weak_key")))
            .await
            .unwrap();
        assert_eq!(
            endpoints(&page),
            ["t/b.example:443", "t/e.example:443", "u/a.example:443"]
        );
        // Filters and a cursor together (every placeholder bound): one at a time.
        let mut query = ScanQuery {
            tenant: Some("t".into()),
            valid: Some(false),
            finding: Some("weak_key".into()),
            limit: 1,
            cursor: None,
        };
        let mut one_by_one = Vec::new();
        loop {
            let page = store.scan_endpoint_page(&query).await.unwrap();
            one_by_one.extend(endpoints(&page));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(one_by_one, ["t/b.example:443", "t/e.example:443"]);
        let page = store
            .scan_endpoint_page(&only(Some("t"), false, Some("expiring_soon")))
            .await
            .unwrap();
        assert_eq!(endpoints(&page), ["t/c.example:443"]);
        let valid = ScanQuery {
            valid: Some(true),
            limit: 100,
            ..Default::default()
        };
        let page = store.scan_endpoint_page(&valid).await.unwrap();
        assert_eq!(endpoints(&page), ["t/a.example:443", "t/c.example:443"]);
        // A cursor that was not handed out is refused.
        let bad = store
            .scan_endpoint_page(&ScanQuery {
                cursor: Some("zz".into()),
                limit: 10,
                ..Default::default()
            })
            .await;
        assert!(matches!(bad, Err(StoreError::InvalidQuery(_))), "{bad:?}");
    }
);

both_backends!(
    counts_cover_the_fleet_or_one_tenant,
    |db: TestDb| async move {
        use certkeeper_store::{ObserveWrite, ScanRecord};
        let store = Store::open(&db.url, key()).await.unwrap();
        let day = 86_400;
        for (serial, tenant, not_after) in [
            ("a1", "a", NOW + 5 * day),
            ("a2", "a", NOW + 60 * day),
            ("a3", "a", NOW - day),
            ("b1", "b", NOW + 20 * day),
            // The server's own certificates are not counted in the fleet's.
            ("s1", "system", NOW + 3 * day),
        ] {
            store
                .apply(issue_change(certificate(
                    serial,
                    serial,
                    tenant,
                    not_after,
                    &[],
                )))
                .await
                .unwrap();
        }
        let fleet = store.certificate_counts(NOW, None).await.unwrap();
        assert_eq!((fleet.active, fleet.expired, fleet.revoked), (3, 1, 0));
        assert_eq!(
            fleet.expiring_within_days,
            [(1, 0), (7, 1), (14, 1), (30, 2)]
        );
        let a = store.certificate_counts(NOW, Some("a")).await.unwrap();
        assert_eq!((a.active, a.expired), (2, 1));
        assert_eq!(a.expiring_within_days, [(1, 0), (7, 1), (14, 1), (30, 1)]);
        let b = store.certificate_counts(NOW, Some("b")).await.unwrap();
        assert_eq!((b.active, b.expired), (1, 0));
        assert_eq!(b.expiring_within_days, [(1, 0), (7, 0), (14, 0), (30, 1)]);

        let scan = |tenant: &str, endpoint: &str, valid: bool| {
            ObserveWrite::Scan(ScanRecord {
                tenant: tenant.into(),
                endpoint: endpoint.into(),
                server_name: String::new(),
                scanned_at: NOW,
                scanner: "tester".into(),
                fingerprint_sha256: None,
                serial: None,
                not_after: None,
                findings: Vec::new(),
                valid,
                error: None,
            })
        };
        // Denials by a token of tenant a, by one of tenant b, and by an untenanted one.
        let token = |id: &str, tenant: Option<&str>| NewToken {
            id: id.into(),
            name: id.into(),
            role: "issuer".into(),
            tenant: tenant.map(str::to_string),
            secret_sha256: "00".repeat(32),
            created_by: "admin".into(),
            expires_at: None,
        };
        let denial = |actor: &str| AuditEvent {
            actor: actor.into(),
            action: "certificate.issue".into(),
            object: "x".into(),
            outcome: Outcome::Denied,
            detail: serde_json::json!({}),
        };
        store
            .apply(Change {
                observe: vec![
                    scan("a", "1.example:443", true),
                    scan("a", "2.example:443", false),
                    scan("b", "3.example:443", true),
                ],
                tokens: vec![
                    token("ta", Some("a")),
                    token("tb", Some("b")),
                    token("admin", None),
                ],
                audit: vec![denial("ta"), denial("ta"), denial("tb"), denial("admin")],
                ..Change::default()
            })
            .await
            .unwrap();
        let targets = store.target_counts(NOW, None).await.unwrap();
        assert_eq!((targets.scanned_valid, targets.scanned_invalid), (2, 1));
        let targets = store.target_counts(NOW, Some("a")).await.unwrap();
        assert_eq!((targets.scanned_valid, targets.scanned_invalid), (1, 1));
        let targets = store.target_counts(NOW, Some("c")).await.unwrap();
        assert_eq!((targets.scanned_valid, targets.scanned_invalid), (0, 0));
        assert_eq!(store.audit_denials_since(0, None).await.unwrap(), 4);
        assert_eq!(store.audit_denials_since(0, Some("a")).await.unwrap(), 2);
        assert_eq!(store.audit_denials_since(0, Some("b")).await.unwrap(), 1);
    }
);
