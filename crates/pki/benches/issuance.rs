//! In-process issuance on one core: CSR decode + signature verification + profile check +
//! certificate build + ECDSA P-256 signature. Prints one JSON line.
//! Run: cargo bench -p certkeeper-pki --bench issuance

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic

use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper_pki::*;
use time::OffsetDateTime;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let now = OffsetDateTime::now_utc();
    let subject = CaSubject {
        common_name: "Bench Root".into(),
        organization: None,
        country: None,
    };
    let root_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let root_der = build_root(
        &CaCertificateRequest {
            subject: &subject,
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + time::Duration::days(3650),
            path_len: None,
            urls: None,
        },
        root_key.clone(),
    )
    .unwrap();
    let root = CaIssuer::new(root_der, root_key).unwrap();
    let inter_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let inter_der = sign_intermediate(
        IntermediateKey::Signer(inter_key.clone()),
        &CaCertificateRequest {
            subject: &CaSubject {
                common_name: "Bench Issuing".into(),
                organization: None,
                country: None,
            },
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + time::Duration::days(1825),
            path_len: Some(0),
            urls: None,
        },
        &root,
    )
    .unwrap();
    let ca = CaIssuer::new(inter_der, inter_key).unwrap();
    let profile = builtin_profiles()
        .into_iter()
        .find(|p| p.name == "tls-server")
        .unwrap();
    let urls = IssuerUrls {
        ocsp: Some("http://pki.example.com/ocsp".into()),
        ca_issuers: Some("http://pki.example.com/ca/intermediate.crt".into()),
        crl: Some("http://pki.example.com/crl/intermediate.crl".into()),
    };
    let csrs: Vec<String> = (0..512)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            rcgen::CertificateParams::new(vec![format!("host-{i}.example.com")])
                .unwrap()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
        })
        .collect();

    let issue_one = |csr: &str| {
        let info = parse_csr(csr.as_bytes()).unwrap();
        let lifetime = 90 * 86_400;
        profile
            .check(&info.public_key, None, &info.sans, lifetime)
            .unwrap();
        let der = build_leaf(
            &LeafRequest {
                profile: &profile,
                public_key: &info.public_key,
                common_name: None,
                sans: &info.sans,
                serial: random_serial().unwrap(),
                not_before: now,
                not_after: now + time::Duration::seconds(lifetime as i64 - 1),
                urls: &urls,
            },
            &ca,
        )
        .unwrap();
        std::hint::black_box(der);
    };
    for csr in csrs.iter().take(200) {
        issue_one(csr);
    }
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for csr in &csrs {
            issue_one(csr);
        }
        count += csrs.len() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"certs_per_second": count as f64 / elapsed, "count": count, "seconds": elapsed})
    );
}
