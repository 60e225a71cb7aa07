//! A log of entries after a base point: the model both of a replica's in-memory log (as its
//! persist actions describe it) and of what a simulated disk holds durably.
//!
//! Owned by one simulated node. Invariant: `entries` is contiguous and its first entry (if
//! any) has index `base_index + 1`; `base_index`/`base_term` name the last entry covered by a
//! snapshot (or 0/0 for the empty prefix); `base_membership` is the configuration in force
//! at the base (the snapshot's, or the initial one).

use rcraft::wire::{Entry, EntryPayload, LogIndex, Membership, Term};

/// Entries after a snapshot point.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryLog {
    base_index: LogIndex,
    base_term: Term,
    base_membership: Membership,
    entries: Vec<Entry>,
}

impl EntryLog {
    /// A log that starts right after (`base_index`, `base_term`) and holds `entries`.
    pub(crate) fn from_parts(
        base_index: LogIndex,
        base_term: Term,
        base_membership: Membership,
        entries: Vec<Entry>,
    ) -> Result<EntryLog, String> {
        let mut log = EntryLog {
            base_index,
            base_term,
            base_membership,
            entries: Vec::new(),
        };
        log.write(&entries)?;
        Ok(log)
    }

    /// Index of the last entry (the base index when empty).
    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.base_index, |e| e.index)
    }

    /// The index covered by the snapshot this log starts after.
    pub(crate) fn base_index(&self) -> LogIndex {
        self.base_index
    }

    /// The configuration in force at the end of the log, and the index of the entry that
    /// carries it (the base index when it is the base's): the one the replica must use.
    pub(crate) fn latest_membership(&self) -> (LogIndex, &Membership) {
        self.membership_through(self.last_index())
    }

    /// The configuration in force at `index` (at or after the base) and where it was set.
    pub(crate) fn membership_through(&self, index: LogIndex) -> (LogIndex, &Membership) {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some((e.index, m)),
                _ => None,
            })
            .unwrap_or((self.base_index, &self.base_membership))
    }

    /// The entries after the base, in index order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `index`, when held (not compacted, not beyond the end).
    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.base_index {
            return None;
        }
        self.entries.get((index.0 - self.base_index.0 - 1) as usize)
    }

    /// The term at `index`: the base term at the base, `None` when compacted or beyond.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// Carries out the log part of a persist action: truncate from the first new index when
    /// it is at or below the last index, then append. Entries at or below the base are
    /// already covered by the snapshot and skipped. A write that would leave a hole is an
    /// error.
    pub(crate) fn write(&mut self, entries: &[Entry]) -> Result<(), String> {
        let fresh: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.index > self.base_index)
            .collect();
        let Some(first) = fresh.first() else {
            return Ok(());
        };
        for pair in fresh.windows(2) {
            if pair[1].index != pair[0].index.next() {
                return Err(format!(
                    "persisted entries are not contiguous: {} then {}",
                    pair[0].index, pair[1].index
                ));
            }
        }
        if first.index > self.last_index().next() {
            return Err(format!(
                "persist leaves a hole: log ends at {} but entries start at {}",
                self.last_index(),
                first.index
            ));
        }
        let keep = (first.index.0 - self.base_index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend(fresh.into_iter().cloned());
        Ok(())
    }

    /// Drops the entries from `from` on (the disk lost them); `from` must be above the base.
    pub(crate) fn lose_from(&mut self, from: LogIndex) {
        let keep = from.0.saturating_sub(self.base_index.0 + 1) as usize;
        self.entries.truncate(keep);
    }

    /// Resets the log to a snapshot point received from the leader: the snapshot replaces
    /// the whole log (the core discards its log on install, and storage does the same).
    pub(crate) fn install_snapshot(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: &Membership,
    ) {
        self.base_index = index;
        self.base_term = term;
        self.base_membership = membership.clone();
        self.entries.clear();
    }

    /// Drops the entries through `through`, which must be held or at the base.
    pub(crate) fn compact(&mut self, through: LogIndex) -> Result<(), String> {
        if through <= self.base_index {
            return Ok(());
        }
        let Some(term) = self.term_at(through) else {
            return Err(format!(
                "compaction through {through} beyond the log end {}",
                self.last_index()
            ));
        };
        let drop = (through.0 - self.base_index.0) as usize;
        self.base_membership = self.membership_through(through).1.clone();
        self.entries.drain(..drop);
        self.base_index = through;
        self.base_term = term;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, through: u64, term: u64) -> Vec<Entry> {
        let entry = |i| Entry::new(Term(term), LogIndex(i), EntryPayload::Noop);
        (from..=through).map(entry).collect()
    }

    fn log() -> EntryLog {
        let initial = Membership::default();
        EntryLog::from_parts(LogIndex(0), Term(0), initial, entries(1, 5, 1)).unwrap()
    }

    /// A persist action that would leave a gap, inside its entries or after the log, is
    /// rejected; one that overwrites a suffix, or repeats entries a snapshot covers, is not.
    #[test]
    fn a_persist_with_a_hole_is_rejected() {
        let mut log = log();
        assert_eq!(log.write(&entries(4, 7, 2)), Ok(()));
        assert_eq!(
            (log.last_index(), log.term_at(LogIndex(4))),
            (LogIndex(7), Some(Term(2)))
        );
        let err = log.write(&entries(9, 10, 2)).unwrap_err();
        assert_eq!(
            err,
            "persist leaves a hole: log ends at 7 but entries start at 9"
        );
        let mut gap = entries(8, 8, 2);
        gap.extend(entries(10, 10, 2));
        let err = log.write(&gap).unwrap_err();
        assert_eq!(err, "persisted entries are not contiguous: 8 then 10");
        log.compact(LogIndex(3)).unwrap();
        assert_eq!(log.write(&entries(2, 8, 2)), Ok(()));
        assert_eq!(log.base_index(), LogIndex(3));
    }

    #[test]
    fn a_compaction_beyond_the_log_is_rejected() {
        let mut log = log();
        let err = log.compact(LogIndex(6)).unwrap_err();
        assert_eq!(err, "compaction through 6 beyond the log end 5");
        assert_eq!(log.compact(LogIndex(5)), Ok(()));
        assert_eq!(log.compact(LogIndex(2)), Ok(()));
        assert_eq!(log.base_index(), LogIndex(5));
    }
}
