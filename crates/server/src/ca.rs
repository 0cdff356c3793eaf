//! The CA on disk: creating the hierarchy, importing one, the offline-root flow, and loading it.
//!
//! Layout under `<data_dir>/ca/`: `root.crt`, `root.key` (absent when the root is offline),
//! `intermediate.crt`, `intermediate.key`, and `intermediate.csr` while an offline root has
//! not yet signed the intermediate. Keys are written with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certkeeper_pki::{
    CaCertificateRequest, CaIssuer, CaSubject, IntermediateKey, IssuerUrls, KeyAlgorithm, Signer,
    SoftwareKey, build_intermediate_csr, build_root, parse_certificate, pem_to_der_certificates,
    random_serial, sign_intermediate, to_pem,
};
use certkeeper_store::{AuditEvent, CertificateSource, Change, Outcome, Store};
use time::{Duration, OffsetDateTime};

use crate::config::CaSection;
use crate::files::{PRIVATE, PUBLIC, read_text, write_atomic};
use crate::{ServerError, Tenant};

/// Where each CA file lives.
#[derive(Debug, Clone)]
pub struct CaPaths {
    /// `ca/root.crt`.
    pub root_cert: PathBuf,
    /// `ca/root.key`.
    pub root_key: PathBuf,
    /// `ca/intermediate.crt`.
    pub intermediate_cert: PathBuf,
    /// `ca/intermediate.key`.
    pub intermediate_key: PathBuf,
    /// `ca/intermediate.csr` (offline-root flow).
    pub intermediate_csr: PathBuf,
}

impl CaPaths {
    /// The paths inside `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let ca = data_dir.join("ca");
        CaPaths {
            root_cert: ca.join("root.crt"),
            root_key: ca.join("root.key"),
            intermediate_cert: ca.join("intermediate.crt"),
            intermediate_key: ca.join("intermediate.key"),
            intermediate_csr: ca.join("intermediate.csr"),
        }
    }

    /// Whether an issuing CA is installed.
    pub fn is_initialized(&self) -> bool {
        self.intermediate_cert.exists() && self.intermediate_key.exists()
    }
}

/// How `init` creates the CA.
#[derive(Debug, Clone)]
pub enum CaInit {
    /// Generate a root and an intermediate; keep both keys.
    Generate,
    /// Generate a root, write its key to this path once (not kept), and leave an intermediate
    /// CSR to be signed offline with `certkeeper ca sign-intermediate`.
    OfflineRoot {
        /// Where the root key is written (mode 0600).
        root_key_out: PathBuf,
    },
    /// Generate only the intermediate key and CSR, for an existing external root.
    ExternalRoot,
    /// Use an existing CA certificate and key as the issuing CA.
    Import {
        /// PEM file: the CA certificate, optionally followed by its chain up to the root.
        certificate: PathBuf,
        /// PEM private key of that CA certificate.
        key: PathBuf,
    },
}

/// The loaded issuing CA.
pub struct LoadedCa {
    /// The issuing CA (intermediate) with its signer.
    pub issuer: CaIssuer,
    /// Root certificate, DER.
    pub root_der: Vec<u8>,
    /// Intermediates between the issuing CA and the root (issuing CA first), DER.
    pub chain_der: Vec<Vec<u8>>,
    /// Issuing CA certificate and chain up to (not including) the root, PEM.
    pub chain_pem: String,
    /// Root certificate, PEM.
    pub root_pem: String,
    /// SHA-256 fingerprint of the root certificate, hex.
    pub root_fingerprint: String,
    /// notAfter of the issuing CA, Unix seconds: no certificate may outlive it.
    pub issuing_not_after: i64,
}

fn subject(section: &CaSection, common_name: &str) -> CaSubject {
    CaSubject {
        common_name: common_name.into(),
        organization: section.organization.clone(),
        country: section.country.clone(),
    }
}

fn lifetime(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2))
}

/// URLs a certificate issued by `ca_name` points relying parties at.
pub fn issuer_urls(base_url: &str, ca_name: &str) -> IssuerUrls {
    IssuerUrls {
        ocsp: Some(format!("{base_url}/ocsp")),
        ca_issuers: Some(format!("{base_url}/ca/{ca_name}.crt")),
        crl: Some(format!("{base_url}/crl/{ca_name}.crl")),
    }
}

