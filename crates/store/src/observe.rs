//! What certkeeper observes rather than manages: the latest scan of each TLS endpoint (which
//! feeds M1, the valid ratio) and silences of built-in alerts.

use std::collections::BTreeMap;

use sqlx::{Any, Row, Transaction};

use crate::inventory::like_literal;
use crate::{Change, Page, Store, StoreError};

/// A write of this module, part of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObserveWrite {
    /// Record (replace) the latest scan of an endpoint.
    Scan(ScanRecord),
    /// Create a silence.
    Silence(SilenceRecord),
    /// End a silence now (fails with not found unless it is still in force or ahead).
    ExpireSilence {
        /// Silence id.
        id: String,
        /// The new end, Unix seconds.
        at: i64,
    },
}

/// The latest scan of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanRecord {
    /// Tenant that owns the observation.
    pub tenant: String,
    /// `host:port`.
    pub endpoint: String,
    /// The name asked for with SNI and checked against the SANs (empty when none).
    pub server_name: String,
    /// When, Unix seconds.
    pub scanned_at: i64,
    /// Who scanned (token or schedule name).
    pub scanner: String,
    /// SHA-256 fingerprint of the served leaf, to link it with the inventory.
    pub fingerprint_sha256: Option<String>,
    /// Its serial.
    pub serial: Option<String>,
    /// Its notAfter.
    pub not_after: Option<i64>,
    /// Finding names (see `certkeeper_pki::Finding`).
    pub findings: Vec<String>,
    /// Whether it served a certificate a client would accept.
    pub valid: bool,
    /// Connection or handshake error, when nothing was served.
    pub error: Option<String>,
}

/// A stored scan, with the inventory id of the served certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanEndpoint {
    /// What was recorded.
    #[serde(flatten)]
    pub record: ScanRecord,
    /// Inventory id of the served leaf.
    pub certificate_id: Option<i64>,
}

/// Which recorded scans to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanQuery {
    /// Only this tenant's (all when `None`).
    pub tenant: Option<String>,
    /// Only endpoints that serve a valid certificate (`Some(true)`) or that do not.
    pub valid: Option<bool>,
    /// Only endpoints with this finding (such as `revoked`).
    pub finding: Option<String>,
    /// Page size, 1-5000.
    pub limit: i64,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A silence of built-in alerts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SilenceRecord {
    /// Id.
    pub id: String,
    /// Label equality matchers; an alert is silenced when every one matches.
    pub matchers: BTreeMap<String, String>,
    /// Start, Unix seconds.
    pub starts_at: i64,
    /// End, Unix seconds.
    pub ends_at: i64,
    /// Why.
    pub comment: String,
    /// Who created it.
    pub created_by: String,
    /// When, Unix seconds.
    pub created_at: i64,
}

/// Endpoints and agent bindings by whether they serve a valid certificate (M1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounts {
    /// Scanned endpoints serving a certificate with no invalidating finding.
    pub scanned_valid: i64,
    /// Scanned endpoints that failed, or served an invalid certificate.
    pub scanned_invalid: i64,
    /// Agent targets of active agents whose deployed serial is active in the inventory.
    pub agent_valid: i64,
    /// Other agent targets of active agents.
    pub agent_invalid: i64,
}

