//! Property tests for DNS matching and for robustness of evaluation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certkeeper_policy::{
    Decision, KeyKind, KeySpec, Policy, Request, RequestedName, RuleConfig, normalize_dns_name,
};
use idna::punycode;
use proptest::prelude::*;

const P256: KeySpec = KeySpec {
    kind: KeyKind::EcdsaP256,
    bits: 256,
};

/// A plain LDH label that is not an A-label.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?".prop_filter("not an A-label", |l| !l.starts_with("xn--"))
}

/// A domain of one to three plain labels.
fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

fn dns_policy(allow_dns: &[&str], deny_dns: &[&str], allow_wildcards: bool) -> Policy {
    Policy::new(vec![RuleConfig {
        name: "rule-under-test".into(),
        allow_dns: allow_dns.iter().map(|p| p.to_string()).collect(),
        deny_dns: deny_dns.iter().map(|p| p.to_string()).collect(),
        allow_wildcards,
        ..RuleConfig::default()
    }])
    .unwrap()
}

fn decide(policy: &Policy, name: &str) -> Decision {
    let names = [RequestedName::Dns(name.to_owned())];
    policy.evaluate(&Request {
        tenant: "t",
        profile: "p",
        names: &names,
        lifetime_seconds: 60,
        key: P256,
    })
}

fn admits(policy: &Policy, name: &str) -> bool {
    decide(policy, name).is_allowed()
}

fn flip_case(text: &str, flips: &[bool]) -> String {
    text.chars()
        .zip(flips.iter().cycle())
        .map(|(c, flip)| if *flip { c.to_ascii_uppercase() } else { c })
        .collect()
}

