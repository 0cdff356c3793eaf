//! X.509 rules for certkeeper: key algorithms, CSR checks, certificate profiles,
//! certificate and CA building, and the [`Signer`] trait that keeps issuance
//! independent of where a CA key lives.
//!
//! This crate does no I/O and no async work: every input (time, serial, URLs)
//! is passed in, so the rules can be tested with vectors.
#![forbid(unsafe_code)]

mod ca;
mod cert;
mod crl;
mod csr;
mod error;
mod extensions;
mod findings;
mod issue;
mod key;
mod ocsp;
mod ocsp_check;
mod pkcs12;
mod profile;

pub use ca::{
    CaCertificateRequest, CaIssuer, CaSubject, IntermediateKey, build_intermediate_csr, build_root,
    sign_intermediate,
};
pub use cert::{CertificateSummary, SanEntry, parse_certificate, pem_to_der_certificates};
pub use crl::{CrlEntry, CrlRequest, RevocationReason, build_crl};
pub use csr::{CsrInfo, parse_csr};
pub use error::PkiError;
pub use findings::{
    Finding, crl_distribution_urls, matches_name, validity_findings, weak_key_reason,
};
pub use issue::{IssuerUrls, LeafRequest, build_leaf};
pub use key::{
    KeyAlgorithm, KeyKind, PublicKeyInfo, Signer, SoftwareKey, parse_public_key_info, random_serial,
};
pub use ocsp::{
    CertIdHash, IssuerHashes, MAX_OCSP_REQUEST_BYTES, OcspAnswer, OcspQueries, OcspQuery,
    OcspRefusal, OcspResponder, OcspStatus, build_ocsp_responder_certificate, build_ocsp_response,
    ocsp_refusal, read_ocsp_request,
};
pub use ocsp_check::{
    MAX_OCSP_RESPONSE_BYTES, OcspVerdict, build_ocsp_check_request, find_issuers,
    ocsp_responder_urls, read_ocsp_answer,
};
pub use pkcs12::build_pkcs12;
pub use profile::{ExtendedKeyUsage, KeyUsage, Profile, SanKind, builtin_profiles};

/// Encodes DER bytes as PEM with the given label (for example `CERTIFICATE`).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}
