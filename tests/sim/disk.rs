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
use rcraft_storage::limits::HARD_STATE_SLOT_BYTES;
use rcraft_storage::{CrashMode, Fs, SimFs};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

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

/// How the synced bytes of a WAL record are damaged in the real storage's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalDamage {
    /// One bit of the record (header or payload) flipped.
    BitFlip,
    /// The disk dropped the record's synced write: its bytes are the zeroes the
    /// preallocated segment held before.
    LostWrite,
    /// Sectors of a page of a segment became unreadable (reads fail with EIO); storage
    /// rewrites the whole 4 KiB page as zeroes at start (storage/FORMAT.md §4.1), which
    /// erases every record the page holds a byte of. Drawn page-first
    /// ([`Disk::damage_synced`]): the model loses from the first record the page damages.
    Unreadable,
}

/// A damaged snapshot file and what the real start made of it ([`Disk::damage_real_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotDamage {
    /// The (index, term) of the file damaged.
    pub(crate) point: (LogIndex, Term),
    /// The range the start claimed lost, if any (none when it rebuilt the state locally).
    pub(crate) claim: Option<LostEntries>,
}

/// A page of the real WAL an unreadable sector may strike ([`RealDisk::unreadable_pages`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct DamageablePage {
    /// The segment file.
    path: PathBuf,
    /// Byte offset of the page in it (a multiple of [`PAGE_BYTES`], never 0).
    offset: usize,
    /// Bytes of the page inside the file (a whole page but at a short file's end).
    len: usize,
    /// The first entry whose record the page's rewrite as zeroes damages.
    first: LogIndex,
}

/// One record of a segment file: (offset, length, index).
type RecordAt = (usize, usize, u64);

/// The whole records of a segment file's bytes, from its header on, up to the first that is
/// not whole (the zeroes after the last record end the walk).
fn records_of(bytes: &[u8]) -> Vec<RecordAt> {
    let word = |at: usize, n: usize| {
        let mut word = [0u8; 8];
        word[..n].copy_from_slice(&bytes[at..at + n]);
        u64::from_le_bytes(word)
    };
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + RECORD_HEADER_BYTES <= bytes.len() {
        let len = word(at, 4) as usize;
        if len < RECORD_HEADER_BYTES || at + len > bytes.len() {
            break;
        }
        records.push((at, len, word(at + 8, 8)));
        at += len;
    }
    records
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
    /// The hard-state file's newest save as the real storage wrote it (its slot bytes) and
    /// the model's durable hard state then; `previous_save` the save before it. A lost write
    /// of the newest save to a slot leaves `previous_save`'s bytes there.
    newest_save: (Vec<u8>, HardState),
    previous_save: (Vec<u8>, HardState),
}

/// The real storage's files under its data directory (`SimStorage::open`).
const WAL_DIR: &str = "/data/wal";
const HARD_STATE_FILE: &str = "/data/hard_state";
const SNAPSHOT_DIR: &str = "/data/snapshots";
/// The bytes of a hard-state slot that carry meaning (magic .. crc, storage/FORMAT.md §2);
/// the reserved rest is never read.
const SLOT_USED_BYTES: usize = 48;
/// Segment and record header sizes (storage/FORMAT.md §1.1, §1.2).
const SEGMENT_HEADER_BYTES: usize = 32;

