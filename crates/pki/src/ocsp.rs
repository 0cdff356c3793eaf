//! OCSP (RFC 6960, with the RFC 5019 profile): reading requests, building signed responses,
//! and the delegated responder certificate. ASN.1 types come from `x509-ocsp`; signatures
//! from the [`Signer`] trait.

use std::sync::Arc;

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::ca::CaIssuer;
use crate::{KeyKind, PkiError, PublicKeyInfo, RevocationReason, Signer, parse_certificate};

pub(crate) const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1).
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

/// Largest OCSP request accepted, in bytes.
pub const MAX_OCSP_REQUEST_BYTES: usize = 16 * 1024;

/// Hash algorithm of a CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    /// SHA-1 (what most clients send).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl CertIdHash {
    /// The hash a CertID's algorithm OID names, if it is one of these.
    pub(crate) fn of_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            oid if oid == OID_SHA1 => Some(CertIdHash::Sha1),
            oid if oid == OID_SHA256 => Some(CertIdHash::Sha256),
            _ => None,
        }
    }
}

/// The hashes that identify an issuer in a CertID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHashes {
    sha1: (Vec<u8>, Vec<u8>),
    sha256: (Vec<u8>, Vec<u8>),
}

impl IssuerHashes {
    /// Hashes of the issuing CA's subject name and public key.
    pub fn of(ca_certificate_der: &[u8]) -> Result<Self, PkiError> {
        let cert = x509_cert::Certificate::from_der(ca_certificate_der)
            .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        let name = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| PkiError::Encoding(e.to_string()))?;
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let digest = |alg: &'static aws_lc_rs::digest::Algorithm, data: &[u8]| {
            aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
        };
        Ok(IssuerHashes {
            sha1: (
                digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &name),
                digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, key),
            ),
            sha256: (
                digest(&aws_lc_rs::digest::SHA256, &name),
                digest(&aws_lc_rs::digest::SHA256, key),
            ),
        })
    }

    /// The (name, key) hashes under `hash`.
    pub(crate) fn hashes(&self, hash: CertIdHash) -> (&[u8], &[u8]) {
        let (name, key) = match hash {
            CertIdHash::Sha1 => &self.sha1,
            CertIdHash::Sha256 => &self.sha256,
        };
        (name, key)
    }

    pub(crate) fn matches(&self, hash: CertIdHash, name_hash: &[u8], key_hash: &[u8]) -> bool {
        self.hashes(hash) == (name_hash, key_hash)
    }
}

/// One certificate asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspQuery {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// CertID hash algorithm.
    pub hash: CertIdHash,
    cert_id: CertId,
}

impl OcspQuery {
    /// SHA-256 of the CertID exactly as asked (hash algorithm, issuer hashes, serial): a cache
    /// key that request padding cannot vary.
    pub fn cache_key(&self) -> [u8; 32] {
        let der = self.cert_id.to_der().unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

/// A decoded OCSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspQueries {
    /// The certificates asked about, in request order.
    pub queries: Vec<OcspQuery>,
    /// The request's nonce (RFC 8954), to echo.
    pub nonce: Option<Vec<u8>>,
}

/// Why an OCSP request gets an error response instead of statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspRefusal {
    /// The request could not be decoded or uses an unsupported hash (malformedRequest).
    Malformed,
    /// A CertID names an issuer this responder does not answer for (unauthorized).
    Unauthorized,
    /// The responder could not answer (internalError).
    Internal,
}

/// Decodes an OCSP request and checks every CertID's issuer against `issuer`.
pub fn read_ocsp_request(der: &[u8], issuer: &IssuerHashes) -> Result<OcspQueries, OcspRefusal> {
    if der.len() > MAX_OCSP_REQUEST_BYTES {
        return Err(OcspRefusal::Malformed);
    }
    let request = OcspRequest::from_der(der).map_err(|_| OcspRefusal::Malformed)?;
    let list = &request.tbs_request.request_list;
    if list.is_empty() || list.len() > 64 {
        return Err(OcspRefusal::Malformed);
    }
    let mut queries = Vec::with_capacity(list.len());
    for item in list {
        let id = &item.req_cert;
        let hash = CertIdHash::of_oid(id.hash_algorithm.oid).ok_or(OcspRefusal::Malformed)?;
        if !issuer.matches(
            hash,
            id.issuer_name_hash.as_bytes(),
            id.issuer_key_hash.as_bytes(),
        ) {
            return Err(OcspRefusal::Unauthorized);
        }
        queries.push(OcspQuery {
            serial: crate::cert::serial_hex(id.serial_number.as_bytes()),
            hash,
            cert_id: id.clone(),
        });
    }
    let nonce = request
        .tbs_request
        .request_extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == OID_NONCE))
        .map(|e| {
            // RFC 8954: Nonce ::= OCTET STRING (SIZE(1..32)), wrapped in the extension's OCTET STRING.
            OctetString::from_der(e.extn_value.as_bytes())
                .map(|inner| inner.as_bytes().to_vec())
                .map_err(|_| OcspRefusal::Malformed)
        })
        .transpose()?;
    if nonce.as_ref().is_some_and(|n| n.is_empty() || n.len() > 32) {
        return Err(OcspRefusal::Malformed);
    }
    Ok(OcspQueries { queries, nonce })
}

/// What is known about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    /// Issued and not revoked.
    Good,
    /// Revoked at (Unix seconds) for a reason.
    Revoked {
        /// Revocation time.
        at: i64,
        /// Reason.
        reason: RevocationReason,
    },
    /// Not issued by this CA (as far as the inventory knows).
    Unknown,
}

