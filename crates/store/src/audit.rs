//! The audit hash chain: how an entry's hash is computed and how the chain is verified.

use serde::Serialize;
use sqlx::Row;

use crate::{AuditKey, AuditRecord, Store, StoreError};

/// The hash the chain starts from (the "previous hash" of entry 1).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// HMAC-SHA-256 under the audit key over an unambiguous encoding (a JSON array) of every
/// field of an entry and the previous entry's hash, hex.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    key: &AuditKey,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    object: &str,
    outcome: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let encoded = serde_json::json!([
        seq, at_ms, actor, action, object, outcome, detail, prev_hash
    ])
    .to_string();
    key.tag(encoded.as_bytes())
}

/// One thing wrong with the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The entry where the problem shows.
    pub seq: i64,
    /// What is wrong, in words.
    pub problem: String,
}

/// Result of verifying the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Entries read.
    pub entries: i64,
    /// Problems found, in chain order; empty when the chain is intact.
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const PAGE: i64 = 5_000;

fn record(row: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        object: row.try_get("object")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

impl Store {
    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, action, object, outcome, detail, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit.clamp(1, PAGE))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Walks the chain up to its recorded end and reports every edited, deleted, inserted or
    /// reordered entry. Safe on a live server: entries appended while it runs are not mistaken
    /// for insertions.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let (head_seq, head_hash) = self.audit_head().await?;
        let mut problems = Vec::new();
        let mut expected_seq = 1;
        let mut prev_hash = GENESIS_HASH.to_string();
        let mut entries = 0;
        let mut after = 0;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at_ms, actor, action, object, outcome, detail, prev_hash, hash FROM audit_log \
                 WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            )
            .bind(after)
            .bind(head_seq)
            .bind(PAGE)
            .fetch_all(self.pool())
            .await?;
            let page = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in page {
                entries += 1;
                if entry.seq != expected_seq {
                    problems.push(AuditProblem {
                        seq: entry.seq,
                        problem: format!(
                            "entries {expected_seq} to {} are missing (deleted)",
                            entry.seq - 1
                        ),
                    });
                } else if entry.prev_hash != prev_hash {
                    problems.push(AuditProblem {
                        seq: entry.seq,
                        problem: format!(
                            "entry {} does not follow the entry before it (entries were inserted, deleted or reordered here)",
                            entry.seq
                        ),
                    });
                }
                let recomputed = entry_hash(
                    self.audit_key(),
                    entry.seq,
                    entry.at_ms,
                    &entry.actor,
                    &entry.action,
                    &entry.object,
                    &entry.outcome,
                    &entry.detail,
                    &entry.prev_hash,
                );
                if recomputed != entry.hash {
                    problems.push(AuditProblem {
                        seq: entry.seq,
                        problem: format!(
                            "entry {} was edited (its content no longer matches its hash under the audit key)",
                            entry.seq
                        ),
                    });
                }
                expected_seq = entry.seq + 1;
                prev_hash = entry.hash;
            }
        }
        let last_seq = expected_seq - 1;
        if last_seq < head_seq {
            problems.push(AuditProblem {
                seq: last_seq + 1,
                problem: format!(
                    "entries {} to {head_seq} are missing (deleted from the end)",
                    last_seq + 1
                ),
            });
        } else if head_seq > 0 && prev_hash != head_hash {
            problems.push(AuditProblem {
                seq: head_seq,
                problem: format!("entry {head_seq} does not match the recorded end of the chain"),
            });
        }
        // Rows past the head that the writer did not put there (it moves the head in the same
        // transaction as it appends, so a committed append is always below the current head).
        let row = sqlx::query("SELECT MAX(seq) AS max_seq FROM audit_log")
            .fetch_one(self.pool())
            .await?;
        let max_seq: Option<i64> = row.try_get("max_seq")?;
        let (current_head, _) = self.audit_head().await?;
        if let Some(max_seq) = max_seq.filter(|max| *max > current_head) {
            problems.push(AuditProblem {
                seq: current_head + 1,
                problem: format!(
                    "entries {} to {max_seq} were inserted after the recorded end of the chain",
                    current_head + 1
                ),
            });
        }
        Ok(AuditReport { entries, problems })
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok((head.try_get("seq")?, head.try_get("hash")?))
    }
}
