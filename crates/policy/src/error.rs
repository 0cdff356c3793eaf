//! The single error type of this crate.

/// Everything that can be wrong with a policy configuration or a name given
/// to [`normalize_dns_name`](crate::normalize_dns_name).
///
/// Each message says what was wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A rule has an empty `name`.
    #[error(
        "rule number {position} (counting from 1) has an empty name; give every rule a unique name"
    )]
    EmptyRuleName {
        /// Position of the rule in the configuration, counting from 1.
        position: usize,
    },

    /// Two rules share the same `name`.
    #[error("more than one rule is named {name:?}; rule names must be unique, rename one of them")]
    DuplicateRuleName {
        /// The name used more than once.
        name: String,
    },

    /// A DNS, URI or email pattern in a rule is invalid.
    #[error("rule {rule:?}: {field} entry {pattern:?} is invalid: {reason}")]
    InvalidPattern {
        /// Name of the rule holding the pattern.
        rule: String,
        /// The configuration field, e.g. `allow_dns`.
        field: &'static str,
        /// The pattern exactly as written.
        pattern: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A non-pattern setting of a rule is invalid (tenants, profiles, limits).
    #[error("rule {rule:?}: {field} is invalid: {reason}")]
    InvalidSetting {
        /// Name of the rule holding the setting.
        rule: String,
        /// The configuration field, e.g. `tenants`.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A DNS name is not a valid host name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName {
        /// The name exactly as given.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