/// What `init` produced, for the caller to report.
#[derive(Debug, Default)]
pub struct InitReport {
    /// CA certificates created or imported (DER), root first.
    pub certificates: Vec<Vec<u8>>,
    /// Set when the intermediate waits for an offline signature.
    pub pending_csr: Option<PathBuf>,
}

/// Creates the CA files under `data_dir` as `how` says. Refuses to overwrite an existing CA.
pub fn initialize(
    data_dir: &Path,
    section: &CaSection,
    base_url: &str,
    how: &CaInit,
) -> Result<InitReport, ServerError> {
    let paths = CaPaths::new(data_dir);
    if paths.is_initialized() || paths.intermediate_csr.exists() {
        return Err(ServerError::Ca(format!(
            "a CA already exists in {}; use another --data-dir to create a new one",
            data_dir.join("ca").display()
        )));
    }
    crate::files::create_private_dir(&data_dir.join("ca"))?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| ServerError::Ca(e.to_string()))?;
    let algorithm = section.key_algorithm;
    let mut report = InitReport::default();
    let make_root = |key: Arc<dyn Signer>| -> Result<Vec<u8>, ServerError> {
        Ok(build_root(
            &CaCertificateRequest {
                subject: &subject(section, &section.root_common_name),
                serial: random_serial()?,
                not_before: now,
                not_after: now + lifetime(section.root_lifetime),
                path_len: None,
                urls: None,
            },
            key,
        )?)
    };
    match how {
        CaInit::Generate => {
            let root_key = Arc::new(SoftwareKey::generate(algorithm)?);
            let root_der = make_root(root_key.clone())?;
            let root = CaIssuer::new(root_der.clone(), root_key.clone())?;
            let intermediate_key = Arc::new(SoftwareKey::generate(algorithm)?);
            let intermediate_der = sign_intermediate(
                IntermediateKey::Signer(intermediate_key.clone()),
                &CaCertificateRequest {
                    subject: &subject(section, &section.intermediate_common_name),
                    serial: random_serial()?,
                    not_before: now,
                    not_after: now
                        + lifetime(section.intermediate_lifetime.min(section.root_lifetime)),
                    path_len: Some(0),
                    urls: Some(&issuer_urls(base_url, "root")),
                },
                &root,
            )?;
            write_atomic(&paths.root_key, root_key.pkcs8_pem().as_bytes(), PRIVATE)?;
            write_atomic(
                &paths.intermediate_key,
                intermediate_key.pkcs8_pem().as_bytes(),
                PRIVATE,
            )?;
            write_atomic(
                &paths.root_cert,
                to_pem("CERTIFICATE", &root_der).as_bytes(),
                PUBLIC,
            )?;
            write_atomic(
                &paths.intermediate_cert,
                to_pem("CERTIFICATE", &intermediate_der).as_bytes(),
                PUBLIC,
            )?;
            report.certificates = vec![root_der, intermediate_der];
        }
        CaInit::OfflineRoot { root_key_out } => {
            if root_key_out.exists() {
                return Err(ServerError::Ca(format!(
                    "{} already exists; choose a new path for the root key",
                    root_key_out.display()
                )));
            }
            let root_key = Arc::new(SoftwareKey::generate(algorithm)?);
            let root_der = make_root(root_key.clone())?;
            write_atomic(root_key_out, root_key.pkcs8_pem().as_bytes(), PRIVATE)?;
            write_atomic(
                &paths.root_cert,
                to_pem("CERTIFICATE", &root_der).as_bytes(),
                PUBLIC,
            )?;
            report.pending_csr = Some(write_intermediate_csr(&paths, section, algorithm)?);
            report.certificates = vec![root_der];
        }
        CaInit::ExternalRoot => {
            report.pending_csr = Some(write_intermediate_csr(&paths, section, algorithm)?);
        }
        CaInit::Import { certificate, key } => {
            let certs = pem_to_der_certificates(read_text(certificate)?.as_bytes())?;
            let signer = Arc::new(SoftwareKey::from_pem(&read_text(key)?)?);
            let issuing = certs.first().ok_or_else(|| {
                ServerError::Ca("the certificate file holds no certificate".into())
            })?;
            CaIssuer::new(issuing.clone(), signer.clone())?;
            let root_der = certs.last().cloned().unwrap_or_else(|| issuing.clone());
            let chain: String = certs[..certs.len().saturating_sub(1).max(1)]
                .iter()
                .map(|der| to_pem("CERTIFICATE", der))
                .collect();
            write_atomic(
                &paths.intermediate_key,
                signer.pkcs8_pem().as_bytes(),
                PRIVATE,
            )?;
            write_atomic(
                &paths.root_cert,
                to_pem("CERTIFICATE", &root_der).as_bytes(),
                PUBLIC,
            )?;
            write_atomic(&paths.intermediate_cert, chain.as_bytes(), PUBLIC)?;
            report.certificates = certs;
        }
    }
    Ok(report)
}

