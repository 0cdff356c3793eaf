//! URIs (from requests) and URI patterns (from configuration).
//!
//! Parsing is deliberately minimal: a scheme, a colon, ASCII only, no
//! whitespace or control characters, and no `.`/`..` path segments. The
//! scheme is always compared case-insensitively; for `spiffe`, `http` and
//! `https` the authority (host part) is too. Paths are case-sensitive.

/// Schemes whose authority is compared case-insensitively.
const CASE_INSENSITIVE_AUTHORITY_SCHEMES: [&str; 3] = ["spiffe", "http", "https"];

/// A validated URI pattern from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UriPattern {
    /// `*`: any valid URI.
    Any,
    /// A URI that must match exactly (after normalisation).
    Exact(String),
    /// A normalised prefix (the pattern without its trailing `*`).
    Prefix(String),
}

impl UriPattern {
    /// Parses a configured pattern. The error is a reason fit for
    /// [`PolicyError::InvalidPattern`](crate::PolicyError::InvalidPattern).
    pub(crate) fn parse(written: &str) -> Result<Self, String> {
        if written == "*" {
            return Ok(UriPattern::Any);
        }
        let Some(prefix) = written.strip_suffix('*') else {
            return normalize_uri(written, Form::Complete).map(UriPattern::Exact);
        };
        let prefix = normalize_uri(prefix, Form::Prefix)?;
        check_prefix_boundary(&prefix)?;
        Ok(UriPattern::Prefix(prefix))
    }

    /// Whether the pattern admits `uri`, which must come from [`normalize_requested_uri`].
    pub(crate) fn matches(&self, uri: &str) -> bool {
        match self {
            UriPattern::Any => true,
            UriPattern::Exact(exact) => uri == exact,
            UriPattern::Prefix(prefix) => uri.starts_with(prefix.as_str()),
        }
    }
}

/// Validates and normalises a URI from a request. The error is a reason
/// fit for a denial.
pub(crate) fn normalize_requested_uri(uri: &str) -> Result<String, String> {
    normalize_uri(uri, Form::Complete)
}

/// Whether text is a whole URI or the start of one (a prefix pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Complete,
    Prefix,
}

/// The pieces of a URI this module cares about, borrowed from the input.
struct UriParts<'a> {
    scheme: &'a str,
    /// The authority, when the URI has `//` after the scheme.
    authority: Option<&'a str>,
    /// Everything after the authority (or after the scheme's colon).
    rest: &'a str,
}

fn normalize_uri(uri: &str, form: Form) -> Result<String, String> {
    if uri.is_empty() {
        return Err(
            "the URI is empty; give a URI such as \"spiffe://example.org/workload\"".to_owned(),
        );
    }
    if let Some(bad) = uri.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "it contains whitespace or a control character ({bad:?}); percent-encode it"
        ));
    }
    if !uri.is_ascii() {
        return Err(
            "it contains non-ASCII characters, which certificate URIs cannot hold; percent-encode them"
                .to_owned(),
        );
    }
    let parts = split_uri(uri)?;
    let scheme = parts.scheme.to_ascii_lowercase();
    let authority = parts.authority.map(|authority| {
        if CASE_INSENSITIVE_AUTHORITY_SCHEMES.contains(&scheme.as_str()) {
            authority.to_ascii_lowercase()
        } else {
            authority.to_owned()
        }
    });
    if form == Form::Complete
        && CASE_INSENSITIVE_AUTHORITY_SCHEMES.contains(&scheme.as_str())
        && authority.as_deref().is_none_or(str::is_empty)
    {
        return Err(format!(
            "a {scheme} URI needs a host, as in \"{scheme}://example.org/path\""
        ));
    }
    check_dot_segments(parts.rest, form)?;

    let mut normalized = scheme;
    normalized.push(':');
    if let Some(authority) = authority {
        normalized.push_str("//");
        normalized.push_str(&authority);
    }
    normalized.push_str(parts.rest);
    Ok(normalized)
}

fn split_uri(uri: &str) -> Result<UriParts<'_>, String> {
    let Some((scheme, after_scheme)) = uri.split_once(':') else {
        return Err(
            "it has no scheme; write it as scheme:rest, e.g. \"spiffe://example.org/workload\""
                .to_owned(),
        );
    };
    let mut scheme_chars = scheme.chars();
    let scheme_is_valid = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_is_valid {
        return Err(format!(
            "scheme {scheme:?} is invalid; a scheme starts with a letter and holds only \
             letters, digits, '+', '-' and '.', as in \"spiffe:\""
        ));
    }
    let Some(after_slashes) = after_scheme.strip_prefix("//") else {
        return Ok(UriParts {
            scheme,
            authority: None,
            rest: after_scheme,
        });
    };
    let authority_end = after_slashes
        .find(['/', '?', '#'])
        .unwrap_or(after_slashes.len());
    let (authority, rest) = after_slashes.split_at(authority_end);
    Ok(UriParts {
        scheme,
        authority: Some(authority),
        rest,
    })
}

