#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
//! Issuance policy for certkeeper.
//!
//! A [`Policy`] is a list of rules, each scoped to tenants and profiles. It
//! decides whether a certificate [`Request`] is allowed and, when it is not,
//! returns every [`Denial`] at once, each naming the rule that denied and why.
//!
//! The crate is pure: no I/O, no async. Rules are written as [`RuleConfig`]
//! (usually in TOML) and validated once by [`Policy::new`].

mod compile;
mod config;
mod decision;
mod dns;
mod email;
mod error;
mod ip;
mod policy;
mod request;
mod uri;

pub use config::{KeyKind, RuleConfig};
pub use decision::{Decision, Denial, SubjectKind};
pub use dns::normalize_dns_name;
pub use error::PolicyError;
pub use policy::Policy;
pub use request::{KeySpec, Request, RequestedName};
