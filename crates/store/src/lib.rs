//! Persistence for certkeeper on sqlx: SQLite (the embedded default) and PostgreSQL,
//! with the same schema, the same queries and the same behaviour.
//!
//! Every write goes through [`Store::apply`]: one [`Change`] (certificates, tokens,
//! settings and the audit entries that describe them) commits in one transaction,
//! and `apply` returns only after the commit is durable. Concurrent changes are
//! grouped into one transaction by a single writer task (group commit), which also
//! keeps the audit hash chain in order.
#![forbid(unsafe_code)]

mod acme;
mod audit;
mod batch;
mod counts;
mod error;
mod fleet;
mod inventory;
mod managed;
mod model;
mod observe;
mod tokens;
mod writer;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use tokio::sync::mpsc;

pub use audit::{AuditProblem, AuditReport, entry_hash};
pub use counts::{CertificateCounts, Grouping, PartialRollout};
pub use error::StoreError;
pub use fleet::*;
pub use model::*;
pub use observe::*;

/// Which database engine backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The secret that keys the audit hash chain (HMAC-SHA-256): without it, nobody who can only
/// write to the database can recompute a chain that verifies. Every process that writes or
/// verifies the same database needs the same key.
#[derive(Clone)]
pub struct AuditKey(aws_lc_rs::hmac::Key);

impl AuditKey {
    /// Length of a key, in bytes.
    pub const LEN: usize = 32;

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Self {
        AuditKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            bytes,
        ))
    }

    pub(crate) fn tag(&self, message: &[u8]) -> String {
        hex::encode(aws_lc_rs::hmac::sign(&self.0, message))
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    audit_key: AuditKey,
    writer: mpsc::Sender<writer::WriteRequest>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The URL of the embedded SQLite database inside a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("certkeeper.db").display()
    )
}

impl Store {
    /// Connects, creates or upgrades the schema, and starts the writer.
    ///
    /// `url` is `sqlite://PATH?mode=rwc` or `postgres://...`.
    pub async fn open(url: &str, audit_key: AuditKey) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(format!(
                "database URL {:?} is neither sqlite:// nor postgres://",
                redact_url(url)
            )));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL with synchronous=FULL: a commit returns after the WAL is fsynced.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Keep the hot pages in SQLite's own cache instead of re-reading them.
                        conn.execute("PRAGMA cache_size = -65536").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot connect to {}: {e}", redact_url(url)))
        })?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("schema migration failed: {e}")))?;
        let writer = writer::spawn(pool.clone(), backend, audit_key.clone());
        Ok(Store {
            pool,
            backend,
            audit_key,
            writer,
        })
    }

    /// Which engine this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Commits `change` durably, grouped with concurrent changes; returns what it did.
    pub async fn apply(&self, change: Change) -> Result<ChangeOutcome, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(writer::WriteRequest { change, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Closes the pool after the writer has drained.
    pub async fn close(self) {
        drop(self.writer);
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn audit_key(&self) -> &AuditKey {
        &self.audit_key
    }
}

/// Removes a password from a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
