//! ACME identifiers: `dns` (RFC 8555 §9.7.7) and `ip` (RFC 8738).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{AcmeError, ErrorType};

/// Longest DNS name, in octets, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, in octets.
const MAX_LABEL_LEN: usize = 63;

/// An ACME identifier: `{"type": "dns" | "ip", "value": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// The identifier type, `"dns"` or `"ip"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name or address.
    pub value: String,
}

impl Identifier {
    /// An identifier of `kind` with `value`, as given (not yet validated).
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// A `dns` identifier, as given (not yet validated).
    pub fn dns(value: impl Into<String>) -> Self {
        Self::new("dns", value)
    }

    /// An `ip` identifier for `ip`, in canonical form.
    pub fn ip(ip: IpAddr) -> Self {
        Self::new("ip", ip.to_string())
    }

    /// Validates and canonicalises the identifier.
    ///
    /// - `dns`: lower-cased, one trailing dot removed; each label is 1-63
    ///   letters, digits and hyphens, not starting or ending with a hyphen;
    ///   at most 253 octets; at least two labels; the last label not all
    ///   digits; optionally a leading `*.` wildcard (leftmost, whole label
    ///   only). Names must be ASCII (IDNs in A-label form). An IP address
    ///   given as `dns` is rejected.
    /// - `ip`: an IPv4 or IPv6 address, re-rendered canonically (RFC 5952
    ///   for IPv6).
    ///
    /// # Errors
    /// `unsupportedIdentifier` for another type; `rejectedIdentifier`, with
    /// the value in the detail, for an invalid value.
    pub fn normalized(&self) -> Result<Identifier, AcmeError> {
        match self.kind.as_str() {
            "dns" => normalize_dns(&self.value).map(|value| Identifier::new("dns", value)),
            "ip" => normalize_ip(&self.value).map(|value| Identifier::new("ip", value)),
            other => Err(AcmeError::new(
                ErrorType::UnsupportedIdentifier,
                format!("identifier type {other:?} is not supported; use \"dns\" or \"ip\""),
            )),
        }
    }

    /// Whether this is a `dns` identifier with a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.kind == "dns" && self.value.starts_with("*.")
    }

    /// The identifier without its `*.` wildcard label, as used for
    /// authorizations (RFC 8555 §7.1.3: the authorization names the base
    /// domain and sets `"wildcard": true`). Non-wildcards are returned as is.
    pub fn base(&self) -> Identifier {
        match self.value.strip_prefix("*.") {
            Some(base) if self.kind == "dns" => Identifier::new("dns", base),
            _ => self.clone(),
        }
    }

    /// A stable lookup key, e.g. `"dns:example.com"` or `"ip:192.0.2.1"`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }

    /// The address of an `ip` identifier.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        if self.kind == "ip" {
            self.value.parse().ok()
        } else {
            None
        }
    }
}

fn rejected(value: &str, why: &str) -> AcmeError {
    AcmeError::rejected_identifier(format!("invalid DNS identifier {value:?}: {why}"))
}

