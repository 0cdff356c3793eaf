//! Managed certificates: declarations, due-work claims with leases, attempt outcomes.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Backend, Change, ManagedRecord, RenewalAttempt, Store, StoreError};

const COLUMNS: &str = "name, tenant, spec, state, current_serial, not_after, next_action_at, \
    next_action_reason, consecutive_failures, targets, created_at, updated_at, key_sealed, \
    compromised_at, fleet_serial";

fn decode(row: &AnyRow) -> Result<ManagedRecord, StoreError> {
    Ok(ManagedRecord {
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        spec: row.try_get("spec")?,
        state: row.try_get("state")?,
        current_serial: row.try_get("current_serial")?,
        not_after: row.try_get("not_after")?,
        next_action_at: row.try_get("next_action_at")?,
        next_action_reason: row.try_get("next_action_reason")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        targets: row.try_get("targets")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        key_sealed: row.try_get("key_sealed")?,
        compromised_at: row.try_get("compromised_at")?,
        fleet_serial: row.try_get("fleet_serial")?,
    })
}

/// A reschedule; a renewal requested (or a declaration changed) while the work was claimed
/// keeps its time and reason.
static RESCHEDULE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let requested = crate::REQUESTED_REASONS
        .map(|r| format!("'{r}'"))
        .join(", ");
    format!(
        "UPDATE managed_certificates SET \
           next_action_at = CASE WHEN next_action_reason IN ({requested}) THEN next_action_at ELSE $1 END, \
           next_action_reason = CASE WHEN next_action_reason IN ({requested}) THEN next_action_reason ELSE $2 END, \
           lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE name = $4"
    )
});

