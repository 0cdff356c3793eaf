//! Evaluation vectors through the public API, including denial wording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use certkeeper_policy::{
    Decision, Denial, KeyKind, KeySpec, Policy, PolicyError, Request, RequestedName, RuleConfig,
    SubjectKind,
};

const P256: KeySpec = KeySpec {
    kind: KeyKind::EcdsaP256,
    bits: 256,
};

fn rule(name: &str) -> RuleConfig {
    RuleConfig {
        name: name.to_owned(),
        ..RuleConfig::default()
    }
}

fn dns(name: &str) -> RequestedName {
    RequestedName::Dns(name.to_owned())
}

fn ip(address: &str) -> RequestedName {
    RequestedName::Ip(address.parse::<IpAddr>().unwrap())
}

fn uri(text: &str) -> RequestedName {
    RequestedName::Uri(text.to_owned())
}

fn email(text: &str) -> RequestedName {
    RequestedName::Email(text.to_owned())
}

fn policy(rules: Vec<RuleConfig>) -> Policy {
    Policy::new(rules).unwrap()
}

fn decide(policy: &Policy, names: &[RequestedName]) -> Decision {
    decide_full(policy, names, 3600, P256)
}

fn decide_full(policy: &Policy, names: &[RequestedName], lifetime: u64, key: KeySpec) -> Decision {
    policy.evaluate(&Request {
        tenant: "acme",
        profile: "web",
        names,
        lifetime_seconds: lifetime,
        key,
    })
}

fn only_denial(decision: &Decision) -> &Denial {
    match decision.denials() {
        [only] => only,
        other => panic!("expected exactly one denial, got {other:#?}"),
    }
}

fn prod_web() -> RuleConfig {
    RuleConfig {
        tenants: vec!["acme".into()],
        profiles: vec!["web".into()],
        allow_dns: vec![".example.com".into()],
        ..rule("prod-web")
    }
}

#[test]
fn no_applicable_rule_is_one_denial() {
    let policy = policy(vec![RuleConfig {
        tenants: vec!["other".into()],
        ..prod_web()
    }]);
    let decision = decide(&policy, &[dns("a.example.com")]);
    let denial = only_denial(&decision);
    assert_eq!(denial.rule, None);
    assert_eq!(denial.kind, SubjectKind::Request);
    assert_eq!(
        denial.reason,
        "no policy rule applies to tenant \"acme\" and profile \"web\"; add a rule for them"
    );
    assert!(!decide(&Policy::new(Vec::new()).unwrap(), &[]).is_allowed());
}

#[test]
fn tenant_and_profile_scopes() {
    let policy = policy(vec![
        RuleConfig {
            tenants: vec!["*".into()],
            profiles: vec!["web".into()],
            ..prod_web()
        },
        RuleConfig {
            tenants: vec!["acme".into()],
            profiles: vec!["mail".into()],
            allow_dns: vec!["*".into()],
            ..rule("mail-only")
        },
    ]);
    // Only "prod-web" applies to profile "web", so "mail-only" does not widen it.
    let denial = only_denial(&decide(&policy, &[dns("evil.com")])).clone();
    assert_eq!(denial.rule.as_deref(), Some("prod-web"));
}

#[test]
fn dns_denial_display_matches_the_documented_form() {
    let policy = policy(vec![prod_web()]);
    assert!(decide(&policy, &[dns("www.example.com")]).is_allowed());
    let decision = decide(&policy, &[dns("evil.com")]);
    assert_eq!(
        only_denial(&decision).to_string(),
        "rule \"prod-web\" denied DNS name \"evil.com\": not under any allowed name (allowed: .example.com)"
    );
}

#[test]
fn dns_matching_is_label_wise() {
    let policy = policy(vec![RuleConfig {
        allow_dns: vec!["example.com".into(), ".example.com".into()],
        ..rule("r")
    }]);
    for allowed in ["example.com", "a.example.com", "A.B.Example.Com."] {
        assert!(decide(&policy, &[dns(allowed)]).is_allowed(), "{allowed}");
    }
    for denied in [
        "badexample.com",
        "example.com.evil",
        "example.company",
        "xexample.com",
    ] {
        assert!(!decide(&policy, &[dns(denied)]).is_allowed(), "{denied}");
    }
}

