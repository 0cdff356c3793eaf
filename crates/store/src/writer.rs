//! The single writer: groups concurrent changes into one transaction (group commit)
//! and appends their audit entries to the hash chain in order.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::batch;
use crate::{AuditKey, Backend, Change, ChangeOutcome, StoreError, now_ms};

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 512;

pub(crate) struct WriteRequest {
    pub change: Change,
    pub reply: oneshot::Sender<Result<ChangeOutcome, StoreError>>,
}

pub(crate) fn spawn(pool: AnyPool, backend: Backend, key: AuditKey) -> mpsc::Sender<WriteRequest> {
    let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(pool, backend, key, receiver));
    sender
}

async fn run(
    pool: AnyPool,
    backend: Backend,
    key: AuditKey,
    mut requests: mpsc::Receiver<WriteRequest>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let changes: Vec<&Change> = batch.iter().map(|r| &r.change).collect();
        let fast = if changes.iter().all(|c| batch::is_simple(c)) {
            commit_fast(&pool, backend, &key, &changes).await
        } else {
            Err(None)
        };
        let result = match fast {
            Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
            // A statement failed before COMMIT (nothing was written): redo the group change
            // by change so that only the failing ones fail.
            Err(None) => commit(&pool, backend, &key, &changes).await,
            // COMMIT itself failed: whether it took effect is unknown, so nothing is retried.
            Err(Some(error)) => Err(error),
        };
        match result {
            Ok(results) => {
                for (request, result) in batch.into_iter().zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(error) => {
                // The transaction as a whole failed (database unreachable, commit refused):
                // nothing is retried, every caller learns that nothing was acknowledged.
                let message = error.to_string();
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// Commits a group of simple changes with multi-row statements. `Err(None)`: a statement
/// failed and the transaction was rolled back; `Err(Some(_))`: the commit itself failed.
async fn commit_fast(
    pool: &AnyPool,
    backend: Backend,
    key: &AuditKey,
    changes: &[&Change],
) -> Result<Vec<ChangeOutcome>, Option<StoreError>> {
    let mut tx = pool.begin().await.map_err(|e| Some(e.into()))?;
    // A group without audit entries leaves the chain alone: no need to lock or move its head.
    let audited = changes.iter().any(|c| !c.audit.is_empty());
    let prepared = async {
        let mut chain: (i64, String) = if audited {
            let head: AnyRow =
                sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                    .fetch_one(&mut *tx)
                    .await?;
            (head.try_get("seq")?, head.try_get("hash")?)
        } else {
            (0, String::new())
        };
        let outcomes =
            batch::apply_group(&mut tx, backend, key, changes, now_ms(), &mut chain).await?;
        if audited {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(chain.0)
                .bind(&chain.1)
                .execute(&mut *tx)
                .await?;
        }
        Ok::<_, StoreError>(outcomes)
    }
    .await;
    match prepared {
        Ok(outcomes) => {
            tx.commit().await.map_err(|e| Some(e.into()))?;
            Ok(outcomes)
        }
        Err(_) => {
            let _ = tx.rollback().await;
            Err(None)
        }
    }
}

/// Commits a group of changes in one transaction. Each change runs inside its own
/// savepoint, so a change that fails (a conflict, a missing row) is rolled back alone and
/// reported to its caller while the others commit. The outer error means nothing committed.
async fn commit(
    pool: &AnyPool,
    backend: Backend,
    key: &AuditKey,
    changes: &[&Change],
) -> Result<Vec<Result<ChangeOutcome, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    // Taking the head row's write lock first serialises appenders, across processes too.
    let head: AnyRow =
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev_hash: String = head.try_get("hash")?;
    let now_ms = now_ms();
    let now_s = now_ms / 1000;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        sqlx::query("SAVEPOINT change").execute(&mut *tx).await?;
        let mut outcome = ChangeOutcome::default();
        let mut chain = (seq, prev_hash.clone());
        let applied = match apply_change(&mut tx, backend, change, now_s, &mut outcome).await {
            Ok(()) => {
                append_audit(
                    &mut tx,
                    backend,
                    key,
                    change,
                    now_ms,
                    &mut chain,
                    &mut outcome,
                )
                .await
            }
            Err(error) => Err(error),
        };
        match applied {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT change")
                    .execute(&mut *tx)
                    .await?;
                (seq, prev_hash) = chain;
                results.push(Ok(outcome));
            }
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT change")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT change")
                    .execute(&mut *tx)
                    .await?;
                results.push(Err(error));
            }
        }
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(results)
}

