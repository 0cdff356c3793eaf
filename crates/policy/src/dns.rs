//! DNS names (from requests) and DNS patterns (from configuration).
//!
//! Names are compared label by label after normalisation, never as plain
//! strings, so `.example.com` can never admit `badexample.com`.

use std::borrow::Cow;
use std::fmt;

use idna::punycode;

use crate::error::PolicyError;

/// Longest DNS name, in octets, without the trailing dot.
const MAX_NAME_OCTETS: usize = 253;
/// Longest DNS label, in octets.
const MAX_LABEL_OCTETS: usize = 63;
/// Prefix marking a punycode-encoded (A-)label.
const A_LABEL_PREFIX: &str = "xn--";

/// Normalises a requested DNS name: ASCII-lowercases it and strips one
/// trailing dot, after checking it is a valid host name.
///
/// A wildcard is accepted only as the whole leftmost label followed by at
/// least two labels (`*.example.com`). Non-ASCII input is refused: send
/// the punycode (`xn--`) form, whose labels must be canonical A-labels.
pub fn normalize_dns_name(name: &str) -> Result<String, PolicyError> {
    parse_requested_dns_name(name)
        .map(|parsed| parsed.to_string())
        .map_err(|reason| PolicyError::InvalidDnsName {
            name: name.to_owned(),
            reason,
        })
}

/// A validated, lower-case DNS name from a request, possibly a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsName {
    /// The labels left to right, not including a wildcard label.
    labels: Vec<String>,
    /// Whether the name is `*.` followed by `labels`.
    wildcard: bool,
}

impl DnsName {
    /// Whether the name is a wildcard (`*.example.com`).
    pub(crate) fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The name without its `*.` wildcard label, e.g. `foo.example.com`.
    pub(crate) fn without_wildcard(&self) -> String {
        self.labels.join(".")
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.without_wildcard())
    }
}

/// A validated DNS pattern from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DnsPattern {
    /// `*`: any valid name.
    Any,
    /// `example.com`: exactly that name.
    Exact(Vec<String>),
    /// `.example.com`: any name strictly below, at any depth.
    Below(Vec<String>),
    /// `*.example.com`: any name exactly one label below.
    OneBelow(Vec<String>),
}

impl DnsPattern {
    /// Parses and normalises a configured pattern; Unicode is converted to
    /// A-labels. The error is a reason fit for [`PolicyError::InvalidPattern`].
    pub(crate) fn parse(written: &str) -> Result<Self, String> {
        if written == "*" {
            return Ok(DnsPattern::Any);
        }
        if let Some(domain) = written.strip_prefix("*.") {
            return parse_configured_domain(domain).map(DnsPattern::OneBelow);
        }
        if let Some(domain) = written.strip_prefix('.') {
            return parse_configured_domain(domain).map(DnsPattern::Below);
        }
        parse_configured_domain(written).map(DnsPattern::Exact)
    }

    /// Whether the pattern admits every name `name` stands for (for a
    /// wildcard, every possible leftmost label). Used for allow lists.
    pub(crate) fn covers(&self, name: &DnsName) -> bool {
        if !name.wildcard {
            return self.matches_plain(&name.labels);
        }
        let base = &name.labels;
        match self {
            DnsPattern::Any => true,
            DnsPattern::Exact(_) => false,
            DnsPattern::Below(domain) => base.ends_with(domain),
            DnsPattern::OneBelow(domain) => base == domain,
        }
    }

    /// Whether the pattern admits at least one name `name` stands for.
    /// Used for deny lists, so a deny touching any name under a wildcard
    /// denies the wildcard.
    pub(crate) fn overlaps(&self, name: &DnsName) -> bool {
        if !name.wildcard {
            return self.matches_plain(&name.labels);
        }
        let base = &name.labels;
        match self {
            DnsPattern::Any => true,
            DnsPattern::Exact(exact) => exact.len() == base.len() + 1 && exact.ends_with(base),
            DnsPattern::Below(domain) => base.ends_with(domain),
            DnsPattern::OneBelow(domain) => base == domain,
        }
    }

    fn matches_plain(&self, labels: &[String]) -> bool {
        match self {
            DnsPattern::Any => true,
            DnsPattern::Exact(exact) => labels == exact.as_slice(),
            DnsPattern::Below(domain) => labels.len() > domain.len() && labels.ends_with(domain),
            DnsPattern::OneBelow(domain) => {
                labels.len() == domain.len() + 1 && labels.ends_with(domain)
            }
        }
    }
}

