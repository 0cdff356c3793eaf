//! ACME (RFC 8555) protocol rules for certkeeper: error types, JSON Web Keys
//! and flattened JWS checks, nonces, external account binding, identifiers,
//! challenge helpers (http-01, dns-01, tls-alpn-01), order status and ACME
//! Renewal Information (RFC 9773).
//!
//! This crate does no I/O and no async work: every input (time, randomness,
//! keys, URLs) is passed in, so the rules can be tested with vectors.
#![forbid(unsafe_code)]

mod ari;
mod b64;
mod challenge;
mod eab;
mod error;
mod identifier;
mod jwk;
mod jws;
mod nonce;
mod status;

pub use ari::{ari_cert_id, ari_window, parse_ari_cert_id};
pub use b64::{b64url_decode, b64url_encode};
pub use challenge::{
    ACME_IDENTIFIER_OID, HTTP01_PATH_PREFIX, TLS_ALPN01_PROTOCOL, check_tls_alpn01_certificate,
    dns01_record_name, dns01_txt_value, http01_response_matches, key_authorization, new_token,
    reverse_dns_name,
};
pub use eab::verify_external_account_binding;
pub use error::{AcmeError, ErrorType};
pub use identifier::Identifier;
pub use jwk::{Jwk, SUPPORTED_ALGORITHMS};
pub use jws::{Jws, KeyRef};
pub use nonce::NonceKey;
pub use status::{Status, order_status_from_authorizations};
