//! The simulated disk of one node: durable state, plus writes that are not yet synced.
//!
//! Owned by one simulated node; it survives that node's crashes (the rest of the node does
//! not). Persist actions land in `pending` and become durable, in order, when the simulator
//! syncs them; a crash keeps only a random prefix of `pending` (what the OS happened to write
//! back) and loses the rest. Snapshot chunks are written and synced at once, after everything
//! queued before them (the storage thread is FIFO). Invariants: the durable log is contiguous
//! after the durable snapshot; a durable vote never changes within a term.
//!
//! In the seeds that use it (`RunParams::real_storage`), the node's real storage thread runs
//! beside the model over the storage crate's `SimFs` (`rcraft::node::testing::SimStorage`):
//! every persist, compaction, local snapshot and received chunk goes to both, each sync runs
//! the real thread's batch, its answers to chunks must equal the model's, and at every restart
//! what the real storage recovers must equal the model's durable state.

use crate::entry_log::EntryLog;
use rcraft::core::{
    HardState, LostEntries, ReadEntriesError, ReadFailure, RecoveredState, StorageOutcome,
};
use rcraft::node::testing::SimStorage;
use rcraft::wire::{Entry, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use rcraft_storage::{CrashMode, SimFs};
use std::collections::{BTreeMap, VecDeque};

/// What a damage to the hard-state file leaves readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HardStateDamage {
    /// Both slots unreadable or flipped (or the file cut short): nothing.
    BothSlots,
    /// One slot flipped or unreadable: the other holds the newest state.
    OneSlot,
    /// The disk dropped the synced write of the newest save to one slot, and the other slot
    /// was then flipped: the readable slot holds the save before.
    LostWriteThenOneSlot,
}

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
    /// The final chunk of a snapshot the durable one already covers: answered as stored
    /// (as the storage thread does), nothing installed and the partial bytes kept.
    pub(crate) covered: bool,
    /// The chunk was refused (wrong offset or bad checksum).
    pub(crate) rejected: bool,
}

/// The node's real storage thread over a simulated file system; `storage` is `None` between
/// a crash and the restart.
pub(crate) struct RealDisk {
    fs: SimFs,
    storage: Option<SimStorage>,
    /// Highest persist the real thread confirmed.
    confirmed: u64,
}

impl std::fmt::Debug for RealDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RealDisk {{ confirmed: {} }}", self.confirmed)
    }
}

impl RealDisk {
    fn storage(&mut self) -> Result<&mut SimStorage, String> {
        self.storage
            .as_mut()
            .ok_or_else(|| "real storage: used while the node is down".to_string())
    }

    fn take_in(&mut self, events: &[StorageOutcome]) {
        for event in events {
            if let StorageOutcome::Persisted { seq } = event {
                self.confirmed = self.confirmed.max(*seq);
            }
        }
    }
}

/// One node's disk.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    hard_state: HardState,
    /// The hard state saved before `hard_state` (what a slot holds when the disk dropped the
    /// write of the newest save to it).
    previous_hard_state: HardState,
    snapshot: Option<StoredSnapshot>,
    log: EntryLog,
    pending: VecDeque<PendingWrite>,
    partial: Option<StoredSnapshot>,
    /// Every vote that ever became durable, by term: a node must never vote twice in a term.
    votes: BTreeMap<Term, NodeId>,
    /// The votes whose record a damaged hard state destroyed (`votes` at the damage).
    forgotten_votes: BTreeMap<Term, NodeId>,
    /// Votes saved over a forgotten one of the same term for another candidate: (term, the
    /// forgotten vote, the new one), for the world to judge ([`SimDisk::take_revotes`]).
    revotes: Vec<(Term, NodeId, NodeId)>,
    /// Synced entries this disk lost (a damage fault) and not yet written again: the WAL's
    /// synced frontier keeps claiming them until records cover them (storage/FORMAT.md
    /// §4.1), and a restart reports them as lost.
    lost: Option<LostEntries>,
    /// Sim time at which the last scheduled sync or chunk answer completes; the storage
    /// thread answers in order, so they complete in order.
    pub(crate) last_sync_at: u64,
    /// The real storage thread run beside the model, in the seeds that use it.
    real: Option<RealDisk>,
}

impl Disk {
    /// A disk whose model runs beside the real storage thread.
    pub(crate) fn with_real_storage(initial: &Membership) -> Result<Disk, String> {
        let fs = SimFs::new();
        let (storage, _) = SimStorage::open(&fs, initial.clone())
            .map_err(|e| format!("real storage: first start: {e}"))?;
        Ok(Disk {
            real: Some(RealDisk {
                fs,
                storage: Some(storage),
                confirmed: 0,
            }),
            ..Disk::default()
        })
    }

