//! ACME problem types (RFC 8555 §6.7) and the crate's error value.

macro_rules! error_types {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $status:literal; )*) => {
        /// ACME error types (RFC 8555 §6.7, plus RFC 9773 `alreadyReplaced`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorType {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorType {
            /// Every error type, in registry order.
            pub const ALL: &'static [ErrorType] = &[$(ErrorType::$variant),*];

            /// The registered short name, e.g. `"badNonce"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorType::$variant => $name,)*
                }
            }

            /// The problem type URN, e.g. `"urn:ietf:params:acme:error:badNonce"`.
            pub fn urn(self) -> &'static str {
                match self {
                    $(ErrorType::$variant => concat!("urn:ietf:params:acme:error:", $name),)*
                }
            }

            /// The HTTP status code to answer with for this error type.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorType::$variant => $status,)*
                }
            }
        }
    };
}

error_types! {
    /// The request specified an account that does not exist.
    AccountDoesNotExist => "accountDoesNotExist", 400;
    /// The request specified a certificate to be revoked that has already been revoked.
    AlreadyRevoked => "alreadyRevoked", 400;
    /// The CSR is unacceptable (e.g., due to a short key).
    BadCsr => "badCSR", 400;
    /// The client sent an unacceptable anti-replay nonce.
    BadNonce => "badNonce", 400;
    /// The JWS was signed by a public key the server does not support.
    BadPublicKey => "badPublicKey", 400;
    /// The revocation reason provided is not allowed by the server.
    BadRevocationReason => "badRevocationReason", 400;
    /// The JWS was signed with an algorithm the server does not support.
    BadSignatureAlgorithm => "badSignatureAlgorithm", 400;
    /// CAA records forbid the CA from issuing a certificate.
    Caa => "caa", 403;
    /// Specific error conditions are indicated in the "subproblems" array.
    Compound => "compound", 400;
    /// The server could not connect to the validation target.
    Connection => "connection", 400;
    /// There was a problem with a DNS query during identifier validation.
    Dns => "dns", 400;
    /// The request must include a value for the "externalAccountBinding" field.
    ExternalAccountRequired => "externalAccountRequired", 403;
    /// Response received didn't match the challenge's requirements.
    IncorrectResponse => "incorrectResponse", 403;
    /// A contact URL for an account was invalid.
    InvalidContact => "invalidContact", 400;
    /// The request message was malformed.
    Malformed => "malformed", 400;
    /// The request attempted to finalize an order that is not ready to be finalized.
    OrderNotReady => "orderNotReady", 403;
    /// The request exceeds a rate limit.
    RateLimited => "rateLimited", 429;
    /// The server will not issue certificates for the identifier.
    RejectedIdentifier => "rejectedIdentifier", 400;
    /// The server experienced an internal error.
    ServerInternal => "serverInternal", 500;
    /// The server received a TLS error during validation.
    Tls => "tls", 400;
    /// The client lacks sufficient authorization.
    Unauthorized => "unauthorized", 403;
    /// A contact URL for an account used an unsupported protocol scheme.
    UnsupportedContact => "unsupportedContact", 400;
    /// An identifier is of an unsupported type.
    UnsupportedIdentifier => "unsupportedIdentifier", 400;
    /// Visit the "instance" URL and take actions specified there.
    UserActionRequired => "userActionRequired", 403;
    /// The request named a predecessor certificate that has already been
    /// marked as replaced (RFC 9773 §7.4).
    AlreadyReplaced => "alreadyReplaced", 409;
}

impl ErrorType {
    /// Looks an error type up by its URN or short name.
    pub fn from_urn(urn: &str) -> Option<Self> {
        let name = urn
            .strip_prefix("urn:ietf:params:acme:error:")
            .unwrap_or(urn);
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }
}

/// An ACME error with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct AcmeError {
    /// The problem type.
    pub kind: ErrorType,
    /// What went wrong, for the client's operator.
    pub detail: String,
}

impl AcmeError {
    /// An error of `kind` with `detail`.
    pub fn new(kind: ErrorType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// A `malformed` error.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Malformed, detail)
    }

    /// An `unauthorized` error.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Unauthorized, detail)
    }

    /// A `badNonce` error.
    pub fn bad_nonce(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::BadNonce, detail)
    }

    /// A `badPublicKey` error.
    pub fn bad_public_key(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::BadPublicKey, detail)
    }

    /// A `badSignatureAlgorithm` error.
    pub fn bad_signature_algorithm(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::BadSignatureAlgorithm, detail)
    }

    /// A `rejectedIdentifier` error.
    pub fn rejected_identifier(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::RejectedIdentifier, detail)
    }

    /// An `incorrectResponse` error.
    pub fn incorrect_response(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::IncorrectResponse, detail)
    }

    /// The HTTP status for this error (see [`ErrorType::http_status`]).
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }

    /// The RFC 7807 problem document: `type`, `detail` and `status`.
    pub fn to_problem(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.kind.urn(),
            "detail": self.detail,
            "status": self.kind.http_status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_and_names() {
        assert_eq!(
            ErrorType::BadNonce.urn(),
            "urn:ietf:params:acme:error:badNonce"
        );
        assert_eq!(ErrorType::BadCsr.urn(), "urn:ietf:params:acme:error:badCSR");
        assert_eq!(
            ErrorType::AlreadyReplaced.urn(),
            "urn:ietf:params:acme:error:alreadyReplaced"
        );
        assert_eq!(ErrorType::ALL.len(), 25);
        for t in ErrorType::ALL {
            assert_eq!(ErrorType::from_urn(t.urn()), Some(*t));
            assert_eq!(ErrorType::from_urn(t.name()), Some(*t));
        }
        assert_eq!(ErrorType::from_urn("urn:ietf:params:acme:error:nope"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorType::BadNonce.http_status(), 400);
        assert_eq!(ErrorType::Unauthorized.http_status(), 403);
        assert_eq!(ErrorType::AccountDoesNotExist.http_status(), 400);
        assert_eq!(ErrorType::RateLimited.http_status(), 429);
        assert_eq!(ErrorType::ServerInternal.http_status(), 500);
        assert_eq!(ErrorType::OrderNotReady.http_status(), 403);
        assert_eq!(ErrorType::AlreadyReplaced.http_status(), 409);
    }

    #[test]
    fn problem_document() {
        let e = AcmeError::malformed("bad");
        assert_eq!(
            e.to_problem(),
            serde_json::json!({"type": "urn:ietf:params:acme:error:malformed", "detail": "bad", "status": 400})
        );
        assert_eq!(e.to_string(), "Malformed: bad");
    }
}
