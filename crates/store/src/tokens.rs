//! API token look-ups.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{NewToken, Store, StoreError, TokenRecord};

const COLUMNS: &str =
    "id, name, role, tenant, secret_sha256, created_at, created_by, expires_at, revoked_at";

fn decode(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        token: NewToken {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            tenant: row.try_get("tenant")?,
            secret_sha256: row.try_get("secret_sha256")?,
            created_by: row.try_get("created_by")?,
            expires_at: row.try_get("expires_at")?,
        },
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// The token with this id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }
}
