//! Builds CA hierarchies and leaves for every key algorithm and checks the results.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::sync::Arc;

use certkeeper_pki::*;
use time::{Duration, OffsetDateTime};

fn subject(cn: &str) -> CaSubject {
    CaSubject {
        common_name: cn.into(),
        organization: Some("certkeeper tests".into()),
        country: None,
    }
}

fn hierarchy(algorithm: KeyAlgorithm) -> (Vec<u8>, CaIssuer) {
    let now = OffsetDateTime::now_utc();
    let root_key: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(algorithm).unwrap());
    let root_der = build_root(
        &CaCertificateRequest {
            subject: &subject("Test Root"),
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(3650),
            path_len: None,
            urls: None,
        },
        root_key.clone(),
    )
    .unwrap();
    let root = CaIssuer::new(root_der.clone(), root_key).unwrap();
    let intermediate_key: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(algorithm).unwrap());
    let intermediate_der = sign_intermediate(
        IntermediateKey::Signer(intermediate_key.clone()),
        &CaCertificateRequest {
            subject: &subject("Test Intermediate"),
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(1825),
            path_len: Some(0),
            urls: None,
        },
        &root,
    )
    .unwrap();
    (
        root_der,
        CaIssuer::new(intermediate_der, intermediate_key).unwrap(),
    )
}

fn profile(name: &str) -> Profile {
    builtin_profiles()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap()
}

fn urls() -> IssuerUrls {
    IssuerUrls {
        ocsp: Some("http://pki.example.com/ocsp".into()),
        ca_issuers: Some("http://pki.example.com/ca/intermediate.crt".into()),
        crl: Some("http://pki.example.com/crl/intermediate.crl".into()),
    }
}

fn issue(
    ca: &CaIssuer,
    profile: &Profile,
    key: &PublicKeyInfo,
    sans: &[SanEntry],
    cn: Option<&str>,
) -> Result<Vec<u8>, PkiError> {
    let now = OffsetDateTime::now_utc();
    build_leaf(
        &LeafRequest {
            profile,
            public_key: key,
            common_name: cn,
            sans,
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(90) - Duration::seconds(1),
            urls: &urls(),
        },
        ca,
    )
}

#[test]
fn every_algorithm_builds_a_chain_whose_facts_read_back() {
    for algorithm in KeyAlgorithm::ALL {
        let (root_der, intermediate) = hierarchy(algorithm);
        let root = parse_certificate(&root_der).unwrap();
        let inter = parse_certificate(intermediate.certificate_der()).unwrap();
        assert!(root.is_ca && inter.is_ca, "{algorithm}");
        assert_eq!(inter.issuer, root.subject);
        assert_eq!(
            inter.authority_key_id, root.subject_key_id,
            "{algorithm}: AKI must match the root SKI"
        );
        assert_eq!(root.key_algorithm, algorithm.name());

        let leaf_key = SoftwareKey::generate(algorithm).unwrap();
        let sans = vec![SanEntry::Dns("www.example.com".into())];
        let leaf_profile = if algorithm == KeyAlgorithm::Ed25519 {
            profile("tls-client")
        } else {
            profile("tls-server")
        };
        let der = issue(
            &intermediate,
            &leaf_profile,
            leaf_key.public_key(),
            &sans,
            Some("www.example.com"),
        )
        .unwrap();
        let leaf = parse_certificate(&der).unwrap();
        assert_eq!(leaf.sans, sans);
        assert_eq!(leaf.serial.len(), 32, "16-byte serial");
        assert_eq!(leaf.issuer, inter.subject);
        assert_eq!(leaf.authority_key_id, inter.subject_key_id);
        assert_eq!(leaf.spki_sha256, leaf_key.public_key().spki_sha256());
        assert!(!leaf.is_ca);
        assert_eq!(leaf.not_after - leaf.not_before, 90 * 86_400 - 1);
    }
}

