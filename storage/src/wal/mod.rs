//! The segmented, memory-mapped write-ahead log.
//!
//! Owned by the node's storage thread; not shared. The log is a run of records with
//! contiguous indexes `first_index()..=last_index()`, spread over segment files in one
//! directory (format: `storage/FORMAT.md`). Appends copy records into the active segment's
//! map; `sync` makes everything appended so far durable with one call (group commit: the caller
//! appends a whole batch, then syncs once). Invariants:
//! - `segments` are sorted and contiguous; only the last one (the active segment) is written,
//!   every other one was synced before its successor was created.
//! - `next_index == last_index() + 1`; a record appended must carry exactly `next_index`.
//! - After any failed write or sync the log is stopped: it refuses every further mutation,
//!   because what reached the disk is unknown (fail-stop; never retry a failed fsync).

mod recovery;
mod segment;

pub use recovery::Lost;
pub use segment::{Record, RecordCopies, RecordRef};

use crate::error::{Error, Result};
use crate::fs::{DirLock, Fs, RealFs};
use crate::limits::{
    RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES,
};
use segment::{Segment, Slot, check_encoded};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a [`Wal`] is opened.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of each preallocated segment file, in bytes
    /// (between `SEGMENT_BYTES_MIN` and `SEGMENT_BYTES_MAX`).
    pub segment_bytes: u64,
    /// The file system to use: [`RealFs`] in production, [`crate::SimFs`] in tests.
    pub fs: Arc<dyn Fs>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            fs: Arc::new(RealFs::default()),
        }
    }
}

