//! Protocol-aware recovery of a lost log range (Alagappan et al., "Protocol-Aware Recovery
//! for Consensus-Based Storage", FAST 2018; the idea, not their code).
//!
//! Runs on the replica's owner thread. Storage knows which entries it had synced (the synced
//! frontier, storage/FORMAT.md §4.1) and reports the range it lost below it. This node may
//! have acknowledged those entries, and its acknowledgement may have been the one that
//! completed the quorum committing them: the committed entries may now live on fewer nodes
//! than a quorum. So while the range is not repaired the node
//! - never campaigns, and grants a vote or pre-vote only to a candidate whose log covers
//!   everything this node may have acknowledged (`Repair::candidate_covers`, below). Every
//!   quorum that elects a leader then consists of nodes that either still hold what they
//!   acknowledged or checked the candidate against it, as Raft's leader-completeness argument
//!   needs;
//! - acknowledges only what it holds: an AppendResponse names the entries it just wrote,
//!   never the lost ones, so the leader counts it only for entries it really has.
//!
//! The range is repaired when this node durably holds, from a leader, either
//! - everything through the end of the lost range (the leader sent it; a leader holds every
//!   committed entry), or
//! - an entry of a term later than the one it had when it found the loss: its log then
//!   matches the leader's through that entry, and every entry committed by an acknowledgement
//!   this node sent (in that term or earlier) lies before the leader's first entry of its own
//!   term (leader completeness), so it is held again. This covers a leader whose log is
//!   shorter than the lost range (the lost entries were never committed), or
//! - word from every other voter that its log ends before the lost range (the issue's
//!   "learned from a quorum that it was never committed"). The node asks them with a
//!   `RepairQuery` every minimum election timeout; each answers with the end of its log (or
//!   of a range it repairs itself). An entry of the lost range committed with this node's
//!   acknowledgement is held by a majority of the configuration it was committed in, and
//!   never removed from their logs. That configuration is the one this node knows (the last
//!   in the intact part of its log) or one appended in the lost range, which this node never
//!   saw. With single-server changes any majority of the next configuration, and with joint
//!   consensus any commit of it, includes a voter of the known one other than this node as
//!   long as the known one has at least three voters (with two, {this node, a newly added
//!   voter} is a majority of three). So when all those voters answer with logs ending before
//!   the range, none of it was committed. Only in a simple configuration of three or more
//!   voters; with two, it waits (docs/SIM_FINDINGS.md, finding 10).
//!
//! Invariant: `repair` only ever goes from `Some` to `None`, and only on durable entries or
//! on every other voter's word.

use super::replica::{Repair, Replica};
use rcraft_wire::{LogIndex, MessageBody, NodeId, Term};

impl Repair {
    /// Whether a candidate whose log ends at (`last_log_index`, `last_log_term`) holds every
    /// entry this node may have acknowledged before the loss, as Raft's up-to-date check
    /// would have found against its log then (paper §5.4.1). That log is lost, but bounded:
    /// it ended at or before `lost.through` (the synced frontier), and its last acknowledged
    /// entry has a term no later than `recovered_term` (a node appends an entry only in a
    /// term at least the entry's, and acknowledges it only after the persist that saved
    /// that term). A candidate at least as up to date as (`recovered_term`, `lost.through`)
    /// is at least as up to date as that log, so granting it the vote keeps leader
    /// completeness, as an undamaged voter's grant does. The bound is loose when the node's
    /// term moved on without entries; then it abstains as before (docs/SIM_FINDINGS.md,
    /// finding 10).
    pub(super) fn candidate_covers(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        last_log_term > self.recovered_term
            || (last_log_term == self.recovered_term && last_log_index >= self.lost.through)
    }
}

impl Replica {
    /// Ends the repair when the log durably holds what was lost (see the module header).
    pub(super) fn maybe_finish_repair(&mut self) {
        let Some(repair) = self.repair else {
            return;
        };
        let persisted = self.log.persisted_index();
        let holds_range = persisted >= repair.lost.through;
        let matches_later_leader = self.leader.is_some()
            && self.term > repair.recovered_term
            && self.log.term_at(persisted) == Some(self.term);
        if holds_range || matches_later_leader {
            self.end_repair();
        }
    }

