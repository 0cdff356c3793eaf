//! The relying-party side of OCSP: requests built here are read by certkeeper's responder code,
//! and the answers it signs are checked here — good, revoked, unknown, and every way an
//! answer must be refused (wrong signer, delegated responder without the right, tampered,
//! stale, from the future, about another certificate, an error status, garbage).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::sync::Arc;

use certkeeper_pki::*;
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

struct Ca {
    root_der: Vec<u8>,
    intermediate: CaIssuer,
    intermediate_key: Arc<dyn Signer>,
}

fn ca(name: &str) -> Ca {
    let now = OffsetDateTime::now_utc();
    let subject = |cn: &str| CaSubject {
        common_name: cn.into(),
        organization: Some("certkeeper tests".into()),
        country: None,
    };
    let root_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let root_subject = subject(&format!("{name} Root"));
    let root_der = build_root(
        &CaCertificateRequest {
            subject: &root_subject,
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
    let intermediate_key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP384).unwrap());
    let intermediate_subject = subject(&format!("{name} Intermediate"));
    let intermediate_der = sign_intermediate(
        IntermediateKey::Signer(intermediate_key.clone()),
        &CaCertificateRequest {
            subject: &intermediate_subject,
            serial: random_serial().unwrap(),
            not_before: now,
            not_after: now + Duration::days(1825),
            path_len: Some(0),
            urls: None,
        },
        &root,
    )
    .unwrap();
    Ca {
        root_der,
        intermediate: CaIssuer::new(intermediate_der, intermediate_key.clone()).unwrap(),
        intermediate_key,
    }
}

impl Ca {
    fn issuer_der(&self) -> &[u8] {
        self.intermediate.certificate_der()
    }

    /// A TLS server leaf naming an OCSP responder; (certificate, its key).
    fn leaf(&self, name: &str) -> (Vec<u8>, Arc<dyn Signer>) {
        let now = OffsetDateTime::now_utc();
        let key: Arc<dyn Signer> =
            Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let profile = builtin_profiles()
            .into_iter()
            .find(|p| p.name == "tls-server")
            .unwrap();
        let der = build_leaf(
            &LeafRequest {
                profile: &profile,
                public_key: key.public_key(),
                common_name: None,
                sans: &[SanEntry::Dns(name.into())],
                serial: random_serial().unwrap(),
                not_before: now,
                not_after: now + Duration::days(30),
                urls: &IssuerUrls {
                    ocsp: Some("http://ocsp.example.com/".into()),
                    ca_issuers: None,
                    crl: None,
                },
            },
            &self.intermediate,
        )
        .unwrap();
        (der, key)
    }

