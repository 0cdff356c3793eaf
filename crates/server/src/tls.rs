//! The server's own TLS certificate, issued by its CA and renewed at start when a third of
//! its life remains or its names changed.

use std::net::IpAddr;
use std::path::Path;

use certkeeper_pki::{
    ExtendedKeyUsage, KeyAlgorithm, KeyKind, KeyUsage, LeafRequest, Profile, SanEntry, SanKind,
    Signer, SoftwareKey, build_leaf, parse_certificate, pem_to_der_certificates, random_serial,
    to_pem,
};
use certkeeper_store::Store;
use time::{Duration, OffsetDateTime};

use crate::ServerError;
use crate::ca::LoadedCa;
use crate::files::{PRIVATE, PUBLIC, write_atomic};

const LIFETIME_DAYS: i64 = 30;

/// PEM certificate chain and PEM key for the HTTPS listener.
pub struct ServerTls {
    /// Leaf and chain.
    pub chain_pem: String,
    /// Private key.
    pub key_pem: String,
}

fn wanted_names(listen_ip: IpAddr, extra: &[String]) -> Vec<SanEntry> {
    let mut names = vec![SanEntry::Dns("localhost".into())];
    names.extend(extra.iter().map(|n| SanEntry::Dns(n.to_ascii_lowercase())));
    for ip in [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        listen_ip,
    ] {
        if !ip.is_unspecified() && !names.contains(&SanEntry::Ip(ip)) {
            names.push(SanEntry::Ip(ip));
        }
    }
    names
}

/// Loads the TLS certificate from `<data_dir>/tls`, issuing a new one when needed.
pub async fn ensure(
    data_dir: &Path,
    ca: &LoadedCa,
    store: &Store,
    listen_ip: IpAddr,
    extra_names: &[String],
) -> Result<ServerTls, ServerError> {
    let cert_path = data_dir.join("tls/server.crt");
    let key_path = data_dir.join("tls/server.key");
    let names = wanted_names(listen_ip, extra_names);
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| ServerError::Ca(e.to_string()))?;
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let current = pem_to_der_certificates(cert_pem.as_bytes())
            .ok()
            .and_then(|ders| ders.into_iter().next())
            .and_then(|der| parse_certificate(&der).ok());
        if let Some(current) = current {
            let fresh = current.not_after - now.unix_timestamp() > LIFETIME_DAYS * 86_400 / 3;
            let same_issuer = current.authority_key_id
                == parse_certificate(ca.issuer.certificate_der())?.subject_key_id;
            let key_matches = SoftwareKey::from_pem(&key_pem)
                .is_ok_and(|key| key.public_key().spki_sha256() == current.spki_sha256);
            if fresh && key_matches && same_issuer && current.sans == names {
                return Ok(ServerTls {
                    chain_pem: cert_pem,
                    key_pem,
                });
            }
        }
    }
    let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256)?;
    let profile = Profile {
        name: "certkeeper-server".into(),
        description: "certkeeper's own HTTPS listener".into(),
        default_validity_seconds: LIFETIME_DAYS as u64 * 86_400,
        max_validity_seconds: LIFETIME_DAYS as u64 * 86_400,
        key_kinds: vec![KeyKind::EcdsaP256],
        min_rsa_bits: 2048,
        key_usage: vec![KeyUsage::DigitalSignature],
        extended_key_usage: vec![ExtendedKeyUsage::ServerAuth],
        san_kinds: vec![SanKind::Dns, SanKind::Ip],
        cabf_server: false,
    };
    let der = build_leaf(
        &LeafRequest {
            profile: &profile,
            public_key: key.public_key(),
            common_name: None,
            sans: &names,
            serial: random_serial()?,
            not_before: now - Duration::seconds(60),
            not_after: now + Duration::days(LIFETIME_DAYS) - Duration::seconds(61),
            urls: &Default::default(),
        },
        &ca.issuer,
    )?;
    let summary = parse_certificate(&der)?;
    let chain_pem = format!("{}{}", to_pem("CERTIFICATE", &der), ca.chain_pem);
    let key_pem = key.pkcs8_pem();
    let sans: Vec<String> = summary.sans.iter().map(ToString::to_string).collect();
    crate::inventory::record_own_certificate(
        store,
        &der,
        &profile.name,
        serde_json::json!({"purpose": "server TLS", "sans": sans}),
    )
    .await?;
    write_atomic(&key_path, key_pem.as_bytes(), PRIVATE)?;
    write_atomic(&cert_path, chain_pem.as_bytes(), PUBLIC)?;
    Ok(ServerTls { chain_pem, key_pem })
}
