//! Leader election: randomized timeouts, Pre-Vote (thesis §9.6), real elections (paper §5.2),
//! the up-to-date vote restriction (paper §5.4.1) and the role transitions.
//!
//! Runs on the replica's owner thread. Invariants: a node votes at most once per term, and
//! only after that vote is durable does the grant leave (see `replica.rs`); a pre-vote never
//! changes term or vote.

use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::read_index::ReadQueue;
use super::replica::{LeaderState, Phase, Replica};
use rcraft_wire::{Entry, EntryPayload, LogIndex, MessageBody, NodeId, Term};
use std::collections::BTreeMap;

impl Replica {
    /// Follower or candidate tick: campaign when the election timer expires. A node that may
    /// not campaign (a learner, a node outside the configuration) lets its timer run on, so
    /// the lease of a leader it no longer hears from lapses and it answers vote requests
    /// (sim seed 696: restarting the timer kept a dead leader's lease alive, and a joint
    /// configuration could not elect a leader without that node's vote).
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.election_timeout_ticks && self.is_promotable() {
            self.reset_election_timer();
            self.start_election(false);
        }
    }

    /// `Input::Campaign`: start an election now (Pre-Vote first when enabled).
    pub(super) fn on_campaign(&mut self) {
        if self.phase != Phase::Leader && self.is_promotable() {
            self.start_election(false);
        }
    }

    /// True when this node may become leader: no received snapshot is being installed (its
    /// completion would replace the log), and it votes in the configuration in force, or in
    /// the one before it while the latest is not known committed. Thesis §4.2.2: a server
    /// removed by an uncommitted configuration may still be needed to elect a leader (it may
    /// hold the most up-to-date log), so it keeps starting elections until the removal
    /// commits. It counts votes of the latest configuration, which excludes itself. The same
    /// holds for a voter demoted to learner by an uncommitted configuration (sim seed 514:
    /// a leader demoted itself, crashed, and the other voter could never be elected).
    pub(super) fn is_promotable(&self) -> bool {
        if self.snapshot_finishing() || self.repair.is_some() || self.awaiting_vote_bound() {
            return false;
        }
        if self.membership.is_voter(self.id) {
            return true;
        }
        let committed = self.log.committed_index();
        if self.membership_index <= committed || self.membership_index == LogIndex(0) {
            return false;
        }
        self.log
            .membership_at(self.membership_index.prev(), &self.initial_membership)
            .is_some_and(|previous| previous.is_voter(self.id))
    }

    /// Starts a Pre-Vote round, or a real election when Pre-Vote is off or when leadership is
    /// being handed to us (`transfer`).
    pub(super) fn start_election(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    /// Steps down to follower of `term`, following `leader` when known.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term || self.leader != leader {
            self.ahead.forget();
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.mark_hard_state_dirty();
        }
        if self.phase == Phase::Leader {
            self.reject_pending_reads(leader);
        }
        if self.leader != leader && !self.snapshot_finishing() {
            // A transfer from another leader is abandoned here; storage keeps its partial
            // file, so a new leader sending the same snapshot is answered with the durable
            // offset and continues from there (a different snapshot replaces the file;
            // tests/testdata/snapshot_leader_change.txt). A final chunk already in storage is still waited for:
            // until it is installed, appends are refused so the commit index cannot pass
            // the snapshot point the log will be reset to.
            self.incoming_snapshot = None;
        }
        self.phase = Phase::Follower;
        self.leader_state = None;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    fn become_pre_candidate(&mut self) {
        self.phase = Phase::PreCandidate;
        self.leader_state = None;
        self.leader = None;
        self.votes = BTreeMap::new();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.id);
        self.mark_hard_state_dirty();
        self.phase = Phase::Candidate;
        self.leader_state = None;
        self.leader = None;
        self.votes = BTreeMap::new();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    /// Votes for ourselves and asks every other voter.
    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote {
            Term(self.term.0 + 1)
        } else {
            self.term
        };
        let voters: Vec<NodeId> = self
            .voters()
            .into_iter()
            .filter(|id| *id != self.id)
            .collect();
        self.votes.insert(self.id, true);
        if self.tally_votes() {
            return;
        }
        for to in voters {
            let body = MessageBody::VoteRequest {
                pre_vote,
                last_log_index: self.log.last_index(),
                last_log_term: self.log.last_term(),
                leadership_transfer: transfer,
            };
            self.send_at(to, term, body);
        }
    }

    /// Every voter of the configuration in force (both halves when joint), in id order.
    pub(super) fn voters(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .membership
            .voters
            .union(&self.membership.voters_outgoing)
            .copied()
            .collect();
        ids.dedup();
        ids
    }

    /// Acts on the votes counted so far. Returns true when the round is decided.
    fn tally_votes(&mut self) -> bool {
        match quorum::quorum_vote(&self.membership, &self.votes) {
            VoteResult::Won if self.phase == Phase::PreCandidate => {
                self.become_candidate(false);
                true
            }
            VoteResult::Won if self.vote_is_durable() => {
                self.become_leader();
                true
            }
            // Our own vote is counted but not durable yet (only possible when it alone
            // decides, e.g. a single voter); a crash now could let us vote again in this term.
            // `on_persisted` tallies again.
            VoteResult::Won => false,
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                true
            }
            VoteResult::Pending => false,
        }
    }

    /// True when the hard state holding our vote for ourselves is on disk (nothing written
    /// is still waiting for storage).
    fn vote_is_durable(&self) -> bool {
        self.pending_persist_seq().is_none()
    }

    /// A persist completed: a candidate whose own vote decided the election can now lead.
    pub(super) fn maybe_win_after_persist(&mut self) {
        if self.phase == Phase::Candidate {
            self.tally_votes();
        }
    }

    /// Won the election: append a no-op so entries of earlier terms can commit (paper §8),
    /// and start probing every follower.
    pub(super) fn become_leader(&mut self) {
        let next = self.log.last_index().next();
        let progress = self
            .membership
            .members()
            .into_iter()
            .filter(|id| *id != self.id)
            .map(|id| (id, Progress::new(next)))
            .collect();
        let uncommitted_bytes = self
            .log
            .bytes_between(self.log.committed_index().next(), self.log.last_index());
        self.phase = Phase::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.leader_state = Some(LeaderState {
            progress,
            uncommitted_bytes,
            transfer: None,
            transfer_grace_ticks: 0,
            lease_revoked: false,
            reads: ReadQueue::default(),
            snapshot_budget: self.config.snapshot_bytes_per_tick,
            snapshot_turn: None,
            latency: Default::default(),
            leaving: false,
        });
        let noop = Entry::new(self.term, next, EntryPayload::Noop);
        self.append_as_leader(noop);
        self.broadcast_append(true);
    }

    /// A vote request (real or pre-vote) at our term or, for a pre-vote, a later one.
    pub(super) fn on_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let free_to_vote =
            self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let can_vote = free_to_vote || (pre_vote && term > self.term);
        // A node repairing lost entries may lack committed ones it acknowledged: its vote
        // could elect a leader without them, unless the candidate's log covers everything it
        // may have acknowledged (see `repair.rs`).
        // A node that lost the record of its votes may have voted in this term already
        // (`vote_recovery.rs`).
        let granted = can_vote
            && self.votes_known_in(term)
            && self.repair.is_none_or(|repair| {
                repair.candidate_covers(last_log_index, last_log_term)
                    || self.repair_pair_vouches_for(from, (last_log_index, last_log_term))
                    || self.repair_tails_cover((last_log_index, last_log_term))
            })
            && self.log_allows_vote(last_log_index, last_log_term);
        if granted && !pre_vote {
            self.vote = Some(from);
            self.mark_hard_state_dirty();
            // The grant is released by the persist of exactly this (term, vote): were a
            // later term adopted in the same drain, one persist would save only that term,
            // and the grant would leave on a promise never written as such (simulator seed
            // 104 with follower reads: a grant in term 16 sent after only term 17 was saved).
            self.flush_persist();
            self.reset_election_timer();
        }
        // A granted pre-vote answers in the term it was asked for, so the pre-candidate can
        // match it; everything else answers in our term.
        let reply_term = if granted && pre_vote { term } else { self.term };
        self.send_at(
            from,
            reply_term,
            MessageBody::VoteResponse { pre_vote, granted },
        );
    }

    /// Paper §5.4.1: vote only for a candidate whose log is at least as up to date as ours.
    #[cfg(not(feature = "bug-vote-without-log-check"))]
    fn log_allows_vote(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        self.log.is_up_to_date(last_log_index, last_log_term)
    }

    /// PLANTED BUG (mutation check only): vote without comparing logs, so a leader may lack
    /// committed entries.
    #[cfg(feature = "bug-vote-without-log-check")]
    fn log_allows_vote(&self, _last_log_index: LogIndex, _last_log_term: Term) -> bool {
        true
    }

    /// An answer to our vote request.
    pub(super) fn on_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let counts = match self.phase {
            Phase::PreCandidate => pre_vote && (term.0 == self.term.0 + 1 || !granted),
            Phase::Candidate => !pre_vote && term == self.term,
            Phase::Follower | Phase::Leader => false,
        };
        if counts {
            self.votes.insert(from, granted);
            self.tally_votes();
        }
    }

    /// The leader asks us to campaign now (leadership transfer, thesis §3.10).
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        if self.phase != Phase::Leader && self.is_promotable() && self.leader == Some(from) {
            self.start_election(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{Action, Input, StorageAction, StorageOutcome};
    use super::*;
    use rcraft_wire::Message;

    fn vote_request(from: u64, term: u64) -> Input {
        Input::Message(Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(term),
            body: MessageBody::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                leadership_transfer: false,
            },
        })
    }

    /// Simulator seed 104: two vote requests of different terms in one drain. The first
    /// grant must wait for a persist of exactly its (term, vote), not for one that only
    /// saved the later term.
    #[test]
    fn a_grant_waits_for_its_own_vote_to_be_durable() {
        let mut voter = super::super::testing::node_2_of_three();
        voter.step(vote_request(1, 2));
        voter.step(vote_request(3, 3));
        let actions = voter.take_actions();
        type SavedHardState = Option<(Term, Option<NodeId>)>;
        let persisted: Vec<(u64, SavedHardState)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageAction::Persist {
                    seq, hard_state, ..
                }) => Some((*seq, hard_state.map(|h| (h.term, h.vote)))),
                _ => None,
            })
            .collect();
        assert_eq!(
            persisted,
            [
                (1, Some((Term(2), Some(NodeId(1))))),
                (2, Some((Term(3), Some(NodeId(3)))))
            ]
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Send(_))));
        // The first persist alone releases the first grant, and only it.
        voter.step(Input::Storage(StorageOutcome::Persisted { seq: 1 }));
        let sent: Vec<(NodeId, Term)> = voter
            .take_actions()
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some((m.to, m.term)),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [(NodeId(1), Term(2))]);
    }
}
