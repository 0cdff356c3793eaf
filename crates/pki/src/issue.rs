//! Building end-entity certificates under a profile.

use time::OffsetDateTime;

use crate::ca::CaIssuer;
use crate::extensions::{authority_info_access, cabf_domain_validated_policy};
use crate::{KeyKind, PkiError, Profile, PublicKeyInfo, SanEntry};

/// URLs relying parties use to check a certificate; they go into AIA and CRL distribution points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerUrls {
    /// OCSP responder URL (AIA id-ad-ocsp).
    pub ocsp: Option<String>,
    /// Where the issuing CA certificate can be fetched (AIA id-ad-caIssuers).
    pub ca_issuers: Option<String>,
    /// CRL distribution point URL.
    pub crl: Option<String>,
}

/// Everything needed to build one end-entity certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest<'a> {
    /// The profile the certificate follows.
    pub profile: &'a Profile,
    /// The subject's public key.
    pub public_key: &'a PublicKeyInfo,
    /// Subject common name; must equal one of `sans`.
    pub common_name: Option<&'a str>,
    /// Subject alternative names (already normalised and admitted by policy).
    pub sans: &'a [SanEntry],
    /// Serial number bytes (see [`crate::random_serial`]).
    pub serial: [u8; 16],
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity (inclusive).
    pub not_after: OffsetDateTime,
    /// Revocation and issuer URLs.
    pub urls: &'a IssuerUrls,
}

impl Profile {
    /// Checks a request against this profile; the error says which constraint failed.
    pub fn check(
        &self,
        public_key: &PublicKeyInfo,
        common_name: Option<&str>,
        sans: &[SanEntry],
        lifetime_seconds: u64,
    ) -> Result<(), PkiError> {
        if !self.key_kinds.contains(&public_key.kind) {
            let allowed: Vec<&str> = self.key_kinds.iter().map(|k| k.name()).collect();
            return Err(PkiError::ProfileViolation(format!(
                "profile {:?} does not allow {} keys (allowed: {})",
                self.name,
                public_key.kind,
                allowed.join(", ")
            )));
        }
        if public_key.kind == KeyKind::Rsa && public_key.bits < self.min_rsa_bits {
            return Err(PkiError::WeakKey(format!(
                "RSA-{} is below profile {:?}'s minimum of {} bits",
                public_key.bits, self.name, self.min_rsa_bits
            )));
        }
        if sans.is_empty() {
            return Err(PkiError::ProfileViolation(format!(
                "the request names no subject alternative name; profile {:?} needs at least one",
                self.name
            )));
        }
        for san in sans {
            if !self.san_kinds.contains(&san.kind()) {
                let allowed: Vec<&str> = self.san_kinds.iter().map(|k| k.name()).collect();
                return Err(PkiError::ProfileViolation(format!(
                    "profile {:?} does not allow {} names such as {san} (allowed: {})",
                    self.name,
                    san.kind().name(),
                    allowed.join(", ")
                )));
            }
        }
        if let Some(cn) = common_name
            && !sans.iter().any(|san| san_equals_text(san, cn))
        {
            return Err(PkiError::ProfileViolation(format!(
                "the common name {cn:?} is not one of the subject alternative names; add it as a SAN or leave the CN out"
            )));
        }
        if lifetime_seconds == 0 {
            return Err(PkiError::ProfileViolation(
                "the requested lifetime is zero".into(),
            ));
        }
        if lifetime_seconds > self.max_validity_seconds {
            return Err(PkiError::ProfileViolation(format!(
                "the requested lifetime of {lifetime_seconds} s is above profile {:?}'s maximum of {} s",
                self.name, self.max_validity_seconds
            )));
        }
        Ok(())
    }
}

fn san_equals_text(san: &SanEntry, text: &str) -> bool {
    match san {
        SanEntry::Dns(name) => name.eq_ignore_ascii_case(text),
        SanEntry::Ip(ip) => text.parse::<std::net::IpAddr>().is_ok_and(|t| t == *ip),
        SanEntry::Uri(uri) => uri == text,
        SanEntry::Email(email) => email.eq_ignore_ascii_case(text),
    }
}

/// Builds and signs an end-entity certificate. The profile is checked again here.
pub fn build_leaf(request: &LeafRequest<'_>, ca: &CaIssuer) -> Result<Vec<u8>, PkiError> {
    let profile = request.profile;
    let lifetime = (request.not_after - request.not_before).whole_seconds() + 1;
    profile.check(
        request.public_key,
        request.common_name,
        request.sans,
        u64::try_from(lifetime).unwrap_or(0),
    )?;

    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&request.serial));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = request.common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    params.subject_alt_names = request
        .sans
        .iter()
        .map(SanEntry::to_rcgen)
        .collect::<Result<_, _>>()?;
    // BR 7.1.2.7: subscriber certificates need no basicConstraints and should not carry an SKI;
    // other profiles state CA:FALSE and carry an SKI (RFC 5280 4.2.1.2).
    params.is_ca = if profile.cabf_server {
        rcgen::IsCa::NoCa
    } else {
        rcgen::IsCa::ExplicitNoCa
    };
    params.key_usages = profile
        .key_usage
        .iter()
        .filter(|usage| usage.fits(request.public_key.kind))
        .map(|usage| usage.to_rcgen())
        .collect();
    params.extended_key_usages = profile
        .extended_key_usage
        .iter()
        .map(|eku| eku.to_rcgen())
        .collect();
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = crate::key::key_identifier(request.public_key);
    if let Some(crl) = &request.urls.crl {
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec![crl.clone()],
        }];
    }
    params.custom_extensions.extend(authority_info_access(
        request.urls.ocsp.as_deref(),
        request.urls.ca_issuers.as_deref(),
    ));
    if profile.cabf_server {
        params
            .custom_extensions
            .push(cabf_domain_validated_policy());
    }
    let certificate = params.signed_by(request.public_key, ca.rcgen_issuer())?;
    Ok(certificate.der().to_vec())
}
