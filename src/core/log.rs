//! The replica's in-memory view of its log: where the compacted prefix ends, the term of
//! every index after it (as runs of equal terms), the membership entries, a bounded cache of
//! the newest entries, where the durable prefix ends, and the commit point.
//!
//! Owned by one `Replica`. The entries themselves live in storage; memory holds only a cache
//! of the newest ones, bounded by `CoreConfig::entry_cache_bytes` once they are durable and
//! handed to the state machine (`evict`). Everything the protocol decides by (terms for the
//! consistency check, conflict hints and votes; the configuration in force) is kept for every
//! index, in a few bytes per term or membership change. A leader that must send a follower
//! entries no longer cached asks storage for them (`StorageAction::ReadEntries`).
//!
//! Invariants (checked by `check_invariants` in tests and by cheap assertions on every
//! mutation):
//! - `terms` covers `(prev_index, last_index]`: its first run starts at `prev_index + 1` when
//!   the log is not empty, indexes and terms strictly increase along it, and the first term is
//!   at least `prev_term` (terms never decrease along the log, Raft paper §5.3);
//! - `cache[i].index == cache_first_index() + i`, the cache ends at `last_index`, starts after
//!   `prev_index`, and each cached entry's term is `term_at` its index; `cache_bytes` is the
//!   sum of their `cache_cost`;
//! - every entry not cached is durable and was handed to the state machine (`evict`);
//! - `memberships` lists every membership entry in `(prev_index, last_index]`, in order;
//! - `prev_index <= committed <= last_index` and `persisted <= last_index`;
//! - committed entries are never truncated (paper §5.4, Leader Completeness).

use super::error::{CoreError, Result};
use rcraft_wire::{
    APPEND_ENTRIES_BYTES_MAX, ConflictHint, Entry, EntryPayload, LogIndex, Membership,
    SnapshotMeta, Term,
};
use std::collections::VecDeque;

/// What the log can give a leader that wants to send a follower entries from some index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sendable {
    /// A batch from the cache (empty when the follower is up to date).
    Entries(Vec<Entry>),
    /// The entries from that index on are in storage only: read `[low, high]` from storage
    /// (`high` is the last index not cached).
    InStorage {
        /// The last index not held in the cache.
        high: LogIndex,
    },
    /// The index is compacted away: the follower needs a snapshot.
    Compacted,
}

