//! The replica's in-memory view of its log: the entries after the compacted prefix, where the
//! durable prefix ends, and the commit point.
//!
//! Owned by one `Replica`. Invariants (checked by `check_invariants` in tests and by cheap
//! assertions on every mutation):
//! - `entries[i].index == prev_index + 1 + i` (contiguous);
//! - terms never decrease along the log (Raft paper §5.3);
//! - `prev_index <= committed <= last_index()` and `persisted <= last_index()`;
//! - committed entries are never truncated (paper §5.4, Leader Completeness).

use super::error::{CoreError, Result};
use rcraft_wire::{
    APPEND_ENTRIES_BYTES_MAX, ConflictHint, Entry, EntryPayload, LogIndex, Membership,
    SnapshotMeta, Term,
};

/// In-memory log view of one replica.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// Latest snapshot, if any. Invariant: `prev_index <= snapshot.index` when present.
    snapshot: Option<SnapshotMeta>,
    /// Index of the entry just before `entries[0]` (0 for an uncompacted log).
    prev_index: LogIndex,
    /// Term of the entry at `prev_index` (0 for index 0).
    prev_term: Term,
    /// The entries after `prev_index`, in index order.
    entries: Vec<Entry>,
    /// Highest index known durable on this node's disk. Invariant: `<= last_index()`.
    persisted: LogIndex,
    /// Highest index known committed. Invariant: `prev_index <= committed <= last_index()`.
    committed: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: an optional snapshot and the durable entries after it.
    /// Everything given is durable. Entries at or below the snapshot index (storage may keep
    /// some behind a snapshot for slow followers) are skipped. `commit_hint` is clamped to
    /// the log.
    pub fn recover(
        snapshot: Option<SnapshotMeta>,
        mut entries: Vec<Entry>,
        commit_hint: LogIndex,
    ) -> Result<RaftLog> {
        let (prev_index, prev_term) = snapshot
            .as_ref()
            .map(|s| (s.index, s.term))
            .unwrap_or_default();
        entries.retain(|e| e.index > prev_index);
        let mut expected = prev_index.next();
        let mut last_term = prev_term;
        for entry in &entries {
            if entry.index != expected {
                return Err(CoreError::RecoveredLog(format!(
                    "entry at index {} where {} was expected",
                    entry.index, expected
                )));
            }
            if entry.term < last_term {
                return Err(CoreError::RecoveredLog(format!(
                    "term {} at index {} after term {}",
                    entry.term, entry.index, last_term
                )));
            }
            last_term = entry.term;
            expected = expected.next();
        }
        let last = expected.prev();
        Ok(RaftLog {
            snapshot,
            prev_index,
            prev_term,
            entries,
            persisted: last,
            committed: commit_hint.clamp(prev_index, last),
        })
    }

    /// Latest snapshot, if any.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// Index covered by the latest snapshot (0 without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map(|s| s.index).unwrap_or_default()
    }

    /// First index held in memory (may be below the snapshot index when entries are retained).
    pub fn first_index(&self) -> LogIndex {
        self.prev_index.next()
    }

    /// Index of the last entry (or of the snapshot when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.prev_index.0 + self.entries.len() as u64)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map(|e| e.term)
            .unwrap_or(self.prev_term)
    }

    /// Highest index durable on this node.
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted
    }

    /// Highest index known committed.
    pub fn committed_index(&self) -> LogIndex {
        self.committed
    }

    /// Term of the entry at `index`, when known (0 for index 0; `None` when compacted away or
    /// beyond the end).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, when held in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.prev_index {
            return None;
        }
        self.entries.get((index.0 - self.prev_index.0 - 1) as usize)
    }

    /// Entries in `[low, high]`, clamped to what is held.
    pub fn slice(&self, low: LogIndex, high: LogIndex) -> &[Entry] {
        let low = low.max(self.first_index());
        let high = high.min(self.last_index());
        if low > high {
            return &[];
        }
        let start = (low.0 - self.first_index().0) as usize;
        let end = (high.0 - self.first_index().0) as usize + 1;
        &self.entries[start..end]
    }

    /// All entries held in memory, in index order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries from `low` to send in one message: at least one (when any exist), then more
    /// while the total stays within `max_bytes` and their `wire_bytes_max` within
    /// `APPEND_ENTRIES_BYTES_MAX`, so a batch of entries that each fit a frame fits one too,
    /// whatever `max_bytes` is configured to. `None` when `low` is compacted away.
    pub fn entries_for_send(&self, low: LogIndex, max_bytes: u64) -> Option<Vec<Entry>> {
        if low < self.first_index() {
            return None;
        }
        let mut batch = Vec::new();
        let (mut bytes, mut wire_bytes) = (0, 0);
        for entry in self.slice(low, self.last_index()) {
            let (size, wire) = (entry.size_bytes(), entry.wire_bytes_max());
            let over = bytes + size > max_bytes || wire_bytes + wire > APPEND_ENTRIES_BYTES_MAX;
            if !batch.is_empty() && over {
                break;
            }
            bytes += size;
            wire_bytes += wire;
            batch.push(entry.clone());
        }
        Some(batch)
    }

    /// Total `size_bytes` of the entries in `[low, high]` held in memory.
    pub fn bytes_between(&self, low: LogIndex, high: LogIndex) -> u64 {
        self.slice(low, high).iter().map(Entry::size_bytes).sum()
    }

    /// True when a log ending at (`last_index`, `last_term`) is at least as up to date as this
    /// one (Raft paper §5.4.1): a later last term wins; with equal terms the longer log wins.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries created by this node as leader, right after the last index.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "leader append must be contiguous"
        );
        assert!(
            entry.term >= self.last_term(),
            "terms must not decrease along the log"
        );
        self.entries.push(entry);
    }

    /// First index among `entries` whose term differs from ours or that we do not hold.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|e| self.term_at(e.index) != Some(e.term))
            .map(|e| e.index)
    }

    /// Replaces everything from `entries[0].index` on with `entries`. The first index must be
    /// at most `last_index() + 1` and above the commit index.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index <= self.last_index().next(),
            "append leaves a gap"
        );
        assert!(
            first.index > self.committed,
            "committed entry {} would be overwritten (commit {})",
            first.index,
            self.committed
        );
        let keep = (first.index.0 - self.first_index().0) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(first.index.prev());
        self.entries.extend_from_slice(entries);
    }

    /// Where our log disagrees with a leader that probed `probe_index` (paper §5.3, the
    /// "conflicting term and first index" optimisation).
    pub fn conflict_hint(&self, probe_index: LogIndex) -> ConflictHint {
        match self.term_at(probe_index) {
            None if probe_index > self.last_index() => ConflictHint {
                term: None,
                first_index: self.last_index().next(),
            },
            None => ConflictHint {
                term: None,
                first_index: self.first_index(),
            },
            Some(term) => {
                let mut first = probe_index;
                while first > self.first_index() && self.term_at(first.prev()) == Some(term) {
                    first = first.prev();
                }
                ConflictHint {
                    term: Some(term),
                    first_index: first,
                }
            }
        }
    }

    /// The last index at or below `at_most` whose entry has `term`, scanning back only while
    /// terms are at least `term` (terms never decrease along the log).
    pub fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let mut index = at_most.min(self.last_index());
        loop {
            let found = self.term_at(index)?;
            if found == term {
                return Some(index);
            }
            if found < term || index <= self.prev_index {
                return None;
            }
            index = index.prev();
        }
    }

    /// Records that the write ending at (`index`, `term`) is durable. Ignored when the entry
    /// there has since been replaced (the write was superseded by a truncation).
    pub fn mark_persisted(&mut self, index: LogIndex, term: Term) {
        if index > self.persisted && self.term_at(index) == Some(term) {
            self.persisted = index;
        }
    }

    /// Advances the commit index; never moves it back. Returns true when it moved.
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// A local snapshot through `meta.index` exists: drop entries before
    /// `meta.index - retain_entries` from memory. Returns the new compaction point.
    pub fn compact(&mut self, meta: SnapshotMeta, retain_entries: u64) -> LogIndex {
        assert!(meta.index <= self.last_index(), "snapshot beyond the log");
        let through = LogIndex(meta.index.0.saturating_sub(retain_entries)).max(self.prev_index);
        let term = self.term_at(through).expect("compaction point is held");
        let drop = (through.0 - self.prev_index.0) as usize;
        self.entries.drain(..drop);
        self.prev_index = through;
        self.prev_term = term;
        self.snapshot = Some(meta);
        through
    }

    /// Replaces the whole log by an installed snapshot (a follower that fell behind).
    pub fn restore(&mut self, meta: SnapshotMeta) {
        self.prev_index = meta.index;
        self.prev_term = meta.term;
        self.entries.clear();
        self.persisted = meta.index;
        self.committed = meta.index;
        self.snapshot = Some(meta);
    }

    /// The configuration in force: the last membership entry of the log, else the snapshot's,
    /// else `None`. Returns the index it was appended at too.
    pub fn last_membership(&self) -> Option<(LogIndex, &Membership)> {
        let snapshot_index = self.snapshot_index();
        let in_log = self.entries.iter().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some((e.index, m)),
            _ => None,
        });
        match (in_log, self.snapshot.as_ref()) {
            (Some((index, m)), _) if index > snapshot_index => Some((index, m)),
            (_, Some(s)) => Some((s.index, &s.membership)),
            (found, None) => found,
        }
    }

    /// The configuration in force at `index` (the last membership entry at or before it,
    /// else the snapshot's, else `initial` for a log that never had one), when `index` is not
    /// before what the view can tell.
    pub fn membership_at(&self, index: LogIndex, initial: &Membership) -> Option<Membership> {
        if index > self.last_index() || index < self.prev_index {
            return None;
        }
        let snapshot_index = self.snapshot_index();
        let in_log = self
            .slice(self.first_index(), index)
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                EntryPayload::Membership(m) if e.index > snapshot_index => Some(m),
                _ => None,
            });
        match (in_log, self.snapshot.as_ref()) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(s)) if s.index <= index => Some(s.membership.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(initial.clone()),
        }
    }

    /// Asserts the invariants listed in the module header.
    pub fn check_invariants(&self) {
        let mut term = self.prev_term;
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index.0, self.prev_index.0 + 1 + i as u64);
            assert!(e.term >= term);
            term = e.term;
        }
        assert!(self.prev_index <= self.committed && self.committed <= self.last_index());
        assert!(self.persisted <= self.last_index());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    fn log_of(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as u64 + 1, *t))
            .collect();
        RaftLog::recover(None, entries, LogIndex(0)).unwrap()
    }

    #[test]
    fn recover_rejects_gaps_and_falling_terms() {
        assert!(RaftLog::recover(None, vec![entry(2, 1)], LogIndex(0)).is_err());
        assert!(RaftLog::recover(None, vec![entry(1, 2), entry(2, 1)], LogIndex(0)).is_err());
        let log = RaftLog::recover(None, vec![entry(1, 1)], LogIndex(9)).unwrap();
        assert_eq!(log.committed_index(), LogIndex(1));
        assert_eq!(log.persisted_index(), LogIndex(1));
    }

    #[test]
    fn term_lookup_and_up_to_date() {
        let log = log_of(&[1, 1, 2]);
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(4)), None);
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn truncation_rolls_back_the_persisted_boundary() {
        let mut log = log_of(&[1, 1, 1, 1]);
        assert_eq!(
            log.find_conflict(&[entry(3, 1), entry(4, 2)]),
            Some(LogIndex(4))
        );
        log.truncate_and_append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!(log.persisted_index(), LogIndex(2));
        assert_eq!(log.last_term(), Term(2));
        // A late confirmation of the superseded write must not count.
        log.mark_persisted(LogIndex(4), Term(1));
        assert_eq!(log.persisted_index(), LogIndex(2));
        log.mark_persisted(LogIndex(4), Term(2));
        assert_eq!(log.persisted_index(), LogIndex(4));
        log.check_invariants();
    }

    #[test]
    #[should_panic(expected = "committed entry")]
    fn truncating_committed_entries_panics() {
        let mut log = log_of(&[1, 1, 1]);
        log.commit_to(LogIndex(2));
        log.truncate_and_append(&[entry(2, 2)]);
    }

    #[test]
    fn conflict_hints() {
        let log = log_of(&[1, 1, 3, 3, 3]);
        let hint = log.conflict_hint(LogIndex(5));
        assert_eq!((hint.term, hint.first_index), (Some(Term(3)), LogIndex(3)));
        let hint = log.conflict_hint(LogIndex(9));
        assert_eq!((hint.term, hint.first_index), (None, LogIndex(6)));
        assert_eq!(
            log.last_index_of_term(Term(1), LogIndex(5)),
            Some(LogIndex(2))
        );
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(5)), None);
    }

    #[test]
    fn batching_respects_bytes_but_sends_one() {
        let log = log_of(&[1, 1, 1, 1]);
        let one = entry(1, 1).size_bytes();
        assert_eq!(log.entries_for_send(LogIndex(1), 0).unwrap().len(), 1);
        assert_eq!(log.entries_for_send(LogIndex(1), 2 * one).unwrap().len(), 2);
        assert_eq!(log.entries_for_send(LogIndex(5), 99).unwrap().len(), 0);
    }

    #[test]
    fn a_batch_never_outgrows_the_frame_whatever_the_byte_limit() {
        // Two commands that each fit an AppendRequest, but not together.
        let half = rcraft_wire::APPEND_ENTRIES_BYTES_MAX as usize / 2;
        let command = |index: u64| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command {
                session: None,
                data: vec![0; half - 100],
            },
        };
        let log = RaftLog::recover(None, vec![command(1), command(2)], LogIndex(0)).unwrap();
        let batch = log.entries_for_send(LogIndex(1), u64::MAX).unwrap();
        assert_eq!(batch.len(), 1, "at most one entry fits a frame");
        let wire: u64 = batch.iter().map(Entry::wire_bytes_max).sum();
        assert!(wire <= rcraft_wire::APPEND_ENTRIES_BYTES_MAX);
    }

    #[test]
    fn compaction_keeps_retained_entries_and_terms() {
        let mut log = log_of(&[1, 1, 2, 2, 2]);
        log.commit_to(LogIndex(4));
        let meta = SnapshotMeta {
            index: LogIndex(4),
            term: Term(2),
            ..SnapshotMeta::default()
        };
        let through = log.compact(meta.clone(), 2);
        assert_eq!(through, LogIndex(2));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(1)), None);
        assert!(log.entries_for_send(LogIndex(2), 99).is_none());
        log.check_invariants();
        log.restore(SnapshotMeta {
            index: LogIndex(10),
            term: Term(3),
            ..meta
        });
        assert_eq!(log.last_index(), LogIndex(10));
        assert_eq!(log.committed_index(), LogIndex(10));
        log.check_invariants();
    }
}
