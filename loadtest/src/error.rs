//! The loadtest's one error type. Every operational failure (bad flags, a node that will not
//! start, no leader in time, I/O on reports) is an `Error` with context; nothing panics on bad
//! input.

use std::fmt;

/// Everything that can stop a load test before it produces a report.
#[derive(Debug)]
pub enum Error {
    /// The command line is inconsistent (e.g. `--kill-leader-every` with `--servers`).
    Usage(String),
    /// An I/O operation failed; the string says what was being done.
    Io(String, std::io::Error),
    /// The cluster did not get into the expected shape (no leader, node exited, ...).
    Cluster(String),
    /// SIGINT or SIGTERM arrived before the run produced anything.
    Interrupted,
}

/// Result alias for the loadtest.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io(context.into(), source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "usage: {message}"),
            Error::Io(context, source) => write!(f, "{context}: {source}"),
            Error::Cluster(message) => write!(f, "cluster: {message}"),
            Error::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, source) => Some(source),
            _ => None,
        }
    }
}
