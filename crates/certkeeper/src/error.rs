//! CLI errors: what went wrong, and what to do.

use certkeeper_server::ServerError;
use certkeeper_server::problem::Problem;
use thiserror::Error;

/// Everything a command can fail with.
#[derive(Debug, Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A local server-side operation failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The server answered with a problem.
    #[error("{} ({}): {}", .0.title, .0.status, .0.detail)]
    Api(Problem),
    /// The server could not be reached or answered nonsense.
    #[error("{0}")]
    Http(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The audit chain is broken (already printed).
    #[error("the audit chain is broken")]
    AuditBroken,
}

impl CliError {
    pub fn file(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        CliError::File {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// Prints the error and a hint to stderr.
    pub fn print(&self) {
        eprintln!("error: {self}");
        let hint = match self {
            CliError::Api(problem) if problem.status == 401 => Some(
                "pass a token with --token or CERTKEEPER_TOKEN (the first start prints an admin token)",
            ),
            CliError::Http(_) => Some(
                "is the server running? check --server and --ca-file (or CERTKEEPER_SERVER / CERTKEEPER_CA_FILE)",
            ),
            _ => None,
        };
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
        if let CliError::Api(problem) = self {
            for denial in &problem.denials {
                eprintln!("  - {denial}");
            }
        }
    }

    /// Exit status: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
