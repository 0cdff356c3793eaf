//! Validation of [`RuleConfig`]s into rules ready for evaluation.

use std::collections::HashSet;

use ipnet::IpNet;

use crate::config::{KeyKind, RuleConfig};
use crate::dns::DnsPattern;
use crate::email::EmailPattern;
use crate::error::PolicyError;
use crate::ip::canonical_network;
use crate::uri::UriPattern;

/// Matches any tenant or profile in a scope list.
const ANY_SCOPE: &str = "*";

/// A validated rule with its patterns parsed.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) name: String,
    tenants: Scope,
    profiles: Scope,
    pub(crate) allow_dns: Vec<Written<DnsPattern>>,
    pub(crate) deny_dns: Vec<Written<DnsPattern>>,
    pub(crate) allow_wildcards: bool,
    pub(crate) allow_ip: Vec<Written<IpNet>>,
    pub(crate) deny_ip: Vec<Written<IpNet>>,
    pub(crate) allow_uri: Vec<Written<UriPattern>>,
    pub(crate) allow_email: Vec<Written<EmailPattern>>,
    pub(crate) max_lifetime_seconds: Option<u64>,
    pub(crate) key_algorithms: Vec<KeyKind>,
    pub(crate) min_rsa_bits: Option<u32>,
}

/// A compiled pattern together with the text it was configured as, which
/// denials quote.
#[derive(Debug, Clone)]
pub(crate) struct Written<P> {
    pub(crate) text: String,
    pub(crate) pattern: P,
}

/// Which tenants (or profiles) a rule applies to.
#[derive(Debug, Clone)]
enum Scope {
    Everyone,
    Only(Vec<String>),
}

impl CompiledRule {
    /// Whether the rule applies to this tenant and profile.
    pub(crate) fn applies_to(&self, tenant: &str, profile: &str) -> bool {
        self.tenants.includes(tenant) && self.profiles.includes(profile)
    }
}

impl Scope {
    fn includes(&self, candidate: &str) -> bool {
        match self {
            Scope::Everyone => true,
            Scope::Only(members) => members.iter().any(|member| member == candidate),
        }
    }
}

/// Validates every rule: non-empty unique names and valid settings and patterns.
pub(crate) fn compile_rules(configs: &[RuleConfig]) -> Result<Vec<CompiledRule>, PolicyError> {
    let mut seen_names = HashSet::new();
    for (index, config) in configs.iter().enumerate() {
        if config.name.is_empty() {
            return Err(PolicyError::EmptyRuleName {
                position: index + 1,
            });
        }
        if !seen_names.insert(config.name.as_str()) {
            return Err(PolicyError::DuplicateRuleName {
                name: config.name.clone(),
            });
        }
    }
    configs.iter().map(compile_rule).collect()
}

fn compile_rule(config: &RuleConfig) -> Result<CompiledRule, PolicyError> {
    let rule = config.name.as_str();
    if config.max_lifetime_seconds == Some(0) {
        return Err(PolicyError::InvalidSetting {
            rule: rule.to_owned(),
            field: "max_lifetime_seconds",
            reason: "it is 0, which denies every request; set a positive number of seconds, \
                     or remove it for no limit"
                .to_owned(),
        });
    }
    Ok(CompiledRule {
        name: rule.to_owned(),
        tenants: compile_scope(rule, "tenants", &config.tenants)?,
        profiles: compile_scope(rule, "profiles", &config.profiles)?,
        allow_dns: compile_patterns(rule, "allow_dns", &config.allow_dns, DnsPattern::parse)?,
        deny_dns: compile_patterns(rule, "deny_dns", &config.deny_dns, DnsPattern::parse)?,
        allow_wildcards: config.allow_wildcards,
        allow_ip: compile_networks(&config.allow_ip),
        deny_ip: compile_networks(&config.deny_ip),
        allow_uri: compile_patterns(rule, "allow_uri", &config.allow_uri, UriPattern::parse)?,
        allow_email: compile_patterns(
            rule,
            "allow_email",
            &config.allow_email,
            EmailPattern::parse,
        )?,
        max_lifetime_seconds: config.max_lifetime_seconds,
        key_algorithms: config.key_algorithms.clone(),
        min_rsa_bits: config.min_rsa_bits,
    })
}