    fn end_repair(&mut self) {
        self.repair = None;
        self.repair_witnesses.1.clear();
    }

    /// The voters whose word can show the lost range was never committed: every other voter
    /// of a simple configuration of at least three (see the module header); none otherwise.
    fn repair_witnesses_needed(&self) -> Option<impl Iterator<Item = NodeId> + '_> {
        let voters = &self.membership.voters;
        let simple = self.membership.voters_outgoing.is_empty();
        (simple && voters.len() >= 3 && voters.contains(&self.id))
            .then(|| voters.iter().copied().filter(|id| *id != self.id))
    }

    /// While repairing, asks the voters that have not yet answered, every minimum election
    /// timeout.
    pub(super) fn tick_repair(&mut self) {
        if self.repair.is_none()
            || self.now_ticks % self.config.election_timeout_min_ticks.max(1) != 0
        {
            return;
        }
        let Some(needed) = self.repair_witnesses_needed() else {
            return;
        };
        let asked: Vec<NodeId> = needed
            .filter(|id| !self.repair_witnesses.1.contains(id))
            .collect();
        for id in asked {
            self.send(id, MessageBody::RepairQuery);
        }
    }

    /// Answers a repairing node: where this node's log ends, or the range it repairs itself.
    pub(super) fn on_repair_query(&mut self, from: NodeId) {
        let repairing_through = self.repair.map_or(LogIndex(0), |r| r.lost.through);
        let log_end = self.log.last_index().max(repairing_through);
        let term = self.term_for_repair_answer();
        self.send_at(from, term, MessageBody::RepairAnswer { log_end });
    }

    /// A voter's answer: counted when its log ends before the lost range; the repair ends
    /// once every other voter of the configuration in force said so.
    pub(super) fn on_repair_answer(&mut self, from: NodeId, log_end: LogIndex) {
        let Some(repair) = self.repair else {
            return;
        };
        if self.repair_witnesses.0 != self.membership_index {
            self.repair_witnesses = (self.membership_index, Default::default());
        }
        if log_end < repair.lost.from {
            self.repair_witnesses.1.insert(from);
        }
        let witnessed = self
            .repair_witnesses_needed()
            .is_some_and(|mut needed| needed.all(|id| self.repair_witnesses.1.contains(&id)));
        if witnessed {
            self.end_repair();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{CoreConfig, HardState, Input, LostEntries, RecoveredState};
    use super::super::testing::step_confirming as step;
    use super::*;
    use rcraft_wire::{
        Entry, EntryPayload, LogIndex, Membership, Message, MessageBody, NodeId, Term,
    };

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    /// Node 2 of three, term 2, which synced entries 1..=5 and lost 4..=5.
    fn damaged_follower() -> Replica {
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(2),
                vote: None,
                commit: LogIndex(3),
                votes_unknown: false,
            },
            snapshot: None,
            entries: (1..=3).map(|i| entry(i, 2)).collect(),
            initial_membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            lost: Some(LostEntries {
                from: LogIndex(4),
                through: LogIndex(5),
            }),
        };
        let mut config = CoreConfig::new(NodeId(2), 7);
        // Vote requests right after a leader's appends must be answered, not ignored.
        config.check_quorum = false;
        Replica::new(config, recovered).unwrap()
    }

    fn message(from: u64, term: u64, body: MessageBody) -> Input {
        Input::Message(Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(term),
            body,
        })
    }

    fn vote_request(from: u64, term: u64, pre_vote: bool) -> Input {
        message(
            from,
            term,
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index: LogIndex(3),
                last_log_term: Term(2),
                leadership_transfer: false,
            },
        )
    }

    fn granted(actions: &[super::super::api::Action]) -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                super::super::api::Action::Send(Message {
                    body: MessageBody::VoteResponse { granted, .. },
                    ..
                }) => Some(*granted),
                _ => None,
            })
            .collect()
    }

    fn append(from: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>) -> Input {
        message(
            from,
            term,
            MessageBody::AppendRequest {
                prev_log_index: LogIndex(prev.0),
                prev_log_term: Term(prev.1),
                entries,
                leader_commit: LogIndex(3),
            },
        )
    }

    #[test]
    fn a_node_that_lost_entries_neither_votes_nor_campaigns_until_it_has_them() {
        let mut node = damaged_follower();
        assert!(node.status().repairing.is_some());
        // A candidate whose log ends where ours now ends would get our vote otherwise.
        assert_eq!(granted(&step(&mut node, vote_request(3, 3, true))), [false]);
        assert_eq!(
            granted(&step(&mut node, vote_request(3, 3, false))),
            [false]
        );
        for _ in 0..100 {
            step(&mut node, Input::Tick);
        }
        step(&mut node, Input::Campaign);
        assert_eq!(node.status().term, Term(3), "it never campaigned");
        // The leader of term 3 sends entry 4; still short of 5.
        step(&mut node, append(1, 3, (3, 2), vec![entry(4, 2)]));
        assert!(node.status().repairing.is_some());
        // Entry 5 arrives and is durable: repaired, and it votes again.
        step(&mut node, append(1, 3, (4, 2), vec![entry(5, 2)]));
        assert_eq!(node.status().repairing, None);
        assert_eq!(
            granted(&step(&mut node, vote_request(3, 4, false))),
            [false]
        );
        let up_to_date = message(
            3,
            5,
            MessageBody::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(5),
                last_log_term: Term(2),
                leadership_transfer: false,
            },
        );
        assert_eq!(granted(&step(&mut node, up_to_date)), [true]);
    }

    /// A candidate whose log covers everything the node may have acknowledged (its term
    /// at recovery, through the end of the lost range, or any later last term) gets the vote
    /// of a repairing node, so two voters can elect a leader while one repairs; a candidate
    /// that falls short of either does not.
    #[test]
    fn a_repairing_node_votes_for_a_candidate_covering_what_it_may_have_acknowledged() {
        let request = |term: u64, index: u64, log_term: u64, pre_vote: bool| {
            message(
                3,
                term,
                MessageBody::VoteRequest {
                    pre_vote,
                    last_log_index: LogIndex(index),
                    last_log_term: Term(log_term),
                    leadership_transfer: false,
                },
            )
        };
        for pre_vote in [true, false] {
            // Term 2 (the term at recovery) but short of entry 5: it may lack 4..=5.
            let mut node = damaged_follower();
            assert_eq!(
                granted(&step(&mut node, request(3, 4, 2, pre_vote))),
                [false]
            );
            // Through 5 in term 2: it holds whatever this node acknowledged.
            let mut node = damaged_follower();
            assert_eq!(
                granted(&step(&mut node, request(3, 5, 2, pre_vote))),
                [true]
            );
            // A later last term than any this node acknowledged in: up to date.
            let mut node = damaged_follower();
            assert_eq!(
                granted(&step(&mut node, request(3, 4, 3, pre_vote))),
                [true]
            );
            assert!(node.status().repairing.is_some(), "a vote repairs nothing");
        }
    }

    /// A node that lost entries and the record of its votes at once (its saved term is then
    /// no bound of the terms it acknowledged in) judges candidates against the vote bound it
    /// learns: a candidate of a later term that lacks the end of the lost range in the
    /// bound's term does not get its vote (SIM_FINDINGS 24, seed 1297).
    #[test]
    fn a_node_that_lost_entries_and_its_votes_judges_candidates_by_the_vote_bound() {
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(0),
                vote: None,
                commit: LogIndex(3),
                votes_unknown: true,
            },
            snapshot: None,
            entries: (1..=3).map(|i| entry(i, 1)).collect(),
            initial_membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            lost: Some(LostEntries {
                from: LogIndex(4),
                through: LogIndex(5),
            }),
        };
        let mut config = CoreConfig::new(NodeId(2), 7);
        config.check_quorum = false;
        let mut node = Replica::new(config, recovered).unwrap();
        // Both voters answer in term 2 with logs holding the lost range: the bound is 2 and
        // the range is still to repair.
        for from in [1, 3] {
            let body = MessageBody::RepairAnswer {
                log_end: LogIndex(5),
            };
            step(&mut node, message(from, 2, body));
        }
        assert_eq!(node.votes_unknown_waiting_for(), None);
        assert!(node.status().repairing.is_some());
        let request = |index: u64, log_term: u64| {
            message(
                3,
                3,
                MessageBody::VoteRequest {
                    pre_vote: false,
                    last_log_index: LogIndex(index),
                    last_log_term: Term(log_term),
                    leadership_transfer: false,
                },
            )
        };
        // Term 3 is above the bound, but the candidate ends at 4 in term 2: it may lack 5.
        assert_eq!(granted(&step(&mut node, request(4, 2))), [false]);
        // Through 5 in term 2 it holds whatever this node acknowledged.
        assert_eq!(granted(&step(&mut node, request(5, 2))), [true]);
    }

    fn repair_queries_to(actions: &[super::super::api::Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                super::super::api::Action::Send(Message {
                    to,
                    body: MessageBody::RepairQuery,
                    ..
                }) => Some(to.0),
                _ => None,
            })
            .collect()
    }

    fn answer(from: u64, log_end: u64) -> Input {
        // Any term: the answer is outside the term rules.
        message(
            from,
            1,
            MessageBody::RepairAnswer {
                log_end: LogIndex(log_end),
            },
        )
    }

    /// Every other voter says its log ends before the lost range: none of it was committed,
    /// and the node leaves the repair without a leader. One voter holding the start of the
    /// range (or not answering) keeps it repairing.
    #[test]
    fn every_other_voter_without_the_range_ends_the_repair() {
        let mut node = damaged_follower();
        let mut asked = Vec::new();
        for _ in 0..20 {
            asked.extend(repair_queries_to(&step(&mut node, Input::Tick)));
        }
        assert_eq!(asked, [1, 3], "each other voter asked");
        step(&mut node, answer(1, 3));
        assert!(node.status().repairing.is_some(), "node 3 has not answered");
        step(&mut node, answer(3, 4));
        assert!(node.status().repairing.is_some(), "node 3 holds entry 4");
        step(&mut node, answer(3, 3));
        assert_eq!(node.status().repairing, None);
        // An answer to a node that is not repairing, or a query to it, changes nothing but
        // the answer.
        let actions = step(&mut node, message(1, 9, MessageBody::RepairQuery));
        assert_eq!(node.status().term, Term(2), "no term adopted from a query");
        let answered = actions.iter().any(|a| {
            matches!(
                a,
                super::super::api::Action::Send(Message {
                    body: MessageBody::RepairAnswer {
                        log_end: LogIndex(3)
                    },
                    ..
                })
            )
        });
        assert!(answered, "{actions:?}");
    }

    /// With two voters, {this node, a voter added in the lost range} could have committed
    /// it: the other voter's word is not enough, and nobody is asked.
    #[test]
    fn two_voters_ask_nobody() {
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(2),
                vote: None,
                commit: LogIndex(3),
                votes_unknown: false,
            },
            snapshot: None,
            entries: (1..=3).map(|i| entry(i, 2)).collect(),
            initial_membership: Membership::with_voters([NodeId(1), NodeId(2)]),
            lost: Some(LostEntries {
                from: LogIndex(4),
                through: LogIndex(5),
            }),
        };
        let mut node = Replica::new(CoreConfig::new(NodeId(2), 7), recovered).unwrap();
        for _ in 0..40 {
            assert!(repair_queries_to(&step(&mut node, Input::Tick)).is_empty());
        }
        step(&mut node, answer(1, 3));
        assert!(node.status().repairing.is_some());
    }

    #[test]
    fn a_later_leader_with_a_shorter_log_ends_the_repair_with_its_own_entry() {
        let mut node = damaged_follower();
        // Term 3's leader never had 4..=5 (they were not committed); it appends its no-op at 4.
        step(&mut node, append(1, 3, (3, 2), vec![entry(4, 3)]));
        assert_eq!(node.status().repairing, None);
    }

    #[test]
    fn the_same_terms_leader_must_send_the_whole_range() {
        let mut node = damaged_follower();
        // A leader of the term the loss was found in: its entries of that term alone do not
        // show the lost ones were never committed.
        step(&mut node, append(1, 2, (3, 2), vec![entry(4, 2)]));
        assert!(node.status().repairing.is_some());
        step(&mut node, append(1, 2, (4, 2), vec![entry(5, 2)]));
        assert_eq!(node.status().repairing, None);
    }
}
