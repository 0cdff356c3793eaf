//! Aggregate counts for `/metrics`: one query each, bounded results, no rows read into memory.

use sqlx::Row;

use crate::{Store, StoreError};

/// What the metrics endpoint counts, grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Managed certificates by state (`pending`, `ready`, `failing`).
    ManagedByState,
    /// Agents by status (`active`, `revoked`).
    AgentsByStatus,
    /// Rollouts by state.
    RolloutsByState,
}

/// A paused or halted rollout that left agents on mixed certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRollout {
    /// Rollout id.
    pub id: i64,
    /// Managed certificate.
    pub managed_name: String,
    /// `paused` or `halted`.
    pub state: String,
    /// The wave it stopped in.
    pub wave: i64,
    /// The managed certificate's tenant (empty once it is gone).
    pub tenant: String,
    /// Its declaration, JSON (`{}` once it is gone).
    pub spec: String,
}

/// Counts of inventory certificates (the system tenant's own certificates excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertificateCounts {
    /// Unexpired and not revoked.
    pub active: i64,
    /// Past notAfter, not revoked.
    pub expired: i64,
    /// Revoked.
    pub revoked: i64,
    /// Active certificates expiring within 1, 7, 14 and 30 days.
    pub expiring_within_days: [(i64, i64); 4],
}

