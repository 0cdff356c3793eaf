//! Deployment targets of managed certificates: files (PEM and PKCS#12) written atomically
//! with their owner and modes, then an optional reload command with a timeout, then an
//! optional TLS probe that must see the new serial. If the reload or the probe fails, the
//! previous files come back (contents, mode and owner) and the reload runs again, so the
//! service keeps what it served before.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::files::{FileOwner, PRIVATE, PUBLIC, write_atomic_owned};

/// What a target receives.
pub struct Material {
    /// Serial of the certificate, lower-case hex (what the probe must see).
    pub serial: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The chain without the leaf, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("serial", &self.serial)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A file target.
#[derive(Debug, Clone, Default)]
pub struct FileTarget {
    /// Where the certificate goes.
    pub cert: Option<PathBuf>,
    /// Where the chain goes.
    pub chain: Option<PathBuf>,
    /// Where leaf + chain go.
    pub fullchain: Option<PathBuf>,
    /// Where the key goes (mode `key_mode`).
    pub key: Option<PathBuf>,
    /// Where a PKCS#12 bundle goes (mode `key_mode`), with the file holding its password.
    pub pkcs12: Option<(PathBuf, PathBuf)>,
    /// Owner of the written files (`user` or `user:group`, names or ids); default: the
    /// server's user.
    pub owner: Option<String>,
    /// Mode of the certificate files (default 0644).
    pub mode: Option<u32>,
    /// Mode of the key and PKCS#12 files (default 0600).
    pub key_mode: Option<u32>,
    /// Shell command run after the files are in place.
    pub reload: Option<String>,
    /// Longest the reload may take.
    pub reload_timeout: Duration,
    /// `host:port` that must present the new serial after the reload.
    pub probe: Option<String>,
    /// Server name sent in the probe (default: the host).
    pub probe_name: Option<String>,
    /// Longest the probe keeps trying (a reloading server swaps workers gradually).
    pub probe_timeout: Duration,
}

impl FileTarget {
    /// The nginx preset: `nginx -s reload` (or `reload` when given, for a private instance)
    /// and a probe of its listener.
    pub fn nginx(
        fullchain: PathBuf,
        key: PathBuf,
        probe: String,
        reload: Option<String>,
    ) -> FileTarget {
        FileTarget {
            fullchain: Some(fullchain),
            key: Some(key),
            reload: Some(reload.unwrap_or_else(|| "nginx -s reload".into())),
            reload_timeout: Duration::from_secs(30),
            probe: Some(probe),
            probe_timeout: Duration::from_secs(10),
            ..FileTarget::default()
        }
    }
}

/// Why a deployment failed; the previous files are back in place when `restored` is true.
#[derive(Debug, Error)]
pub enum DeployError {
    /// The target cannot be prepared (owner unknown, password file unreadable, ...); nothing
    /// was written.
    #[error("{0}")]
    Prepare(String),
    /// A file could not be written (nothing was reloaded).
    #[error("writing {path}: {message} (restored the previous files: {restored})")]
    Write {
        /// The file.
        path: String,
        /// The error.
        message: String,
        /// Whether the previous files are back.
        restored: bool,
    },
    /// The reload command failed or timed out.
    #[error("reload `{command}` failed: {message} (restored the previous files: {restored})")]
    Reload {
        /// The command.
        command: String,
        /// Exit status and output, or the timeout.
        message: String,
        /// Whether the previous files are back (and the reload re-run).
        restored: bool,
    },
    /// The probe did not see the new serial.
    #[error(
        "probe of {address} saw {seen}, not the new serial {expected} (restored the previous files: {restored})"
    )]
    Probe {
        /// `host:port`.
        address: String,
        /// What it saw (a serial or an error).
        seen: String,
        /// The new serial.
        expected: String,
        /// Whether the previous files are back.
        restored: bool,
    },
}

/// What a successful deployment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The serial now in the files (and, with a probe, served).
    pub serial: String,
    /// Whether a probe confirmed it.
    pub probed: bool,
}

/// A file's previous state: its bytes, mode and owner, or absent.
struct Previous {
    path: PathBuf,
    contents: Option<(Vec<u8>, u32, Option<FileOwner>)>,
}

/// Resolves `user` or `user:group` (names or numeric ids) to ids.
fn resolve_owner(owner: &str) -> Result<FileOwner, String> {
    let (user, group) = match owner.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (owner, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(user)
            .map_err(|e| format!("looking up user {user:?}: {e}"))?
            .ok_or_else(|| format!("owner: no user {user:?} on this host"))?
            .uid
            .as_raw(),
    };
    let gid = match group {
        None => None,
        Some(group) => Some(match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(group)
                .map_err(|e| format!("looking up group {group:?}: {e}"))?
                .ok_or_else(|| format!("owner: no group {group:?} on this host"))?
                .gid
                .as_raw(),
        }),
    };
    Ok((uid, gid))
}

/// The PKCS#12 bundle of `material` under the password in `password_file`.
fn pkcs12_bundle(material: &Material, password_file: &Path) -> Result<Vec<u8>, String> {
    let password = std::fs::read_to_string(password_file)
        .map_err(|e| format!("PKCS#12 password file {}: {e}", password_file.display()))?;
    let password = zeroize::Zeroizing::new(password.lines().next().unwrap_or("").to_string());
    let key = pem::parse(&material.key_pem).map_err(|e| format!("the key: {e}"))?;
    let key = zeroize::Zeroizing::new(key.into_contents());
    let leaf = pem::parse(&material.certificate_pem)
        .map_err(|e| format!("the certificate: {e}"))?
        .into_contents();
    let chain: Vec<Vec<u8>> = pem::parse_many(&material.chain_pem)
        .map_err(|e| format!("the chain: {e}"))?
        .into_iter()
        .map(pem::Pem::into_contents)
        .collect();
    certkeeper_pki::build_pkcs12(&key, &leaf, &chain, &password, &material.serial)
        .map_err(|e| format!("PKCS#12: {e}"))
}