/// Appends the change's audit entries to the chain whose end is `chain` (seq, hash).
async fn append_audit(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    key: &AuditKey,
    change: &Change,
    now_ms: i64,
    chain: &mut (i64, String),
    outcome: &mut ChangeOutcome,
) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    batch::audit_rows(key, &change.audit, now_ms, chain, outcome, &mut rows);
    batch::insert_audit_rows(tx, backend, rows).await
}

async fn apply_change(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    change: &Change,
    now_s: i64,
    outcome: &mut ChangeOutcome,
) -> Result<(), StoreError> {
    let certificates: Vec<&crate::NewCertificate> = change.certificates.iter().collect();
    let ids = batch::insert_certificates(
        tx,
        backend,
        &certificates,
        change.skip_duplicate_certificates,
        now_s,
    )
    .await?;
    let mut seen = std::collections::HashSet::new();
    for cert in &change.certificates {
        let key = (cert.tenant.clone(), cert.fingerprint_sha256.clone());
        match ids.get(&key) {
            // The first copy in this change was inserted; a repeat is a duplicate too.
            Some(id) if seen.insert(key.clone()) => outcome.inserted_certificate_ids.push(*id),
            _ => outcome
                .duplicate_fingerprints
                .push(cert.fingerprint_sha256.clone()),
        }
    }
    for token in &change.tokens {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, tenant, secret_sha256, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.role)
        .bind(&token.tenant)
        .bind(&token.secret_sha256)
        .bind(now_s)
        .bind(&token.created_by)
        .bind(token.expires_at)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(id) = &change.revoke_token {
        let result = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_s)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("active token {id:?}")));
        }
    }
    for revocation in &change.revocations {
        // The first revocation stands; only an escalation to keyCompromise (1) changes the
        // reason and invalidity date. SET expressions read the row as it was, in both engines.
        let state = revocation.state;
        let row = sqlx::query(
            "UPDATE certificates SET \
               revocation_reason = CASE WHEN status = 'revoked' AND NOT ($1 = 1 AND revocation_reason <> 1) THEN revocation_reason ELSE $1 END, \
               invalidity_date = CASE WHEN status = 'revoked' AND NOT ($1 = 1 AND revocation_reason <> 1) THEN invalidity_date ELSE $2 END, \
               revoked_at = CASE WHEN status = 'revoked' THEN revoked_at ELSE $3 END, \
               status = 'revoked' \
             WHERE id = $4 RETURNING revocation_reason, invalidity_date, revoked_at",
        )
        .bind(state.reason)
        .bind(state.invalidity_date)
        .bind(state.revoked_at)
        .bind(revocation.certificate_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate {}", revocation.certificate_id)))?;
        outcome.revocations.push((
            revocation.certificate_id,
            crate::RevocationState {
                revoked_at: row.try_get("revoked_at")?,
                reason: row.try_get("revocation_reason")?,
                invalidity_date: row.try_get("invalidity_date")?,
            },
        ));
    }
    for (name, value) in &change.settings {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    crate::managed::apply(tx, change, now_s).await?;
    crate::fleet::apply(tx, change, now_s).await?;
    crate::observe::apply(tx, change).await?;
    crate::acme::insert_new(tx, backend, &[change]).await?;
    crate::acme::apply_updates(
        tx,
        change,
        outcome.inserted_certificate_ids.first().copied(),
        now_s,
    )
    .await?;
    Ok(())
}
