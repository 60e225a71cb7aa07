//! The node's storage thread and client session table, reachable by the cluster simulator
//! (`tests/sim/`), which runs them beside its model of the disk and inside its state
//! machine. Hidden from the documentation and not part of the API: it exists so that the
//! simulator drives the same code the storage and apply threads run, not a copy.
//!
//! Owned by one simulated node; single-threaded. Commands queue until [`SimStorage::run`]
//! carries them out as one drained batch, exactly as the thread's loop would.

use super::sessions::{SessionCheck, SessionTable};
use super::snapshot_files::{file_meta, snapshot_meta};
use super::snapshot_format::{read_snapshot, write_snapshot};
use super::storage_error::StorageError;
use super::storage_io::{StorageCommand, StorageEvent};
use super::storage_thread::{OpenedStorage, open_storage_with};
use crate::core::{HardState, RecoveredState};
use rcraft_storage::SimFs;
use rcraft_wire::{Entry, LogIndex, Membership, Session, SnapshotMeta};
use std::path::Path;
use std::sync::Arc;

/// WAL segment size of a simulated node: small, so that batches roll segments.
const SEGMENT_BYTES: u64 = 16 << 10;

/// What the storage thread reported for a batch, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimStorageEvent {
    /// Every persist through this sequence number is durable.
    Persisted(u64),
    /// A received chunk was written (`rejected: false`) or refused; `next_offset` is where
    /// the durable bytes end.
    ChunkWritten {
        /// End of the durable bytes of the partial snapshot.
        next_offset: u64,
        /// True when the chunk was refused.
        rejected: bool,
    },
    /// The received snapshot is verified and current (or was not newer than the current one).
    Stored(SnapshotMeta),
}

/// One simulated node's storage thread over a simulated file system.
pub struct SimStorage {
    opened: OpenedStorage,
    queue: Vec<StorageCommand>,
}

impl SimStorage {
    /// Opens the node's files under `/data` on `fs` (creating them the first time) and
    /// returns the storage with what it recovered.
    pub fn open(
        fs: &SimFs,
        initial: Membership,
    ) -> Result<(SimStorage, RecoveredState), StorageError> {
        let fs = Arc::new(fs.clone());
        let opened = open_storage_with(fs, Path::new("/data"), initial, SEGMENT_BYTES)?;
        let recovered = opened.recovered.clone();
        let storage = SimStorage {
            opened,
            queue: Vec::new(),
        };
        Ok((storage, recovered))
    }

    /// Queues a persist action.
    pub fn persist(&mut self, seq: u64, hard_state: Option<HardState>, entries: Vec<Entry>) {
        self.queue.push(StorageCommand::Persist {
            seq,
            hard_state,
            entries,
        });
    }

    /// Queues a compaction through `through`.
    pub fn compact(&mut self, through: LogIndex) {
        self.queue.push(StorageCommand::CompactLog { through });
    }

    /// Queues the core's list of snapshots in use (`Action::KeepSnapshots`).
    pub fn keep(&mut self, in_use: Vec<SnapshotMeta>) {
        self.queue.push(StorageCommand::KeepSnapshots { in_use });
    }

    /// Queues a received chunk (`chunk_crc` is computed here, as the leader would).
    pub fn write_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: Vec<u8>, done: bool) {
        self.queue.push(StorageCommand::WriteSnapshotChunk {
            meta,
            offset,
            chunk_crc: crc32c::crc32c(&data),
            data,
            done,
        });
    }

    /// Reads log entries `[low, high]` (up to `max_bytes`) from the WAL now, as the thread
    /// answers `StorageCommand::ReadEntries`: without waiting for the queued commands, since
    /// the core reads only entries a confirmed persist wrote.
    pub fn read_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, String> {
        (self.opened.thread.read_entries(low, high, max_bytes)).map_err(|e| e.to_string())
    }

    /// Persists queued before a command not yet run.
    pub fn queued_persists(&self) -> usize {
        self.queue
            .iter()
            .filter(|c| matches!(c, StorageCommand::Persist { .. }))
            .count()
    }

    /// Carries out the first `count` queued commands (all when `None`) as one batch and
    /// returns what the thread reported; an error is the thread's fail-stop.
    pub fn run(&mut self, count: Option<usize>) -> Result<Vec<SimStorageEvent>, String> {
        let count = count.unwrap_or(self.queue.len()).min(self.queue.len());
        let batch: Vec<StorageCommand> = self.queue.drain(..count).collect();
        let (result, events) = self.opened.thread.carry_out_batch(batch);
        result.map_err(|e| e.to_string())?;
        events
            .into_iter()
            .map(|event| match event {
                StorageEvent::Persisted { seq } => Ok(SimStorageEvent::Persisted(seq)),
                StorageEvent::SnapshotChunkWritten {
                    next_offset,
                    rejected,
                    ..
                } => Ok(SimStorageEvent::ChunkWritten {
                    next_offset,
                    rejected,
                }),
                StorageEvent::SnapshotStored { meta } => Ok(SimStorageEvent::Stored(meta)),
                other => Err(format!("unexpected storage event {other:?}")),
            })
            .collect()
    }

    /// Carries out every queued command up to and including the persist `seq`.
    pub fn run_through(&mut self, seq: u64) -> Result<Vec<SimStorageEvent>, String> {
        let count = self
            .queue
            .iter()
            .position(|c| matches!(c, StorageCommand::Persist { seq: s, .. } if *s >= seq))
            .map_or(self.queue.len(), |at| at + 1);
        self.run(Some(count))
    }

    /// Writes a local snapshot of `bytes` described by `meta` (durable on return), as the
    /// apply thread does.
    pub fn write_local_snapshot(&self, meta: &SnapshotMeta, bytes: &[u8]) -> Result<(), String> {
        let mut writer = self
            .opened
            .snapshots
            .begin(file_meta(meta))
            .map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut writer, bytes).map_err(|e| e.to_string())?;
        let info = writer.finish().map_err(|e| e.to_string())?;
        let written = snapshot_meta(&info).map_err(|e| e.to_string())?;
        if written.checksum != meta.checksum {
            return Err(format!(
                "snapshot {} written with data CRC {:08x}, described as {:08x}",
                meta.index, written.checksum, meta.checksum
            ));
        }
        Ok(())
    }

    /// The bytes of the current snapshot, if any.
    pub fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, String> {
        let store = &self.opened.snapshots;
        let Some(info) = store.latest().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let meta = snapshot_meta(&info).map_err(|e| e.to_string())?;
        let bytes = store
            .read_chunk(&info, 0, meta.size_bytes as usize)
            .map_err(|e| e.to_string())?;
        Ok(Some((meta, bytes)))
    }
}

