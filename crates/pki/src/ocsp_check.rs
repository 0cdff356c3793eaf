//! OCSP as a relying party (RFC 6960 with the RFC 5019 profile): the request about one
//! certificate, and the checks an answer must pass before its status is believed — signed by
//! the issuer or by a responder the issuer delegated to (id-kp-OCSPSigning), about this very
//! certificate, and current. The scanner's OCSP revocation check is built on these; no I/O.

use der::asn1::{Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, SliceReader};
use spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, SingleResponse, TbsRequest, Version,
};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::PkiError;
use crate::ocsp::{CertIdHash, IssuerHashes, OID_SHA1};

/// id-pkix-ocsp-basic, the only response type RFC 6960 requires.
const OID_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// Largest OCSP response read, in bytes (a response about one certificate is about 1 KiB).
pub const MAX_OCSP_RESPONSE_BYTES: usize = 64 * 1024;

/// Leeway for the clocks of responder and relying party, in seconds.
const CLOCK_SKEW_SECONDS: i64 = 300;

/// Oldest answer believed when it names no nextUpdate (RFC 6960 4.2.2.1: "newer information
/// is available all the time"; without a bound a captured answer could be replayed forever).
const MAX_AGE_WITHOUT_NEXT_UPDATE_SECONDS: i64 = 86_400;

/// What a verified OCSP answer says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspVerdict {
    /// Not revoked.
    Good,
    /// Revoked at (Unix seconds), with the reason's RFC 5280 name when one is given.
    Revoked {
        /// Revocation time.
        at: i64,
        /// Reason, for example `keyCompromise`.
        reason: Option<&'static str>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// The OCSP responder URLs (http or https) of a certificate's Authority Information Access;
/// empty when it names none or cannot be read.
pub fn ocsp_responder_urls(certificate_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(certificate_der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.tbs_certificate.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(access) = ext.parsed_extension() {
            for description in &access.accessdescs {
                if description.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    && let GeneralName::URI(uri) = description.access_location
                    && (uri.starts_with("http://") || uri.starts_with("https://"))
                {
                    urls.push(uri.to_string());
                }
            }
        }
    }
    urls
}

/// Among `candidates` (DER), every distinct certificate that could have issued
/// `certificate_der` (its subject is the certificate's issuer and its key verifies the
/// certificate's signature), in the order given. More than one can match — a look-alike with
/// the same key encoded differently, say — so a caller asks with each until an answer
/// verifies, putting the candidates it trusts first.
pub fn find_issuers<'a>(
    certificate_der: &[u8],
    candidates: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<&'a [u8]> {
    let Ok((_, cert)) = X509Certificate::from_der(certificate_der) else {
        return Vec::new();
    };
    let mut found: Vec<&'a [u8]> = Vec::new();
    for candidate in candidates {
        let issues_it = X509Certificate::from_der(candidate).is_ok_and(|(_, issuer)| {
            issuer.subject().as_raw() == cert.issuer().as_raw()
                && cert.verify_signature(Some(issuer.public_key())).is_ok()
        });
        if issues_it && !found.contains(&candidate) {
            found.push(candidate);
        }
    }
    found
}

/// An unsigned OCSP request about one certificate, without a nonce (RFC 5019: SHA-1 CertID,
/// so responders that pre-sign their answers can serve it).
pub fn build_ocsp_check_request(
    certificate_der: &[u8],
    issuer_der: &[u8],
) -> Result<Vec<u8>, PkiError> {
    let encoding = |e: der::Error| PkiError::Encoding(e.to_string());
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id(certificate_der, issuer_der)?,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    request.to_der().map_err(encoding)
}

fn cert_id(certificate_der: &[u8], issuer_der: &[u8]) -> Result<CertId, PkiError> {
    let encoding = |e: der::Error| PkiError::Encoding(e.to_string());
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
    let issuer = IssuerHashes::of(issuer_der)?;
    let (name_hash, key_hash) = issuer.hashes(CertIdHash::Sha1);
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: OID_SHA1,
            parameters: Some(der::Any::from(Null)),
        },
        issuer_name_hash: OctetString::new(name_hash).map_err(encoding)?,
        issuer_key_hash: OctetString::new(key_hash).map_err(encoding)?,
        serial_number: cert.tbs_certificate.serial_number,
    })
}