#[test]
fn deny_pattern_wins_and_is_named() {
    let policy = policy(vec![
        RuleConfig {
            allow_dns: vec!["*".into()],
            ..rule("open")
        },
        RuleConfig {
            deny_dns: vec![".internal.example.com".into()],
            ..rule("no-internal")
        },
    ]);
    let decision = decide(&policy, &[dns("db.internal.example.com")]);
    let denial = only_denial(&decision);
    assert_eq!(denial.rule.as_deref(), Some("no-internal"));
    assert!(
        denial.reason.contains("\".internal.example.com\""),
        "{denial}"
    );
    assert!(decide(&policy, &[dns("internal.example.com")]).is_allowed());
}

#[test]
fn name_allowed_by_none_lists_every_consulted_rule() {
    let policy = policy(vec![
        prod_web(),
        RuleConfig {
            allow_dns: vec!["api.example.net".into()],
            ..rule("api")
        },
        rule("keys-only"),
    ]);
    let decision = decide(&policy, &[dns("evil.com")]);
    let denial = only_denial(&decision);
    assert_eq!(denial.rule, None);
    for expected in [
        "\"prod-web\" allows .example.com",
        "\"api\" allows api.example.net",
        "\"keys-only\" allows none",
    ] {
        assert!(denial.reason.contains(expected), "{expected:?}: {denial}");
    }
    assert!(decide(&policy, &[dns("api.example.net")]).is_allowed());
}

#[test]
fn wildcards_need_the_flag_and_full_coverage() {
    let without_flag = policy(vec![prod_web()]);
    let decision = decide(&without_flag, &[dns("*.foo.example.com")]);
    let denial = only_denial(&decision);
    assert_eq!(denial.rule.as_deref(), Some("prod-web"));
    assert!(denial.reason.contains("allow_wildcards"), "{denial}");

    let with_flag = |pattern: &str| {
        policy(vec![RuleConfig {
            allow_dns: vec![pattern.into()],
            allow_wildcards: true,
            ..rule("wild")
        }])
    };
    for covering in ["*", ".example.com", ".foo.example.com", "*.foo.example.com"] {
        assert!(
            decide(&with_flag(covering), &[dns("*.foo.example.com")]).is_allowed(),
            "{covering}"
        );
    }
    for partial in ["foo.example.com", "*.example.com", "a.foo.example.com"] {
        let decision = decide(&with_flag(partial), &[dns("*.foo.example.com")]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule.as_deref(), Some("wild"), "{partial}");
        assert!(denial.reason.contains("covering every name"), "{denial}");
    }
}

#[test]
fn deny_patterns_deny_wildcards_they_overlap() {
    for deny in [
        "secret.foo.example.com",
        ".example.com",
        "*.foo.example.com",
    ] {
        let policy = policy(vec![RuleConfig {
            allow_dns: vec!["*".into()],
            allow_wildcards: true,
            deny_dns: vec![deny.into()],
            ..rule("guarded")
        }]);
        let decision = decide(&policy, &[dns("*.foo.example.com")]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule.as_deref(), Some("guarded"));
        assert!(denial.reason.contains(deny), "{denial}");
    }
}

#[test]
fn malformed_names_are_denied_not_admitted() {
    let policy = Policy::permissive_default();
    for bad in [
        "",
        "a..b",
        "*.com",
        "f*.example.com",
        "foo.*.example.com",
        "bücher.example",
        "xn--zz.example",
        "under_score.example.com",
    ] {
        let decision = decide(&policy, &[dns(bad)]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule, None, "{bad:?}");
        assert_eq!(denial.subject, bad);
    }
    let decision = decide(&policy, &[dns("bücher.example")]);
    assert!(only_denial(&decision).reason.contains("punycode (xn--)"));
    assert!(decide(&policy, &[dns("xn--bcher-kva.example")]).is_allowed());
}

#[test]
fn unicode_patterns_match_punycode_requests() {
    let policy = policy(vec![RuleConfig {
        allow_dns: vec![".Bücher.example".into()],
        allow_email: vec!["bücher.example".into()],
        ..rule("idn")
    }]);
    assert!(decide(&policy, &[dns("shop.xn--bcher-kva.example")]).is_allowed());
    assert!(decide(&policy, &[email("a@xn--bcher-kva.example")]).is_allowed());
}