/// In-memory log view of one replica.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// Latest snapshot, if any. Invariant: `prev_index <= snapshot.index` when present.
    snapshot: Option<SnapshotMeta>,
    /// Index of the entry just before the log (0 for an uncompacted log).
    prev_index: LogIndex,
    /// Term of the entry at `prev_index` (0 for index 0).
    prev_term: Term,
    /// Index of the last entry (`prev_index` when the log is empty).
    last_index: LogIndex,
    /// `(first index, term)` of every run of equal terms in `(prev_index, last_index]`.
    terms: Vec<(LogIndex, Term)>,
    /// Every membership entry in `(prev_index, last_index]`, in index order.
    memberships: Vec<(LogIndex, Membership)>,
    /// The newest entries, ending at `last_index`, in index order.
    cache: VecDeque<Entry>,
    /// Sum of `cache_cost` over `cache`.
    cache_bytes: u64,
    /// Highest index known durable on this node's disk. Invariant: `<= last_index`.
    persisted: LogIndex,
    /// Highest index known committed. Invariant: `prev_index <= committed <= last_index`.
    committed: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: an optional snapshot and the durable entries after it.
    /// Everything given is durable. Entries at or below the snapshot index (storage may keep
    /// some behind a snapshot for slow followers) are skipped. `commit_hint` is clamped to
    /// the log. Every entry starts cached; the state machine still has to be given them.
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
        let mut log = RaftLog {
            snapshot,
            prev_index,
            prev_term,
            last_index: prev_index,
            terms: Vec::new(),
            memberships: Vec::new(),
            cache: VecDeque::with_capacity(entries.len()),
            cache_bytes: 0,
            persisted: prev_index,
            committed: prev_index,
        };
        for entry in entries {
            if entry.index != log.last_index.next() {
                return Err(CoreError::RecoveredLog(format!(
                    "entry at index {} where {} was expected",
                    entry.index,
                    log.last_index.next()
                )));
            }
            if entry.term < log.last_term() {
                return Err(CoreError::RecoveredLog(format!(
                    "term {} at index {} after term {}",
                    entry.term,
                    entry.index,
                    log.last_term()
                )));
            }
            log.push(entry);
        }
        log.persisted = log.last_index;
        log.committed = commit_hint.clamp(prev_index, log.last_index);
        Ok(log)
    }

    /// Latest snapshot, if any.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// Index covered by the latest snapshot (0 without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map(|s| s.index).unwrap_or_default()
    }

    /// First index of the log (may be below the snapshot index when entries are retained).
    /// Its term is known; the entry itself may be in storage only.
    pub fn first_index(&self) -> LogIndex {
        self.prev_index.next()
    }

    /// First index held in the cache (`last_index() + 1` when the cache is empty).
    pub fn cache_first_index(&self) -> LogIndex {
        LogIndex(self.last_index.0 + 1 - self.cache.len() as u64)
    }

    /// What the cached entries cost (`cache_cost`), in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// Index of the last entry (or of the snapshot when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.terms.last().map_or(self.prev_term, |&(_, term)| term)
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
    /// beyond the end). Known for every index of the log, cached or not.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        self.run_of(index).map(|run| self.terms[run].1)
    }

    /// Position in `terms` of the run holding `index`, when `index` is in the log.
    fn run_of(&self, index: LogIndex) -> Option<usize> {
        if index <= self.prev_index || index > self.last_index {
            return None;
        }
        Some(self.terms.partition_point(|&(first, _)| first <= index) - 1)
    }

    /// The entry at `index`, when cached.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.cache_first_index();
        if index < first {
            return None;
        }
        self.cache.get((index.0 - first.0) as usize)
    }

    /// Cached entries in `[low, high]`, clamped to the cache.
    pub fn cached(
        &self,
        low: LogIndex,
        high: LogIndex,
    ) -> impl ExactSizeIterator<Item = &Entry> + Clone {
        let first = self.cache_first_index();
        let (low, high) = (low.max(first), high.min(self.last_index));
        let range = if low > high {
            0..0
        } else {
            (low.0 - first.0) as usize..(high.0 - first.0) as usize + 1
        };
        self.cache.range(range)
    }

    /// Every cached entry, in index order.
    pub fn cached_entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.cache.iter()
    }

    /// What to send a follower whose next index is `low`: a batch from the cache (see
    /// [`batch_len`]), or where the entries are when they are not cached.
    pub fn entries_for_send(&self, low: LogIndex, max_bytes: u64) -> Sendable {
        if low <= self.prev_index {
            return Sendable::Compacted;
        }
        let cache_first = self.cache_first_index();
        if low < cache_first {
            return Sendable::InStorage {
                high: cache_first.prev(),
            };
        }
        let batch = self.cached(low, self.last_index);
        let len = batch_len(batch.clone(), max_bytes);
        Sendable::Entries(batch.take(len).cloned().collect())
    }

    /// Total `size_bytes` of the cached entries in `[low, high]`.
    pub fn bytes_between(&self, low: LogIndex, high: LogIndex) -> u64 {
        self.cached(low, high).map(Entry::size_bytes).sum()
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
        self.push(entry);
    }

    /// Adds the next entry to the cache and the metadata.
    fn push(&mut self, entry: Entry) {
        if entry.term != self.last_term() || self.terms.is_empty() {
            self.terms.push((entry.index, entry.term));
        }
        if let EntryPayload::Membership(m) = &entry.payload {
            self.memberships.push((entry.index, m.clone()));
        }
        self.last_index = entry.index;
        self.cache_bytes += cache_cost(&entry);
        self.cache.push_back(entry);
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
        self.truncate_from(first.index);
        self.persisted = self.persisted.min(first.index.prev());
        for entry in entries {
            self.push(entry.clone());
        }
    }

    /// Drops `index` and everything after it (`index > prev_index`).
    fn truncate_from(&mut self, index: LogIndex) {
        let keep_cached = index.0.saturating_sub(self.cache_first_index().0) as usize;
        while self.cache.len() > keep_cached {
            let entry = self.cache.pop_back().expect("longer than keep_cached");
            self.cache_bytes -= cache_cost(&entry);
        }
        self.terms.retain(|&(first, _)| first < index);
        self.memberships.retain(|&(at, _)| at < index);
        self.last_index = index.prev();
    }

    /// Where our log disagrees with a leader that probed `probe_index` (paper §5.3, the
    /// "conflicting term and first index" optimisation).
    pub fn conflict_hint(&self, probe_index: LogIndex) -> ConflictHint {
        if probe_index == self.prev_index {
            // The compaction point itself: its term is known, nothing before it is.
            return ConflictHint {
                term: Some(self.prev_term),
                first_index: self.prev_index,
            };
        }
        match self.run_of(probe_index) {
            None if probe_index > self.last_index() => ConflictHint {
                term: None,
                first_index: self.last_index().next(),
            },
            None => ConflictHint {
                term: None,
                first_index: self.first_index(),
            },
            Some(run) => ConflictHint {
                term: Some(self.terms[run].1),
                first_index: self.terms[run].0,
            },
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
            // Skip the rest of this run: every index of it has the same term.
            let run = self.run_of(index).expect("index is in the log");
            index = self.terms[run].0.prev();
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

    /// Drops cached entries from the front while the cache holds more than `max_bytes`, but
    /// never an entry after `through`: the caller passes the highest index that is durable
    /// and handed to the state machine, so every entry it may still need stays. Returns the
    /// number of entries dropped.
    pub fn evict(&mut self, through: LogIndex, max_bytes: u64) -> usize {
        let mut dropped = 0;
        while self.cache_bytes > max_bytes {
            match self.cache.front() {
                Some(entry) if entry.index <= through && entry.index <= self.persisted => {
                    self.cache_bytes -= cache_cost(entry);
                    self.cache.pop_front();
                    dropped += 1;
                }
                _ => break,
            }
        }
        // A burst (a slow state machine, a restart's backlog) may have grown the ring far
        // beyond what it holds now: give the room back.
        if self.cache.capacity() > 4 * self.cache.len().max(1024) {
            self.cache.shrink_to(2 * self.cache.len().max(1024));
        }
        dropped
    }

    /// A local snapshot through `meta.index` exists: forget entries before
    /// `meta.index - retain_entries` (they stay readable in storage until it compacts them).
    /// Returns the new compaction point.
    pub fn compact(&mut self, meta: SnapshotMeta, retain_entries: u64) -> LogIndex {
        assert!(meta.index <= self.last_index(), "snapshot beyond the log");
        let through = LogIndex(meta.index.0.saturating_sub(retain_entries)).max(self.prev_index);
        let term = self.term_at(through).expect("compaction point is held");
        while self.cache.front().is_some_and(|e| e.index <= through) {
            let entry = self.cache.pop_front().expect("checked non-empty");
            self.cache_bytes -= cache_cost(&entry);
        }
        // The run holding `through + 1` may start at or before `through`: it now starts
        // right after it.
        let first_kept = self.terms.partition_point(|&(first, _)| first <= through);
        let start = match first_kept.checked_sub(1) {
            Some(run) if through < self.last_index && self.run_end(run) > through => {
                self.terms[run].0 = through.next();
                run
            }
            _ => first_kept,
        };
        self.terms.drain(..start);
        self.memberships.retain(|&(at, _)| at > through);
        self.prev_index = through;
        self.prev_term = term;
        self.snapshot = Some(meta);
        through
    }

    /// Last index of the run at `run`.
    fn run_end(&self, run: usize) -> LogIndex {
        self.terms
            .get(run + 1)
            .map_or(self.last_index, |&(next, _)| next.prev())
    }

    /// Replaces the whole log by an installed snapshot (a follower that fell behind).
    pub fn restore(&mut self, meta: SnapshotMeta) {
        self.prev_index = meta.index;
        self.prev_term = meta.term;
        self.last_index = meta.index;
        self.terms.clear();
        self.memberships.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.persisted = meta.index;
        self.committed = meta.index;
        self.snapshot = Some(meta);
    }

    /// The configuration in force: the last membership entry of the log, else the snapshot's,
    /// else `None`. Returns the index it was appended at too.
    pub fn last_membership(&self) -> Option<(LogIndex, &Membership)> {
        let snapshot_index = self.snapshot_index();
        let in_log = self.memberships.last().map(|(index, m)| (*index, m));
        match (in_log, self.snapshot.as_ref()) {
            (Some((index, m)), _) if index > snapshot_index => Some((index, m)),
            (_, Some(s)) => Some((s.index, &s.membership)),
            (found, None) => found,
        }
    }

    /// The membership entries after the snapshot at or after `from`: (index, configuration).
    pub fn memberships_from(
        &self,
        from: LogIndex,
    ) -> impl Iterator<Item = (LogIndex, &Membership)> + '_ {
        (self.memberships.iter())
            .filter(move |(at, _)| *at >= from)
            .map(|(at, m)| (*at, m))
    }

    /// Index of the last joint configuration entry after the snapshot, if any.
    pub fn last_joint_index(&self) -> Option<LogIndex> {
        let snapshot_index = self.snapshot_index();
        (self.memberships.iter().rev())
            .find(|(at, m)| *at > snapshot_index && m.is_joint())
            .map(|(at, _)| *at)
    }

    /// The configuration in force at `index` (the last membership entry at or before it,
    /// else the snapshot's, else `initial` for a log that never had one), when `index` is not
    /// before what the view can tell.
    pub fn membership_at(&self, index: LogIndex, initial: &Membership) -> Option<Membership> {
        if index > self.last_index() || index < self.prev_index {
            return None;
        }
        let snapshot_index = self.snapshot_index();
        let in_log = (self.memberships.iter().rev())
            .find(|&&(at, _)| at <= index && at > snapshot_index)
            .map(|(_, m)| m);
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
        let mut next = self.prev_index.next();
        for (i, &(first, run_term)) in self.terms.iter().enumerate() {
            if i == 0 {
                assert_eq!(first, next, "the first term run starts the log");
                assert!(run_term >= term);
            } else {
                assert!(first >= next && run_term > term, "term runs increase");
            }
            assert!(first <= self.last_index);
            term = run_term;
            next = first.next();
        }
        assert_eq!(self.terms.is_empty(), self.last_index == self.prev_index);
        let first = self.cache_first_index();
        assert!(
            first > self.prev_index,
            "the cache starts after the log's start"
        );
        let mut bytes = 0;
        for (i, e) in self.cache.iter().enumerate() {
            assert_eq!(e.index.0, first.0 + i as u64);
            assert_eq!(self.term_at(e.index), Some(e.term));
            bytes += cache_cost(e);
        }
        assert_eq!(bytes, self.cache_bytes);
        assert!(
            first.prev() <= self.persisted,
            "only durable entries leave the cache"
        );
        let mut at = self.prev_index;
        for (index, _) in &self.memberships {
            assert!(*index > at && *index <= self.last_index);
            at = *index;
        }
        assert!(self.prev_index <= self.committed && self.committed <= self.last_index());
        assert!(self.persisted <= self.last_index());
    }
}