/// The delegated responder: its certificate and the key that signs responses.
pub struct OcspResponder {
    certificate_der: Vec<u8>,
    certificate: x509_cert::Certificate,
    signer: Arc<dyn Signer>,
    key_hash: OctetString,
    algorithm: AlgorithmIdentifierOwned,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder").finish_non_exhaustive()
    }
}

fn signature_algorithm(key: &PublicKeyInfo) -> AlgorithmIdentifierOwned {
    match key.kind {
        KeyKind::EcdsaP256 => AlgorithmIdentifierOwned {
            oid: OID_ECDSA_SHA256,
            parameters: None,
        },
        KeyKind::EcdsaP384 => AlgorithmIdentifierOwned {
            oid: OID_ECDSA_SHA384,
            parameters: None,
        },
        KeyKind::Rsa => AlgorithmIdentifierOwned {
            oid: OID_RSA_SHA256,
            parameters: Some(der::Any::from(Null)),
        },
        KeyKind::Ed25519 => AlgorithmIdentifierOwned {
            oid: OID_ED25519,
            parameters: None,
        },
    }
}

impl OcspResponder {
    /// Pairs the responder certificate with its key.
    pub fn new(certificate_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, PkiError> {
        let summary = parse_certificate(&certificate_der)?;
        if summary.spki_sha256 != signer.public_key().spki_sha256() {
            return Err(PkiError::InvalidKey(
                "the OCSP key does not belong to the responder certificate".into(),
            ));
        }
        let certificate = x509_cert::Certificate::from_der(&certificate_der)
            .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        let key_bits = certificate
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let key_hash = OctetString::new(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, key_bits)
                .as_ref(),
        )
        .map_err(|e| PkiError::Encoding(e.to_string()))?;
        Ok(OcspResponder {
            algorithm: signature_algorithm(signer.public_key()),
            certificate_der,
            certificate,
            signer,
            key_hash,
        })
    }

    /// The responder certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }
}

fn generalized(seconds: i64) -> Result<OcspGeneralizedTime, PkiError> {
    let seconds =
        u64::try_from(seconds).map_err(|_| PkiError::InvalidRequest("time before 1970".into()))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(seconds))
        .map(OcspGeneralizedTime)
        .map_err(|e| PkiError::Encoding(e.to_string()))
}

/// One answer to put in a response.
#[derive(Debug, Clone)]
pub struct OcspAnswer<'a> {
    /// The CertID as asked.
    pub query: &'a OcspQuery,
    /// The status.
    pub status: OcspStatus,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
}

/// Builds and signs a successful OCSP response (responder identified by key hash, the
/// responder certificate included, the nonce echoed when given).
pub fn build_ocsp_response(
    responder: &OcspResponder,
    answers: &[OcspAnswer<'_>],
    produced_at: i64,
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, PkiError> {
    let encoding = |e: der::Error| PkiError::Encoding(e.to_string());
    let mut responses = Vec::with_capacity(answers.len());
    for answer in answers {
        let cert_status = match answer.status {
            OcspStatus::Good => CertStatus::good(),
            OcspStatus::Unknown => CertStatus::unknown(),
            OcspStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                revocation_time: generalized(at)?,
                revocation_reason: match reason {
                    RevocationReason::Unspecified => None,
                    other => Some(crl_reason(other)),
                },
            }),
        };
        responses.push(SingleResponse {
            cert_id: answer.query.cert_id.clone(),
            cert_status,
            this_update: generalized(answer.this_update)?,
            next_update: Some(generalized(answer.next_update)?),
            single_extensions: None,
        });
    }
    let response_extensions = match nonce {
        Some(nonce) => {
            let value = OctetString::new(nonce)
                .map_err(encoding)?
                .to_der()
                .map_err(encoding)?;
            Some(vec![Extension {
                extn_id: OID_NONCE,
                critical: false,
                extn_value: OctetString::new(value).map_err(encoding)?,
            }])
        }
        None => None,
    };
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(responder.key_hash.clone()),
        produced_at: generalized(produced_at)?,
        responses,
        response_extensions,
    };
    let signature = responder.signer.sign(&tbs.to_der().map_err(encoding)?)?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: responder.algorithm.clone(),
        signature: BitString::from_bytes(&signature).map_err(encoding)?,
        certs: Some(vec![responder.certificate.clone()]),
    };
    OcspResponse::successful(basic)
        .map_err(encoding)?
        .to_der()
        .map_err(encoding)
}

fn crl_reason(reason: RevocationReason) -> x509_cert::ext::pkix::CrlReason {
    use x509_cert::ext::pkix::CrlReason;
    match reason {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
    }
}

/// An unsigned error response (malformedRequest or unauthorized).
pub fn ocsp_refusal(refusal: OcspRefusal) -> Vec<u8> {
    let response = match refusal {
        OcspRefusal::Malformed => OcspResponse::malformed_request(),
        OcspRefusal::Unauthorized => OcspResponse::unauthorized(),
        OcspRefusal::Internal => OcspResponse::internal_error(),
    };
    // Invariant: an OCSPResponse with only a status always encodes.
    response
        .to_der()
        .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, 0x02])
}

/// Builds the delegated OCSP responder certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck).
pub fn build_ocsp_responder_certificate(
    ca: &CaIssuer,
    public_key: &PublicKeyInfo,
    serial: [u8; 16],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    common_name: &str,
) -> Result<Vec<u8>, PkiError> {
    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.not_before = not_before;
    params.not_after = not_after;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = crate::key::key_identifier(public_key);
    // id-pkix-ocsp-nocheck: extension value NULL.
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            OID_OCSP_NOCHECK,
            vec![0x05, 0x00],
        ));
    let cert = params.signed_by(public_key, ca.rcgen_issuer())?;
    Ok(cert.der().to_vec())
}
