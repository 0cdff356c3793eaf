//! The outcome of evaluating a request.

use std::fmt;

/// Whether a request is allowed, and if not, everything that is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request satisfies every applicable rule.
    Allow,
    /// The request is refused; the list holds every reason, never empty.
    Deny(Vec<Denial>),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The denials; empty for [`Decision::Allow`].
    pub fn denials(&self) -> &[Denial] {
        match self {
            Decision::Allow => &[],
            Decision::Deny(denials) => denials,
        }
    }
}

/// One reason a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule that denied, or `None` when no single rule is to blame
    /// (no rule applies, the name is malformed, or several rules were consulted).
    pub rule: Option<String>,
    /// What was denied: the name as requested, `"lifetime"`, `"key"` or `"request"`.
    pub subject: String,
    /// What kind of thing `subject` is.
    pub kind: SubjectKind,
    /// Why it was denied and, where possible, what to do.
    pub reason: String,
}

/// What part of a request a [`Denial`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A DNS name.
    Dns,
    /// An IP address.
    Ip,
    /// A URI.
    Uri,
    /// An email address.
    Email,
    /// The requested lifetime.
    Lifetime,
    /// The key algorithm or size.
    Key,
    /// The request as a whole (tenant and profile).
    Request,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "rule {rule:?} denied ")?,
            None => f.write_str("policy denied ")?,
        }
        match self.kind {
            SubjectKind::Dns => write!(f, "DNS name {:?}", self.subject)?,
            SubjectKind::Ip => write!(f, "IP address {:?}", self.subject)?,
            SubjectKind::Uri => write!(f, "URI {:?}", self.subject)?,
            SubjectKind::Email => write!(f, "email address {:?}", self.subject)?,
            SubjectKind::Lifetime => f.write_str("the lifetime")?,
            SubjectKind::Key => f.write_str("the key")?,
            SubjectKind::Request => f.write_str("the request")?,
        }
        write!(f, ": {}", self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_rule_subject_and_reason() {
        let denial = Denial {
            rule: Some("prod-web".into()),
            subject: "evil.com".into(),
            kind: SubjectKind::Dns,
            reason: "not under any allowed name (allowed: .example.com)".into(),
        };
        assert_eq!(
            denial.to_string(),
            "rule \"prod-web\" denied DNS name \"evil.com\": not under any allowed name (allowed: .example.com)"
        );
    }

    #[test]
    fn display_without_rule_and_with_control_characters() {
        let denial = Denial {
            rule: None,
            subject: "a\nb".into(),
            kind: SubjectKind::Uri,
            reason: "bad".into(),
        };
        assert_eq!(denial.to_string(), "policy denied URI \"a\\nb\": bad");
    }

    #[test]
    fn decision_accessors() {
        assert!(Decision::Allow.is_allowed());
        assert!(Decision::Allow.denials().is_empty());
        let deny = Decision::Deny(vec![Denial {
            rule: None,
            subject: "key".into(),
            kind: SubjectKind::Key,
            reason: "r".into(),
        }]);
        assert!(!deny.is_allowed());
        assert_eq!(deny.denials().len(), 1);
    }
}
