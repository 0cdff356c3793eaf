//! What a managed certificate declares, how a declaration is checked, and what applying a
//! set of declarations would change (`certkeeper apply --dry-run`).

use std::collections::BTreeMap;

use certkeeper_pki::KeyAlgorithm;
use serde::{Deserialize, Serialize};

use crate::{LifecycleError, RenewalPolicy};

/// A managed certificate as declared: certkeeper obtains it, renews it and deploys it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedSpec {
    /// Unique name (letters, digits, '.', '-', '_').
    pub name: String,
    /// Tenant (default: `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Names: DNS names and IP addresses (and URIs for profiles that allow them).
    pub sans: Vec<String>,
    /// `internal` (this certkeeper's CA) or the name of a configured external ACME issuer.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Issuer to try after the primary has failed `fallback_after` times in a row.
    #[serde(default)]
    pub fallback_issuer: Option<String>,
    /// Consecutive failures of the primary before the fallback is tried (default 3).
    #[serde(default = "default_fallback_after")]
    pub fallback_after: u32,
    /// Profile (internal issuer) or ACME profile name (external issuer).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Key algorithm and rotation.
    #[serde(default)]
    pub key: KeyPolicy,
    /// When to renew.
    #[serde(default)]
    pub renewal: RenewalPolicy,
    /// Where the certificate is deployed.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// How new certificates roll out to the agents bound to it (canary, waves).
    #[serde(default)]
    pub rollout: crate::RolloutPolicy,
    /// Who to ask about it (team, person, service).
    #[serde(default)]
    pub owner: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_issuer() -> String {
    "internal".into()
}

fn default_profile() -> String {
    "tls-server".into()
}

fn default_fallback_after() -> u32 {
    3
}

/// The key of a managed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// Algorithm of new keys (default ecdsa-p256).
    #[serde(default = "default_algorithm")]
    pub algorithm: KeyAlgorithm,
    /// A new key at every renewal (default), or keep the current one.
    #[serde(default = "default_rotate")]
    pub rotate: bool,
}

fn default_algorithm() -> KeyAlgorithm {
    KeyAlgorithm::EcdsaP256
}

fn default_rotate() -> bool {
    true
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            algorithm: default_algorithm(),
            rotate: true,
        }
    }
}

/// Where a certificate is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// Files: written atomically, then an optional reload command and TLS probe; on failure
    /// the previous files come back.
    File {
        /// Certificate (PEM).
        cert: Option<String>,
        /// Chain without the leaf (PEM).
        chain: Option<String>,
        /// Leaf followed by the chain (PEM).
        fullchain: Option<String>,
        /// Private key (PEM, mode `key_mode`).
        key: Option<String>,
        /// PKCS#12 bundle of key, certificate and chain (mode `key_mode`).
        #[serde(default)]
        pkcs12: Option<String>,
        /// File holding the PKCS#12 password (its first line).
        #[serde(default)]
        pkcs12_password_file: Option<String>,
        /// Owner of the written files: `user` or `user:group` (names or numeric ids).
        #[serde(default)]
        owner: Option<String>,
        /// Mode of the certificate files, octal such as "0644" (the default).
        #[serde(default)]
        mode: Option<String>,
        /// Mode of the key and PKCS#12 files, octal such as "0640" (default "0600"); never
        /// readable by others.
        #[serde(default)]
        key_mode: Option<String>,
        /// Command run after writing, such as `systemctl reload haproxy`.
        #[serde(default)]
        reload: Option<String>,
        /// `host:port` that must then present the new serial.
        #[serde(default)]
        probe: Option<String>,
    },
    /// nginx: files as above, `nginx -s reload`, and a probe of its listener.
    Nginx {
        /// Leaf followed by the chain (PEM), as `ssl_certificate` names it.
        fullchain: String,
        /// Private key, as `ssl_certificate_key` names it.
        key: String,
        /// `host:port` nginx serves the certificate on.
        probe: String,
        /// Reload command (default `nginx -s reload`), for an instance with its own prefix.
        #[serde(default)]
        reload: Option<String>,
    },
    /// An HTTPS (or HTTP) endpoint that receives the chain as JSON.
    Webhook {
        /// URL to POST to; a 2xx answer is success.
        url: String,
        /// Also send the private key.
        #[serde(default)]
        include_key: bool,
    },
}