fn write_intermediate_csr(
    paths: &CaPaths,
    section: &CaSection,
    algorithm: KeyAlgorithm,
) -> Result<PathBuf, ServerError> {
    let key = Arc::new(SoftwareKey::generate(algorithm)?);
    let csr = build_intermediate_csr(
        &subject(section, &section.intermediate_common_name),
        key.clone(),
    )?;
    write_atomic(&paths.intermediate_key, key.pkcs8_pem().as_bytes(), PRIVATE)?;
    write_atomic(
        &paths.intermediate_csr,
        to_pem("CERTIFICATE REQUEST", &csr).as_bytes(),
        PUBLIC,
    )?;
    Ok(paths.intermediate_csr.clone())
}

/// Signs an intermediate CSR with a root certificate and key held outside certkeeper
/// (`certkeeper ca sign-intermediate`). Returns the intermediate certificate, PEM.
pub fn sign_intermediate_offline(
    root_cert_pem: &str,
    root_key_pem: &str,
    csr: &[u8],
    lifetime_seconds: u64,
    base_url: Option<&str>,
) -> Result<String, ServerError> {
    let root_der = pem_to_der_certificates(root_cert_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| ServerError::Ca("the root certificate file holds no certificate".into()))?;
    let root_summary = parse_certificate(&root_der)?;
    let root = CaIssuer::new(root_der, Arc::new(SoftwareKey::from_pem(root_key_pem)?))?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| ServerError::Ca(e.to_string()))?;
    let not_after = (now + lifetime(lifetime_seconds)).min(
        OffsetDateTime::from_unix_timestamp(root_summary.not_after)
            .map_err(|e| ServerError::Ca(e.to_string()))?,
    );
    let urls = base_url.map(|base| issuer_urls(base, "root"));
    let placeholder = CaSubject {
        common_name: "from CSR".into(),
        organization: None,
        country: None,
    };
    let der = sign_intermediate(
        IntermediateKey::Csr(csr),
        &CaCertificateRequest {
            subject: &placeholder,
            serial: random_serial()?,
            not_before: now,
            not_after,
            path_len: Some(0),
            urls: urls.as_ref(),
        },
        &root,
    )?;
    Ok(to_pem("CERTIFICATE", &der))
}

