//! The audit chain's HMAC key on disk: `<data_dir>/audit.key` (or `audit_key_file`), 32 random
//! bytes as hex, mode 0600. Every server sharing a database needs the same file.

use std::path::{Path, PathBuf};

use certkeeper_store::{AuditKey, Store};

use crate::ServerError;
use crate::files::{PRIVATE, write_atomic};

/// Where the key lives when the configuration names no file.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.key")
}

/// Reads the key; it must exist.
pub fn load(path: &Path) -> Result<AuditKey, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ServerError::io(
            path,
            format!("{e}; the audit chain's key is needed to verify it (point --data-dir or audit_key_file at it)"),
        )
    })?;
    let bytes =
        hex::decode(text.trim()).map_err(|_| ServerError::io(path, "not a hex audit key"))?;
    let bytes: [u8; AuditKey::LEN] = bytes
        .try_into()
        .map_err(|_| ServerError::io(path, format!("an audit key is {} bytes", AuditKey::LEN)))?;
    Ok(AuditKey::from_bytes(&bytes))
}

/// Reads the key, or creates it when absent. Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), ServerError> {
    if path.exists() {
        return Ok((load(path)?, false));
    }
    let mut bytes = [0u8; AuditKey::LEN];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ServerError::io(path, "the system random generator failed"))?;
    write_atomic(
        path,
        format!("{}\n", hex::encode(bytes)).as_bytes(),
        PRIVATE,
    )?;
    Ok((AuditKey::from_bytes(&bytes), true))
}

/// Opens the store with the audit key, creating the key only for a database without audit
/// entries (a new key for an existing chain would make every entry look edited).
pub async fn open_store(
    url: &str,
    key_path: &Path,
    may_create: bool,
) -> Result<Store, ServerError> {
    let (key, created) = if may_create {
        load_or_create(key_path)?
    } else {
        (load(key_path)?, false)
    };
    let store = Store::open(url, key).await?;
    if created && !store.audit_entries(0, 1).await?.is_empty() {
        let _ = std::fs::remove_file(key_path);
        store.close().await;
        return Err(ServerError::Config(format!(
            "the database already has an audit chain but {} is missing; restore the audit key file that was used with it",
            key_path.display()
        )));
    }
    Ok(store)
}
