//! The simulated disk of one node: durable state, plus writes that are not yet synced.
//!
//! Owned by one simulated node; it survives that node's crashes (the rest of the node does
//! not). Persist actions land in `pending` and become durable, in order, when the simulator
//! syncs them; a crash keeps only a random prefix of `pending` (what the OS happened to write
//! back) and loses the rest. Snapshot chunks are written and synced at once, after everything
//! queued before them (the storage thread is FIFO). Invariants: the durable log is contiguous
//! after the durable snapshot; a durable vote never changes within a term.

use crate::entry_log::EntryLog;
use rcraft::core::{HardState, RecoveredState};
use rcraft::wire::{Entry, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use std::collections::{BTreeMap, VecDeque};

/// A persist action that has been issued but not synced.
#[derive(Clone, Debug)]
struct PendingWrite {
    seq: u64,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

/// A snapshot as stored: its meta and its bytes.
#[derive(Clone, Debug)]
pub(crate) struct StoredSnapshot {
    /// What it covers.
    pub(crate) meta: SnapshotMeta,
    /// The state machine image.
    pub(crate) bytes: Vec<u8>,
}

/// The result of writing one received snapshot chunk.
#[derive(Clone, Debug)]
pub(crate) struct ChunkOutcome {
    /// Bytes durable so far in the partial snapshot.
    pub(crate) next_offset: u64,
    /// Set when this chunk completed a verified snapshot, now the durable one.
    pub(crate) installed: Option<StoredSnapshot>,
    /// The chunk was refused (wrong offset or bad checksum).
    pub(crate) rejected: bool,
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    hard_state: HardState,
    snapshot: Option<StoredSnapshot>,
    log: EntryLog,
    pending: VecDeque<PendingWrite>,
    partial: Option<StoredSnapshot>,
    /// Every vote that ever became durable, by term: a node must never vote twice in a term.
    votes: BTreeMap<Term, NodeId>,
    /// Sim time at which the last scheduled sync completes; syncs complete in order.
    pub(crate) last_sync_at: u64,
}

impl Disk {
    /// Queues a persist action; nothing is durable until [`Disk::sync_through`].
    pub(crate) fn write(&mut self, seq: u64, hard_state: Option<HardState>, entries: Vec<Entry>) {
        self.pending.push_back(PendingWrite {
            seq,
            hard_state,
            entries,
        });
    }

    /// Makes every queued write with a sequence number up to `seq` durable.
    pub(crate) fn sync_through(&mut self, seq: u64) -> Result<(), String> {
        while self.pending.front().is_some_and(|w| w.seq <= seq) {
            self.sync_one()?;
        }
        Ok(())
    }

    /// Makes everything queued durable (a later FIFO command forces it out).
    pub(crate) fn sync_all(&mut self) -> Result<(), String> {
        while !self.pending.is_empty() {
            self.sync_one()?;
        }
        Ok(())
    }

    fn sync_one(&mut self) -> Result<(), String> {
        let Some(write) = self.pending.pop_front() else {
            return Ok(());
        };
        // The real WAL refuses to truncate below its first index (a snapshot installed or
        // compacted before this write): so does the simulated disk (issue 14, finding 1).
        if let Some(first) = write.entries.first() {
            if first.index <= self.log.base_index() {
                return Err(format!(
                    "disk: persist {} writes from index {}, at or below the log's start after \
                     snapshot index {} (installed or compacted before this write)",
                    write.seq,
                    first.index,
                    self.log.base_index()
                ));
            }
        }
        self.log
            .write(&write.entries)
            .map_err(|e| format!("disk: {e}"))?;
        if let Some(hard_state) = write.hard_state {
            if hard_state.term < self.hard_state.term {
                return Err(format!(
                    "durable term went backwards: {} after {}",
                    hard_state.term, self.hard_state.term
                ));
            }
            if let Some(candidate) = hard_state.vote {
                match self.votes.insert(hard_state.term, candidate) {
                    Some(earlier) if earlier != candidate => {
                        return Err(format!(
                            "voted twice in term {}: for {earlier} and then for {candidate}",
                            hard_state.term
                        ));
                    }
                    _ => {}
                }
            }
            self.hard_state = hard_state;
        }
        Ok(())
    }

    /// A crash: the first `reached_disk` queued writes happened to become durable; the rest
    /// are lost. The partial snapshot file is kept (it was synced chunk by chunk).
    pub(crate) fn crash(&mut self, reached_disk: usize) -> Result<(), String> {
        for _ in 0..reached_disk {
            self.sync_one()?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Number of writes not yet durable.
    pub(crate) fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// What a restarting node finds on this disk.
    pub(crate) fn recovered(&self, initial_membership: &Membership) -> RecoveredState {
        RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: self
                .log
                .entries()
                .iter()
                .filter(|e| {
                    self.snapshot
                        .as_ref()
                        .is_none_or(|s| e.index > s.meta.index)
                })
                .cloned()
                .collect(),
            initial_membership: initial_membership.clone(),
        }
    }

    /// The configuration a node restarting from this disk would use: the last durable
    /// membership entry, else the snapshot's, else `initial`.
    pub(crate) fn latest_membership(&self, initial: &Membership) -> Membership {
        let in_log = self
            .log
            .entries()
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                rcraft::wire::EntryPayload::Membership(m) => Some(m),
                _ => None,
            });
        in_log
            .or(self.snapshot.as_ref().map(|s| &s.meta.membership))
            .unwrap_or(initial)
            .clone()
    }

    /// The durable snapshot, if any.
    pub(crate) fn snapshot(&self) -> Option<&StoredSnapshot> {
        self.snapshot.as_ref()
    }

    /// The term saved durably.
    pub(crate) fn durable_term(&self) -> Term {
        self.hard_state.term
    }

    /// The vote saved durably for `term`, if any.
    pub(crate) fn durable_vote(&self, term: Term) -> Option<NodeId> {
        self.votes.get(&term).copied()
    }

    /// The last index of the durable log.
    pub(crate) fn durable_last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The durable term at `index` (the snapshot term at the snapshot index).
    pub(crate) fn durable_term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// A locally taken snapshot is durable. The log keeps its entries until compacted.
    pub(crate) fn save_snapshot(&mut self, snapshot: StoredSnapshot) {
        self.snapshot = Some(snapshot);
    }

    /// Removes durable entries through `through`; only what a durable snapshot covers.
    pub(crate) fn compact(&mut self, through: LogIndex) -> Result<(), String> {
        let covered = self.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        if through > covered {
            return Err(format!(
                "CompactLog through {through} but the durable snapshot covers only {covered}"
            ));
        }
        self.log.compact(through).map_err(|e| format!("disk: {e}"))
    }

    /// Writes one received snapshot chunk (after everything queued before it) and installs the
    /// snapshot when `done` and the bytes verify.
    pub(crate) fn write_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<ChunkOutcome, String> {
        self.sync_all()?;
        let same_transfer = self.partial.as_ref().is_some_and(|p| p.meta == *meta);
        if offset == 0 && !same_transfer {
            self.partial = Some(StoredSnapshot {
                meta: meta.clone(),
                bytes: Vec::new(),
            });
        }
        let Some(partial) = self.partial.as_mut().filter(|p| p.meta == *meta) else {
            return Ok(refused(0));
        };
        let held = partial.bytes.len() as u64;
        if offset != held {
            return Ok(refused(held));
        }
        partial.bytes.extend_from_slice(data);
        let next_offset = partial.bytes.len() as u64;
        if !done {
            return Ok(ChunkOutcome {
                next_offset,
                installed: None,
                rejected: false,
            });
        }
        let complete = self.partial.take().unwrap_or_else(|| unreachable!());
        let verified = complete.bytes.len() as u64 == meta.size_bytes
            && crate::state_machine::checksum(&complete.bytes) == meta.checksum;
        if !verified {
            return Ok(refused(0));
        }
        self.install(complete.clone());
        Ok(ChunkOutcome {
            next_offset,
            installed: Some(complete),
            rejected: false,
        })
    }

    /// A received snapshot replaces the whole log.
    fn install(&mut self, snapshot: StoredSnapshot) {
        self.log.install_snapshot(
            snapshot.meta.index,
            snapshot.meta.term,
            &snapshot.meta.membership,
        );
        self.snapshot = Some(snapshot);
    }
}

fn refused(next_offset: u64) -> ChunkOutcome {
    ChunkOutcome {
        next_offset,
        installed: None,
        rejected: true,
    }
}
