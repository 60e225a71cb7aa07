//! Messages between the consensus thread and the storage thread.
//!
//! Commands are never dropped (a full queue makes the consensus thread wait); events come
//! back at most once per drained batch for persistence, once per snapshot chunk or entry
//! read otherwise (and once per damaged snapshot file found while sending).

use super::net::ClientConnId;
use super::storage_error::{StorageError, StorageResult};
use super::transport::ReplyTo;
use crate::core::StorageAction;
use rcraft_wire::{ClientResponseBody, Entry, LogIndex, NodeId, SnapshotMeta, Term};
use std::path::PathBuf;
use std::sync::Arc;

/// Work for the storage thread: the core's storage actions as they are, in the order the core
/// drained them, and the node's own reads for clients in between.
#[derive(Debug)]
pub(crate) enum StorageCommand {
    /// A storage action of the core (`Action::Storage`), carried out as its documentation
    /// says; persists are reported as `Persisted { seq }` after the batch's one sync.
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

/// What the storage thread reports.
#[derive(Debug)]
pub(crate) enum StorageEvent {
    /// Every persist command through `seq` is durable.
    Persisted {
        /// Highest durable sequence number.
        seq: u64,
    },
    /// Answer to `ReadSnapshotChunk`.
    SnapshotChunkRead {
        /// The follower.
        to: NodeId,
        /// The snapshot read.
        meta: SnapshotMeta,
        /// Offset of `data`.
        offset: u64,
        /// The bytes (shorter than asked only at the end).
        data: Vec<u8>,
    },
    /// Answer to `ReadEntries`: the entries, or why they could not be read (not held any
    /// more, or a damaged record).
    EntriesRead {
        /// The read's id.
        id: u64,
        /// The follower.
        to: NodeId,
        /// First index asked for.
        low: LogIndex,
        /// The entries from `low` on, or the reason for none.
        entries: StorageResult<Vec<Entry>>,
    },
    /// A chunk was written (or refused); the snapshot is not complete yet.
    SnapshotChunkWritten {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Bytes durable so far.
        next_offset: u64,
        /// True when the chunk was refused.
        rejected: bool,
    },
    /// The last chunk arrived, the snapshot verified and is now current on disk and the log
    /// was reset to it; the state machine still has to be restored from it.
    SnapshotStored {
        /// The snapshot.
        meta: SnapshotMeta,
    },
    /// The current snapshot file is damaged on disk (its data does not match the checksum in
    /// its footer, or it no longer opens): no more chunks of it are sent. Reported once per
    /// file; the state machine must write a new snapshot to replace it.
    SnapshotDamaged {
        /// Index of the damaged snapshot.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
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