impl ManagedSpec {
    /// Checks the declaration; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<(), LifecycleError> {
        let invalid = |message: String| LifecycleError::InvalidSpec {
            name: self.name.clone(),
            message,
        };
        if self.name.is_empty()
            || self.name.len() > 128
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(invalid(
                "name must be 1-128 letters, digits, '.', '-' or '_'".into(),
            ));
        }
        if self.sans.is_empty() {
            return Err(invalid("sans must list at least one name".into()));
        }
        self.rollout
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if self.fallback_issuer.as_deref() == Some(self.issuer.as_str()) {
            return Err(invalid("fallback_issuer must differ from issuer".into()));
        }
        match self.renewal {
            RenewalPolicy::Fraction { fraction } if !(fraction > 0.0 && fraction < 1.0) => {
                return Err(invalid(format!(
                    "renewal.fraction is {fraction}; use a share of the lifetime between 0 and 1, such as 0.66"
                )));
            }
            RenewalPolicy::BeforeExpiry { seconds } if seconds <= 0 => {
                return Err(invalid(
                    "renewal.seconds must be above zero (seconds before expiry)".into(),
                ));
            }
            _ => {}
        }
        for (index, target) in self.targets.iter().enumerate() {
            let paths: Vec<&String> = match target {
                TargetSpec::File {
                    cert,
                    chain,
                    fullchain,
                    key,
                    pkcs12,
                    pkcs12_password_file,
                    owner,
                    mode,
                    key_mode,
                    ..
                } => {
                    let paths: Vec<&String> = [cert, chain, fullchain, key, pkcs12]
                        .into_iter()
                        .flatten()
                        .collect();
                    if paths.is_empty() {
                        return Err(invalid(format!(
                            "targets[{index}]: a file target needs at least one of cert, chain, fullchain, key, pkcs12"
                        )));
                    }
                    if pkcs12.is_some() != pkcs12_password_file.is_some() {
                        return Err(invalid(format!(
                            "targets[{index}]: pkcs12 and pkcs12_password_file go together"
                        )));
                    }
                    if let Some(file) = pkcs12_password_file
                        && !file.starts_with('/')
                    {
                        return Err(invalid(format!(
                            "targets[{index}]: pkcs12_password_file {file:?} must be absolute"
                        )));
                    }
                    if let Some(mode) = mode {
                        parse_mode(mode)
                            .map_err(|e| invalid(format!("targets[{index}].mode: {e}")))?;
                    }
                    if let Some(mode) = key_mode {
                        let bits = parse_mode(mode)
                            .map_err(|e| invalid(format!("targets[{index}].key_mode: {e}")))?;
                        if bits & 0o007 != 0 {
                            return Err(invalid(format!(
                                "targets[{index}].key_mode {mode:?} lets every user on the host at the key; use 0600 or 0640"
                            )));
                        }
                    }
                    if let Some(owner) = owner {
                        let parts: Vec<&str> = owner.split(':').collect();
                        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
                            return Err(invalid(format!(
                                "targets[{index}].owner {owner:?} must be `user` or `user:group`"
                            )));
                        }
                    }
                    paths
                }
                TargetSpec::Nginx { fullchain, key, .. } => vec![fullchain, key],
                TargetSpec::Webhook { url, .. } => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid(format!(
                            "targets[{index}].url {url:?} must be an http:// or https:// URL"
                        )));
                    }
                    Vec::new()
                }
            };
            if let Some(relative) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(invalid(format!(
                    "targets[{index}]: path {relative:?} must be absolute"
                )));
            }
        }
        Ok(())
    }
}

/// An octal file mode such as "0640" or "640" (permission bits only).
pub fn parse_mode(text: &str) -> Result<u32, LifecycleError> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|bits| *bits <= 0o777)
        .ok_or_else(|| {
            LifecycleError::InvalidMode(format!(
                "{text:?} is not an octal file mode such as \"0644\""
            ))
        })
}

/// What applying declarations changes for one managed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SpecChange {
    /// Not managed yet: it will be created and issued.
    Create {
        /// Name.
        name: String,
    },
    /// Managed with a different declaration: these top-level fields change.
    Update {
        /// Name.
        name: String,
        /// Fields whose value changes.
        fields: Vec<String>,
    },
    /// Declared exactly as managed: nothing to do.
    Unchanged {
        /// Name.
        name: String,
    },
}

/// Compares the declarations being applied with those in force. Managed certificates that
/// the file does not mention are left alone (apply never deletes). Fails on invalid or
/// duplicate declarations, before anything would change.
pub fn diff_specs(
    current: &[ManagedSpec],
    desired: &[ManagedSpec],
) -> Result<Vec<SpecChange>, LifecycleError> {
    let mut seen = std::collections::BTreeSet::new();
    for spec in desired {
        spec.validate()?;
        if !seen.insert(spec.name.as_str()) {
            return Err(LifecycleError::DuplicateName(spec.name.clone()));
        }
    }
    let current: BTreeMap<&str, &ManagedSpec> =
        current.iter().map(|s| (s.name.as_str(), s)).collect();
    Ok(desired
        .iter()
        .map(|spec| match current.get(spec.name.as_str()) {
            None => SpecChange::Create {
                name: spec.name.clone(),
            },
            Some(old) if *old == spec => SpecChange::Unchanged {
                name: spec.name.clone(),
            },
            Some(old) => SpecChange::Update {
                name: spec.name.clone(),
                fields: changed_fields(old, spec),
            },
        })
        .collect())
}

fn changed_fields(old: &ManagedSpec, new: &ManagedSpec) -> Vec<String> {
    field_values(old)
        .into_iter()
        .zip(field_values(new))
        .filter(|((_, before), (_, after))| before != after)
        .map(|((name, _), _)| name.to_string())
        .collect()
}

/// Each top-level field with a comparable rendering of its value.
fn field_values(spec: &ManagedSpec) -> [(&'static str, String); 12] {
    [
        ("tenant", format!("{:?}", spec.tenant)),
        ("sans", format!("{:?}", spec.sans)),
        ("issuer", format!("{:?}", spec.issuer)),
        ("fallback_issuer", format!("{:?}", spec.fallback_issuer)),
        ("fallback_after", format!("{:?}", spec.fallback_after)),
        ("profile", format!("{:?}", spec.profile)),
        ("key", format!("{:?}", spec.key)),
        ("renewal", format!("{:?}", spec.renewal)),
        ("targets", format!("{:?}", spec.targets)),
        ("rollout", format!("{:?}", spec.rollout)),
        ("owner", format!("{:?}", spec.owner)),
        ("labels", format!("{:?}", spec.labels)),
    ]
}
