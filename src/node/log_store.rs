//! The Raft log on disk: [`Entry`] values stored as WAL records.
//!
//! Owned by the storage thread. Each entry is stored as its record bytes
//! ([`Entry::record`], encoded once when the entry was made, by the leader: a follower stores
//! the bytes it received), which the WAL checks again (length, checksum, index) before writing
//! them. Writes follow the core's persist contract: a batch whose first index is at or below
//! the last index first truncates the conflicting suffix, then appends. Nothing is durable
//! until [`LogStore::sync`]. Entries the core no longer holds in memory are read back for a
//! lagging follower ([`LogStore::read_entries`]) with positional reads, not through the
//! segments' maps (an unreadable sector is then an error, not a `SIGBUS`), each record's
//! checksum checked again, and keep the bytes read as their record (no re-encoding).

use super::snapshot_damage;
use super::storage_error::{DecodeProblem, Decoded, StorageError, StorageResult};
use crate::core::LostEntries;
use rcraft_storage::{Fs, Wal};
use rcraft_wire::record::entry_from_record;
use rcraft_wire::{Entry, LogIndex, Term};
use std::path::PathBuf;
use std::sync::Arc;

/// The WAL of the Raft log.
pub(crate) struct LogStore {
    wal: Wal,
    /// True when records were written since the last sync.
    dirty: bool,
    /// Where a claim on lost entries is saved before a reset removes the segments holding it
    /// (the data dir's `repair_claim`, storage/FORMAT.md §4.5).
    claim_file: Option<(Arc<dyn Fs>, PathBuf)>,
    /// The claim the claim file holds now, if any (set when it is saved or found at start).
    file_claim: Option<LostEntries>,
}

impl LogStore {
    /// Wraps an opened WAL.
    pub(crate) fn new(wal: Wal) -> LogStore {
        LogStore {
            wal,
            dirty: false,
            claim_file: None,
            file_claim: None,
        }
    }

    /// Saves a claim the WAL still holds in `data_dir`'s `repair_claim` before a reset
    /// removes the segments that hold it.
    pub(crate) fn keeping_claims_in(mut self, fs: Arc<dyn Fs>, data_dir: PathBuf) -> LogStore {
        self.claim_file = Some((fs, data_dir));
        self
    }

    /// First index held on disk.
    pub(crate) fn first_index(&self) -> LogIndex {
        LogIndex(self.wal.first_index())
    }

