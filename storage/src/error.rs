//! The one error type of `rcraft-storage` and its `Result` alias.
//!
//! Owned by whichever thread called the failing operation (the node's storage thread).
//! Invariant: every I/O error carries the path it concerns and the operation that failed;
//! every corruption report carries the file and byte offset where it was found.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in durable storage.
#[derive(Debug)]
pub enum Error {
    /// An operating-system call failed.
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What we were doing (`"fdatasync"`, `"rename"`, ...).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Bytes on disk fail a checksum, a magic number or a continuity check. Never repaired
    /// silently: the node refuses to start until an operator (or a later repair from peers) acts.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in `file` where the damage was detected.
        offset: u64,
        /// What was wrong, in words.
        reason: String,
    },
    /// Records the log holds could not be read back while it is open (a follower's catch-up
    /// read, [`crate::Wal::read_copies`]): a positional read of them failed with `EIO` (a
    /// sector that turned unreadable after the log was opened), or the bytes read fail their
    /// checksum or do not hold the record expected there. Nothing of the damaged records is
    /// returned. The log's next open finds the damage (an unreadable page is rewritten with
    /// zeroes) and reports the records lost if they were synced (storage/FORMAT.md §4.1).
    DamagedRecords {
        /// The segment file.
        file: PathBuf,
        /// Byte offset in `file` of the first damaged record.
        offset: u64,
        /// Index of the first damaged record.
        first: u64,
        /// Index of the last damaged record found (the read stops at the first damaged run).
        last: u64,
        /// What was wrong, in words.
        reason: String,
    },
    /// The caller asked for something impossible (non-contiguous index, out-of-range read...).
    InvalidArgument(String),
    /// An earlier write or sync failed, so durability of anything written since is unknown.
    /// The store refuses every further mutation (fail-stop); the node must stop and restart,
    /// letting recovery establish what is really on disk.
    Stopped {
        /// The first failure, as text.
        cause: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] from an `io::Error` and its context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            Error::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at byte offset {offset}: {reason}",
                file.display()
            ),
            Error::DamagedRecords {
                file,
                offset,
                first,
                last,
                reason,
            } => write!(
                f,
                "entries {first}..={last} of the log cannot be read back from {} at byte offset \
                 {offset}: {reason}",
                file.display()
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Stopped { cause } => {
                write!(f, "storage stopped after an earlier failure: {cause}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