    /// A delegated responder valid from `from` to `until` days from now.
    fn responder(&self, from: i64, until: i64) -> OcspResponder {
        let now = OffsetDateTime::now_utc();
        let key: Arc<dyn Signer> =
            Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let der = build_ocsp_responder_certificate(
            &self.intermediate,
            key.public_key(),
            random_serial().unwrap(),
            now + Duration::days(from),
            now + Duration::days(until),
            "Test OCSP Responder",
        )
        .unwrap();
        OcspResponder::new(der, key).unwrap()
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The answer `responder` gives about `leaf`, asked the way the scanner asks.
fn answer(
    ca: &Ca,
    responder: &OcspResponder,
    leaf: &[u8],
    status: OcspStatus,
    this_update: i64,
    next_update: i64,
) -> Vec<u8> {
    let request = build_ocsp_check_request(leaf, ca.issuer_der()).unwrap();
    let queries = read_ocsp_request(&request, &IssuerHashes::of(ca.issuer_der()).unwrap()).unwrap();
    assert_eq!(queries.queries.len(), 1);
    assert_eq!(queries.queries[0].hash, CertIdHash::Sha1);
    assert_eq!(queries.nonce, None);
    build_ocsp_response(
        responder,
        &[OcspAnswer {
            query: &queries.queries[0],
            status,
            this_update,
            next_update,
        }],
        this_update,
        None,
    )
    .unwrap()
}

fn refusal(result: Result<OcspVerdict, PkiError>) -> String {
    match result {
        Err(PkiError::UnusableOcspResponse(why)) => why,
        other => panic!("expected an unusable response, got {other:?}"),
    }
}

#[test]
fn statuses_from_a_delegated_responder_and_from_the_issuer_itself_are_read() {
    let ca = ca("A");
    let (leaf, _) = ca.leaf("www.example.com");
    let delegated = ca.responder(-1, 30);
    let t = now();
    let good = answer(&ca, &delegated, &leaf, OcspStatus::Good, t, t + 3600);
    assert_eq!(
        read_ocsp_answer(&good, &leaf, ca.issuer_der(), t).unwrap(),
        OcspVerdict::Good
    );
    let revoked = answer(
        &ca,
        &delegated,
        &leaf,
        OcspStatus::Revoked {
            at: t - 60,
            reason: RevocationReason::KeyCompromise,
        },
        t,
        t + 3600,
    );
    assert_eq!(
        read_ocsp_answer(&revoked, &leaf, ca.issuer_der(), t).unwrap(),
        OcspVerdict::Revoked {
            at: t - 60,
            reason: Some("keyCompromise")
        }
    );
    let unknown = answer(&ca, &delegated, &leaf, OcspStatus::Unknown, t, t + 3600);
    assert_eq!(
        read_ocsp_answer(&unknown, &leaf, ca.issuer_der(), t).unwrap(),
        OcspVerdict::Unknown
    );
    // Signed by the issuing CA's own key (responder ID = the CA's key hash).
    let by_issuer =
        OcspResponder::new(ca.issuer_der().to_vec(), ca.intermediate_key.clone()).unwrap();
    let direct = answer(&ca, &by_issuer, &leaf, OcspStatus::Good, t, t + 3600);
    assert_eq!(
        read_ocsp_answer(&direct, &leaf, ca.issuer_der(), t).unwrap(),
        OcspVerdict::Good
    );
}

#[test]
fn answers_from_the_wrong_signer_are_refused() {
    let ca_a = ca("A");
    let ca_b = ca("B");
    let (leaf, _) = ca_a.leaf("www.example.com");
    let t = now();
    // A responder delegated by another CA.
    let foreign = ca_b.responder(-1, 30);
    let response = answer(&ca_a, &foreign, &leaf, OcspStatus::Good, t, t + 3600);
    let why = refusal(read_ocsp_answer(&response, &leaf, ca_a.issuer_der(), t));
    assert!(why.contains("signed neither by the issuer"), "{why}");
    // A responder certified by an impostor CA with the very same names (only the key differs).
    let impostor = ca("A");
    let response = answer(
        &ca_a,
        &impostor.responder(-1, 30),
        &leaf,
        OcspStatus::Good,
        t,
        t + 3600,
    );
    let why = refusal(read_ocsp_answer(&response, &leaf, ca_a.issuer_der(), t));
    assert!(why.contains("signed neither by the issuer"), "{why}");
    // A certificate of the right CA, but not for OCSP signing (a TLS server leaf).
    let (other_leaf, _) = ca_a.leaf("other.example.com");
    let (signer_leaf, signer_key) = ca_a.leaf("signer.example.com");
    let pretender = OcspResponder::new(signer_leaf, signer_key).unwrap();
    let response = answer(
        &ca_a,
        &pretender,
        &other_leaf,
        OcspStatus::Good,
        t,
        t + 3600,
    );
    let why = refusal(read_ocsp_answer(
        &response,
        &other_leaf,
        ca_a.issuer_der(),
        t,
    ));
    assert!(why.contains("signed neither by the issuer"), "{why}");
    // A delegated responder whose certificate has expired, or is not yet valid.
    for (from, until) in [(-10, -1), (1, 10)] {
        let responder = ca_a.responder(from, until);
        let response = answer(&ca_a, &responder, &leaf, OcspStatus::Good, t, t + 3600);
        let why = refusal(read_ocsp_answer(&response, &leaf, ca_a.issuer_der(), t));
        assert!(why.contains("signed neither by the issuer"), "{why}");
    }
}

#[test]
fn tampered_stale_future_and_misdirected_answers_are_refused() {
    let ca = ca("A");
    let (leaf, _) = ca.leaf("www.example.com");
    let responder = ca.responder(-1, 30);
    let t = now();

    // Revoked turned into good: any change to the signed part breaks the signature.
    let response = answer(&ca, &responder, &leaf, OcspStatus::Good, t, t + 3600);
    let mut tampered = response.clone();
    // The first copy of the time (producedAt, equal to thisUpdate here): flip a digit of the
    // year.
    let d = OffsetDateTime::from_unix_timestamp(t).unwrap();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    );
    let at = tampered
        .windows(stamp.len())
        .position(|w| w == stamp.as_bytes())
        .expect("thisUpdate in the response");
    tampered[at + 3] ^= 0x01;
    let why = refusal(read_ocsp_answer(&tampered, &leaf, ca.issuer_der(), t));
    assert!(why.contains("signature does not verify"), "{why}");

    // Stale: nextUpdate more than five minutes ago.
    let stale = answer(&ca, &responder, &leaf, OcspStatus::Good, t - 7200, t - 3600);
    let why = refusal(read_ocsp_answer(&stale, &leaf, ca.issuer_der(), t));
    assert!(why.contains("stale"), "{why}");
    // Within the five minutes of leeway it is still believed.
    let fresh_enough = answer(&ca, &responder, &leaf, OcspStatus::Good, t - 7200, t - 60);
    assert!(read_ocsp_answer(&fresh_enough, &leaf, ca.issuer_der(), t).is_ok());

    // From the future.
    let future = answer(&ca, &responder, &leaf, OcspStatus::Good, t + 3600, t + 7200);
    let why = refusal(read_ocsp_answer(&future, &leaf, ca.issuer_der(), t));
    assert!(why.contains("future"), "{why}");

    // About another certificate of the same CA.
    let (other, _) = ca.leaf("other.example.com");
    let why = refusal(read_ocsp_answer(&response, &other, ca.issuer_der(), t));
    assert!(why.contains("no answer about this certificate"), "{why}");

    // An error status from the responder.
    let error = ocsp_refusal(OcspRefusal::Unauthorized);
    let why = refusal(read_ocsp_answer(&error, &leaf, ca.issuer_der(), t));
    assert!(why.contains("unauthorized"), "{why}");
}

#[test]
fn responder_urls_and_the_issuer_are_found() {
    let ca = ca("A");
    let (leaf, _) = ca.leaf("www.example.com");
    assert_eq!(ocsp_responder_urls(&leaf), vec!["http://ocsp.example.com/"]);
    assert!(ocsp_responder_urls(ca.issuer_der()).is_empty());
    assert!(ocsp_responder_urls(b"not a certificate").is_empty());
    let other = self::ca("B");
    let candidates = [other.issuer_der(), ca.root_der.as_slice(), ca.issuer_der()];
    assert_eq!(find_issuers(&leaf, candidates), vec![ca.issuer_der()]);
    assert!(find_issuers(&leaf, [ca.root_der.as_slice()]).is_empty());
    // Same subject name, different key: not the issuer.
    let impostor = self::ca("A");
    assert!(find_issuers(&leaf, [impostor.issuer_der()]).is_empty());
    // The same certificate twice is one candidate.
    assert_eq!(
        find_issuers(&leaf, [ca.issuer_der(), ca.issuer_der()]),
        vec![ca.issuer_der()]
    );
}

/// The issuer's public key in compressed form, to make a look-alike issuer certificate.
struct CompressedKey(Vec<u8>);

impl rcgen::PublicKeyData for CompressedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P384_SHA384
    }
}

