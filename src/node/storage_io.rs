//! Messages between the consensus thread and the storage thread.
//!
//! Commands are never dropped (a full queue makes the consensus thread wait); events come
//! back at most once per drained batch for persistence, once per snapshot chunk or entry
//! read otherwise (and once per damaged snapshot file found while sending). Both directions
//! speak the core's vocabulary: commands are its `StorageAction`s and the answers its
//! `StorageOutcome`s, each as it is; only the node's own reads for clients' backups and the
//! thread's fail-stop are added.

use super::net::ClientConnId;
use super::storage_error::StorageError;
use super::transport::ReplyTo;
use crate::core::{StorageAction, StorageOutcome};
use rcraft_wire::{ClientResponseBody, LogIndex};
use std::sync::Arc;

/// Work for the storage thread: the core's storage actions as they are, in the order the core
/// drained them, and the node's own reads for clients in between.
#[derive(Debug)]
pub(crate) enum StorageCommand {
    /// A storage action of the core (`Action::Storage`), carried out as its documentation
    /// says; persists are reported as `StorageOutcome::Persisted { seq }` after the batch's one
    /// sync.
    Core(StorageAction),
    /// Read part of the current snapshot for a client taking a backup; answered with
    /// `ClientAnswer`.
    ReadSnapshotForClient {
        /// Where the answer goes.
        reply: ReplyTo,
        /// The client's connection (its transfer's running checksum is kept per connection).
        conn: ClientConnId,
        /// The snapshot wanted, by its last index; 0 for whichever is current.
        index: LogIndex,
        /// Where to read from.
        offset: u64,
        /// Most bytes to read.
        max_bytes: u64,
    },
}

impl StorageCommand {
    /// Whether this appends entries to the log (a persist with entries), whose sync carries
    /// the WAL's pending count of earlier records (storage/FORMAT.md §1.1).
    pub(crate) fn appends_entries(&self) -> bool {
        matches!(self, StorageCommand::Core(StorageAction::Persist { entries, .. }) if !entries.is_empty())
    }
}

/// What the storage thread reports.
#[derive(Debug)]
pub(crate) enum StorageEvent {
    /// For the core, as the core takes it (`Input::Storage`): the answer to one of its
    /// storage actions, or a damaged local snapshot found while reading one. The consensus
    /// thread shows the received-snapshot stage (`received_snapshot.rs`) the answers to
    /// received chunks before the core gets them.
    Core(StorageOutcome),
    /// The answer to a client's request (a backup's snapshot chunk, or why there is none).
    ClientAnswer {
        /// Where it goes.
        reply: ReplyTo,
        /// The answer.
        body: ClientResponseBody,
    },
    /// A storage operation failed: the node must stop (fail-stop, never continue with
    /// unknown durability). The storage thread's own result holds the same error.
    Failed(Arc<StorageError>),
}
