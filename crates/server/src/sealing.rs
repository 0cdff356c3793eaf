//! Keys kept across renewals (`key.rotate = false`) are stored in the database sealed with
//! AES-256-GCM under `<data_dir>/managed-keys.kek` (32 random bytes as hex, mode 0600), with
//! the managed certificate's name as associated data so a sealed key cannot be moved to
//! another row. Every server sharing a database needs the same file, like `audit.key`.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::ServerError;
use crate::files::{PRIVATE, write_atomic};

/// Prefix of sealed values, naming the format.
const FORMAT: &str = "v1:";

/// Seals and unseals kept private keys.
pub struct KeySealer {
    key: LessSafeKey,
    path: PathBuf,
}

impl KeySealer {
    /// Where the key-encryption key lives.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("managed-keys.kek")
    }

    /// Reads the key-encryption key, creating it when absent.
    pub fn load_or_create(path: &Path) -> Result<KeySealer, ServerError> {
        let bytes = if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| ServerError::io(path, e))?;
            hex::decode(text.trim())
                .map_err(|_| ServerError::io(path, "not a hex key-encryption key"))?
        } else {
            let mut bytes = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| ServerError::io(path, "the system random generator failed"))?;
            write_atomic(
                path,
                format!("{}\n", hex::encode(&bytes)).as_bytes(),
                PRIVATE,
            )?;
            bytes
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| ServerError::io(path, "a key-encryption key is 32 bytes"))?;
        Ok(KeySealer {
            key: LessSafeKey::new(unbound),
            path: path.to_path_buf(),
        })
    }

    /// Seals `secret` for the managed certificate `name`.
    pub fn seal(&self, name: &str, secret: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "the system random generator failed")?;
        let mut buffer = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| "sealing the key failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(format!("{FORMAT}{}", STANDARD.encode(out)))
    }

    /// Unseals what [`KeySealer::seal`] made for `name`.
    pub fn unseal(&self, name: &str, sealed: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        let mut bytes = sealed
            .strip_prefix(FORMAT)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or("the kept key is not in a known sealed format")?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let mut body = bytes.split_off(NONCE_LEN);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut body,
            )
            .map_err(|_| {
                format!(
                    "the kept key does not open with {}: every server sharing the database needs the same file",
                    self.path.display()
                )
            })?
            .to_vec();
        body.iter_mut().for_each(|b| *b = 0);
        Ok(zeroize::Zeroizing::new(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_under_its_name_and_its_kek() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = KeySealer::load_or_create(&dir.path().join("a.kek")).unwrap();
        let sealed = sealer.seal("web", b"secret key").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(
            sealer.unseal("web", &sealed).unwrap().as_slice(),
            b"secret key"
        );
        assert!(sealer.unseal("other", &sealed).is_err());
        let again = KeySealer::load_or_create(&dir.path().join("a.kek")).unwrap();
        assert_eq!(
            again.unseal("web", &sealed).unwrap().as_slice(),
            b"secret key"
        );
        let stranger = KeySealer::load_or_create(&dir.path().join("b.kek")).unwrap();
        assert!(
            stranger
                .unseal("web", &sealed)
                .unwrap_err()
                .contains("b.kek")
        );
        let mode = std::fs::metadata(dir.path().join("a.kek")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }
}