pub(crate) async fn apply(
    tx: &mut Transaction<'static, Any>,
    change: &Change,
) -> Result<(), StoreError> {
    for write in &change.observe {
        match write {
            ObserveWrite::Scan(scan) => {
                let certificate_id: Option<i64> = match &scan.fingerprint_sha256 {
                    Some(fp) => sqlx::query(
                        "SELECT id FROM certificates WHERE tenant = $1 AND fingerprint_sha256 = $2",
                    )
                    .bind(&scan.tenant)
                    .bind(fp)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|row| row.try_get("id"))
                    .transpose()?,
                    None => None,
                };
                sqlx::query(
                    "INSERT INTO scan_endpoints (tenant, endpoint, server_name, scanned_at, scanner, certificate_id, serial, not_after, findings, valid, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (tenant, endpoint, server_name) DO UPDATE SET scanned_at = excluded.scanned_at, \
                       scanner = excluded.scanner, certificate_id = excluded.certificate_id, serial = excluded.serial, \
                       not_after = excluded.not_after, findings = excluded.findings, valid = excluded.valid, error = excluded.error",
                )
                .bind(&scan.tenant)
                .bind(&scan.endpoint)
                .bind(&scan.server_name)
                .bind(scan.scanned_at)
                .bind(&scan.scanner)
                .bind(certificate_id)
                .bind(&scan.serial)
                .bind(scan.not_after)
                .bind(scan.findings.join(","))
                .bind(i64::from(scan.valid))
                .bind(&scan.error)
                .execute(&mut **tx)
                .await?;
            }
            ObserveWrite::Silence(silence) => {
                let matchers = serde_json::to_string(&silence.matchers)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO alert_silences (id, matchers, starts_at, ends_at, comment, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&silence.id)
                .bind(matchers)
                .bind(silence.starts_at)
                .bind(silence.ends_at)
                .bind(&silence.comment)
                .bind(&silence.created_by)
                .bind(silence.created_at)
                .execute(&mut **tx)
                .await?;
            }
            ObserveWrite::ExpireSilence { id, at } => {
                let done = sqlx::query(
                    "UPDATE alert_silences SET ends_at = $1, starts_at = CASE WHEN starts_at > $1 THEN $1 ELSE starts_at END \
                     WHERE id = $2 AND ends_at > $1",
                )
                .bind(*at)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!(
                        "silence {id} in force or ahead"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// (tenant, endpoint, server name) of the last row of the previous page.
fn parse_scan_cursor(cursor: &str) -> Result<(String, String, String), StoreError> {
    let bad = || StoreError::InvalidQuery("cursor: pass next_cursor from the previous page".into());
    let parts: Vec<String> = cursor
        .split('.')
        .map(|part| {
            hex::decode(part)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    match <[String; 3]>::try_from(parts) {
        Ok([tenant, endpoint, server_name]) => Ok((tenant, endpoint, server_name)),
        Err(_) => Err(bad()),
    }
}

fn scan_from_row(row: &sqlx::any::AnyRow) -> Result<ScanEndpoint, StoreError> {
    let findings: String = row.try_get("findings")?;
    let valid: i64 = row.try_get("valid")?;
    Ok(ScanEndpoint {
        record: ScanRecord {
            tenant: row.try_get("tenant")?,
            endpoint: row.try_get("endpoint")?,
            server_name: row.try_get("server_name")?,
            scanned_at: row.try_get("scanned_at")?,
            scanner: row.try_get("scanner")?,
            fingerprint_sha256: None,
            serial: row.try_get("serial")?,
            not_after: row.try_get("not_after")?,
            findings: findings
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
            valid: valid != 0,
            error: row.try_get("error")?,
        },
        certificate_id: row.try_get("certificate_id")?,
    })
}

fn silence_from_row(row: &sqlx::any::AnyRow) -> Result<SilenceRecord, StoreError> {
    let matchers: String = row.try_get("matchers")?;
    Ok(SilenceRecord {
        id: row.try_get("id")?,
        matchers: serde_json::from_str(&matchers)
            .map_err(|e| StoreError::Corrupt(format!("silence matchers: {e}")))?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        comment: row.try_get("comment")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// One page of the latest scan of every endpoint, by (tenant, endpoint, name) — the
    /// primary key's order, so a page is an index range — filtered as `query` says.
    pub async fn scan_endpoint_page(
        &self,
        query: &ScanQuery,
    ) -> Result<Page<ScanEndpoint>, StoreError> {
        let limit = query.limit.clamp(1, 5000);
        let mut conditions: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let bind = |value: String, binds: &mut Vec<String>| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(tenant) = &query.tenant {
            let p = bind(tenant.clone(), &mut binds);
            conditions.push(format!("tenant = {p}"));
        }
        if let Some((tenant, endpoint, server_name)) =
            query.cursor.as_deref().map(parse_scan_cursor).transpose()?
        {
            let (t, e, n) = (
                bind(tenant, &mut binds),
                bind(endpoint, &mut binds),
                bind(server_name, &mut binds),
            );
            conditions.push(format!("(tenant, endpoint, server_name) > ({t}, {e}, {n})"));
        }
        if let Some(finding) = &query.finding {
            let p = bind(format!("%,{},%", like_literal(finding)), &mut binds);
            conditions.push(format!("(',' || findings || ',') LIKE {p} ESCAPE '\\'"));
        }
        if let Some(valid) = query.valid {
            conditions.push(format!("valid = {}", i64::from(valid)));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT * FROM scan_endpoints {filter} ORDER BY tenant, endpoint, server_name LIMIT {}",
            limit + 1
        );
        let mut statement = sqlx::query(&sql);
        for value in binds {
            statement = statement.bind(value);
        }
        let rows = statement.fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(scan_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|last| {
                let r = &last.record;
                [&r.tenant, &r.endpoint, &r.server_name]
                    .map(hex::encode)
                    .join(".")
            })
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Silences that have not ended by `now` (in force or ahead).
    pub async fn silences(&self, now: i64) -> Result<Vec<SilenceRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM alert_silences WHERE ends_at > $1 ORDER BY starts_at, id")
                .bind(now)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(silence_from_row).collect()
    }

    /// Targets by whether they serve a valid certificate at `now` (M1).
    /// With `tenant`, only that tenant's endpoints and agents.
    pub async fn target_counts(
        &self,
        now: i64,
        tenant: Option<&str>,
    ) -> Result<TargetCounts, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM scan_endpoints WHERE valid = 1 AND ($2 = '' OR tenant = $2)) AS scanned_valid, \
               (SELECT COUNT(*) FROM scan_endpoints WHERE valid = 0 AND ($2 = '' OR tenant = $2)) AS scanned_invalid, \
               (SELECT COUNT(*) FROM agent_bindings b JOIN agents a ON a.id = b.agent_id \
                  WHERE a.status = 'active' AND ($2 = '' OR a.tenant = $2) AND b.error IS NULL AND EXISTS ( \
                    SELECT 1 FROM certificates c WHERE c.serial = b.deployed_serial \
                      AND c.tenant = a.tenant AND c.source IN ('issued', 'external') \
                      AND c.status <> 'revoked' AND c.not_after >= $1 AND c.not_before <= $1)) AS agent_valid, \
               (SELECT COUNT(*) FROM agent_bindings b JOIN agents a ON a.id = b.agent_id \
                  WHERE a.status = 'active' AND ($2 = '' OR a.tenant = $2)) AS agent_all",
        )
        .bind(now)
        .bind(tenant.unwrap_or(""))
        .fetch_one(self.pool())
        .await?;
        let agent_valid: i64 = row.try_get("agent_valid")?;
        let agent_all: i64 = row.try_get("agent_all")?;
        Ok(TargetCounts {
            scanned_valid: row.try_get("scanned_valid")?,
            scanned_invalid: row.try_get("scanned_invalid")?,
            agent_valid,
            agent_invalid: agent_all - agent_valid,
        })
    }

    /// Scanned endpoints per finding.
    pub async fn scan_finding_counts(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        // One row per distinct combination of findings (a handful), not per endpoint.
        let rows = sqlx::query(
            "SELECT findings, COUNT(*) AS n FROM scan_endpoints \
             WHERE findings <> '' AND ($1 = '' OR tenant = $1) GROUP BY findings",
        )
        .bind(tenant.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        let mut counts = BTreeMap::<String, i64>::new();
        for row in rows {
            let findings: String = row.try_get("findings")?;
            let n: i64 = row.try_get("n")?;
            for finding in findings.split(',').filter(|f| !f.is_empty()) {
                *counts.entry(finding.to_string()).or_default() += n;
            }
        }
        Ok(counts.into_iter().collect())
    }
}
