//! The OCSP responder (RFC 6960, RFC 5019 profile): a delegated responder certificate issued
//! and rotated by certkeeper, answers for the issuing CA's certificates from the inventory,
//! and a cache of signed responses that a revocation invalidates at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use certkeeper_pki::{
    IssuerHashes, KeyAlgorithm, OcspAnswer, OcspQuery, OcspRefusal, OcspResponder, OcspStatus,
    RevocationReason, Signer, SoftwareKey, build_ocsp_responder_certificate, build_ocsp_response,
    ocsp_refusal, parse_certificate, pem_to_der_certificates, random_serial, read_ocsp_request,
    to_pem,
};
use certkeeper_store::{CertificateSource, Store};
use time::{Duration, OffsetDateTime};

use crate::ServerError;
use crate::ca::LoadedCa;
use crate::files::{PRIVATE, PUBLIC, write_atomic};

/// Lifetime of the responder certificate; it is replaced when a third is left.
const RESPONDER_DAYS: i64 = 30;
/// Validity of a response (nextUpdate - thisUpdate).
pub const RESPONSE_VALIDITY_SECONDS: i64 = 24 * 3600;
/// A cached response is re-signed when less than this much validity is left.
pub const REFRESH_BEFORE_SECONDS: i64 = 12 * 3600;

/// A signed response kept for reuse.
#[derive(Clone)]
pub struct CachedResponse {
    /// DER (cheap to clone and to hand to the HTTP layer).
    pub der: axum::body::Bytes,
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate.
    pub next_update: i64,
    /// Whether any certificate in it is `unknown` (such answers are not cached).
    pub unknown: bool,
}

/// Most cached responses kept; past this the cache starts over.
const CACHE_LIMIT: usize = 200_000;

struct CacheEntry {
    query: OcspQuery,
    response: CachedResponse,
}

/// The responder with its cache of signed responses.
pub struct OcspService {
    responder: RwLock<Arc<OcspResponder>>,
    issuer: IssuerHashes,
    issuer_dn: String,
    /// Signed answers to single-certificate, nonce-free requests, keyed by the CertID as asked
    /// (so request padding cannot grow it). `unknown` answers are never cached.
    cache: RwLock<HashMap<[u8; 32], CacheEntry>>,
    /// Bumped by every revocation and rotation: an answer signed from a status read before the
    /// bump is not cached, so it cannot overwrite the re-signed one.
    generation: AtomicU64,
    /// Responses signed with the responder key since start (key use, for `/metrics`).
    signatures: AtomicU64,
    /// Whether starting signed a new responder certificate with the issuing key.
    issued_at_start: bool,
}

/// See [`OcspService::freshness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspFreshness {
    /// The responder certificate's notAfter, Unix seconds.
    pub responder_not_after: i64,
    /// Oldest thisUpdate among cached answers.
    pub oldest_this_update: Option<i64>,
    /// Earliest nextUpdate among cached answers.
    pub earliest_next_update: Option<i64>,
    /// Cached answers.
    pub cached: usize,
}

/// The answer to one HTTP request.
pub enum OcspReply {
    /// A signed response (from the cache or fresh).
    Signed(CachedResponse),
    /// An unsigned error response (malformedRequest, unauthorized).
    Refused(Vec<u8>),
}

impl OcspService {
    /// Loads or issues the responder certificate under `<data_dir>/ocsp`.
    pub async fn start(data_dir: &Path, ca: &LoadedCa, store: &Store) -> Result<Self, ServerError> {
        let (responder, issued_at_start) = ensure_responder(data_dir, ca, store).await?;
        Ok(OcspService {
            responder: RwLock::new(Arc::new(responder)),
            issuer: IssuerHashes::of(ca.issuer.certificate_der())?,
            issuer_dn: parse_certificate(ca.issuer.certificate_der())?.subject,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
            issued_at_start,
        })
    }

    /// Whether starting signed a new responder certificate with the issuing key (a key use
    /// to count once metrics exist).
    pub fn issued_at_start(&self) -> bool {
        self.issued_at_start
    }

