//! Email addresses (from requests) and email patterns (from configuration).
//!
//! The domain is normalised like a DNS name; the local part is compared
//! exactly (it is case-sensitive).

use crate::dns::{parse_configured_domain, parse_requested_domain};

/// Longest local part (before the `@`), in octets.
const MAX_LOCAL_PART_OCTETS: usize = 64;

/// A validated email address from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmailAddress {
    local_part: String,
    domain: Vec<String>,
}

/// A validated email pattern from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EmailPattern {
    /// `*`: any valid address.
    Any,
    /// `user@example.com`: exactly that address.
    Address {
        local_part: String,
        domain: Vec<String>,
    },
    /// `example.com`: any address at that domain.
    AtDomain(Vec<String>),
    /// `.example.com`: any address at a domain strictly below it.
    BelowDomain(Vec<String>),
}

impl EmailPattern {
    /// Parses a configured pattern. The error is a reason fit for
    /// [`PolicyError::InvalidPattern`](crate::PolicyError::InvalidPattern).
    pub(crate) fn parse(written: &str) -> Result<Self, String> {
        if written == "*" {
            return Ok(EmailPattern::Any);
        }
        if written.contains('@') {
            let (local_part, domain) = split_address(written)?;
            check_local_part(local_part)?;
            return Ok(EmailPattern::Address {
                local_part: local_part.to_owned(),
                domain: parse_configured_domain(domain)?,
            });
        }
        if let Some(domain) = written.strip_prefix('.') {
            return parse_configured_domain(domain).map(EmailPattern::BelowDomain);
        }
        parse_configured_domain(written).map(EmailPattern::AtDomain)
    }

    /// Whether the pattern admits `address`.
    pub(crate) fn matches(&self, address: &EmailAddress) -> bool {
        match self {
            EmailPattern::Any => true,
            EmailPattern::Address { local_part, domain } => {
                address.local_part == *local_part && address.domain == *domain
            }
            EmailPattern::AtDomain(domain) => address.domain == *domain,
            EmailPattern::BelowDomain(domain) => {
                address.domain.len() > domain.len() && address.domain.ends_with(domain)
            }
        }
    }
}

/// Parses an email address from a request. The error is a reason fit for
/// a denial.
pub(crate) fn parse_requested_email(address: &str) -> Result<EmailAddress, String> {
    let (local_part, domain) = split_address(address)?;
    check_local_part(local_part)?;
    let domain = parse_requested_domain(domain)
        .map_err(|reason| format!("its domain is invalid: {reason}"))?;
    Ok(EmailAddress {
        local_part: local_part.to_owned(),
        domain,
    })
}

fn split_address(address: &str) -> Result<(&str, &str), String> {
    let at_signs = address.matches('@').count();
    if at_signs != 1 {
        return Err(format!(
            "it must contain exactly one '@' (found {at_signs}); write it as local@domain"
        ));
    }
    match address.split_once('@') {
        Some((local_part, domain)) if !local_part.is_empty() && !domain.is_empty() => {
            Ok((local_part, domain))
        }
        _ => Err("both sides of the '@' must be non-empty; write it as local@domain".to_owned()),
    }
}

fn check_local_part(local_part: &str) -> Result<(), String> {
    if let Some(bad) = local_part
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(format!(
            "its local part contains {bad:?}; only printable ASCII is allowed before the '@'"
        ));
    }
    if local_part.len() > MAX_LOCAL_PART_OCTETS {
        return Err(format!(
            "its local part is {} octets long, the maximum is {MAX_LOCAL_PART_OCTETS}; use a shorter address",
            local_part.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(pattern: &str, address: &str) -> bool {
        let address = parse_requested_email(address).unwrap();
        EmailPattern::parse(pattern).unwrap().matches(&address)
    }

    #[test]
    fn pattern_forms() {
        assert!(admits("*", "anyone@anywhere.example"));
        assert!(admits("user@example.com", "user@EXAMPLE.com."));
        assert!(!admits("user@example.com", "User@example.com"));
        assert!(!admits("user@example.com", "other@example.com"));
        assert!(admits("example.com", "anyone@example.com"));
        assert!(!admits("example.com", "anyone@mail.example.com"));
        assert!(!admits("example.com", "anyone@badexample.com"));
        assert!(admits(".example.com", "anyone@mail.example.com"));
        assert!(admits(".example.com", "anyone@a.b.example.com"));
        assert!(!admits(".example.com", "anyone@example.com"));
        assert!(!admits(".example.com", "anyone@example.com.evil"));
        assert!(admits("bücher.example", "a@xn--bcher-kva.example"));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for (bad, expected) in [
            ("no-at-sign.example.com", "exactly one '@'"),
            ("a@b@example.com", "exactly one '@'"),
            ("@example.com", "non-empty"),
            ("user@", "non-empty"),
            ("us er@example.com", "local part"),
            ("usér@example.com", "local part"),
            ("user@exa_mple.com", "underscore"),
            ("user@*.example.com", "'*'"),
            ("user@bücher.example", "punycode"),
        ] {
            let error = parse_requested_email(bad).unwrap_err();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(parse_requested_email(&long_local).is_err());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            "@example.com",
            "a@",
            "a@b@c",
            "*.example.com",
            "a b@example.com",
            "..",
        ] {
            assert!(EmailPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
