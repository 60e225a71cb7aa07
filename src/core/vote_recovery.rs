//! A node that lost the record of its votes (its hard-state file was damaged: storage marks
//! the state it could read `votes_unknown`, storage/FORMAT.md §4.6) votes again only once it
//! has learned a term above every term it may have voted in.
//!
//! Runs on the replica's owner thread. Until then the node grants no vote, real or pre-vote,
//! and never campaigns (a campaign is a vote for itself); it follows leaders, appends and
//! acknowledges as usual, since none of that depends on whom it voted for. Every minimum
//! election timeout it sends a `RepairQuery` to each voter that has not answered yet: every
//! other voter of its configuration (both halves of a joint one), and of the one before
//! while the latest is not known committed. The envelope of each `RepairAnswer` carries the
//! answerer's current term, or 0 from a node whose own votes are unknown (it knows no bound).
//! Once all of them answered, the bound is the largest of those terms and its own; the node
//! adopts the bound as its term (with no vote) and grants no vote in it (it may have voted
//! there), but may campaign, in the next term. From the first term above the bound on it votes
//! as usual, and saves its hard state without the mark; until then the saved state keeps it,
//! so a restart meanwhile asks again.
//!
//! Why the bound holds (docs/ARCHITECTURE.md, "Protocol-aware recovery", has the long form):
//! suppose this node voted for `c` in term `t`. `c` saved term `t` before asking for votes and
//! never lowers its term. If `c` has not restarted since, its answer is at least `t`. If it
//! restarted, its candidacy in `t` is over, and a second vote of ours in `t` could only harm
//! if `c` had already won `t`; then a quorum of its configuration saved term `t` or later, and
//! as long as fewer than a quorum of voters have lost their votes at once, one of them other
//! than this node answers with a known term at least `t`. The voters asked include `c`'s
//! configuration as long as configurations change one step at a time and this node's log
//! holds the latest one it acknowledged (an unrepaired lost range may hide a newer one; the
//! lost-range repair then also holds the node back).
//!
//! Liveness: a voter that never answers (down, partitioned) keeps this node from voting. That
//! matters only when the others lack a quorum without it.
//!
//! Invariant: `vote_recovery` only goes from `Some` to `None`, only once every voter needed
//! has answered and the node's term is above the bound they gave.

use super::replica::Replica;
use rcraft_wire::{LogIndex, NodeId, Term};
use std::collections::{BTreeMap, BTreeSet};

/// The answers gathered so far by a node whose votes are unknown: the largest term each
/// voter reported (0: the voter knows no bound itself); then the bound they gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct VoteRecovery {
    pub answers: BTreeMap<NodeId, Term>,
    /// Set once every voter needed answered: no term up to it gets this node's vote.
    pub bound: Option<Term>,
}

impl Replica {
    /// The voters whose terms bound the ones this node may have voted in (module header).
    fn vote_witnesses(&self) -> BTreeSet<NodeId> {
        let mut ids: BTreeSet<NodeId> = self.voters().into_iter().collect();
        let uncommitted = self.membership_index != LogIndex(0)
            && self.membership_index > self.log.committed_index();
        if uncommitted {
            let previous = self
                .log
                .membership_at(self.membership_index.prev(), &self.initial_membership);
            if let Some(previous) = previous {
                ids.extend(previous.voters.union(&previous.voters_outgoing).copied());
            }
        }
        ids.remove(&self.id);
        ids
    }

    /// The voters that have not answered yet, while the votes are unknown; `None` otherwise
    /// (also once they all answered, while the node waits for a term above their bound).
    pub fn votes_unknown_waiting_for(&self) -> Option<Vec<NodeId>> {
        let recovery = self.vote_recovery.as_ref().filter(|r| r.bound.is_none())?;
        Some(
            self.vote_witnesses()
                .into_iter()
                .filter(|id| !recovery.answers.contains_key(id))
                .collect(),
        )
    }

    /// The term a `RepairAnswer` carries: this node's term, or 0 while its own votes are
    /// unknown (its term is then no bound of anything).
    pub(super) fn term_for_repair_answer(&self) -> Term {
        if self.votes_unknown_waiting_for().is_some() {
            Term(0)
        } else {
            self.term
        }
    }

