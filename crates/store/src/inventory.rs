//! Inventory queries: look-ups and cursor-paginated search.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{
    CertificateQuery, CertificateRecord, CertificateSort, CertificateSource, CertificateStatus,
    NewCertificate, Page, RevocationState, Store, StoreError,
};

const COLUMNS: &str = "id, serial, issuer, subject, common_name, sans, not_before, not_after, key_algorithm, \
    spki_sha256, fingerprint_sha256, profile, tenant, requester, source, status, labels, der, created_at, \
    crl_shard, revoked_at, revocation_reason, invalidity_date, superseded_by, \
    (SELECT r.serial FROM certificates r WHERE r.id = certificates.superseded_by) AS superseded_by_serial";

enum Bind {
    Int(i64),
    Text(String),
}

fn decode(row: &AnyRow, now: i64) -> Result<CertificateRecord, StoreError> {
    let sans: String = row.try_get("sans")?;
    let labels: String = row.try_get("labels")?;
    let status: String = row.try_get("status")?;
    let source: String = row.try_get("source")?;
    let not_after: i64 = row.try_get("not_after")?;
    let status = match status.as_str() {
        "revoked" => CertificateStatus::Revoked,
        "active" if not_after < now => CertificateStatus::Expired,
        "active" => CertificateStatus::Active,
        other => return Err(StoreError::Corrupt(format!("unknown status {other:?}"))),
    };
    Ok(CertificateRecord {
        id: row.try_get("id")?,
        certificate: NewCertificate {
            serial: row.try_get("serial")?,
            issuer: row.try_get("issuer")?,
            subject: row.try_get("subject")?,
            common_name: row.try_get("common_name")?,
            sans: serde_json::from_str(&sans).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            not_before: row.try_get("not_before")?,
            not_after,
            key_algorithm: row.try_get("key_algorithm")?,
            spki_sha256: row.try_get("spki_sha256")?,
            fingerprint_sha256: row.try_get("fingerprint_sha256")?,
            profile: row.try_get("profile")?,
            tenant: row.try_get("tenant")?,
            requester: row.try_get("requester")?,
            source: CertificateSource::parse(&source)?,
            labels: serde_json::from_str(&labels)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            der: row.try_get("der")?,
            crl_shard: row.try_get("crl_shard")?,
        },
        status,
        revocation: match row.try_get::<Option<i64>, _>("revoked_at")? {
            Some(revoked_at) => Some(RevocationState {
                revoked_at,
                reason: row
                    .try_get::<Option<i64>, _>("revocation_reason")?
                    .unwrap_or(0),
                invalidity_date: row.try_get("invalidity_date")?,
            }),
            None => None,
        },
        created_at: row.try_get("created_at")?,
        superseded_by: row.try_get("superseded_by")?,
        superseded_by_serial: row.try_get("superseded_by_serial")?,
    })
}

/// A LIKE pattern matching `text` anywhere, case-folded.
fn escape_like(text: &str) -> String {
    format!("%{}%", like_literal(&text.to_lowercase()))
}