/// Writes the managed-certificate parts of a change.
pub(crate) async fn apply(
    tx: &mut Transaction<'static, Any>,
    change: &Change,
    now_s: i64,
) -> Result<(), StoreError> {
    for declaration in &change.managed_declarations {
        sqlx::query(
            "INSERT INTO managed_certificates (name, tenant, spec, state, next_action_at, \
               next_action_reason, consecutive_failures, targets, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', $4, 'declared', 0, '[]', $5, $5) \
             ON CONFLICT (name) DO UPDATE SET tenant = excluded.tenant, spec = excluded.spec, \
               next_action_at = excluded.next_action_at, next_action_reason = 'declaration changed', \
               updated_at = excluded.updated_at",
        )
        .bind(&declaration.name)
        .bind(&declaration.tenant)
        .bind(&declaration.spec)
        .bind(declaration.next_action_at)
        .bind(now_s)
        .execute(&mut **tx)
        .await?;
    }
    for outcome in &change.managed_outcomes {
        // A compromise declared while the attempt ran ($11 is the one it saw) keeps its
        // immediate renewal and drops any kept key; one the attempt answered ($12) is cleared.
        let result = sqlx::query(
            "UPDATE managed_certificates SET state = $1, current_serial = $2, not_after = $3, \
               next_action_at = CASE WHEN COALESCE(compromised_at, 0) <> COALESCE($11, 0) THEN $8 ELSE $4 END, \
               next_action_reason = CASE WHEN COALESCE(compromised_at, 0) <> COALESCE($11, 0) \
                 THEN next_action_reason ELSE $5 END, \
               consecutive_failures = $6, targets = $7, \
               lease_owner = NULL, lease_until = NULL, updated_at = $8, \
               key_sealed = CASE WHEN COALESCE(compromised_at, 0) <> COALESCE($11, 0) THEN NULL ELSE $10 END, \
               compromised_at = CASE WHEN COALESCE(compromised_at, 0) = COALESCE($11, 0) AND $12 = 1 \
                 THEN NULL ELSE compromised_at END \
             WHERE name = $9",
        )
        .bind(&outcome.state)
        .bind(&outcome.current_serial)
        .bind(outcome.not_after)
        .bind(outcome.next_action_at)
        .bind(&outcome.next_action_reason)
        .bind(outcome.consecutive_failures)
        .bind(&outcome.targets)
        .bind(now_s)
        .bind(&outcome.name)
        .bind(&outcome.key_sealed)
        .bind(outcome.compromise_seen)
        .bind(i64::from(outcome.compromise_answered))
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "managed certificate {:?}",
                outcome.name
            )));
        }
        let attempt = &outcome.attempt;
        sqlx::query(
            "INSERT INTO renewal_attempts (managed_name, started_at, duration_ms, issuer, outcome, error, serial) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&attempt.managed_name)
        .bind(attempt.started_at)
        .bind(attempt.duration_ms)
        .bind(&attempt.issuer)
        .bind(&attempt.outcome)
        .bind(&attempt.error)
        .bind(&attempt.serial)
        .execute(&mut **tx)
        .await?;
    }
    for reschedule in &change.managed_reschedules {
        let result = sqlx::query(&RESCHEDULE_SQL)
            .bind(reschedule.next_action_at)
            .bind(&reschedule.next_action_reason)
            .bind(now_s)
            .bind(&reschedule.name)
            .execute(&mut **tx)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "managed certificate {:?}",
                reschedule.name
            )));
        }
    }
    for name in &change.managed_renew_now {
        let result = sqlx::query(
            "UPDATE managed_certificates SET next_action_at = $1, next_action_reason = 'renewal requested', \
               updated_at = $1 WHERE name = $2",
        )
        .bind(now_s)
        .bind(name)
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "managed certificate {name:?}"
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Claims up to `limit` managed certificates due at `now` whose lease is free, for
    /// `owner` until `lease_until`. On PostgreSQL, rows another server is claiming are
    /// skipped (`FOR UPDATE SKIP LOCKED`), so two servers never take the same one.
    pub async fn claim_due_managed(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ManagedRecord>, StoreError> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "UPDATE managed_certificates SET lease_owner = $1, lease_until = $2 \
             WHERE name IN (SELECT name FROM managed_certificates \
               WHERE next_action_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY next_action_at LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        // RETURNING follows no order: hand out the most overdue first.
        let mut claimed = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| (r.next_action_at, r.name.clone()));
        Ok(claimed)
    }

    /// One managed certificate.
    pub async fn managed_certificate(
        &self,
        name: &str,
    ) -> Result<Option<ManagedRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM managed_certificates WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Managed certificates by name; only `tenant`'s when given.
    pub async fn managed_certificates(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ManagedRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM managed_certificates WHERE ($1 IS NULL OR tenant = $1) ORDER BY name"
        ))
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Managed certificates being renewed now (lease held) or never issued yet, by name; only
    /// `tenant`'s when given.
    pub async fn managed_in_progress(
        &self,
        tenant: Option<&str>,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ManagedRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM managed_certificates \
             WHERE ((lease_until IS NOT NULL AND lease_until > $1) OR state = 'pending') AND ($2 = '' OR tenant = $2) \
             ORDER BY name LIMIT $3"
        ))
        .bind(now)
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Managed certificates whose last attempt failed (through the `state` index), by name,
    /// each with that attempt's error; only `tenant`'s when given, at most `limit`.
    pub async fn failing_managed(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(ManagedRecord, Option<String>)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, (SELECT r.error FROM renewal_attempts r WHERE r.managed_name = managed_certificates.name \
               ORDER BY r.id DESC LIMIT 1) AS last_error \
             FROM managed_certificates WHERE state = 'failing' AND ($1 = '' OR tenant = $1) ORDER BY name LIMIT $2"
        ))
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((decode(row)?, row.try_get("last_error")?)))
            .collect()
    }

    /// The latest attempts of a managed certificate, newest first.
    pub async fn renewal_attempts(
        &self,
        name: &str,
        limit: i64,
    ) -> Result<Vec<RenewalAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT managed_name, started_at, duration_ms, issuer, outcome, error, serial \
             FROM renewal_attempts WHERE managed_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RenewalAttempt {
                    managed_name: row.try_get("managed_name")?,
                    started_at: row.try_get("started_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    issuer: row.try_get("issuer")?,
                    outcome: row.try_get("outcome")?,
                    error: row.try_get("error")?,
                    serial: row.try_get("serial")?,
                })
            })
            .collect()
    }
}