    /// Whether this node may grant a vote in its current term: its votes are known, or its
    /// term is above the bound its voters gave.
    pub(super) fn votes_known(&self) -> bool {
        self.votes_known_in(self.term)
    }

    /// Whether this node may grant a vote (or a pre-vote) in `term`: its votes are known, or
    /// `term` is above the bound its voters gave. A pre-vote asks about the next term, which
    /// the node has not adopted: it is granted once that term is above the bound (seed 217:
    /// a node at the bound refused every pre-vote for the term after it, and with another
    /// abstaining no leader was elected).
    pub(super) fn votes_known_in(&self, term: Term) -> bool {
        self.vote_recovery
            .as_ref()
            .is_none_or(|r| r.bound.is_some_and(|bound| term > bound))
    }

    /// True while this node waits for its voters' terms: it must not campaign.
    pub(super) fn awaiting_vote_bound(&self) -> bool {
        self.vote_recovery
            .as_ref()
            .is_some_and(|r| r.bound.is_none())
    }

    /// After a step: once the term is above the bound, the recovery is over. The term
    /// change marked the hard state for saving, and it is saved without the mark.
    pub(super) fn maybe_end_vote_recovery(&mut self) {
        if self.vote_recovery.is_some() && self.votes_known() {
            self.vote_recovery = None;
        }
    }

    /// While the votes are unknown: asks the voters that have not answered, at the first tick
    /// and every minimum election timeout after, and ends the recovery when none is missing
    /// (at once for a node that is the only voter).
    pub(super) fn tick_vote_recovery(&mut self) {
        let Some(waiting) = self.votes_unknown_waiting_for() else {
            return;
        };
        if waiting.is_empty() {
            return self.finish_vote_recovery();
        }
        let every = self.config.election_timeout_min_ticks.max(1);
        if (self.now_ticks - 1) % every == 0 {
            for id in waiting {
                self.send_at(id, self.term, self.repair_query());
            }
        }
    }

    /// A `RepairAnswer` carrying `term` in its envelope.
    pub(super) fn on_vote_recovery_answer(&mut self, from: NodeId, term: Term) {
        let Some(recovery) = self.vote_recovery.as_mut() else {
            return;
        };
        let known = recovery.answers.entry(from).or_insert(term);
        *known = (*known).max(term);
        if self
            .votes_unknown_waiting_for()
            .is_some_and(|waiting| waiting.is_empty())
        {
            self.finish_vote_recovery();
        }
    }

