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
            Grouping::ManagedByState => {
                "SELECT state AS label, COUNT(*) AS n FROM managed_certificates GROUP BY state"
            }
            Grouping::AgentsByStatus => {
                "SELECT status AS label, COUNT(*) AS n FROM agents GROUP BY status"
            }
            Grouping::RolloutsByState => {
                "SELECT state AS label, COUNT(*) AS n FROM rollouts GROUP BY state"
            }
        };
        let rows = sqlx::query(sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("label")?, row.try_get("n")?)))
            .collect()
    }

    /// The `limit` managed certificates with a certificate in force that expire soonest:
    /// (name, tenant, state, notAfter).
    pub async fn soonest_managed(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, tenant, state, not_after FROM managed_certificates \
             WHERE not_after IS NOT NULL ORDER BY not_after, name LIMIT $1",
        )
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

    /// The partial rollouts themselves: (id, managed certificate, state).
    pub async fn partial_rollout_list(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, r.managed_name, r.state FROM rollouts r WHERE r.state IN ('paused', 'halted') \
               AND EXISTS (SELECT 1 FROM rollout_agents a WHERE a.rollout_id = r.id AND a.confirmed_at IS NOT NULL) \
               AND EXISTS (SELECT 1 FROM rollout_agents b WHERE b.rollout_id = r.id AND b.confirmed_at IS NULL) \
             ORDER BY r.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    row.try_get("managed_name")?,
                    row.try_get("state")?,
                ))
            })
            .collect()
    }

    /// Denied actions in the audit log since `since_ms` (policy and permission refusals).
    pub async fn audit_denials_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_log WHERE outcome = 'denied' AND at_ms >= $1",
        )
        .bind(since_ms)
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
        limit: i64,
    ) -> Result<Vec<(String, String, i64, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, subject, revoked_at, revocation_reason, tenant FROM certificates \
             WHERE status = 'revoked' AND tenant <> 'system' ORDER BY revoked_at DESC, id DESC LIMIT $1",
        )
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
    /// 30 days of `now`.
    pub async fn certificate_counts(&self, now: i64) -> Result<CertificateCounts, StoreError> {
        const DAYS: [i64; 4] = [1, 7, 14, 30];
        let row = sqlx::query(
            "SELECT \
               COALESCE(SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END), 0) AS revoked, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after < $1 THEN 1 ELSE 0 END), 0) AS expired, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after >= $1 THEN 1 ELSE 0 END), 0) AS active, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after >= $1 AND not_after < $2 THEN 1 ELSE 0 END), 0) AS d1, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after >= $1 AND not_after < $3 THEN 1 ELSE 0 END), 0) AS d7, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after >= $1 AND not_after < $4 THEN 1 ELSE 0 END), 0) AS d14, \
               COALESCE(SUM(CASE WHEN status <> 'revoked' AND not_after >= $1 AND not_after < $5 THEN 1 ELSE 0 END), 0) AS d30 \
             FROM certificates WHERE tenant <> 'system'",
        )
        .bind(now)
        .bind(now + DAYS[0] * 86_400)
        .bind(now + DAYS[1] * 86_400)
        .bind(now + DAYS[2] * 86_400)
        .bind(now + DAYS[3] * 86_400)
        .fetch_one(self.pool())
        .await?;
        Ok(CertificateCounts {
            active: row.try_get("active")?,
            expired: row.try_get("expired")?,
            revoked: row.try_get("revoked")?,
            expiring_within_days: [
                (DAYS[0], row.try_get("d1")?),
                (DAYS[1], row.try_get("d7")?),
                (DAYS[2], row.try_get("d14")?),
                (DAYS[3], row.try_get("d30")?),
            ],
        })
    }
}
