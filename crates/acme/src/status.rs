//! Object statuses (RFC 8555 §7.1.6).

use serde::{Deserialize, Serialize};

/// The status of an ACME account, order, authorization or challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the client.
    Pending,
    /// An order whose authorizations are all valid, ready to finalize.
    Ready,
    /// Validation or issuance in progress.
    Processing,
    /// Done and good.
    Valid,
    /// Failed.
    Invalid,
    /// Deactivated by the client.
    Deactivated,
    /// Expired.
    Expired,
    /// Revoked by the server.
    Revoked,
}

impl Status {
    /// The JSON name, e.g. `"pending"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
            Status::Processing => "processing",
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Deactivated => "deactivated",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

/// An order's status derived from its authorizations' statuses
/// (RFC 8555 §7.1.6): `invalid` if any is invalid, deactivated, expired or
/// revoked; `ready` if all are valid; otherwise `pending`.
///
/// An empty list gives `pending`: an order without authorizations is never
/// ready by accident.
pub fn order_status_from_authorizations(statuses: &[Status]) -> Status {
    if statuses.iter().any(|s| {
        matches!(
            s,
            Status::Invalid | Status::Deactivated | Status::Expired | Status::Revoked
        )
    }) {
        Status::Invalid
    } else if !statuses.is_empty() && statuses.iter().all(|s| *s == Status::Valid) {
        Status::Ready
    } else {
        Status::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn derived_order_status() {
        assert_eq!(order_status_from_authorizations(&[Valid, Valid]), Ready);
        assert_eq!(order_status_from_authorizations(&[Valid, Pending]), Pending);
        assert_eq!(
            order_status_from_authorizations(&[Pending, Invalid]),
            Invalid
        );
        for bad in [Invalid, Deactivated, Expired, Revoked] {
            assert_eq!(order_status_from_authorizations(&[Valid, bad]), Invalid);
        }
        assert_eq!(
            order_status_from_authorizations(&[Valid, Processing]),
            Pending
        );
        assert_eq!(order_status_from_authorizations(&[]), Pending);
    }

    #[test]
    fn serde_names() {
        for s in [
            Pending,
            Ready,
            Processing,
            Valid,
            Invalid,
            Deactivated,
            Expired,
            Revoked,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