/// What an entry costs the cache: its `size_bytes` plus the `Entry` value itself, so that
/// many small entries (no-ops, tiny commands) are not undercounted.
pub fn cache_cost(entry: &Entry) -> u64 {
    entry.size_bytes() + std::mem::size_of::<Entry>() as u64
}

/// How many of `entries` (in index order) go in one AppendRequest: at least one (when any
/// exist), then more while their `size_bytes` total stays within `max_bytes` and their
/// `wire_bytes_max` within `APPEND_ENTRIES_BYTES_MAX`, so a batch of entries that each fit a
/// frame fits one too, whatever `max_bytes` is configured to.
pub fn batch_len<'a>(entries: impl IntoIterator<Item = &'a Entry>, max_bytes: u64) -> usize {
    let (mut count, mut bytes, mut wire_bytes) = (0, 0, 0);
    for entry in entries {
        let (size, wire) = (entry.size_bytes(), entry.wire_bytes_max());
        let over = bytes + size > max_bytes || wire_bytes + wire > APPEND_ENTRIES_BYTES_MAX;
        if count > 0 && over {
            break;
        }
        count += 1;
        bytes += size;
        wire_bytes += wire;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry::new(Term(term), LogIndex(index), EntryPayload::Noop)
    }

    fn sent(log: &RaftLog, low: u64, max_bytes: u64) -> Vec<Entry> {
        match log.entries_for_send(LogIndex(low), max_bytes) {
            Sendable::Entries(batch) => batch,
            other => panic!("expected cached entries from {low}, got {other:?}"),
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
        assert_eq!(sent(&log, 1, 0).len(), 1);
        assert_eq!(sent(&log, 1, 2 * one).len(), 2);
        assert_eq!(sent(&log, 5, 99).len(), 0);
    }

    #[test]
    fn a_batch_never_outgrows_the_frame_whatever_the_byte_limit() {
        // Two commands that each fit an AppendRequest, but not together.
        let half = rcraft_wire::APPEND_ENTRIES_BYTES_MAX as usize / 2;
        let command = |index: u64| {
            Entry::new(
                Term(1),
                LogIndex(index),
                EntryPayload::Command {
                    session: None,
                    data: vec![0; half - 100].into(),
                },
            )
        };
        let log = RaftLog::recover(None, vec![command(1), command(2)], LogIndex(0)).unwrap();
        let batch = sent(&log, 1, u64::MAX);
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
        assert_eq!(log.entries_for_send(LogIndex(2), 99), Sendable::Compacted);
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

    fn command(index: u64, term: u64, bytes: usize) -> Entry {
        Entry::new(
            Term(term),
            LogIndex(index),
            EntryPayload::Command {
                session: None,
                data: vec![7; bytes].into(),
            },
        )
    }

    #[test]
    fn the_cache_stays_within_its_bytes_once_entries_are_durable_and_applied() {
        let mut log = log_of(&[]);
        let max_bytes = 10 * cache_cost(&command(1, 1, 100));
        for index in 1..=1_000 {
            log.append(command(index, 1 + index / 300, 100));
            log.mark_persisted(LogIndex(index), Term(1 + index / 300));
            log.commit_to(LogIndex(index));
            log.evict(LogIndex(index), max_bytes);
            assert!(
                log.cache_bytes() <= max_bytes,
                "cache grew to {}",
                log.cache_bytes()
            );
        }
        assert_eq!(log.cached_entries().len(), 10);
        assert_eq!(log.cache_first_index(), LogIndex(991));
        // Terms stay known for every index, cached or not.
        assert_eq!(log.term_at(LogIndex(1)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(299)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(300)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(900)), Some(Term(4)));
        assert_eq!(log.term_at(LogIndex(1_000)), Some(Term(4)));
        assert_eq!(
            log.entries_for_send(LogIndex(500), 1 << 20),
            Sendable::InStorage {
                high: LogIndex(990)
            }
        );
        assert_eq!(sent(&log, 991, 1 << 20).len(), 10);
        log.check_invariants();
    }

    #[test]
    fn eviction_keeps_what_is_not_durable_or_not_applied() {
        let mut log = log_of(&[]);
        for index in 1..=10 {
            log.append(command(index, 1, 100));
        }
        log.mark_persisted(LogIndex(6), Term(1));
        assert_eq!(log.evict(LogIndex(8), 0), 6, "only durable entries leave");
        assert_eq!(log.cache_first_index(), LogIndex(7));
        log.mark_persisted(LogIndex(10), Term(1));
        assert_eq!(
            log.evict(LogIndex(8), 0),
            2,
            "only entries handed to apply leave"
        );
        assert_eq!(log.cache_first_index(), LogIndex(9));
        log.check_invariants();
    }

    #[test]
    fn conflicts_and_hints_work_beyond_the_cache() {
        let mut log = log_of(&[1, 1, 2, 2, 3, 3, 3]);
        log.mark_persisted(LogIndex(7), Term(3));
        log.commit_to(LogIndex(3));
        log.evict(LogIndex(3), 0);
        assert_eq!(log.cache_first_index(), LogIndex(4));
        // A leader's entries that match what was evicted are no conflict.
        assert_eq!(log.find_conflict(&[entry(2, 1), entry(3, 2)]), None);
        let hint = log.conflict_hint(LogIndex(4));
        assert_eq!((hint.term, hint.first_index), (Some(Term(2)), LogIndex(3)));
        assert_eq!(
            log.last_index_of_term(Term(1), LogIndex(7)),
            Some(LogIndex(2))
        );
        assert_eq!(
            log.find_conflict(&[entry(4, 2), entry(5, 4)]),
            Some(LogIndex(5))
        );
        log.truncate_and_append(&[entry(5, 4)]);
        assert_eq!(log.last_index(), LogIndex(5));
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(4)));
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(2)));
        assert_eq!(log.persisted_index(), LogIndex(4));
        log.check_invariants();
    }

    #[test]
    fn compaction_splits_a_term_run_and_drops_memberships_behind_it() {
        let mut log = log_of(&[1, 2, 2, 2, 3]);
        let membership = Membership::with_voters([rcraft_wire::NodeId(1)]);
        log.append(Entry::new(
            Term(3),
            LogIndex(6),
            EntryPayload::Membership(membership.clone()),
        ));
        log.commit_to(LogIndex(6));
        let meta = SnapshotMeta {
            index: LogIndex(3),
            term: Term(2),
            ..SnapshotMeta::default()
        };
        assert_eq!(log.compact(meta, 0), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(2)), None);
        let hint = log.conflict_hint(LogIndex(4));
        assert_eq!((hint.term, hint.first_index), (Some(Term(2)), LogIndex(4)));
        assert_eq!(log.last_membership(), Some((LogIndex(6), &membership)));
        log.check_invariants();
    }
}
