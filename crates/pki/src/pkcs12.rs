//! PKCS#12 bundles for server-generated keys.

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};

use crate::PkiError;

/// Packs a private key (PKCS#8 DER), its certificate and the chain into a PKCS#12 file
/// protected by `password` (PBES2 with AES-256, HMAC-SHA-256 MAC).
pub fn build_pkcs12(
    key_pkcs8_der: &[u8],
    certificate_der: &[u8],
    chain_der: &[Vec<u8>],
    password: &str,
    friendly_name: &str,
) -> Result<Vec<u8>, PkiError> {
    if password.is_empty() {
        return Err(PkiError::InvalidRequest(
            "a PKCS#12 password must not be empty".into(),
        ));
    }
    let key =
        PrivateKey::from_der(key_pkcs8_der).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
    let mut certs = vec![
        Certificate::from_der(certificate_der).map_err(|e| PkiError::Encoding(e.to_string()))?,
    ];
    for der in chain_der {
        certs.push(Certificate::from_der(der).map_err(|e| PkiError::Encoding(e.to_string()))?);
    }
    let local_key_id = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate_der,
    );
    let chain = PrivateKeyChain::new(local_key_id.as_ref().to_vec(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(friendly_name, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .write()
        .map_err(|e| PkiError::Encoding(format!("PKCS#12: {e}")))
}
