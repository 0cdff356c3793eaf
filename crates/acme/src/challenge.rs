//! Challenge helpers: key authorizations (RFC 8555 §8.1), http-01 (§8.3),
//! dns-01 (§8.4) and tls-alpn-01 (RFC 8737, RFC 8738 §6).

use std::net::IpAddr;

use aws_lc_rs::digest;
use x509_parser::extensions::GeneralName;

use crate::b64::b64url_encode;
use crate::error::{AcmeError, ErrorType};
use crate::identifier::Identifier;

/// The id-pe-acmeIdentifier extension OID (RFC 8737 §6.1).
pub const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// The ALPN protocol name for tls-alpn-01 (RFC 8737 §6.2).
pub const TLS_ALPN01_PROTOCOL: &[u8] = b"acme-tls/1";

/// The path prefix of an http-01 challenge; the token follows it.
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorization: `token "." thumbprint` (RFC 8555 §8.1).
pub fn key_authorization(token: &str, account_thumbprint: &str) -> String {
    format!("{token}.{account_thumbprint}")
}

/// The dns-01 TXT record value: base64url(SHA-256(key authorization)).
pub fn dns01_txt_value(key_authorization: &str) -> String {
    b64url_encode(digest::digest(
        &digest::SHA256,
        key_authorization.as_bytes(),
    ))
}

/// The dns-01 record name for a (non-wildcard) domain:
/// `_acme-challenge.<domain>`.
pub fn dns01_record_name(domain: &str) -> String {
    format!("_acme-challenge.{domain}")
}

/// Whether an http-01 response body is the key authorization; trailing
/// whitespace is ignored (RFC 8555 §8.3).
pub fn http01_response_matches(body: &[u8], key_authorization: &str) -> bool {
    body.trim_ascii_end() == key_authorization.as_bytes()
}

/// A challenge token from 32 random bytes: base64url, 43 characters.
pub fn new_token(random: &[u8; 32]) -> String {
    b64url_encode(random)
}

/// The reverse-DNS name of an address (`in-addr.arpa` / `ip6.arpa`), which
/// tls-alpn-01 uses as the SNI for an IP identifier (RFC 8738 §6).
pub fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// The name of the subjectAltName entry expected in a tls-alpn-01
/// certificate.
enum ExpectedSan {
    Dns(String),
    Ip(IpAddr),
}

fn describe_general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("dNSName {dns:?}"),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(bytes);
                format!("iPAddress {}", IpAddr::from(octets))
            }
            16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                format!("iPAddress {}", IpAddr::from(octets))
            }
            n => format!("iPAddress of {n} bytes"),
        },
        other => format!("{other}"),
    }
}