/// The write-ahead log. See the module docs.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Invariant: sorted by first index, contiguous; the last one is the active segment.
    segments: Vec<Segment>,
    /// Invariant: equals `last_index() + 1`.
    next_index: u64,
    /// Set by the first failed write or sync; every mutation fails from then on.
    stopped: Option<String>,
    /// Synced records that recovery found lost, if any (see [`Wal::lost`]).
    lost: Option<Lost>,
    /// One past the highest index this log ever synced, as far as its headers tell; while
    /// the log ends before it, the active segment's header keeps claiming it, so a lost
    /// range not yet repaired is still reported after another restart.
    claim_end: u64,
    /// The term of the entry before `claim_end`, written with the claim (0: not known).
    claim_term: u64,
    /// `claim_end` as recovery found it, kept for diagnostics.
    opened_claim_end: u64,
    _lock: Box<dyn DirLock>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering what is there: a torn tail of the last
    /// segment is cut off; synced records found damaged or missing are cut off too and
    /// reported by [`Wal::lost`]; a damaged segment header is rebuilt from the file name.
    /// Only what cannot be understood (storage/FORMAT.md §4.1) is [`Error::Corruption`]
    /// naming file and offset.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&options.segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes {} outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                options.segment_bytes
            )));
        }
        let fs = options.fs.as_ref();
        crate::fs::create_dir_durable(fs, dir)?;
        let lock = fs
            .lock_dir(dir)
            .map_err(|e| Error::io("lock WAL directory (is another node using it?)", dir, e))?;
        let recovered = recovery::recover(fs, dir)?;
        let segments = recovered.segments;
        let next_index = segments.last().map_or(1, Segment::next_index);
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            segments,
            next_index,
            stopped: None,
            lost: recovered.lost,
            claim_end: recovered.claim_end,
            claim_term: recovered.claim_term,
            opened_claim_end: recovered.claim_end,
            _lock: lock,
        };
        wal.carry_claim();
        // Recovery synced the records it found; their count follows (storage/FORMAT.md §1.1).
        wal.confirm()?;
        Ok(wal)
    }

    /// Synced records that recovery found missing or damaged (see storage/FORMAT.md §4.1):
    /// the log was cut before them. The node may have acknowledged them, so it must not act
    /// as if it held them until it has them again.
    pub fn lost(&self) -> Option<&Lost> {
        self.lost.as_ref()
    }

    /// The synced range this log still claims beyond its end (a loss not yet repaired, which
    /// the active segment's header keeps claiming): the last index claimed, and the term of
    /// the entry there when a header recorded it.
    pub fn claimed_through(&self) -> Option<(u64, Option<u64>)> {
        let term = self.current_claim_term();
        (self.claim_end > self.next_index)
            .then(|| (self.claim_end - 1, (term != 0).then_some(term)))
    }

    /// The claim's term, raised by the active segment's syncs of records inside the claimed
    /// range (`Segment::raise_claim_term`).
    fn current_claim_term(&self) -> u64 {
        match self.segments.last() {
            Some(active) if self.claim_term != 0 => self.claim_term.max(active.claim_term),
            _ => self.claim_term,
        }
    }

    /// Makes the active segment claim the synced frontier while the log ends before it.
    fn carry_claim(&mut self) {
        self.claim_term = self.current_claim_term();
        if self.next_index >= self.claim_end {
            self.claim_end = 0;
        }
        let claim_end = self.claim_end;
        if let Some(active) = self.segments.last_mut() {
            active.claim_records = recovery::claim_records(claim_end, active.first_index);
            active.claim_term = self.claim_term;
        }
    }

    /// Index of the first record held (`last_index() + 1` when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_index, |seg| seg.first_index)
    }

    /// Index of the last record held (`first_index() - 1` when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// Term of the record at `index`, if the log holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index < self.first_index() || index >= self.next_index {
            return None;
        }
        let seg = &self.segments[self.segment_of(index)];
        Some(seg.term_at(index))
    }

    /// The records with indexes in `range`, borrowed from the maps (no payload copy).
    /// `range` must lie within `first_index()..=last_index()`. For a log just opened (whose
    /// recovery read every segment with positional reads first): a sector that turned
    /// unreadable since raises `SIGBUS` when its page is read through the map; reads while
    /// the log runs use [`Wal::read_copies`].
    pub fn read(&self, range: Range<u64>) -> Result<Vec<RecordRef<'_>>> {
        self.check_range(&range)?;
        Ok(self.iter_range(range).collect())
    }

    /// Iterates the records from `index` to the end, borrowed from the maps (recovery replay
    /// right after the open; see [`Wal::read`]). `index` may be `last_index() + 1` (nothing
    /// to iterate).
    pub fn entries_from(&self, index: u64) -> Result<impl Iterator<Item = RecordRef<'_>> + '_> {
        let range = index..self.next_index.max(index);
        self.check_range(&range)?;
        Ok(self.iter_range(range))
    }

    /// Copies of the records with indexes in `range`, read with positional reads rather than
    /// through the maps, stopping after the first that brings their encoded size to
    /// `max_bytes` or more (at least one when `range` is not empty): for reads while the log
    /// runs (a follower's catch-up). A sector that turned unreadable after the log was
    /// opened is then an error, where a read of the map would raise `SIGBUS` and kill the
    /// process; each record read is checked again as recovery checks it. One read per
    /// segment touched. An unreadable sector or a record that fails its check is
    /// [`Error::DamagedRecords`] (file, offset, indexes); the log's next open finds the
    /// damage and reports the records lost (storage/FORMAT.md §4.1). `range` must lie within
    /// `first_index()..=last_index()`.
    pub fn read_copies(&self, range: Range<u64>, max_bytes: u64) -> Result<RecordCopies> {
        self.check_range(&range)?;
        let mut copies = RecordCopies::default();
        let mut index = range.start;
        let mut bytes = 0u64;
        while index < range.end && (index == range.start || bytes < max_bytes) {
            let seg = &self.segments[self.segment_of(index)];
            let end = range.end.min(seg.next_index());
            let count = seg.records_within(index, end, max_bytes.saturating_sub(bytes));
            let before = copies.len();
            seg.read_copies(index, index + count, &mut copies)?;
            bytes += (copies.iter().skip(before))
                .map(|record| record.encoded.len() as u64)
                .sum::<u64>();
            index += count;
        }
        Ok(copies)
    }

    fn iter_range(&self, range: Range<u64>) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        let mut seg = if range.is_empty() {
            0
        } else {
            self.segment_of(range.start)
        };
        range.map(move |index| {
            if index >= self.segments[seg].next_index() {
                seg += 1;
            }
            self.segments[seg].record(index)
        })
    }

    fn check_range(&self, range: &Range<u64>) -> Result<()> {
        let held = self.first_index()..self.next_index;
        let inside = range.start >= held.start && range.end <= held.end;
        if range.start > range.end || !(inside || range.is_empty() && range.start == held.end) {
            return Err(Error::InvalidArgument(format!(
                "read of {range:?} outside the log's {held:?}"
            )));
        }
        Ok(())
    }

    /// Position in `segments` of the segment holding `index` (which the log must hold).
    fn segment_of(&self, index: u64) -> usize {
        self.segments
            .partition_point(|seg| seg.first_index <= index)
            .saturating_sub(1)
    }

    /// Appends a batch into the maps. Indexes must continue the log (`last_index() + 1`,
    /// then +1 each). Not durable until [`Wal::sync`] returns.
    pub fn append(&mut self, records: &[Record<'_>]) -> Result<()> {
        self.check_running()?;
        for (offset, record) in records.iter().enumerate() {
            let expected = self.next_index + offset as u64;
            if record.index != expected {
                return Err(Error::InvalidArgument(format!(
                    "append of index {} where {expected} was expected",
                    record.index
                )));
            }
            if record.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                return Err(Error::InvalidArgument(format!(
                    "payload of {} bytes exceeds {RECORD_PAYLOAD_BYTES_MAX}",
                    record.payload.len()
                )));
            }
        }
        for record in records {
            let appended =
                self.append_one(record.index, record.payload.len(), |seg| seg.append(record));
            self.stop_on_error(appended)?;
        }
        Ok(())
    }

    /// Appends a batch of records encoded elsewhere (storage/FORMAT.md §1.2), as they are:
    /// e.g. a leader's records received by a follower. Each must be one whole record whose
    /// length field is its length, and indexes must continue the log as for [`Wal::append`].
    /// The checksum is the caller's to vouch for (the node's records were made by
    /// `rcraft_wire::record` or checked by it when they arrived): it is not computed again
    /// here, except in debug builds, where a mismatch is a bug that panics. Nothing is written
    /// unless every record passes; a refusal is [`Error::InvalidArgument`] naming the record
    /// and the problem (the WAL keeps running). Not durable until [`Wal::sync`] returns.
    pub fn append_encoded(&mut self, records: &[&[u8]]) -> Result<()> {
        self.check_running()?;
        for (offset, bytes) in records.iter().enumerate() {
            let expected = self.next_index + offset as u64;
            let refuse = |why: String| {
                Err(Error::InvalidArgument(format!(
                    "encoded record for index {expected}: {why}"
                )))
            };
            match check_encoded(bytes) {
                Slot::Valid { len, index, .. } => {
                    if len != bytes.len() {
                        return refuse(format!(
                            "its length field says {len} bytes, it has {}",
                            bytes.len()
                        ));
                    }
                    if index != expected {
                        return refuse(format!("it carries index {index}"));
                    }
                    if len - RECORD_HEADER_BYTES > RECORD_PAYLOAD_BYTES_MAX {
                        return refuse(format!(
                            "payload of {} bytes exceeds {RECORD_PAYLOAD_BYTES_MAX}",
                            len - RECORD_HEADER_BYTES
                        ));
                    }
                }
                Slot::End => return refuse("no record".to_string()),
                Slot::Bad(why) => return refuse(why),
            }
        }
        for bytes in records {
            let index = self.next_index;
            let payload_len = bytes.len() - RECORD_HEADER_BYTES;
            let appended = self.append_one(index, payload_len, |seg| seg.append_encoded(bytes));
            self.stop_on_error(appended)?;
        }
        Ok(())
    }

    /// Writes one record of `payload_len` bytes of payload with `write`, into the active
    /// segment or a new one when it does not fit.
    fn append_one(
        &mut self,
        index: u64,
        payload_len: usize,
        write: impl FnOnce(&mut Segment) -> Result<()>,
    ) -> Result<()> {
        let fits = self
            .segments
            .last()
            .is_some_and(|seg| seg.fits(payload_len));
        if !fits {
            self.roll(index, payload_len)?;
        }
        let active = self.segments.last_mut().expect("roll created a segment");
        write(active)?;
        self.next_index += 1;
        if self.next_index >= self.claim_end && self.claim_end != 0 {
            // The lost range is held again: the records now speak for themselves.
            self.claim_end = 0;
            active.claim_records = 0;
        }
        Ok(())
    }

    /// Seals the active segment (syncing it) and starts a new one at `first_index`, large
    /// enough for a payload of `payload_len` bytes.
    fn roll(&mut self, first_index: u64, payload_len: usize) -> Result<()> {
        if self.segments.last().is_some_and(|active| active.len() == 0) {
            // An empty active segment too small for this record: unmap it; the new segment has
            // the same name and atomically replaces it when renamed into place.
            self.segments.pop();
        } else if let Some(active) = self.segments.last_mut() {
            // Sealed with its records' count: no later sync carries it.
            active.sync()?;
            active.confirm()?;
            if self.claim_term != 0 {
                self.claim_term = self.claim_term.max(active.claim_term);
            }
            // Sealed and synced: nothing writes it again, so its pages need not stay resident
            // (the log since the last snapshot would otherwise stay in memory as mapped pages).
            release_or_warn(active);
        }
        let needed = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + payload_len) as u64;
        let len = self.options.segment_bytes.max(needed);
        let seg = Segment::create(self.options.fs.as_ref(), &self.dir, first_index, len)?;
        self.segments.push(seg);
        self.carry_claim();
        self.sync_dir()
    }

    /// Lets go of the resident pages of every sealed segment (all but the active one), e.g.
    /// after reading old records for a follower or for recovery: they are read back from the
    /// page cache or the disk on the next access, so reading the whole log once does not keep
    /// it in the process's memory. A failure only leaves the pages resident (logged).
    pub fn release_sealed_pages(&mut self) {
        let sealed = self.segments.len().saturating_sub(1);
        for seg in &mut self.segments[..sealed] {
            release_or_warn(seg);
        }
    }

    /// Lets go of the resident pages of the sealed segments holding any record of `range`,
    /// after reading them (a lagging follower's catch-up): the read mapped them back into the
    /// process, and until the next release they would count in its resident set (up to the
    /// whole log since the last snapshot). Only the segments the read touched, one `madvise`
    /// each; the active segment keeps its pages (it is being written). Indexes outside the log
    /// are ignored. A failure only leaves the pages resident (logged).
    pub fn release_sealed_pages_of(&mut self, range: Range<u64>) {
        let held = range.start.max(self.first_index())..range.end.min(self.next_index);
        if held.is_empty() {
            return;
        }
        let sealed = self.segments.len().saturating_sub(1);
        let first = self.segment_of(held.start);
        let end = (self.segment_of(held.end - 1) + 1).min(sealed);
        for seg in self.segments.get_mut(first..end).into_iter().flatten() {
            release_or_warn(seg);
        }
    }

    /// Makes every record appended so far durable: one msync/fdatasync of the active segment.
    /// After an error the log is stopped (see [`Error::Stopped`]).
    pub fn sync(&mut self) -> Result<()> {
        self.check_running()?;
        let synced = match self.segments.last_mut() {
            Some(active) => active.sync(),
            None => Ok(()),
        };
        self.stop_on_error(synced)
    }

    /// Makes the synced count of the records the last [`Wal::sync`] made durable durable too
    /// (storage/FORMAT.md §1.1): a sync writes, with its records, the count of those that
    /// earlier syncs made durable, never of its own, so that a power loss during it cannot
    /// leave a count ahead of the records. The next sync carries the newest count anyway;
    /// call this when none follows soon (the writer is idle), so that a later loss of the
    /// newest records is known as one. One sync of the header's page, or nothing when the
    /// count is durable already. After an error the log is stopped.
    pub fn confirm(&mut self) -> Result<()> {
        self.check_running()?;
        let confirmed = match self.segments.last_mut() {
            Some(active) if active.count_pending() => active.confirm(),
            _ => Ok(()),
        };
        self.stop_on_error(confirmed)
    }

    /// Whether [`Wal::confirm`] has a count to make durable.
    pub fn count_pending(&self) -> bool {
        self.segments.last().is_some_and(Segment::count_pending)
    }

    /// Removes the records from `index` on (a conflicting suffix). Durable on return: the
    /// removal is synced (with anything appended before it), so a crash cannot bring the
    /// removed records back. `index` must not be below `first_index()`.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        self.check_running()?;
        if index >= self.next_index {
            return Ok(());
        }
        if index < self.first_index() {
            return Err(Error::InvalidArgument(format!(
                "truncate from {index}, below the first index {}",
                self.first_index()
            )));
        }
        let truncated = self.truncate_segments_from(index);
        self.stop_on_error(truncated)
    }

    fn truncate_segments_from(&mut self, index: u64) -> Result<()> {
        // Newest first, syncing the directory after each removal, so a crash always leaves a
        // contiguous prefix of segments.
        while self.segments.len() > 1 && self.segments.last().expect("len > 1").first_index >= index
        {
            let seg = self.segments.pop().expect("len > 1");
            self.remove_segment(seg)?;
        }
        // Zeroing in place is not atomic: a crash can leave any mix of zeroes and the old
        // records, which recovery would read as damage followed by valid records. A marker
        // file naming the cut, durable before the zeroing and removed after it is synced,
        // tells recovery that whatever lies from the cut on is the remains of this truncation.
        let marker = self.dir.join(recovery::truncation_marker_name(index));
        let fs = self.options.fs.clone();
        let dir = self.dir.clone();
        let sync_dir = |what: &'static str| fs.sync_dir(&dir).map_err(|e| Error::io(what, &dir, e));
        drop(
            fs.open_write(&marker)
                .map_err(|e| Error::io("create truncation marker", &marker, e))?,
        );
        sync_dir("sync directory after creating a truncation marker")?;
        let active = self.segments.last_mut().expect("the log holds index");
        active.truncate_from(index)?;
        active.sync()?;
        fs.remove_file(&marker)
            .map_err(|e| Error::io("remove truncation marker", &marker, e))?;
        sync_dir("sync directory after removing a truncation marker")?;
        self.next_index = index;
        self.carry_claim();
        Ok(())
    }

    /// Removes every segment whose records all have indexes `<= index` (after a snapshot
    /// through `index` is durable). The active segment is never removed, so records at or
    /// below `index` may remain; `first_index()` tells what is left.
    pub fn compact_through(&mut self, index: u64) -> Result<()> {
        self.check_running()?;
        let compacted = self.compact_segments_through(index);
        self.stop_on_error(compacted)
    }

    fn compact_segments_through(&mut self, index: u64) -> Result<()> {
        // Oldest first, syncing the directory after each removal, so a crash always leaves a
        // contiguous suffix of segments.
        while self.segments.len() > 1 && self.segments[1].first_index <= index.saturating_add(1) {
            let seg = self.segments.remove(0);
            self.remove_segment(seg)?;
        }
        Ok(())
    }

    /// Discards the whole log and restarts it empty at `next_index` (after installing a
    /// snapshot through `next_index - 1` that the log does not match). Durable on return.
    /// A crash part-way leaves the directory empty: the log then reopens empty with
    /// `last_index() == 0`, and the caller (holding the snapshot) calls `reset` again.
    pub fn reset(&mut self, next_index: u64) -> Result<()> {
        self.check_running()?;
        if next_index == 0 {
            return Err(Error::InvalidArgument("reset to index 0".into()));
        }
        let reset = self.reset_segments(next_index);
        self.stop_on_error(reset)
    }

    fn reset_segments(&mut self, next_index: u64) -> Result<()> {
        while let Some(seg) = self.segments.pop() {
            self.remove_segment(seg)?;
        }
        self.next_index = next_index;
        // A snapshot through `next_index - 1` replaces the log: what the log lost below it
        // no longer matters.
        if self.claim_end <= next_index {
            self.claim_end = 0;
        }
        let fs = self.options.fs.as_ref();
        let seg = Segment::create(fs, &self.dir, next_index, self.options.segment_bytes)?;
        self.segments.push(seg);
        self.carry_claim();
        if self.claim_end > 0 {
            // The segments that held the claim are gone: the new one holds it on disk at
            // once, not at its first sync, or a crash before that forgot the range (its
            // entries may have been acknowledged; SIM_FINDINGS 50).
            let active = self.segments.last_mut().expect("just created");
            active.rewrite_synced_count();
            active.confirm()?;
        }
        self.sync_dir()
    }

    /// Unmaps and unlinks a segment, then syncs the directory. The map is dropped first so a
    /// file is never removed (or shrunk) while mapped.
    fn remove_segment(&self, seg: Segment) -> Result<()> {
        let path = seg.path.clone();
        drop(seg);
        self.options
            .fs
            .remove_file(&path)
            .map_err(|e| Error::io("remove segment", &path, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        self.options
            .fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }

    /// Whether an earlier failure stopped the log.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    fn check_running(&self) -> Result<()> {
        match &self.stopped {
            Some(cause) => Err(Error::Stopped {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            log::error!("WAL in {} stopped: {err}", self.dir.display());
            self.stopped = Some(err.to_string());
        }
        result
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Paths of the segment files, oldest first (for tests and diagnostics).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|seg| seg.path.clone()).collect()
    }

    /// Each segment's path, first index and number of records, oldest first (diagnostics).
    pub fn segment_ranges(&self) -> Vec<(PathBuf, u64, u64)> {
        self.segments
            .iter()
            .map(|seg| (seg.path.clone(), seg.first_index, seg.len()))
            .collect()
    }

    /// One past the highest index the segment headers claimed synced when the log was opened
    /// (the synced frontier of storage/FORMAT.md §1.1); 0 when no header records one
    /// (version-1 segments, or an empty log).
    pub fn opened_synced_frontier(&self) -> u64 {
        self.opened_claim_end
    }
}

/// Releases a sealed segment's resident pages; a failure costs only memory, so it is logged.
fn release_or_warn(seg: &mut Segment) {
    if let Err(e) = seg.release_pages() {
        log::warn!("{e}");
    }
}