    /// Replaces the responder certificate when it nears its end; true when the issuing key
    /// signed a new one.
    pub async fn rotate_if_due(
        &self,
        data_dir: &Path,
        ca: &LoadedCa,
        store: &Store,
    ) -> Result<bool, ServerError> {
        let (fresh, issued) = ensure_responder(data_dir, ca, store).await?;
        let changed = self
            .responder
            .read()
            .map(|current| current.certificate_der() != fresh.certificate_der())
            .unwrap_or(true);
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut slot) = self.responder.write() {
                *slot = Arc::new(fresh);
            }
            if let Ok(mut cache) = self.cache.write() {
                cache.clear();
            }
        }
        Ok(issued)
    }

    /// After a revocation has committed: re-signs, at once, every cached answer about `serial`,
    /// so the next client sees the new status.
    pub async fn revoked(&self, store: &Store, serial: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let queries: Vec<([u8; 32], OcspQuery)> = self
            .cache
            .read()
            .map(|cache| {
                cache
                    .iter()
                    .filter(|(_, e)| e.query.serial == serial)
                    .map(|(k, e)| (*k, e.query.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, query) in queries {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let signed = self
                .sign(store, std::slice::from_ref(&query), None, now)
                .await;
            if let Ok(mut cache) = self.cache.write() {
                match signed {
                    Ok(response) => {
                        cache.insert(key, CacheEntry { query, response });
                    }
                    Err(error) => {
                        tracing::error!(%error, serial, "could not re-sign an OCSP response; dropping it");
                        cache.remove(&key);
                    }
                }
            }
        }
    }

    /// Responses signed since start.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// How fresh the responder is: its certificate's notAfter, and the oldest thisUpdate and
    /// earliest nextUpdate among the cached answers (None with an empty cache).
    pub fn freshness(&self) -> OcspFreshness {
        let responder_not_after = self
            .responder
            .read()
            .ok()
            .and_then(|r| certkeeper_pki::parse_certificate(r.certificate_der()).ok())
            .map_or(0, |summary| summary.not_after);
        let (oldest, earliest, cached) = self
            .cache
            .read()
            .map(|cache| {
                cache
                    .values()
                    .fold((None, None, 0usize), |(old, next, n), e| {
                        (
                            Some(old.map_or(e.response.this_update, |o: i64| {
                                o.min(e.response.this_update)
                            })),
                            Some(next.map_or(e.response.next_update, |x: i64| {
                                x.min(e.response.next_update)
                            })),
                            n + 1,
                        )
                    })
            })
            .unwrap_or((None, None, 0));
        OcspFreshness {
            responder_not_after,
            oldest_this_update: oldest,
            earliest_next_update: earliest,
            cached,
        }
    }

    /// Re-signs cached answers that are within [`REFRESH_BEFORE_SECONDS`] of their nextUpdate.
    pub async fn refresh_due(&self, store: &Store) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let due: Vec<([u8; 32], OcspQuery)> = self
            .cache
            .read()
            .map(|cache| {
                cache
                    .iter()
                    .filter(|(_, e)| e.response.next_update - now <= REFRESH_BEFORE_SECONDS)
                    .map(|(k, e)| (*k, e.query.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, query) in due {
            let generation = self.generation.load(Ordering::SeqCst);
            match self
                .sign(store, std::slice::from_ref(&query), None, now)
                .await
            {
                Ok(response) => self.store_answer(key, query, response, generation),
                Err(error) => tracing::error!(%error, "could not refresh an OCSP response"),
            }
        }
    }

    /// Answers a DER OCSP request: from the cache when a fresh answer to the same CertID is
    /// there, else freshly signed.
    pub async fn answer(&self, store: &Store, request: &[u8]) -> Result<OcspReply, ServerError> {
        let queries = match read_ocsp_request(request, &self.issuer) {
            Ok(queries) => queries,
            Err(refusal) => return Ok(OcspReply::Refused(ocsp_refusal(refusal))),
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let single = match (queries.nonce.is_none(), queries.queries.as_slice()) {
            (true, [query]) => Some(query),
            _ => None,
        };
        let key = single.map(OcspQuery::cache_key);
        if let (Some(key), Ok(cache)) = (key, self.cache.read())
            && let Some(hit) = cache.get(&key)
            && hit.response.next_update - now > REFRESH_BEFORE_SECONDS
        {
            return Ok(OcspReply::Signed(hit.response.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let response = self
            .sign(store, &queries.queries, queries.nonce.as_deref(), now)
            .await?;
        if let (Some(key), Some(query)) = (key, single) {
            self.store_answer(key, query.clone(), response.clone(), generation);
        }
        Ok(OcspReply::Signed(response))
    }

    /// Caches an answer unless a revocation or rotation happened since its status was read,
    /// or it says `unknown`.
    fn store_answer(
        &self,
        key: [u8; 32],
        query: OcspQuery,
        response: CachedResponse,
        generation: u64,
    ) {
        if response.unknown {
            return;
        }
        if let Ok(mut cache) = self.cache.write()
            && self.generation.load(Ordering::SeqCst) == generation
        {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, CacheEntry { query, response });
        }
    }

    /// Looks up each certificate and signs one response for all of them.
    async fn sign(
        &self,
        store: &Store,
        queries: &[OcspQuery],
        nonce: Option<&[u8]>,
        now: i64,
    ) -> Result<CachedResponse, ServerError> {
        let mut answers = Vec::with_capacity(queries.len());
        for query in queries {
            answers.push(OcspAnswer {
                query,
                status: self.status(store, &query.serial, now).await?,
                this_update: now,
                next_update: now + RESPONSE_VALIDITY_SECONDS,
            });
        }
        let unknown = answers.iter().any(|a| a.status == OcspStatus::Unknown);
        let responder = self
            .responder
            .read()
            .map(|r| r.clone())
            .map_err(|_| ServerError::Ca("the OCSP responder lock is poisoned".into()))?;
        let der = build_ocsp_response(&responder, &answers, now, nonce)?;
        self.signatures.fetch_add(1, Ordering::Relaxed);
        Ok(CachedResponse {
            der: der.into(),
            this_update: now,
            next_update: now + RESPONSE_VALIDITY_SECONDS,
            unknown,
        })
    }

    async fn status(
        &self,
        store: &Store,
        serial: &str,
        now: i64,
    ) -> Result<OcspStatus, ServerError> {
        let record = store
            .certificates_by_serial(serial, now)
            .await?
            .into_iter()
            .find(|r| {
                r.certificate.issuer == self.issuer_dn
                    && r.certificate.source == CertificateSource::Issued
            });
        Ok(match record {
            None => OcspStatus::Unknown,
            Some(record) => match record.revocation {
                Some(revocation) => OcspStatus::Revoked {
                    at: revocation.revoked_at,
                    reason: RevocationReason::from_code(revocation.reason)
                        .unwrap_or(RevocationReason::Unspecified),
                },
                None => OcspStatus::Good,
            },
        })
    }
}

/// Loads the responder from `<data_dir>/ocsp`, or issues a new one when it is missing,
/// belongs to another CA, or has less than a third of its life left (then `true`: the
/// issuing key signed it).
async fn ensure_responder(
    data_dir: &Path,
    ca: &LoadedCa,
    store: &Store,
) -> Result<(OcspResponder, bool), ServerError> {
    let cert_path = data_dir.join("ocsp/responder.crt");
    let key_path = data_dir.join("ocsp/responder.key");
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| ServerError::Ca(e.to_string()))?;
    let ca_key_id = parse_certificate(ca.issuer.certificate_der())?.subject_key_id;
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let der = pem_to_der_certificates(cert_pem.as_bytes())
            .ok()
            .and_then(|d| d.into_iter().next());
        if let Some(der) = der
            && let Ok(summary) = parse_certificate(&der)
            && summary.authority_key_id == ca_key_id
            && summary.not_after - now.unix_timestamp() > RESPONDER_DAYS * 86_400 / 3
            && let Ok(key) = SoftwareKey::from_pem(&key_pem)
            && let Ok(responder) = OcspResponder::new(der, Arc::new(key))
        {
            return Ok((responder, false));
        }
    }
    let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256)?;
    let der = build_ocsp_responder_certificate(
        &ca.issuer,
        key.public_key(),
        random_serial()?,
        now - Duration::seconds(60),
        now + Duration::days(RESPONDER_DAYS),
        "certkeeper OCSP Responder",
    )?;
    crate::inventory::record_own_certificate(
        store,
        &der,
        "ocsp-responder",
        serde_json::json!({"purpose": "OCSP responder"}),
    )
    .await?;
    write_atomic(&key_path, key.pkcs8_pem().as_bytes(), PRIVATE)?;
    write_atomic(&cert_path, to_pem("CERTIFICATE", &der).as_bytes(), PUBLIC)?;
    let signer: Arc<dyn Signer> = Arc::new(key);
    Ok((OcspResponder::new(der, signer)?, true))
}

/// Refusal for a request body that could not be read (too large, cut off).
pub fn malformed() -> Vec<u8> {
    ocsp_refusal(OcspRefusal::Malformed)
}