/// Checks a tls-alpn-01 validation certificate (DER) presented for
/// `identifier` (RFC 8737 §3; RFC 8738 §6 for IP identifiers, where the SAN
/// is an iPAddress and the SNI is [`reverse_dns_name`]).
///
/// The certificate must have exactly one subjectAltName entry, equal to the
/// identifier, and exactly one acmeIdentifier extension
/// ([`ACME_IDENTIFIER_OID`]), marked critical, whose value is a DER OCTET
/// STRING holding SHA-256 of `key_authorization`.
///
/// # Errors
/// `tls` when the certificate cannot be parsed; `incorrectResponse` when it
/// breaks a rule above; `malformed` for a wildcard identifier (tls-alpn-01
/// cannot prove one); `unsupportedIdentifier` for another identifier type.
pub fn check_tls_alpn01_certificate(
    der: &[u8],
    identifier: &Identifier,
    key_authorization: &str,
) -> Result<(), AcmeError> {
    let expected = match identifier.kind.as_str() {
        "dns" if identifier.is_wildcard() => {
            return Err(AcmeError::malformed(
                "tls-alpn-01 cannot validate a wildcard identifier; use dns-01",
            ));
        }
        "dns" => ExpectedSan::Dns(identifier.value.clone()),
        "ip" => ExpectedSan::Ip(identifier.ip_addr().ok_or_else(|| {
            AcmeError::malformed(format!(
                "IP identifier {:?} is not an address",
                identifier.value
            ))
        })?),
        other => {
            return Err(AcmeError::new(
                ErrorType::UnsupportedIdentifier,
                format!("tls-alpn-01 cannot validate identifier type {other:?}"),
            ));
        }
    };

    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        AcmeError::new(
            ErrorType::Tls,
            format!("the tls-alpn-01 certificate could not be parsed: {e}"),
        )
    })?;
    if !rest.is_empty() {
        return Err(AcmeError::new(
            ErrorType::Tls,
            "the tls-alpn-01 certificate has trailing data",
        ));
    }

    let san = cert
        .subject_alternative_name()
        .map_err(|e| {
            AcmeError::incorrect_response(format!(
                "the tls-alpn-01 certificate's subjectAltName extension is invalid: {e}"
            ))
        })?
        .ok_or_else(|| {
            AcmeError::incorrect_response(
                "the tls-alpn-01 certificate has no subjectAltName extension",
            )
        })?;
    let names = &san.value.general_names;
    let [name] = names.as_slice() else {
        return Err(AcmeError::incorrect_response(format!(
            "the tls-alpn-01 certificate must have exactly one subjectAltName entry, {:?}; it has {}",
            identifier.value,
            names.len()
        )));
    };
    let san_matches = match (&expected, name) {
        (ExpectedSan::Dns(want), GeneralName::DNSName(got)) => got.eq_ignore_ascii_case(want),
        (ExpectedSan::Ip(IpAddr::V4(want)), GeneralName::IPAddress(got)) => {
            *got == want.octets().as_slice()
        }
        (ExpectedSan::Ip(IpAddr::V6(want)), GeneralName::IPAddress(got)) => {
            *got == want.octets().as_slice()
        }
        _ => false,
    };
    if !san_matches {
        return Err(AcmeError::incorrect_response(format!(
            "the tls-alpn-01 certificate's subjectAltName is {}, not the identifier {:?}",
            describe_general_name(name),
            identifier.value
        )));
    }

    let acme_extensions: Vec<_> = cert
        .extensions()
        .iter()
        .filter(|ext| ext.oid.to_id_string() == ACME_IDENTIFIER_OID)
        .collect();
    let [extension] = acme_extensions.as_slice() else {
        return Err(AcmeError::incorrect_response(format!(
            "the tls-alpn-01 certificate must have exactly one acmeIdentifier extension ({ACME_IDENTIFIER_OID}); it has {}",
            acme_extensions.len()
        )));
    };
    if !extension.critical {
        return Err(AcmeError::incorrect_response(
            "the tls-alpn-01 certificate's acmeIdentifier extension is not marked critical",
        ));
    }
    let digest = digest::digest(&digest::SHA256, key_authorization.as_bytes());
    let mut expected_value = vec![0x04, 0x20];
    expected_value.extend_from_slice(digest.as_ref());
    if extension.value != expected_value.as_slice() {
        let well_formed = extension.value.len() == 34 && extension.value.starts_with(&[0x04, 0x20]);
        return Err(AcmeError::incorrect_response(if well_formed {
            "the tls-alpn-01 certificate's acmeIdentifier digest does not match the key authorization"
        } else {
            "the tls-alpn-01 certificate's acmeIdentifier value is not a DER OCTET STRING holding a SHA-256 digest"
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};

    const KEY_AUTHZ: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn sha256(text: &str) -> Vec<u8> {
        digest::digest(&digest::SHA256, text.as_bytes())
            .as_ref()
            .to_vec()
    }

    fn cert(sans: Vec<SanType>, extensions: Vec<CustomExtension>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.custom_extensions = extensions;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns_san(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    #[test]
    fn key_authorization_and_dns01() {
        let ka = key_authorization(
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
        );
        assert_eq!(ka, KEY_AUTHZ);
        let txt = dns01_txt_value(&ka);
        assert_eq!(txt, b64url_encode(sha256(&ka)));
        assert_eq!(txt.len(), 43);
        assert_eq!(
            dns01_record_name("example.org"),
            "_acme-challenge.example.org"
        );
    }

    #[test]
    fn http01_body() {
        assert!(http01_response_matches(KEY_AUTHZ.as_bytes(), KEY_AUTHZ));
        assert!(http01_response_matches(
            format!("{KEY_AUTHZ}\r\n").as_bytes(),
            KEY_AUTHZ
        ));
        assert!(!http01_response_matches(
            format!(" {KEY_AUTHZ}").as_bytes(),
            KEY_AUTHZ
        ));
        assert!(!http01_response_matches(b"", KEY_AUTHZ));
    }

    #[test]
    fn tokens() {
        let token = new_token(&[0xff; 32]);
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, new_token(&[0; 32]));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_dns_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_dns_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn tls_alpn01_good_dns() {
        let der = cert(
            vec![dns_san("example.com")],
            vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
        );
        check_tls_alpn01_certificate(&der, &Identifier::dns("example.com"), KEY_AUTHZ).unwrap();
    }

    #[test]
    fn tls_alpn01_good_ip() {
        for ip in ["192.0.2.1", "2001:db8::1"] {
            let addr: IpAddr = ip.parse().unwrap();
            let der = cert(
                vec![SanType::IpAddress(addr)],
                vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
            );
            check_tls_alpn01_certificate(&der, &Identifier::ip(addr), KEY_AUTHZ).unwrap();
            // A dNSName of the address text is not an iPAddress SAN.
            let wrong = cert(
                vec![dns_san(&reverse_dns_name(addr))],
                vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
            );
            let e =
                check_tls_alpn01_certificate(&wrong, &Identifier::ip(addr), KEY_AUTHZ).unwrap_err();
            assert_eq!(e.kind, ErrorType::IncorrectResponse);
        }
    }

    #[test]
    fn tls_alpn01_failures() {
        let id = Identifier::dns("example.com");
        let check = |der: &[u8]| check_tls_alpn01_certificate(der, &id, KEY_AUTHZ).unwrap_err();

        // Wrong digest.
        let der = cert(
            vec![dns_san("example.com")],
            vec![CustomExtension::new_acme_identifier(&sha256("other"))],
        );
        let e = check(&der);
        assert_eq!(e.kind, ErrorType::IncorrectResponse);
        assert!(e.detail.contains("does not match"), "{e}");

        // Wrong name.
        let der = cert(
            vec![dns_san("example.org")],
            vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
        );
        let e = check(&der);
        assert_eq!(e.kind, ErrorType::IncorrectResponse);
        assert!(e.detail.contains("example.org"), "{e}");

        // Two names.
        let der = cert(
            vec![dns_san("example.com"), dns_san("www.example.com")],
            vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
        );
        assert!(check(&der).detail.contains("exactly one subjectAltName"));

        // No acmeIdentifier extension.
        let der = cert(vec![dns_san("example.com")], vec![]);
        assert!(check(&der).detail.contains("acmeIdentifier"));

        // Not critical.
        let mut ext = CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ));
        ext.set_criticality(false);
        let der = cert(vec![dns_san("example.com")], vec![ext]);
        assert!(check(&der).detail.contains("critical"));

        // Raw digest without the OCTET STRING wrapper.
        let oid = [1, 3, 6, 1, 5, 5, 7, 1, 31];
        let mut ext = CustomExtension::from_oid_content(&oid, sha256(KEY_AUTHZ));
        ext.set_criticality(true);
        let der = cert(vec![dns_san("example.com")], vec![ext]);
        assert!(check(&der).detail.contains("OCTET STRING"));

        // Unparsable.
        assert_eq!(check(b"\x30\x03junk").kind, ErrorType::Tls);

        // Wildcards and other types are refused.
        let der = cert(
            vec![dns_san("example.com")],
            vec![CustomExtension::new_acme_identifier(&sha256(KEY_AUTHZ))],
        );
        assert_eq!(
            check_tls_alpn01_certificate(&der, &Identifier::dns("*.example.com"), KEY_AUTHZ)
                .unwrap_err()
                .kind,
            ErrorType::Malformed
        );
        assert_eq!(
            check_tls_alpn01_certificate(&der, &Identifier::new("email", "a@b.c"), KEY_AUTHZ)
                .unwrap_err()
                .kind,
            ErrorType::UnsupportedIdentifier
        );
    }
}
