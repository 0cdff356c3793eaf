use thiserror::Error;

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bad store configuration (URL, options).
    #[error("database configuration: {0}")]
    Config(String),
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// A query argument is invalid (cursor, sort key).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // SQLSTATE class 22, data exception (a NUL byte in text, a value out of range): the
            // value given is at fault, not the database.
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")) => {
                StoreError::InvalidQuery(format!("the database refused a value: {}", db.message()))
            }
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(error.to_string())
            }
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}