    /// Queues a persist action; nothing is durable until [`Disk::sync_through`].
    pub(crate) fn write(&mut self, seq: u64, hard_state: Option<HardState>, entries: Vec<Entry>) {
        if let Some(storage) = self.real.as_mut().and_then(|r| r.storage.as_mut()) {
            storage.persist(seq, hard_state, entries.clone());
        }
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
        if let Some(real) = self.real.as_mut() {
            if real.confirmed < seq {
                let events = (real.storage()?.run_through(seq)).map_err(|e| e.to_string())?;
                real.take_in(&events);
                if real.confirmed < seq {
                    return Err(format!(
                        "real storage did not confirm persist {seq}: {events:?}"
                    ));
                }
            }
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
        self.forget_repaired_loss();
        if let Some(hard_state) = write.hard_state {
            if hard_state.term < self.hard_state.term {
                return Err(format!(
                    "durable term went backwards: {} after {}",
                    hard_state.term, self.hard_state.term
                ));
            }
            if let Some(candidate) = hard_state.vote {
                match self.votes.insert(hard_state.term, candidate) {
                    Some(earlier)
                        if earlier != candidate
                            && self.forgotten_votes.get(&hard_state.term) == Some(&earlier) =>
                    {
                        self.revotes.push((hard_state.term, earlier, candidate));
                    }
                    Some(earlier) if earlier != candidate => {
                        return Err(format!(
                            "voted twice in term {}: for {earlier} and then for {candidate}",
                            hard_state.term
                        ));
                    }
                    _ => {}
                }
            }
            self.previous_hard_state = self.hard_state;
            self.hard_state = hard_state;
        }
        Ok(())
    }

    /// Damage to the hard-state file while the node is down, found at its restart as the
    /// storage crate finds it (storage/FORMAT.md §4.6): the state read is a lower bound,
    /// marked `votes_unknown`. `kind` picks what is still readable. The record of every vote
    /// ever saved (`votes`) is kept: the checks that a node never votes twice in a term span
    /// the damage.
    pub(crate) fn damage_hard_state(&mut self, kind: HardStateDamage) {
        let readable = match kind {
            HardStateDamage::BothSlots => HardState::default(),
            HardStateDamage::OneSlot => self.hard_state,
            HardStateDamage::LostWriteThenOneSlot => self.previous_hard_state,
        };
        self.hard_state = HardState {
            votes_unknown: true,
            ..readable
        };
        self.previous_hard_state = self.hard_state;
        self.forgotten_votes
            .extend(self.votes.iter().map(|(&t, &c)| (t, c)));
    }

    /// The votes saved over a forgotten vote of the same term since the last call: (term,
    /// forgotten vote, new vote).
    pub(crate) fn take_revotes(&mut self) -> Vec<(Term, NodeId, NodeId)> {
        std::mem::take(&mut self.revotes)
    }

    /// The node's durable hard state says its votes are unknown.
    pub(crate) fn votes_unknown(&self) -> bool {
        self.hard_state.votes_unknown
    }

    /// A crash: the first `reached_disk` queued writes happened to become durable; the rest
    /// are lost. The partial snapshot file is kept (it was synced chunk by chunk).
    pub(crate) fn crash(&mut self, reached_disk: usize) -> Result<(), String> {
        let reached: Vec<u64> = self
            .pending
            .iter()
            .take(reached_disk)
            .map(|w| w.seq)
            .collect();
        for _ in 0..reached_disk {
            self.sync_one()?;
        }
        self.pending.clear();
        if let Some(real) = self.real.as_mut() {
            // The real thread makes durable exactly the writes the model kept, then the
            // process dies: nothing else of its queue reaches the disk.
            if let Some(&last) = reached.last() {
                let events = (real.storage()?.run_through(last)).map_err(|e| e.to_string())?;
                real.take_in(&events);
            }
            real.storage = None;
            // Persist sequence numbers start again at 1 in the node's next life.
            real.confirmed = 0;
            real.fs.crash(CrashMode::LoseUnsynced);
        }
        Ok(())
    }

    /// Damage to synced data while the node is down (bit rot, a lost write, an unreadable
    /// sector in its WAL): the last `count` durable entries after the snapshot are gone, as
    /// the real WAL cuts at the first bad record below its synced frontier. Returns the
    /// range lost, if there was anything to lose.
    /// Only when `allowed` accepts the configuration the node is left with.
    pub(crate) fn lose_synced_tail(
        &mut self,
        count: u64,
        initial: &Membership,
        allowed: impl Fn(&Membership) -> bool,
    ) -> Option<LostEntries> {
        let last = self.log.last_index();
        // Damage at or below the snapshot costs nothing: the node restarts its log after
        // the snapshot (`reconcile_log_with_snapshot`), so only entries above it are lost.
        let snapshot_index = self.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        let from = LogIndex(last.0.saturating_sub(count) + 1)
            .max(self.log.base_index().next())
            .max(snapshot_index.next());
        if from > last || !allowed(&self.membership_through(from.prev(), initial)) {
            return None;
        }
        // The WAL header records the term of the entry at the frontier with its count
        // (storage/FORMAT.md §1.1); a claim still held keeps the term it had.
        let last_term = self.log.term_at(last);
        self.log.lose_from(from);
        let lost = match self.lost {
            Some(claim) if claim.through >= last => LostEntries { from, ..claim },
            _ => LostEntries {
                from,
                through: last,
                through_term: last_term,
            },
        };
        self.lost = Some(lost);
        Some(lost)
    }

    /// The lost range is written again (or a snapshot covers it): the claim is dropped.
    fn forget_repaired_loss(&mut self) {
        let covered = self.log.last_index().max(self.log.base_index());
        if self.lost.is_some_and(|lost| covered >= lost.through) {
            self.lost = None;
        }
    }

    /// Entries this disk lost and still claims synced, if any.
    pub(crate) fn lost(&self) -> Option<LostEntries> {
        self.lost
    }

    /// After a crash, restarts the real storage and checks that it recovers exactly the
    /// model's durable state: term, vote, snapshot and log.
    pub(crate) fn restart_real(&mut self, initial: &Membership) -> Result<(), String> {
        let model = self.recovered(initial);
        let Some(real) = self.real.as_mut() else {
            return Ok(());
        };
        if real.storage.is_some() {
            return Ok(());
        }
        let (storage, recovered) = SimStorage::open(&real.fs, initial.clone())
            .map_err(|e| format!("real storage does not restart: {e}"))?;
        real.storage = Some(storage);
        let describe = |r: &RecoveredState| {
            let entries: Vec<(u64, u64)> =
                r.entries.iter().map(|e| (e.index.0, e.term.0)).collect();
            let snapshot = r.snapshot.as_ref().map(|m| (m.index.0, m.term.0));
            (r.hard_state.term, r.hard_state.vote, snapshot, entries)
        };
        if describe(&recovered) != describe(&model) {
            return Err(format!(
                "real storage recovered {:?}, the model's durable state is {:?}",
                describe(&recovered),
                describe(&model)
            ));
        }
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
            lost: self
                .lost
                .filter(|lost| lost.through > self.log.base_index())
                .map(|lost| LostEntries {
                    from: self.log.last_index().next(),
                    ..lost
                }),
        }
    }