impl Store {
    /// Row counts per group.
    pub async fn group_counts(&self, grouping: Grouping) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = match grouping {
            // In the steady state nearly every row is `ready`: the few others are counted
            // through the `state` index, `ready` as the rest of the table's plain count (a
            // fast path in SQLite), instead of walking every entry.
            Grouping::ManagedByState => {
                let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM managed_certificates")
                    .fetch_one(self.pool())
                    .await?
                    .try_get("n")?;
                let mut counts = self
                    .labelled_counts(
                        "SELECT state AS label, COUNT(*) AS n FROM managed_certificates \
                     WHERE state IN ('pending', 'failing') GROUP BY state",
                    )
                    .await?;
                let others: i64 = counts.iter().map(|(_, n)| n).sum();
                counts.push(("ready".into(), total - others));
                return Ok(counts);
            }
            Grouping::AgentsByStatus => {
                "SELECT status AS label, COUNT(*) AS n FROM agents GROUP BY status"
            }
            Grouping::RolloutsByState => {
                "SELECT state AS label, COUNT(*) AS n FROM rollouts GROUP BY state"
            }
        };
        self.labelled_counts(sql).await
    }

    async fn labelled_counts(&self, sql: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("label")?, row.try_get("n")?)))
            .collect()
    }

    /// The `limit` managed certificates with a certificate in force that expire soonest, of
    /// `tenant` when given: (name, tenant, state, notAfter).
    pub async fn soonest_managed(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, tenant, state, not_after FROM managed_certificates \
             WHERE not_after IS NOT NULL AND ($1 = '' OR tenant = $1) ORDER BY not_after LIMIT $2",
        )
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("name")?,
                    row.try_get("tenant")?,
                    row.try_get("state")?,
                    row.try_get("not_after")?,
                ))
            })
            .collect()
    }

    /// Stopped rollouts (paused or halted) that left some agents on the new serial and some
    /// not: partial deployments.
    pub async fn partial_rollouts(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollouts r WHERE r.state IN ('paused', 'halted') \
               AND EXISTS (SELECT 1 FROM rollout_agents a WHERE a.rollout_id = r.id AND a.confirmed_at IS NOT NULL) \
               AND EXISTS (SELECT 1 FROM rollout_agents b WHERE b.rollout_id = r.id AND b.confirmed_at IS NULL)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The partial rollouts themselves, with the managed certificate's tenant.
    pub async fn partial_rollout_list(&self) -> Result<Vec<PartialRollout>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, r.managed_name, r.state, r.current_wave, COALESCE(m.tenant, '') AS tenant, \
               COALESCE(m.spec, '{}') AS spec \
             FROM rollouts r LEFT JOIN managed_certificates m ON m.name = r.managed_name \
             WHERE r.state IN ('paused', 'halted') \
               AND EXISTS (SELECT 1 FROM rollout_agents a WHERE a.rollout_id = r.id AND a.confirmed_at IS NOT NULL) \
               AND EXISTS (SELECT 1 FROM rollout_agents b WHERE b.rollout_id = r.id AND b.confirmed_at IS NULL) \
             ORDER BY r.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PartialRollout {
                    id: row.try_get("id")?,
                    managed_name: row.try_get("managed_name")?,
                    state: row.try_get("state")?,
                    wave: row.try_get("current_wave")?,
                    tenant: row.try_get("tenant")?,
                    spec: row.try_get("spec")?,
                })
            })
            .collect()
    }

    /// Denied actions in the audit log since `since_ms` (policy and permission refusals).
    /// With `tenant`, only denials of that tenant's tokens.
    pub async fn audit_denials_since(
        &self,
        since_ms: i64,
        tenant: Option<&str>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_log WHERE outcome = 'denied' AND at_ms >= $1 \
               AND ($2 = '' OR actor IN (SELECT id FROM api_tokens WHERE tenant = $2))",
        )
        .bind(since_ms)
        .bind(tenant.unwrap_or(""))
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The sequence number of the newest audit entry (0 when empty).
    pub async fn audit_latest_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS n FROM audit_log")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The latest revocations, newest first: (serial, subject, revoked_at, reason code, tenant).
    pub async fn recent_revocations(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String, i64, i64, String)>, StoreError> {
        // The tenant filter is in SQL, so a tenant's page is not cut short by others' rows.
        let rows = sqlx::query(
            "SELECT serial, subject, revoked_at, revocation_reason, tenant FROM certificates \
             WHERE status = 'revoked' AND tenant <> 'system' AND ($1 = '' OR tenant = $1) \
             ORDER BY revoked_at DESC, id DESC LIMIT $2",
        )
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("serial")?,
                    row.try_get("subject")?,
                    row.try_get("revoked_at")?,
                    row.try_get("revocation_reason")?,
                    row.try_get("tenant")?,
                ))
            })
            .collect()
    }

    /// Inventory certificates by status, and how many active ones expire within 1, 7, 14 and
    /// 30 days of `now`, without the system tenant's own certificates. Each count is a range
    /// of the `(status, not_after)` index (no certificate row, DER and all, is read);
    /// the system tenant's few certificates are counted apart and taken off.
    /// With `tenant`, only that tenant's certificates (a range of `(tenant, status, not_after)`).
    pub async fn certificate_counts(
        &self,
        now: i64,
        tenant: Option<&str>,
    ) -> Result<CertificateCounts, StoreError> {
        const DAYS: [i64; 4] = [1, 7, 14, 30];
        let bounds = [
            now,
            now + DAYS[0] * 86_400,
            now + DAYS[1] * 86_400,
            now + DAYS[2] * 86_400,
            now + DAYS[3] * 86_400,
        ];
        // (tenant counted, sign): the fleet less the system tenant, or one tenant.
        let scopes: &[(Option<&str>, i64)] = match tenant {
            Some(tenant) => &[(Some(tenant), 1)],
            None => &[(None, 1), (Some("system"), -1)],
        };
        let mut totals = [0i64; 7];
        for (scope, sign) in scopes {
            // The statuses and the expiry windows are two index passes; run side by side on
            // two connections they take the time of the longer.
            let (statuses, windows) = tokio::try_join!(
                self.count_columns(
                    "(SELECT COUNT(*) {scope} status = 'revoked') AS c0, \
                     (SELECT COUNT(*) {scope} status = 'active' AND not_after < $1) AS c1, \
                     (SELECT COUNT(*) {scope} status = 'active' AND not_after >= $1) AS c2",
                    &bounds[..1],
                    *scope,
                ),
                self.count_columns(
                    "(SELECT COUNT(*) {scope} status = 'active' AND not_after >= $1 AND not_after < $2) AS c0, \
                     (SELECT COUNT(*) {scope} status = 'active' AND not_after >= $1 AND not_after < $3) AS c1, \
                     (SELECT COUNT(*) {scope} status = 'active' AND not_after >= $1 AND not_after < $4) AS c2, \
                     (SELECT COUNT(*) {scope} status = 'active' AND not_after >= $1 AND not_after < $5) AS c3",
                    &bounds,
                    *scope,
                ),
            )?;
            for (total, n) in totals.iter_mut().zip(statuses.into_iter().chain(windows)) {
                *total += sign * n;
            }
        }
        let [revoked, expired, active, d1, d7, d14, d30] = totals;
        Ok(CertificateCounts {
            active,
            expired,
            revoked,
            expiring_within_days: [(DAYS[0], d1), (DAYS[1], d7), (DAYS[2], d14), (DAYS[3], d30)],
        })
    }

    /// Runs `SELECT <columns>` (each a count) and returns them in order; `{scope}` becomes `FROM certificates WHERE` (with `tenant = $n AND` for a tenant, `$n` after the
    /// `bounds`).
    async fn count_columns(
        &self,
        columns: &str,
        bounds: &[i64],
        tenant: Option<&str>,
    ) -> Result<Vec<i64>, StoreError> {
        let scope = match tenant {
            Some(_) => format!("FROM certificates WHERE tenant = ${} AND", bounds.len() + 1),
            None => "FROM certificates WHERE".to_string(),
        };
        let sql = format!("SELECT {}", columns.replace("{scope}", &scope));
        let mut query = sqlx::query(&sql);
        for bound in bounds {
            query = query.bind(*bound);
        }
        if let Some(tenant) = tenant {
            query = query.bind(tenant);
        }
        let row = query.fetch_one(self.pool()).await?;
        (0..row.columns().len())
            .map(|i| Ok(row.try_get::<i64, _>(i)?))
            .collect()
    }
}
