//! 100,000 managed certificates: how long the reconciler's look-up of due work takes per
//! tick, and how much resident memory the store needs per managed certificate.
//! Prints one JSON line per backend. `BENCH_POSTGRES_URL` adds PostgreSQL (a database that
//! this bench may fill and empty).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic

use std::time::Instant;

use certkeeper_store::{AuditKey, Change, ManagedDeclaration, Store};

const COUNT: i64 = 100_000;
const NOW: i64 = 1_800_000_000;

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn run(label: &str, url: &str) {
    let before = rss_kib();
    let store = Store::open(url, AuditKey::from_bytes(&[7; 32]))
        .await
        .unwrap();
    // Renewal times spread over 60 days, as after a steady state of issuance.
    let mut written = 0;
    while written < COUNT {
        let declarations = (written..(written + 2_000).min(COUNT))
            .map(|i| ManagedDeclaration {
                name: format!("managed-{i:06}"),
                tenant: "default".into(),
                spec: format!(
                    "{{\"name\":\"managed-{i:06}\",\"sans\":[\"svc{i}.example.com\"],\"issuer\":\"internal\"}}"
                ),
                next_action_at: NOW + (i * 7919) % (60 * 86_400),
            })
            .collect();
        store
            .apply(Change {
                managed_declarations: declarations,
                ..Change::default()
            })
            .await
            .unwrap();
        written += 2_000;
    }
    let loaded = rss_kib();
    // One tick: claim up to 8 due rows (the default concurrency). Due work moves forward
    // a minute per tick, so every tick finds fresh rows and leases them.
    let mut samples = Vec::new();
    for tick in 0..200 {
        let now = NOW + tick * 60;
        let started = Instant::now();
        let claimed = store
            .claim_due_managed("bench", now, now + 300, 8)
            .await
            .unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(claimed.len() <= 8);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let after = rss_kib();
    println!(
        "{}",
        serde_json::json!({
            "backend": label,
            "managed_certificates": COUNT,
            "claim_ms_p50": samples[samples.len() / 2],
            "claim_ms_p99": samples[samples.len() * 99 / 100],
            "rss_kib_before": before,
            "rss_kib_after_load": loaded,
            "rss_kib_after_ticks": after,
            "resident_bytes_per_managed_certificate": ((after - before) * 1024) as f64 / COUNT as f64,
        })
    );
    store.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    run("sqlite", &sqlite).await;
    if let Ok(url) = std::env::var("BENCH_POSTGRES_URL") {
        run("postgres", &url).await;
    }
}