#[test]
fn ip_addresses() {
    let policy = policy(vec![RuleConfig {
        allow_ip: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        deny_ip: vec!["10.66.0.0/16".parse().unwrap()],
        ..rule("lan")
    }]);
    for allowed in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1"] {
        assert!(decide(&policy, &[ip(allowed)]).is_allowed(), "{allowed}");
    }
    let decision = decide(&policy, &[ip("192.168.1.1")]);
    assert_eq!(
        only_denial(&decision).to_string(),
        "rule \"lan\" denied IP address \"192.168.1.1\": not inside any allowed network \
         (allowed: 10.0.0.0/8, 2001:db8::/32)"
    );
    for denied in ["10.66.1.1", "::ffff:10.66.1.1"] {
        let decision = decide(&policy, &[ip(denied)]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule.as_deref(), Some("lan"));
        assert!(denial.reason.contains("10.66.0.0/16"), "{denial}");
    }
}

#[test]
fn uris() {
    let policy = policy(vec![RuleConfig {
        allow_uri: vec!["spiffe://example.org/ns/prod/*".into()],
        ..rule("mesh")
    }]);
    assert!(decide(&policy, &[uri("spiffe://Example.Org/ns/prod/web")]).is_allowed());
    for denied in [
        "spiffe://example.org/ns/dev/web",
        "spiffe://example.org.evil/ns/prod/web",
        "spiffe://example.org/NS/prod/web",
    ] {
        let decision = decide(&policy, &[uri(denied)]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule.as_deref(), Some("mesh"), "{denied}");
        assert!(
            denial.reason.contains("spiffe://example.org/ns/prod/*"),
            "{denial}"
        );
    }
    let decision = decide(&policy, &[uri("spiffe://example.org/ns/prod/../admin")]);
    assert_eq!(only_denial(&decision).rule, None);
    let decision = decide(&policy, &[uri("not a uri")]);
    assert_eq!(only_denial(&decision).kind, SubjectKind::Uri);
}

#[test]
fn emails() {
    let policy = policy(vec![RuleConfig {
        allow_email: vec![
            "ops@example.com".into(),
            "example.net".into(),
            ".example.org".into(),
        ],
        ..rule("mail")
    }]);
    for allowed in [
        "ops@example.com",
        "ops@EXAMPLE.COM",
        "x@example.net",
        "x@mail.example.org",
    ] {
        assert!(decide(&policy, &[email(allowed)]).is_allowed(), "{allowed}");
    }
    for denied in [
        "dev@example.com",
        "x@mail.example.net",
        "x@example.org",
        "x@badexample.net",
    ] {
        let decision = decide(&policy, &[email(denied)]);
        let denial = only_denial(&decision);
        assert_eq!(denial.rule.as_deref(), Some("mail"), "{denied}");
        assert!(denial.to_string().contains("email address"), "{denial}");
    }
    let decision = decide(&policy, &[email("a@b@example.com")]);
    assert!(only_denial(&decision).reason.contains("exactly one '@'"));
}

#[test]
fn lifetime_denial_names_rule_and_both_values() {
    let policy = policy(vec![
        RuleConfig {
            max_lifetime_seconds: Some(86_400),
            ..prod_web()
        },
        RuleConfig {
            max_lifetime_seconds: Some(7_776_000),
            ..rule("loose")
        },
    ]);
    let names = [dns("a.example.com")];
    assert!(decide_full(&policy, &names, 86_400, P256).is_allowed());
    let decision = decide_full(&policy, &names, 90_000, P256);
    let denial = only_denial(&decision);
    assert_eq!(denial.rule.as_deref(), Some("prod-web"));
    assert_eq!(denial.kind, SubjectKind::Lifetime);
    assert_eq!(denial.subject, "lifetime");
    assert!(
        denial.reason.contains("90000") && denial.reason.contains("86400"),
        "{denial}"
    );
}