    /// Every voter needed answered: adopt the bound; vote again in the terms after it.
    fn finish_vote_recovery(&mut self) {
        let Some(recovery) = self.vote_recovery.as_mut() else {
            return;
        };
        let bound = recovery
            .answers
            .values()
            .copied()
            .fold(self.term, Term::max);
        recovery.bound = Some(bound);
        // The bound also bounds the terms this node acknowledged entries in (the leader that
        // sent them saved that term, as a candidate saves its own), so a lost range is
        // judged against it from now on (SIM_FINDINGS 24, seeds 1297
        // and 384: until then `Replica::new` set it to the largest term, so no candidate covers
        // the range; judged by the understated saved term, a node recovered at term 0 voted
        // for a candidate lacking a committed entry it had lost).
        if let Some(repair) = self.repair.as_mut() {
            repair.recovered_term = repair.recovered_term.min(bound);
        }
        if bound > self.term {
            self.become_follower(bound, None);
        }
        self.mark_hard_state_dirty();
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{
        Action, CoreConfig, HardState, Input, LostEntries, RecoveredState, StorageAction,
    };
    use super::super::testing::step_confirming as step;
    use super::*;
    use rcraft_wire::{Entry, EntryPayload, Membership, Message, MessageBody};

    /// Node 2 of three, whose hard state was damaged: the readable slot says term 2, its log
    /// ends with an entry of term 3.
    fn unknown_votes(voters: &[u64]) -> Replica {
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(2),
                vote: Some(NodeId(1)),
                commit: LogIndex(0),
                votes_unknown: true,
            },
            entries: vec![Entry::new(Term(3), LogIndex(1), EntryPayload::Noop)],
            initial_membership: Membership::with_voters(voters.iter().copied().map(NodeId)),
            ..RecoveredState::default()
        };
        let mut config = CoreConfig::new(NodeId(2), 7);
        config.check_quorum = false;
        config.pre_vote = false;
        Replica::new(config, recovered).unwrap()
    }

    fn message(from: u64, term: u64, body: MessageBody) -> Input {
        super::super::testing::to_node_2(from, term, body)
    }

    fn vote_request(from: u64, term: u64, pre_vote: bool) -> Input {
        super::super::testing::vote_request_to_node_2(from, term, pre_vote, (9, 9))
    }

    use super::super::testing::votes_granted as granted;

    fn queried(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    to,
                    body: MessageBody::RepairQuery { .. },
                    ..
                }) => Some(to.0),
                _ => None,
            })
            .collect()
    }

    fn answer(from: u64, term: u64) -> Input {
        message(
            from,
            term,
            MessageBody::RepairAnswer {
                log_end: LogIndex(1),
                last_log_index: LogIndex(1),
                last_log_term: Term(3),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership: false,
            },
        )
    }

    #[test]
    fn a_lost_range_is_judged_by_the_vote_bound_once_the_votes_were_unknown() {
        // Both slots lost (term 0) and entries 4..=6 lost: the node may have acknowledged
        // entries of any term up to the one it really had.
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(0),
                vote: None,
                commit: LogIndex(0),
                votes_unknown: true,
            },
            entries: (1..=3)
                .map(|i| Entry::new(Term(1), LogIndex(i), EntryPayload::Noop))
                .collect(),
            initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
            lost: Some(LostEntries {
                from: LogIndex(4),
                through: LogIndex(6),
                through_term: None,
            }),
            ..RecoveredState::default()
        };
        let mut config = CoreConfig::new(NodeId(2), 7);
        config.check_quorum = false;
        config.pre_vote = false;
        let mut node = Replica::new(config, recovered).unwrap();
        for from in [1, 3] {
            let answer = MessageBody::RepairAnswer {
                log_end: LogIndex(7),
                last_log_index: LogIndex(7),
                last_log_term: Term(2),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership: false,
            };
            step(&mut node, message(from, 2, answer));
        }
        let request = |term, last_log_term| {
            let body = MessageBody::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(4),
                last_log_term: Term(last_log_term),
                leadership_transfer: false,
            };
            message(3, term, body)
        };
        // Votes are known again from term 3; a log ending in term 1 may lack what was lost
        // (entries of term 2), one ending in term 3 holds it.
        assert_eq!(granted(&step(&mut node, request(3, 1))), [false]);
        assert_eq!(granted(&step(&mut node, request(4, 3))), [true]);
    }

    fn saved(actions: &[Action]) -> Vec<HardState> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageAction::Persist { hard_state, .. }) => *hard_state,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_node_whose_votes_are_unknown_neither_votes_nor_campaigns_until_every_voter_answered() {
        let mut node = unknown_votes(&[1, 2, 3]);
        // Its term starts at the highest it can prove: its log's last term.
        assert_eq!(node.status().term, Term(3));
        assert_eq!(
            node.votes_unknown_waiting_for(),
            Some(vec![NodeId(1), NodeId(3)])
        );
        let mut asked = Vec::new();
        for _ in 0..40 {
            asked.extend(queried(&step(&mut node, Input::Tick)));
        }
        step(&mut node, Input::Campaign);
        assert_eq!(node.status().term, Term(3), "it never campaigned");
        assert_eq!(
            asked[..2],
            [1, 3],
            "each other voter asked at the first tick"
        );
        assert!(asked.len() > 2, "and again while they do not answer");
        for pre_vote in [true, false] {
            assert_eq!(
                granted(&step(&mut node, vote_request(3, 5, pre_vote))),
                [false]
            );
        }
        // A higher term is adopted, and saved still marked unknown.
        let actions = step(&mut node, vote_request(3, 6, false));
        assert_eq!(granted(&actions), [false]);
        assert!(!saved(&actions).is_empty());
        assert!(
            saved(&actions)
                .iter()
                .all(|h| h.votes_unknown && h.term == Term(6))
        );
        // Node 1 knows term 7; node 3 has not answered: still unknown.
        step(&mut node, answer(1, 7));
        assert_eq!(node.votes_unknown_waiting_for(), Some(vec![NodeId(3)]));
        assert_eq!(
            granted(&step(&mut node, vote_request(1, 7, false))),
            [false]
        );
        // Node 3 answers term 6: the bound is 7. The node is at term 7, still saved marked:
        // nobody gets its vote in 7; anyone may in 8, and that is saved unmarked.
        let actions = step(&mut node, answer(3, 6));
        assert_eq!(node.votes_unknown_waiting_for(), None);
        let marked = HardState {
            term: Term(7),
            vote: None,
            commit: LogIndex(0),
            votes_unknown: true,
        };
        assert_eq!(saved(&actions), [marked]);
        assert_eq!(
            granted(&step(&mut node, vote_request(1, 7, false))),
            [false]
        );
        let actions = step(&mut node, vote_request(1, 8, false));
        assert_eq!(granted(&actions), [true]);
        let voted = HardState {
            term: Term(8),
            vote: Some(NodeId(1)),
            votes_unknown: false,
            ..marked
        };
        assert_eq!(saved(&actions), [voted]);
        assert_eq!(node.hard_state(), voted);
    }

    /// A node answers with term 0 while its own votes are unknown: the asker learns nothing
    /// from it, yet counts it as answered (its candidacies ended with its restart).
    #[test]
    fn a_node_whose_votes_are_unknown_answers_with_term_0() {
        let mut node = unknown_votes(&[1, 2, 3]);
        let answered = |actions: &[Action]| -> Vec<Term> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Send(Message {
                        term,
                        body: MessageBody::RepairAnswer { .. },
                        ..
                    }) => Some(*term),
                    _ => None,
                })
                .collect()
        };
        // A query from a lower term (a later one would be adopted, as any later term).
        let actions = step(
            &mut node,
            message(1, 1, MessageBody::RepairQuery { lost: None }),
        );
        assert_eq!(answered(&actions), [Term(0)]);
        assert_eq!(node.status().term, Term(3));
        step(&mut node, answer(1, 0));
        step(&mut node, answer(3, 0));
        // The bound is its own term (3): no vote there yet, but it knows its bound.
        assert_eq!(node.votes_unknown_waiting_for(), None);
        assert_eq!(node.hard_state().term, Term(3));
        assert!(node.hard_state().votes_unknown, "no vote in term 3 yet");
        let actions = step(
            &mut node,
            message(1, 1, MessageBody::RepairQuery { lost: None }),
        );
        assert_eq!(answered(&actions), [Term(3)]);
    }

    /// Its term already above every answer (adopted since the restart): it keeps it, votes
    /// in none up to it, and a campaign goes past it.
    #[test]
    fn a_term_above_every_answer_is_kept() {
        let mut node = unknown_votes(&[1, 2, 3]);
        step(&mut node, vote_request(1, 9, false));
        step(&mut node, answer(1, 4));
        step(&mut node, answer(3, 5));
        let state = node.hard_state();
        assert_eq!(
            (state.term, state.vote, state.votes_unknown),
            (Term(9), None, true)
        );
        assert_eq!(
            granted(&step(&mut node, vote_request(3, 9, false))),
            [false]
        );
        // A pre-vote for the next term is granted: that term is above the bound.
        assert_eq!(granted(&step(&mut node, vote_request(3, 10, true))), [true]);
        step(&mut node, Input::Campaign);
        let state = node.hard_state();
        assert_eq!(
            (state.term, state.vote, state.votes_unknown),
            (Term(10), Some(NodeId(2)), false)
        );
    }

    /// The only voter has nobody to ask: it goes on from the highest term it can prove and
    /// campaigns in the next.
    #[test]
    fn the_only_voter_recovers_at_its_first_tick() {
        let mut node = unknown_votes(&[2]);
        let actions = step(&mut node, Input::Tick);
        assert!(queried(&actions).is_empty());
        assert_eq!(node.votes_unknown_waiting_for(), None);
        for _ in 0..40 {
            step(&mut node, Input::Tick);
        }
        assert!(node.is_leader());
        assert_eq!(node.status().term, Term(4));
        assert!(!node.hard_state().votes_unknown);
    }
}
