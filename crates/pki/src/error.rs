use thiserror::Error;

/// Everything that can go wrong while checking requests or building certificates.
#[derive(Debug, Error)]
pub enum PkiError {
    /// The CSR could not be decoded.
    #[error(
        "malformed CSR: {0}; send a PKCS#10 request in PEM or DER (for example from `openssl req -new`)"
    )]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify against its public key.
    #[error(
        "the CSR signature does not verify against its public key; re-create the CSR with the matching private key"
    )]
    BadCsrSignature,
    /// A key that is too weak to certify.
    #[error("weak key: {0}")]
    WeakKey(String),
    /// A key algorithm certkeeper does not support.
    #[error("unsupported key: {0}; use ECDSA P-256/P-384, RSA 2048-8192 or Ed25519")]
    UnsupportedKey(String),
    /// The request does not fit the certificate profile.
    #[error("{0}")]
    ProfileViolation(String),
    /// A name or request field that is not valid for a certificate.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A certificate that could not be decoded.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// A private key that could not be decoded or does not match.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The signer failed to produce a signature.
    #[error("signing failed: {0}")]
    Signing(String),
    /// An OCSP response that cannot be believed (malformed, not successful, badly signed, not
    /// about the certificate, or stale).
    #[error("unusable OCSP response: {0}")]
    UnusableOcspResponse(String),
    /// Encoding the certificate failed.
    #[error("could not encode the certificate: {0}")]
    Encoding(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        PkiError::Encoding(error.to_string())
    }
}
