//! ACME objects, used nonces and external account binding keys.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::batch::{Bind, insert_rows};
use crate::{AcmeKind, AcmeObject, Backend, Change, EabKeyRecord, NewEabKey, Store, StoreError};

const COLUMNS: &str = "id, kind, tenant, account_id, lookup, status, expires_at, version, body";

fn decode(row: &AnyRow) -> Result<AcmeObject, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(AcmeObject {
        id: row.try_get("id")?,
        kind: match kind.as_str() {
            "account" => AcmeKind::Account,
            "order" => AcmeKind::Order,
            "authz" => AcmeKind::Authz,
            other => return Err(StoreError::Corrupt(format!("unknown ACME kind {other:?}"))),
        },
        tenant: row.try_get("tenant")?,
        account_id: row.try_get("account_id")?,
        lookup: row.try_get("lookup")?,
        status: row.try_get("status")?,
        expires_at: row.try_get("expires_at")?,
        version: row.try_get("version")?,
        body: row.try_get("body")?,
    })
}

fn decode_eab(row: &AnyRow) -> Result<EabKeyRecord, StoreError> {
    Ok(EabKeyRecord {
        key: NewEabKey {
            kid: row.try_get("kid")?,
            tenant: row.try_get("tenant")?,
            hmac_key: row.try_get("hmac_key")?,
            created_by: row.try_get("created_by")?,
            expires_at: row.try_get("expires_at")?,
        },
        created_at: row.try_get("created_at")?,
        account_id: row.try_get("account_id")?,
    })
}

/// Inserts the used nonces and new objects (version 1) of `changes` with multi-row statements.
pub(crate) async fn insert_new(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    changes: &[&Change],
) -> Result<(), StoreError> {
    let nonces: Vec<Vec<Bind>> = changes
        .iter()
        .flat_map(|c| c.acme_nonces.iter())
        .map(|(id, expires)| vec![Bind::Int(*id), Bind::Int(*expires)])
        .collect();
    if !nonces.is_empty() {
        insert_rows(
            tx,
            backend,
            "INSERT INTO acme_used_nonces (nonce_id, expires_at)",
            2,
            nonces,
            "",
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => StoreError::Conflict("nonce already used".into()),
            other => other,
        })?;
    }
    let objects: Vec<Vec<Bind>> = changes
        .iter()
        .flat_map(|c| c.acme_objects.iter())
        .filter(|o| o.version == 1)
        .map(|o| {
            vec![
                Bind::Text(o.id.clone()),
                Bind::Text(o.kind.as_str().to_string()),
                Bind::Text(o.tenant.clone()),
                Bind::Text(o.account_id.clone()),
                Bind::Text(o.lookup.clone()),
                Bind::Text(o.status.clone()),
                Bind::Int(o.expires_at),
                Bind::Int(o.version),
                Bind::Text(o.body.clone()),
            ]
        })
        .collect();
    if !objects.is_empty() {
        insert_rows(
            tx,
            backend,
            "INSERT INTO acme_objects (id, kind, tenant, account_id, lookup, status, expires_at, version, body)",
            9,
            objects,
            "",
        )
        .await?;
    }
    Ok(())
}