proptest! {
    #[test]
    fn domain_rules_never_admit_glued_or_extended_names(l in label(), d in domain()) {
        let policy = dns_policy(&[&format!(".{d}"), &d], &[], false);
        prop_assert!(admits(&policy, &d));
        let below = format!("{l}.{d}");
        prop_assert!(admits(&policy, &below));

        let glued = format!("{l}{d}");
        prop_assert!(!admits(&policy, &glued), "admitted {glued}");

        let extended = format!("{d}.{l}");
        // "a.a" + ".a" really is below "a.a"; only genuine outsiders count.
        prop_assume!(!extended.ends_with(&format!(".{d}")));
        prop_assert!(!admits(&policy, &extended), "admitted {extended}");
    }

    #[test]
    fn case_does_not_matter(
        l in label(),
        d in domain(),
        flips in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let name = format!("{l}.{d}");
        let shouted = flip_case(&name, &flips);
        let allowing = dns_policy(&[&format!(".{}", flip_case(&d, &flips))], &[], false);
        prop_assert!(admits(&allowing, &shouted));
        let denying = dns_policy(&["*"], &[&format!(".{d}")], false);
        prop_assert!(!admits(&denying, &shouted));
    }

    #[test]
    fn one_trailing_dot_is_equivalent(l in label(), d in domain()) {
        let name = format!("{l}.{d}");
        let dotted = format!("{name}.");
        prop_assert_eq!(normalize_dns_name(&dotted).unwrap(), normalize_dns_name(&name).unwrap());
        for policy in [
            dns_policy(&[&format!(".{d}")], &[], false),
            dns_policy(&[&format!("{d}.")], &[], false),
            dns_policy(&["*"], &[&format!("{name}.")], false),
        ] {
            prop_assert_eq!(admits(&policy, &dotted), admits(&policy, &name));
        }
        let two_dots = format!("{name}..");
        prop_assert!(normalize_dns_name(&two_dots).is_err());
    }

    #[test]
    fn valid_a_labels_round_trip(
        unicode in prop::collection::vec(
            prop_oneof![prop::char::range('a', 'z'), prop::char::range('\u{e0}', '\u{f6}')],
            1..12,
        ),
        d in domain(),
    ) {
        let unicode: String = unicode.into_iter().collect();
        prop_assume!(!unicode.is_ascii());
        let a_label = idna::domain_to_ascii(&unicode).unwrap();
        prop_assert!(a_label.starts_with("xn--"));
        prop_assume!(a_label.len() <= 63);

        let name = format!("{a_label}.{d}");
        prop_assert_eq!(normalize_dns_name(&name).unwrap(), name.clone());
        prop_assert_eq!(normalize_dns_name(&name.to_ascii_uppercase()).unwrap(), name.clone());

        let by_unicode = dns_policy(&[&format!("{unicode}.{d}")], &[], false);
        prop_assert!(admits(&by_unicode, &name));
        let unicode_name = format!("{unicode}.{d}");
        prop_assert!(!admits(&by_unicode, &unicode_name));
    }

    #[test]
    fn invalid_a_labels_are_refused(garbage in "[a-z0-9-]{0,24}", d in domain()) {
        let name = format!("xn--{garbage}.{d}");
        let canonical_punycode = punycode::decode_to_string(&garbage).is_some_and(|decoded| {
            !decoded.is_ascii() && punycode::encode_str(&decoded).as_deref() == Some(garbage.as_str())
        });
        // Canonical punycode may still be refused (e.g. not valid IDNA); the
        // property is that nothing non-canonical is ever accepted.
        if !canonical_punycode {
            prop_assert!(normalize_dns_name(&name).is_err(), "accepted {name}");
            prop_assert!(!admits(&Policy::permissive_default(), &name));
        }
    }

    #[test]
    fn wildcards_need_a_pattern_covering_every_level(x in label(), d in domain()) {
        let wildcard = format!("*.{x}.{d}");
        let below_d = format!(".{d}");
        let one_below_xd = format!("*.{x}.{d}");
        let exact_xd = format!("{x}.{d}");
        let one_below_d = format!("*.{d}");
        let secret = format!("secret.{x}.{d}");
        let admitted = |allow: &str, deny: &[&str], allow_wildcards: bool| {
            admits(&dns_policy(&[allow], deny, allow_wildcards), &wildcard)
        };
        prop_assert!(admitted(&below_d, &[], true));
        prop_assert!(admitted(&one_below_xd, &[], true));
        prop_assert!(!admitted(&exact_xd, &[], true));
        prop_assert!(!admitted(&one_below_d, &[], true));
        prop_assert!(!admitted(&below_d, &[], false));
        prop_assert!(!admitted("*", &[&secret], true));
    }

    #[test]
    fn deny_always_wins(labels in prop::collection::vec(label(), 2..5), split in 0usize..4) {
        let name = labels.join(".");
        let parent = labels[split.min(labels.len() - 1)..].join(".");
        let allow = [name.as_str(), "*", &format!(".{parent}")];
        let deny_patterns = [name.clone(), format!(".{}", labels[1..].join("."))];
        for deny in &deny_patterns {
            let same_rule = dns_policy(&allow, &[deny], true);
            prop_assert!(!admits(&same_rule, &name));

            let split_rules = Policy::new(vec![
                RuleConfig {
                    name: "allows".into(),
                    allow_dns: allow.iter().map(|p| p.to_string()).collect(),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    name: "denies".into(),
                    deny_dns: vec![deny.clone()],
                    ..RuleConfig::default()
                },
            ])
            .unwrap();
            let decision = decide(&split_rules, &name);
            prop_assert!(decision
                .denials()
                .iter()
                .any(|denial| denial.rule.as_deref() == Some("denies")));
        }
    }

    #[test]
    fn evaluate_never_panics_on_strings(
        tenant in any::<String>(),
        profile in any::<String>(),
        text in any::<String>(),
        lifetime in any::<u64>(),
        bits in any::<u32>(),
    ) {
        evaluate_everything(&tenant, &profile, &text, lifetime, bits);
    }

    #[test]
    fn evaluate_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        evaluate_everything("t", "p", &text, 60, 2048);
    }

    #[test]
    fn evaluate_never_panics_on_name_like_strings(text in "[a-zA-Z0-9*.@:/_%-]{0,80}") {
        evaluate_everything("t", "p", &text, 60, 2048);
    }

    #[test]
    fn policy_new_never_panics(pattern in any::<String>()) {
        let _ = Policy::new(vec![RuleConfig {
            name: pattern.clone(),
            tenants: vec![pattern.clone()],
            allow_dns: vec![pattern.clone()],
            deny_dns: vec![pattern.clone()],
            allow_uri: vec![pattern.clone()],
            allow_email: vec![pattern],
            ..RuleConfig::default()
        }]);
    }
}

fn evaluate_everything(tenant: &str, profile: &str, text: &str, lifetime: u64, bits: u32) {
    let _ = normalize_dns_name(text);
    let names = [
        RequestedName::Dns(text.to_owned()),
        RequestedName::Uri(text.to_owned()),
        RequestedName::Email(text.to_owned()),
        RequestedName::Dns(format!("*.{text}")),
        RequestedName::Email(format!("a@{text}")),
    ];
    let restrictive = Policy::new(vec![RuleConfig {
        name: "restrictive".into(),
        allow_dns: vec![".example.com".into(), "*.example.org".into()],
        deny_dns: vec!["secret.example.com".into()],
        allow_wildcards: true,
        allow_uri: vec!["spiffe://example.org/*".into()],
        allow_email: vec![".example.com".into()],
        max_lifetime_seconds: Some(86_400),
        key_algorithms: vec![KeyKind::Rsa],
        min_rsa_bits: Some(2048),
        ..RuleConfig::default()
    }])
    .unwrap();
    for policy in [Policy::permissive_default(), restrictive] {
        for kind in [KeyKind::Rsa, KeyKind::Ed25519] {
            let decision = policy.evaluate(&Request {
                tenant,
                profile,
                names: &names,
                lifetime_seconds: lifetime,
                key: KeySpec { kind, bits },
            });
            for denial in decision.denials() {
                let _ = denial.to_string();
            }
        }
    }
}
