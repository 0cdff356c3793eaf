//! The policy and its evaluation of requests.

use std::net::IpAddr;

use crate::compile::{CompiledRule, Written, compile_rules};
use crate::config::{KeyKind, RuleConfig};
use crate::decision::{Decision, Denial, SubjectKind};
use crate::dns::parse_requested_dns_name;
use crate::email::parse_requested_email;
use crate::error::PolicyError;
use crate::ip::{ALL_IPV4, ALL_IPV6, canonical_address, network_contains};
use crate::request::{KeySpec, Request, RequestedName};
use crate::uri::normalize_requested_uri;

/// Name of the single rule in [`Policy::permissive_default`].
const PERMISSIVE_RULE_NAME: &str = "default-allow-all";
/// Smallest RSA key [`Policy::permissive_default`] accepts.
const PERMISSIVE_MIN_RSA_BITS: u32 = 2048;
/// How many allowed patterns a denial lists per rule before summarising.
const MAX_LISTED_PATTERNS: usize = 10;

/// A validated set of rules that decides whether requests are allowed.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<RuleConfig>,
    compiled: Vec<CompiledRule>,
}

impl Policy {
    /// Validates the rules: names non-empty and unique, every pattern and
    /// setting well-formed. The error names the rule, the entry and why.
    pub fn new(rules: Vec<RuleConfig>) -> Result<Policy, PolicyError> {
        let compiled = compile_rules(&rules)?;
        Ok(Policy { rules, compiled })
    }

    /// A policy that allows every well-formed name for every tenant and
    /// profile, with no lifetime cap, any key algorithm and RSA of at least
    /// 2048 bits. Its one rule is named `default-allow-all`.
    pub fn permissive_default() -> Policy {
        let rule = RuleConfig {
            name: PERMISSIVE_RULE_NAME.to_owned(),
            tenants: Vec::new(),
            profiles: Vec::new(),
            allow_dns: vec!["*".to_owned()],
            deny_dns: Vec::new(),
            allow_wildcards: true,
            allow_ip: vec![ALL_IPV4, ALL_IPV6],
            deny_ip: Vec::new(),
            allow_uri: vec!["*".to_owned()],
            allow_email: vec!["*".to_owned()],
            max_lifetime_seconds: None,
            key_algorithms: Vec::new(),
            min_rsa_bits: Some(PERMISSIVE_MIN_RSA_BITS),
        };
        // The rule above is constant and a unit test proves it compiles. Were
        // that ever to break, fail closed: a policy without rules denies all.
        Policy::new(vec![rule]).unwrap_or_else(|_| Policy {
            rules: Vec::new(),
            compiled: Vec::new(),
        })
    }

    /// The rules as configured.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Decides a request. A denial lists everything wrong with it, each
    /// naming the rule responsible where there is one.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let applicable: Vec<&CompiledRule> = self
            .compiled
            .iter()
            .filter(|rule| rule.applies_to(request.tenant, request.profile))
            .collect();
        if applicable.is_empty() {
            return Decision::Deny(vec![no_rule_applies(request)]);
        }
        let mut denials = Vec::new();
        for name in request.names {
            denials.extend(check_name(&applicable, name));
        }
        denials.extend(check_lifetime(&applicable, request.lifetime_seconds));
        denials.extend(check_key(&applicable, request.key));
        if denials.is_empty() {
            Decision::Allow
        } else {
            Decision::Deny(denials)
        }
    }
}

fn no_rule_applies(request: &Request<'_>) -> Denial {
    Denial {
        rule: None,
        subject: "request".to_owned(),
        kind: SubjectKind::Request,
        reason: format!(
            "no policy rule applies to tenant {:?} and profile {:?}; add a rule for them",
            request.tenant, request.profile
        ),
    }
}

fn check_name(rules: &[&CompiledRule], name: &RequestedName) -> Vec<Denial> {
    match name {
        RequestedName::Dns(text) => check_dns_name(rules, text),
        RequestedName::Ip(address) => check_ip_address(rules, *address),
        RequestedName::Uri(text) => check_uri(rules, text),
        RequestedName::Email(text) => check_email(rules, text),
    }
}