/// Reads an OCSP response about `certificate_der` (issued by `issuer_der`) and returns its
/// verdict once it has passed every check: a successful basic response, signed by the issuer
/// or by a responder certificate the issuer signed for OCSP signing and valid at `now`, with
/// an answer for this certificate whose thisUpdate is not in the future and whose nextUpdate
/// has not passed — or, without a nextUpdate, whose thisUpdate is less than a day old (`now`
/// in Unix seconds; five minutes of leeway either way).
pub fn read_ocsp_answer(
    response_der: &[u8],
    certificate_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<OcspVerdict, PkiError> {
    let unusable = |why: String| PkiError::UnusableOcspResponse(why);
    if response_der.len() > MAX_OCSP_RESPONSE_BYTES {
        return Err(unusable(format!(
            "larger than {MAX_OCSP_RESPONSE_BYTES} bytes"
        )));
    }
    let response = OcspResponse::from_der(response_der)
        .map_err(|e| unusable(format!("not an OCSP response: {e}")))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(unusable(format!(
            "the responder answered {}",
            status_name(response.response_status)
        )));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| unusable("a successful response without a body".into()))?;
    if bytes.response_type != OID_OCSP_BASIC {
        return Err(unusable(format!(
            "response type {} is not id-pkix-ocsp-basic",
            bytes.response_type
        )));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|e| unusable(format!("malformed basic response: {e}")))?;

    let (_, issuer) = X509Certificate::from_der(issuer_der)
        .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
    let delegated: Vec<Vec<u8>> = basic
        .certs
        .iter()
        .flatten()
        .filter_map(|c| c.to_der().ok())
        .collect();
    let signer_key = responder_key(
        &basic.tbs_response_data.responder_id,
        &issuer,
        &delegated,
        now,
    )
    .ok_or_else(|| {
        unusable("signed neither by the issuer nor by a responder it delegated to".into())
    })?;
    let tbs = signed_part(basic_der).map_err(|e| unusable(format!("malformed: {e}")))?;
    let algorithm = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| PkiError::Encoding(e.to_string()))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| unusable("the signature is not a whole number of bytes".into()))?;
    if !verifies(&signer_key, &algorithm, signature, tbs) {
        return Err(unusable("the signature does not verify".into()));
    }

    let serial = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?
        .tbs_certificate
        .serial_number;
    let hashes = IssuerHashes::of(issuer_der)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| answers_for(single, &serial, &hashes))
        .ok_or_else(|| unusable("it holds no answer about this certificate".into()))?;
    let this_update = unix_seconds(&single.this_update);
    if this_update > now + CLOCK_SKEW_SECONDS {
        return Err(unusable("its thisUpdate is in the future".into()));
    }
    match &single.next_update {
        Some(next_update) if unix_seconds(next_update) < now - CLOCK_SKEW_SECONDS => {
            return Err(unusable("it is stale: its nextUpdate has passed".into()));
        }
        None if this_update < now - MAX_AGE_WITHOUT_NEXT_UPDATE_SECONDS - CLOCK_SKEW_SECONDS => {
            return Err(unusable(
                "it is stale: it names no nextUpdate and its thisUpdate is over a day old".into(),
            ));
        }
        _ => {}
    }
    Ok(match &single.cert_status {
        CertStatus::Good(_) => OcspVerdict::Good,
        CertStatus::Unknown(_) => OcspVerdict::Unknown,
        CertStatus::Revoked(info) => OcspVerdict::Revoked {
            at: unix_seconds(&info.revocation_time),
            reason: info.revocation_reason.map(reason_name),
        },
    })
}