#[test]
fn tls_server_profile_refuses_what_the_baseline_requirements_forbid() {
    let (_, ca) = hierarchy(KeyAlgorithm::EcdsaP256);
    let server = profile("tls-server");
    let ed = SoftwareKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let dns = vec![SanEntry::Dns("www.example.com".into())];
    let err = issue(&ca, &server, ed.public_key(), &dns, None).unwrap_err();
    assert!(err.to_string().contains("does not allow ed25519"), "{err}");

    let ec = SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let uri = vec![SanEntry::Uri("spiffe://example.com/web".into())];
    let err = issue(&ca, &server, ec.public_key(), &uri, None).unwrap_err();
    assert!(err.to_string().contains("does not allow uri"), "{err}");

    let err = issue(
        &ca,
        &server,
        ec.public_key(),
        &dns,
        Some("other.example.com"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not one of the subject alternative names"),
        "{err}"
    );

    let err = server
        .check(ec.public_key(), None, &dns, server.max_validity_seconds + 1)
        .unwrap_err();
    assert!(err.to_string().contains("above profile"), "{err}");
    let err = server
        .check(ec.public_key(), None, &[], 86_400)
        .unwrap_err();
    assert!(
        err.to_string().contains("no subject alternative name"),
        "{err}"
    );
}

#[test]
fn csr_vectors() {
    let good = parse_csr(include_bytes!("vectors/p256.csr")).unwrap();
    assert_eq!(good.public_key.kind, KeyKind::EcdsaP256);
    assert_eq!(good.common_name.as_deref(), Some("www.example.com"));
    assert_eq!(
        good.sans,
        vec![
            SanEntry::Dns("www.example.com".into()),
            SanEntry::Dns("api.example.com".into()),
            SanEntry::Ip("192.0.2.10".parse().unwrap()),
        ]
    );
    assert!(matches!(
        parse_csr(include_bytes!("vectors/rsa1024.csr")),
        Err(PkiError::WeakKey(_))
    ));
    assert!(matches!(
        parse_csr(include_bytes!("vectors/p256-bad-signature.der")),
        Err(PkiError::BadCsrSignature)
    ));
    assert!(matches!(
        parse_csr(include_bytes!("vectors/p521.csr")),
        Err(PkiError::UnsupportedKey(_))
    ));
    assert!(matches!(
        parse_csr(b"garbage"),
        Err(PkiError::MalformedCsr(_))
    ));
    assert!(matches!(
        parse_csr(&[0x30, 0x82, 0x01]),
        Err(PkiError::MalformedCsr(_))
    ));
    let huge = vec![b'A'; 70_000];
    assert!(matches!(parse_csr(&huge), Err(PkiError::MalformedCsr(_))));
}

#[test]
fn offline_root_signs_an_intermediate_from_its_csr() {
    let now = OffsetDateTime::now_utc();
    let root_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP384).unwrap());
    let root_der = build_root(
        &CaCertificateRequest {
            subject: &subject("Offline Root"),
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(3650),
            path_len: None,
            urls: None,
        },
        root_key.clone(),
    )
    .unwrap();
    let root = CaIssuer::new(root_der, root_key).unwrap();
    let inter_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let csr = build_intermediate_csr(&subject("Issuing CA 1"), inter_key.clone()).unwrap();
    let der = sign_intermediate(
        IntermediateKey::Csr(&csr),
        &CaCertificateRequest {
            subject: &subject("ignored"),
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(365),
            path_len: Some(0),
            urls: None,
        },
        &root,
    )
    .unwrap();
    let summary = parse_certificate(&der).unwrap();
    assert!(
        summary.subject.contains("Issuing CA 1"),
        "{}",
        summary.subject
    );
    // The signed certificate pairs with the key that made the CSR, and with no other.
    CaIssuer::new(der.clone(), inter_key).unwrap();
    let other: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    assert!(matches!(
        CaIssuer::new(der, other),
        Err(PkiError::InvalidKey(_))
    ));
}

#[test]
fn pkcs12_bundles_need_a_password() {
    let (_, ca) = hierarchy(KeyAlgorithm::EcdsaP256);
    let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let der = issue(
        &ca,
        &profile("tls-server"),
        key.public_key(),
        &[SanEntry::Dns("a.example.com".into())],
        None,
    )
    .unwrap();
    let p12 = build_pkcs12(
        &key.pkcs8_der(),
        &der,
        &[ca.certificate_der().to_vec()],
        "secret",
        "a.example.com",
    )
    .unwrap();
    assert!(p12.len() > der.len());
    assert!(build_pkcs12(&key.pkcs8_der(), &der, &[], "", "x").is_err());
}