    /// The configuration a node restarting from this disk would use: the last durable
    /// membership entry, else the snapshot's, else `initial`.
    pub(crate) fn latest_membership(&self, initial: &Membership) -> Membership {
        self.membership_through(self.log.last_index(), initial)
    }

    /// As [`Disk::latest_membership`], counting only the log's entries through `index`.
    fn membership_through(&self, index: LogIndex, initial: &Membership) -> Membership {
        let in_log = self
            .log
            .entries()
            .iter()
            .rev()
            .filter(|e| e.index <= index)
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
    pub(crate) fn save_snapshot(&mut self, snapshot: StoredSnapshot) -> Result<(), String> {
        if let Some(real) = self.real.as_mut() {
            real.storage()?
                .write_local_snapshot(&snapshot.meta, &snapshot.bytes)
                .map_err(|e| e.to_string())?;
        }
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Removes durable entries through `through`; only what a durable snapshot covers.
    pub(crate) fn compact(&mut self, through: LogIndex) -> Result<(), String> {
        let covered = self.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        if through > covered {
            return Err(format!(
                "CompactLog through {through} but the durable snapshot covers only {covered}"
            ));
        }
        if let Some(real) = self.real.as_mut() {
            real.storage()?.compact(through);
        }
        self.log.compact(through).map_err(|e| format!("disk: {e}"))
    }

    /// Reads durable entries `[low, high]` for a follower, stopping after the first that
    /// brings their `size_bytes` to `max_bytes` (`StorageAction::ReadEntries`); the real storage
    /// thread, where it runs, must read the same entries from its WAL.
    pub(crate) fn read_entries(
        &mut self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Result<Vec<Entry>, ReadEntriesError>, String> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut index = low;
        while index <= high && bytes < max_bytes {
            let Some(entry) = self.log.get(index) else {
                break;
            };
            bytes += entry.size_bytes();
            entries.push(entry.clone());
            index = index.next();
        }
        let model = match entries.first() {
            Some(_) => Ok(entries),
            None => Err(ReadEntriesError::new(
                ReadFailure::NotHeld,
                format!(
                    "entries from {low} are not on the disk (it holds {}..={})",
                    self.log.base_index().next(),
                    self.log.last_index()
                ),
            )),
        };
        if let (Some(real), Ok(expected)) = (self.real.as_mut(), &model) {
            let read = real.storage()?.read_entries(low, high, max_bytes);
            if read.as_ref() != Ok(expected) {
                return Err(format!(
                    "real storage read entries {low}..={high} (max {max_bytes} bytes) as \
                     {read:?}, the model as {expected:?}"
                ));
            }
        }
        Ok(model)
    }

    /// The core's list of snapshots in use goes to the real storage thread too, which
    /// removes the older files not listed (the model's files are the node's `snapshots`).
    pub(crate) fn keep_snapshots(&mut self, in_use: Vec<SnapshotMeta>) -> Result<(), String> {
        if let Some(real) = self.real.as_mut() {
            real.storage()?.keep(in_use);
        }
        Ok(())
    }

    /// Writes one received snapshot chunk (after everything queued before it) and installs the
    /// snapshot when `done` and the bytes verify.
    pub(crate) fn write_chunk(
        &mut self,
        from: NodeId,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<ChunkOutcome, String> {
        let outcome = self.write_chunk_in_model(meta, offset, data, done)?;
        if let Some(real) = self.real.as_mut() {
            let storage = real.storage()?;
            storage.write_chunk(from, meta.clone(), offset, data.to_vec(), done);
            let events = storage.run(None).map_err(|e| e.to_string())?;
            real.take_in(&events);
            let answer = events.last();
            let stored = outcome.installed.is_some() || outcome.covered;
            let agrees = match (stored, answer) {
                (true, Some(StorageOutcome::SnapshotInstalled { meta: stored })) => stored == meta,
                (
                    false,
                    Some(StorageOutcome::SnapshotChunkWritten {
                        meta: written,
                        next_offset,
                        rejected,
                    }),
                ) => {
                    written == meta
                        && (*next_offset, *rejected) == (outcome.next_offset, outcome.rejected)
                }
                _ => false,
            };
            if !agrees {
                return Err(format!(
                    "real storage answered chunk {offset}+{} of snapshot {} (done: {done}) with \
                     {answer:?}, the model with next_offset {} rejected {} stored {}",
                    data.len(),
                    meta.index,
                    outcome.next_offset,
                    outcome.rejected,
                    stored
                ));
            }
        }
        Ok(outcome)
    }

    fn write_chunk_in_model(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<ChunkOutcome, String> {
        self.sync_all()?;
        let same_transfer = self.partial.as_ref().is_some_and(|p| p.meta == *meta);
        // Only a chunk 0 of another snapshot replaces the partial held; a chunk past its start
        // is refused from 0 and leaves the transfer under way as it is, as the storage thread
        // does (SIM_FINDINGS 25).
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
        if offset > held {
            return Ok(refused(held));
        }
        // As the storage crate's partial file: bytes already held are accepted and ignored
        // (a retransmission), only what lies beyond them is written.
        let skip = (held - offset) as usize;
        if skip < data.len() {
            partial.bytes.extend_from_slice(&data[skip..]);
        }
        let next_offset = partial.bytes.len() as u64;
        if !done {
            return Ok(ChunkOutcome {
                next_offset,
                installed: None,
                covered: false,
                rejected: false,
            });
        }
        let durable = self.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        if meta.index <= durable {
            // As the storage thread: a final chunk of a snapshot that is not newer than the
            // current one is answered as stored without installing it (that would reset the
            // log behind the current snapshot), and its partial file stays as it is.
            return Ok(ChunkOutcome {
                next_offset,
                installed: None,
                covered: true,
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
            covered: false,
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
        // The real WAL drops its claim when reset below it; a claim beyond the snapshot
        // stays until records cover it.
        self.forget_repaired_loss();
    }
}

fn refused(next_offset: u64) -> ChunkOutcome {
    ChunkOutcome {
        next_offset,
        installed: None,
        covered: false,
        rejected: true,
    }
}
