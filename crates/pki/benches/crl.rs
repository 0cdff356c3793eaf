//! CRL generation at scale: builds and signs CRLs with 100,000 and 1,000,000 revoked entries
//! (16-byte serials, keyCompromise reason) and prints CPU seconds, peak memory and bytes per
//! entry as JSON lines. Run: cargo bench -p certkeeper-pki --bench crl

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic

use std::sync::Arc;
use std::time::Instant;

use certkeeper_pki::*;
use time::OffsetDateTime;

/// Process CPU time (user + system), from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Peak resident set size, from /proc/self/status, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1024.0
}

fn main() {
    let now = OffsetDateTime::now_utc();
    let key: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let root = build_root(
        &CaCertificateRequest {
            subject: &CaSubject {
                common_name: "Bench CA".into(),
                organization: None,
                country: None,
            },
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + time::Duration::days(365),
            path_len: None,
            urls: None,
        },
        key.clone(),
    )
    .unwrap();
    let ca = CaIssuer::new(root, key).unwrap();
    for count in [100_000usize, 1_000_000] {
        let entries: Vec<CrlEntry> = (0..count)
            .map(|i| CrlEntry {
                serial: hex::encode(random_serial().unwrap()),
                revoked_at: now.unix_timestamp() - (i % 86_400) as i64,
                reason: RevocationReason::KeyCompromise,
                invalidity_date: None,
            })
            .collect();
        let cpu_before = cpu_seconds();
        let wall = Instant::now();
        let der = build_crl(
            &CrlRequest {
                number: 1,
                this_update: now,
                next_update: now + time::Duration::days(1),
                entries: &entries,
                partition_url: None,
            },
            &ca,
        )
        .unwrap();
        let cpu = cpu_seconds() - cpu_before;
        println!(
            "{}",
            serde_json::json!({
                "entries": count,
                "cpu_seconds": cpu,
                "wall_seconds": wall.elapsed().as_secs_f64(),
                "crl_bytes": der.len(),
                "bytes_per_entry": der.len() as f64 / count as f64,
                "peak_rss_mib_so_far": peak_rss_mib(),
            })
        );
    }
}