/// Parses a DNS name from a request: ASCII only, wildcard allowed.
/// The error is a reason fit for a denial.
pub(crate) fn parse_requested_dns_name(input: &str) -> Result<DnsName, String> {
    if !input.is_ascii() {
        return Err(non_ascii_reason(input));
    }
    parse_ascii_name(input, WildcardRule::LeftmostLabel)
}

/// Parses the domain of a requested email address: ASCII only, no wildcard.
pub(crate) fn parse_requested_domain(input: &str) -> Result<Vec<String>, String> {
    if !input.is_ascii() {
        return Err(non_ascii_reason(input));
    }
    parse_ascii_name(
        input,
        WildcardRule::Refused("'*' is not allowed in an email domain; give the full domain"),
    )
    .map(|name| name.labels)
}

/// Parses a domain from configuration: Unicode is converted to A-labels,
/// no wildcard.
pub(crate) fn parse_configured_domain(input: &str) -> Result<Vec<String>, String> {
    let ascii = if input.is_ascii() {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(idna::domain_to_ascii(input).map_err(|_| {
            "it contains characters that cannot be converted to punycode (IDNA); \
             check the spelling or write the xn-- form"
                .to_owned()
        })?)
    };
    parse_ascii_name(
        &ascii,
        WildcardRule::Refused(
            "'*' may only be the whole pattern \"*\" or a leading \"*.\" label, \
             as in \"*.example.com\"",
        ),
    )
    .map(|name| name.labels)
}

