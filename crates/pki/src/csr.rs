//! Reading and checking PKCS#10 certificate signing requests.

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use crate::cert::san_entries;
use crate::key::check_spki;
use crate::{PkiError, PublicKeyInfo, SanEntry};

/// Largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// The parts of a verified CSR that issuance uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// The subject's public key (checked: supported and not weak).
    pub public_key: PublicKeyInfo,
    /// The subject common name, if the CSR has one.
    pub common_name: Option<String>,
    /// Subject alternative names from the extensionRequest attribute.
    pub sans: Vec<SanEntry>,
}

/// Decodes a CSR (PEM or DER), verifies its self-signature and checks its key.
pub fn parse_csr(input: &[u8]) -> Result<CsrInfo, PkiError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(PkiError::MalformedCsr(format!(
            "larger than {MAX_CSR_BYTES} bytes"
        )));
    }
    let der = if input.first() == Some(&0x30) {
        input.to_vec()
    } else {
        let block = pem::parse(input)
            .map_err(|e| PkiError::MalformedCsr(format!("not PEM or DER ({e})")))?;
        if !matches!(
            block.tag(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(PkiError::MalformedCsr(format!(
                "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
                block.tag()
            )));
        }
        block.into_contents()
    };
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| PkiError::MalformedCsr(format!("undecodable PKCS#10 ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::MalformedCsr(
            "trailing bytes after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    let public_key = check_spki(&info.subject_pki, info.subject_pki.raw)?;
    csr.verify_signature()
        .map_err(|_| PkiError::BadCsrSignature)?;

    let mut sans = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                sans.extend(san_entries(san.general_names.iter()));
            }
        }
    }
    let common_name = match info.subject.iter_common_name().next() {
        None => None,
        Some(cn) => Some(
            cn.as_str()
                .map_err(|_| PkiError::MalformedCsr("the common name is not a string".into()))?
                .to_string(),
        ),
    };
    Ok(CsrInfo {
        public_key,
        common_name,
        sans,
    })
}
