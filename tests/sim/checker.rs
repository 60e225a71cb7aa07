//! Raft's safety properties, checked incrementally after every step of the simulation.
//!
//! Owned by one simulated world. It keeps the global knowledge no single node has: which node
//! led which term, every (index, term) ever written with its payload and predecessor term,
//! and every committed entry. Checks (Raft paper Figure 3):
//! - election safety: at most one leader per term;
//! - one vote per node and term: a node never grants votes to two candidates in one term,
//!   across its restarts and whatever its disk lost (the simulated disk checks the same of
//!   the votes that became durable);
//! - log matching: one payload and one predecessor term per (index, term), so equal
//!   (index, term) means equal logs up to there;
//! - leader completeness: a leader of term L holds every entry committed before L;
//! - committed entries never change, and every node applies exactly the committed sequence;
//!
//! and for membership changes (thesis §4):
//! - a leader was elected by a quorum of the configuration it uses (both halves when joint),
//!   counting the votes nodes cast (persist actions that save a vote);
//! - a node becomes leader only as a voter of its latest configuration (or, while that
//!   configuration is uncommitted, as a voter of the one before it, thesis §4.2.2); so
//!   never as a learner or an outsider of a committed configuration;
//! - a leader's log holds at most one configuration entry beyond what is known committed;
//! - a snapshot carries the configuration the committed log has in force at its index.

