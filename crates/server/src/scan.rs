//! TLS endpoint scanning: connect, read the chain an endpoint serves, and say what is wrong
//! with it (expired, expiring, wrong name, incomplete chain, untrusted issuer, weak key,
//! revoked by its CRL or, when no CRL can be read, by its OCSP responder). `certkeeper scan`
//! and scheduled scans both use [`Scanner`]; the rules themselves live in `certkeeper_pki`
//! (`Finding`, `matches_name`, `read_ocsp_answer`, ...), the chain check is rustls' WebPKI
//! verifier.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use certkeeper_pki::{Finding, OcspVerdict};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::issuance::rfc3339;
use crate::lock;

/// Most endpoints one scan may cover (CIDR ranges times ports).
pub const MAX_TARGETS: usize = 65_536;
/// Endpoints recorded per change (and per `POST /api/v1/scans` from the CLI).
pub const RECORD_BATCH: usize = 200;
/// Largest CRL the scanner downloads.
const MAX_CRL_BYTES: usize = 32 * 1024 * 1024;
/// Most distinct OCSP requests (one per issuer key encoding) a check sends to each responder
/// URL: an EC key has three encodings (uncompressed, compressed, hybrid).
const MAX_OCSP_REQUESTS: usize = 4;

/// One endpoint to scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanTarget {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Found by sweeping a CIDR range rather than named: recorded only if it answered.
    pub from_range: bool,
}

/// Whether a scan of `target` is worth a row: it served something, or it was named (a named
/// endpoint that fails is news; a silent address of a swept range is not).
pub fn worth_recording(target: &ScanTarget, report: &ScanReport) -> bool {
    !report.chain.is_empty() || !target.from_range
}

impl ScanTarget {
    /// `host:port` (`[v6]:port` for IPv6).
    pub fn endpoint(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Expands target specifications — `host:port`, `host` (on each of `ports`), `[v6]:port`,
/// or a CIDR range such as `10.0.0.0/24` (each host address on each of `ports`) — into
/// endpoints, without duplicates, in order.
pub fn expand_targets(specs: &[String], ports: &[u16]) -> Result<Vec<ScanTarget>, String> {
    if ports.is_empty() {
        return Err("give at least one port".into());
    }
    let mut targets = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |target: ScanTarget| -> Result<(), String> {
        if seen.insert((target.host.clone(), target.port)) {
            targets.push(target);
        }
        if targets.len() > MAX_TARGETS {
            return Err(format!(
                "more than {MAX_TARGETS} endpoints; scan smaller ranges or fewer ports"
            ));
        }
        Ok(())
    };
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if spec.contains('/') {
            let net: ipnet::IpNet = spec
                .parse()
                .map_err(|_| format!("{spec:?} is not a CIDR range such as 10.0.0.0/24"))?;
            let hosts: Box<dyn Iterator<Item = IpAddr>> =
                if net.prefix_len() == net.max_prefix_len() {
                    Box::new(std::iter::once(net.addr()))
                } else {
                    Box::new(net.hosts())
                };
            for host in hosts {
                for port in ports {
                    push(ScanTarget {
                        host: host.to_string(),
                        port: *port,
                        from_range: true,
                    })?;
                }
            }
            continue;
        }
        let (host, port) = split_host_port(spec)?;
        match port {
            Some(port) => push(ScanTarget {
                host,
                port,
                from_range: false,
            })?,
            None => {
                for port in ports {
                    push(ScanTarget {
                        host: host.clone(),
                        port: *port,
                        from_range: false,
                    })?;
                }
            }
        }
    }
    Ok(targets)
}

fn split_host_port(spec: &str) -> Result<(String, Option<u16>), String> {
    let bad_port = |p: &str| format!("{spec:?}: {p:?} is not a port number (1-65535)");
    let parse_port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad_port(p)),
        Ok(port) => Ok(port),
    };
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{spec:?}: missing ']' after the IPv6 address"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{spec:?}: {host:?} is not an IPv6 address"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host.to_string(), Some(parse_port(port)?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!("{spec:?}: expected [address]:port")),
        };
    }
    if spec.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((spec.to_string(), None));
    }
    let (host, port) = match spec.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (spec, None),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{spec:?}: {host:?} is not a host name or address"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// What one endpoint served and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScanReport {
    /// `host:port`.
    pub endpoint: String,
    /// The name sent with SNI and checked against the SANs (empty for an IP address).
    pub server_name: String,
    /// When, Unix seconds.
    pub scanned_at: i64,
    /// Why nothing was read (connection refused, handshake failure, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Finding names: expired, not_yet_valid, expiring_soon, name_mismatch,
    /// incomplete_chain, untrusted_issuer, weak_key, revoked.
    #[serde(default)]
    pub findings: Vec<String>,
    /// One line per finding and per check that could not be made.
    #[serde(default)]
    pub details: Vec<String>,
    /// Serial of the served certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its notAfter, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// The chain as served, leaf first, base64 DER.
    #[serde(default)]
    pub chain: Vec<String>,
}

