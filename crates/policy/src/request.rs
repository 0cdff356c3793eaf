//! What a caller asks the policy about.

use std::fmt;
use std::net::IpAddr;

use crate::config::KeyKind;

/// A certificate request, as far as policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Tenant asking for the certificate.
    pub tenant: &'a str,
    /// Issuance profile requested.
    pub profile: &'a str,
    /// Subject alternative names requested; may be empty.
    pub names: &'a [RequestedName],
    /// Requested validity period, in seconds.
    pub lifetime_seconds: u64,
    /// The public key to be certified.
    pub key: KeySpec,
}

/// Algorithm and size of the key to be certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpec {
    /// The key algorithm.
    pub kind: KeyKind,
    /// 256 or 384 for ECDSA, the modulus size for RSA, 256 for Ed25519.
    pub bits: u32,
}

/// One subject alternative name in a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestedName {
    /// A DNS name in ASCII (punycode) form, possibly `*.`-wildcarded.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// A URI, e.g. a SPIFFE ID.
    Uri(String),
    /// An email address (`local@domain`).
    Email(String),
}

impl fmt::Display for RequestedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestedName::Dns(name) => write!(f, "DNS:{name}"),
            RequestedName::Ip(address) => write!(f, "IP:{address}"),
            RequestedName::Uri(uri) => write!(f, "URI:{uri}"),
            RequestedName::Email(address) => write!(f, "email:{address}"),
        }
    }
}