/// Writes the rest of a change's ACME parts: object updates (version n replaces n - 1),
/// EAB keys and bindings, superseded certificates. `first_certificate` is the id of the first
/// certificate the change inserted (what `supersede` points at).
pub(crate) async fn apply_updates(
    tx: &mut Transaction<'static, Any>,
    change: &Change,
    first_certificate: Option<i64>,
    now_s: i64,
) -> Result<(), StoreError> {
    for object in change.acme_objects.iter().filter(|o| o.version > 1) {
        let result = sqlx::query(
            "UPDATE acme_objects SET lookup = $1, status = $2, expires_at = $3, version = $4, body = $5 \
             WHERE id = $6 AND version = $7",
        )
        .bind(&object.lookup)
        .bind(&object.status)
        .bind(object.expires_at)
        .bind(object.version)
        .bind(&object.body)
        .bind(&object.id)
        .bind(object.version - 1)
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "ACME {} {} changed concurrently",
                object.kind.as_str(),
                object.id
            )));
        }
    }
    for key in &change.eab_keys {
        sqlx::query(
            "INSERT INTO acme_eab_keys (kid, tenant, hmac_key, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.tenant)
        .bind(&key.hmac_key)
        .bind(now_s)
        .bind(&key.created_by)
        .bind(key.expires_at)
        .execute(&mut **tx)
        .await?;
    }
    if let Some((kid, account_id)) = &change.bind_eab {
        let result = sqlx::query(
            "UPDATE acme_eab_keys SET account_id = $1 WHERE kid = $2 AND account_id IS NULL",
        )
        .bind(account_id)
        .bind(kid)
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "external account binding key {kid:?} is already bound"
            )));
        }
    }
    if !change.supersede.is_empty() {
        let replacement = first_certificate.ok_or_else(|| {
            StoreError::InvalidQuery("supersede needs a certificate in the same change".into())
        })?;
        for old in &change.supersede {
            sqlx::query("UPDATE certificates SET superseded_by = $1 WHERE id = $2")
                .bind(replacement)
                .bind(*old)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

impl Store {
    /// The ACME object with this id and kind.
    pub async fn acme_object(
        &self,
        kind: AcmeKind,
        id: &str,
    ) -> Result<Option<AcmeObject>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE id = $1 AND kind = $2"
        ))
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The tenant's account whose key has this JWK thumbprint.
    pub async fn acme_account_by_key(
        &self,
        tenant: &str,
        thumbprint: &str,
    ) -> Result<Option<AcmeObject>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE kind = 'account' AND tenant = $1 AND lookup = $2"
        ))
        .bind(tenant)
        .bind(thumbprint)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// A valid authorization of `account_id` for `identifier_key` that is still valid at
    /// `valid_until` (the latest expiry first).
    pub async fn acme_reusable_authz(
        &self,
        account_id: &str,
        identifier_key: &str,
        valid_until: i64,
    ) -> Result<Option<AcmeObject>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE account_id = $1 AND kind = 'authz' \
             AND lookup = $2 AND status = 'valid' AND expires_at > $3 \
             ORDER BY expires_at DESC LIMIT 1"
        ))
        .bind(account_id)
        .bind(identifier_key)
        .bind(valid_until)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Orders (any account) that name this ARI certificate id in `replaces`.
    pub async fn acme_orders_replacing(
        &self,
        ari_cert_id: &str,
    ) -> Result<Vec<AcmeObject>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE kind = 'order' AND lookup = $1"
        ))
        .bind(ari_cert_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// An account's objects of one kind, newest first.
    pub async fn acme_objects_of_account(
        &self,
        account_id: &str,
        kind: AcmeKind,
        limit: i64,
    ) -> Result<Vec<AcmeObject>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE account_id = $1 AND kind = $2 \
             ORDER BY expires_at DESC LIMIT $3"
        ))
        .bind(account_id)
        .bind(kind.as_str())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Objects of one kind in one (stored) status.
    pub async fn acme_objects_with_status(
        &self,
        kind: AcmeKind,
        status: &str,
    ) -> Result<Vec<AcmeObject>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM acme_objects WHERE kind = $1 AND status = $2"
        ))
        .bind(kind.as_str())
        .bind(status)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Ids of the nonces used and not yet expired at `now`.
    pub async fn acme_used_nonces(&self, now: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT nonce_id, expires_at FROM acme_used_nonces WHERE expires_at > $1")
                .bind(now)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("nonce_id")?, row.try_get("expires_at")?)))
            .collect()
    }

    /// Deletes used nonces past their expiry, and orders and authorizations that expired
    /// before `objects_before`. Returns how many rows went.
    pub async fn acme_cleanup(&self, now: i64, objects_before: i64) -> Result<u64, StoreError> {
        let nonces = sqlx::query("DELETE FROM acme_used_nonces WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
        let objects = sqlx::query(
            "DELETE FROM acme_objects WHERE kind <> 'account' AND expires_at > 0 AND expires_at < $1",
        )
        .bind(objects_before)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(nonces + objects)
    }

    /// The external account binding key with this id.
    pub async fn eab_key(&self, kid: &str) -> Result<Option<EabKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT kid, tenant, hmac_key, created_at, created_by, expires_at, account_id \
             FROM acme_eab_keys WHERE kid = $1",
        )
        .bind(kid)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_eab).transpose()
    }

    /// External account binding keys, oldest first; only `tenant`'s when given.
    pub async fn eab_keys(&self, tenant: Option<&str>) -> Result<Vec<EabKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, tenant, hmac_key, created_at, created_by, expires_at, account_id \
             FROM acme_eab_keys WHERE ($1 IS NULL OR tenant = $1) ORDER BY created_at, kid",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_eab).collect()
    }
}
