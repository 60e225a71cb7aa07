//! Public values returned by a [`NodeHandle`](super::NodeHandle): results of proposals and
//! reads, snapshots taken on demand, and the applied-entry stream (cRaft's `ApplyMsg`).

use rcraft_wire::{LogIndex, Term};

/// A committed and applied proposal (cRaft's `ClientResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeResult {
    /// Term of the log entry holding the command.
    pub term: Term,
    /// Index of that entry.
    pub index: LogIndex,
    /// The state machine's response from `apply` (or the saved response of a retried write).
    pub response: Vec<u8>,
}

/// A linearizable read served by the state machine's `query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// Term of the leader that confirmed the read.
    pub term: Term,
    /// The read index: the state reflects at least every entry through it.
    pub index: LogIndex,
    /// The state machine's answer.
    pub response: Vec<u8>,
}

/// One applied command, as delivered to `subscribe_applied` receivers (cRaft's `ApplyMsg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyMsg {
    /// Log index of the command.
    pub index: LogIndex,
    /// Term of its entry.
    pub term: Term,
    /// The command bytes.
    pub command: Vec<u8>,
}

/// A durable snapshot of this node's state machine, as returned by
/// [`NodeHandle::snapshot`](super::NodeHandle::snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotResult {
    /// Last log index the snapshot covers.
    pub index: LogIndex,
    /// Term of that entry.
    pub term: Term,
    /// Size of the snapshot's data in bytes.
    pub size_bytes: u64,
}

impl SnapshotResult {
    /// Reads the answer to a snapshot request: `result` holds the size (u64 little-endian).
    pub fn from_answer(term: Term, index: LogIndex, result: &[u8]) -> Option<SnapshotResult> {
        let size: [u8; 8] = result.try_into().ok()?;
        Some(SnapshotResult {
            index,
            term,
            size_bytes: u64::from_le_bytes(size),
        })
    }
}
