//! The node's one error type and its `Result` alias.
//!
//! Every operational failure a `NodeHandle` caller can see is a variant here. Variants say
//! whether a write may still take effect: `NotLeader`, `Overloaded` and `TooLarge` are
//! definite (nothing was proposed), `Timeout` and `Failed { definite: false }` are not.

use super::data_dir::IdentityError;
use super::initial_voters::InitialVotersError;
use super::net::auth::AuthError;
use super::peer_delay::FailpointError;
use super::received_snapshot::StageError;
use super::storage_error::StorageError;
use crate::core::CoreError;
use rcraft_wire::NodeId;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Result of node operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when starting or using a node.
#[derive(Debug)]
pub enum Error {
    /// This node is not the leader; nothing was proposed. `hint` is the leader it knows of.
    NotLeader {
        /// The leader this node believes in, if any.
        hint: Option<NodeId>,
        /// That leader's address from the configuration, when known.
        address: Option<SocketAddr>,
    },
    /// No answer within the configured RPC timeout; a write may or may not take effect.
    Timeout,
    /// The leader is over one of its limits; nothing was proposed. Retry later.
    Overloaded,
    /// The command or read query is larger than a node accepts
    /// ([`COMMAND_BYTES_MAX`](super::limits::COMMAND_BYTES_MAX)); nothing was proposed, and a
    /// retry fails the same way.
    TooLarge {
        /// What was refused: "command" or "query".
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The request failed. `definite` is true when it certainly did not and will not take
    /// effect (e.g. its log entry was replaced by another leader's).
    Failed {
        /// True when the operation certainly did not take effect.
        definite: bool,
        /// What happened.
        message: String,
    },
    /// The running node stopped itself (fail-stop): storage or the apply thread failed, the
    /// threads disagreed about a received snapshot, or a thread stopped or panicked.
    Fatal(Fatal),
    /// An I/O error outside storage (network setup, signal handling).
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The configuration is invalid.
    Config(String),
    /// The node has stopped (after `shutdown`, or after a fatal error).
    Stopped,
    // Errors of the apply thread, of restoring while a snapshot arrives, and of
    // `rcraft snapshot restore` (node/apply.rs, incoming_snapshot.rs, restore.rs).
    /// The apply thread stopped the node (fail-stop): the committed entries it was given have
    /// a gap, or the state machine's snapshot could not be written, read or restored.
    Apply {
        /// What went wrong, naming the index or the snapshot.
        doing: String,
        /// The cause: the storage crate's error, an I/O error, a snapshot failing its check.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A snapshot cannot be read while it arrives (none is being received, another one is,
    /// it is installed already, or the node is stopping); it is restored once installed.
    NotArriving(String),
    /// `rcraft snapshot restore` refused the backup, the configuration or the target, or
    /// failed building the data dir; nothing was left behind.
    Restore {
        /// What was refused or failed.
        doing: String,
        /// The cause: the storage crate's error, an I/O error, the data dir's.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    // Typed failures of the node's parts (issue 14).
    /// The secret file or a token file is refused (unreadable, readable by others, no or a
    /// bad secret or token); the node did not start.
    Auth(AuthError),
    /// The data dir's `identity` file is damaged; the node did not start.
    Identity(IdentityError),
    /// The data dir's `initial_voters` file is damaged; the node did not start.
    InitialVoters(InitialVotersError),
    /// The data dir's log, hard state or snapshots could not be opened or recovered; the node
    /// did not start.
    StorageOpen(StorageError),
    /// Durable storage failed while the node ran; the node stopped (fail-stop).
    StorageStopped(Arc<StorageError>),
    /// The consensus core refused what storage recovered (a log that is not contiguous or
    /// whose terms decrease) or its configuration; the node did not start.
    Core(CoreError),
    /// The TLS flags or files are refused (at start, or by a reload, which keeps the files in
    /// use).
    Tls(crate::tls::TlsError),
    /// A fault-injection variable (tests only) is set to a value it does not take; the node
    /// did not start.
    Failpoint(FailpointError),
}

impl Error {
    /// True when the failed operation certainly did not and will not take effect.
    pub fn is_definite(&self) -> bool {
        match self {
            Error::NotLeader { .. }
            | Error::Overloaded
            | Error::TooLarge { .. }
            | Error::Config(_)
            | Error::Tls(_)
            | Error::Failpoint(_)
            | Error::Auth(_)
            | Error::Identity(_)
            | Error::InitialVoters(_) => true,
            Error::Failed { definite, .. } => *definite,
            Error::Timeout
            | Error::Fatal(_)
            | Error::Io { .. }
            | Error::Stopped
            | Error::StorageOpen(_)
            | Error::StorageStopped(_)
            | Error::Core(_) => false,
            Error::NotArriving(_) | Error::Restore { .. } => true,
            Error::Apply { .. } => false,
        }
    }

    /// True when a command was refused because its client session is not in the cluster's
    /// session table (forgotten to make room for newer sessions, or never registered): this
    /// call applied nothing; register a new session
    /// ([`NodeHandle::register_session`](super::NodeHandle::register_session)).
    pub fn is_session_expired(&self) -> bool {
        matches!(self, Error::Failed { message, .. } if rcraft_wire::is_session_expired(message))
    }

    /// [`Error::TooLarge`] when a command or query of `bytes` is over
    /// [`COMMAND_BYTES_MAX`](super::limits::COMMAND_BYTES_MAX).
    pub(crate) fn check_size(what: &'static str, bytes: usize) -> Result<()> {
        let max = super::limits::COMMAND_BYTES_MAX;
        if bytes > max {
            return Err(Error::TooLarge { what, bytes, max });
        }
        Ok(())
    }

    /// [`Error::Apply`] without a cause beyond its message.
    pub(crate) fn apply(doing: impl Into<String>) -> Error {
        Error::Apply {
            doing: doing.into(),
            source: None,
        }
    }

    /// Wraps `source` into [`Error::Apply`] with what was being done: `.map_err(Error::apply_by("…"))`.
    pub(crate) fn apply_by<E: std::error::Error + Send + Sync + 'static>(
        doing: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let doing = doing.into();
        move |source| Error::Apply {
            doing,
            source: Some(Box::new(source)),
        }
    }

    /// [`Error::Restore`] without a cause beyond its message.
    pub(crate) fn restore(doing: impl Into<String>) -> Error {
        Error::Restore {
            doing: doing.into(),
            source: None,
        }
    }

    /// Wraps `source` into [`Error::Restore`] with what was being done.
    pub(crate) fn restore_by<E: std::error::Error + Send + Sync + 'static>(
        doing: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let doing = doing.into();
        move |source| Error::Restore {
            doing,
            source: Some(Box::new(source)),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLeader { hint: Some(id), .. } => write!(f, "not the leader; try node {id}"),
            Error::NotLeader { hint: None, .. } => write!(f, "not the leader; leader unknown"),
            Error::Timeout => write!(f, "timed out; the outcome is unknown"),
            Error::Overloaded => write!(f, "overloaded; retry later"),
            Error::TooLarge { what, bytes, max } => write!(
                f,
                "{what} of {bytes} bytes is over the limit of {max} bytes; nothing was proposed"
            ),
            Error::Failed { definite, message } => {
                let outcome = if *definite {
                    "definite"
                } else {
                    "outcome unknown"
                };
                write!(f, "request failed ({outcome}): {message}")
            }
            Error::Fatal(why) => write!(f, "storage failed, node stopped: {why}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Config(message) => write!(f, "bad configuration: {message}"),
            Error::Stopped => write!(f, "the node has stopped"),
            Error::Apply { doing, source } | Error::Restore { doing, source } => {
                f.write_str(doing)?;
                if let Some(source) = source {
                    write!(f, ": {source}")?;
                }
                if matches!(self, Error::Restore { .. }) {
                    f.write_str("; nothing was restored")?;
                }
                Ok(())
            }
            Error::NotArriving(why) => f.write_str(why),
            Error::Auth(e) => write!(f, "bad configuration: {e}"),
            Error::Tls(e) => write!(f, "bad configuration: {e}"),
            Error::Failpoint(e) => write!(f, "bad configuration: {e}"),
            Error::Identity(e) => write!(f, "storage failed, node stopped: {e}"),
            Error::InitialVoters(e) => write!(f, "storage failed, node stopped: {e}"),
            Error::StorageOpen(e) => write!(f, "storage failed, node stopped: {e}"),
            Error::StorageStopped(e) => write!(f, "storage failed, node stopped: {e}"),
            Error::Core(e) => write!(
                f,
                "storage failed, node stopped: the recovered state is inconsistent: {e}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Apply {
                source: Some(source),
                ..
            }
            | Error::Restore {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            Error::Auth(e) => Some(e),
            Error::Tls(e) => Some(e),
            Error::Failpoint(e) => Some(e),
            Error::Identity(e) => Some(e),
            Error::InitialVoters(e) => Some(e),
            Error::StorageOpen(e) => Some(e),
            Error::StorageStopped(e) => Some(e.as_ref()),
            Error::Core(e) => Some(e),
            Error::Fatal(why) => Some(why),
            _ => None,
        }
    }
}

/// Why a running node stopped itself (fail-stop), as its consensus thread or its owner saw
/// it. The consensus thread answers every waiting request with `the node stopped: {reason}`,
/// and [`Error::Fatal`] carries it to the caller of `Node::join`.
#[derive(Debug)]
pub enum Fatal {
    /// Durable storage failed (a write, an fsync, a read); the storage thread stopped.
    Storage(Arc<StorageError>),
    /// The apply thread stopped: the committed entries it was given have a gap, or the state
    /// machine's snapshot could not be written, read or restored (an [`Error::Apply`]).
    Apply(Box<Error>),
    /// A received snapshot's stage changed in an order the protocol cannot produce: a bug
    /// between the threads.
    SnapshotStage(StageError),
    /// A thread's channel closed without the thread saying why ("storage" or "apply").
    ThreadStopped(&'static str),
    /// A thread panicked.
    Panicked {
        /// Which thread: "consensus" or "apply".
        thread: &'static str,
        /// Its panic message, when the panic carried text.
        message: Option<String>,
    },
}

impl Fatal {
    /// [`Fatal::Panicked`] for `thread`, with the text of its panic `payload` if it has one.
    pub(crate) fn panicked(thread: &'static str, payload: &(dyn std::any::Any + Send)) -> Fatal {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        Fatal::Panicked { thread, message }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Storage(e) => e.fmt(f),
            Fatal::Apply(e) => e.fmt(f),
            Fatal::SnapshotStage(e) => e.fmt(f),
            Fatal::ThreadStopped(thread) => write!(f, "the {thread} thread stopped"),
            Fatal::Panicked { thread, message } => {
                write!(f, "the {thread} thread panicked")?;
                match message {
                    Some(message) => write!(f, ": {message}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Fatal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Fatal::Storage(e) => Some(e.as_ref()),
            Fatal::Apply(e) => Some(e.as_ref()),
            Fatal::SnapshotStage(e) => Some(e),
            Fatal::ThreadStopped(_) | Fatal::Panicked { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn apply_and_restore_errors_name_what_failed_and_keep_the_cause() {
        let cause = rcraft_storage::Error::InvalidArgument("bad offset".into());
        let error = Error::apply_by("restoring the snapshot at index 7")(cause);
        assert_eq!(
            error.to_string(),
            "restoring the snapshot at index 7: invalid argument: bad offset"
        );
        assert!(error.source().is_some());
        assert!(!error.is_definite(), "the node stopped: outcomes unknown");
        let error = Error::restore_by("creating the log")(io::Error::other("disk full"));
        assert_eq!(
            error.to_string(),
            "creating the log: disk full; nothing was restored"
        );
        assert!(error.source().is_some());
        assert!(Error::restore("refused").source().is_none());
    }

    #[test]
    fn a_fatal_stop_keeps_the_operators_text_and_its_cause() {
        let cause = rcraft_storage::Error::InvalidArgument("truncate from 678".into());
        let storage = StorageError::store("truncating the log from index 678")(cause);
        let error = Error::Fatal(Fatal::Storage(Arc::new(storage)));
        assert_eq!(
            error.to_string(),
            "storage failed, node stopped: truncating the log from index 678: invalid \
             argument: truncate from 678"
        );
        let fatal = error.source().expect("the fatal reason");
        let storage = fatal.source().expect("the storage error");
        assert!(storage.source().is_some(), "the storage crate's error");
        assert!(!error.is_definite());

        let apply = Error::Fatal(Fatal::Apply(Box::new(Error::apply_by(
            "writing the snapshot at index 9",
        )(io::Error::other(
            "disk full",
        )))));
        assert_eq!(
            apply.to_string(),
            "storage failed, node stopped: writing the snapshot at index 9: disk full"
        );
        let chain: Vec<String> = std::iter::successors(apply.source(), |e| (*e).source())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            chain,
            [
                "writing the snapshot at index 9: disk full",
                "writing the snapshot at index 9: disk full",
                "disk full"
            ]
        );

        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from("index out of range"));
        let panicked = Fatal::panicked("apply", payload.as_ref());
        assert_eq!(
            panicked.to_string(),
            "the apply thread panicked: index out of range"
        );
        let silent: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        let silent = Fatal::panicked("consensus", silent.as_ref());
        assert_eq!(silent.to_string(), "the consensus thread panicked");
        assert!(silent.source().is_none());
        assert_eq!(
            Fatal::ThreadStopped("storage").to_string(),
            "the storage thread stopped"
        );
    }
}