fn compile_scope(
    rule: &str,
    field: &'static str,
    entries: &[String],
) -> Result<Scope, PolicyError> {
    if entries.iter().any(String::is_empty) {
        return Err(PolicyError::InvalidSetting {
            rule: rule.to_owned(),
            field,
            reason: format!(
                "it contains an empty string; list {field} by name, or use \"*\" (or leave it out) for all"
            ),
        });
    }
    if entries.is_empty() || entries.iter().any(|entry| entry == ANY_SCOPE) {
        return Ok(Scope::Everyone);
    }
    Ok(Scope::Only(entries.to_vec()))
}

fn compile_patterns<P>(
    rule: &str,
    field: &'static str,
    entries: &[String],
    parse: fn(&str) -> Result<P, String>,
) -> Result<Vec<Written<P>>, PolicyError> {
    entries
        .iter()
        .map(|text| {
            parse(text)
                .map(|pattern| Written {
                    text: text.clone(),
                    pattern,
                })
                .map_err(|reason| PolicyError::InvalidPattern {
                    rule: rule.to_owned(),
                    field,
                    pattern: text.clone(),
                    reason: format!("{reason}; fix or remove this entry"),
                })
        })
        .collect()
}

fn compile_networks(networks: &[IpNet]) -> Vec<Written<IpNet>> {
    networks
        .iter()
        .map(|network| Written {
            text: network.to_string(),
            pattern: canonical_network(*network),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> RuleConfig {
        RuleConfig {
            name: name.to_owned(),
            ..RuleConfig::default()
        }
    }

    #[test]
    fn names_must_be_present_and_unique() {
        let error = compile_rules(&[rule("a"), rule("")]).unwrap_err();
        assert_eq!(error, PolicyError::EmptyRuleName { position: 2 });
        let error = compile_rules(&[rule("a"), rule("b"), rule("a")]).unwrap_err();
        assert!(error.to_string().contains("\"a\""), "{error}");
        assert!(error.to_string().contains("unique"), "{error}");
    }

    #[test]
    fn invalid_patterns_name_rule_field_pattern_and_reason() {
        let config = RuleConfig {
            allow_dns: vec!["ok.example.com".into(), "bad..example.com".into()],
            ..rule("web")
        };
        let message = compile_rules(&[config]).unwrap_err().to_string();
        for expected in [
            "\"web\"",
            "allow_dns",
            "\"bad..example.com\"",
            "empty label",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing: {message}"
            );
        }

        for (config, field) in [
            (
                RuleConfig {
                    deny_dns: vec!["f*.x.com".into()],
                    ..rule("r")
                },
                "deny_dns",
            ),
            (
                RuleConfig {
                    allow_uri: vec!["nope".into()],
                    ..rule("r")
                },
                "allow_uri",
            ),
            (
                RuleConfig {
                    allow_email: vec!["a@b@c".into()],
                    ..rule("r")
                },
                "allow_email",
            ),
        ] {
            let message = compile_rules(&[config]).unwrap_err().to_string();
            assert!(
                message.contains(field) && message.contains("\"r\""),
                "{message}"
            );
        }
    }

    #[test]
    fn settings_are_validated() {
        let config = RuleConfig {
            tenants: vec![String::new()],
            ..rule("r")
        };
        let message = compile_rules(&[config]).unwrap_err().to_string();
        assert!(
            message.contains("tenants") && message.contains("empty string"),
            "{message}"
        );

        let config = RuleConfig {
            max_lifetime_seconds: Some(0),
            ..rule("r")
        };
        let message = compile_rules(&[config]).unwrap_err().to_string();
        assert!(message.contains("max_lifetime_seconds"), "{message}");
    }

    #[test]
    fn scopes() {
        let compiled = compile_rules(&[
            RuleConfig {
                tenants: vec!["acme".into()],
                profiles: vec!["*".into()],
                ..rule("acme-any")
            },
            rule("everyone"),
        ])
        .unwrap();
        assert!(compiled[0].applies_to("acme", "web"));
        assert!(!compiled[0].applies_to("other", "web"));
        assert!(!compiled[0].applies_to("ACME", "web"));
        assert!(compiled[1].applies_to("", ""));
    }
}
