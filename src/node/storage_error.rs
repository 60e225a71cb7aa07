//! Errors of the node's storage layer: the storage crate's errors with what the node was doing
//! when they happened, and what the node itself finds wrong with what it reads back.
//!
//! Produced by the storage thread and by `open_storage` before the threads start. The storage
//! thread is fail-stop: an error ends it; the public API returns it as
//! [`Error::StorageOpen`](super::Error::StorageOpen) (at start) or
//! [`Error::StorageStopped`](super::Error::StorageStopped) (from a running node), and its
//! message names the operation, the file and the offset.

use super::entry_codec::PayloadError;
use crate::core::{ReadEntriesError, ReadFailure};
use rcraft_storage::Error as StoreError;
use rcraft_wire::record::RecordError;
use std::fmt;
use std::path::PathBuf;

/// What went wrong in the node's storage.
#[derive(Debug)]
pub enum StorageError {
    /// The storage crate failed while the node was `doing` something.
    Store {
        /// What the node was doing, e.g. "truncating the log from index 678".
        doing: String,
        /// The storage crate's error (I/O with path and operation, corruption with offset).
        source: StoreError,
    },
    /// A log record or a snapshot description that does not decode.
    Undecodable {
        /// What was being decoded.
        what: Decoded,
        /// Why it does not decode.
        reason: DecodeProblem,
    },
    /// The log, the snapshot or a command do not fit together (a programming error in the
    /// caller, or files from elsewhere).
    Inconsistent(String),
}

/// What did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The log entry at this index.
    LogEntry(u64),
    /// The membership recorded in this snapshot file.
    SnapshotMembership(PathBuf),
}

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::LogEntry(index) => write!(f, "log entry {index}"),
            Decoded::SnapshotMembership(path) => {
                write!(f, "the membership of snapshot {}", path.display())
            }
        }
    }
}

/// Why a record or a snapshot description does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeProblem {
    /// The record's checksum does not match its bytes.
    ChecksumMismatch,
    /// The bytes are not a payload.
    Payload(PayloadError),
    /// A payload of another kind where a membership was expected.
    NotAMembership,
    /// A whole record (header, checksum, payload) does not decode.
    Record(RecordError),
}

impl fmt::Display for DecodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeProblem::ChecksumMismatch => f.write_str("record checksum mismatch"),
            DecodeProblem::Payload(e) => e.fmt(f),
            DecodeProblem::NotAMembership => f.write_str("it holds another payload"),
            DecodeProblem::Record(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DecodeProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeProblem::Payload(e) => Some(e),
            DecodeProblem::Record(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PayloadError> for DecodeProblem {
    fn from(e: PayloadError) -> DecodeProblem {
        DecodeProblem::Payload(e)
    }
}

/// The storage layer's `Result`.
pub(crate) type StorageResult<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// Wraps a storage crate error with what the node was doing: `.map_err(store("…"))`.
    pub(crate) fn store(doing: impl Into<String>) -> impl FnOnce(StoreError) -> StorageError {
        let doing = doing.into();
        move |source| StorageError::Store { doing, source }
    }

    /// What the core is told when entries could not be read for a follower
    /// (`StorageOutcome::EntriesRead`): the kind of failure and this error's message.
    pub(crate) fn read_failure(&self) -> ReadEntriesError {
        let kind = match self {
            StorageError::Store {
                source: StoreError::Io { .. } | StoreError::Stopped { .. },
                ..
            } => ReadFailure::Io,
            StorageError::Store {
                source: StoreError::Corruption { .. } | StoreError::DamagedRecords { .. },
                ..
            }
            | StorageError::Undecodable { .. } => ReadFailure::Damaged,
            StorageError::Store {
                source: StoreError::InvalidArgument(_),
                ..
            }
            | StorageError::Inconsistent(_) => ReadFailure::NotHeld,
        };
        ReadEntriesError::new(kind, self.to_string())
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
            StorageError::Undecodable { reason, .. } => Some(reason),
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

    #[test]
    fn a_failed_entry_read_tells_the_core_its_kind_and_the_message() {
        use crate::core::ReadFailure;
        let io = StorageError::store("reading the log from 7")(StoreError::io(
            "read",
            "/data/wal/00000001.wal",
            std::io::Error::other("EIO"),
        ));
        let corrupt = StorageError::store("reading the log from 7")(StoreError::Corruption {
            file: PathBuf::from("/data/wal/00000001.wal"),
            offset: 4096,
            reason: "record checksum mismatch".into(),
        });
        let undecodable = StorageError::Undecodable {
            what: Decoded::LogEntry(7),
            reason: DecodeProblem::ChecksumMismatch,
        };
        let unreadable =
            StorageError::store("reading entries 7..=9 of the log")(StoreError::DamagedRecords {
                file: PathBuf::from("/data/wal/00000001.wal"),
                offset: 8192,
                first: 8,
                last: 8,
                reason: "Input/output error (os error 5) (an unreadable sector)".into(),
            });
        let not_held = StorageError::Inconsistent("entries 3..=9 are not all in the log".into());
        let out_of_range = StorageError::store("reading the log from 2")(
            StoreError::InvalidArgument("index 2 is below the first index 5".into()),
        );
        let stopped = StorageError::store("reading the log from 7")(StoreError::Stopped {
            cause: "fdatasync failed".into(),
        });
        for (error, kind) in [
            (io, ReadFailure::Io),
            (stopped, ReadFailure::Io),
            (corrupt, ReadFailure::Damaged),
            (undecodable, ReadFailure::Damaged),
            (unreadable, ReadFailure::Damaged),
            (not_held, ReadFailure::NotHeld),
            (out_of_range, ReadFailure::NotHeld),
        ] {
            let told = error.read_failure();
            assert_eq!(told.kind, kind, "{error}");
            assert_eq!(told.message, error.to_string());
            assert_eq!(told.to_string(), error.to_string());
        }
    }

    #[test]
    fn a_log_that_does_not_open_stops_the_start_with_its_path_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        // The WAL's directory is a file: the log cannot open.
        std::fs::write(dir.path().join("wal"), b"not a directory").unwrap();
        let membership = rcraft_wire::Membership::with_voters([rcraft_wire::NodeId(0)]);
        let Err(opened) = super::super::storage_thread::open_storage(dir.path(), membership, true)
        else {
            panic!("a log over a file opened");
        };
        let doing_expected = format!("opening the log in {}", dir.path().display());
        assert!(
            matches!(&opened, StorageError::Store { doing, .. } if *doing == doing_expected),
            "{opened:?}"
        );
        let error = super::super::Error::StorageOpen(opened);
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("storage failed, node stopped: {doing_expected}: ")),
            "{message}"
        );
        let store = error.source().unwrap().source().unwrap();
        assert!(store.downcast_ref::<StoreError>().is_some(), "{store:?}");
    }

    #[test]
    fn a_recovered_state_the_core_refuses_keeps_the_core_error() {
        let refused = crate::core::CoreError::RecoveredLog("entry 5 after entry 3".into());
        let error = super::super::Error::Core(refused.clone());
        assert_eq!(
            error.to_string(),
            "storage failed, node stopped: the recovered state is inconsistent: invalid \
             recovered log: entry 5 after entry 3"
        );
        let source = error.source().unwrap();
        assert_eq!(
            source.downcast_ref::<crate::core::CoreError>(),
            Some(&refused)
        );
        assert!(!error.is_definite());
    }
}
