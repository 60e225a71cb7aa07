//! Membership changes (thesis §4): configurations take effect when appended; one voter at a
//! time (or any learner change) is a single step, larger voter changes, and any voter change
//! from a configuration of two voters, go through a joint configuration (§4.3) that the
//! leader leaves automatically once the joint entry commits.
//!
//! Runs on the replica's owner thread. Invariants: at most one membership entry is
//! uncommitted at any time; the leader's progress map always covers exactly the members of
//! the configuration in force (minus itself).

use super::api::{Action, ProposeError, RequestId};
use super::progress::Progress;
use super::replica::{Phase, Replica};
use rcraft_wire::{EntryPayload, LogIndex, Membership, Term};

impl Replica {
    /// Recomputes the configuration in force from the log (after appends, truncations and
    /// snapshot installs) and keeps the leader's progress map in step with it.
    pub(super) fn refresh_membership(&mut self) {
        let (index, membership) = match self.log.last_membership() {
            Some((index, m)) => (index, m.clone()),
            None => (LogIndex(0), self.initial_membership.clone()),
        };
        self.membership = membership;
        // Read while the entry (or the snapshot point) is held: compaction may drop it later
        // (it cannot change then: compacted entries are committed), and the index alone does
        // not tell entries of two leaders apart.
        match self.log.term_at(index) {
            Some(term) => self.membership_term = term,
            None if index != self.membership_index => self.membership_term = Term(0),
            None => {}
        }
        self.membership_index = index;
        let next = self.log.last_index().next();
        let members = self.membership.members();
        let me = self.id;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        state.progress.retain(|id, _| members.contains(id));
        for id in members.into_iter().filter(|id| *id != me) {
            state
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
        if let Some((target, _)) = state.transfer {
            if !self.membership.is_voter(target) {
                state.transfer = None;
            }
        }
    }

    /// `Input::ProposeMembership`.
    pub(super) fn on_propose_membership(&mut self, id: RequestId, target: Membership) {
        let membership = match self.membership_change_entry(target) {
            Ok(membership) => membership,
            Err(error) => {
                self.actions.push(Action::ProposeRejected { id, error });
                return;
            }
        };
        let entry = |term, index| {
            rcraft_wire::Entry::new(term, index, EntryPayload::Membership(membership))
        };
        match self.append_proposal(entry) {
            Ok((term, index)) => self.actions.push(Action::Proposed { id, term, index }),
            Err(error) => self.actions.push(Action::ProposeRejected { id, error }),
        }
    }

    /// The configuration to append for a change to `target`: `target` itself when at most one
    /// voter changes, else the joint configuration (new voters, old voters outgoing).
    fn membership_change_entry(&self, target: Membership) -> Result<Membership, ProposeError> {
        let reject = |why: &str| Err(ProposeError::Rejected(why.to_string()));
        if self.phase != Phase::Leader {
            return Err(self.not_leader());
        }
        if self.membership_index > self.log.committed_index() {
            return reject("a membership change is still in progress");
        }
        if self.log.term_at(self.log.committed_index()) != Some(self.term) {
            // Ongaro's single-server-change fix (raft-dev, 2015): a new leader commits an entry
            // of its own term first, so an uncommitted change of a deposed leader cannot
            // overlap with ours and yield two disjoint majorities.
            return reject("the leader has not committed an entry of its term yet");
        }
        if self.membership.is_joint() {
            return reject("the joint configuration has not been left yet");
        }
        if target.is_joint() {
            return reject("propose the target configuration, not a joint one");
        }
        if target.voters.is_empty() {
            return reject("a configuration needs at least one voter");
        }
        if target
            .voters
            .intersection(&target.learners)
            .next()
            .is_some()
        {
            return reject("a node cannot be both voter and learner");
        }
        let changed = target
            .voters
            .symmetric_difference(&self.membership.voters)
            .count();
        // From two voters even one voter's change goes through a joint configuration, whose
        // outgoing half is the pair: nothing after it commits without both of them. So a
        // node of the pair that lost the tail of its log learns from the other alone that
        // the lost entries were never committed (repair.rs; docs/SIM_FINDINGS.md, finding
        // 10). One step, `{A, B}` to `{A}`, would let A commit alone entries B never saw.
        let single_step = changed == 0 || (changed == 1 && self.membership.voters.len() != 2);
        if single_step {
            return Ok(target);
        }
        Ok(Membership {
            voters: target.voters,
            voters_outgoing: self.membership.voters.clone(),
            learners: target.learners,
        })
    }

    /// Leader: once a joint configuration is committed, append the final one (thesis §4.3).
    pub(super) fn maybe_finish_membership_change(&mut self) {
        let committed = self.log.committed_index();
        if self.phase != Phase::Leader
            || !self.membership.is_joint()
            || self.membership_index > committed
        {
            return;
        }
        let target = Membership {
            voters: self.membership.voters.clone(),
            voters_outgoing: Default::default(),
            learners: self.membership.learners.clone(),
        };
        let entry = rcraft_wire::Entry::new(
            self.term,
            self.log.last_index().next(),
            EntryPayload::Membership(target),
        );
        self.append_as_leader(entry);
        self.broadcast_append(false);
    }
}
