//! 10,000 certificates issued in the same second renew spread out, not together.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;

use certkeeper_lifecycle::{RenewalPolicy, jitter_fraction, renewal_time};

#[test]
fn ten_thousand_certificates_issued_together_renew_spread_over_days() {
    const DAY: i64 = 86_400;
    let issued = 1_800_000_000;
    let mut per_minute: BTreeMap<i64, u32> = BTreeMap::new();
    for i in 0..10_000 {
        let (at, _) = renewal_time(
            issued,
            issued + 90 * DAY,
            RenewalPolicy::default(),
            None,
            jitter_fraction(&format!("managed-{i}")),
            issued,
        );
        *per_minute.entry(at / 60).or_default() += 1;
    }
    let busiest = per_minute.values().copied().max().unwrap();
    let first = per_minute.keys().next().unwrap() * 60;
    let last = per_minute.keys().last().unwrap() * 60;
    println!(
        "renewals spread over {:.1} days, {} distinct minutes, busiest minute {busiest}",
        (last - first) as f64 / DAY as f64,
        per_minute.len()
    );
    // Histogram by day, for the reader.
    let mut per_day: BTreeMap<i64, u32> = BTreeMap::new();
    for (minute, n) in &per_minute {
        *per_day.entry((minute * 60 - issued) / DAY).or_default() += n;
    }
    for (day, n) in &per_day {
        println!("day {day:>3}: {n:>5} {}", "#".repeat((*n / 50) as usize));
    }
    assert!(
        busiest <= 10,
        "a minute holds {busiest} of 10,000 renewals (limit 0.1 %)"
    );
    assert!(last - first >= 8 * DAY, "spread over less than 8 days");
}
