//! CRL publication: builds the full CRL and its partitions from the inventory, keeps the
//! signed DER in memory for serving, and rebuilds on a schedule and shortly after revocations
//! (one rebuild for a burst).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use certkeeper_pki::{CrlEntry, CrlRequest, RevocationReason, build_crl, parse_certificate};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::CrlSection;
use crate::{ServerError, SharedState};

/// A signed CRL ready to serve.
#[derive(Debug)]
pub struct CrlDocument {
    /// DER.
    pub der: Vec<u8>,
    /// Strong validator: quoted SHA-256 prefix of the DER.
    pub etag: String,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

/// The CRLs being served, and the trigger that rebuilds them.
pub struct CrlPublisher {
    settings: CrlSection,
    documents: RwLock<HashMap<String, Arc<CrlDocument>>>,
    wake: Notify,
    last_number: std::sync::atomic::AtomicU64,
}

/// The partition a certificate with this serial belongs to.
pub fn shard_of(serial: &[u8], shards: u32) -> i64 {
    let mut tail = [0u8; 8];
    let start = serial.len().saturating_sub(8);
    tail[8 - (serial.len() - start)..].copy_from_slice(&serial[start..]);
    i64::try_from(u64::from_be_bytes(tail) % u64::from(shards.max(1))).unwrap_or(0)
}

/// File name of a CRL: `intermediate.crl` (full) or `intermediate-N.crl` (partition N).
pub fn crl_name(shard: Option<i64>) -> String {
    match shard {
        None => "intermediate.crl".into(),
        Some(n) => format!("intermediate-{n}.crl"),
    }
}

impl CrlPublisher {
    /// A publisher with no CRL built yet.
    pub fn new(settings: CrlSection) -> Self {
        CrlPublisher {
            settings,
            documents: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            last_number: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How often CRLs are rebuilt without revocations, seconds.
    pub fn refresh_seconds(&self) -> u64 {
        self.settings.refresh
    }

    /// The partition count.
    pub fn shards(&self) -> u32 {
        self.settings.shards
    }

    /// The CRL served under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<CrlDocument>> {
        self.documents
            .read()
            .ok()
            .and_then(|docs| docs.get(name).cloned())
    }

    /// Every CRL being served: (name, thisUpdate, nextUpdate), Unix seconds, by name.
    pub fn freshness(&self) -> Vec<(String, i64, i64)> {
        let mut out: Vec<(String, i64, i64)> = self
            .documents
            .read()
            .map(|docs| {
                docs.iter()
                    .map(|(name, doc)| {
                        (
                            name.clone(),
                            doc.this_update.unix_timestamp(),
                            doc.next_update.unix_timestamp(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Asks for a rebuild soon (debounced).
    pub fn revoked(&self) {
        self.wake.notify_one();
    }

    /// Builds every CRL now from the store.
    pub async fn rebuild(&self, state: &SharedState) -> Result<(), ServerError> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .map_err(|e| ServerError::Ca(e.to_string()))?;
        let issuer = parse_certificate(state.ca.issuer.certificate_der())?.subject;
        let validity =
            time::Duration::seconds(i64::try_from(self.settings.validity).unwrap_or(86_400));
        // Time-based CRL numbers grow with every build and need no shared counter between
        // replicas; within a process they never repeat or go back, even if the clock does.
        let clock = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let number = {
            let previous = self.last_number.load(std::sync::atomic::Ordering::SeqCst);
            let next = clock.max(previous + 1);
            self.last_number
                .store(next, std::sync::atomic::Ordering::SeqCst);
            next
        };
        // Partitions named by certificates issued under an earlier, larger shard count keep
        // being published.
        let partitions =
            i64::from(self.settings.shards).max(state.store.max_crl_shard(&issuer).await? + 1);
        let mut scopes: Vec<Option<i64>> = vec![None];
        if partitions > 1 {
            scopes.extend((0..partitions).map(Some));
        }
        let mut built = HashMap::with_capacity(scopes.len());
        for scope in scopes {
            let rows = state
                .store
                .revoked_entries(&issuer, scope, now.unix_timestamp())
                .await?;
            let entries: Vec<CrlEntry> = rows
                .into_iter()
                .map(|(serial, revocation)| CrlEntry {
                    serial,
                    revoked_at: revocation.revoked_at,
                    reason: RevocationReason::from_code(revocation.reason)
                        .unwrap_or(RevocationReason::Unspecified),
                    invalidity_date: revocation.invalidity_date,
                })
                .collect();
            let name = crl_name(scope);
            let url = format!("{}/crl/{name}", state.base_url);
            let der = build_crl(
                &CrlRequest {
                    number,
                    this_update: now,
                    next_update: now + validity,
                    entries: &entries,
                    partition_url: scope.map(|_| url.as_str()),
                },
                &state.ca.issuer,
            )?;
            state.metrics.key_use("issuing", "crl");
            let etag = format!("\"{}\"", &certkeeper_pki::sha256_hex(&der)[..32]);
            built.insert(
                name,
                Arc::new(CrlDocument {
                    der,
                    etag,
                    this_update: now,
                    next_update: now + validity,
                }),
            );
        }
        if let Ok(mut documents) = self.documents.write() {
            *documents = built;
        }
        Ok(())
    }
}

/// Rebuilds on the refresh schedule and `debounce_ms` after a revocation.
pub fn spawn(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let publisher = &state.crls;
        let refresh = Duration::from_secs(publisher.settings.refresh);
        let debounce = Duration::from_millis(publisher.settings.debounce_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(refresh) => {}
                _ = publisher.wake.notified() => tokio::time::sleep(debounce).await,
            }
            if let Err(error) = publisher.rebuild(&state).await {
                tracing::error!(%error, "CRL rebuild failed; serving the previous CRLs");
            }
        }
    })
}
