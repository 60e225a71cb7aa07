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
//! - word from every other voter that its log ends before the lost range, each given in a
//!   term above the recovered term (the witness rule: the issue's "learned from a quorum that
//!   it was never committed"). The node asks them with a `RepairQuery` every minimum election
//!   timeout; each answers with the end of its log (or of a range it repairs itself), in its
//!   current term, once that term and that log are durable. Only while the configuration in
//!   force is the one of the intact log (K, the last before the range), in a simple
//!   configuration of at least two voters; a configuration of one voter that has other
//!   servers waits (its voter alone may have committed the range).
//!
//! Why the witness rule is safe. Let R be the recovered term: every acknowledgement this node
//! (D) sent for an entry of the range was sent in a term no later than R (an entry is
//! acknowledged only after the persist that saved a term at least the leader's). A leader
//! counts only acknowledgements of its own term, so the only commits that can rest on D's
//! lost acknowledgements are commits by a leader L of a term T <= R. Suppose L commits an
//! entry at `m` in the range with a quorum Q holding D. Every witness W answered in a term
//! above R; W acknowledges only in its current term and terms never go down, so an
//! acknowledgement of W in T was sent before its answer. Once W acknowledged `m` in T, its
//! log changes only by leaders of terms T or later: L holds `m`, and so does every leader of
//! a later term elected before D's repair ends (Raft's leader completeness: until then D
//! voted only for candidates covering its lost log), so W's log still reached `m` >= `from`
//! when it answered (a range W lost itself is in its answer too). So no witness is in Q. Q
//! is a quorum of L's configuration C. L's log agrees with D's lost log through `m`, so C is
//! K or follows K in a chain of configurations appended from `from` on; a leader appends a
//! configuration only once the one before it is committed (`membership.rs`). If C came after
//! the first one of the chain, C1, then C1 was committed by a leader of a term at most T with
//! a quorum of C1 acknowledging in that term, and that quorum holds a witness (below), which
//! then answered with a log reaching C1's index: impossible. So C is K or C1, and every
//! quorum of either holds a voter of K other than D: C1 is one step from K (one voter added
//! or removed from at least three; a learner change; a joint configuration whose outgoing
//! half is K), and with two voters a configuration changes its voters only through such a
//! joint one (`membership.rs`). So Q holds a witness: a contradiction, and no commit rests on
//! D's lost acknowledgements. Its log then is as if it had never received the range.
//!
//! Why the term matters (docs/SIM_FINDINGS.md, finding 36): an answer in a term up to R is
//! true when sent, but the witness may acknowledge the range afterwards, in that term, to a
//! leader that counts D's old acknowledgement with it (K = {D, B, C}, leader X of {D, B, C,
//! X} appended in the range, elected by D and C in term 6; B's and C's logs end before the
//! range; C then acknowledges X's entries in term 6 and X commits them).
//!
//! Raising the witnesses' terms. Where nothing else raises them (a leader that lost its own
//! last entry, followers that do not campaign; or a pair, whose other voter cannot win
//! without D's vote), the answers stay in terms up to R. So when every witness answered from
//! a log ending before the range and some in a term not above R, and D's own term is not
//! above R (and its votes are known), D adopts R + 1, with no vote and no leader (it still
//! never campaigns), and asks those witnesses again in it. A `RepairQuery` of a later term is
//! adopted like any later term, except by a node in a leader's lease (as a vote request is,
//! so lease reads keep their promise) and without restarting a running election timer; the
//! answer in the adopted term leaves once that term is durable. A term change is always safe
//! in Raft; its cost is a leader change (a leader hearing from D in the later term steps
//! down), paid once per repair: D moves at most once (from R to R + 1) until it restarts. A
//! witness in a lease adopts the term once the lease runs out (its leader, answered in the
//! later term by D, steps down); a witness whose own votes are unknown answers with term 0
//! and counts once its own recovery ends.
//!
//! The tail rule (docs/SIM_FINDINGS.md, finding 37). A leader that lost the tail it appended
//! in its own term, held by no other node, is covered by no candidate (only its own lost log
//! was that up to date), and the witness rule does not help when another voter holds
//! entries of the range from an earlier term. So D also grants its vote (and pre-vote) to a
//! candidate at least as up to date as the last entry of every other voter of K's answer,
//! once each answered in a term above R from a whole log (it repairs nothing itself) with no
//! configuration entry that may be one of D's lost log's (`RepairAnswer::range_membership`:
//! its log was compacted from before `from`, or it holds a membership entry from `from` on
//! whose term fits D's lost log: up to R, and with `through_term` known, up to it before
//! `through`, equal at `through`, at least it after; `may_hold_membership_of`). Why it is safe:
//! let `e` be committed with D's lost acknowledgement by a leader L of a term T <= R, in L's
//! configuration C, by a quorum Q holding D. C is K or C1 (as above: a second link needs
//! C1 committed, by a quorum of C1 holding a witness W, which acknowledged it in a term up
//! to R, so before its answer; a committed entry never leaves a log and a snapshot over it
//! counts, so W's answer would say `range_membership`: C1 is at an index from `from` on, in a
//! term up to R, and is D's entry there, so its term fits D's lost log). A snapshot over C1
//! counts even when it names the configuration entry in force at its index
//! (`SnapshotMeta::membership_entry`, docs/SIM_FINDINGS.md, finding 39): a snapshot holds
//! committed entries only, so it holds C1 at C1's index, and the last configuration entry at
//! or before the snapshot's index is C1 or a later one, at an index from `from` on; only an
//! entry point before `from` clears the compacted prefix (it then holds no configuration
//! entry from `from` to the snapshot's index). So Q holds a
//! witness W, which acknowledged the entry of term T committing `e` before its answer: its
//! answered log holds `e` and ends in a term at least T. A candidate at least as up to date
//! as that log holds `e` (same last term: it holds W's last entry, so W's log by log
//! matching; a later one: the leader that created it held `e`, by leader completeness for
//! the terms after T, which D's grants keep). Stale answers lose nothing: each is true of
//! the log W had, and W acknowledges nothing in a term up to R after it. The repair then
//! ends the usual way, on the elected leader's entries; D raises its term to R + 1 when
//! every witness answered (from a log before the range or for this rule) and some not above
//! R, as for the witness rule.
//!
//! Two voters. The other voter may hold part of the lost range (it received entries the
//! node lost) while its last term is below the node's recovered term (which bounds the
//! lost entries' terms only loosely): then neither the answers nor `candidate_covers` help,
//! and without the node's vote nobody is elected (docs/SIM_FINDINGS.md, finding 10). Let K,
//! the configuration of the node's intact log (its last membership entry, or its snapshot's,
//! before the lost range), be a simple pair {D, B}, D this node. Then B's log holds every
//! committed entry of the lost range that D acknowledged, provided B's log holds no joint
//! configuration at an index in or after the range (`from` on) and B is not repairing
//! itself. Proof: let `e` at `k` in the range be committed, first by leader L under the
//! configuration C last in L's log then. D's log at the crash held `e`, so it and L's log
//! agree through `k`: L's log holds D's intact log, and no membership entry between K and
//! `from`. The configurations in L's log after K form a chain in which each was appended by
//! a leader whose last configuration was the one before (`membership.rs`): from a simple
//! pair only the same two voters (a learner change) or a joint configuration whose
//! outgoing half is the pair; from a joint only its final configuration, and only once the
//! joint one is committed. (1) No joint configuration in the chain up to C: C's voters are
//! D and B, so B acknowledged `e` (its log matched L's through `k`), and a committed entry
//! never leaves a log. (2) Otherwise let J at `j` be the first: if C is J, B is in every
//! quorum of J's outgoing half, as in (1). If C comes after J, J was committed before the
//! next configuration was appended, with B's acknowledgement, so B's log holds J, and `j`
//! is at or after `from` (D's intact log has no membership entry after K). That contradicts
//! the premise. A commit in a term below B's candidacy used B's acknowledgement from before
//! it, when B's log already held J, so the premise must hold of the log B campaigns with:
//! B's `RepairAnswer` names its last entry, its snapshot index and its last joint
//! configuration after the snapshot, and D grants B its vote (and pre-vote) only while B's
//! vote request shows that same last entry (the same log, by log matching), B's snapshot
//! ends before `from` (its log then shows every configuration from `from` on), or at or
//! after the range's end (it holds the whole range), or inside the range with the pair as
//! its configuration and no joint one after it (committed entries up to it are in it; L's
//! log holds the committed prefix through the snapshot, so the chain after it starts from
//! the pair again), and the usual up-to-date check against D's current log passes. An answer that B sent before it received a joint
//! configuration therefore counts only while B's log is unchanged (docs/SIM_FINDINGS.md,
//! finding 36).
//!
//! Invariant: `repair` only ever goes from `Some` to `None`, and only on durable entries or
//! on every other voter's word given in a term above the recovered term. While `Some`, a
//! vote goes only to a candidate covering the lost log (`candidate_covers`: with the
//! frontier's term recorded, Raft's own up-to-date check against it), to the other voter of
//! a pair as above, or by the tail rule.