/// Installs an intermediate certificate signed offline; it must certify the pending key and
/// chain to the installed root (`certkeeper ca install-intermediate`).
pub fn install_intermediate(
    data_dir: &Path,
    certificate_pem: &str,
) -> Result<Vec<u8>, ServerError> {
    let paths = CaPaths::new(data_dir);
    if !paths.intermediate_csr.exists() {
        return Err(ServerError::Ca(
            "no intermediate is waiting for a certificate (ca/intermediate.csr is missing)".into(),
        ));
    }
    let der = pem_to_der_certificates(certificate_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| ServerError::Ca("the file holds no certificate".into()))?;
    let key = Arc::new(SoftwareKey::from_pem(&read_text(&paths.intermediate_key)?)?);
    CaIssuer::new(der.clone(), key)?;
    if paths.root_cert.exists() {
        let root = parse_certificate(&first_der(&paths.root_cert)?)?;
        let intermediate = parse_certificate(&der)?;
        if intermediate.issuer != root.subject
            || intermediate.authority_key_id != root.subject_key_id
        {
            return Err(ServerError::Ca(format!(
                "the certificate was issued by {:?}, not by the installed root {:?}",
                intermediate.issuer, root.subject
            )));
        }
    } else {
        return Err(ServerError::Ca(
            "install the root certificate first: copy it to ca/root.crt".into(),
        ));
    }
    write_atomic(
        &paths.intermediate_cert,
        to_pem("CERTIFICATE", &der).as_bytes(),
        PUBLIC,
    )?;
    std::fs::remove_file(&paths.intermediate_csr)
        .map_err(|e| ServerError::io(&paths.intermediate_csr, e))?;
    Ok(der)
}

fn first_der(path: &Path) -> Result<Vec<u8>, ServerError> {
    pem_to_der_certificates(read_text(path)?.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| ServerError::Ca(format!("{} holds no certificate", path.display())))
}

/// Loads the issuing CA from `data_dir`.
pub fn load(data_dir: &Path) -> Result<LoadedCa, ServerError> {
    let paths = CaPaths::new(data_dir);
    if paths.intermediate_csr.exists() {
        return Err(ServerError::Ca(format!(
            "the intermediate CA is waiting for its certificate: sign {} with `certkeeper ca sign-intermediate` on the offline root, then run `certkeeper ca install-intermediate FILE`",
            paths.intermediate_csr.display()
        )));
    }
    if !paths.is_initialized() {
        return Err(ServerError::Ca(format!(
            "no CA in {}; run `certkeeper init` or start `certkeeper serve` once",
            data_dir.display()
        )));
    }
    let chain_der = pem_to_der_certificates(read_text(&paths.intermediate_cert)?.as_bytes())?;
    let root_der = first_der(&paths.root_cert)?;
    let key = Arc::new(SoftwareKey::from_pem(&read_text(&paths.intermediate_key)?)?);
    let issuing = chain_der
        .first()
        .cloned()
        .ok_or_else(|| ServerError::Ca("empty intermediate file".into()))?;
    let issuing_not_after = parse_certificate(&issuing)?.not_after;
    let issuer = CaIssuer::new(issuing, key)?;
    let chain_pem = chain_der
        .iter()
        .map(|der| to_pem("CERTIFICATE", der))
        .collect();
    Ok(LoadedCa {
        issuer,
        root_pem: to_pem("CERTIFICATE", &root_der),
        root_fingerprint: certkeeper_pki::sha256_hex(&root_der),
        root_der,
        chain_der,
        chain_pem,
        issuing_not_after,
    })
}

/// Records CA certificates in the inventory and the audit log (skipping ones already there).
pub async fn record_ca_certificates(
    store: &Store,
    certificates: &[Vec<u8>],
    actor: &str,
    action: &str,
) -> Result<(), ServerError> {
    let mut records = Vec::new();
    for der in certificates {
        let summary = parse_certificate(der)?;
        records.push(crate::inventory::record(
            summary,
            der.clone(),
            crate::inventory::Provenance {
                profile: None,
                tenant: Tenant::SYSTEM.into(),
                requester: actor.into(),
                source: CertificateSource::Ca,
                labels: Default::default(),
                crl_shard: 0,
            },
        ));
    }
    let subjects: Vec<&str> = records.iter().map(|r| r.subject.as_str()).collect();
    let audit = AuditEvent {
        actor: actor.into(),
        action: action.into(),
        object: subjects.join(" / "),
        outcome: Outcome::Success,
        detail: serde_json::json!({
            "certificates": records.iter().map(|r| serde_json::json!({"serial": r.serial, "subject": r.subject, "fingerprint_sha256": r.fingerprint_sha256})).collect::<Vec<_>>()
        }),
    };
    store
        .apply(Change {
            certificates: records,
            skip_duplicate_certificates: true,
            audit: vec![audit],
            ..Change::default()
        })
        .await?;
    Ok(())
}
