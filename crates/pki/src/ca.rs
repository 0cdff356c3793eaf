//! Certificate authorities: roots, intermediates (direct or via CSR), and the issuer handle.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::extensions::authority_info_access;
use crate::key::{SharedSigner, key_identifier};
use crate::{IssuerUrls, PkiError, PublicKeyInfo, Signer, parse_certificate, parse_csr};

/// The subject of a CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSubject {
    /// commonName, required.
    pub common_name: String,
    /// organizationName, optional.
    pub organization: Option<String>,
    /// countryName (two letters), optional.
    pub country: Option<String>,
}

impl CaSubject {
    fn to_rcgen(&self) -> Result<rcgen::DistinguishedName, PkiError> {
        if self.common_name.trim().is_empty() {
            return Err(PkiError::InvalidRequest(
                "a CA needs a non-empty common name".into(),
            ));
        }
        let mut dn = rcgen::DistinguishedName::new();
        if let Some(country) = &self.country {
            if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(PkiError::InvalidRequest(format!(
                    "country {country:?} must be two upper-case letters (ISO 3166), such as US"
                )));
            }
            let printable =
                rcgen::string::PrintableString::try_from(country.as_str()).map_err(|_| {
                    PkiError::InvalidRequest(format!("country {country:?} is not printable"))
                })?;
            dn.push(
                rcgen::DnType::CountryName,
                rcgen::DnValue::PrintableString(printable),
            );
        }
        if let Some(organization) = &self.organization {
            dn.push(rcgen::DnType::OrganizationName, organization.as_str());
        }
        dn.push(rcgen::DnType::CommonName, self.common_name.as_str());
        Ok(dn)
    }
}

/// Parameters of a CA certificate.
#[derive(Debug, Clone)]
pub struct CaCertificateRequest<'a> {
    /// Subject name (ignored when signing an intermediate from a CSR: the CSR's subject is used).
    pub subject: &'a CaSubject,
    /// Serial number bytes.
    pub serial: [u8; 16],
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// pathLenConstraint; `None` leaves the path length unconstrained.
    pub path_len: Option<u8>,
    /// URLs of the issuing CA for the AIA and CRL DP extensions (intermediates only).
    pub urls: Option<&'a IssuerUrls>,
}

fn ca_params(
    request: &CaCertificateRequest<'_>,
    subject_key: &PublicKeyInfo,
) -> Result<rcgen::CertificateParams, PkiError> {
    if request.not_after <= request.not_before {
        return Err(PkiError::InvalidRequest(
            "the CA lifetime must be positive".into(),
        ));
    }
    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&request.serial));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.distinguished_name = request.subject.to_rcgen()?;
    params.key_identifier_method = key_identifier(subject_key);
    params.is_ca = rcgen::IsCa::Ca(match request.path_len {
        Some(len) => rcgen::BasicConstraints::Constrained(len),
        None => rcgen::BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    if let Some(urls) = request.urls {
        if let Some(crl) = &urls.crl {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![crl.clone()],
            }];
        }
        params.custom_extensions.extend(authority_info_access(
            urls.ocsp.as_deref(),
            urls.ca_issuers.as_deref(),
        ));
    }
    Ok(params)
}

/// Builds a self-signed root CA certificate.
pub fn build_root(
    request: &CaCertificateRequest<'_>,
    key: Arc<dyn Signer>,
) -> Result<Vec<u8>, PkiError> {
    let params = ca_params(request, key.public_key())?;
    let cert = params.self_signed(&SharedSigner(key))?;
    Ok(cert.der().to_vec())
}

/// Builds a PKCS#10 request for an intermediate CA key, to be signed by an (offline) root.
pub fn build_intermediate_csr(
    subject: &CaSubject,
    key: Arc<dyn Signer>,
) -> Result<Vec<u8>, PkiError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = subject.to_rcgen()?;
    let csr = params.serialize_request(&SharedSigner(key))?;
    Ok(csr.der().to_vec())
}

/// Signs an intermediate CA certificate for `public_key_spki` (from `init`) or for the key in a CSR.
pub fn sign_intermediate(
    subject_key: IntermediateKey<'_>,
    request: &CaCertificateRequest<'_>,
    parent: &CaIssuer,
) -> Result<Vec<u8>, PkiError> {
    let cert = match subject_key {
        IntermediateKey::Signer(key) => {
            let mut params = ca_params(request, key.public_key())?;
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&SharedSigner(key), parent.rcgen_issuer())?
        }
        IntermediateKey::Csr(csr_bytes) => {
            let info = parse_csr(csr_bytes)?;
            let mut params = ca_params(request, &info.public_key)?;
            params.use_authority_key_identifier_extension = true;
            let der = match csr_bytes.first() {
                Some(0x30) => csr_bytes.to_vec(),
                _ => pem::parse(csr_bytes)
                    .map_err(|e| PkiError::MalformedCsr(e.to_string()))?
                    .into_contents(),
            };
            let csr = rcgen::CertificateSigningRequestParams::from_der(&der.into())
                .map_err(|e| PkiError::MalformedCsr(e.to_string()))?;
            params.distinguished_name = csr.params.distinguished_name;
            params.signed_by(&info.public_key, parent.rcgen_issuer())?
        }
    };
    Ok(cert.der().to_vec())
}

/// Whose key an intermediate certificate certifies.
pub enum IntermediateKey<'a> {
    /// A key certkeeper holds.
    Signer(Arc<dyn Signer>),
    /// The key in a PKCS#10 request (PEM or DER).
    Csr(&'a [u8]),
}

/// A CA certificate with the key that signs for it: the handle issuance uses.
pub struct CaIssuer {
    issuer: rcgen::Issuer<'static, SharedSigner>,
    certificate_der: Vec<u8>,
    signer: Arc<dyn Signer>,
}

impl std::fmt::Debug for CaIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaIssuer").finish_non_exhaustive()
    }
}

impl CaIssuer {
    /// Pairs a CA certificate with its key; refuses a key that does not match the certificate
    /// or a certificate that is not a CA.
    pub fn new(certificate_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, PkiError> {
        let summary = parse_certificate(&certificate_der)?;
        if !summary.is_ca {
            return Err(PkiError::InvalidRequest(
                "the certificate is not a CA certificate (basicConstraints cA is not set)".into(),
            ));
        }
        if summary.spki_sha256 != signer.public_key().spki_sha256() {
            return Err(PkiError::InvalidKey(
                "the private key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &certificate_der.as_slice().into(),
            SharedSigner(signer.clone()),
        )
        .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        Ok(CaIssuer {
            issuer,
            certificate_der,
            signer,
        })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The CA's signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    pub(crate) fn rcgen_issuer(&self) -> &rcgen::Issuer<'static, SharedSigner> {
        &self.issuer
    }
}
