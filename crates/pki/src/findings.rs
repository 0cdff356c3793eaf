//! What a TLS scan finds wrong with a served certificate: the pure rules (name matching,
//! expiry windows, weak keys and signatures, where revocation is published). The scanner in
//! the server crate does the I/O and the chain check.

use std::net::IpAddr;

use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::SanEntry;

/// One problem with what an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Finding {
    /// notAfter has passed.
    Expired,
    /// notBefore is still ahead.
    NotYetValid,
    /// Expires within the warning window (still valid).
    ExpiringSoon,
    /// The name asked for is not among the certificate's SANs.
    NameMismatch,
    /// The endpoint does not send the intermediate that links its certificate to a trusted
    /// root (a client that knows the intermediate accepts it; others do not).
    IncompleteChain,
    /// The chain does not lead to a trusted root, or a signature in it does not verify.
    UntrustedIssuer,
    /// RSA below 2048 bits, an unusual curve, or a SHA-1/MD5 signature.
    WeakKey,
    /// Listed as revoked by the issuer's CRL.
    Revoked,
}

impl Finding {
    /// Every finding, in report order.
    pub const ALL: [Finding; 8] = [
        Finding::Expired,
        Finding::NotYetValid,
        Finding::ExpiringSoon,
        Finding::NameMismatch,
        Finding::IncompleteChain,
        Finding::UntrustedIssuer,
        Finding::WeakKey,
        Finding::Revoked,
    ];

    /// Stable name, used in reports, the inventory and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::Expired => "expired",
            Finding::NotYetValid => "not_yet_valid",
            Finding::ExpiringSoon => "expiring_soon",
            Finding::NameMismatch => "name_mismatch",
            Finding::IncompleteChain => "incomplete_chain",
            Finding::UntrustedIssuer => "untrusted_issuer",
            Finding::WeakKey => "weak_key",
            Finding::Revoked => "revoked",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Finding> {
        Finding::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// Whether a client would refuse the endpoint (or should: weak keys). Only
    /// `expiring_soon` leaves an endpoint counted as serving a valid certificate.
    pub fn makes_invalid(self) -> bool {
        !matches!(self, Finding::ExpiringSoon)
    }
}

/// Whether `name` (a DNS name or an IP address) is covered by `sans`. DNS names compare
/// case-insensitively; a wildcard covers exactly one leftmost label (RFC 6125 §6.4.3).
pub fn matches_name(sans: &[SanEntry], name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return sans
            .iter()
            .any(|s| matches!(s, SanEntry::Ip(a) if *a == ip));
    }
    let name = name.to_ascii_lowercase();
    sans.iter().any(|san| match san {
        SanEntry::Dns(pattern) => {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => pattern == name,
            }
        }
        _ => false,
    })
}

/// The time findings for a validity period at `now`: expired, not yet valid, or expiring
/// within `warn_within_seconds`.
pub fn validity_findings(
    not_before: i64,
    not_after: i64,
    now: i64,
    warn_within_seconds: i64,
) -> Option<Finding> {
    if now > not_after {
        Some(Finding::Expired)
    } else if now < not_before {
        Some(Finding::NotYetValid)
    } else if not_after - now <= warn_within_seconds {
        Some(Finding::ExpiringSoon)
    } else {
        None
    }
}

/// Why a certificate's key or signature is weak, if it is: RSA under 2048 bits, an elliptic
/// curve other than P-256, P-384 or P-521, DSA, or a SHA-1 or MD5 signature.
pub fn weak_key_reason(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let signature = cert.signature_algorithm.algorithm.to_id_string();
    const WEAK_SIGNATURES: [(&str, &str); 5] = [
        ("1.2.840.113549.1.1.4", "MD5 with RSA signature"),
        ("1.2.840.113549.1.1.5", "SHA-1 with RSA signature"),
        ("1.2.840.10045.4.1", "ECDSA with SHA-1 signature"),
        ("1.2.840.10040.4.3", "DSA with SHA-1 signature"),
        ("1.3.14.3.2.29", "SHA-1 with RSA signature"),
    ];
    if let Some((_, reason)) = WEAK_SIGNATURES.iter().find(|(oid, _)| *oid == signature) {
        return Some((*reason).to_string());
    }
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            (bits < 2048).then(|| format!("RSA key of {bits} bits (at least 2048 expected)"))
        }
        Ok(PublicKey::EC(_)) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            const CURVES: [&str; 3] = ["1.2.840.10045.3.1.7", "1.3.132.0.34", "1.3.132.0.35"];
            (!CURVES.contains(&curve.as_str()))
                .then(|| format!("elliptic curve {curve} (P-256, P-384 or P-521 expected)"))
        }
        Ok(PublicKey::DSA(_)) => Some("DSA key".into()),
        _ => None,
    }
}

/// The http(s) URLs of a certificate's CRL distribution points.
pub fn crl_distribution_urls(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.tbs_certificate.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for point in points.iter() {
                if let Some(x509_parser::extensions::DistributionPointName::FullName(names)) =
                    &point.distribution_point
                {
                    for name in names {
                        if let GeneralName::URI(uri) = name
                            && (uri.starts_with("http://") || uri.starts_with("https://"))
                        {
                            urls.push((*uri).to_string());
                        }
                    }
                }
            }
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(names: &[&str]) -> Vec<SanEntry> {
        names.iter().map(|n| SanEntry::Dns((*n).into())).collect()
    }

    #[test]
    fn names_match_exactly_or_by_one_wildcard_label() {
        let sans = dns(&["www.example.com", "*.api.example.com"]);
        assert!(matches_name(&sans, "WWW.example.com."));
        assert!(matches_name(&sans, "v1.api.example.com"));
        assert!(!matches_name(&sans, "api.example.com"));
        assert!(!matches_name(&sans, "a.b.api.example.com"));
        assert!(!matches_name(&sans, "example.com"));
        let ips = vec![SanEntry::Ip("127.0.0.1".parse().unwrap())];
        assert!(matches_name(&ips, "127.0.0.1"));
        assert!(!matches_name(&ips, "127.0.0.2"));
        assert!(!matches_name(&dns(&["127.0.0.1"]), "127.0.0.1"));
    }

    #[test]
    fn validity_windows() {
        assert_eq!(validity_findings(0, 100, 101, 10), Some(Finding::Expired));
        assert_eq!(
            validity_findings(50, 100, 10, 10),
            Some(Finding::NotYetValid)
        );
        assert_eq!(
            validity_findings(0, 100, 90, 10),
            Some(Finding::ExpiringSoon)
        );
        assert_eq!(validity_findings(0, 100, 89, 10), None);
    }

    #[test]
    fn finding_names_round_trip() {
        for finding in Finding::ALL {
            assert_eq!(Finding::parse(finding.as_str()), Some(finding));
        }
        assert!(!Finding::ExpiringSoon.makes_invalid());
        assert!(Finding::Revoked.makes_invalid());
    }
}
