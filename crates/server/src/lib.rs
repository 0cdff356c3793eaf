//! The certkeeper server: CA service, REST API under `/api/v1`, and the plain-HTTP
//! endpoints relying parties use. The binary crate wires it to the command line.
#![forbid(unsafe_code)]

pub mod acme;
pub mod agents;
pub mod alerting;
pub mod api;
pub mod audit_key;
pub mod auth;
pub mod ca;
pub mod config;
pub mod crl;
pub mod deploy;
mod error;
pub mod files;
pub mod fleet_api;
pub mod inventory;
pub mod issuance;
pub mod lifecycle;
pub mod metrics;
pub mod observe_api;
pub mod ocsp;
pub mod problem;
pub mod revocation;
pub mod rfc2136;
pub mod scan;
pub mod sealing;
mod serve;
mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use certkeeper_pki::{IssuerUrls, Profile};
use certkeeper_policy::Policy;
use certkeeper_store::{AuditEvent, Change, Outcome, Store};

pub use error::ServerError;
pub use serve::{ServeOptions, Started, start};

use crate::auth::TokenVerifier;
use crate::ca::LoadedCa;
use crate::problem::Problem;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the maps and caches
/// behind these locks stay consistent (every update is a single insert, retain or removal).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tenant names.
pub struct Tenant;

impl Tenant {
    /// The tenant used when neither the request nor the token names one.
    pub const DEFAULT: &'static str = "default";
    /// The tenant that owns certkeeper's own certificates (CA, server TLS).
    pub const SYSTEM: &'static str = "system";

    /// Tenant names are 1-63 lower-case letters, digits and '-'.
    pub fn validate(name: &str) -> Result<(), Problem> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Problem::malformed(format!(
                "tenant {name:?} must be 1-63 lower-case letters, digits or '-'"
            )));
        }
        Ok(())
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The issuing CA.
    pub ca: LoadedCa,
    /// Profiles by name.
    pub profiles: HashMap<String, Profile>,
    /// The policy.
    pub policy: Policy,
    /// URLs written into issued certificates.
    pub urls: IssuerUrls,
    /// Token verification with its cache.
    pub tokens: TokenVerifier,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Public base URL for relying parties (no trailing slash).
    pub base_url: String,
    /// The CRLs being served.
    pub crls: crate::crl::CrlPublisher,
    /// The OCSP responder.
    pub ocsp: crate::ocsp::OcspService,
    /// The ACME server, unless disabled.
    pub acme: Option<Arc<crate::acme::AcmeService>>,
    /// External ACME issuers for managed certificates.
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// Per-issuer bounds on renewal attempts at once, with their load.
    pub issuer_slots: Arc<crate::lifecycle::IssuerSlots>,
    /// Seals the private keys kept across renewals (`key.rotate = false`).
    pub sealer: Arc<crate::sealing::KeySealer>,
    /// Host agents: long-poll wake-ups and the `[agents]` settings.
    pub fleet: Arc<crate::agents::FleetHub>,
    /// What this process counts for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `[metrics]` settings.
    pub metrics_settings: crate::config::MetricsSection,
    /// Built-in alerting.
    pub alerts: Arc<crate::alerting::AlertEngine>,
}

impl AppState {
    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Result<&Profile, Problem> {
        self.profiles.get(name).ok_or_else(|| {
            let mut known: Vec<String> = self.profiles.keys().cloned().collect();
            known.sort();
            Problem::unknown_profile(name, &known)
        })
    }

    /// Appends a denial to the audit log and hands the problem back. If the audit write itself
    /// fails, the caller gets that failure (503) instead: a denial is never silently unaudited.
    pub async fn audit_denial(
        &self,
        actor: &str,
        action: &str,
        object: &str,
        problem: Problem,
    ) -> Problem {
        let event = AuditEvent {
            actor: actor.into(),
            action: action.into(),
            object: object.into(),
            outcome: Outcome::Denied,
            detail: serde_json::json!({"type": problem.kind, "status": problem.status, "detail": problem.detail}),
        };
        match self
            .store
            .apply(Change {
                audit: vec![event],
                ..Change::default()
            })
            .await
        {
            Ok(_) => problem,
            Err(error) => Problem::from(error),
        }
    }
}

/// Shared state handle.
pub type SharedState = Arc<AppState>;
