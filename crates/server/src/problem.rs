//! RFC 9457 problem details: every API error has a specific `type`, a title, a status and a
//! detail that says what was wrong and what to do.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use certkeeper_pki::PkiError;
use certkeeper_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Permission, Role};

/// A problem+json body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI reference naming the problem type, such as `/problems/policy-denied`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What was wrong in this request and what to do.
    pub detail: String,
    /// For policy denials: each rule that denied and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<String>,
}

impl Problem {
    /// A problem of type `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            denials: Vec::new(),
        }
    }

    /// The short type name (`policy-denied`, ...).
    pub fn slug(&self) -> &str {
        self.kind.trim_start_matches("/problems/")
    }

    /// The request body or query is not what the endpoint takes.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }
    /// The request body is larger than the limit.
    pub fn too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body is larger than {limit} bytes; send a smaller request"),
        )
    }
    /// The profile name is unknown.
    pub fn unknown_profile(name: &str, known: &[String]) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown-profile",
            "Unknown profile",
            format!(
                "there is no profile {name:?}; use one of: {}",
                known.join(", ")
            ),
        )
    }
    /// Policy said no.
    pub fn policy_denied(denials: Vec<String>) -> Self {
        let mut problem = Problem::new(
            StatusCode::FORBIDDEN,
            "policy-denied",
            "Denied by policy",
            format!("the request was denied by policy: {}", denials.join("; ")),
        );
        problem.denials = denials;
        problem
    }
    /// No Authorization header.
    pub fn missing_token() -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "missing-token",
            "Missing API token",
            "send `Authorization: Bearer <token>`; create tokens with `certkeeper token create`",
        )
    }
    /// The token is unknown or malformed.
    pub fn invalid_token(why: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Invalid API token",
            format!("the API token is not valid: {why}"),
        )
    }
    /// The token was revoked.
    pub fn revoked_token(id: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "revoked-token",
            "Revoked API token",
            format!("token {id} has been revoked; ask an admin for a new one"),
        )
    }
    /// The token has expired.
    pub fn expired_token(id: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "expired-token",
            "Expired API token",
            format!("token {id} has expired; ask an admin for a new one"),
        )
    }
    /// The role lacks the permission.
    pub fn insufficient_role(role: Role, permission: Permission) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient-role",
            "Insufficient role",
            format!(
                "a token with role {} may not {permission:?}; use a token with a role that can",
                role.as_str()
            ),
        )
    }
    /// The token is scoped to another tenant.
    pub fn wrong_tenant(own: &str, wanted: &str) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "wrong-tenant",
            "Token of another tenant",
            format!("this token belongs to tenant {own:?} and cannot act for tenant {wanted:?}"),
        )
    }
    /// The object does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", what)
    }
    /// Something broke on our side.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

impl From<PkiError> for Problem {
    fn from(error: PkiError) -> Self {
        let detail = error.to_string();
        match error {
            PkiError::MalformedCsr(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-csr",
                "Malformed CSR",
                detail,
            ),
            PkiError::BadCsrSignature => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-csr-signature",
                "CSR signature does not verify",
                detail,
            ),
            PkiError::WeakKey(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "weak-key", "Weak key", detail)
            }
            PkiError::UnsupportedKey(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "unsupported-key",
                "Unsupported key",
                detail,
            ),
            PkiError::ProfileViolation(ref text) if text.contains("lifetime") => Problem::new(
                StatusCode::BAD_REQUEST,
                "lifetime-exceeds-profile",
                "Lifetime above the profile maximum",
                detail,
            ),
            PkiError::ProfileViolation(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "profile-violation",
                "Request does not fit the profile",
                detail,
            ),
            PkiError::InvalidRequest(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
                detail,
            ),
            PkiError::MalformedCertificate(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-certificate",
                "Malformed certificate",
                detail,
            ),
            PkiError::InvalidKey(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-key",
                "Invalid key",
                detail,
            ),
            // Only the scanner reads OCSP answers, from a third party's responder.
            PkiError::UnusableOcspResponse(_) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "unusable-ocsp-response",
                "Unusable OCSP response",
                detail,
            ),
            PkiError::Signing(_) | PkiError::Encoding(_) => Problem::internal(detail),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        let detail = error.to_string();
        match error {
            StoreError::NotFound(_) => Problem::not_found(detail),
            StoreError::Conflict(_) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            StoreError::InvalidQuery(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                detail,
            ),
            StoreError::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Database unavailable",
                format!("{detail}; nothing was written, retry later"),
            ),
            StoreError::Config(_) | StoreError::Corrupt(_) => Problem::internal(detail),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