/// The apply thread's client session table, for the simulated state machine: the same table
/// and the same snapshot encoding the apply thread uses, so the simulator's replicas dedup
/// retried writes exactly as a node does.
#[derive(Debug, Default)]
pub struct SimSessions {
    table: SessionTable,
}

/// What the session table decides for a command (see the apply thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimSessionCheck {
    /// A registration: create a session (its client id is the entry's index).
    Register,
    /// A new write of a registered client: apply it.
    Apply,
    /// A retry of the last applied write: answer with its saved response, do not apply.
    Duplicate(Vec<u8>),
    /// Older than the last applied write: not applied, outcome unknown to the client.
    Stale,
    /// The client is not in the table: refused, never applied (a definite failure).
    Expired,
    /// Sequence 0 from a client other than 0: refused.
    ReservedSequence,
}

impl SimSessions {
    /// An empty table that remembers at most `capacity` clients (a node's is
    /// [`SESSIONS_MAX`](super::limits::SESSIONS_MAX)); past it the least recent is forgotten.
    pub fn with_capacity(capacity: usize) -> SimSessions {
        SimSessions {
            table: SessionTable::with_capacity(capacity.max(1)),
        }
    }

    /// Decides what to do with `session`'s command at the next applied index.
    pub fn check(&self, session: Session) -> SimSessionCheck {
        match self.table.check(session) {
            SessionCheck::Register => SimSessionCheck::Register,
            SessionCheck::Apply => SimSessionCheck::Apply,
            SessionCheck::Duplicate(response) => SimSessionCheck::Duplicate(response),
            SessionCheck::Stale => SimSessionCheck::Stale,
            SessionCheck::Expired => SimSessionCheck::Expired,
            SessionCheck::ReservedSequence => SimSessionCheck::ReservedSequence,
        }
    }

    /// Creates the session of the registration at `index`; returns its client id.
    pub fn register(&mut self, index: LogIndex) -> u64 {
        self.table.register(index)
    }

    /// Records that `session`'s write was applied at `index` with `response`.
    pub fn record(&mut self, session: Session, index: LogIndex, response: Vec<u8>) {
        self.table.record(session, index, response);
    }

    /// A node snapshot's bytes: this table, then `state` (the state machine's own snapshot),
    /// in the apply thread's format (`snapshot_format.rs`).
    pub fn snapshot_bytes(&self, state: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let adapter = StateBytes(state.to_vec());
        write_snapshot(&mut out, &self.table, &adapter)
            .unwrap_or_else(|e| unreachable!("writing a snapshot to memory failed: {e}"));
        out
    }

    /// Reads a node snapshot's bytes back into a table of `capacity`: the session table and
    /// the state machine's bytes.
    pub fn restore(
        bytes: &[u8],
        capacity: usize,
    ) -> Result<(SimSessions, Vec<u8>), std::io::Error> {
        let mut table = SessionTable::with_capacity(capacity.max(1));
        let mut adapter = StateBytes(Vec::new());
        let mut input = bytes;
        read_snapshot(&mut input, &mut table, &mut adapter)?;
        Ok((SimSessions { table }, adapter.0))
    }
}

/// A state machine that is only its snapshot bytes (the simulator keeps its own state).
struct StateBytes(Vec<u8>);

impl crate::StateMachine for StateBytes {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.0)
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.0.clear();
        input.read_to_end(&mut self.0).map(|_| ())
    }
}