/// `text` with LIKE's metacharacters escaped by `\` (for `LIKE ... ESCAPE '\'`).
pub(crate) fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Store {
    /// Certificates with this serial (hex), from any issuer.
    pub async fn certificates_by_serial(
        &self,
        serial: &str,
        now: i64,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE serial = $1 ORDER BY id"
        ))
        .bind(serial.to_lowercase())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| decode(row, now)).collect()
    }

    /// Certificates with this SubjectPublicKeyInfo SHA-256 (for revocation by key).
    pub async fn certificates_by_spki(
        &self,
        spki_sha256: &str,
        now: i64,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE spki_sha256 = $1 ORDER BY id"
        ))
        .bind(spki_sha256.to_lowercase())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| decode(row, now)).collect()
    }

    /// Revoked, unexpired certificates of `issuer` (in `shard`, when given), for a CRL:
    /// serial, state. Read through the revocation index.
    pub async fn revoked_entries(
        &self,
        issuer: &str,
        shard: Option<i64>,
        now: i64,
    ) -> Result<Vec<(String, RevocationState)>, StoreError> {
        let rows = match shard {
            Some(shard) => sqlx::query(
                "SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                 WHERE issuer = $1 AND status = 'revoked' AND crl_shard = $2 AND not_after >= $3",
            )
            .bind(issuer)
            .bind(shard)
            .bind(now),
            None => sqlx::query(
                "SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                 WHERE issuer = $1 AND status = 'revoked' AND not_after >= $2",
            )
            .bind(issuer)
            .bind(now),
        }
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("serial")?,
                    RevocationState {
                        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.unwrap_or(0),
                        reason: row
                            .try_get::<Option<i64>, _>("revocation_reason")?
                            .unwrap_or(0),
                        invalidity_date: row.try_get("invalidity_date")?,
                    },
                ))
            })
            .collect()
    }

    /// The highest CRL partition any certificate of `issuer` names (0 when none).
    pub async fn max_crl_shard(&self, issuer: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(crl_shard) AS shard FROM certificates WHERE issuer = $1")
            .bind(issuer)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("shard")?.unwrap_or(0))
    }

    /// Number of certificates in the inventory.
    pub async fn count_certificates(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM certificates")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Searches the inventory; every filter is served by an index except `name_contains`.
    pub async fn search_certificates(
        &self,
        query: &CertificateQuery,
    ) -> Result<Page<CertificateRecord>, StoreError> {
        let mut conditions: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let mut push = |condition: &str, values: Vec<Bind>, binds: &mut Vec<Bind>| {
            let mut condition = condition.to_string();
            for value in values {
                binds.push(value);
                condition = condition.replacen('?', &format!("${}", binds.len()), 1);
            }
            conditions.push(condition);
        };
        if let Some(tenant) = &query.tenant {
            push("tenant = ?", vec![Bind::Text(tenant.clone())], &mut binds);
        }
        match query.status {
            Some(CertificateStatus::Active) => push(
                "status = 'active' AND not_after >= ?",
                vec![Bind::Int(query.now)],
                &mut binds,
            ),
            Some(CertificateStatus::Expired) => push(
                "status = 'active' AND not_after < ?",
                vec![Bind::Int(query.now)],
                &mut binds,
            ),
            Some(CertificateStatus::Revoked) => push("status = 'revoked'", vec![], &mut binds),
            None => {}
        }
        if let Some(within) = query.expiring_within_seconds {
            push(
                "not_after >= ? AND not_after <= ?",
                vec![
                    Bind::Int(query.now),
                    Bind::Int(query.now.saturating_add(within)),
                ],
                &mut binds,
            );
        }
        if let Some(text) = &query.name_contains {
            push(
                "san_search LIKE ? ESCAPE '\\'",
                vec![Bind::Text(escape_like(text))],
                &mut binds,
            );
        }
        if let Some((name, value)) = &query.label {
            push(
                "id IN (SELECT certificate_id FROM certificate_labels WHERE name = ? AND value = ?)",
                vec![Bind::Text(name.clone()), Bind::Text(value.clone())],
                &mut binds,
            );
        }
        if let Some(serial) = &query.serial {
            push(
                "serial = ?",
                vec![Bind::Text(serial.to_lowercase())],
                &mut binds,
            );
        }
        let (column, descending) = match query.sort {
            CertificateSort::NotAfterAsc => ("not_after", false),
            CertificateSort::NotAfterDesc => ("not_after", true),
            CertificateSort::CreatedAsc => ("id", false),
            CertificateSort::CreatedDesc => ("id", true),
        };
        if let Some(cursor) = &query.cursor {
            let (value, id) = parse_cursor(cursor)?;
            let op = if descending { "<" } else { ">" };
            if column == "id" {
                push(&format!("id {op} ?"), vec![Bind::Int(id)], &mut binds);
            } else {
                push(
                    &format!("({column} {op} ? OR ({column} = ? AND id {op} ?))"),
                    vec![Bind::Int(value), Bind::Int(value), Bind::Int(id)],
                    &mut binds,
                );
            }
        }
        let limit = query.limit.clamp(1, 1000);
        let direction = if descending { "DESC" } else { "ASC" };
        let order = if column == "id" {
            format!("id {direction}")
        } else {
            format!("{column} {direction}, id {direction}")
        };
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM certificates {filter} ORDER BY {order} LIMIT {}",
            limit + 1
        );
        let mut statement = sqlx::query(&sql);
        for bind in binds {
            statement = match bind {
                Bind::Int(value) => statement.bind(value),
                Bind::Text(value) => statement.bind(value),
            };
        }
        let rows = statement.fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(|row| decode(row, query.now))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|last| {
                let value = if column == "id" {
                    last.id
                } else {
                    last.certificate.not_after
                };
                format!("{value}.{}", last.id)
            })
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// A stored setting.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("value")?),
            None => None,
        })
    }
}

fn parse_cursor(cursor: &str) -> Result<(i64, i64), StoreError> {
    let invalid = || {
        StoreError::InvalidQuery(format!(
            "cursor {cursor:?} is not one this server handed out"
        ))
    };
    let (value, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok((
        value.parse().map_err(|_| invalid())?,
        id.parse().map_err(|_| invalid())?,
    ))
}