impl ScanReport {
    /// Whether the endpoint serves a certificate a client would accept (M1): something was
    /// served and no finding other than `expiring_soon`.
    pub fn valid(&self) -> bool {
        self.error.is_none()
            && !self.chain.is_empty()
            && self
                .findings
                .iter()
                .all(|f| Finding::parse(f).is_some_and(|f| !f.makes_invalid()))
    }
}

/// Settings of a scan.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// Trusted roots, PEM (any number of certificates).
    pub roots_pem: Vec<u8>,
    /// Intermediates the scanner knows but an endpoint should send itself, PEM: a chain
    /// that verifies only with them is `incomplete_chain`, not `untrusted_issuer`.
    pub known_intermediates_pem: Vec<u8>,
    /// Warn when a certificate expires within this many seconds.
    pub warn_within_seconds: i64,
    /// Connection and handshake timeout.
    pub timeout: Duration,
    /// Report revoked certificates: by the CRLs a served certificate names, or by its OCSP
    /// responder when it names no CRL or none can be read.
    pub check_revocation: bool,
}

/// A download shared by every endpoint that needs the same bytes (a CRL, an OCSP answer).
type SharedFetch = OnceCell<Result<Vec<u8>, String>>;
/// Downloads by key (a CRL's URL; an OCSP responder's URL and the request).
type Fetches<K> = Mutex<HashMap<K, Arc<SharedFetch>>>;

/// A chain verifier, how many CRLs it holds, and the notes for every endpoint it judges
/// (CRLs that could not be fetched or used).
#[derive(Clone)]
struct ChainVerifier {
    verifier: Arc<WebPkiServerVerifier>,
    crls: usize,
    notes: Vec<String>,
}

/// Scans endpoints; share one per scan run (it caches CRLs and verifiers).
pub struct Scanner {
    roots: Arc<RootCertStore>,
    known_intermediates: Vec<CertificateDer<'static>>,
    /// The trusted roots as certificates: where an OCSP check looks for a leaf's issuer.
    root_certificates: Vec<CertificateDer<'static>>,
    settings: ScanSettings,
    http: reqwest::Client,
    crls: Fetches<String>,
    /// OCSP answers by (responder URL, request).
    ocsp_answers: Fetches<(String, Vec<u8>)>,
    /// Verifiers by the CRL URLs they were built for.
    verifiers: Mutex<HashMap<Vec<String>, ChainVerifier>>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").finish_non_exhaustive()
    }
}

fn pem_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    certkeeper_pki::pem_to_der_certificates(pem)
        .map(|ders| ders.into_iter().map(CertificateDer::from).collect())
        .map_err(|e| format!("{what}: {e}"))
}