/// The unit in which storage rewrites an unreadable sector of a segment (a page).
const PAGE_BYTES: usize = 4096;
/// A disk sector: the smallest stretch that becomes unreadable.
const SECTOR_BYTES: usize = 512;
const RECORD_HEADER_BYTES: usize = 24;

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

    /// The hard-state file's first slot as it is now.
    fn hard_state_slot(&self) -> Result<Vec<u8>, String> {
        let mut bytes = (self.fs.contents(Path::new(HARD_STATE_FILE)))
            .map_err(|e| format!("real storage: reading its hard state: {e}"))?;
        bytes.truncate(HARD_STATE_SLOT_BYTES);
        Ok(bytes)
    }

    /// After the real storage ran: if it saved its hard state, that save is the newest and
    /// `model` (the model's durable hard state now) what it holds.
    fn note_hard_state(&mut self, model: HardState) -> Result<(), String> {
        let slot = self.hard_state_slot()?;
        if slot != self.newest_save.0 {
            self.previous_save = std::mem::replace(&mut self.newest_save, (slot, model));
        }
        Ok(())
    }

    /// The WAL's segment files, oldest first, with their bytes.
    fn segments(&self) -> Result<Vec<(PathBuf, u64, Vec<u8>)>, String> {
        let dir = Path::new(WAL_DIR);
        let mut names = (self.fs.list_dir(dir)).map_err(|e| format!("listing {WAL_DIR}: {e}"))?;
        names.retain(|n| n.ends_with(".wal"));
        names.sort();
        let mut segments = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let first = (name.trim_end_matches(".wal").parse::<u64>())
                .map_err(|e| format!("segment name {name}: {e}"))?;
            let bytes = (self.fs.contents(&path)).map_err(|e| format!("reading {name}: {e}"))?;
            segments.push((path, first, bytes));
        }
        Ok(segments)
    }

    /// The last index the WAL shows synced on disk: a segment's header count (its synced
    /// frontier, storage/FORMAT.md §1.1), or the end of a segment sealed before a later one.
    fn synced_frontier(&self) -> Result<LogIndex, String> {
        let segments = self.segments()?;
        let sealed = segments
            .last()
            .map_or(0, |(_, first, _)| first.saturating_sub(1));
        let counted = segments.iter().map(|(_, first, bytes)| {
            let mut count = [0u8; 4];
            count.copy_from_slice(&bytes[12..16]);
            (first + u64::from(u32::from_le_bytes(count))).saturating_sub(1)
        });
        Ok(LogIndex(counted.max().unwrap_or(0).max(sealed)))
    }

    /// Where the record of `index` lies in the WAL's segment files: (file, offset, length).
    fn find_record(&self, index: LogIndex) -> Result<(PathBuf, usize, usize), String> {
        for (path, _, bytes) in self.segments()? {
            if let Some(&(at, len, _)) = records_of(&bytes).iter().find(|r| r.2 == index.0) {
                return Ok((path, at, len));
            }
        }
        Err(format!(
            "real storage: no record of entry {index} in {WAL_DIR}"
        ))
    }

    /// The pages of the WAL's segments whose loss the real recovery reports exactly as the
    /// model can lose it, and the first entry each damages: an unreadable sector in one makes
    /// storage rewrite the whole page as zeroes at start (storage/FORMAT.md §4.1), which
    /// damages every record with a non-zero byte in it, so recovery cuts the log at the
    /// first and claims through the frontier or the last whole record found after the page.
    /// A page qualifies when
    /// - it is not a segment's first (the header's page: an unreadable one refuses the start,
    ///   by design);
    /// - the first entry it damages is at most `frontier` (the synced frontier on disk):
    ///   damage above it is a torn write, never reported;
    /// - the model's last entry `last` is counted (at most `frontier`), or its record lies
    ///   after the page (in a later segment, or from the page's end on): a page holding the
    ///   newest batch, whose count is not on disk, erases it as a torn write (FORMAT §4.1,
    ///   "Loss of the newest batch"), so recovery would claim less than the model lost.
    fn unreadable_pages(
        &self,
        frontier: LogIndex,
        last: LogIndex,
    ) -> Result<Vec<DamageablePage>, String> {
        let mut pages = Vec::new();
        for (path, _, bytes) in self.segments()? {
            let records = records_of(&bytes);
            let holds_last = records.iter().find(|r| r.2 == last.0).map(|r| r.0);
            for offset in (PAGE_BYTES..bytes.len()).step_by(PAGE_BYTES) {
                let end = (offset + PAGE_BYTES).min(bytes.len());
                let damaged = records.iter().find(|&&(at, len, _)| {
                    let (from, to) = (at.max(offset), (at + len).min(end));
                    from < to && bytes[from..to].iter().any(|&b| b != 0)
                });
                let Some(&(_, _, first)) = damaged else {
                    continue;
                };
                let last_survives = last <= frontier || holds_last.is_none_or(|at| at >= end);
                if first <= frontier.0 && last_survives {
                    pages.push(DamageablePage {
                        path: path.clone(),
                        offset,
                        len: end - offset,
                        first: LogIndex(first),
                    });
                }
            }
        }
        Ok(pages)
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
        let mut real = RealDisk {
            fs,
            storage: Some(storage),
            confirmed: 0,
            newest_save: (Vec::new(), HardState::default()),
            previous_save: (Vec::new(), HardState::default()),
        };
        // The file is created holding the default state: the save before any other.
        let created = (real.hard_state_slot()?, HardState::default());
        real.newest_save = created.clone();
        real.previous_save = created;
        Ok(Disk {
            real: Some(real),
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
                real.note_hard_state(self.hard_state)?;
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
        // Entries synced while a claim is held may be acknowledged: the claim takes their
        // term, as the real WAL's header does with the same sync (a known term only;
        // storage/FORMAT.md §1.1, SIM_FINDINGS 60).
        if !write.entries.is_empty() {
            let last_term = self.log.term_at(self.log.last_index());
            if let (Some(claim), Some(term)) = (self.lost.as_mut(), last_term) {
                claim.through_term = claim.through_term.map(|held| held.max(term));
            }
        }
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
        // Where the real storage runs, the save before is the one it wrote before its newest
        // (it saves once per batch, so that may be older than the model's last but one).
        let previous = match &self.real {
            Some(real) => real.previous_save.1,
            None => self.previous_hard_state,
        };
        let readable = match kind {
            HardStateDamage::BothSlots => HardState::default(),
            HardStateDamage::OneSlot => self.hard_state,
            HardStateDamage::LostWriteThenOneSlot => previous,
        };
        self.hard_state = HardState {
            votes_unknown: true,
            ..readable
        };
        self.previous_hard_state = self.hard_state;
        self.forgotten_votes
            .extend(self.votes.iter().map(|(&t, &c)| (t, c)));
    }

    /// Where the real storage runs: damages its hard-state file's bytes as `kind` says, each
    /// damaged slot flipped in a meaningful byte or made unreadable as `draw` picks, and a
    /// lost write leaving the slot's bytes of the save before. False without real storage.
    pub(crate) fn damage_real_hard_state(
        &mut self,
        kind: HardStateDamage,
        draw: u64,
    ) -> Result<bool, String> {
        let Some(real) = self.real.as_ref() else {
            return Ok(false);
        };
        let path = Path::new(HARD_STATE_FILE);
        let fs = &real.fs;
        let hurt = |slot: usize, draw: u64| {
            let start = slot * HARD_STATE_SLOT_BYTES;
            let offset = start + (draw >> 8) as usize % SLOT_USED_BYTES;
            if draw % 2 == 0 {
                fs.flip_bit(path, offset, (draw >> 1) as u8 % 8)
            } else {
                fs.make_unreadable(path, offset, 1 + (draw >> 16) as usize % 64)
            }
        };
        let slot = (draw >> 40) as usize % 2;
        let done = match kind {
            HardStateDamage::BothSlots => hurt(0, draw).and_then(|()| hurt(1, draw >> 3)),
            HardStateDamage::OneSlot => hurt(slot, draw),
            HardStateDamage::LostWriteThenOneSlot => fs
                .revert_write(path, slot * HARD_STATE_SLOT_BYTES, &real.previous_save.0)
                .and_then(|()| hurt(1 - slot, draw)),
        };
        done.map_err(|e| format!("damaging the real hard state: {e}"))?;
        Ok(true)
    }

    /// Where the real storage runs: damages the synced record of entry `from` in its WAL
    /// (which the model just lost, with everything after it) as `draw` picks: a bit flipped
    /// anywhere in the record, or its write lost. `None` without real storage.
    fn damage_real_wal(&mut self, from: LogIndex, draw: u64) -> Result<Option<WalDamage>, String> {
        let Some(real) = self.real.as_ref() else {
            return Ok(None);
        };
        let (path, at, len) = real.find_record(from)?;
        let (kind, done) = if draw % 2 == 0 {
            let offset = at + (draw >> 8) as usize % len;
            let done = real.fs.flip_bit(&path, offset, (draw >> 1) as u8 % 8);
            (WalDamage::BitFlip, done)
        } else {
            let done = real.fs.revert_write(&path, at, &vec![0; len]);
            (WalDamage::LostWrite, done)
        };
        done.map_err(|e| format!("damaging entry {from} in {}: {e}", path.display()))?;
        Ok(Some(kind))
    }

    /// Where the real storage runs and the node holds a durable snapshot: damages the newest
    /// snapshot file in its `SimFs` while the node is down (one bit flipped, in the data, or
    /// as `draw` picks, in the header or the footer), starts the real storage on it, checks
    /// that the start is sound, and makes the model follow what it did. `None` (nothing
    /// damaged) without real storage or snapshot, or when the configuration the node may be
    /// left with (that of the older snapshot it may restart from, `config_at` it, or the
    /// initial one) is not one `allowed` accepts.
    ///
    /// The start must (1) succeed, (2) set the file aside (`<name>.damaged`), and (3) start
    /// from the next older snapshot file (or none) and claim lost a range that covers every
    /// entry the model held durably (its last durable index, and the end of a claim it still
    /// held), unless the log it keeps and that snapshot reach as far (rebuilt locally, then
    /// nothing new is claimed). Then the model takes the real outcome, each step sound:
    /// - its snapshot becomes the one the real storage starts from, with the bytes of that
    ///   file (whole: it passed every checksum); the world checks them against the committed
    ///   log at the start (`World::restore_checked`), as any durable snapshot;
    /// - its log becomes the real one after that snapshot: entries the model also holds must
    ///   be the model's (checked here); the others are entries the model had compacted behind
    ///   the damaged snapshot, so committed, and applying them again is judged by the
    ///   state-machine checks against the committed log; when the real log was restarted
    ///   after the base, the model's is too (it holds nothing after it);
    /// - its claim (`lost`) becomes the real claim: (3) showed it covers everything the model
    ///   may have acknowledged, so the checks on commit quorums with claims, repair and
    ///   acknowledged writes hold the node to what it really holds.
    ///
    /// The real storage is then stopped as by a crash right after its start: the restart
    /// that follows (`Disk::restart_real`) opens it again, from the claim file and the log
    /// the first start left, and must recover exactly the model's state.
    pub(crate) fn damage_real_snapshot(
        &mut self,
        draw: u64,
        initial: &Membership,
        allowed: impl Fn(&Membership) -> bool,
        config_at: impl Fn(LogIndex) -> Membership,
    ) -> Result<Option<SnapshotDamage>, String> {
        let (Some(real), Some(newest)) = (self.real.as_mut(), self.snapshot.as_ref()) else {
            return Ok(None);
        };
        if real.storage.is_some() {
            return Err("damaging a snapshot file while the node is up".to_string());
        }
        let dir = Path::new(SNAPSHOT_DIR);
        let names = (real.fs.list_dir(dir)).map_err(|e| format!("listing {SNAPSHOT_DIR}: {e}"))?;
        let mut points: Vec<(u64, u64)> = (names.iter())
            .filter_map(|n| rcraft_storage::snapshot_point_of_file(Path::new(n)))
            .collect();
        points.sort_unstable();
        let point = (newest.meta.index.0, newest.meta.term.0);
        if points.last() != Some(&point) {
            return Err(format!(
                "real storage's snapshot files are {points:?}, the model's newest snapshot is \
                 {point:?}"
            ));
        }
        let base = points.len().checked_sub(2).map(|at| points[at]);
        // Restarted after the base, the node is left with the configuration there; rebuilt
        // locally, with the one it had (already accepted by the caller).
        let left_with = base.map_or(initial.clone(), |(index, _)| config_at(LogIndex(index)));
        if !allowed(&left_with) {
            return Ok(None);
        }

        let path = dir.join(format!("snap-{:020}-{:020}.snap", point.0, point.1));
        let bytes = (real.fs.contents(&path)).map_err(|e| format!("reading {path:?}: {e}"))?;
        let header = 52 + u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let footer = bytes.len() - 24;
        let (from, to) = match draw % 8 {
            6 => (0, header),
            7 => (footer, bytes.len()),
            _ if footer > header => (header, footer),
            _ => (0, bytes.len()),
        };
        let offset = from + (draw >> 8) as usize % (to - from);
        (real.fs.flip_bit(&path, offset, (draw >> 3) as u8 % 8))
            .map_err(|e| format!("damaging {path:?}: {e}"))?;

        // What the model held durably: through its last entry or snapshot, and a claim it
        // still made.
        let held_before = self.log.last_index().max(newest.meta.index);
        let must_cover = self
            .lost
            .map_or(held_before, |l| l.through.max(held_before));
        let (storage, recovered) = SimStorage::open(&real.fs, initial.clone()).map_err(|e| {
            format!("real storage does not start after byte {offset} of {path:?} was damaged: {e}")
        })?;
        // Set aside: the name is gone, and one more `<name>.damaged` (`.damaged.N`) is there.
        let file = format!("snap-{:020}-{:020}.snap", point.0, point.1);
        let aside = |names: &[String]| {
            let prefix = format!("{file}.damaged");
            names.iter().filter(|n| n.starts_with(&prefix)).count()
        };
        let after = (real.fs.list_dir(dir)).map_err(|e| format!("listing {SNAPSHOT_DIR}: {e}"))?;
        if after.contains(&file) || aside(&after) != aside(&names) + 1 {
            return Err(format!(
                "real storage started without setting {path:?} (damaged at byte {offset}) aside"
            ));
        }
        let started_from = recovered.snapshot.as_ref().map(|m| (m.index.0, m.term.0));
        if started_from != base {
            return Err(format!(
                "real storage started from snapshot {started_from:?} after {point:?} was \
                 damaged; the next older file is {base:?}"
            ));
        }
        let base_index = LogIndex(base.map_or(0, |b| b.0));
        let held = recovered.entries.last().map_or(base_index, |e| e.index);
        let covered = recovered
            .lost
            .is_some_and(|l| l.from <= held.next() && l.through >= must_cover && l.through > held);
        if held < must_cover && !covered {
            return Err(format!(
                "real storage started after snapshot {point:?} was damaged holding through \
                 {held} and claiming {:?}, but the node held through {held_before} (claim \
                 {:?}): entries it may have acknowledged are neither held nor claimed",
                recovered.lost, self.lost
            ));
        }
        if held >= must_cover && recovered.lost.is_some() {
            return Err(format!(
                "real storage rebuilt through {held} after snapshot {point:?} was damaged (the \
                 node held through {held_before}) but claims {:?}",
                recovered.lost
            ));
        }
        for entry in &recovered.entries {
            if let Some(model) = self.log.get(entry.index).filter(|m| *m != entry) {
                return Err(format!(
                    "real storage rebuilt entry {} as {entry:?}, the model holds {model:?}",
                    entry.index
                ));
            }
        }

        let snapshot = (storage.current_snapshot())
            .map_err(|e| format!("reading the snapshot the real storage starts from: {e}"))?
            .map(|(meta, bytes)| StoredSnapshot { meta, bytes });
        if snapshot.as_ref().map(|s| &s.meta) != recovered.snapshot.as_ref() {
            return Err(format!(
                "real storage's current snapshot is {:?}, it recovered {:?}",
                snapshot.as_ref().map(|s| &s.meta),
                recovered.snapshot
            ));
        }
        let (base_term, base_membership) =
            snapshot.as_ref().map_or((Term(0), initial.clone()), |s| {
                (s.meta.term, s.meta.membership.clone())
            });
        self.log = EntryLog::from_parts(base_index, base_term, base_membership, recovered.entries)
            .map_err(|e| format!("real storage's log after snapshot damage: {e}"))?;
        self.snapshot = snapshot;
        self.lost = recovered.lost;
        // Stopped as by a crash right after the start (everything it wrote was synced).
        drop(storage);
        real.fs.crash(CrashMode::LoseUnsynced);
        Ok(Some(SnapshotDamage {
            point: (LogIndex(point.0), Term(point.1)),
            claim: recovered.lost,
        }))
    }

    /// True when the node's real storage thread runs beside the model.
    pub(crate) fn has_real_storage(&self) -> bool {
        self.real.is_some()
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
                real.note_hard_state(self.hard_state)?;
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
        let from = LogIndex(self.log.last_index().0.saturating_sub(count) + 1);
        let from = from.max(self.lowest_losable());
        self.lose_synced_from(from, from, initial, allowed)
    }

    /// The lowest entry damage may cost: damage at or below the snapshot costs nothing, the
    /// node restarts its log after the snapshot (`reconcile_log_with_snapshot`), so only
    /// entries above it are lost.
    fn lowest_losable(&self) -> LogIndex {
        let snapshot_index = self.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        self.log.base_index().next().max(snapshot_index.next())
    }

    /// As [`Disk::lose_synced_tail`], from entry `from` (at least [`Disk::lowest_losable`])
    /// through the last, the real WAL damaged from the record of entry `cut` (at most
    /// `from`; less when the damage lies at or below the snapshot).
    fn lose_synced_from(
        &mut self,
        from: LogIndex,
        cut: LogIndex,
        initial: &Membership,
        allowed: impl Fn(&Membership) -> bool,
    ) -> Option<LostEntries> {
        let last = self.log.last_index();
        if from > last || !allowed(&self.membership_through(from.prev(), initial)) {
            return None;
        }
        // The real storage thread writes the count of a batch's records to the WAL header
        // when its queue is empty (`Wal::confirm`), which the simulated thread never is, so
        // the newest batch before a crash is never counted on disk here; damage there is
        // judged a torn write (storage/FORMAT.md §4.1, "Loss of the newest batch"), not a
        // loss. Real bytes are damaged only from below the frontier on disk. (Then entries
        // after the frontier whose records survive the damage are claimed lost as well, and
        // damage below the snapshot costs what follows the snapshot, counted or not.)
        if let Some(real) = &self.real {
            if real
                .synced_frontier()
                .map_or(true, |frontier| cut > frontier)
            {
                return None;
            }
        }
        // The WAL header records the term of the entry at the frontier with its count
        // (storage/FORMAT.md §1.1); a claim still held keeps the term it had, as raised by
        // the entries synced since (`sync_one`).
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

    /// Damage to synced data while the node is down, in the model and, where the real
    /// storage runs, in its WAL's bytes as `real_draw` picks (`None` without real storage):
    /// returns the range lost and how the real bytes were damaged, if anything was lost.
    /// Only when `allowed` accepts the configuration the node is left with.
    ///
    /// A quarter of the real draws ask for an unreadable sector, drawn page-first: a page of
    /// a segment, active or sealed, among those whose loss recovery reports as the model
    /// can lose it ([`RealDisk::unreadable_pages`]), one to eight of its 512-byte sectors
    /// unreadable, and the model loses from the first record the page damages through its
    /// last entry; from the entry after its snapshot when the page lies below it (the
    /// restart then resets the log to start after the snapshot). (Drawn from a lost tail
    /// instead, a few records of about 100 bytes almost never span a page: in seeds 0..2000
    /// that drew none.) Without such a page, and for the other draws, the model loses its
    /// last `count` entries and the real record of the first of them gets a bit flipped or
    /// its write lost ([`Disk::damage_real_wal`]).
    pub(crate) fn damage_synced(
        &mut self,
        count: u64,
        real_draw: Option<u64>,
        initial: &Membership,
        allowed: impl Fn(&Membership) -> bool,
    ) -> Result<Option<(LostEntries, Option<WalDamage>)>, String> {
        if let Some(draw) = real_draw.filter(|&d| d % 2 == 0 && (d >> 20) % 2 == 0) {
            if let Some(page) = self.pick_unreadable_page(draw, initial, &allowed)? {
                let from = page.first.max(self.lowest_losable());
                let lost = (self.lose_synced_from(from, page.first, initial, &allowed))
                    .ok_or_else(|| format!("disk: page {page:?} qualified but lost nothing"))?;
                if page.first < from {
                    // The real log, cut below its snapshot, no longer continues it: the
                    // restart resets it to start after the snapshot (as the storage thread's
                    // `reconcile_log_with_snapshot`), keeping the claim on what it lost.
                    if let Some(meta) = self.snapshot.as_ref().map(|s| s.meta.clone()) {
                        self.log
                            .install_snapshot(meta.index, meta.term, &meta.membership);
                    }
                }
                self.make_page_unreadable(&page, draw)?;
                return Ok(Some((lost, Some(WalDamage::Unreadable))));
            }
        }
        let Some(lost) = self.lose_synced_tail(count, initial, &allowed) else {
            return Ok(None);
        };
        let kind = match real_draw {
            Some(draw) => self.damage_real_wal(lost.from, draw)?,
            None => None,
        };
        Ok(Some((lost, kind)))
    }

    /// One of the real WAL's pages an unreadable sector may strike, as `draw` picks, whose
    /// loss leaves the node a configuration `allowed` accepts; `None` when there is none.
    fn pick_unreadable_page(
        &self,
        draw: u64,
        initial: &Membership,
        allowed: impl Fn(&Membership) -> bool,
    ) -> Result<Option<DamageablePage>, String> {
        let Some(real) = &self.real else {
            return Ok(None);
        };
        let last = self.log.last_index();
        let pages = real.unreadable_pages(real.synced_frontier()?, last)?;
        // What the model loses starts after the snapshot.
        let mut pages = pages
            .into_iter()
            .filter(|p| {
                let from = p.first.max(self.lowest_losable());
                from <= last && allowed(&self.membership_through(from.prev(), initial))
            })
            .collect::<Vec<_>>();
        if pages.is_empty() {
            return Ok(None);
        }
        let at = (draw >> 48) as usize % pages.len();
        Ok(Some(pages.swap_remove(at)))
    }

    /// Makes one to eight consecutive 512-byte sectors of `page` unreadable, as `draw`
    /// picks (storage rewrites the whole page either way).
    fn make_page_unreadable(&self, page: &DamageablePage, draw: u64) -> Result<(), String> {
        let Some(real) = &self.real else {
            return Ok(());
        };
        let sectors = page.len.div_ceil(SECTOR_BYTES);
        let first = (draw >> 24) as usize % sectors;
        let count = 1 + (draw >> 28) as usize % (sectors - first);
        let offset = page.offset + first * SECTOR_BYTES;
        let bytes = (count * SECTOR_BYTES).min(page.offset + page.len - offset);
        (real.fs.make_unreadable(&page.path, offset, bytes)).map_err(|e| {
            format!(
                "making bytes {offset}..{} of {} unreadable: {e}",
                offset + bytes,
                page.path.display()
            )
        })
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
        let hard_state = self.hard_state;
        let Some(real) = self.real.as_mut() else {
            return Ok(());
        };
        if real.storage.is_some() {
            return Ok(());
        }
        let (storage, recovered) = SimStorage::open(&real.fs, initial.clone())
            .map_err(|e| format!("real storage does not restart: {e}"))?;
        real.storage = Some(storage);
        // A damaged hard state is saved again at open, marked.
        real.note_hard_state(hard_state)?;
        let describe = |r: &RecoveredState| {
            let entries: Vec<(u64, u64)> =
                r.entries.iter().map(|e| (e.index.0, e.term.0)).collect();
            let snapshot = r.snapshot.as_ref().map(|m| (m.index.0, m.term.0));
            let hard = &r.hard_state;
            let lost = r.lost.map(|l| (l.from.0, l.through.0, l.through_term));
            (
                hard.term,
                hard.vote,
                hard.votes_unknown,
                lost,
                snapshot,
                entries,
            )
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

    /// The vote the durable hard state holds for `term`, if any: not one whose record a
    /// damaged hard state lost (`votes` keeps every vote ever saved, for the checks that a
    /// node never votes twice in a term; the disk no longer holds it).
    pub(crate) fn durable_vote(&self, term: Term) -> Option<NodeId> {
        (self.hard_state.term == term)
            .then_some(self.hard_state.vote)
            .flatten()
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
            real.note_hard_state(self.hard_state)?;
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

#[cfg(test)]
mod tests {
    use super::{DamageablePage, Disk, HardStateDamage, StoredSnapshot, WalDamage, records_of};
    use rcraft::core::HardState;
    use rcraft::wire::{Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term};

    fn initial() -> Membership {
        Membership::with_voters([NodeId(0), NodeId(1), NodeId(2)])
    }

    /// [`writing`], then crashed.
    fn written(last: u64, saves: u64) -> Disk {
        let mut disk = writing(last, saves);
        disk.crash(0).unwrap();
        disk
    }

    /// A disk with the real storage beside it, entries 1..=`last` (a 600-byte payload
    /// each, 626 bytes a record, so they span several 16 KiB segments) and `saves`
    /// hard-state saves, each synced in its own batch.
    fn writing(last: u64, saves: u64) -> Disk {
        let mut disk = Disk::with_real_storage(&initial()).unwrap();
        let mut seq = 0;
        for term in 1..=saves {
            seq += 1;
            let hard_state = HardState {
                term: Term(term),
                vote: Some(NodeId(term % 3)),
                ..HardState::default()
            };
            disk.write(seq, Some(hard_state), Vec::new());
            disk.sync_through(seq).unwrap();
        }
        for index in 1..=last {
            seq += 1;
            let payload = EntryPayload::Command {
                session: None,
                data: vec![index as u8; 600].into(),
            };
            disk.write(
                seq,
                None,
                vec![Entry::new(Term(1), LogIndex(index), payload)],
            );
            disk.sync_through(seq).unwrap();
        }
        disk
    }

    #[test]
    fn real_wal_damage_is_reported_as_the_model_lost_it() {
        // From a record mid-segment of the active segment, of a sealed one (about 26 records
        // to a segment), and the last but one (the last, 40, is the newest batch, whose
        // count is not on disk: not damaged, `lose_synced_tail`).
        for count in [3, 20, 2] {
            for draw in [0u64, 1, 0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321] {
                let mut disk = written(40, 0);
                let lost = (disk.lose_synced_tail(count, &initial(), |_| true))
                    .expect("below the frontier on disk");
                assert_eq!(lost.from, LogIndex(41 - count));
                assert!(disk.damage_real_wal(lost.from, draw).unwrap().is_some());
                disk.restart_real(&initial())
                    .unwrap_or_else(|e| panic!("count {count} draw {draw:#x}: {e}"));
            }
        }
        let mut disk = written(40, 0);
        assert_eq!(disk.lose_synced_tail(1, &initial(), |_| true), None);
    }

    /// The draw that asks `Disk::damage_synced` for an unreadable stretch of the `page`th
    /// qualifying page, from its `first` sector on, `count` sectors long (less where the
    /// page ends first).
    fn unreadable_draw(page: usize, first: u64, count: u64) -> u64 {
        ((page as u64) << 48) | (first << 24) | ((count - 1) << 28)
    }

    /// Makes every qualifying page of `disk` (as `fresh` builds it) unreadable in turn, with
    /// stretches from one sector to the whole page, and checks each restart reports what
    /// the model lost; returns the pages.
    fn every_page_unreadable(fresh: impl Fn() -> Disk) -> Vec<DamageablePage> {
        let disk = fresh();
        let real = disk.real.as_ref().unwrap();
        let frontier = real.synced_frontier().unwrap();
        let (last, lowest) = (disk.log.last_index(), disk.lowest_losable());
        let pages = real.unreadable_pages(frontier, last).unwrap();
        for (n, page) in pages.iter().enumerate() {
            for (first, count) in [(0, 1), (7, 1), (3, 2), (0, 8), (5, 8)] {
                let mut disk = fresh();
                let draw = unreadable_draw(n, first, count);
                let (lost, kind) = (disk.damage_synced(1, Some(draw), &initial(), |_| true))
                    .unwrap()
                    .expect("a qualifying page loses entries");
                assert_eq!(kind, Some(WalDamage::Unreadable));
                assert_eq!((lost.from, lost.through), (page.first.max(lowest), last));
                disk.restart_real(&initial())
                    .unwrap_or_else(|e| panic!("page {page:?}, sectors {first}+{count}: {e}"));
                // The records left in the real WAL are the model's log, entry for entry.
                let segments = disk.real.as_ref().unwrap().segments().unwrap();
                let on_disk = (segments.iter())
                    .flat_map(|(_, _, bytes)| records_of(bytes))
                    .map(|(_, _, index)| index);
                let held = disk.log.entries().iter().map(|e| e.index.0);
                assert!(on_disk.eq(held), "page {page:?}: {:?}", disk.log.entries());
            }
        }
        pages
    }

    #[test]
    fn an_unreadable_page_in_the_real_wal_is_reported_as_the_model_lost_it() {
        // Entry 45 is the newest batch, not counted on disk: no page holding any of its
        // bytes qualifies (recovery would judge its loss a torn write), the others do, in
        // the sealed segment (entries 1..=26, 626 bytes a record) and in the active one.
        let pages = every_page_unreadable(|| written(45, 0));
        let probe = written(45, 0);
        let real = probe.real.as_ref().unwrap();
        assert_eq!(real.synced_frontier().unwrap(), LogIndex(44));
        let (last_path, last_at, _) = real.find_record(LogIndex(45)).unwrap();
        assert!(
            (pages.iter()).all(|p| p.path != last_path || p.offset + p.len <= last_at),
            "{pages:?}"
        );
        let segments: std::collections::BTreeSet<_> = pages.iter().map(|p| &p.path).collect();
        assert_eq!(segments.len(), 2, "{pages:?}");
        assert!(
            pages
                .iter()
                .all(|p| p.offset > 0 && p.first <= LogIndex(39))
        );
    }

    #[test]
    fn a_page_holding_the_last_entry_is_drawn_once_it_is_counted() {
        // A restart confirms the count of every record it finds: entry 40 is then counted,
        // and the page holding it qualifies too.
        let counted = || {
            let mut disk = written(40, 0);
            disk.restart_real(&initial()).unwrap();
            disk.crash(0).unwrap();
            disk
        };
        let pages = every_page_unreadable(counted);
        let probe = counted();
        let real = probe.real.as_ref().unwrap();
        assert_eq!(real.synced_frontier().unwrap(), LogIndex(40));
        let (last_path, last_at, len) = real.find_record(LogIndex(40)).unwrap();
        assert!(
            (pages.iter()).any(|p| p.path == last_path && p.offset < last_at + len),
            "{pages:?}"
        );
    }

    /// [`written`] with a snapshot at `index` saved before the crash, the log not compacted.
    fn snapshotted(last: u64, index: u64) -> Disk {
        let mut disk = writing(last, 0);
        disk.save_snapshot(snapshot_at(index)).unwrap();
        disk.crash(0).unwrap();
        disk
    }

    #[test]
    fn a_page_below_the_snapshot_costs_the_entries_after_it() {
        // A snapshot at 30: a page of entries at or below it damaged cuts the log there, the
        // restart resets it to start after the snapshot and reports 31..=45 lost (the
        // storage thread's `lost_after_snapshot`); a page after it, from its first entry.
        let pages = every_page_unreadable(|| snapshotted(45, 30));
        assert!(pages.iter().any(|p| p.first <= LogIndex(30)), "{pages:?}");
        assert!(pages.iter().any(|p| p.first > LogIndex(30)), "{pages:?}");
    }

    #[test]
    fn a_page_below_a_snapshot_at_the_frontier_costs_the_uncounted_entry_after_it() {
        // The snapshot covers every counted entry (the frontier, 44): a page below it, damaged
        // below the frontier, costs entry 45 too, whose whole record after the damage shows
        // it reached the disk (storage/FORMAT.md §4.1, SIM_FINDINGS 49).
        let pages = every_page_unreadable(|| snapshotted(45, 44));
        assert!(!pages.is_empty());
        assert!(pages.iter().all(|p| p.first <= LogIndex(44)), "{pages:?}");
    }

    /// A snapshot of the state at `index`, as [`snapshotted`] saves it.
    fn snapshot_at(index: u64) -> StoredSnapshot {
        let bytes = format!("the state at {index}").into_bytes();
        let meta = SnapshotMeta {
            index: LogIndex(index),
            term: Term(1),
            membership: initial(),
            membership_entry: Some((LogIndex(0), Term(0))),
            size_bytes: bytes.len() as u64,
            checksum: crate::state_machine::checksum(&bytes),
        };
        StoredSnapshot { meta, bytes }
    }

    /// The claim (from, through), the snapshot the model starts from, its last index.
    type SnapshotOutcome = (Option<(u64, u64)>, Option<u64>, u64);

    /// Damages the newest snapshot file of `fresh()` with draws in the data, header and
    /// footer; each start must be sound and the restart recover the model's state.
    /// Returns the claims and what the model then holds: (snapshot index, last index).
    fn damage_newest_snapshot(fresh: impl Fn() -> Disk) -> Vec<SnapshotOutcome> {
        let mut outcomes = Vec::new();
        for draw in [
            0u64,
            1 << 8 | 5,
            0x1234_5678_9abc_def6,
            0xfed_cba9_8765_4327,
            0x77,
        ] {
            let mut disk = fresh();
            let point = disk.snapshot.as_ref().unwrap().meta.index;
            let config_at = |_| initial();
            let damage = (disk.damage_real_snapshot(draw, &initial(), |_| true, config_at))
                .unwrap_or_else(|e| panic!("draw {draw:#x}: {e}"))
                .expect("damaged");
            assert_eq!(damage.point.0, point);
            disk.restart_real(&initial())
                .unwrap_or_else(|e| panic!("draw {draw:#x}: {e}"));
            let claim = damage.claim.map(|c| (c.from.0, c.through.0));
            let base = disk.snapshot.as_ref().map(|s| s.meta.index.0);
            outcomes.push((claim, base, disk.log.last_index().0));
        }
        outcomes
    }

    #[test]
    fn a_damaged_snapshot_with_the_whole_log_behind_it_is_rebuilt_locally() {
        // No older snapshot, the log from 1 through 45: nothing is claimed.
        let outcomes = damage_newest_snapshot(|| snapshotted(45, 30));
        assert!(
            outcomes.iter().all(|o| *o == (None, None, 45)),
            "{outcomes:?}"
        );
        // An older snapshot at 20 whose entry the log holds: rebuilt from it.
        let two = || {
            let mut disk = writing(45, 0);
            disk.save_snapshot(snapshot_at(20)).unwrap();
            disk.save_snapshot(snapshot_at(30)).unwrap();
            disk.compact(LogIndex(20)).unwrap();
            disk.write(46, None, Vec::new());
            disk.sync_through(46).unwrap();
            disk.crash(0).unwrap();
            disk
        };
        let outcomes = damage_newest_snapshot(two);
        assert!(
            outcomes.iter().all(|o| *o == (None, Some(20), 45)),
            "{outcomes:?}"
        );
    }

    #[test]
    fn a_damaged_snapshot_behind_a_compacted_log_claims_what_the_node_held() {
        // Compacted through 30 (the first segment, entries 1..=26, is dropped): the log no
        // longer continues from 1, so it restarts empty and 1..=45 is claimed.
        let compacted = || {
            let mut disk = writing(45, 0);
            disk.save_snapshot(snapshot_at(30)).unwrap();
            disk.compact(LogIndex(30)).unwrap();
            // A persist after it runs the compaction in the real storage.
            disk.write(46, None, Vec::new());
            disk.sync_through(46).unwrap();
            disk.crash(0).unwrap();
            disk
        };
        let outcomes = damage_newest_snapshot(compacted);
        assert!(
            outcomes.iter().all(|o| *o == (Some((1, 45)), None, 0)),
            "{outcomes:?}"
        );
        assert_eq!(compacted().lost(), None);
        let mut disk = compacted();
        let config_at = |_| initial();
        (disk.damage_real_snapshot(0, &initial(), |_| true, config_at)).unwrap();
        assert_eq!(disk.lost().map(|l| (l.from.0, l.through.0)), Some((1, 45)));
        // Not where the configuration the node is left with is refused.
        let mut disk = compacted();
        let refused = disk.damage_real_snapshot(0, &initial(), |_| false, |_| initial());
        assert_eq!(refused.unwrap(), None);
        disk.restart_real(&initial()).unwrap();
    }

    #[test]
    fn real_hard_state_damage_reads_as_the_model_says() {
        let kinds = [
            HardStateDamage::BothSlots,
            HardStateDamage::OneSlot,
            HardStateDamage::LostWriteThenOneSlot,
        ];
        for kind in kinds {
            for draw in [0u64, 1, 2, 3, 1 << 40, (1 << 40) | 1, 0x00ab_cdef_0123_4567] {
                let mut disk = written(2, 3);
                assert!(disk.damage_real_hard_state(kind, draw).unwrap());
                disk.damage_hard_state(kind);
                disk.restart_real(&initial())
                    .unwrap_or_else(|e| panic!("{kind:?} draw {draw:#x}: {e}"));
                assert!(disk.votes_unknown());
            }
        }
    }
}
