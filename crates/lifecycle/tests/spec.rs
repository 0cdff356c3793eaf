//! Managed-certificate declarations as users write them (TOML), their checks and the
//! changes `apply` would make.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use certkeeper_lifecycle::{
    LifecycleError, ManagedSpec, RenewalPolicy, SpecChange, TargetSpec, diff_specs,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    certificate: Vec<ManagedSpec>,
}

fn parse(text: &str) -> Vec<ManagedSpec> {
    toml::from_str::<File>(text).unwrap().certificate
}

const FILE: &str = r#"
[[certificate]]
name = "web"
sans = ["www.example.com", "example.com"]
owner = "team-web"
renewal = { kind = "fraction", fraction = 0.5 }
labels = { env = "prod" }

[[certificate.targets]]
type = "nginx"
fullchain = "/etc/nginx/tls/web.pem"
key = "/etc/nginx/tls/web.key"
probe = "127.0.0.1:443"

[[certificate]]
name = "api"
sans = ["api.example.com"]
issuer = "letsencrypt"
fallback_issuer = "internal"
key = { algorithm = "ecdsa-p384", rotate = false }
renewal = { kind = "ari" }

[[certificate.targets]]
type = "webhook"
url = "https://deploy.example.com/hook"
"#;

#[test]
fn a_file_parses_with_defaults() {
    let specs = parse(FILE);
    assert_eq!(specs.len(), 2);
    let web = &specs[0];
    assert_eq!(web.issuer, "internal");
    assert_eq!(web.profile, "tls-server");
    assert!(web.key.rotate);
    assert_eq!(web.renewal, RenewalPolicy::Fraction { fraction: 0.5 });
    assert!(matches!(web.targets[0], TargetSpec::Nginx { .. }));
    let api = &specs[1];
    assert_eq!(api.renewal, RenewalPolicy::Ari);
    assert_eq!(api.fallback_after, 3);
    assert!(!api.key.rotate);
    for spec in &specs {
        spec.validate().unwrap();
    }
}

#[test]
fn unknown_fields_are_refused() {
    let result = toml::from_str::<File>(
        "[[certificate]]\nname = \"x\"\nsans = [\"a.example.com\"]\nrenewl = 1\n",
    );
    let message = result.err().unwrap().to_string();
    assert!(message.contains("renewl"), "{message}");
}

/// A change to a declaration.
type Edit = Box<dyn Fn(&mut ManagedSpec)>;

#[test]
fn bad_declarations_name_the_field() {
    let base = parse(FILE)[0].clone();
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|s| s.name = "no spaces".into()), "name"),
        (Box::new(|s| s.sans.clear()), "sans"),
        (
            Box::new(|s| s.renewal = RenewalPolicy::Fraction { fraction: 1.5 }),
            "renewal.fraction",
        ),
        (
            Box::new(|s| s.renewal = RenewalPolicy::BeforeExpiry { seconds: 0 }),
            "renewal.seconds",
        ),
        (
            Box::new(|s| s.fallback_issuer = Some("internal".into())),
            "fallback_issuer",
        ),
        (
            Box::new(|s| s.targets = vec![file_target(Some("relative.pem"), |_| {})]),
            "absolute",
        ),
        (
            Box::new(|s| s.targets = vec![file_target(None, |_| {})]),
            "at least one of",
        ),
        (
            Box::new(|s| {
                s.targets = vec![file_target(Some("/etc/ssl/a.pem"), |t| {
                    t.key_mode = Some("0644".into())
                })]
            }),
            "every user",
        ),
        (
            Box::new(|s| {
                s.targets = vec![file_target(Some("/etc/ssl/a.pem"), |t| {
                    t.mode = Some("999".into())
                })]
            }),
            "octal",
        ),
        (
            Box::new(|s| {
                s.targets = vec![file_target(Some("/etc/ssl/a.pem"), |t| {
                    t.pkcs12 = Some("/etc/ssl/a.p12".into())
                })]
            }),
            "pkcs12_password_file",
        ),
        (
            Box::new(|s| {
                s.targets = vec![file_target(Some("/etc/ssl/a.pem"), |t| {
                    t.owner = Some("a:b:c".into())
                })]
            }),
            "user:group",
        ),
        (
            Box::new(|s| {
                s.targets = vec![TargetSpec::Webhook {
                    url: "ftp://x".into(),
                    include_key: false,
                }]
            }),
            "http",
        ),
    ];
    for (change, needle) in cases {
        let mut spec = base.clone();
        change(&mut spec);
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
}

#[test]
fn apply_is_idempotent_and_names_what_changes() {
    let desired = parse(FILE);
    let first = diff_specs(&[], &desired).unwrap();
    assert_eq!(
        first,
        vec![
            SpecChange::Create { name: "web".into() },
            SpecChange::Create { name: "api".into() },
        ]
    );
    // Applying the same file again changes nothing.
    let again = diff_specs(&desired, &desired).unwrap();
    assert!(
        again
            .iter()
            .all(|c| matches!(c, SpecChange::Unchanged { .. })),
        "{again:?}"
    );
    // One field changed: only that field is reported.
    let mut edited = desired.clone();
    edited[0].sans.push("static.example.com".into());
    let changes = diff_specs(&desired, &edited).unwrap();
    assert_eq!(
        changes[0],
        SpecChange::Update {
            name: "web".into(),
            fields: vec!["sans".into()]
        }
    );
    assert_eq!(changes[1], SpecChange::Unchanged { name: "api".into() });
    // Managed certificates missing from the file are not touched (no deletion).
    let partial = diff_specs(&desired, &desired[..1]).unwrap();
    assert_eq!(partial.len(), 1);
}

#[test]
fn duplicates_and_invalid_declarations_stop_the_whole_apply() {
    let mut desired = parse(FILE);
    desired.push(desired[0].clone());
    assert_eq!(
        diff_specs(&[], &desired),
        Err(LifecycleError::DuplicateName("web".into()))
    );
    let mut invalid = parse(FILE);
    invalid[1].sans.clear();
    assert!(matches!(
        diff_specs(&[], &invalid),
        Err(LifecycleError::InvalidSpec { .. })
    ));
}

/// The optional parts of a file target, for [`file_target`].
#[derive(Default)]
struct FileOptions {
    pkcs12: Option<String>,
    owner: Option<String>,
    mode: Option<String>,
    key_mode: Option<String>,
}

fn file_target(cert: Option<&str>, edit: impl FnOnce(&mut FileOptions)) -> TargetSpec {
    let mut options = FileOptions::default();
    edit(&mut options);
    TargetSpec::File {
        cert: cert.map(str::to_string),
        chain: None,
        fullchain: None,
        key: None,
        pkcs12: options.pkcs12,
        pkcs12_password_file: None,
        owner: options.owner,
        mode: options.mode,
        key_mode: options.key_mode,
        reload: None,
        probe: None,
    }
}

#[test]
fn file_modes_parse_as_octal_permission_bits() {
    assert_eq!(certkeeper_lifecycle::parse_mode("0640").unwrap(), 0o640);
    assert_eq!(certkeeper_lifecycle::parse_mode("600").unwrap(), 0o600);
    for bad in ["", "0o644", "1777", "8", "rw-r--r--"] {
        assert!(certkeeper_lifecycle::parse_mode(bad).is_err(), "{bad}");
    }
}