#[test]
fn a_served_look_alike_issuer_cannot_hide_the_answer() {
    use x509_parser::prelude::FromDer;
    let ca = ca("A");
    let (leaf, _) = ca.leaf("www.example.com");
    // Same subject, same key written compressed, signed by anybody: it verifies the leaf's
    // signature, but an OCSP request built from it names another issuer key hash.
    let (_, real) = x509_parser::certificate::X509Certificate::from_der(ca.issuer_der()).unwrap();
    let point = real.public_key().subject_public_key.data.to_vec();
    assert_eq!(point[0], 0x04, "an uncompressed P-384 point");
    let x = &point[1..49];
    let y_is_odd = point[96] & 1 == 1;
    let mut compressed = vec![if y_is_odd { 0x03 } else { 0x02 }];
    compressed.extend_from_slice(x);
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "certkeeper tests");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "A Intermediate");
    let anybody = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(params.clone(), anybody);
    let look_alike = params
        .signed_by(&CompressedKey(compressed), &issuer)
        .unwrap()
        .der()
        .to_vec();
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&look_alike).unwrap();
    assert_eq!(parsed.subject().as_raw(), real.subject().as_raw());
    assert_ne!(
        build_ocsp_check_request(&leaf, &look_alike).unwrap(),
        build_ocsp_check_request(&leaf, ca.issuer_der()).unwrap()
    );

    let t = now();
    let responder = ca.responder(-1, 30);
    let revoked = answer(
        &ca,
        &responder,
        &leaf,
        OcspStatus::Revoked {
            at: t - 60,
            reason: RevocationReason::KeyCompromise,
        },
        t,
        t + 3600,
    );
    // Given first, the look-alike is tried first; asking with each issuer in turn still
    // reaches the verified answer.
    let issuers = find_issuers(&leaf, [look_alike.as_slice(), ca.issuer_der()]);
    assert_eq!(issuers.last(), Some(&ca.issuer_der()));
    let verdicts: Vec<_> = issuers
        .iter()
        .map(|issuer| read_ocsp_answer(&revoked, &leaf, issuer, t))
        .collect();
    // aws-lc reads the compressed key too: the look-alike does match, and comes first.
    assert_eq!(issuers.len(), 2, "the look-alike matches");
    assert!(verdicts[0].is_err(), "{verdicts:?}");
    assert!(
        matches!(verdicts.last(), Some(Ok(OcspVerdict::Revoked { .. }))),
        "{verdicts:?}"
    );
}

