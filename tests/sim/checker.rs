//! Raft's safety properties, checked incrementally after every step of the simulation.
//!
//! Owned by one simulated world. It keeps the global knowledge no single node has: which node
//! led which term, every (index, term) ever written with its payload and predecessor term,
//! and every committed entry. Checks (Raft paper Figure 3):
//! - election safety: at most one leader per term;
//! - log matching: one payload and one predecessor term per (index, term), so equal
//!   (index, term) means equal logs up to there;
//! - leader completeness: a leader of term L holds every entry committed before L;
//! - committed entries never change, and every node applies exactly the committed sequence.

use crate::entry_log::EntryLog;
use rcraft::wire::{Entry, EntryPayload, LogIndex, NodeId, Term};
use std::collections::BTreeMap;

/// `Err` carries the checker's message.
pub(crate) type Verdict = Result<(), String>;

/// What is known of one (index, term) slot.
#[derive(Clone, Debug)]
struct SlotRecord {
    payload: EntryPayload,
    /// Term of the entry before it in the log that wrote it, when that log held it.
    prev_term: Option<Term>,
}

/// A committed entry and the earliest term at which some node knew it committed.
#[derive(Clone, Debug)]
struct CommittedRecord {
    entry: Entry,
    /// Upper bound of the term in which it was committed: every leader of a later term must
    /// hold it (leader completeness).
    known_in_term: Term,
}

/// The global safety checker of one world.
#[derive(Clone, Debug, Default)]
pub(crate) struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    slots: BTreeMap<(LogIndex, Term), SlotRecord>,
    committed: BTreeMap<LogIndex, CommittedRecord>,
    /// Index at which each client write was committed: a write commits at most once.
    write_index: BTreeMap<u64, LogIndex>,
}

impl Checker {
    /// A node's log now holds `entry`, preceded by an entry of `prev_term` (when known).
    pub(crate) fn observe_entry(
        &mut self,
        node: NodeId,
        entry: &Entry,
        prev_term: Option<Term>,
    ) -> Verdict {
        let key = (entry.index, entry.term);
        let Some(known) = self.slots.get_mut(&key) else {
            self.slots.insert(
                key,
                SlotRecord {
                    payload: entry.payload.clone(),
                    prev_term,
                },
            );
            return Ok(());
        };
        if known.payload != entry.payload {
            return Err(format!(
                "log matching: node {node} holds a different entry at index {} term {}",
                entry.index, entry.term
            ));
        }
        match (known.prev_term, prev_term) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "log matching: entry at index {} term {} follows term {a} in one log and \
                 term {b} in node {node}'s",
                entry.index, entry.term
            )),
            (None, Some(b)) => {
                known.prev_term = Some(b);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `node` is leader of `term` with this log. Election safety, and on the first sight of
    /// this leader, leader completeness against everything committed in earlier terms.
    pub(crate) fn observe_leader(&mut self, node: NodeId, term: Term, log: &EntryLog) -> Verdict {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "election safety: nodes {other} and {node} both lead term {term}"
            )),
            Some(_) => Ok(()),
            None => {
                for (index, record) in &self.committed {
                    if record.known_in_term < term {
                        holds_committed(node, term, log, *index, &record.entry)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// `node`, in `term`, knows `entry` is committed. It must not contradict an earlier
    /// commit, and every live leader of a later term must hold it.
    pub(crate) fn observe_commit<'a>(
        &mut self,
        node: NodeId,
        term: Term,
        entry: &Entry,
        live_leaders: impl Iterator<Item = (NodeId, Term, &'a EntryLog)>,
    ) -> Verdict {
        let record = self
            .committed
            .entry(entry.index)
            .or_insert_with(|| CommittedRecord {
                entry: entry.clone(),
                known_in_term: term,
            });
        if record.entry != *entry {
            return Err(format!(
                "committed entry changed: index {} was committed with term {} and node {node} \
                 now commits term {}",
                entry.index, record.entry.term, entry.term
            ));
        }
        record.known_in_term = record.known_in_term.min(term);
        let known_in_term = record.known_in_term;
        if let EntryPayload::Command { data, .. } = &entry.payload {
            let write_id = crate::state_machine::decode_write(data).unwrap_or(u64::MAX);
            let first = *self.write_index.entry(write_id).or_insert(entry.index);
            if first != entry.index {
                return Err(format!(
                    "write {write_id} is committed twice, at index {first} and at index {}",
                    entry.index
                ));
            }
        }
        for (leader, leader_term, log) in live_leaders {
            if leader_term > known_in_term {
                holds_committed(leader, leader_term, log, entry.index, entry)?;
            }
        }
        Ok(())
    }

    /// `node` applies `entry`: it must be the committed entry at that index.
    pub(crate) fn observe_apply(&mut self, node: NodeId, term: Term, entry: &Entry) -> Verdict {
        self.observe_commit(node, term, entry, std::iter::empty())
            .map_err(|e| format!("state machine safety: node {node} applies it: {e}"))
    }

    /// The write ids a state machine holds after applying exactly the committed entries
    /// through `index`, for checking a snapshot; `None` when some entry is unknown.
    pub(crate) fn committed_writes_through(&self, index: LogIndex) -> Option<Vec<u64>> {
        let mut writes = Vec::new();
        for i in 1..=index.0 {
            let record = self.committed.get(&LogIndex(i))?;
            if let EntryPayload::Command { data, .. } = &record.entry.payload {
                writes.push(crate::state_machine::decode_write(data)?);
            }
        }
        Some(writes)
    }

    /// The committed entry at `index`, when known.
    pub(crate) fn committed_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.committed.get(&index).map(|r| &r.entry)
    }

    /// Number of committed entries known.
    pub(crate) fn committed_count(&self) -> usize {
        self.committed.len()
    }
}

/// Leader completeness for one committed entry: the leader's log holds it, or a snapshot
/// the leader has covers its index.
fn holds_committed(
    leader: NodeId,
    term: Term,
    log: &EntryLog,
    index: LogIndex,
    committed: &Entry,
) -> Verdict {
    if index < log.base_index() {
        return Ok(());
    }
    match log.term_at(index) {
        Some(t) if t == committed.term => Ok(()),
        found => Err(format!(
            "leader completeness: node {leader} leads term {term} but holds {} at index \
             {index}, where term {} was committed",
            found.map_or("nothing".to_string(), |t| format!("term {t}")),
            committed.term
        )),
    }
}
