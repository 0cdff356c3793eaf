//! Rules written in TOML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certkeeper_policy::{KeyKind, Policy, RuleConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
struct PolicyFile {
    rule: Vec<RuleConfig>,
}

const TWO_RULES: &str = r#"
[[rule]]
name = "prod-web"
tenants = ["acme"]
profiles = ["web"]
allow_dns = [".example.com", "example.com"]
deny_dns = ["admin.example.com"]
allow_wildcards = true
allow_ip = ["10.0.0.0/8", "10.1.2.3", "2001:db8::/32", "2001:db8::1"]
deny_ip = ["10.66.0.0/16"]
allow_uri = ["spiffe://example.org/ns/prod/*"]
allow_email = ["ops@example.com", ".example.com"]
max_lifetime_seconds = 7776000
key_algorithms = ["ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"]
min_rsa_bits = 3072

[[rule]]
name = "minimal"
"#;

#[test]
fn two_rules_parse() {
    let file: PolicyFile = toml::from_str(TWO_RULES).unwrap();
    let [prod, minimal] = file.rule.as_slice() else {
        panic!("expected two rules, got {:?}", file.rule);
    };
    assert_eq!(prod.name, "prod-web");
    assert_eq!(prod.tenants, ["acme"]);
    assert!(prod.allow_wildcards);
    let networks: Vec<String> = prod.allow_ip.iter().map(ToString::to_string).collect();
    assert_eq!(
        networks,
        [
            "10.0.0.0/8",
            "10.1.2.3/32",
            "2001:db8::/32",
            "2001:db8::1/128"
        ]
    );
    assert_eq!(prod.max_lifetime_seconds, Some(7_776_000));
    assert_eq!(
        prod.key_algorithms,
        [
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::Rsa,
            KeyKind::Ed25519
        ]
    );
    assert_eq!(prod.min_rsa_bits, Some(3072));

    assert_eq!(
        *minimal,
        RuleConfig {
            name: "minimal".into(),
            ..RuleConfig::default()
        }
    );
    assert!(Policy::new(file.rule).is_ok());
}

#[test]
fn unknown_key_is_rejected() {
    let text = "[[rule]]\nname = \"typo\"\nallow_dnss = [\"example.com\"]\n";
    let error = toml::from_str::<PolicyFile>(text).unwrap_err().to_string();
    assert!(error.contains("allow_dnss"), "{error}");
}

#[test]
fn bad_values_are_rejected() {
    let bad_network = "[[rule]]\nname = \"n\"\nallow_ip = [\"10.0.0.0/33\"]\n";
    let error = toml::from_str::<PolicyFile>(bad_network)
        .unwrap_err()
        .to_string();
    assert!(error.contains("10.0.0.0/33"), "{error}");

    let bad_key = "[[rule]]\nname = \"k\"\nkey_algorithms = [\"dsa\"]\n";
    assert!(toml::from_str::<PolicyFile>(bad_key).is_err());

    let missing_name = "[[rule]]\nallow_dns = [\"*\"]\n";
    assert!(toml::from_str::<PolicyFile>(missing_name).is_err());
}

#[test]
fn serialisation_round_trips() {
    let file: PolicyFile = toml::from_str(TWO_RULES).unwrap();
    let written = toml::to_string(&file).unwrap();
    let again: PolicyFile = toml::from_str(&written).unwrap();
    assert_eq!(file.rule, again.rule);
    assert!(written.contains("\"10.1.2.3/32\""), "{written}");
    assert!(written.contains("\"ecdsa-p256\""), "{written}");
}