/// Where, if anywhere, a `*` may appear in a name.
#[derive(Debug, Clone, Copy)]
enum WildcardRule {
    /// As the whole leftmost label, followed by at least two labels.
    LeftmostLabel,
    /// Nowhere; the text is the reason given.
    Refused(&'static str),
}

fn non_ascii_reason(input: &str) -> String {
    match idna::domain_to_ascii(input) {
        Ok(ascii) if !ascii.is_empty() => format!(
            "it contains non-ASCII characters; send the punycode (xn--) form instead, e.g. {ascii:?}"
        ),
        _ => "it contains non-ASCII characters; send the punycode (xn--) form instead".to_owned(),
    }
}

fn parse_ascii_name(input: &str, wildcard_rule: WildcardRule) -> Result<DnsName, String> {
    let lower = input.to_ascii_lowercase();
    let body = lower.strip_suffix('.').unwrap_or(&lower);
    if body.is_empty() {
        return Err("the name is empty; give a host name such as \"www.example.com\"".to_owned());
    }
    if body.len() > MAX_NAME_OCTETS {
        return Err(format!(
            "the name is {} octets long, the maximum is {MAX_NAME_OCTETS}; use a shorter name",
            body.len()
        ));
    }
    let mut labels: Vec<&str> = body.split('.').collect();
    let wildcard = check_wildcard(&labels, wildcard_rule)?;
    if wildcard {
        labels.remove(0);
    }
    for label in &labels {
        check_label(label)?;
    }
    Ok(DnsName {
        labels: labels.into_iter().map(str::to_owned).collect(),
        wildcard,
    })
}

/// Returns whether the name is a valid wildcard, or why its `*` is misplaced.
fn check_wildcard(labels: &[&str], wildcard_rule: WildcardRule) -> Result<bool, String> {
    if !labels.iter().any(|label| label.contains('*')) {
        return Ok(false);
    }
    match wildcard_rule {
        WildcardRule::Refused(reason) => Err(reason.to_owned()),
        WildcardRule::LeftmostLabel => check_leftmost_wildcard(labels).map(|()| true),
    }
}

fn check_leftmost_wildcard(labels: &[&str]) -> Result<(), String> {
    if let Some(partial) = labels
        .iter()
        .find(|label| label.contains('*') && **label != "*")
    {
        return Err(format!(
            "label {partial:?} is a partial-label wildcard; only a whole leftmost \"*\" label \
             is allowed, as in \"*.example.com\""
        ));
    }
    if labels.iter().skip(1).any(|label| *label == "*") {
        return Err(
            "only the leftmost label may be the wildcard \"*\", and only once, \
             as in \"*.example.com\""
                .to_owned(),
        );
    }
    if labels.len() < 3 {
        return Err(
            "a wildcard must be followed by at least two labels, as in \"*.example.com\""
                .to_owned(),
        );
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(
            "it contains an empty label (a leading dot or two dots in a row); remove the extra dot"
                .to_owned(),
        );
    }
    if label.len() > MAX_LABEL_OCTETS {
        return Err(format!(
            "label {label:?} is {} octets long, the maximum is {MAX_LABEL_OCTETS}; use a shorter label",
            label.len()
        ));
    }
    if label.contains('_') {
        return Err(format!(
            "label {label:?} contains an underscore, which host names may not contain; use a hyphen instead"
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "label {label:?} contains {bad:?}; host names may only contain letters, digits and hyphens"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "label {label:?} starts or ends with a hyphen; remove or move the hyphen"
        ));
    }
    check_a_label(label)
}

/// A label starting with `xn--` must be a canonical punycode A-label.
fn check_a_label(label: &str) -> Result<(), String> {
    let Some(encoded) = label.strip_prefix(A_LABEL_PREFIX) else {
        return Ok(());
    };
    let Some(decoded) = punycode::decode_to_string(encoded) else {
        return Err(format!(
            "label {label:?} starts with \"xn--\" but is not valid punycode; \
             send the A-label produced by an IDNA library"
        ));
    };
    if decoded.is_ascii() {
        return Err(format!(
            "label {label:?} starts with \"xn--\" but encodes no non-ASCII characters; \
             write the plain ASCII label instead"
        ));
    }
    if punycode::encode_str(&decoded).as_deref() != Some(encoded) {
        return Err(format!(
            "label {label:?} is not canonical punycode (it does not re-encode to itself); \
             send the A-label produced by an IDNA library"
        ));
    }
    match idna::domain_to_ascii(&decoded) {
        Ok(reencoded) if reencoded == label => Ok(()),
        _ => Err(format!(
            "label {label:?} decodes to {decoded:?}, which is not a valid internationalised label; \
             send the A-label produced by an IDNA library"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> DnsName {
        parse_requested_dns_name(text).unwrap()
    }

    fn pattern(text: &str) -> DnsPattern {
        DnsPattern::parse(text).unwrap()
    }

    #[test]
    fn normalisation_lowercases_and_strips_one_trailing_dot() {
        assert_eq!(
            normalize_dns_name("WWW.Example.COM").unwrap(),
            "www.example.com"
        );
        assert_eq!(
            normalize_dns_name("www.example.com.").unwrap(),
            "www.example.com"
        );
        assert!(normalize_dns_name("www.example.com..").is_err());
        assert_eq!(normalize_dns_name("localhost").unwrap(), "localhost");
        assert_eq!(
            normalize_dns_name("*.Example.com").unwrap(),
            "*.example.com"
        );
    }

    #[test]
    fn normalisation_refuses_malformed_names() {
        let cases = [
            ("", "empty"),
            (".", "empty"),
            ("a..b", "empty label"),
            (".example.com", "empty label"),
            ("my_host.example.com", "underscore"),
            ("-a.example.com", "hyphen"),
            ("a-.example.com", "hyphen"),
            ("a b.example.com", "letters, digits and hyphens"),
            ("a/b.example.com", "letters, digits and hyphens"),
        ];
        for (input, expected) in cases {
            let error = normalize_dns_name(input).unwrap_err().to_string();
            assert!(error.contains(expected), "{input:?}: {error}");
        }
    }

    #[test]
    fn normalisation_enforces_length_limits() {
        let label63 = "a".repeat(63);
        assert!(normalize_dns_name(&format!("{label63}.com")).is_ok());
        let error = normalize_dns_name(&format!("{}.com", "a".repeat(64)))
            .unwrap_err()
            .to_string();
        assert!(error.contains("maximum is 63"), "{error}");

        let name253 = [label63.as_str(); 4].join(".")[..253].to_owned();
        assert_eq!(name253.len(), 253);
        assert!(normalize_dns_name(&name253).is_ok());
        assert!(normalize_dns_name(&format!("{name253}.")).is_ok());
        let error = normalize_dns_name(&format!("a{name253}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("maximum is 253"), "{error}");
    }

    #[test]
    fn requests_must_use_punycode() {
        let error = normalize_dns_name("bücher.example")
            .unwrap_err()
            .to_string();
        assert!(error.contains("punycode (xn--)"), "{error}");
        assert!(error.contains("xn--bcher-kva.example"), "{error}");
        assert_eq!(
            normalize_dns_name("XN--BCHER-KVA.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn a_labels_must_be_valid_and_canonical() {
        for bad in [
            "xn--.example",
            "xn--abc.example",
            "xn--a.example",
            "xn--zzzzzzzzzzzz9.example",
            "xn--bcher-kva9.example",
        ] {
            let result = normalize_dns_name(bad);
            assert!(result.is_err(), "{bad:?} was accepted: {result:?}");
        }
        // The punycode of pure ASCII ("abc") ends in a hyphen, which LDH refuses.
        assert!(normalize_dns_name("xn--abc-.example").is_err());
    }

    #[test]
    fn wildcard_names() {
        assert!(name("*.example.com").is_wildcard());
        for (bad, expected) in [
            ("*.com", "at least two labels"),
            ("*", "at least two labels"),
            ("*.*.example.com", "only the leftmost"),
            ("foo.*.example.com", "only the leftmost"),
            ("f*.example.com", "partial-label"),
            ("*foo.example.com", "partial-label"),
        ] {
            let error = normalize_dns_name(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
    }

    #[test]
    fn pattern_forms() {
        assert_eq!(pattern("*"), DnsPattern::Any);
        assert_eq!(
            pattern("Example.COM."),
            DnsPattern::Exact(vec!["example".into(), "com".into()])
        );
        assert_eq!(
            pattern(".example.com"),
            DnsPattern::Below(vec!["example".into(), "com".into()])
        );
        assert_eq!(
            pattern("*.example.com"),
            DnsPattern::OneBelow(vec!["example".into(), "com".into()])
        );
        assert_eq!(
            pattern("bücher.example"),
            DnsPattern::Exact(vec!["xn--bcher-kva".into(), "example".into()])
        );
        for bad in [
            "",
            ".",
            "*.",
            "..example.com",
            "**",
            "*.*.example.com",
            "a*.example.com",
            ".*.example.com",
            "ex ample.com",
            "a_b.com",
        ] {
            assert!(DnsPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn exact_pattern_matches_only_that_name() {
        let exact = pattern("example.com");
        assert!(exact.covers(&name("example.com")));
        assert!(exact.covers(&name("EXAMPLE.com.")));
        for other in [
            "www.example.com",
            "badexample.com",
            "example.com.evil",
            "example.company",
        ] {
            assert!(!exact.covers(&name(other)), "{other}");
        }
    }

    #[test]
    fn below_pattern_matches_any_depth_but_not_itself() {
        let below = pattern(".example.com");
        assert!(below.covers(&name("a.example.com")));
        assert!(below.covers(&name("a.b.c.example.com")));
        for other in [
            "example.com",
            "badexample.com",
            "a.badexample.com",
            "example.com.evil",
            "example.company",
        ] {
            assert!(!below.covers(&name(other)), "{other}");
        }
    }

    #[test]
    fn one_below_pattern_matches_one_level() {
        let one = pattern("*.example.com");
        assert!(one.covers(&name("a.example.com")));
        assert!(!one.covers(&name("a.b.example.com")));
        assert!(!one.covers(&name("example.com")));
        assert!(!one.covers(&name("a.badexample.com")));
    }

    #[test]
    fn wildcard_requests_need_full_coverage_to_be_allowed() {
        let wildcard = name("*.foo.example.com");
        assert!(pattern("*").covers(&wildcard));
        assert!(pattern(".example.com").covers(&wildcard));
        assert!(pattern(".foo.example.com").covers(&wildcard));
        assert!(pattern("*.foo.example.com").covers(&wildcard));
        assert!(!pattern("foo.example.com").covers(&wildcard));
        assert!(!pattern("*.example.com").covers(&wildcard));
        assert!(!pattern("a.foo.example.com").covers(&wildcard));
        assert!(!pattern(".bar.example.com").covers(&wildcard));
    }

    #[test]
    fn wildcard_requests_are_denied_by_any_overlap() {
        let wildcard = name("*.foo.example.com");
        assert!(pattern("secret.foo.example.com").overlaps(&wildcard));
        assert!(pattern(".example.com").overlaps(&wildcard));
        assert!(pattern("*.foo.example.com").overlaps(&wildcard));
        assert!(pattern("*").overlaps(&wildcard));
        assert!(!pattern("foo.example.com").overlaps(&wildcard));
        assert!(!pattern("a.b.foo.example.com").overlaps(&wildcard));
        assert!(!pattern(".a.foo.example.com").overlaps(&wildcard));
        assert!(!pattern("*.example.com").overlaps(&wildcard));
        assert!(!pattern("secret.bar.example.com").overlaps(&wildcard));
    }
}