#[test]
fn key_denials_name_the_rule() {
    let policy = policy(vec![RuleConfig {
        key_algorithms: vec![KeyKind::EcdsaP256, KeyKind::Rsa],
        min_rsa_bits: Some(3072),
        ..prod_web()
    }]);
    let names = [dns("a.example.com")];
    let rsa = |bits| KeySpec {
        kind: KeyKind::Rsa,
        bits,
    };
    assert!(decide_full(&policy, &names, 60, rsa(4096)).is_allowed());

    let decision = decide_full(&policy, &names, 60, rsa(2048));
    let denial = only_denial(&decision);
    assert_eq!(denial.rule.as_deref(), Some("prod-web"));
    assert_eq!(denial.subject, "key");
    assert!(
        denial.reason.contains("2048") && denial.reason.contains("3072"),
        "{denial}"
    );

    let ed25519 = KeySpec {
        kind: KeyKind::Ed25519,
        bits: 256,
    };
    let decision = decide_full(&policy, &names, 60, ed25519);
    let denial = only_denial(&decision);
    assert!(denial.reason.contains("ed25519"), "{denial}");
    assert!(denial.reason.contains("ecdsa-p256, rsa"), "{denial}");
    assert_eq!(
        denial.to_string().split(':').next(),
        Some("rule \"prod-web\" denied the key")
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let policy = policy(vec![RuleConfig {
        max_lifetime_seconds: Some(60),
        key_algorithms: vec![KeyKind::EcdsaP384],
        deny_dns: vec!["bad.example.com".into()],
        ..prod_web()
    }]);
    let names = [
        dns("ok.example.com"),
        dns("evil.com"),
        dns("bad.example.com"),
        ip("10.0.0.1"),
        uri("spiffe://example.org/x"),
        email("a@example.com"),
        dns("a..b"),
    ];
    let decision = decide_full(&policy, &names, 120, P256);
    let subjects: Vec<&str> = decision
        .denials()
        .iter()
        .map(|d| d.subject.as_str())
        .collect();
    assert_eq!(
        subjects,
        [
            "evil.com",
            "bad.example.com",
            "10.0.0.1",
            "spiffe://example.org/x",
            "a@example.com",
            "a..b",
            "lifetime",
            "key"
        ]
    );
}

#[test]
fn empty_names_are_not_the_policys_concern() {
    assert!(decide(&policy(vec![prod_web()]), &[]).is_allowed());
}

#[test]
fn permissive_default_allows_well_formed_requests() {
    let policy = Policy::permissive_default();
    assert_eq!(policy.rules()[0].name, "default-allow-all");
    let names = [
        dns("anything.example"),
        dns("*.wild.example.com"),
        ip("192.0.2.1"),
        ip("2001:db8::1"),
        ip("::ffff:192.0.2.1"),
        uri("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
        email("a@b.example"),
    ];
    assert!(decide_full(&policy, &names, u64::MAX, P256).is_allowed());
    let weak_rsa = KeySpec {
        kind: KeyKind::Rsa,
        bits: 1024,
    };
    let decision = decide_full(&policy, &names, 60, weak_rsa);
    assert_eq!(
        only_denial(&decision).rule.as_deref(),
        Some("default-allow-all")
    );
}

#[test]
fn policy_new_reports_rule_pattern_and_reason() {
    let error = Policy::new(vec![RuleConfig {
        allow_dns: vec!["*.*.example.com".into()],
        ..rule("broken")
    }])
    .unwrap_err();
    match &error {
        PolicyError::InvalidPattern {
            rule,
            field,
            pattern,
            ..
        } => {
            assert_eq!(rule, "broken");
            assert_eq!(*field, "allow_dns");
            assert_eq!(pattern, "*.*.example.com");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("fix or remove"), "{error}");

    let error = Policy::new(vec![rule("twin"), rule("twin")]).unwrap_err();
    assert_eq!(
        error,
        PolicyError::DuplicateRuleName {
            name: "twin".into()
        }
    );
    let uri_error = Policy::new(vec![RuleConfig {
        allow_uri: vec!["spiffe://example.org*".into()],
        ..rule("mesh")
    }])
    .unwrap_err()
    .to_string();
    assert!(
        uri_error.contains("\"mesh\"") && uri_error.contains("host part"),
        "{uri_error}"
    );
}

#[test]
fn rules_are_returned_as_configured() {
    let rules = vec![prod_web(), rule("other")];
    assert_eq!(policy(rules.clone()).rules(), rules.as_slice());
}
