use thiserror::Error;

/// Everything that can stop the server or a local command.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The configuration is invalid; the message says where and what is allowed.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The CA files are missing, inconsistent or not ready.
    #[error("CA: {0}")]
    Ca(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] certkeeper_store::StoreError),
    /// Certificate or key handling failed.
    #[error(transparent)]
    Pki(#[from] certkeeper_pki::PkiError),
    /// A listener could not start.
    #[error("listener: {0}")]
    Listen(String),
}

impl ServerError {
    pub(crate) fn io(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        ServerError::Io {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}
