//! The rules of certificate lifecycle management, without I/O: what a managed certificate
//! declares ([`ManagedSpec`]), when it is due for renewal ([`renewal_time`]), how long to wait
//! after a failed attempt ([`Backoff`]) and which issuer to ask ([`choose_issuer`]).
//!
//! The server's reconciler calls these; keeping them pure lets them be tested exhaustively
//! with property tests.
#![forbid(unsafe_code)]

mod alerts;
mod backoff;
mod error;
mod plan;
mod rollout;
mod spec;

pub use alerts::{
    Alert, Notification, NotificationStatus, Notifier, NotifierMemory, Severity, Silence,
    silenced_by,
};
pub use backoff::{Backoff, IssuerChoice, choose_issuer};
pub use error::LifecycleError;
pub use plan::{
    ARI_POLL_MAX, ARI_RETRY_AFTER_ERROR, AriAnswer, AriWindow, RenewalPolicy, RenewalReason,
    jitter_fraction, next_action, renewal_time,
};
pub use rollout::{
    AgentProgress, Amount, RolloutPolicy, RolloutState, RolloutStep, desired_serial, next_step,
};
pub use spec::{KeyPolicy, ManagedSpec, SpecChange, TargetSpec, diff_specs, parse_mode};
