//! Errors of the node's storage layer: the storage crate's errors with what the node was doing
//! when they happened, and what the node itself finds wrong with what it reads back.
//!
//! Produced by the storage thread and by `open_storage` before the threads start. The storage
//! thread is fail-stop: an error ends it, and the consensus thread and the public API report it
//! by its message (`node::Error::Storage`), which names the operation, the file and the offset.

use rcraft_storage::Error as StoreError;
use std::fmt;

/// What went wrong in the node's storage.
#[derive(Debug)]
pub(crate) enum StorageError {
    /// The storage crate failed while the node was `doing` something.
    Store {
        /// What the node was doing, e.g. "truncating the log from index 678".
        doing: String,
        /// The storage crate's error (I/O with path and operation, corruption with offset).
        source: StoreError,
    },
    /// A log record or a snapshot description that does not decode.
    Undecodable {
        /// What was being decoded, e.g. "log entry 12".
        what: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The log, the snapshot or a command do not fit together (a programming error in the
    /// caller, or files from elsewhere).
    Inconsistent(String),
}

/// The storage layer's `Result`.
pub(crate) type StorageResult<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// Wraps a storage crate error with what the node was doing: `.map_err(store("…"))`.
    pub(crate) fn store(doing: impl Into<String>) -> impl FnOnce(StoreError) -> StorageError {
        let doing = doing.into();
        move |source| StorageError::Store { doing, source }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Store { doing, source } => write!(f, "{doing}: {source}"),
            StorageError::Undecodable { what, reason } => {
                write!(f, "{what} is undecodable: {reason}")
            }
            StorageError::Inconsistent(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Store { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_message_names_the_operation_and_the_cause_is_kept() {
        let cause =
            StoreError::InvalidArgument("truncate from 678, below the first index 1801".into());
        let error = StorageError::store("truncating the log from index 678")(cause);
        assert_eq!(
            error.to_string(),
            "truncating the log from index 678: invalid argument: truncate from 678, below the \
             first index 1801"
        );
        assert!(error.source().is_some());
    }
}