impl Scanner {
    /// A scanner trusting `settings.roots_pem`.
    pub fn new(settings: ScanSettings) -> Result<Scanner, String> {
        let mut roots = RootCertStore::empty();
        let root_certificates = pem_certificates(&settings.roots_pem, "trusted roots")?;
        let (added, _) = roots.add_parsable_certificates(root_certificates.clone());
        if added == 0 {
            return Err("no trusted root certificates: give --ca-file".into());
        }
        let known_intermediates =
            pem_certificates(&settings.known_intermediates_pem, "known intermediates")?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout.max(Duration::from_secs(1)) * 2)
            .user_agent(concat!("certkeeper-scan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Scanner {
            roots: Arc::new(roots),
            known_intermediates,
            root_certificates,
            settings,
            http,
            crls: Mutex::default(),
            ocsp_answers: Mutex::default(),
            verifiers: Mutex::default(),
        })
    }

    /// Scans one endpoint. Never fails: a connection problem is the report's `error`.
    pub async fn scan(&self, target: &ScanTarget) -> ScanReport {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let server_name = if target.host.parse::<IpAddr>().is_ok() {
            String::new()
        } else {
            target.host.clone()
        };
        let mut report = ScanReport {
            endpoint: target.endpoint(),
            server_name,
            scanned_at: now,
            error: None,
            findings: Vec::new(),
            details: Vec::new(),
            serial: None,
            subject: None,
            not_after: None,
            chain: Vec::new(),
        };
        match fetch_chain(&report.endpoint, &target.host, self.settings.timeout).await {
            Err(error) => report.error = Some(error),
            Ok(chain) => self.assess(&chain, &target.host, now, &mut report).await,
        }
        report
    }

    async fn assess(
        &self,
        chain: &[CertificateDer<'static>],
        expected_name: &str,
        now: i64,
        report: &mut ScanReport,
    ) {
        report.chain = chain
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_ref()))
            .collect();
        let Some(leaf) = chain.first() else {
            report.error = Some("the endpoint presented no certificate".into());
            return;
        };
        let summary = match certkeeper_pki::parse_certificate(leaf.as_ref()) {
            Ok(summary) => summary,
            Err(error) => {
                report.error = Some(format!("unreadable certificate: {error}"));
                return;
            }
        };
        report.serial = Some(summary.serial.clone());
        report.subject = Some(summary.subject.clone());
        report.not_after = Some(summary.not_after);

        let mut found: Vec<(Finding, String)> = Vec::new();
        if let Some(finding) = certkeeper_pki::validity_findings(
            summary.not_before,
            summary.not_after,
            now,
            self.settings.warn_within_seconds,
        ) {
            let detail = match finding {
                Finding::NotYetValid => format!("not valid before {}", rfc3339(summary.not_before)),
                Finding::Expired => format!("expired at {}", rfc3339(summary.not_after)),
                _ => format!("expires at {}", rfc3339(summary.not_after)),
            };
            found.push((finding, detail));
        }
        if !certkeeper_pki::matches_name(&summary.sans, expected_name) {
            found.push((
                Finding::NameMismatch,
                format!("{expected_name} is not among the certificate's names"),
            ));
        }
        if let Some(reason) = certkeeper_pki::weak_key_reason(leaf.as_ref()) {
            found.push((Finding::WeakKey, reason));
        }
        found.extend(self.check_chain(chain, &summary, now, report).await);
        found.sort();
        found.dedup_by_key(|(finding, _)| *finding);
        for (finding, detail) in found {
            report.findings.push(finding.as_str().to_string());
            report
                .details
                .push(format!("{}: {detail}", finding.as_str()));
        }
    }

    /// Verifies the chain (with the CRLs the leaf names, or else its OCSP responder) and
    /// returns what is wrong with it.
    async fn check_chain(
        &self,
        chain: &[CertificateDer<'static>],
        summary: &certkeeper_pki::CertificateSummary,
        now: i64,
        report: &mut ScanReport,
    ) -> Vec<(Finding, String)> {
        let Some(leaf) = chain.first() else {
            return Vec::new();
        };
        // The chain is judged at a moment inside the leaf's validity, under a name it holds,
        // so that an expired certificate or a wrong name does not hide a chain problem.
        let at = UnixTime::since_unix_epoch(Duration::from_secs(
            // (max then min: notBefore after notAfter must not panic)
            now.max(summary.not_before).min(summary.not_after).max(0) as u64,
        ));
        let chain_name = summary
            .sans
            .iter()
            .find_map(|san| match san {
                certkeeper_pki::SanEntry::Dns(name) => {
                    ServerName::try_from(name.replace("*.", "wildcard.")).ok()
                }
                certkeeper_pki::SanEntry::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
                _ => None,
            })
            .unwrap_or(ServerName::IpAddress(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
            ));
        let crl_urls = if self.settings.check_revocation {
            certkeeper_pki::crl_distribution_urls(leaf.as_ref())
        } else {
            Vec::new()
        };
        let (verifier, crls_read) = match self.verifier(&crl_urls, &mut report.details).await {
            Ok(verified) => verified,
            Err(error) => {
                report.details.push(format!("chain not checked: {error}"));
                return Vec::new();
            }
        };
        let found = judge_chain(&verifier, chain, &self.known_intermediates, &chain_name, at);
        // OCSP when no CRL could say anything, and only for a chain that leads to a trusted
        // root: an answer is believed only when the leaf's issuer vouches for it.
        let chain_trusted = found.as_ref().is_none_or(|(finding, _)| {
            matches!(finding, Finding::IncompleteChain | Finding::NameMismatch)
        });
        let revoked_by_ocsp = if self.settings.check_revocation && crls_read == 0 && chain_trusted {
            self.check_ocsp(chain, now, &mut report.details).await
        } else {
            None
        };
        found.into_iter().chain(revoked_by_ocsp).collect()
    }

    /// Asks the leaf's OCSP responder; `Some` when the answer, signed for the leaf's issuer,
    /// says revoked. What prevents an answer is noted in `details`.
    async fn check_ocsp(
        &self,
        chain: &[CertificateDer<'static>],
        now: i64,
        details: &mut Vec<String>,
    ) -> Option<(Finding, String)> {
        let leaf = chain.first()?.as_ref();
        let urls = certkeeper_pki::ocsp_responder_urls(leaf);
        if urls.is_empty() {
            return None;
        }
        // The issuer's certificate: the scanner's own first, then what the endpoint sent. A
        // served look-alike (same name, same key encoded otherwise) makes the request name
        // another issuer key and gets no usable answer: each distinct request is tried in
        // turn. However many look-alikes are served, a key has only a few encodings, so the
        // distinct requests are few and the real issuer's is among them.
        let candidates = self
            .known_intermediates
            .iter()
            .chain(&self.root_certificates)
            .chain(&chain[1..])
            .map(|c| c.as_ref());
        let issuers = certkeeper_pki::find_issuers(leaf, candidates);
        if issuers.is_empty() {
            details.push(
                "revocation not checked: the issuer certificate an OCSP answer needs is not known"
                    .into(),
            );
            return None;
        }
        let mut problems = Vec::new();
        let mut requests: Vec<(&[u8], Vec<u8>)> = Vec::new();
        for issuer in issuers {
            match certkeeper_pki::build_ocsp_check_request(leaf, issuer) {
                Ok(request) if requests.iter().all(|(_, r)| *r != request) => {
                    requests.push((issuer, request));
                }
                Ok(_) => {}
                Err(error) => problems.push(error.to_string()),
            }
        }
        for (issuer, request) in requests.into_iter().take(MAX_OCSP_REQUESTS) {
            for url in &urls {
                let verdict = self.ocsp_answer(url, &request).await.and_then(|answer| {
                    certkeeper_pki::read_ocsp_answer(&answer, leaf, issuer, now)
                        .map_err(|e| format!("{url}: {e}"))
                });
                match verdict {
                    Ok(OcspVerdict::Good) => return None,
                    Ok(OcspVerdict::Revoked { at, reason }) => {
                        let reason = reason.map(|r| format!(", {r}")).unwrap_or_default();
                        return Some((
                            Finding::Revoked,
                            format!(
                                "revoked since {}{reason}, says its issuer's OCSP responder",
                                rfc3339(at)
                            ),
                        ));
                    }
                    Ok(OcspVerdict::Unknown) => problems.push(format!(
                        "the OCSP responder {url} does not know the certificate"
                    )),
                    Err(error) => problems.push(error),
                }
            }
        }
        problems.dedup();
        details.extend(
            problems
                .into_iter()
                .map(|problem| format!("revocation not checked: {problem}")),
        );
        None
    }

    /// A verifier over the trusted roots and the CRLs at `urls`, and how many CRLs it holds.
    /// Built once per set of URLs per scan run (each CRL fetched once); a CRL that cannot be
    /// fetched or used is left out, and every endpoint relying on it gets the note.
    async fn verifier(
        &self,
        urls: &[String],
        details: &mut Vec<String>,
    ) -> Result<(Arc<WebPkiServerVerifier>, usize), String> {
        let key: Vec<String> = urls.to_vec();
        let cached = lock(&self.verifiers).get(&key).cloned();
        let built = match cached {
            Some(built) => built,
            None => {
                let built = self.build_verifier(urls).await?;
                lock(&self.verifiers).insert(key, built.clone());
                built
            }
        };
        details.extend(built.notes.iter().cloned());
        Ok((built.verifier, built.crls))
    }

    async fn build_verifier(&self, urls: &[String]) -> Result<ChainVerifier, String> {
        let mut notes = Vec::new();
        let mut crls = Vec::new();
        for url in urls {
            match self.crl(url).await {
                Ok(der) => crls.push(CertificateRevocationListDer::from(der)),
                Err(error) => notes.push(format!("revocation not checked: {error}")),
            }
        }
        let build = |crls: Vec<CertificateRevocationListDer<'static>>| {
            WebPkiServerVerifier::builder_with_provider(
                self.roots.clone(),
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
        };
        let count = crls.len();
        let (verifier, kept) = match build(crls.clone()) {
            Ok(verifier) => (verifier, count),
            // A CRL that downloads but does not parse: keep those that do (each tried alone),
            // and judge the chain with them.
            Err(error) if count > 0 => {
                let usable: Vec<_> = crls
                    .into_iter()
                    .filter(|crl| build(vec![crl.clone()]).is_ok())
                    .collect();
                let kept = usable.len();
                notes.push(format!(
                    "revocation not checked: cannot use {} of the {count} CRLs: {error}",
                    count - kept
                ));
                let verifier =
                    build(usable).map_err(|e| format!("cannot build the chain verifier: {e}"))?;
                (verifier, kept)
            }
            Err(error) => return Err(format!("cannot build the chain verifier: {error}")),
        };
        Ok(ChainVerifier {
            verifier,
            crls: kept,
            notes,
        })
    }

    async fn crl(&self, url: &str) -> Result<Vec<u8>, String> {
        let cell = lock(&self.crls).entry(url.to_string()).or_default().clone();
        cell.get_or_init(|| fetch_crl(&self.http, url))
            .await
            .clone()
    }

    /// The responder's answer to `request` (asked once per scan run).
    async fn ocsp_answer(&self, url: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let cell = lock(&self.ocsp_answers)
            .entry((url.to_string(), request.to_vec()))
            .or_default()
            .clone();
        cell.get_or_init(|| fetch_ocsp_answer(&self.http, url, request))
            .await
            .clone()
    }
}

/// What is wrong with a served chain by rustls' WebPKI verifier (with the CRLs it was given):
/// `incomplete_chain` when it verifies only with intermediates the scanner knows.
fn judge_chain(
    verifier: &WebPkiServerVerifier,
    chain: &[CertificateDer<'static>],
    known_intermediates: &[CertificateDer<'static>],
    chain_name: &ServerName<'_>,
    at: UnixTime,
) -> Option<(Finding, String)> {
    let leaf = chain.first()?;
    let presented = &chain[1..];
    let error = match verifier.verify_server_cert(leaf, presented, chain_name, &[], at) {
        Ok(_) => return None,
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            let mut completed = presented.to_vec();
            completed.extend(known_intermediates.iter().cloned());
            match verifier.verify_server_cert(leaf, &completed, chain_name, &[], at) {
                Ok(_) => {
                    return Some((
                        Finding::IncompleteChain,
                        "the endpoint does not send the intermediate certificate its chain needs"
                            .into(),
                    ));
                }
                Err(error) => error,
            }
        }
        Err(error) => error,
    };
    Some(match error {
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => (
            Finding::Revoked,
            "listed as revoked by its issuer's CRL".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => (
            Finding::UntrustedIssuer,
            "the chain does not lead to a trusted root".into(),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => (
            Finding::Expired,
            "a certificate of the chain has expired".into(),
        ),
        // The chain verified; only the name the check used did not fit (no usable DNS or
        // IP SAN at all).
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            Finding::NameMismatch,
            "the certificate has no usable DNS or IP subject alternative name".into(),
        ),
        other => (
            Finding::UntrustedIssuer,
            format!("the chain does not verify: {other}"),
        ),
    })
}

async fn fetch_crl(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let body = fetch_bounded(http.get(url), &format!("the CRL {url}"), MAX_CRL_BYTES).await?;
    if body.starts_with(b"-----BEGIN") {
        let block = pem::parse(&body).map_err(|e| format!("the CRL {url}: {e}"))?;
        return Ok(block.into_contents());
    }
    Ok(body)
}

/// POSTs an OCSP request (RFC 6960 appendix A.1) and returns the response body.
async fn fetch_ocsp_answer(
    http: &reqwest::Client,
    url: &str,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    let post = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/ocsp-request")
        .header(reqwest::header::ACCEPT, "application/ocsp-response")
        .body(request.to_vec());
    fetch_bounded(
        post,
        &format!("the OCSP responder {url}"),
        certkeeper_pki::MAX_OCSP_RESPONSE_BYTES,
    )
    .await
}

/// Sends `request` and reads the body, refusing more than `max` bytes. The URL comes from a
/// scanned certificate, so neither the size it announces nor the one it sends is trusted.
async fn fetch_bounded(
    request: reqwest::RequestBuilder,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("fetching {what}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("fetching {what}: HTTP {}", response.status()));
    }
    let too_large = || format!("{what} is larger than {max} bytes");
    if response.content_length().is_some_and(|n| n as usize > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading {what}: {e}"))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Connects to `address` with TLS, sending `host` as SNI unless it is an IP address, and
/// returns the chain the server presented (any certificate accepted: judging it is the
/// caller's business; the handshake signature is still verified).
pub async fn fetch_chain(
    address: &str,
    host: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    let server_name = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?,
    };
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, stream),
    )
    .await
    .map_err(|_| format!("TLS handshake with {address} timed out"))?
    .map_err(|e| format!("TLS handshake with {address}: {e}"))?;
    let (_, connection) = tls.get_ref();
    let chain: Vec<CertificateDer<'static>> = connection
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(format!("{address} presented no certificate"));
    }
    Ok(chain)
}

/// Accepts any certificate: the scanner and the deployment probe read what is presented and
/// judge it themselves.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where the system's trusted roots are (Debian and most distributions; `SSL_CERT_FILE`
/// overrides).
pub fn system_roots_pem() -> Vec<u8> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    std::fs::read(path).unwrap_or_default()
}

