//! Rules as written in configuration files.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One policy rule, as written in TOML configuration.
///
/// Unknown keys are rejected. Every list defaults to empty and
/// `allow_wildcards` defaults to `false`. [`Default`] gives an empty rule
/// with an empty name, which [`Policy::new`](crate::Policy::new) refuses
/// until a name is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name of the rule; denials quote it.
    pub name: String,
    /// Tenants the rule applies to; empty or `["*"]` means every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Profiles the rule applies to; empty or `["*"]` means every profile.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// DNS patterns a name may match: `*`, `example.com`, `.example.com`
    /// (any depth below) or `*.example.com` (exactly one label below).
    #[serde(default)]
    pub allow_dns: Vec<String>,
    /// DNS patterns that deny a name; a deny always wins over an allow.
    #[serde(default)]
    pub deny_dns: Vec<String>,
    /// Whether wildcard names such as `*.example.com` may be issued.
    #[serde(default)]
    pub allow_wildcards: bool,
    /// Networks an IP address may lie in; a bare address means a single host.
    #[serde(
        default,
        deserialize_with = "deserialize_networks",
        serialize_with = "serialize_networks"
    )]
    pub allow_ip: Vec<IpNet>,
    /// Networks that deny an IP address; a deny always wins over an allow.
    #[serde(
        default,
        deserialize_with = "deserialize_networks",
        serialize_with = "serialize_networks"
    )]
    pub deny_ip: Vec<IpNet>,
    /// URI patterns: `*`, an exact URI, or a prefix ending in `*`.
    #[serde(default)]
    pub allow_uri: Vec<String>,
    /// Email patterns: `*`, `user@example.com`, `example.com` (any address
    /// at that domain) or `.example.com` (any address at a subdomain).
    #[serde(default)]
    pub allow_email: Vec<String>,
    /// Longest certificate lifetime this rule permits, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_seconds: Option<u64>,
    /// Key algorithms this rule permits; empty means any.
    #[serde(default)]
    pub key_algorithms: Vec<KeyKind>,
    /// Smallest RSA modulus, in bits, this rule permits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rsa_bits: Option<u32>,
}

/// A key algorithm, named in configuration as `ecdsa-p256`, `ecdsa-p384`,
/// `rsa` or `ed25519`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// RSA of any modulus size.
    #[serde(rename = "rsa")]
    Rsa,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl KeyKind {
    /// The configuration name of the algorithm, e.g. `ecdsa-p256`.
    pub fn config_name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

/// Reads networks written as CIDR (`10.0.0.0/8`) or as a bare address
/// (`10.1.2.3`, meaning `/32`, or `/128` for IPv6).
fn deserialize_networks<'de, D>(deserializer: D) -> Result<Vec<IpNet>, D::Error>
where
    D: Deserializer<'de>,
{
    let written: Vec<String> = Vec::deserialize(deserializer)?;
    written
        .iter()
        .map(|text| parse_network(text).map_err(serde::de::Error::custom))
        .collect()
}

/// Writes networks as CIDR strings, the form [`deserialize_networks`] reads.
fn serialize_networks<S>(networks: &[IpNet], serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
{
    serializer.collect_seq(networks.iter().map(ToString::to_string))
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let trimmed = text.trim();
    if let Ok(network) = trimmed.parse::<IpNet>() {
        return Ok(network);
    }
    if let Ok(address) = trimmed.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    Err(format!(
        "invalid IP network {text:?}: write a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", \
         or a single address such as \"10.1.2.3\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_accept_cidr_and_bare_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_network("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        let error = parse_network("10.0.0.0/33").unwrap_err();
        assert!(error.contains("10.0.0.0/33") && error.contains("CIDR"));
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn key_kind_names_match_serde() {
        for kind in [
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::Rsa,
            KeyKind::Ed25519,
        ] {
            assert_eq!(kind.to_string(), kind.config_name());
        }
    }
}