#[test]
fn an_answer_without_next_update_is_believed_for_a_day_only() {
    use der::{Decode, Encode};
    let ca = ca("A");
    let (leaf, _) = ca.leaf("www.example.com");
    let key: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    let now_time = OffsetDateTime::now_utc();
    let responder_der = build_ocsp_responder_certificate(
        &ca.intermediate,
        key.public_key(),
        random_serial().unwrap(),
        now_time - Duration::days(3),
        now_time + Duration::days(30),
        "Test OCSP Responder",
    )
    .unwrap();
    let responder = OcspResponder::new(responder_der, key.clone()).unwrap();
    let t = now();
    // An answer as built, then without its nextUpdate and signed again.
    let without_next_update = |this_update: i64| {
        let der = answer(
            &ca,
            &responder,
            &leaf,
            OcspStatus::Good,
            this_update,
            this_update + 60,
        );
        let response = x509_ocsp::OcspResponse::from_der(&der).unwrap();
        let bytes = response.response_bytes.unwrap();
        let mut basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        basic.tbs_response_data.responses[0].next_update = None;
        let signature = key
            .sign(&basic.tbs_response_data.to_der().unwrap())
            .unwrap();
        basic.signature = der::asn1::BitString::from_bytes(&signature).unwrap();
        x509_ocsp::OcspResponse::successful(basic)
            .unwrap()
            .to_der()
            .unwrap()
    };
    let recent = without_next_update(t - 3600);
    assert_eq!(
        read_ocsp_answer(&recent, &leaf, ca.issuer_der(), t).unwrap(),
        OcspVerdict::Good
    );
    let old = without_next_update(t - 2 * 86_400);
    let why = refusal(read_ocsp_answer(&old, &leaf, ca.issuer_der(), t));
    assert!(why.contains("names no nextUpdate"), "{why}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (issuer, leaf) = FIXED.with(Clone::clone);
        prop_assert!(read_ocsp_answer(&bytes, &leaf, &issuer, now()).is_err());
    }
}

thread_local! {
    /// (issuer, leaf), made once per thread.
    static FIXED: (Vec<u8>, Vec<u8>) = {
        let ca = ca("Fixed");
        (ca.issuer_der().to_vec(), ca.leaf("x.example.com").0)
    };
}