fn normalize_dns(value: &str) -> Result<String, AcmeError> {
    if value.is_empty() {
        return Err(rejected(value, "empty name"));
    }
    if !value.is_ascii() {
        return Err(rejected(
            value,
            "non-ASCII name; send internationalized names in A-label (xn--) form",
        ));
    }
    let ip_candidate = value.trim_start_matches('[').trim_end_matches(']');
    if ip_candidate.parse::<IpAddr>().is_ok() {
        return Err(AcmeError::rejected_identifier(format!(
            "{value:?} is an IP address; request it with identifier type \"ip\""
        )));
    }
    let lower = value.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(base) => (true, base),
        None => (false, name),
    };
    if base.contains('*') {
        return Err(rejected(
            value,
            "a wildcard may only be the whole leftmost label (\"*.example.com\")",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(rejected(
            value,
            &format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    let labels: Vec<&str> = base.split('.').collect();
    if labels.len() < 2 {
        return Err(rejected(
            value,
            "needs at least two labels (a registered domain, not a bare TLD or host name)",
        ));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(rejected(value, "empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(rejected(
                value,
                &format!("label {label:?} is longer than {MAX_LABEL_LEN} characters"),
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(rejected(
                value,
                &format!("label {label:?} has characters other than letters, digits and hyphens"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(rejected(
                value,
                &format!("label {label:?} starts or ends with a hyphen"),
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(rejected(value, "the top-level label is all digits"));
    }
    Ok(if wildcard {
        format!("*.{base}")
    } else {
        base.to_owned()
    })
}

fn normalize_ip(value: &str) -> Result<String, AcmeError> {
    value
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| {
            AcmeError::rejected_identifier(format!(
                "invalid IP identifier {value:?}: not an IPv4 or IPv6 address (no brackets, zones or prefixes)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(value: &str) -> Result<String, ErrorType> {
        Identifier::dns(value)
            .normalized()
            .map(|i| i.value)
            .map_err(|e| e.kind)
    }

    fn ip(value: &str) -> Result<String, ErrorType> {
        Identifier::new("ip", value)
            .normalized()
            .map(|i| i.value)
            .map_err(|e| e.kind)
    }

    #[test]
    fn dns_table() {
        let ok = [
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("*.example.com", "*.example.com"),
            ("*.Example.com.", "*.example.com"),
            ("a-b.c1.example", "a-b.c1.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("123.example.com", "123.example.com"),
        ];
        for (input, want) in ok {
            assert_eq!(dns(input).as_deref(), Ok(want), "{input}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let max_label = format!("{}.com", "a".repeat(63));
        assert!(dns(&max_label).is_ok());
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(long_name.len() > 253);
        let bad = [
            "",
            ".",
            "com",
            "*.com",
            "*",
            "example..com",
            ".example.com",
            "example.com..",
            "-example.com",
            "example-.com",
            "ex_ample.com",
            "ex ample.com",
            "**.example.com",
            "*.*.example.com",
            "foo.*.example.com",
            "*example.com",
            "f*o.example.com",
            "example.*",
            "bücher.example",
            "192.0.2.1",
            "[2001:db8::1]",
            "2001:db8::1",
            "1.2.3.4.5",
            "example.123",
            long_label.as_str(),
            long_name.as_str(),
        ];
        for input in bad {
            assert_eq!(dns(input), Err(ErrorType::RejectedIdentifier), "{input:?}");
        }
        let e = Identifier::dns("ex_ample.com").normalized().unwrap_err();
        assert!(e.detail.contains("ex_ample.com"), "{e}");
    }

    #[test]
    fn ip_table() {
        let ok = [
            ("192.0.2.1", "192.0.2.1"),
            ("2001:DB8::1", "2001:db8::1"),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8::0:1", "2001:db8::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ];
        for (input, want) in ok {
            assert_eq!(ip(input).as_deref(), Ok(want), "{input}");
        }
        for input in [
            "",
            "example.com",
            "192.0.2",
            "192.0.2.256",
            "192.000.2.1",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "192.0.2.0/24",
            " 192.0.2.1",
        ] {
            assert_eq!(ip(input), Err(ErrorType::RejectedIdentifier), "{input:?}");
        }
    }

    #[test]
    fn unsupported_type() {
        for kind in ["email", "DNS", ""] {
            assert_eq!(
                Identifier::new(kind, "example.com")
                    .normalized()
                    .unwrap_err()
                    .kind,
                ErrorType::UnsupportedIdentifier
            );
        }
    }

    #[test]
    fn wildcard_base_key() {
        let id = Identifier::dns("*.example.com");
        assert!(id.is_wildcard());
        assert_eq!(id.base(), Identifier::dns("example.com"));
        assert!(!id.base().is_wildcard());
        assert_eq!(id.key(), "dns:*.example.com");
        let ipid = Identifier::ip("2001:db8::1".parse().unwrap());
        assert!(!ipid.is_wildcard());
        assert_eq!(ipid.base(), ipid);
        assert_eq!(ipid.key(), "ip:2001:db8::1");
        assert_eq!(ipid.ip_addr(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(id.ip_addr(), None);
    }

    #[test]
    fn serde_shape() {
        let id: Identifier =
            serde_json::from_str(r#"{"type":"dns","value":"example.com"}"#).unwrap();
        assert_eq!(id, Identifier::dns("example.com"));
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#"{"type":"dns","value":"example.com"}"#
        );
    }
}
