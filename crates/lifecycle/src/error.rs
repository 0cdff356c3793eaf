use thiserror::Error;

/// What is wrong with a managed-certificate declaration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LifecycleError {
    /// A field has a value that cannot work; the message names the field and what to do.
    #[error("managed certificate {name:?}: {message}")]
    InvalidSpec {
        /// The managed certificate's name.
        name: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Two declarations share a name.
    #[error("managed certificate {0:?} is declared twice; names must be unique")]
    DuplicateName(String),
    /// A rollout setting that cannot work.
    #[error("rollout: {0}")]
    InvalidRollout(String),
    /// A file mode that is not octal permission bits.
    #[error("{0}")]
    InvalidMode(String),
}