/// Scans every target, at most `concurrency` at once, calling `done` after each.
pub async fn scan_all(
    scanner: Arc<Scanner>,
    targets: Vec<ScanTarget>,
    concurrency: usize,
    done: impl Fn(&ScanReport),
) -> Vec<ScanReport> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let endpoints: Vec<String> = targets.iter().map(ScanTarget::endpoint).collect();
    for (index, target) in targets.into_iter().enumerate() {
        let (scanner, permits) = (scanner.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, scanner.scan(&target).await)
        });
    }
    let mut reports: Vec<Option<ScanReport>> = vec![None; endpoints.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, report)) = joined {
            done(&report);
            reports[index] = Some(report);
        }
    }
    // A probe that died (it should not) is still reported, as an error.
    reports
        .into_iter()
        .zip(endpoints)
        .map(|(report, endpoint)| {
            report.unwrap_or_else(|| ScanReport {
                endpoint,
                server_name: String::new(),
                scanned_at: time::OffsetDateTime::now_utc().unix_timestamp(),
                error: Some("the probe failed unexpectedly".into()),
                findings: Vec::new(),
                details: Vec::new(),
                serial: None,
                subject: None,
                not_after: None,
                chain: Vec::new(),
            })
        })
        .collect()
}

/// Records scan reports for `tenant`: each served leaf into the inventory (source
/// `discovered`, unless the tenant already holds it) and the latest scan of each endpoint,
/// in one change with one audit entry. Returns (endpoints recorded, certificates added).
pub async fn record(
    state: &crate::AppState,
    actor: &str,
    tenant: &str,
    reports: &[ScanReport],
) -> Result<(usize, usize), crate::problem::Problem> {
    use certkeeper_store::{AuditEvent, Change, ObserveWrite, Outcome, ScanRecord};
    let mut certificates = Vec::new();
    let mut writes = Vec::new();
    for report in reports {
        let bounded = |what: &str, text: &str, max: usize| {
            if text.len() > max {
                Err(crate::problem::Problem::malformed(format!(
                    "{what} is longer than {max} bytes"
                )))
            } else {
                Ok(())
            }
        };
        bounded("endpoint", &report.endpoint, 300)?;
        bounded("server_name", &report.server_name, 253)?;
        bounded("error", report.error.as_deref().unwrap_or(""), 2000)?;
        if report.endpoint.is_empty() || report.chain.len() > 16 {
            return Err(crate::problem::Problem::malformed(format!(
                "{:?}: an endpoint is host:port and a chain has at most 16 certificates",
                report.endpoint
            )));
        }
        let leaf = match report.chain.first() {
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        crate::problem::Problem::malformed(format!(
                            "{}: chain[0] is not base64 DER",
                            report.endpoint
                        ))
                    })?,
            ),
            None => None,
        };
        let summary = match &leaf {
            Some(der) => Some(certkeeper_pki::parse_certificate(der).map_err(|e| {
                crate::problem::Problem::malformed(format!("{}: {e}", report.endpoint))
            })?),
            None => None,
        };
        if let Some(finding) = report.findings.iter().find(|f| Finding::parse(f).is_none()) {
            return Err(crate::problem::Problem::malformed(format!(
                "{}: unknown finding {finding:?}",
                report.endpoint
            )));
        }
        if let (Some(der), Some(summary)) = (leaf, summary.clone()) {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("endpoint".to_string(), report.endpoint.clone());
            certificates.push(crate::inventory::record(
                summary,
                der,
                crate::inventory::Provenance {
                    profile: None,
                    tenant: tenant.to_string(),
                    requester: actor.to_string(),
                    source: certkeeper_store::CertificateSource::Discovered,
                    labels,
                    crl_shard: 0,
                },
            ));
        }
        writes.push(ObserveWrite::Scan(ScanRecord {
            tenant: tenant.to_string(),
            endpoint: report.endpoint.clone(),
            server_name: report.server_name.clone(),
            scanned_at: report.scanned_at,
            scanner: actor.to_string(),
            fingerprint_sha256: summary.as_ref().map(|s| s.fingerprint_sha256.clone()),
            serial: summary.as_ref().map(|s| s.serial.clone()),
            not_after: summary.as_ref().map(|s| s.not_after),
            findings: report.findings.clone(),
            valid: report.valid(),
            error: report.error.clone(),
        }));
    }
    let invalid = reports.iter().filter(|r| !r.valid()).count();
    let outcome = state
        .store
        .apply(Change {
            certificates,
            skip_duplicate_certificates: true,
            observe: writes,
            audit: vec![AuditEvent {
                actor: actor.to_string(),
                action: "scan.record".into(),
                object: format!("{} endpoints", reports.len()),
                outcome: Outcome::Success,
                detail: serde_json::json!({
                    "tenant": tenant,
                    "endpoints": reports.len(),
                    "invalid": invalid,
                }),
            }],
            ..Change::default()
        })
        .await?;
    Ok((reports.len(), outcome.inserted_certificate_ids.len()))
}

