//! API tokens: format, roles, tenant scope, and verification against the store.
//!
//! A token reads `ck_<id>.<secret>`. The store keeps only SHA-256(secret); the id finds the row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certkeeper_store::{NewToken, Store, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::Problem;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Issue certificates and read the inventory of its tenant.
    Issuer,
    /// Read the inventory and the audit log; change nothing.
    Auditor,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Auditor => "auditor",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "issuer" => Some(Role::Issuer),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// Something a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Issue certificates, import certificates.
    Issue,
    /// Read inventory, profiles, policy, CA.
    Read,
    /// Read and verify the audit log.
    Audit,
    /// Create, list and revoke tokens.
    ManageTokens,
}

impl Role {
    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Issuer => matches!(permission, Permission::Issue | Permission::Read),
            Role::Auditor => matches!(permission, Permission::Read | Permission::Audit),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id (the audit actor).
    pub token_id: String,
    /// Role.
    pub role: Role,
    /// Tenant scope; `None` = every tenant.
    pub tenant: Option<String>,
}

impl Principal {
    /// Whether this principal sees what belongs to `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|own| own == tenant)
    }

    /// Checks the role; the problem says what is missing.
    pub fn require(&self, permission: Permission) -> Result<(), Problem> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(Problem::insufficient_role(self.role, permission))
        }
    }

    /// Checks that the token may act for `tenant`.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), Problem> {
        match &self.tenant {
            Some(own) if own != tenant => Err(Problem::wrong_tenant(own, tenant)),
            _ => Ok(()),
        }
    }
}

/// A freshly made token: the secret string to hand out once, and what to store.
pub struct MintedToken {
    /// The full token, shown once.
    pub secret: String,
    /// The stored record (hash only).
    pub record: NewToken,
}

/// Makes a new token.
pub fn mint(
    name: &str,
    role: Role,
    tenant: Option<String>,
    created_by: &str,
    expires_at: Option<i64>,
) -> Result<MintedToken, Problem> {
    let fresh = FreshSecret::new()?;
    Ok(MintedToken {
        secret: format!("ck_{}.{}", fresh.id, fresh.secret),
        record: NewToken {
            id: fresh.id,
            name: name.into(),
            role: role.as_str().into(),
            tenant,
            secret_sha256: fresh.secret_sha256,
            created_by: created_by.into(),
            expires_at,
        },
    })
}

/// A new credential: a public id (12 hex digits), a secret (32 random bytes, base64url) and
/// the secret's SHA-256, which is all the store keeps. API tokens and agent bootstrap tokens
/// are made of one.
pub(crate) struct FreshSecret {
    /// Finds the stored row.
    pub id: String,
    /// Shown once.
    pub secret: String,
    /// Stored.
    pub secret_sha256: String,
}

impl FreshSecret {
    /// Draws one from the system CSPRNG.
    pub(crate) fn new() -> Result<FreshSecret, Problem> {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Problem::internal("random generator failed"))?;
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| Problem::internal("random generator failed"))?;
        let secret = URL_SAFE_NO_PAD.encode(secret);
        Ok(FreshSecret {
            id: hex::encode(id),
            secret_sha256: certkeeper_pki::sha256_hex(secret.as_bytes()),
            secret,
        })
    }
}

/// Whether a presented secret is the one whose SHA-256 is stored (constant time).
pub(crate) fn secret_matches(stored_sha256: &str, presented: &str) -> bool {
    let presented = certkeeper_pki::sha256_hex(presented.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(
        stored_sha256.as_bytes(),
        presented.as_bytes(),
    )
    .is_ok()
}

/// Verifies bearer tokens, with a short cache so the hot path does not read the database
/// on every request. A revocation made through this server takes effect at once; one made
/// through another replica within [`TokenVerifier::CACHE_FOR`].
pub struct TokenVerifier {
    cache: Mutex<HashMap<String, (TokenRecord, Instant)>>,
}

impl Default for TokenVerifier {
    fn default() -> Self {
        TokenVerifier {
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenVerifier {
    /// How long a looked-up token is trusted without reading the store again.
    pub const CACHE_FOR: Duration = Duration::from_secs(2);

    /// Forgets a token (after revocation).
    pub fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
    }

    /// Checks an `Authorization` header value.
    pub async fn verify(
        &self,
        store: &Store,
        header: Option<&str>,
        now: i64,
    ) -> Result<Principal, Problem> {
        let Some(header) = header else {
            return Err(Problem::missing_token());
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Problem::invalid_token("the Authorization header must be `Bearer <token>`")
            })?
            .trim();
        let (id, secret) = token
            .strip_prefix("ck_")
            .and_then(|rest| rest.split_once('.'))
            .ok_or_else(|| {
                Problem::invalid_token("a certkeeper token looks like ck_<id>.<secret>")
            })?;
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(id)
                .filter(|(_, at)| at.elapsed() < Self::CACHE_FOR)
                .map(|(r, _)| r.clone())
        });
        let record = match cached {
            Some(record) => record,
            None => {
                let record = store
                    .token(id)
                    .await
                    .map_err(Problem::from)?
                    .ok_or_else(|| Problem::invalid_token("no such token"))?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(id.to_string(), (record.clone(), Instant::now()));
                }
                record
            }
        };
        if !secret_matches(&record.token.secret_sha256, secret) {
            return Err(Problem::invalid_token("no such token"));
        }
        if record.revoked_at.is_some() {
            return Err(Problem::revoked_token(id));
        }
        if record.token.expires_at.is_some_and(|at| at <= now) {
            return Err(Problem::expired_token(id));
        }
        let role = Role::parse(&record.token.role)
            .ok_or_else(|| Problem::internal("a stored token has an unknown role"))?;
        Ok(Principal {
            token_id: record.token.id,
            role,
            tenant: record.token.tenant,
        })
    }
}