fn check_dns_name(rules: &[&CompiledRule], text: &str) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Dns, text);
    let name = match parse_requested_dns_name(text) {
        Ok(name) => name,
        Err(reason) => return vec![subject.denial(None, reason)],
    };
    let mut denials = Vec::new();
    let mut allowed = false;
    let mut wildcards_disabled_in = Vec::new();
    for rule in rules {
        if let Some(deny) = rule
            .deny_dns
            .iter()
            .find(|deny| deny.pattern.overlaps(&name))
        {
            denials.push(subject.denial(Some(&rule.name), matched_deny_reason(&deny.text)));
        }
        if rule
            .allow_dns
            .iter()
            .any(|allow| allow.pattern.covers(&name))
        {
            if name.is_wildcard() && !rule.allow_wildcards {
                wildcards_disabled_in.push(rule.name.as_str());
            } else {
                allowed = true;
            }
        }
    }
    if allowed {
        return denials;
    }
    let denial = match wildcards_disabled_in.as_slice() {
        [] if name.is_wildcard() => {
            let mut denial = subject.not_allowed(rules, "not under any allowed name", |rule| {
                texts(&rule.allow_dns)
            });
            denial.reason.push_str(&format!(
                "; a wildcard is allowed only by a pattern covering every name it stands for, \
                 such as \"{name}\" or \".{}\"",
                name.without_wildcard()
            ));
            denial
        }
        [] => subject.not_allowed(rules, "not under any allowed name", |rule| {
            texts(&rule.allow_dns)
        }),
        [only] => subject.denial(
            Some(only),
            "wildcard names are not allowed: this rule's patterns cover the name but \
             allow_wildcards is false; set allow_wildcards = true to permit it"
                .to_owned(),
        ),
        several => subject.denial(
            None,
            format!(
                "wildcard names are not allowed: rules {} cover the name but have \
                 allow_wildcards = false; set allow_wildcards = true in one of them to permit it",
                quoted_list(several)
            ),
        ),
    };
    denials.push(denial);
    denials
}

fn matched_deny_reason(pattern: &str) -> String {
    format!("matches deny pattern {pattern:?}; a deny always wins over an allow")
}

fn check_ip_address(rules: &[&CompiledRule], address: IpAddr) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Ip, &address.to_string());
    let address = canonical_address(address);
    let mut denials = Vec::new();
    let mut allowed = false;
    for rule in rules {
        if let Some(deny) = rule
            .deny_ip
            .iter()
            .find(|deny| network_contains(&deny.pattern, address))
        {
            denials.push(subject.denial(
                Some(&rule.name),
                format!(
                    "inside denied network {}; a deny always wins over an allow",
                    deny.text
                ),
            ));
        }
        allowed |= rule
            .allow_ip
            .iter()
            .any(|allow| network_contains(&allow.pattern, address));
    }
    if !allowed {
        denials.push(
            subject.not_allowed(rules, "not inside any allowed network", |rule| {
                texts(&rule.allow_ip)
            }),
        );
    }
    denials
}

fn check_uri(rules: &[&CompiledRule], text: &str) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Uri, text);
    let uri = match normalize_requested_uri(text) {
        Ok(uri) => uri,
        Err(reason) => return vec![subject.denial(None, reason)],
    };
    let allowed = rules.iter().any(|rule| {
        rule.allow_uri
            .iter()
            .any(|allow| allow.pattern.matches(&uri))
    });
    if allowed {
        return Vec::new();
    }
    vec![
        subject.not_allowed(rules, "not matched by any allowed URI pattern", |rule| {
            texts(&rule.allow_uri)
        }),
    ]
}

fn check_email(rules: &[&CompiledRule], text: &str) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Email, text);
    let address = match parse_requested_email(text) {
        Ok(address) => address,
        Err(reason) => return vec![subject.denial(None, reason)],
    };
    let allowed = rules.iter().any(|rule| {
        rule.allow_email
            .iter()
            .any(|allow| allow.pattern.matches(&address))
    });
    if allowed {
        return Vec::new();
    }
    vec![
        subject.not_allowed(rules, "not matched by any allowed email pattern", |rule| {
            texts(&rule.allow_email)
        }),
    ]
}

