//! The fast path of group commit: every certificate, label and audit entry of a group in
//! a few multi-row statements, instead of one round trip per row.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use crate::audit::entry_hash;
use crate::{AuditEvent, AuditKey, Backend, Change, ChangeOutcome, NewCertificate, StoreError};

/// A value to bind.
pub(crate) enum Bind {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
}

/// Rows per INSERT statement (well inside SQLite's and PostgreSQL's parameter limits).
const ROWS_PER_STATEMENT: usize = 400;

/// Executes `INSERT ... VALUES (...), (...) <suffix>` for `rows`, each of `width` values, and
/// returns the rows of its RETURNING clause, if any.
pub(crate) async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    head: &str,
    width: usize,
    rows: Vec<Vec<Bind>>,
    suffix: &str,
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let mut returned = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Bind>> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let mut sql = String::with_capacity(head.len() + chunk.len() * width * 5);
        sql.push_str(head);
        sql.push_str(" VALUES ");
        let mut n = 0;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 0..width {
                n += 1;
                if j > 0 {
                    sql.push_str(", ");
                }
                // SQLite binds plain `?` by position; named `$n` costs a scan per parameter there.
                match backend {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        sql.push('$');
                        sql.push_str(&n.to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql.push_str(suffix);
        let mut query = sqlx::query(&sql);
        for value in chunk.into_iter().flatten() {
            query = match value {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
                Bind::OptText(v) => query.bind(v),
                Bind::Bytes(v) => query.bind(v),
            };
        }
        returned.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(returned)
}

/// Text the inventory's name search looks in: the CN and every SAN value, lower case.
pub(crate) fn search_text(cert: &NewCertificate) -> String {
    let mut search = cert.common_name.clone().unwrap_or_default();
    for san in &cert.sans {
        search.push(' ');
        search.push_str(san.split_once(':').map_or(san.as_str(), |(_, value)| value));
    }
    search.to_lowercase()
}

fn json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Applies certificate inserts and audit appends of changes that only add certificates and
/// audit entries. Any error leaves the transaction to be rolled back by the caller.
pub(crate) async fn apply_group(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    key: &AuditKey,
    changes: &[&Change],
    now_ms: i64,
    chain: &mut (i64, String),
) -> Result<Vec<ChangeOutcome>, StoreError> {
    let certificates: Vec<&NewCertificate> =
        changes.iter().flat_map(|c| c.certificates.iter()).collect();
    let ids = insert_certificates(tx, backend, &certificates, false, now_ms / 1000).await?;
    crate::acme::insert_new(tx, backend, changes).await?;

    let mut outcomes = Vec::with_capacity(changes.len());
    let mut audit_rows_out = Vec::new();
    for change in changes {
        let mut outcome = ChangeOutcome::default();
        for cert in &change.certificates {
            let id = *ids
                .get(&(cert.tenant.clone(), cert.fingerprint_sha256.clone()))
                .ok_or_else(|| {
                    StoreError::Corrupt("an inserted certificate returned no id".into())
                })?;
            outcome.inserted_certificate_ids.push(id);
        }
        crate::acme::apply_updates(
            tx,
            change,
            outcome.inserted_certificate_ids.first().copied(),
            now_ms / 1000,
        )
        .await?;
        audit_rows(
            key,
            &change.audit,
            now_ms,
            chain,
            &mut outcome,
            &mut audit_rows_out,
        );
        outcomes.push(outcome);
    }
    insert_audit_rows(tx, backend, audit_rows_out).await?;
    Ok(outcomes)
}

/// Inserts certificates and their labels with multi-row statements. With `skip_duplicates`,
/// certificates already in their tenant's inventory are left out (not an error). Returns the
/// id of each inserted certificate by (tenant, fingerprint).
pub(crate) async fn insert_certificates(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    certificates: &[&NewCertificate],
    skip_duplicates: bool,
    now_s: i64,
) -> Result<HashMap<(String, String), i64>, StoreError> {
    let mut rows = Vec::with_capacity(certificates.len());
    for cert in certificates {
        rows.push(vec![
            Bind::Text(cert.serial.clone()),
            Bind::Text(cert.issuer.clone()),
            Bind::Text(cert.subject.clone()),
            Bind::OptText(cert.common_name.clone()),
            Bind::Text(json(&cert.sans)?),
            Bind::Text(search_text(cert)),
            Bind::Int(cert.not_before),
            Bind::Int(cert.not_after),
            Bind::Text(cert.key_algorithm.clone()),
            Bind::Text(cert.spki_sha256.clone()),
            Bind::Text(cert.fingerprint_sha256.clone()),
            Bind::OptText(cert.profile.clone()),
            Bind::Text(cert.tenant.clone()),
            Bind::Text(cert.requester.clone()),
            Bind::Text(cert.source.as_str().into()),
            Bind::Text("active".into()),
            Bind::Text(json(&cert.labels)?),
            Bind::Bytes(cert.der.clone()),
            Bind::Int(now_s),
            Bind::Int(cert.crl_shard),
        ]);
    }
    let suffix = if skip_duplicates {
        " ON CONFLICT (tenant, fingerprint_sha256) DO NOTHING RETURNING id, tenant, fingerprint_sha256"
    } else {
        " RETURNING id, tenant, fingerprint_sha256"
    };
    let returned = insert_rows(
        tx,
        backend,
        "INSERT INTO certificates (serial, issuer, subject, common_name, sans, san_search, not_before, not_after, \
         key_algorithm, spki_sha256, fingerprint_sha256, profile, tenant, requester, source, status, labels, der, created_at, crl_shard)",
        20,
        rows,
        suffix,
    )
    .await?;
    let mut ids: HashMap<(String, String), i64> = HashMap::with_capacity(returned.len());
    for row in &returned {
        ids.insert(
            (row.try_get("tenant")?, row.try_get("fingerprint_sha256")?),
            row.try_get("id")?,
        );
    }
    let mut label_rows = Vec::new();
    for cert in certificates {
        if let Some(id) = ids.get(&(cert.tenant.clone(), cert.fingerprint_sha256.clone())) {
            for (name, value) in &cert.labels {
                label_rows.push(vec![
                    Bind::Int(*id),
                    Bind::Text(name.clone()),
                    Bind::Text(value.clone()),
                ]);
            }
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO certificate_labels (certificate_id, name, value)",
        3,
        label_rows,
        "",
    )
    .await?;
    Ok(ids)
}

/// Builds the audit rows for `events`, chained on from `chain` (seq, hash of the last entry),
/// and records their sequence numbers in `outcome`.
pub(crate) fn audit_rows(
    key: &AuditKey,
    events: &[AuditEvent],
    now_ms: i64,
    chain: &mut (i64, String),
    outcome: &mut ChangeOutcome,
    rows: &mut Vec<Vec<Bind>>,
) {
    for event in events {
        let seq = chain.0 + 1;
        let detail = event.detail.to_string();
        let hash = entry_hash(
            key,
            seq,
            now_ms,
            &event.actor,
            &event.action,
            &event.object,
            event.outcome.as_str(),
            &detail,
            &chain.1,
        );
        rows.push(vec![
            Bind::Int(seq),
            Bind::Int(now_ms),
            Bind::Text(event.actor.clone()),
            Bind::Text(event.action.clone()),
            Bind::Text(event.object.clone()),
            Bind::Text(event.outcome.as_str().into()),
            Bind::Text(detail),
            Bind::Text(std::mem::take(&mut chain.1)),
            Bind::Text(hash.clone()),
        ]);
        outcome.audit_seqs.push(seq);
        *chain = (seq, hash);
    }
}

/// Inserts rows made by [`audit_rows`].
pub(crate) async fn insert_audit_rows(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    rows: Vec<Vec<Bind>>,
) -> Result<(), StoreError> {
    insert_rows(
        tx,
        backend,
        "INSERT INTO audit_log (seq, at_ms, actor, action, object, outcome, detail, prev_hash, hash)",
        9,
        rows,
        "",
    )
    .await?;
    Ok(())
}

/// Whether a change can take the fast path: only plain certificate inserts and audit entries.
pub(crate) fn is_simple(change: &Change) -> bool {
    !change.skip_duplicate_certificates
        && change.revocations.is_empty()
        && change.tokens.is_empty()
        && change.revoke_token.is_none()
        && change.settings.is_empty()
        && change.eab_keys.is_empty()
        && change.bind_eab.is_none()
        && change.supersede.is_empty()
        && change.managed_declarations.is_empty()
        && change.managed_outcomes.is_empty()
        && change.managed_renew_now.is_empty()
        && change.managed_reschedules.is_empty()
        && change.fleet.is_empty()
        && change.observe.is_empty()
}