use crate::entry_log::EntryLog;
use rcraft::wire::{Entry, EntryPayload, LogIndex, Membership, NodeId, Term};
use std::collections::BTreeMap;
use std::collections::BTreeSet;

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
    /// The vote each node last cast in each term (as its persist actions save it; one that
    /// never became durable may be followed by another after a crash).
    votes_cast: BTreeMap<(Term, NodeId), NodeId>,
    /// The vote each node granted in each term (as its real `VoteResponse`s say).
    votes_granted: BTreeMap<(Term, NodeId), NodeId>,
    /// Committed membership entries, by index.
    committed_memberships: BTreeMap<LogIndex, Membership>,
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

    /// `voter` saves a vote for `candidate` in `term`.
    pub(crate) fn observe_vote_cast(&mut self, voter: NodeId, term: Term, candidate: NodeId) {
        self.votes_cast.insert((term, voter), candidate);
    }

    /// The voters that granted `candidate` a vote in `term`.
    pub(crate) fn granted_to(&self, candidate: NodeId, term: Term) -> Vec<NodeId> {
        (self
            .votes_granted
            .range((term, NodeId(0))..=(term, NodeId(u64::MAX))))
        .filter(|&(_, &c)| c == candidate)
        .map(|(&(_, voter), _)| voter)
        .collect()
    }

    /// `voter` sends `candidate` a granted vote of `term`: never to another than one it
    /// granted that term before.
    pub(crate) fn observe_vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Verdict {
        match self.votes_granted.insert((term, voter), candidate) {
            Some(earlier) if earlier != candidate => Err(format!(
                "one vote per term: node {voter} granted its vote in term {term} to {earlier}, \
                 then to {candidate}"
            )),
            _ => Ok(()),
        }
    }

    /// `node` just became leader of `term`, using configuration `membership` (as its status
    /// reports it), with `log` (its in-memory log) and commit index `commit`. Checks that
    /// `membership` is its latest configuration, that it may lead under it, and that a quorum
    /// of it voted for `node`.
    pub(crate) fn observe_election(
        &self,
        node: NodeId,
        term: Term,
        membership: &Membership,
        log: &EntryLog,
        commit: LogIndex,
    ) -> Verdict {
        let (at, latest) = log.latest_membership();
        if !latest.is_voter(node) {
            let previous_voted =
                at > log.base_index() && log.membership_through(at.prev()).1.is_voter(node);
            if at <= commit || !previous_voted {
                return Err(format!(
                    "leader eligibility: node {node} leads term {term} but does not vote in \
                     its latest configuration {latest:?} (index {at}, commit {commit}), nor \
                     in the one before it while that is uncommitted"
                ));
            }
        }
        let halves = [&membership.voters, &membership.voters_outgoing];
        for half in halves.into_iter().filter(|h| !h.is_empty()) {
            let granted: BTreeSet<NodeId> = half
                .iter()
                .copied()
                .filter(|v| self.votes_cast.get(&(term, *v)) == Some(&node))
                .collect();
            if granted.len() <= half.len() / 2 {
                return Err(format!(
                    "election quorum: node {node} leads term {term} with configuration \
                     {membership:?}, but only {granted:?} of voters {half:?} voted for it"
                ));
            }
        }
        Ok(())
    }

    /// Leader `node`'s log (from `from` on) holds at most one membership entry beyond the
    /// highest index known committed: a change is proposed only once the previous one
    /// committed.
    pub(crate) fn check_one_uncommitted_change(
        &self,
        node: NodeId,
        term: Term,
        log: &EntryLog,
    ) -> Verdict {
        let committed = self
            .committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex(0));
        let uncommitted: Vec<LogIndex> = log
            .entries()
            .iter()
            .rev()
            .take_while(|e| e.index > committed)
            .filter(|e| matches!(e.payload, EntryPayload::Membership(_)))
            .map(|e| e.index)
            .collect();
        if uncommitted.len() > 1 {
            return Err(format!(
                "one change at a time: leader {node} of term {term} holds membership entries at \
                 {uncommitted:?}, beyond index {committed}, the highest known committed"
            ));
        }
        Ok(())
    }

    /// The configuration the committed log has in force at `index` (`None` before the first
    /// membership entry: the initial configuration).
    pub(crate) fn committed_membership_through(&self, index: LogIndex) -> Option<&Membership> {
        self.committed_memberships
            .range(..=index)
            .next_back()
            .map(|(_, m)| m)
    }

    /// Where the configuration the committed log has in force at `index` comes from: the
    /// (index, term) of its membership entry, `(0, 0)` for the initial one; `None` when that
    /// entry's term is unknown.
    pub(crate) fn committed_membership_entry_through(
        &self,
        index: LogIndex,
    ) -> Option<(LogIndex, Term)> {
        match self.committed_memberships.range(..=index).next_back() {
            None => Some((LogIndex(0), Term(0))),
            Some((at, _)) => self.committed_entry(*at).map(|e| (*at, e.term)),
        }
    }

    /// The latest committed configuration (`None`: the initial one).
    pub(crate) fn latest_committed_membership(&self) -> Option<&Membership> {
        self.committed_memberships.values().next_back()
    }

    /// Number of committed membership entries.
    pub(crate) fn committed_membership_changes(&self) -> u64 {
        self.committed_memberships.len() as u64
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
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.committed_memberships
                .insert(entry.index, membership.clone());
        }
        // A write without a session is sent once, so the log holds it once. A retried write
        // (same session and sequence) may be committed again; the session table must keep
        // it from taking effect twice, which the state machine checks.
        if let EntryPayload::Command {
            data,
            session: None,
        } = &entry.payload
        {
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

    /// The state machine (write ids and session table) after applying exactly the committed
    /// entries through `index` (through the session table, as a replica does), for checking a
    /// snapshot; `None` when some entry is unknown.
    pub(crate) fn committed_state_through(
        &self,
        index: LogIndex,
        initial: &rcraft::wire::Membership,
        sessions_max: usize,
    ) -> Option<crate::state_machine::AppendList> {
        let mut model = crate::state_machine::AppendList::new(initial, sessions_max);
        for i in 1..=index.0 {
            let record = self.committed.get(&LogIndex(i))?;
            model.apply(&record.entry).ok()?;
        }
        Some(model)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft::wire::Session;

    fn noop(index: u64, term: u64) -> Entry {
        Entry::new(Term(term), LogIndex(index), EntryPayload::Noop)
    }

    fn write(index: u64, term: u64, write_id: u64, session: Option<Session>) -> Entry {
        let data = crate::state_machine::encode_write(write_id, 0);
        let payload = EntryPayload::Command {
            session,
            data: data.into(),
        };
        Entry::new(Term(term), LogIndex(index), payload)
    }

    fn config(index: u64, term: u64, membership: Membership) -> Entry {
        Entry::new(
            Term(term),
            LogIndex(index),
            EntryPayload::Membership(membership),
        )
    }

    fn voters(ids: &[u64]) -> Membership {
        Membership::with_voters(ids.iter().map(|&id| NodeId(id)))
    }

    /// A log from the start of a cluster of voters 0, 1 and 2, holding `entries`.
    fn log(entries: Vec<Entry>) -> EntryLog {
        EntryLog::from_parts(LogIndex(0), Term(0), voters(&[0, 1, 2]), entries).unwrap()
    }

    /// Two entries of one (index, term) with different payloads, or after different terms,
    /// are rejected (log matching); the same entry seen again is not.
    #[test]
    fn two_entries_of_one_index_and_term_are_rejected() {
        let mut checker = Checker::default();
        let (a, b) = (NodeId(0), NodeId(1));
        assert!(checker.observe_entry(a, &noop(2, 3), Some(Term(1))).is_ok());
        assert!(checker.observe_entry(b, &noop(2, 3), Some(Term(1))).is_ok());
        assert!(checker.observe_entry(b, &noop(2, 3), None).is_ok());
        let other = write(2, 3, 7, None);
        let err = checker.observe_entry(b, &other, Some(Term(1))).unwrap_err();
        assert!(err.starts_with("log matching"), "{err}");
        let err = checker
            .observe_entry(b, &noop(2, 3), Some(Term(2)))
            .unwrap_err();
        assert!(
            err.contains("follows term 1 in one log and term 2"),
            "{err}"
        );
    }

    /// Two leaders of one term are rejected (election safety); the same leader seen again,
    /// or another one in another term, is not.
    #[test]
    fn two_leaders_of_one_term_are_rejected() {
        let mut checker = Checker::default();
        let empty = log(Vec::new());
        assert!(checker.observe_leader(NodeId(0), Term(2), &empty).is_ok());
        assert!(checker.observe_leader(NodeId(0), Term(2), &empty).is_ok());
        assert!(checker.observe_leader(NodeId(1), Term(3), &empty).is_ok());
        let err = checker
            .observe_leader(NodeId(1), Term(2), &empty)
            .unwrap_err();
        assert_eq!(err, "election safety: nodes 0 and 1 both lead term 2");
    }

    /// A leader of a later term without an entry committed before it is rejected (leader
    /// completeness), both when it appears and when a commit it lacks becomes known while it
    /// leads; a log that holds the entry, or a snapshot past it, is not.
    #[test]
    fn a_leader_without_a_committed_entry_is_rejected() {
        let mut checker = Checker::default();
        let committed = noop(1, 1);
        let none = std::iter::empty();
        assert!(
            checker
                .observe_commit(NodeId(0), Term(1), &committed, none)
                .is_ok()
        );
        let holding = log(vec![committed.clone(), noop(2, 2)]);
        assert!(checker.observe_leader(NodeId(1), Term(2), &holding).is_ok());
        let compacted =
            EntryLog::from_parts(LogIndex(2), Term(2), voters(&[0, 1, 2]), Vec::new()).unwrap();
        assert!(
            checker
                .observe_leader(NodeId(2), Term(3), &compacted)
                .is_ok()
        );
        let other = log(vec![noop(1, 3)]);
        let err = checker
            .observe_leader(NodeId(2), Term(4), &other)
            .unwrap_err();
        assert!(
            err.starts_with("leader completeness: node 2 leads term 4"),
            "{err}"
        );
        // A leader of term 5 seen before the commit of index 2 (term 2) became known.
        let mut checker = Checker::default();
        let stale = log(vec![noop(1, 1)]);
        assert!(checker.observe_leader(NodeId(1), Term(5), &stale).is_ok());
        let leaders = [(NodeId(1), Term(5), &stale)];
        let err = checker
            .observe_commit(NodeId(0), Term(2), &noop(2, 2), leaders.into_iter())
            .unwrap_err();
        assert!(
            err.starts_with("leader completeness: node 1 leads term 5"),
            "{err}"
        );
    }

    /// A commit that contradicts an earlier one, a write without a session committed at
    /// two indexes, and a node applying anything but the committed entry are rejected; a
    /// retried write of a session committed twice is not (the session table dedups it).
    #[test]
    fn a_changed_commit_and_a_write_committed_twice_are_rejected() {
        let mut checker = Checker::default();
        let none = || std::iter::empty();
        assert!(
            checker
                .observe_commit(NodeId(0), Term(1), &noop(1, 1), none())
                .is_ok()
        );
        assert!(
            checker
                .observe_commit(NodeId(1), Term(2), &noop(1, 1), none())
                .is_ok()
        );
        let err = checker
            .observe_commit(NodeId(1), Term(2), &noop(1, 2), none())
            .unwrap_err();
        assert!(err.starts_with("committed entry changed: index 1"), "{err}");
        let err = checker
            .observe_apply(NodeId(2), Term(2), &write(1, 1, 9, None))
            .unwrap_err();
        assert!(err.starts_with("state machine safety: node 2"), "{err}");
        assert!(
            checker
                .observe_apply(NodeId(2), Term(2), &noop(1, 1))
                .is_ok()
        );

        let session = Some(Session {
            client_id: 1,
            sequence: 1,
        });
        let retried = [write(2, 1, 5, session), write(3, 1, 5, session)];
        for entry in &retried {
            assert!(
                checker
                    .observe_commit(NodeId(0), Term(1), entry, none())
                    .is_ok()
            );
        }
        let once = write(4, 1, 6, None);
        assert!(
            checker
                .observe_commit(NodeId(0), Term(1), &once, none())
                .is_ok()
        );
        let twice = write(5, 1, 6, None);
        let err = checker
            .observe_commit(NodeId(0), Term(1), &twice, none())
            .unwrap_err();
        assert_eq!(err, "write 6 is committed twice, at index 4 and at index 5");
    }

    /// A leader that a quorum of its configuration did not vote for (of either half of a
    /// joint one) is rejected, and so is one that is no voter of its latest committed
    /// configuration; a leader with a quorum of votes is not.
    #[test]
    fn a_leader_without_a_quorum_or_outside_its_configuration_is_rejected() {
        let mut checker = Checker::default();
        let term = Term(2);
        let empty = log(Vec::new());
        checker.observe_vote_cast(NodeId(0), term, NodeId(0));
        let three = voters(&[0, 1, 2]);
        let err = checker
            .observe_election(NodeId(0), term, &three, &empty, LogIndex(0))
            .unwrap_err();
        assert!(
            err.starts_with("election quorum: node 0 leads term 2"),
            "{err}"
        );
        checker.observe_vote_cast(NodeId(1), term, NodeId(0));
        assert!(
            checker
                .observe_election(NodeId(0), term, &three, &empty, LogIndex(0))
                .is_ok()
        );
        // Joint {0, 1, 2} -> {0, 3, 4}: the votes of 0 and 1 are a quorum of the old half only.
        let joint = Membership {
            voters: [0, 3, 4].into_iter().map(NodeId).collect(),
            voters_outgoing: [0, 1, 2].into_iter().map(NodeId).collect(),
            ..Membership::default()
        };
        let joint_log = log(vec![config(1, 1, joint.clone())]);
        let err = checker
            .observe_election(NodeId(0), term, &joint, &joint_log, LogIndex(0))
            .unwrap_err();
        assert!(err.starts_with("election quorum"), "{err}");
        checker.observe_vote_cast(NodeId(3), term, NodeId(0));
        assert!(
            checker
                .observe_election(NodeId(0), term, &joint, &joint_log, LogIndex(0))
                .is_ok()
        );
        // Node 1 was removed by a committed configuration: it may not lead, votes or not.
        let removed = log(vec![config(1, 1, voters(&[0, 2, 3]))]);
        for voter in [0, 2, 3] {
            checker.observe_vote_cast(NodeId(voter), Term(3), NodeId(1));
        }
        let now = voters(&[0, 2, 3]);
        let err = checker
            .observe_election(NodeId(1), Term(3), &now, &removed, LogIndex(1))
            .unwrap_err();
        assert!(
            err.starts_with("leader eligibility: node 1 leads term 3"),
            "{err}"
        );
        // While that removal is uncommitted, node 1 still votes in the configuration before.
        assert!(
            checker
                .observe_election(NodeId(1), Term(3), &now, &removed, LogIndex(0))
                .is_ok()
        );
    }

    /// A leader's log with two membership entries beyond the highest committed index is
    /// rejected; one is not.
    #[test]
    fn two_uncommitted_configuration_changes_are_rejected() {
        let mut checker = Checker::default();
        let none = std::iter::empty();
        assert!(
            checker
                .observe_commit(NodeId(0), Term(1), &noop(1, 1), none)
                .is_ok()
        );
        let one = log(vec![noop(1, 1), config(2, 1, voters(&[0, 1, 2, 3]))]);
        assert!(
            checker
                .check_one_uncommitted_change(NodeId(0), Term(1), &one)
                .is_ok()
        );
        let mut entries = one.entries().to_vec();
        entries.push(config(3, 1, voters(&[0, 1, 2, 3, 4])));
        let two = log(entries);
        let err = checker
            .check_one_uncommitted_change(NodeId(0), Term(1), &two)
            .unwrap_err();
        assert!(
            err.starts_with("one change at a time: leader 0 of term 1"),
            "{err}"
        );
    }

    /// A history in which a node grants its vote to two candidates in one term (as a node
    /// that forgot its vote after its hard state was damaged would) is rejected; the same
    /// grant again, or grants in other terms or by other nodes, are not.
    #[test]
    fn two_votes_by_one_node_in_one_term_are_rejected() {
        let mut checker = Checker::default();
        let (a, b, c) = (NodeId(0), NodeId(1), NodeId(2));
        assert!(checker.observe_vote_granted(a, Term(3), b).is_ok());
        assert!(checker.observe_vote_granted(a, Term(3), b).is_ok());
        assert!(checker.observe_vote_granted(a, Term(4), c).is_ok());
        assert!(checker.observe_vote_granted(c, Term(3), c).is_ok());
        let err = checker.observe_vote_granted(a, Term(3), c).unwrap_err();
        assert_eq!(
            err,
            "one vote per term: node 0 granted its vote in term 3 to 1, then to 2"
        );
    }
}