fn check_lifetime(rules: &[&CompiledRule], lifetime_seconds: u64) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Lifetime, "lifetime");
    rules
        .iter()
        .filter_map(|rule| {
            let maximum = rule.max_lifetime_seconds?;
            (lifetime_seconds > maximum).then(|| {
                subject.denial(
                    Some(&rule.name),
                    format!(
                        "requested lifetime of {lifetime_seconds} seconds exceeds the rule's maximum \
                         of {maximum} seconds; request {maximum} seconds or less"
                    ),
                )
            })
        })
        .collect()
}

fn check_key(rules: &[&CompiledRule], key: KeySpec) -> Vec<Denial> {
    let subject = Subject::new(SubjectKind::Key, "key");
    let mut denials = Vec::new();
    for rule in rules {
        if !rule.key_algorithms.is_empty() && !rule.key_algorithms.contains(&key.kind) {
            let allowed: Vec<&str> = rule
                .key_algorithms
                .iter()
                .map(|kind| kind.config_name())
                .collect();
            denials.push(subject.denial(
                Some(&rule.name),
                format!(
                    "key algorithm {} is not allowed (allowed: {}); use one of those",
                    key.kind,
                    allowed.join(", ")
                ),
            ));
        }
        if let Some(minimum) = rule.min_rsa_bits
            && key.kind == KeyKind::Rsa
            && key.bits < minimum
        {
            denials.push(subject.denial(
                Some(&rule.name),
                format!(
                    "RSA key of {} bits is below the rule's minimum of {minimum} bits; \
                     use a key of at least {minimum} bits",
                    key.bits
                ),
            ));
        }
    }
    denials
}

/// What a denial is about, shared by the denials for one part of a request.
struct Subject {
    kind: SubjectKind,
    text: String,
}

impl Subject {
    fn new(kind: SubjectKind, text: &str) -> Self {
        Subject {
            kind,
            text: text.to_owned(),
        }
    }

    fn denial(&self, rule: Option<&str>, reason: String) -> Denial {
        Denial {
            rule: rule.map(str::to_owned),
            subject: self.text.clone(),
            kind: self.kind,
            reason,
        }
    }

    /// The denial for a name no applicable rule allows, listing what each
    /// consulted rule does allow. With one rule, that rule is blamed.
    fn not_allowed<'r>(
        &self,
        rules: &[&'r CompiledRule],
        problem: &str,
        allowed_by: impl Fn(&'r CompiledRule) -> Vec<&'r str>,
    ) -> Denial {
        if let [only] = rules {
            let reason = format!("{problem} (allowed: {})", listing(&allowed_by(only)));
            return self.denial(Some(&only.name), reason);
        }
        let consulted: Vec<String> = rules
            .iter()
            .map(|rule| format!("{:?} allows {}", rule.name, listing(&allowed_by(rule))))
            .collect();
        let reason = format!(
            "{problem} of the applicable rules (consulted: {})",
            consulted.join("; ")
        );
        self.denial(None, reason)
    }
}

fn texts<P>(written: &[Written<P>]) -> Vec<&str> {
    written.iter().map(|entry| entry.text.as_str()).collect()
}

/// `a, b, c`, `none`, or the first few and a count of the rest.
fn listing(entries: &[&str]) -> String {
    if entries.is_empty() {
        return "none".to_owned();
    }
    let shown = entries.len().min(MAX_LISTED_PATTERNS);
    let mut text = entries[..shown].join(", ");
    if entries.len() > shown {
        text.push_str(&format!(" and {} more", entries.len() - shown));
    }
    text
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissive_default_compiles_its_rule() {
        let policy = Policy::permissive_default();
        assert_eq!(policy.rules().len(), 1);
        assert_eq!(policy.rules()[0].name, PERMISSIVE_RULE_NAME);
        assert_eq!(policy.compiled.len(), 1);
    }

    #[test]
    fn listing_summarises_long_lists() {
        assert_eq!(listing(&[]), "none");
        assert_eq!(listing(&["a", "b"]), "a, b");
        let many: Vec<&str> = ["x"; 13].to_vec();
        assert!(listing(&many).ends_with("x and 3 more"));
    }
}
