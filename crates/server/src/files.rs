//! Durable, atomic file writes: write a temporary file, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::ServerError;

/// Mode for private keys: owner read/write only.
pub const PRIVATE: u32 = 0o600;
/// Mode for public files.
pub const PUBLIC: u32 = 0o644;

/// Writes `contents` to `path` atomically with `mode`; a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServerError> {
    write_atomic_owned(path, contents, mode, None)
}

/// A file's owner: user id and, when given, group id.
pub type FileOwner = (u32, Option<u32>);

/// [`write_atomic`] with an owner, set on the temporary file before it takes the name, so the
/// file never appears with the wrong owner.
pub fn write_atomic_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<FileOwner>,
) -> Result<(), ServerError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| ServerError::io(path, "the system random generator failed"))?;
    let temp = dir.join(format!(".{name}.tmp-{}", hex::encode(nonce)));
    let result = (|| {
        // create_new: never follow or reuse a planted file or symlink at the temporary path.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        if let Some((user, group)) = owner {
            std::os::unix::fs::fchown(&file, Some(user), group)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temp);
        return Err(ServerError::io(path, error));
    }
    Ok(())
}

/// Creates a directory (and parents) readable only by the owner.
pub fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ServerError::io(path, e))
}

/// Reads a file to a string with a clear error.
pub fn read_text(path: &Path) -> Result<String, ServerError> {
    fs::read_to_string(path).map_err(|e| ServerError::io(path, e))
}