use super::replica::{Repair, Replica};
use rcraft_wire::{LogIndex, MessageBody, NodeId, RepairedRange, Term};

/// What a `RepairAnswer` says of the answerer's log, for the rule of a pair ("Two voters").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PairAnswer {
    /// The answerer's log end, or the end of a range it repairs itself when further.
    pub log_end: LogIndex,
    /// Its last entry: (index, term).
    pub last_log: (LogIndex, Term),
    /// Its snapshot index (0 without one).
    pub snapshot_index: LogIndex,
    /// Its last joint configuration entry after the snapshot (0 when none).
    pub last_joint_index: LogIndex,
    /// Its snapshot's configuration is a simple pair of the asker and the answerer.
    pub snapshot_pair: bool,
}

/// What a voter's last `RepairAnswer` says, for the tail rule (module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RepairTail {
    /// Its term was above the recovered term.
    pub above: bool,
    /// The answerer's last entry (index, term).
    pub last: (LogIndex, Term),
    /// Its log is whole (it repairs nothing itself) and holds no configuration entry that may
    /// be one of the lost range's.
    pub usable: bool,
}

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
    ///
    /// When storage recorded the term of the entry at the frontier (`lost.through_term`),
    /// the lost log's end is known: (`lost.through`, that term), and a candidate at least as
    /// up to date as it covers it, Raft's own check (not while the votes are unknown, when
    /// no candidate covers it: docs/SIM_FINDINGS.md, finding 24).
    pub(super) fn candidate_covers(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        let up_to_date = |term: Term| {
            last_log_term > term || (last_log_term == term && last_log_index >= self.lost.through)
        };
        let votes_known = self.recovered_term != Term(u64::MAX);
        up_to_date(self.recovered_term)
            || (votes_known && self.lost.through_term.is_some_and(up_to_date))
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
        // With its votes unknown the recovered term may be understated until the voters'
        // bound raises it (`finish_vote_recovery`).
        let matches_later_leader = self.leader.is_some()
            && !self.awaiting_vote_bound()
            && self.term > repair.recovered_term
            && self.log.term_at(persisted) == Some(self.term);
        if holds_range || matches_later_leader {
            self.end_repair();
        }
    }

    fn end_repair(&mut self) {
        self.repair = None;
        self.repair_witnesses.1.clear();
        self.repair_tails.clear();
        self.repair_pair = None;
    }

    /// The other voter of a simple configuration of exactly two that holds this node.
    pub(super) fn other_of_pair(&self) -> Option<NodeId> {
        let voters = &self.membership.voters;
        let pair = self.membership.voters_outgoing.is_empty()
            && voters.len() == 2
            && voters.contains(&self.id);
        pair.then(|| voters.iter().copied().find(|id| *id != self.id))
            .flatten()
    }

    /// A `RepairAnswer` from the other voter of the pair the node recovered in: its log
    /// holds every committed entry of the lost range when it repairs nothing itself, holds no
    /// joint configuration from the range's start on, and its snapshot shows that (ends
    /// before the range) or covers the whole range (see the module header, "Two voters").
    /// Each answer replaces the last one's verdict.
    pub(super) fn on_repair_answer_of_pair(&mut self, from: NodeId, answer: PairAnswer) {
        let Some(repair) = self.repair else {
            return;
        };
        if repair.pair != Some(from) {
            return;
        }
        let lost = repair.lost;
        let whole = answer.log_end == answer.last_log.0;
        let covered = answer.snapshot_index >= lost.through;
        // The chain of configurations starts at our intact log's (a pair) when the snapshot
        // ends before the range, else at the snapshot's, which must be the pair too.
        let start = if answer.snapshot_index < lost.from {
            lost.from
        } else {
            answer.snapshot_index.next()
        };
        let chain_from_pair = answer.snapshot_index < lost.from || answer.snapshot_pair;
        let shown = chain_from_pair && answer.last_joint_index < start;
        self.repair_pair = (whole && (covered || shown)).then_some(answer.last_log);
    }

    /// Whether `candidate` is the other voter of our pair and its log, ending at
    /// `last_log`, is the one it answered with when it held every committed entry of the
    /// lost range: the usual up-to-date check against our current log covers the rest.
    pub(super) fn repair_pair_vouches_for(
        &self,
        candidate: NodeId,
        last_log: (LogIndex, Term),
    ) -> bool {
        self.repair
            .is_some_and(|repair| repair.pair == Some(candidate))
            && self.repair_pair == Some(last_log)
    }

    /// Whether a candidate whose log ends at `last_log` is at least as up to date as the last
    /// entry of every other voter's answer, each given in a term above the recovered term
    /// from a whole log holding no configuration entry that may be one of the lost range's
    /// (the tail rule, module header): every entry committed on this node's lost
    /// acknowledgements is then in one of those logs, so in the candidate's.
    pub(super) fn repair_tails_cover(&self, last_log: (LogIndex, Term)) -> bool {
        let Some(repair) = self.repair else {
            return false;
        };
        if self.membership_index >= repair.lost.from
            || self.repair_witnesses.0 != self.membership_index
        {
            return false;
        }
        let (index, term) = last_log;
        self.repair_witnesses_needed().is_some_and(|mut needed| {
            needed.all(|id| {
                self.repair_tails.get(&id).is_some_and(|tail| {
                    let (i, t) = tail.last;
                    tail.usable && tail.above && (term > t || (term == t && index >= i))
                })
            })
        })
    }

    /// The `RepairQuery` this node sends: with the range it repairs, if any.
    pub(super) fn repair_query(&self) -> MessageBody {
        MessageBody::RepairQuery {
            lost: self.repair.map(|repair| RepairedRange {
                from: repair.lost.from,
                through: repair.lost.through,
                through_term: repair.lost.through_term.unwrap_or(Term(0)),
                recovered_term: repair.recovered_term,
            }),
        }
    }

    /// The voters whose word can show the lost range was never committed: every other voter
    /// of a simple configuration of at least two (see the module header); none otherwise.
    fn repair_witnesses_needed(&self) -> Option<impl Iterator<Item = NodeId> + '_> {
        let voters = &self.membership.voters;
        let simple = self.membership.voters_outgoing.is_empty();
        (simple && voters.len() >= 2 && voters.contains(&self.id))
            .then(|| voters.iter().copied().filter(|id| *id != self.id))
    }

    /// While repairing, asks the voters whose word does not count yet, every minimum election
    /// timeout.
    pub(super) fn tick_repair(&mut self) {
        if self.repair.is_none()
            || self.now_ticks % self.config.election_timeout_min_ticks.max(1) != 0
        {
            return;
        }
        self.ask_repair_witnesses();
    }

    /// Sends a `RepairQuery`, at this node's term, to each voter whose word does not count
    /// yet (no answer, an answer from a log reaching the range, or one in a term not above the
    /// recovered term).
    fn ask_repair_witnesses(&mut self) {
        let Some(needed) = self.repair_witnesses_needed() else {
            return;
        };
        let asked: Vec<NodeId> = needed
            .filter(|id| self.repair_witnesses.1.get(id) != Some(&true))
            .collect();
        for id in asked {
            let query = self.repair_query();
            self.send(id, query);
        }
    }

    /// Answers a repairing node: where this node's log ends, or the range it repairs itself,
    /// its last entry, its snapshot index and its last joint configuration after it, and
    /// whether its log may hold a configuration entry of the asker's lost log (`lost`).
    pub(super) fn on_repair_query(&mut self, from: NodeId, lost: Option<RepairedRange>) {
        let repairing_through = self.repair.map_or(LogIndex(0), |r| r.lost.through);
        let log_end = self.log.last_index().max(repairing_through);
        let term = self.term_for_repair_answer();
        let snapshot_pair = self.log.snapshot().is_some_and(|s| {
            let m = &s.membership;
            !m.is_joint()
                && m.voters.len() == 2
                && m.voters.contains(&from)
                && m.voters.contains(&self.id)
        });
        let range_membership = lost.is_some_and(|lost| self.may_hold_membership_of(&lost));
        let body = MessageBody::RepairAnswer {
            log_end,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            last_joint_index: self.log.last_joint_index().unwrap_or(LogIndex(0)),
            snapshot_pair,
            range_membership,
        };
        self.send_at(from, term, body);
    }

    /// Whether this node's log may hold a configuration entry of the asker's lost log:
    /// entries compacted away from the range's start on are hidden, so they may, unless the
    /// snapshot names the configuration entry in force at its index and that entry lies
    /// before the range (the compacted prefix then holds none from the range's start on:
    /// docs/SIM_FINDINGS.md, finding 39); a membership entry at an index from the range's
    /// start on may be one unless its term rules it out. The asker acknowledged nothing of a
    /// term after its recovered term, and terms never decrease along a log: with the term T
    /// of the entry at `through` known, the asker's entries before `through` have terms up to
    /// T, the one at `through` has T, and any after it (acknowledged before its frontier was
    /// recorded) at least T.
    fn may_hold_membership_of(&self, lost: &RepairedRange) -> bool {
        let compacted_into_range = self.log.first_index() > lost.from;
        let snapshot_shows_none = (self.log.snapshot())
            .and_then(|s| s.membership_entry)
            .is_some_and(|(at, _)| at < lost.from);
        if compacted_into_range && !snapshot_shows_none {
            return true;
        }
        self.log.memberships_from(lost.from).any(|(at, _)| {
            let term = self.log.term_at(at).unwrap_or(Term(0));
            let frontier = lost.through_term;
            let possible = frontier == Term(0)
                || match at.cmp(&lost.through) {
                    std::cmp::Ordering::Less => term <= frontier,
                    std::cmp::Ordering::Equal => term == frontier,
                    std::cmp::Ordering::Greater => term >= frontier,
                };
            term <= lost.recovered_term && possible
        })
    }

    /// A voter's answer, sent in `term`: counted when its log ends before the lost range and
    /// `term` is above the recovered term (the witness rule, module header); the repair ends
    /// once every other voter of the configuration of the intact log is counted. When every
    /// one of them answered from a log ending before the range but some in a term not above
    /// the recovered term, and this node's own term is not above it either, the node moves to
    /// the next term (no vote, no campaign) and asks those again in it: they adopt it, and
    /// answer above the recovered term (module header, "Raising the witnesses' terms").
    ///
    /// `answer` is kept for the tail rule (`repair_tails_cover`), which a raise of the term
    /// serves too, unless some answer's log covers the lost log: a leader can then be
    /// elected as without the damage, and the repair ends on its entries.
    pub(super) fn on_repair_answer(
        &mut self,
        from: NodeId,
        term: Term,
        log_end: LogIndex,
        answer: RepairTail,
    ) {
        let Some(repair) = self.repair else {
            return;
        };
        // Only the configuration of the intact log (appended before the range): one from the
        // range, received from a leader since, is left to that leader's repair.
        if self.membership_index >= repair.lost.from {
            return;
        }
        if self.repair_witnesses.0 != self.membership_index {
            self.repair_witnesses = (self.membership_index, Default::default());
            self.repair_tails.clear();
        }
        let above = term > repair.recovered_term;
        self.repair_tails
            .insert(from, RepairTail { above, ..answer });
        if log_end < repair.lost.from {
            let above = term > repair.recovered_term;
            let known = self.repair_witnesses.1.entry(from).or_insert(above);
            *known = *known || above;
        } else {
            self.repair_witnesses.1.remove(&from);
        }
        let answers = |replica: &Self, counted: fn(bool) -> bool| {
            replica.repair_witnesses_needed().is_some_and(|mut needed| {
                needed.all(|id| {
                    replica
                        .repair_witnesses
                        .1
                        .get(&id)
                        .is_some_and(|&a| counted(a))
                })
            })
        };
        if answers(self, |above| above) {
            return self.end_repair();
        }
        // Every voter answered, from a log before the range or from one the tail rule can
        // use, not every one in a term above the recovered term, and none from a log that
        // covers the lost one (which could lead as without the damage): raise it.
        let tails = |replica: &Self, counted: &dyn Fn(NodeId, &RepairTail) -> bool| {
            replica.repair_witnesses_needed().is_some_and(|mut needed| {
                needed
                    .all(|id| (replica.repair_tails.get(&id)).is_some_and(|tail| counted(id, tail)))
            })
        };
        let answered = tails(self, &|id, tail| {
            tail.usable || self.repair_witnesses.1.contains_key(&id)
        });
        let tails_counted = tails(self, &|_, tail| tail.usable && tail.above);
        let covered = !tails(self, &|_, tail| {
            !repair.candidate_covers(tail.last.0, tail.last.1)
        });
        let raise = answered
            && !tails_counted
            && !covered
            && !self.awaiting_vote_bound()
            && self.term <= repair.recovered_term;
        if raise {
            // Nobody leads the new term yet; this node never campaigns while repairing.
            self.become_follower(Term(repair.recovered_term.0 + 1), None);
            self.ask_repair_witnesses();
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
        Entry::new(Term(term), LogIndex(index), EntryPayload::Noop)
    }

    /// Node 2's recovered state after it lost synced entries: hard state `(term, vote,
    /// votes_unknown)`, entries 1..=`last` of `log_term` (all committed) in a configuration of
    /// `voters`, and the loss of `last + 1..=through`, whose last term storage recorded as
    /// `through_term` (None: an older WAL header that did not).
    fn lost_after(
        (term, vote, votes_unknown): (u64, Option<u64>, bool),
        (last, log_term): (u64, u64),
        voters: &[u64],
        through: u64,
        through_term: Option<u64>,
    ) -> RecoveredState {
        RecoveredState {
            hard_state: HardState {
                term: Term(term),
                vote: vote.map(NodeId),
                commit: LogIndex(last),
                votes_unknown,
            },
            snapshot: None,
            entries: (1..=last).map(|i| entry(i, log_term)).collect(),
            initial_membership: Membership::with_voters(voters.iter().map(|&id| NodeId(id))),
            lost: Some(LostEntries {
                from: LogIndex(last + 1),
                through: LogIndex(through),
                through_term: through_term.map(Term),
            }),
        }
    }

    /// Node 2 of three, term 2, which synced entries 1..=5 and lost 4..=5.
    fn damaged_follower() -> Replica {
        repairing(lost_after((2, None, false), (3, 2), &[1, 2, 3], 5, None))
    }

    /// Node 2 started on `recovered`, without check-quorum: vote requests right after a
    /// leader's appends must be answered, not ignored.
    fn repairing(recovered: RecoveredState) -> Replica {
        let mut config = CoreConfig::new(NodeId(2), 7);
        config.check_quorum = false;
        Replica::new(config, recovered).unwrap()
    }

    fn message(from: u64, term: u64, body: MessageBody) -> Input {
        super::super::testing::to_node_2(from, term, body)
    }

    fn vote_request(from: u64, term: u64, pre_vote: bool) -> Input {
        super::super::testing::vote_request_to_node_2(from, term, pre_vote, (3, 2))
    }

    use super::super::testing::votes_granted as granted;

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
        let mut node = repairing(lost_after((0, None, true), (3, 1), &[1, 2, 3], 5, None));
        // Both voters answer in term 2 with logs holding the lost range: the bound is 2 and
        // the range is still to repair.
        for from in [1, 3] {
            let body = MessageBody::RepairAnswer {
                log_end: LogIndex(5),
                last_log_index: LogIndex(5),
                last_log_term: Term(2),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership: false,
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
                    body: MessageBody::RepairQuery { .. },
                    ..
                }) => Some(to.0),
                _ => None,
            })
            .collect()
    }

    fn answer(from: u64, log_end: u64) -> Input {
        answer_of(from, (log_end, 1), 0, 0)
    }

    fn answer_of(from: u64, last: (u64, u64), snapshot: u64, joint: u64) -> Input {
        answer_with(from, last, (snapshot, false), joint)
    }

    /// An answer from a log ending at `last` (index, term), with its snapshot at
    /// `snapshot.0` (its configuration the pair of asker and answerer: `snapshot.1`) and its
    /// last joint configuration at `joint` (0: none). Its log holds a configuration entry
    /// of the lost range (4..) when the snapshot or the joint one is there.
    fn answer_with(from: u64, last: (u64, u64), snapshot: (u64, bool), joint: u64) -> Input {
        let in_range = snapshot.0 >= 4 || joint >= 4;
        answer_full(from, last, snapshot, joint, in_range)
    }

    /// An answer whose entry 4 (in the lost range) is a configuration entry that is not a
    /// joint one (a learner change, say): the tail rule cannot use it, the pair rule can.
    fn answer_in_range(from: u64, last: (u64, u64)) -> Input {
        answer_full(from, last, (0, false), 0, true)
    }

    fn answer_full(
        from: u64,
        last: (u64, u64),
        snapshot: (u64, bool),
        joint: u64,
        range_membership: bool,
    ) -> Input {
        let (snapshot, pair) = snapshot;
        // Above the recovered term of every node of these tests, so that the witness rule
        // counts it; the answer is outside the term rules (nobody adopts its term).
        message(
            from,
            9,
            MessageBody::RepairAnswer {
                log_end: LogIndex(last.0),
                last_log_index: LogIndex(last.0),
                last_log_term: Term(last.1),
                snapshot_index: LogIndex(snapshot),
                last_joint_index: LogIndex(joint),
                snapshot_pair: pair,
                range_membership,
            },
        )
    }

    /// A vote request from node 1 for `term` whose log ends at `last` (index, term).
    fn request_of_1(term: u64, last: (u64, u64), pre_vote: bool) -> Input {
        super::super::testing::vote_request_to_node_2(1, term, pre_vote, last)
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
        assert_eq!(
            node.status().term,
            Term(2),
            "no term adopted from an answer"
        );
        // A node that is not repairing answers a query; it adopts the query's later term, as
        // any (a repairing node raises its witnesses' terms so), and answers in it.
        let actions = step(
            &mut node,
            message(1, 9, MessageBody::RepairQuery { lost: None }),
        );
        assert_eq!(node.status().term, Term(9), "the query's term adopted");
        let answered = actions.iter().any(|a| {
            matches!(
                a,
                super::super::api::Action::Send(Message {
                    body: MessageBody::RepairAnswer {
                        log_end: LogIndex(3),
                        ..
                    },
                    ..
                })
            )
        });
        assert!(answered, "{actions:?}");
    }

    /// The witness rule counts an answer only from a term above the recovered one (finding 36
    /// of docs/SIM_FINDINGS.md). Node 2 of {1, 2, 3} acknowledged 10..=11 in term 6 (leader X
    /// of a configuration {1, 2, 3, X} appended at 10, which node 2 lost too) and lost them.
    /// Nodes 1 and 3 answer in term 6 with logs ending at 9: true then, but node 3 may still
    /// acknowledge 10..=11 in term 6 after answering, and X commit them with node 2's old
    /// acknowledgement; so the repair goes on, and node 1 (lacking them) gets no vote. Node 2
    /// moves to term 7 and asks again in it; answers from term 7 (nodes that adopted it refuse
    /// X's appends of term 6) with logs ending at 9 end the repair, one reaching the range
    /// does not.
    #[test]
    fn witnesses_count_only_from_a_term_above_the_recovered_one() {
        let mut node = repairing(lost_after((6, None, false), (9, 5), &[1, 2, 3], 11, None));
        let answer_in = |from: u64, term: u64, log_end: u64| {
            let body = MessageBody::RepairAnswer {
                log_end: LogIndex(log_end),
                last_log_index: LogIndex(log_end),
                last_log_term: Term(5),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership: false,
            };
            message(from, term, body)
        };
        let queries_in = |actions: &[super::super::api::Action]| -> Vec<(u64, u64)> {
            actions
                .iter()
                .filter_map(|a| match a {
                    super::super::api::Action::Send(Message {
                        to,
                        term,
                        body: MessageBody::RepairQuery { .. },
                        ..
                    }) => Some((to.0, term.0)),
                    _ => None,
                })
                .collect()
        };
        assert!(queries_in(&step(&mut node, answer_in(3, 5, 9))).is_empty());
        assert!(node.status().repairing.is_some(), "node 1 has not answered");
        assert_eq!(node.status().term, Term(6));
        let actions = step(&mut node, answer_in(1, 6, 9));
        assert!(
            node.status().repairing.is_some(),
            "answers from terms 5 and 6"
        );
        // Both answered from logs before the range, in terms not above 6: node 2 moves to
        // term 7 (no vote, no leader) and asks both again in it.
        assert_eq!(queries_in(&actions), [(1, 7), (3, 7)]);
        assert_eq!(
            (node.status().term, node.hard_state().vote),
            (Term(7), None)
        );
        assert_eq!(
            granted(&step(&mut node, request_of_1(7, (9, 5), false))),
            [false],
            "node 1 may lack committed entries of the range"
        );
        // Later answers in term 6 change nothing, and it moves on no further.
        assert!(queries_in(&step(&mut node, answer_in(1, 6, 9))).is_empty());
        assert_eq!(node.status().term, Term(7));
        // Node 3 acknowledged 10..=11 before it adopted term 7: its answer shows them.
        step(&mut node, answer_in(1, 7, 9));
        step(&mut node, answer_in(3, 7, 11));
        assert!(node.status().repairing.is_some(), "node 3 holds the range");
        // Queries go on every minimum election timeout to node 3 only.
        let mut asked = Vec::new();
        for _ in 0..20 {
            asked.extend(queries_in(&step(&mut node, Input::Tick)));
        }
        assert!(
            !asked.is_empty() && asked.iter().all(|&q| q == (3, 7)),
            "{asked:?}"
        );
        // Both logs end before the range in term 7: nothing of it was committed.
        step(&mut node, answer_in(3, 7, 9));
        assert_eq!(node.status().repairing, None);
        assert_eq!(
            granted(&step(&mut node, request_of_1(8, (9, 5), false))),
            [true]
        );
    }

    /// A `RepairQuery` of a later term is adopted (without a leader) by a follower that is in
    /// no leader's lease, and its answer, which states its term, leaves only once that term
    /// is durable; a leader keeps its term and answers in it.
    #[test]
    fn a_query_of_a_later_term_is_adopted_outside_a_lease_and_answered_once_durable() {
        let mut node = damaged_follower();
        let actions = step(
            &mut node,
            message(1, 8, MessageBody::RepairQuery { lost: None }),
        );
        assert_eq!(node.status().term, Term(8));
        let saved = actions.iter().position(|a| {
            matches!(a, super::super::api::Action::Storage(super::super::api::StorageAction::Persist {
                hard_state: Some(h),
                ..
            }) if h.term == Term(8))
        });
        let answered = actions.iter().position(|a| {
            matches!(
                a,
                super::super::api::Action::Send(Message {
                    term: Term(8),
                    body: MessageBody::RepairAnswer { .. },
                    ..
                })
            )
        });
        assert!(
            matches!((saved, answered), (Some(s), Some(a)) if s < a),
            "{actions:?}"
        );
        let mut leader = super::super::testing::leader_of_three(|_| {});
        let query =
            super::super::testing::from_peer_in(5, 2, MessageBody::RepairQuery { lost: None });
        let actions = step(&mut leader, query);
        assert!(leader.is_leader());
        assert_eq!(leader.status().term, Term(1));
        let answered_in = actions.iter().find_map(|a| match a {
            super::super::api::Action::Send(Message {
                term,
                body: MessageBody::RepairAnswer { .. },
                ..
            }) => Some(*term),
            _ => None,
        });
        assert_eq!(answered_in, Some(Term(1)));
    }

    /// A damaged node of a configuration of `voters`, which synced 1..=5 and lost 4..=5; its
    /// term (3) moved on past its log's (2), so a candidate ending in term 2 never covers the
    /// range.
    fn damaged_in(voters: &[u64]) -> Replica {
        let recovered = lost_after((3, None, false), (3, 2), voters, 5, None);
        Replica::new(CoreConfig::new(NodeId(2), 7), recovered).unwrap()
    }

    /// With two voters, every voter change goes through a joint configuration whose outgoing
    /// half is the pair (membership.rs), so nothing in the lost range committed without the
    /// other voter: its word ends the repair (docs/SIM_FINDINGS.md, finding 10).
    #[test]
    fn two_voters_ask_the_other_one() {
        let mut node = damaged_in(&[1, 2]);
        let mut asked = Vec::new();
        for _ in 0..40 {
            asked.extend(repair_queries_to(&step(&mut node, Input::Tick)));
        }
        assert!(
            !asked.is_empty() && asked.iter().all(|&id| id == 1),
            "{asked:?}"
        );
        step(&mut node, answer(1, 4));
        assert!(node.status().repairing.is_some(), "node 1 holds entry 4");
        step(&mut node, answer(1, 3));
        assert_eq!(node.status().repairing, None);
    }

    /// The other voter of a pair holds part of the lost range (entry 4) in a term below the
    /// node's recovered term, so it does not cover the range by `candidate_covers`. Once it
    /// answered with a log holding no joint configuration from the range's start on (its
    /// snapshot before the range, or covering all of it), it holds every committed entry of
    /// the range: the node votes for it (the usual up-to-date check still applies) while its
    /// vote request shows the log it answered with, and for nobody else.
    #[test]
    fn two_voters_vote_for_the_other_once_it_answered_without_a_joint_configuration() {
        let mut node = damaged_in(&[1, 2]);
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
        // A joint configuration at 4, in the range: it may have been committed, and entries
        // after it without node 1.
        step(&mut node, answer_of(1, (4, 2), 0, 4));
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
        // Its snapshot at 4, in another configuration than the pair, hides which ones
        // 4 and the entries before it held.
        step(&mut node, answer_of(1, (4, 2), 4, 0));
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
        // A snapshot at 4 whose configuration is the pair: the chain of configurations after
        // it starts from the pair again, and the log after it holds no joint one: granted.
        let mut snapshot_pair = damaged_in(&[1, 2]);
        step(&mut snapshot_pair, answer_with(1, (4, 2), (4, true), 0));
        assert_eq!(
            granted(&step(&mut snapshot_pair, request_of_1(4, (4, 2), true))),
            [true]
        );
        // A joint configuration before the range (at 2) and a snapshot before it: granted.
        step(&mut node, answer_of(1, (4, 2), 1, 2));
        assert!(node.status().repairing.is_some(), "node 1 holds entry 4");
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [true]
        );
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), false))),
            [true]
        );
        assert!(
            node.status().repairing.is_some(),
            "still repairing: no entry yet"
        );
        // A snapshot covering the whole range: granted too.
        let mut node = damaged_in(&[1, 2]);
        step(&mut node, answer_of(1, (6, 2), 5, 6));
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (6, 2), false))),
            [true]
        );
        // The same answer means nothing in a configuration of three.
        let mut node = damaged_follower();
        step(&mut node, answer_of(1, (4, 2), 0, 0));
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
    }

    /// The answer holds only for the log it was given from: once the other voter's log
    /// changed (it may have received a joint configuration that then committed, and entries
    /// after it without this node), its vote request shows another last entry and is refused
    /// until it answers again (docs/SIM_FINDINGS.md, finding 36).
    #[test]
    fn two_voters_vote_for_the_other_only_while_its_log_is_the_one_it_answered_with() {
        let mut node = damaged_in(&[1, 2]);
        step(&mut node, answer_in_range(1, (4, 2)));
        // Its log grew (entry 5 of term 2) since it answered.
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (5, 2), true))),
            [false]
        );
        // Same length, another last term: another log.
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 3), true))),
            [false]
        );
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [true]
        );
        // A later answer from a log with a joint configuration in the range withdraws it.
        step(&mut node, answer_of(1, (5, 2), 0, 5));
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
        // An answer while it repairs a range of its own (its log end is further than its
        // last entry) is no word for the range.
        step(&mut node, {
            let body = MessageBody::RepairAnswer {
                log_end: LogIndex(9),
                last_log_index: LogIndex(4),
                last_log_term: Term(2),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership: false,
            };
            message(1, 1, body)
        });
        assert_eq!(
            granted(&step(&mut node, request_of_1(4, (4, 2), true))),
            [false]
        );
    }

    /// The only voter of its configuration may have committed the range alone: nobody's word
    /// can show otherwise, and nobody is asked.
    #[test]
    fn a_single_voter_asks_nobody() {
        let mut node = damaged_in(&[2]);
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

    /// The leader of term 8 (node 2 of {1, 2, 3}) appended 4..=5 in term 8 and lost them;
    /// storage recorded the frontier's term (8). Node 1's log ends at 5 in term 7 (its entry
    /// 5 a configuration entry of term 7, which is not the lost log's: the answer says so),
    /// node 3's at 3. docs/SIM_FINDINGS.md, finding 37 (seed 1921).
    fn lost_own_tail() -> Replica {
        repairing(lost_after(
            (8, Some(2), false),
            (3, 2),
            &[1, 2, 3],
            5,
            Some(8),
        ))
    }

    fn request(from: u64, term: u64, pre_vote: bool, last: (u64, u64)) -> Input {
        super::super::testing::vote_request_to_node_2(from, term, pre_vote, last)
    }

    /// A whole answer from `from` in `term`, its log ending at `last`, with or without a
    /// configuration entry that may be the lost log's.
    fn tail_answer(from: u64, term: u64, last: (u64, u64), range_membership: bool) -> Input {
        message(
            from,
            term,
            MessageBody::RepairAnswer {
                log_end: LogIndex(last.0),
                last_log_index: LogIndex(last.0),
                last_log_term: Term(last.1),
                snapshot_index: LogIndex(0),
                last_joint_index: LogIndex(0),
                snapshot_pair: false,
                range_membership,
            },
        )
    }

    /// The tail rule: once every other voter answered, above the recovered term, from a whole
    /// log holding no configuration entry that may be one of the lost range's, a candidate
    /// at least as up to date as each of those logs gets the vote (every commit resting on a
    /// lost acknowledgement is in one of them); nobody else does.
    #[test]
    fn a_lost_tail_of_its_own_term_yields_to_a_candidate_as_up_to_date_as_every_voter() {
        let mut node = lost_own_tail();
        // Nobody's log covers (5, 8): refused, as before.
        assert_eq!(
            granted(&step(&mut node, request(1, 9, true, (5, 7)))),
            [false]
        );
        // Answers in the recovered term itself do not count: the node raises its term.
        step(&mut node, tail_answer(1, 8, (5, 7), false));
        step(&mut node, tail_answer(3, 8, (3, 2), false));
        assert_eq!(node.status().term, Term(9), "raised to ask again");
        assert_eq!(
            granted(&step(&mut node, request(1, 10, true, (5, 7)))),
            [false]
        );
        // Node 1's log holds a configuration entry that may be the lost log's: no.
        step(&mut node, tail_answer(1, 9, (5, 7), true));
        step(&mut node, tail_answer(3, 9, (3, 2), false));
        assert_eq!(
            granted(&step(&mut node, request(1, 10, true, (5, 7)))),
            [false]
        );
        // Both answer above the recovered term, neither with such an entry.
        step(&mut node, tail_answer(1, 9, (5, 7), false));
        assert_eq!(
            granted(&step(&mut node, request(3, 10, true, (3, 2)))),
            [false],
            "node 3 is behind node 1's answered log"
        );
        assert_eq!(
            granted(&step(&mut node, request(1, 10, true, (4, 7)))),
            [false],
            "shorter than node 1's answered log"
        );
        assert_eq!(
            granted(&step(&mut node, request(1, 10, true, (5, 7)))),
            [true]
        );
        assert_eq!(
            granted(&step(&mut node, request(1, 10, false, (5, 7)))),
            [true]
        );
        assert!(
            node.status().repairing.is_some(),
            "the repair ends on the new leader's entries"
        );
        step(&mut node, append(1, 10, (3, 2), vec![entry(4, 7)]));
        assert!(node.status().repairing.is_some(), "short of 5");
        step(&mut node, append(1, 10, (4, 7), vec![entry(5, 7)]));
        assert_eq!(node.status().repairing, None, "the leader's log through 5");
    }

    /// With the frontier's term recorded, a candidate is judged by Raft's own up-to-date check
    /// against the lost log: node 2's term (3) moved past its lost entries' (2), which the
    /// recovered term alone could not tell.
    #[test]
    fn a_recorded_frontier_term_judges_candidates_against_the_lost_log() {
        let with_term = |term: Option<u64>| {
            let mut node = damaged_in(&[1, 2, 3]);
            if let Some(repair) = node.repair.as_mut() {
                repair.lost.through_term = term.map(Term);
            }
            node
        };
        let mut unknown = with_term(None);
        assert_eq!(
            granted(&step(&mut unknown, request(1, 4, true, (5, 2)))),
            [false]
        );
        let mut known = with_term(Some(2));
        assert_eq!(
            granted(&step(&mut known, request(1, 4, true, (4, 2)))),
            [false]
        );
        assert_eq!(
            granted(&step(&mut known, request(1, 4, true, (5, 2)))),
            [true]
        );
        assert_eq!(
            granted(&step(&mut known, request(1, 4, false, (5, 2)))),
            [true]
        );
    }

    /// What an answer says of configuration entries in the asker's lost range (4..=5, its
    /// entry at 5 of term 8, recovered term 8).
    #[test]
    fn an_answer_names_configuration_entries_that_may_be_the_lost_logs() {
        let answer_of_node = |entries: Vec<Entry>, through_term: u64| {
            let recovered = RecoveredState {
                hard_state: HardState {
                    term: Term(9),
                    vote: None,
                    commit: LogIndex(3),
                    votes_unknown: false,
                },
                snapshot: None,
                entries,
                initial_membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
                lost: None,
            };
            let mut node = Replica::new(CoreConfig::new(NodeId(2), 7), recovered).unwrap();
            let query = MessageBody::RepairQuery {
                lost: Some(RepairedRange {
                    from: LogIndex(4),
                    through: LogIndex(5),
                    through_term: Term(through_term),
                    recovered_term: Term(8),
                }),
            };
            step(&mut node, message(1, 9, query))
                .iter()
                .find_map(|a| match a {
                    super::super::api::Action::Send(Message {
                        body:
                            MessageBody::RepairAnswer {
                                range_membership, ..
                            },
                        ..
                    }) => Some(*range_membership),
                    _ => None,
                })
                .expect("answered")
        };
        let membership = |index: u64, term: u64| {
            let m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
            Entry::new(Term(term), LogIndex(index), EntryPayload::Membership(m))
        };
        let log = |last: Entry| {
            let mut entries: Vec<Entry> = (1..=3).map(|i| entry(i, 2)).collect();
            entries.push(entry(4, last.term.0.min(7)));
            entries.push(last);
            entries
        };
        // At the range's end in another term than the lost one's: not the lost log's.
        assert!(!answer_of_node(log(membership(5, 7)), 8));
        // In that term, or with the term unknown: it may be.
        assert!(answer_of_node(log(membership(5, 8)), 8));
        assert!(answer_of_node(log(membership(5, 7)), 0));
        // Inside the range in a term up to the recovered one: it may be.
        let mut inside: Vec<Entry> = (1..=3).map(|i| entry(i, 2)).collect();
        inside.push(membership(4, 7));
        assert!(answer_of_node(inside, 8));
        // Before the range's end in a term later than the one recorded at its end: not the
        // asker's (terms never decrease along its log).
        let mut later: Vec<Entry> = (1..=3).map(|i| entry(i, 2)).collect();
        later.push(membership(4, 8));
        assert!(!answer_of_node(later, 7));
        // After the range's end in a term below the one recorded there: not the asker's
        // either; in that term or later (up to the recovered one): it may be.
        let after = |term: u64| {
            let mut entries = log(entry(5, 7));
            entries.push(membership(6, term));
            entries
        };
        assert!(!answer_of_node(after(7), 8));
        assert!(answer_of_node(after(8), 8));
        // Of a term later than the recovered one: the asker never held it.
        assert!(!answer_of_node(log(membership(5, 9)), 8));
        // None at all.
        assert!(!answer_of_node(log(entry(5, 7)), 8));
    }

    /// A snapshot's configuration entry point (index, term); `None`: unknown.
    type EntryPoint = Option<(u64, u64)>;

    /// A voter of {1, 2, 3} in term 6 whose log was compacted into node 2's lost range
    /// (4..=5) by a snapshot at `snapshot` (term 4) that names `membership_entry` as where
    /// its configuration comes from (`None`: a snapshot file of an older rcraft), followed by
    /// `after`.
    fn compacted_voter(
        id: u64,
        snapshot: u64,
        membership_entry: EntryPoint,
        after: Vec<Entry>,
    ) -> Replica {
        let voters = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let meta = rcraft_wire::SnapshotMeta {
            index: LogIndex(snapshot),
            term: Term(4),
            membership: voters.clone(),
            membership_entry: membership_entry.map(|(index, term)| (LogIndex(index), Term(term))),
            size_bytes: 0,
            checksum: 0,
        };
        let recovered = RecoveredState {
            hard_state: HardState {
                term: Term(6),
                vote: None,
                commit: LogIndex(snapshot),
                votes_unknown: false,
            },
            snapshot: Some(meta),
            entries: after,
            initial_membership: voters,
            lost: None,
        };
        Replica::new(CoreConfig::new(NodeId(id), 7), recovered).unwrap()
    }

    /// Finding 39 (seed 2892) in small: node 2, leader of term 5 in {1, 2, 3}, lost the tail
    /// 4..=5 it appended in term 5 (`through_term` 5, recovered term 5). Node 1 took a
    /// snapshot at 4 and holds 5@4; node 3, the old leader of term 4, took one at 5 and
    /// holds a joint configuration at 6@4 (after the range's end in a term below the lost
    /// one's: not node 2's) and 7@4. Both snapshots hide part of the range. Node 2 asks
    /// both (its own `RepairQuery`), hands it their answers, and returns what each said of
    /// configuration entries in the range and whether node 3 (7@4, as up to date as both
    /// answers) then gets its pre-vote and its vote. `entries` are the snapshots'
    /// configuration entry points of nodes 1 and 3.
    fn lost_tail_among_compacted_logs(entries: [EntryPoint; 2]) -> (Vec<bool>, Replica) {
        let mut node = repairing(lost_after(
            (5, Some(2), false),
            (3, 2),
            &[1, 2, 3],
            5,
            Some(5),
        ));
        let joint = Membership {
            voters: [1, 2, 3].into_iter().map(NodeId).collect(),
            voters_outgoing: [1, 3].into_iter().map(NodeId).collect(),
            learners: Default::default(),
        };
        let mut voters = [
            compacted_voter(1, 4, entries[0], vec![entry(5, 4)]),
            compacted_voter(
                3,
                5,
                entries[1],
                vec![
                    Entry::new(Term(4), LogIndex(6), EntryPayload::Membership(joint)),
                    entry(7, 4),
                ],
            ),
        ];
        let mut queries = Vec::new();
        for _ in 0..20 {
            for action in step(&mut node, Input::Tick) {
                if let super::super::api::Action::Send(
                    query @ Message {
                        body: MessageBody::RepairQuery { .. },
                        ..
                    },
                ) = action
                {
                    queries.push(query);
                }
            }
        }
        assert_eq!(
            queries.len(),
            2,
            "nodes 1 and 3 asked once each: {queries:?}"
        );
        let mut said = Vec::new();
        for query in queries {
            let voter = &mut voters[if query.to == NodeId(1) { 0 } else { 1 }];
            for action in step(voter, Input::Message(query)) {
                if let super::super::api::Action::Send(
                    answer @ Message {
                        body: MessageBody::RepairAnswer { .. },
                        ..
                    },
                ) = action
                {
                    if let MessageBody::RepairAnswer {
                        range_membership, ..
                    } = answer.body
                    {
                        said.push(range_membership);
                    }
                    step(&mut node, Input::Message(answer));
                }
            }
        }
        (said, node)
    }

    /// Finding 39: the snapshots name configuration entries before the range, so the
    /// compacted prefixes hold none in it; the tail rule then lets node 2 vote for node 3,
    /// and the repair ends on its entries. Without the entry points (snapshots of an older
    /// rcraft) the answers say the range may hold one, and nobody gets the vote, as before.
    #[test]
    fn a_lost_tail_yields_to_a_candidate_once_snapshots_show_no_configuration_in_the_range() {
        let (said, mut node) = lost_tail_among_compacted_logs([Some((0, 0)), Some((2, 2))]);
        assert_eq!(
            said,
            [false, false],
            "neither prefix holds a configuration entry"
        );
        assert_eq!(
            granted(&step(&mut node, request(1, 7, true, (5, 4)))),
            [false],
            "node 1 is behind node 3's answered log"
        );
        assert_eq!(
            granted(&step(&mut node, request(3, 7, true, (7, 4)))),
            [true]
        );
        assert_eq!(
            granted(&step(&mut node, request(3, 7, false, (7, 4)))),
            [true]
        );
        step(
            &mut node,
            append(3, 7, (3, 2), vec![entry(4, 4), entry(5, 4)]),
        );
        assert_eq!(node.status().repairing, None, "node 3's log through 5");

        let (said, mut node) = lost_tail_among_compacted_logs([None, None]);
        assert_eq!(said, [true, true], "unknown entry points hide the range");
        assert_eq!(
            granted(&step(&mut node, request(3, 7, true, (7, 4)))),
            [false]
        );
    }

    /// A snapshot whose configuration comes from an entry inside the lost range (or at its
    /// start) hides it, and entries before it in the range may be configurations too: the
    /// answer says so and the tail rule refuses, even with the other voter's prefix clear.
    #[test]
    fn a_snapshot_configuration_from_inside_the_range_still_refuses_the_tail_rule() {
        for inside in [(4, 4), (5, 4)] {
            let (said, mut node) = lost_tail_among_compacted_logs([Some((0, 0)), Some(inside)]);
            assert_eq!(said, [false, true], "node 3's snapshot holds {inside:?}");
            assert_eq!(
                granted(&step(&mut node, request(3, 7, true, (7, 4)))),
                [false]
            );
            assert_eq!(
                granted(&step(&mut node, request(3, 7, false, (7, 4)))),
                [false]
            );
            assert!(node.status().repairing.is_some());
        }
    }
}