/// Refuses `.` and `..` path segments (also percent-encoded), which could
/// climb out of a prefix. In a prefix the last, unfinished segment is exempt.
fn check_dot_segments(rest: &str, form: Form) -> Result<(), String> {
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..path_end];
    let mut segments: Vec<&str> = path.split('/').collect();
    if form == Form::Prefix && path_end == rest.len() {
        segments.pop();
    }
    for segment in segments {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "its path contains the segment {segment:?}; remove \".\" and \"..\" segments"
            ));
        }
    }
    Ok(())
}

/// A prefix must not end inside the authority, or `spiffe://example.org*`
/// would also admit `spiffe://example.org.evil/...`.
fn check_prefix_boundary(prefix: &str) -> Result<(), String> {
    let Some((_, after_scheme)) = prefix.split_once(':') else {
        return Err("a prefix must include the whole scheme and its ':'".to_owned());
    };
    let Some(after_slashes) = after_scheme.strip_prefix("//") else {
        return Ok(());
    };
    if after_slashes.is_empty() || after_slashes.contains(['/', '?', '#']) {
        return Ok(());
    }
    Err(format!(
        "the '*' ends inside the host part, so it would also admit hosts such as \
         \"{prefix}.evil.example\"; end the host with '/', as in \"{prefix}/*\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> UriPattern {
        UriPattern::parse(text).unwrap()
    }

    fn admits(pattern_text: &str, uri: &str) -> bool {
        let uri = normalize_requested_uri(uri).unwrap();
        pattern(pattern_text).matches(&uri)
    }

    #[test]
    fn exact_and_any_patterns() {
        assert!(admits(
            "spiffe://example.org/web",
            "spiffe://example.org/web"
        ));
        assert!(admits(
            "spiffe://example.org/web",
            "SPIFFE://Example.ORG/web"
        ));
        assert!(!admits(
            "spiffe://example.org/web",
            "spiffe://example.org/Web"
        ));
        assert!(!admits(
            "spiffe://example.org/web",
            "spiffe://example.org/web/x"
        ));
        assert!(admits("*", "urn:uuid:1234"));
        assert!(admits("urn:example:A", "URN:example:A"));
        assert!(!admits("urn:example:A", "urn:example:a"));
    }

    #[test]
    fn prefix_patterns_respect_the_authority_boundary() {
        let prefix = "spiffe://example.org/*";
        assert!(admits(prefix, "spiffe://example.org/x"));
        assert!(admits(prefix, "spiffe://EXAMPLE.org/ns/prod/x"));
        assert!(!admits(prefix, "spiffe://example.org.evil/x"));
        assert!(!admits(prefix, "spiffe://example.org"));
        assert!(!admits(prefix, "https://example.org/x"));
        assert!(admits(
            "spiffe://example.org/ns/prod/*",
            "spiffe://example.org/ns/prod/web"
        ));
        assert!(!admits(
            "spiffe://example.org/ns/prod/*",
            "spiffe://example.org/ns/production"
        ));
        assert!(admits("spiffe://*", "spiffe://anything.example/x"));
        assert!(!admits("spiffe://*", "https://anything.example/x"));
        assert!(admits("urn:example:*", "urn:example:thing"));
    }

    #[test]
    fn prefix_patterns_must_not_end_inside_the_host() {
        let error = UriPattern::parse("spiffe://example.org*").unwrap_err();
        assert!(error.contains("spiffe://example.org/*"), "{error}");
        assert!(UriPattern::parse("spif*").is_err());
        assert!(UriPattern::parse("https://example.org?*").is_ok());
        assert!(UriPattern::parse("spiffe://example.org/ns/.well*").is_ok());
    }

    #[test]
    fn malformed_uris_are_refused() {
        for (bad, expected) in [
            ("", "empty"),
            ("no-scheme", "no scheme"),
            (":x", "scheme \"\""),
            ("1http://x", "scheme"),
            ("spiffe://example.org/a b", "whitespace"),
            ("spiffe://example.org/a\nb", "control"),
            ("spiffe://exämple.org/", "non-ASCII"),
            ("spiffe:///path", "needs a host"),
            ("spiffe:x", "needs a host"),
            ("spiffe://example.org/ns/prod/../admin", "\"..\""),
            ("spiffe://example.org/ns/prod/%2E%2e/admin", "%2E%2e"),
            ("spiffe://example.org/./x", "\".\""),
        ] {
            let error = normalize_requested_uri(bad).unwrap_err();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
    }

    #[test]
    fn case_folding_only_for_known_schemes() {
        assert_eq!(
            normalize_requested_uri("HTTPS://WWW.Example.com/Path?Q").unwrap(),
            "https://www.example.com/Path?Q"
        );
        assert_eq!(
            normalize_requested_uri("FOO://Host/Path").unwrap(),
            "foo://Host/Path"
        );
    }
}