    /// Last index held on disk (first - 1 when empty).
    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.wal.last_index())
    }

    /// Synced entries the WAL found lost at open (cut below its synced frontier), if any.
    /// With the term of the entry at its end, when the WAL header recorded it.
    pub(crate) fn lost(&self) -> Option<(LogIndex, LogIndex, Option<Term>)> {
        self.wal.lost().map(|lost| {
            (
                LogIndex(lost.from),
                LogIndex(lost.through),
                lost.through_term.map(Term),
            )
        })
    }

    /// Term of the entry at `index`, when held.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.wal.term_at(index.0).map(Term)
    }

    /// Truncates a conflicting suffix if needed, then appends `entries` (not yet synced).
    pub(crate) fn write(&mut self, entries: &[Entry]) -> StorageResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.last_index() {
            self.wal
                .truncate_from(first.index.0)
                .map_err(StorageError::store(format!(
                    "truncating the log from index {}",
                    first.index
                )))?;
        }
        if first.index != self.last_index().next() {
            return Err(StorageError::Inconsistent(format!(
                "append at index {} but the log ends at {}",
                first.index,
                self.last_index()
            )));
        }
        let records: Vec<&[u8]> = entries.iter().map(Entry::record).collect();
        self.wal
            .append_encoded(&records)
            .map_err(StorageError::store(format!(
                "appending entries {}..",
                first.index
            )))?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every write so far durable (one sync), if anything was written; then, when the
    /// claim file claims a range the synced entries reach into, raises its term (below).
    pub(crate) fn sync(&mut self) -> StorageResult<()> {
        if self.dirty {
            self.wal
                .sync()
                .map_err(StorageError::store("syncing the log"))?;
            self.dirty = false;
            self.raise_file_claim()?;
        }
        Ok(())
    }

    /// The claim file's range may hold entries synced since it was saved (a leader's,
    /// taken during the repair): they may be acknowledged once this sync returns, so the
    /// claim takes the term of the last one before the node answers, as the WAL's own claim
    /// does with the same sync (`Segment::raise_claim_term`). Were they lost again, a claim
    /// keeping its older term would let the node vote for a candidate lacking them
    /// (SIM_FINDINGS 60 and 61). Only while the log ends inside the claim; an unknown term
    /// stays unknown (stricter).
    fn raise_file_claim(&mut self) -> StorageResult<()> {
        let (Some((fs, dir)), Some(claim)) = (&self.claim_file, self.file_claim) else {
            return Ok(());
        };
        let last = self.last_index();
        let (Some(held), Some(term)) = (claim.through_term, self.term_at(last)) else {
            return Ok(());
        };
        if last < claim.from || last > claim.through || term <= held {
            return Ok(());
        }
        let raised = LostEntries {
            through_term: Some(term),
            ..claim
        };
        snapshot_damage::save_claim(fs.as_ref(), dir, raised)?;
        self.file_claim = Some(raised);
        Ok(())
    }

    /// Records what the claim file holds after the start looked at it (`recover_base`).
    pub(crate) fn note_file_claim(&mut self, claim: Option<LostEntries>) {
        self.file_claim = claim;
    }

    /// Makes the WAL's count of the records the last sync made durable durable too (one
    /// sync of a segment header, when pending): when nothing else follows soon, so that a
    /// later loss of those records is known as one (storage/FORMAT.md §1.1).
    pub(crate) fn confirm(&mut self) -> StorageResult<()> {
        self.wal
            .confirm()
            .map_err(StorageError::store("syncing the log's synced count"))
    }

    /// Whether [`LogStore::confirm`] has a count to make durable.
    pub(crate) fn count_pending(&self) -> bool {
        self.wal.count_pending()
    }

    /// Drops whole segments covered by a snapshot through `through`.
    pub(crate) fn compact_through(&mut self, through: LogIndex) -> StorageResult<()> {
        self.wal
            .compact_through(through.0)
            .map_err(StorageError::store(format!(
                "compacting the log through {through}"
            )))
    }

    /// Discards the whole log and restarts it empty after `snapshot_index`. A claim on lost
    /// entries beyond the snapshot that the removed segments held is saved in the claim file
    /// first: the new segment's header holds it too, but only once synced, and a crash
    /// between the removals and that sync would forget it (SIM_FINDINGS 50).
    pub(crate) fn reset_after(&mut self, snapshot_index: LogIndex) -> StorageResult<()> {
        if let (Some((fs, dir)), Some((through, term))) =
            (&self.claim_file, self.wal.claimed_through())
        {
            if through > snapshot_index.0 {
                let held = LostEntries {
                    from: snapshot_index.next(),
                    through: LogIndex(through),
                    through_term: term.map(Term),
                };
                let claim = match snapshot_damage::load_claim(fs.as_ref(), dir)? {
                    Some(saved) => snapshot_damage::merge(saved, held),
                    None => held,
                };
                snapshot_damage::save_claim(fs.as_ref(), dir, claim)?;
                self.file_claim = Some(claim);
            }
        }
        self.dirty = false;
        self.wal
            .reset(snapshot_index.0 + 1)
            .map_err(StorageError::store(format!(
                "resetting the log after snapshot {snapshot_index}"
            )))
    }

    /// Reads and decodes the entries `[low, high]` for a follower, stopping after the first
    /// that brings their `Entry::size_bytes` to `max_bytes` or more (at least one entry).
    /// The records are copied with positional reads, not read through the WAL's maps
    /// (`Wal::read_copies`): a sector that turned unreadable while the node runs is then an
    /// error, not a `SIGBUS`; each record's length, checksum and index are checked again (the
    /// bytes are about to leave the node). An error when the range is not (or no longer) all
    /// on disk, or a record is damaged or unreadable (`StoreError::DamagedRecords`).
    pub(crate) fn read_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> StorageResult<Vec<Entry>> {
        if low > high || low < self.first_index() || high > self.last_index() {
            return Err(StorageError::Inconsistent(format!(
                "entries {low}..={high} are not all in the log, which holds {}..={}",
                self.first_index(),
                self.last_index()
            )));
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next = low;
        // The WAL counts records' encoded bytes, the cut here their `size_bytes`: read on
        // (rarely more than once) until the cut is reached or `high` is read.
        while next <= high && (entries.is_empty() || bytes < max_bytes) {
            let copies = (self.wal)
                .read_copies(next.0..high.0 + 1, max_bytes.saturating_sub(bytes))
                .map_err(StorageError::store(format!(
                    "reading entries {low}..={high} of the log"
                )))?;
            if copies.is_empty() {
                break; // Not reached: a read of a non-empty range returns a record at least.
            }
            for record in copies.iter() {
                // Keeps the bytes read as the entry's record (checked again in decoding).
                let entry =
                    entry_from_record(record.encoded).map_err(|e| StorageError::Undecodable {
                        what: Decoded::LogEntry(record.index),
                        reason: DecodeProblem::Record(e),
                    })?;
                bytes += entry.size_bytes();
                entries.push(entry);
                next = next.next();
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(entries)
    }

    /// Lets go of the resident pages of the sealed segments after recovery read the whole log,
    /// so the log does not stay in memory as mapped pages.
    pub(crate) fn release_sealed_pages(&mut self) {
        self.wal.release_sealed_pages();
    }

    /// Reads and decodes every entry after `after` (recovery). The log must continue right
    /// after `after`, or hold nothing past it.
    pub(crate) fn entries_after(&self, after: LogIndex) -> StorageResult<Vec<Entry>> {
        let from = after.next().max(self.first_index());
        if from > after.next() && from <= self.last_index() {
            return Err(StorageError::Inconsistent(format!(
                "the log starts at {from} but the snapshot ends at {after}: entries are missing"
            )));
        }
        if from > self.last_index() {
            return Ok(Vec::new());
        }
        let records = self
            .wal
            .entries_from(from.0)
            .map_err(StorageError::store(format!("reading the log from {from}")))?;
        records
            .map(|record| {
                entry_from_record(record.encoded).map_err(|e| StorageError::Undecodable {
                    what: Decoded::LogEntry(record.index),
                    reason: DecodeProblem::Record(e),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_storage::{SimFs, WalOptions};
    use std::path::Path;

    fn claim(from: u64, through: u64, term: u64) -> LostEntries {
        LostEntries {
            from: LogIndex(from),
            through: LogIndex(through),
            through_term: Some(Term(term)),
        }
    }

    /// A node whose claim lives in the claim file alone (its snapshot was damaged and its log
    /// restarted) takes a leader's entries inside the claimed range: once they are synced
    /// the file's claim carries the term of the last one, as the WAL's own claim does
    /// (SIM_FINDINGS 61, seed 6971); entries of an older term, or past the claim, leave it.
    /// Fails without `raise_file_claim` (the file keeps term 2).
    #[test]
    fn entries_synced_inside_a_claim_file_raise_its_term() {
        let fs = SimFs::new();
        let data_dir = Path::new("/data");
        let options = WalOptions {
            fs: Arc::new(fs.clone()),
            ..WalOptions::default()
        };
        let wal = Wal::open(&data_dir.join("wal"), options).unwrap();
        let mut log = LogStore::new(wal).keeping_claims_in(Arc::new(fs.clone()), data_dir.into());
        snapshot_damage::save_claim(&fs, data_dir, claim(1, 10, 2)).unwrap();
        log.note_file_claim(Some(claim(1, 10, 2)));
        let saved = || snapshot_damage::load_claim(&fs, data_dir).unwrap();
        let entry = |index: u64, term: u64| Entry::command(Term(term), LogIndex(index), None, b"x");

        log.write(&[entry(1, 2), entry(2, 3), entry(3, 5)]).unwrap();
        assert_eq!(saved(), Some(claim(1, 10, 2)), "raised only once synced");
        log.sync().unwrap();
        assert_eq!(saved(), Some(claim(1, 10, 5)));
        log.write(&[entry(4, 4)]).unwrap();
        log.sync().unwrap();
        assert_eq!(saved(), Some(claim(1, 10, 5)), "never lowered");
        let past: Vec<Entry> = (5..=11).map(|i| entry(i, 7)).collect();
        log.write(&past).unwrap();
        log.sync().unwrap();
        assert_eq!(
            saved(),
            Some(claim(1, 10, 5)),
            "the log reached past the claim"
        );
    }
}
