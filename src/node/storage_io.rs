//! Messages between the consensus thread and the storage thread.
//!
//! Commands are never dropped (a full queue makes the consensus thread wait); events come
//! back at most once per drained batch for persistence, once per snapshot chunk or entry
//! read otherwise (and once per damaged snapshot file found while sending).

use super::net::ClientConnId;
use super::storage_error::{StorageError, StorageResult};
use super::transport::ReplyTo;
use crate::core::HardState;
use rcraft_wire::{ClientResponseBody, Entry, LogIndex, NodeId, SnapshotMeta, Term};
use std::path::PathBuf;
use std::sync::Arc;

/// Work for the storage thread.
#[derive(Debug)]
pub(crate) enum StorageCommand {
    /// Truncate (when the first entry is at or below the last index), append, save hard
    /// state; then report `Persisted { seq }` after the batch's one sync.
    Persist {
        /// Sequence number of the core's persist action.
        seq: u64,
        /// New hard state, when it changed.
        hard_state: Option<HardState>,
        /// Entries, contiguous, in index order.
        entries: Vec<Entry>,
    },
    /// The log through `through` is covered by a durable snapshot; drop it from disk.
    CompactLog {
        /// Highest removable index.
        through: LogIndex,
    },
    /// Read part of a snapshot being sent to a follower (the current one, or one kept).
    ReadSnapshotChunk {
        /// The follower.
        to: NodeId,
        /// The snapshot the core is sending.
        meta: SnapshotMeta,
        /// Where to read from.
        offset: u64,
        /// Most bytes to read.
        max_bytes: u64,
    },
    /// Read log entries `[low, high]` for a follower, up to `max_bytes` (at least one);
    /// answered with `EntriesRead` (`Action::ReadEntries`).
    ReadEntries {
        /// Echoed in the answer.
        id: u64,
        /// The follower.
        to: NodeId,
        /// First index.
        low: LogIndex,
        /// Last index at most.
        high: LogIndex,
        /// Stop once this many entry bytes are read.
        max_bytes: u64,
    },
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
    /// Keep these snapshots' files (the core's current one and those being sent); older
    /// files not listed go (`Action::KeepSnapshots`).
    KeepSnapshots {
        /// The snapshots in use.
        in_use: Vec<SnapshotMeta>,
    },
    /// Write a received chunk to the partial snapshot; on `done`, verify and make current.
    WriteSnapshotChunk {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Offset of `data`.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
        /// CRC-32C of `data` according to the leader.
        chunk_crc: u32,
        /// Last chunk.
        done: bool,
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
