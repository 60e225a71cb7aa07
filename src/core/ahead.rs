//! Appends that arrive ahead of their predecessor: a follower's side of pipelined
//! replication when the network reorders (SIM_FINDINGS 26).
//!
//! A leader in Replicate streams several AppendRequests before any is answered. When one
//! overtakes its predecessor, the follower's log does not reach its `prev_log_index` yet.
//! Refusing it at once sends the leader back to Probe from the follower's end (go-back-N),
//! and every append still in flight behind it is refused in turn, though nothing was lost.
//! Instead, a follower keeps such an append, unanswered, when it comes from the leader whose
//! appends it already accepts in this term (a new leader's first probe, which may well be
//! above the follower's end, is still refused at once: that is how the leader finds the
//! match point) and that stream is flowing: it accepted an append within half a heartbeat
//! interval (a follower back from a partition refuses at once, since what it missed was lost,
//! not late). When an accepted append fills the gap, the appends kept are taken in order
//! through the usual consistency check and acknowledged together, once durable (the
//! acknowledgement waits for their `Persist` like any other, `replica.rs`).
//!
//! A predecessor that was lost rather than late is answered by the follower itself: when the
//! gap has stayed open for half a heartbeat interval, it sends the refusal it held back, for
//! the last append it left unanswered (the leader probes from the follower's end, as it would
//! have at once; a probing leader takes only the answer to its outstanding probe), and again
//! after each further half interval while the gap stays open. An empty append ahead of the
//! log while a gap is open is not news and is not answered either; one with no gap open is
//! refused at once, as before. Beyond the bound (the leader's own in-flight window, in messages and bytes: it
//! never has more outstanding to this follower), an append is refused at once.
//!
//! Owned by the `Replica` (`Replica::ahead`). Invariants: nothing kept is acknowledged before
//! it passed the consistency check against the log and its entries are durable; everything
//! kept is of `stream`'s term and leader and lies beyond the log's end when kept; the kept
//! appends are forgotten on a change of term or leader, on a snapshot install, and when an
//! accepted append truncates the log.

use super::replica::{Phase, Replica};
use rcraft_wire::{Entry, LogIndex, NodeId, Term};
use std::collections::BTreeMap;

/// One append kept until its predecessor arrives.
#[derive(Debug)]
pub(super) struct HeldAppend {
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
    bytes: u64,
}

/// The appends a follower keeps ahead of its log, and whose stream they belong to.
#[derive(Debug, Default)]
pub(super) struct AheadAppends {
    /// The term and leader whose appends this follower accepted last; only theirs are kept.
    stream: Option<(Term, NodeId)>,
    /// Kept appends by `prev_log_index`.
    held: BTreeMap<LogIndex, HeldAppend>,
    /// Sum of the kept entries' `Entry::size_bytes`.
    bytes: u64,
    /// The tick the gap opened (the first append was kept) or was last answered.
    since_tick: u64,
    /// The tick an append of the stream was last accepted.
    accepted_tick: u64,
    /// The `prev_log_index` of the last append left unanswered (kept, a copy, or empty): the
    /// refusal held back answers it, so a probing leader, which takes only the answer to its
    /// outstanding probe, hears it.
    answer_at: LogIndex,
}

impl AheadAppends {
    /// Number of appends kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Forgets the appends kept (the stream stays).
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }

    /// Forgets the appends kept and the stream (a new term or leader, or a snapshot).
    pub(super) fn forget(&mut self) {
        self.drop_held();
        self.stream = None;
    }

    /// Checks the bookkeeping (for `Replica::check_invariants`).
    pub(super) fn check_invariants(&self, term: Term, last_index: LogIndex) {
        let bytes: u64 = self.held.values().map(|h| h.bytes).sum();
        assert_eq!(bytes, self.bytes, "kept appends' bytes");
        if !self.held.is_empty() {
            assert!(
                self.stream.is_some_and(|(t, _)| t <= term),
                "kept appends without their stream"
            );
        }
        // Kept appends beyond the log's end until taken (a truncation forgets them).
        if let Some((&first, _)) = self.held.first_key_value() {
            assert!(
                first > last_index || self.stream.is_some_and(|(t, _)| t < term),
                "a kept append at {first} the log already reaches ({last_index})"
            );
        }
    }
}