/// The DER of the part a basic response's signature covers (tbsResponseData), exactly as
/// received: re-encoding a decoded value could differ from what the responder signed.
fn signed_part(basic_der: &[u8]) -> der::Result<&[u8]> {
    let mut outer = SliceReader::new(basic_der)?;
    let header = der::Header::decode(&mut outer)?;
    let mut inner = SliceReader::new(outer.read_slice(header.length)?)?;
    inner.tlv_bytes()
}

/// The key that must have signed the response: the issuer's when the responder ID names it,
/// otherwise that of an included certificate the responder ID names, which the issuer signed,
/// which is for OCSP signing and which is valid at `now` (RFC 6960 4.2.2.2).
fn responder_key(
    responder: &ResponderId,
    issuer: &X509Certificate<'_>,
    delegated: &[Vec<u8>],
    now: i64,
) -> Option<Vec<u8>> {
    if names(responder, issuer) {
        return Some(issuer.public_key().raw.to_vec());
    }
    delegated.iter().find_map(|der| {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let for_ocsp = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.ocsp_signing);
        let valid_now = cert.validity().not_before.timestamp() <= now
            && now <= cert.validity().not_after.timestamp();
        (names(responder, &cert)
            && for_ocsp
            && valid_now
            && cert.issuer().as_raw() == issuer.subject().as_raw()
            && cert.verify_signature(Some(issuer.public_key())).is_ok())
        .then(|| cert.public_key().raw.to_vec())
    })
}

/// Whether the responder ID designates `cert` (by subject name, or by the SHA-1 of its key).
fn names(responder: &ResponderId, cert: &X509Certificate<'_>) -> bool {
    match responder {
        ResponderId::ByName(name) => name
            .to_der()
            .is_ok_and(|name| name.as_slice() == cert.subject().as_raw()),
        ResponderId::ByKey(hash) => {
            let key = &cert.public_key().subject_public_key.data;
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, key).as_ref()
                == hash.as_bytes()
        }
    }
}

fn verifies(spki_der: &[u8], algorithm_der: &[u8], signature: &[u8], data: &[u8]) -> bool {
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    let Ok((_, algorithm)) = x509_parser::x509::AlgorithmIdentifier::from_der(algorithm_der) else {
        return false;
    };
    let signature = x509_parser::asn1_rs::BitString::new(0, signature);
    x509_parser::verify::verify_signature(&spki, &algorithm, &signature, data).is_ok()
}

fn answers_for(
    single: &SingleResponse,
    serial: &x509_cert::serial_number::SerialNumber,
    issuer: &IssuerHashes,
) -> bool {
    let id = &single.cert_id;
    let Some(hash) = CertIdHash::of_oid(id.hash_algorithm.oid) else {
        return false;
    };
    id.serial_number == *serial
        && issuer.matches(
            hash,
            id.issuer_name_hash.as_bytes(),
            id.issuer_key_hash.as_bytes(),
        )
}

fn unix_seconds(time: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    i64::try_from(time.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn status_name(status: OcspResponseStatus) -> &'static str {
    match status {
        OcspResponseStatus::Successful => "successful",
        OcspResponseStatus::MalformedRequest => "malformedRequest",
        OcspResponseStatus::InternalError => "internalError",
        OcspResponseStatus::TryLater => "tryLater",
        OcspResponseStatus::SigRequired => "sigRequired",
        OcspResponseStatus::Unauthorized => "unauthorized",
    }
}

fn reason_name(reason: x509_cert::ext::pkix::CrlReason) -> &'static str {
    use x509_cert::ext::pkix::CrlReason;
    match reason {
        CrlReason::Unspecified => "unspecified",
        CrlReason::KeyCompromise => "keyCompromise",
        CrlReason::CaCompromise => "cACompromise",
        CrlReason::AffiliationChanged => "affiliationChanged",
        CrlReason::Superseded => "superseded",
        CrlReason::CessationOfOperation => "cessationOfOperation",
        CrlReason::CertificateHold => "certificateHold",
        CrlReason::RemoveFromCRL => "removeFromCRL",
        CrlReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        CrlReason::AaCompromise => "aACompromise",
    }
}