/// Runs a `[[scan]]` job every `interval`, recording what it finds.
pub fn spawn_job(
    state: crate::SharedState,
    job: crate::config::ScanJobConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(error) = run_job(&state, &job).await {
                tracing::error!(scan = %job.name, %error, "scheduled scan failed");
            }
            tokio::time::sleep(Duration::from_secs(job.interval.max(10))).await;
        }
    })
}

async fn run_job(
    state: &crate::SharedState,
    job: &crate::config::ScanJobConfig,
) -> Result<(), String> {
    let mut roots_pem = match &job.ca_file {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => system_roots_pem(),
    };
    roots_pem
        .extend_from_slice(certkeeper_pki::to_pem("CERTIFICATE", &state.ca.root_der).as_bytes());
    let scanner = Scanner::new(ScanSettings {
        roots_pem,
        known_intermediates_pem: state.ca.chain_pem.as_bytes().to_vec(),
        warn_within_seconds: i64::try_from(job.warn_within).unwrap_or(i64::MAX),
        timeout: Duration::from_secs(5),
        check_revocation: true,
    })?;
    let targets = expand_targets(&job.targets, &job.ports)?;
    let reports = scan_all(Arc::new(scanner), targets.clone(), job.concurrency, |_| {}).await;
    let worth: Vec<ScanReport> = targets
        .iter()
        .zip(reports)
        .filter(|(target, report)| worth_recording(target, report))
        .map(|(_, report)| report)
        .collect();
    let actor = format!("scan:{}", job.name);
    for batch in worth.chunks(RECORD_BATCH) {
        record(state, &actor, &job.tenant, batch)
            .await
            .map_err(|p| p.detail)?;
    }
    tracing::info!(scan = %job.name, endpoints = worth.len(), "scheduled scan recorded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn targets_expand_hosts_ports_and_ranges() {
        let targets = expand_targets(
            &specs(&[
                "web.example:8443",
                "api.example",
                "10.0.0.0/30",
                "[::1]:443",
                "::1",
            ]),
            &[443, 8443],
        )
        .unwrap();
        let endpoints: Vec<String> = targets.iter().map(ScanTarget::endpoint).collect();
        assert_eq!(
            endpoints,
            [
                "web.example:8443",
                "api.example:443",
                "api.example:8443",
                "10.0.0.1:443",
                "10.0.0.1:8443",
                "10.0.0.2:443",
                "10.0.0.2:8443",
                "[::1]:443",
                "[::1]:8443",
            ]
        );
        assert_eq!(
            expand_targets(&specs(&["127.0.0.1/32"]), &[443]).unwrap(),
            [ScanTarget {
                host: "127.0.0.1".into(),
                port: 443,
                from_range: true,
            }]
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (spec, expected) in [
            ("host:0", "not a port"),
            ("host:99999", "not a port"),
            ("10.0.0.0/33", "CIDR"),
            ("bad host", "not a host"),
            ("[::1:443", "missing ']'"),
        ] {
            let error = expand_targets(&specs(&[spec]), &[443]).unwrap_err();
            assert!(error.contains(expected), "{spec}: {error}");
        }
        assert!(
            expand_targets(&specs(&["10.0.0.0/8"]), &[443])
                .unwrap_err()
                .contains("more than")
        );
        assert!(expand_targets(&specs(&["a"]), &[]).is_err());
    }

    #[test]
    fn silent_addresses_of_a_swept_range_are_not_recorded() {
        let targets =
            expand_targets(&specs(&["10.0.0.0/31", "named.example:443"]), &[443]).unwrap();
        assert_eq!(targets.len(), 3);
        let silent = ScanReport {
            endpoint: String::new(),
            server_name: String::new(),
            scanned_at: 0,
            error: Some("refused".into()),
            findings: vec![],
            details: vec![],
            serial: None,
            subject: None,
            not_after: None,
            chain: vec![],
        };
        let answered = ScanReport {
            chain: vec!["AA==".into()],
            error: None,
            ..silent.clone()
        };
        assert!(!worth_recording(&targets[0], &silent));
        assert!(worth_recording(&targets[0], &answered));
        assert!(worth_recording(&targets[2], &silent));
    }

    #[test]
    fn only_expiring_soon_keeps_an_endpoint_valid() {
        let mut report = ScanReport {
            endpoint: "a:1".into(),
            server_name: "a".into(),
            scanned_at: 0,
            error: None,
            findings: vec!["expiring_soon".into()],
            details: vec![],
            serial: None,
            subject: None,
            not_after: None,
            chain: vec!["AA==".into()],
        };
        assert!(report.valid());
        report.findings.push("incomplete_chain".into());
        assert!(!report.valid());
        report.findings.clear();
        report.error = Some("refused".into());
        assert!(!report.valid());
    }
}