/// Deploys `material` to `target`.
pub async fn deploy_files(
    target: &FileTarget,
    material: &Material,
) -> Result<Deployed, DeployError> {
    let fullchain = format!("{}{}", material.certificate_pem, material.chain_pem);
    let owner = match &target.owner {
        Some(owner) => Some(resolve_owner(owner).map_err(DeployError::Prepare)?),
        None => None,
    };
    let bundle = match &target.pkcs12 {
        Some((_, password_file)) => Some(zeroize::Zeroizing::new(
            pkcs12_bundle(material, password_file).map_err(DeployError::Prepare)?,
        )),
        None => None,
    };
    let public = target.mode.unwrap_or(PUBLIC);
    let private = target.key_mode.unwrap_or(PRIVATE);
    let pkcs12_path = target.pkcs12.as_ref().map(|(path, _)| path.clone());
    let writes: Vec<(&PathBuf, &[u8], u32)> = [
        (&target.cert, material.certificate_pem.as_bytes(), public),
        (&target.chain, material.chain_pem.as_bytes(), public),
        (&target.fullchain, fullchain.as_bytes(), public),
        (&target.key, material.key_pem.as_bytes(), private),
        (
            &pkcs12_path,
            bundle.as_ref().map_or(&[][..], |b| b.as_slice()),
            private,
        ),
    ]
    .into_iter()
    .filter_map(|(path, bytes, mode)| path.as_ref().map(|p| (p, bytes, mode)))
    .collect();
    let previous: Vec<Previous> = writes.iter().map(|(path, _, _)| remember(path)).collect();

    for (path, bytes, mode) in &writes {
        if let Err(error) = write_atomic_owned(path, bytes, *mode, owner) {
            let restored = restore(&previous);
            return Err(DeployError::Write {
                path: path.display().to_string(),
                message: error.to_string(),
                restored,
            });
        }
    }
    if let Some(command) = &target.reload
        && let Err(message) = run_reload(command, target.reload_timeout).await
    {
        let restored = restore(&previous);
        // Bring the service back to the previous files too.
        let _ = run_reload(command, target.reload_timeout).await;
        return Err(DeployError::Reload {
            command: command.clone(),
            message,
            restored,
        });
    }
    if let Some(address) = &target.probe {
        let name = target.probe_name.clone().unwrap_or_else(|| {
            address
                .rsplit_once(':')
                .map_or(address.clone(), |(host, _)| {
                    host.trim_matches(['[', ']']).to_string()
                })
        });
        let deadline = Instant::now() + target.probe_timeout.max(Duration::from_millis(100));
        let seen = loop {
            let seen = match probe_serial(address, &name).await {
                Ok(serial) if serial == material.serial => {
                    return Ok(Deployed {
                        serial,
                        probed: true,
                    });
                }
                Ok(serial) => format!("serial {serial}"),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let restored = restore(&previous);
        if let Some(command) = &target.reload {
            let _ = run_reload(command, target.reload_timeout).await;
        }
        return Err(DeployError::Probe {
            address: address.clone(),
            seen,
            expected: material.serial.clone(),
            restored,
        });
    }
    Ok(Deployed {
        serial: material.serial.clone(),
        probed: false,
    })
}

fn remember(path: &Path) -> Previous {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let contents = std::fs::read(path).ok().map(|bytes| {
        let (mode, owner) = std::fs::metadata(path)
            .map(|m| {
                (
                    m.permissions().mode() & 0o777,
                    Some((m.uid(), Some(m.gid()))),
                )
            })
            .unwrap_or((PRIVATE, None));
        (bytes, mode, owner)
    });
    Previous {
        path: path.to_path_buf(),
        contents,
    }
}

/// Puts every file back as it was (removing those that did not exist). True when all are back.
fn restore(previous: &[Previous]) -> bool {
    let mut all = true;
    for file in previous {
        let done = match &file.contents {
            // The previous owner when we may set it (root); else the contents and mode alone.
            Some((bytes, mode, owner)) => {
                write_atomic_owned(&file.path, bytes, *mode, *owner).is_ok()
                    || write_atomic_owned(&file.path, bytes, *mode, None).is_ok()
            }
            None => std::fs::remove_file(&file.path).is_ok() || !file.path.exists(),
        };
        all &= done;
    }
    all
}

async fn run_reload(command: &str, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    match tokio::time::timeout(
        timeout.max(Duration::from_secs(1)),
        child.wait_with_output(),
    )
    .await
    {
        Err(_) => Err(format!("no exit within {}s", timeout.as_secs())),
        Ok(Err(error)) => Err(error.to_string()),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// Connects to `address` with TLS and returns the serial of the certificate presented,
/// lower-case hex.
async fn probe_serial(address: &str, name: &str) -> Result<String, String> {
    let chain = crate::scan::fetch_chain(address, name, Duration::from_secs(5)).await?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{address} presented no certificate"))?;
    certkeeper_pki::parse_certificate(leaf.as_ref())
        .map(|summary| summary.serial)
        .map_err(|e| format!("{address} presented an unreadable certificate: {e}"))
}