impl Replica {
    /// Ticks a follower may wait for a missing predecessor before answering with the refusal
    /// it held back: half a heartbeat interval, rounded up.
    fn ahead_wait_ticks(&self) -> u64 {
        self.config.heartbeat_interval_ticks.div_ceil(2)
    }

    /// An append from `from` whose `prev_log_index` is beyond the log's end: kept (or, when
    /// empty, left unanswered) if it belongs to the stream this follower accepts and fits the
    /// bound. Returns false when it must be refused now.
    pub(super) fn hold_ahead(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) -> bool {
        debug_assert!(prev_log_index > self.log.last_index());
        let wait = self.ahead_wait_ticks();
        let ahead = &mut self.ahead;
        if ahead.stream != Some((self.term, from)) {
            ahead.drop_held();
            return false;
        }
        if ahead.held.is_empty() && self.now_ticks.saturating_sub(ahead.accepted_tick) >= wait {
            // The stream was quiet (say, cut off by a partition): what came before this
            // append was lost rather than late.
            return false;
        }
        if entries.is_empty() {
            // Nothing to keep; with a gap open the timer answers (`tick_ahead`).
            if !ahead.held.is_empty() {
                ahead.answer_at = prev_log_index;
            }
            return !ahead.held.is_empty();
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let replaced = ahead.held.get(&prev_log_index);
        if replaced.is_some_and(|kept| kept.entries.len() >= entries.len()) {
            ahead.answer_at = prev_log_index;
            return true; // A copy, or a shorter resend of what is kept.
        }
        let freed = replaced.map_or(0, |kept| kept.bytes);
        let count = ahead.held.len() + usize::from(replaced.is_none());
        if count > self.config.max_inflight_messages
            || ahead.bytes - freed + bytes > self.config.max_inflight_bytes
        {
            return false;
        }
        if ahead.held.is_empty() {
            ahead.since_tick = self.now_ticks;
        }
        ahead.bytes = ahead.bytes - freed + bytes;
        ahead.answer_at = prev_log_index;
        let held = HeldAppend {
            prev_log_term,
            entries,
            leader_commit,
            bytes,
        };
        ahead.held.insert(prev_log_index, held);
        true
    }

    /// After this follower accepted an append from `from`: its later appends may be kept.
    pub(super) fn note_stream(&mut self, from: NodeId) {
        if self.ahead.stream != Some((self.term, from)) {
            self.ahead.forget();
            self.ahead.stream = Some((self.term, from));
        }
        self.ahead.accepted_tick = self.now_ticks;
    }

    /// The first kept append from `from` whose predecessor the log now reaches, taken out.
    pub(super) fn next_held(&mut self, from: NodeId) -> Option<(LogIndex, HeldAppend)> {
        if self.ahead.stream != Some((self.term, from)) {
            self.ahead.forget();
            return None;
        }
        let (&prev, _) = self.ahead.held.first_key_value()?;
        if prev > self.log.last_index() {
            return None;
        }
        let held = self.ahead.held.remove(&prev).expect("first key");
        self.ahead.bytes -= held.bytes;
        Some((prev, held))
    }

    /// Tick: a gap open for `ahead_wait_ticks` is answered with the refusal held back (its
    /// predecessor is taken as lost; the leader probes from our end), of the last append left
    /// unanswered: a leader in Replicate takes any refusal above the match point, but a
    /// probing one only the answer to its probe, which it sends again and again until
    /// answered. Kept appends outlive only their stream.
    pub(super) fn tick_ahead(&mut self) {
        if self.ahead.held.is_empty() {
            return;
        }
        let Some((term, leader)) = self.ahead.stream else {
            self.ahead.drop_held();
            return;
        };
        if self.phase != Phase::Follower || self.term != term || self.leader != Some(leader) {
            self.ahead.forget();
            return;
        }
        if self.now_ticks.saturating_sub(self.ahead.since_tick) < self.ahead_wait_ticks() {
            return;
        }
        self.ahead.since_tick = self.now_ticks;
        let first = self.ahead.held.first_key_value().map(|(&prev, _)| prev);
        let answer_at = match self.ahead.answer_at > self.log.last_index() {
            true => self.ahead.answer_at,
            // Taken since (the gap partly filled): the first still kept is beyond the log.
            false => first.expect("checked non-empty"),
        };
        self.reject_append(leader, answer_at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{
        Action, CoreConfig, Input, RecoveredState, StorageAction, StorageOutcome,
    };
    use super::super::progress::ProgressState;
    use super::super::testing::{from_peer_in, leader_of_three, step_confirming, to_node_2};
    use super::*;
    use rcraft_wire::{ConflictHint, Membership, Message, MessageBody};

    fn command(term: u64, index: u64) -> Entry {
        Entry::command(Term(term), LogIndex(index), None, &[index as u8])
    }

    /// An AppendRequest of leader `from` in `term`: after (`prev`, `prev_term`), `entries`.
    fn append(from: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>) -> Input {
        let body = MessageBody::AppendRequest {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        };
        to_node_2(from, term, body)
    }

    /// Node 2 of nodes 1-3 with `entries` recovered in `term`, configured by `configure`.
    fn node_2(term: u64, entries: Vec<Entry>, configure: impl FnOnce(&mut CoreConfig)) -> Replica {
        let mut config = CoreConfig::new(NodeId(2), 7);
        configure(&mut config);
        let recovered = RecoveredState {
            initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
            entries,
            hard_state: super::super::api::HardState {
                term: Term(term),
                ..Default::default()
            },
            ..RecoveredState::default()
        };
        Replica::new(config, recovered).unwrap()
    }

    /// Node 2 following leader 1 in term 1, holding entry 1 from it.
    fn following_leader_1(configure: impl FnOnce(&mut CoreConfig)) -> Replica {
        let mut follower = node_2(0, Vec::new(), configure);
        let answers = step_confirming(&mut follower, append(1, 1, (0, 0), vec![command(1, 1)]));
        assert_eq!(acks(&answers), [1]);
        follower
    }

    /// The match index of every acknowledgement among `actions`.
    fn acks(actions: &[Action]) -> Vec<u64> {
        answers(actions, true)
    }

    /// The probed index of every refusal among `actions`.
    fn refusals(actions: &[Action]) -> Vec<u64> {
        answers(actions, false)
    }

    fn answers(actions: &[Action], accepted: bool) -> Vec<u64> {
        (actions.iter())
            .filter_map(|a| match a {
                Action::Send(Message {
                    body:
                        MessageBody::AppendResponse {
                            success,
                            match_index,
                            ..
                        },
                    ..
                }) if *success == accepted => Some(match_index.0),
                _ => None,
            })
            .collect()
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| command(1, i)).collect()
    }

    /// An append that overtook its predecessor is kept, not refused; when the predecessor
    /// arrives both are taken and acknowledged together, once durable.
    #[test]
    fn an_append_ahead_of_its_predecessor_waits_for_it() {
        let mut follower = following_leader_1(|_| {});
        let early = step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5)));
        assert!(
            early.is_empty(),
            "neither refused nor acknowledged: {early:?}"
        );
        assert_eq!(follower.ahead.len(), 1);
        // The predecessor: the acknowledgement waits for the Persist of all four entries.
        follower.step(append(1, 1, (1, 1), entries(2..=3)));
        let actions = follower.take_actions();
        assert!(
            acks(&actions).is_empty(),
            "acknowledged before durable: {actions:?}"
        );
        let seq = (actions.iter())
            .find_map(|a| match a {
                Action::Storage(StorageAction::Persist { seq, entries, .. }) => {
                    let indexes: Vec<u64> = entries.iter().map(|e| e.index.0).collect();
                    assert_eq!(indexes, [2, 3, 4, 5]);
                    Some(*seq)
                }
                _ => None,
            })
            .expect("one persist");
        let answers = step_confirming(
            &mut follower,
            Input::Storage(StorageOutcome::Persisted { seq }),
        );
        assert_eq!(acks(&answers), [5]);
        assert!(refusals(&answers).is_empty());
        assert_eq!(follower.status().last_index, LogIndex(5));
        assert_eq!(follower.ahead.len(), 0);
        follower.check_invariants();
    }

    /// A predecessor that never comes (lost): the follower answers with the refusal it held
    /// back after half a heartbeat interval, and the leader's probe from its end fills the gap.
    #[test]
    fn a_lost_predecessor_is_refused_after_half_a_heartbeat() {
        let mut follower = following_leader_1(|config| config.heartbeat_interval_ticks = 5);
        assert!(step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5))).is_empty());
        // An empty append ahead of the log is no news while the gap is open.
        assert!(step_confirming(&mut follower, append(1, 1, (5, 1), Vec::new())).is_empty());
        for _ in 0..2 {
            let actions = step_confirming(&mut follower, Input::Tick);
            assert!(refusals(&actions).is_empty(), "{actions:?}");
        }
        let actions = step_confirming(&mut follower, Input::Tick);
        assert_eq!(
            refusals(&actions),
            [5],
            "the last left unanswered: {actions:?}"
        );
        let hint = (actions.iter()).find_map(|a| match a {
            Action::Send(Message {
                to,
                body: MessageBody::AppendResponse { conflict, .. },
                ..
            }) if *to == NodeId(1) => *conflict,
            _ => None,
        });
        let expected = ConflictHint {
            term: None,
            first_index: LogIndex(2),
        };
        assert_eq!(hint, Some(expected), "the leader probes from our end");
        // Still open: refused again after another half interval, not at every tick.
        let again: Vec<u64> = (0..3)
            .flat_map(|_| refusals(&step_confirming(&mut follower, Input::Tick)))
            .collect();
        assert_eq!(again, [5]);
        // The leader's probe from our end fills the gap; what was kept comes with it.
        let probe = step_confirming(&mut follower, append(1, 1, (1, 1), entries(2..=3)));
        assert_eq!(acks(&probe), [5]);
        follower.check_invariants();
    }

    /// A gap partly filled: the refusal held back answers beyond the log, never an index
    /// the log now holds.
    #[test]
    fn a_partly_filled_gap_is_refused_beyond_the_log() {
        let mut follower = following_leader_1(|config| config.heartbeat_interval_ticks = 5);
        for prev in [7, 3] {
            let early = append(1, 1, (prev, 1), entries(prev + 1..=prev + 2));
            assert!(step_confirming(&mut follower, early).is_empty());
        }
        let filled = step_confirming(&mut follower, append(1, 1, (1, 1), entries(2..=3)));
        assert_eq!(acks(&filled), [5]);
        let refused: Vec<u64> = (0..3)
            .flat_map(|_| refusals(&step_confirming(&mut follower, Input::Tick)))
            .collect();
        assert_eq!(refused, [7]);
        follower.check_invariants();
    }

    /// Kept appends are bounded by the leader's in-flight window, in messages and in bytes;
    /// beyond it an append is refused at once.
    #[test]
    fn appends_kept_ahead_stay_within_the_window() {
        let mut follower = following_leader_1(|config| config.max_inflight_messages = 2);
        for prev in [3, 5] {
            let early = append(1, 1, (prev, 1), entries(prev + 1..=prev + 2));
            assert!(step_confirming(&mut follower, early).is_empty());
        }
        // A copy of one kept is no news; a third is over the bound.
        assert!(step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5))).is_empty());
        let third = step_confirming(&mut follower, append(1, 1, (7, 1), entries(8..=9)));
        assert_eq!(refusals(&third), [7]);
        assert_eq!(follower.ahead.len(), 2);
        let filled = step_confirming(&mut follower, append(1, 1, (1, 1), entries(2..=3)));
        assert_eq!(acks(&filled), [7]);

        let bytes = entries(4..=5).iter().map(Entry::size_bytes).sum::<u64>();
        let mut follower = following_leader_1(|config| config.max_inflight_bytes = bytes + 1);
        assert!(step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5))).is_empty());
        let over = step_confirming(&mut follower, append(1, 1, (5, 1), entries(6..=7)));
        assert_eq!(refusals(&over), [5]);
        follower.check_invariants();
    }

    /// A new leader's first append above our end is refused at once: that is how it finds
    /// the match point. Appends are kept only from the leader already accepted in this term.
    #[test]
    fn a_new_leaders_first_probe_is_refused_at_once() {
        let mut follower = node_2(0, Vec::new(), |_| {});
        let probe = step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5)));
        assert_eq!(refusals(&probe), [3]);
        assert_eq!(follower.ahead.len(), 0);
    }

    /// A stream quiet for half a heartbeat interval (a follower back from a partition):
    /// what came before an append ahead of the log was lost, not late; refused at once.
    #[test]
    fn after_a_quiet_stream_an_append_ahead_is_refused_at_once() {
        let mut follower = following_leader_1(|config| config.heartbeat_interval_ticks = 5);
        for _ in 0..3 {
            assert!(step_confirming(&mut follower, Input::Tick).is_empty());
        }
        let late = step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5)));
        assert_eq!(refusals(&late), [3]);
        assert_eq!(follower.ahead.len(), 0);
    }

    /// A new term forgets what was kept: the next leader's appends stand on their own.
    #[test]
    fn a_new_term_forgets_the_appends_kept() {
        let mut follower = following_leader_1(|_| {});
        assert!(step_confirming(&mut follower, append(1, 1, (3, 1), entries(4..=5))).is_empty());
        let heartbeat = MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            read_context: 1,
        };
        step_confirming(&mut follower, to_node_2(3, 2, heartbeat));
        assert_eq!(follower.ahead.len(), 0);
        let from_3 = step_confirming(&mut follower, append(3, 2, (1, 1), entries(2..=3)));
        assert_eq!(
            acks(&from_3),
            [3],
            "nothing of leader 1's kept append taken"
        );
        follower.check_invariants();
    }

    /// A truncation forgets what was kept: it was judged against the log replaced.
    #[test]
    fn a_truncation_forgets_the_appends_kept() {
        let stale = (1..=4).map(|i| command(1, i)).collect();
        let mut follower = node_2(1, stale, |_| {});
        // Leader 1 of term 2 matches at index 1 (2-4 are stale, of term 1).
        let probe = step_confirming(&mut follower, append(1, 2, (1, 1), Vec::new()));
        assert_eq!(acks(&probe), [1]);
        let ahead = vec![command(2, 6)];
        assert!(step_confirming(&mut follower, append(1, 2, (5, 2), ahead)).is_empty());
        let replaced = vec![command(2, 2), command(2, 3)];
        let actions = step_confirming(&mut follower, append(1, 2, (1, 1), replaced));
        assert_eq!(acks(&actions), [3]);
        assert_eq!(follower.ahead.len(), 0);
        follower.check_invariants();
    }

    /// Leader and follower together: appends delivered out of order are caught up without
    /// the leader going back to Probe (no refusal, no probe below what was streamed).
    #[test]
    fn an_out_of_order_stream_catches_up_without_a_probe() {
        let mut leader = leader_of_three(|_| {});
        let mut follower = following_leader_1(|_| {});
        let mut to_follower = Vec::new();
        for id in 0..3 {
            let input = Input::Propose {
                id,
                session: None,
                data: vec![id as u8],
            };
            for action in step_confirming(&mut leader, input) {
                if let Action::Send(message) = action {
                    if message.to == NodeId(2) {
                        to_follower.push(message);
                    }
                }
            }
        }
        let prevs: Vec<u64> = (to_follower.iter())
            .filter_map(|m| match &m.body {
                MessageBody::AppendRequest { prev_log_index, .. } => Some(prev_log_index.0),
                _ => None,
            })
            .collect();
        assert_eq!(prevs, [1, 2, 3], "one append per proposal");
        // Delivered last first.
        let mut answers = Vec::new();
        for message in to_follower.into_iter().rev() {
            answers.extend(step_confirming(&mut follower, Input::Message(message)));
        }
        assert!(refusals(&answers).is_empty(), "{answers:?}");
        assert_eq!(acks(&answers), [4]);
        let mut resent = Vec::new();
        for answer in answers {
            if let Action::Send(message) = answer {
                let input = from_peer_in(1, 2, message.body);
                resent.extend(step_confirming(&mut leader, input));
            }
        }
        let node_2 = (leader.status().replication.into_iter())
            .find(|p| p.id == NodeId(2))
            .unwrap();
        assert_eq!(node_2.match_index, LogIndex(4));
        let pr = &leader.leader_state.as_ref().unwrap().progress[&NodeId(2)];
        assert_eq!(pr.state, ProgressState::Replicate);
        // At most the new commit index, after index 4: nothing is sent again.
        let probes = (resent.iter()).any(|a| {
            matches!(a, Action::Send(Message {
                to,
                body: MessageBody::AppendRequest { prev_log_index, .. },
                ..
            }) if *to == NodeId(2) && *prev_log_index < LogIndex(4))
        });
        assert!(!probes, "sent again: {resent:?}");
        leader.check_invariants();
    }
}
