//! Linearizable reads without writing to the log: ReadIndex (thesis §6.4) and, behind
//! `CoreConfig::lease_reads`, lease reads (thesis §6.4.1), for this node's callers and for
//! followers serving follower reads (`follower_read.rs`).
//!
//! Owned by the leader's `Replica`. ReadIndex: the leader records its commit index as the
//! read index, then confirms it is still leader with a heartbeat round answered by a quorum;
//! the caller serves the read once the state machine applied through that index. A new leader
//! first waits until it commits an entry of its own term (its no-op), since before that its
//! commit index may lag the true one.
//!
//! Lease reads skip the heartbeat round while a quorum answered a heartbeat *sent* less than
//! `election_timeout_min * (1 - 1/LEASE_DRIFT_DIVISOR) - 1` ticks ago. This is safe only
//! under the clock-drift bound stated in `limits.rs`: followers that answered will not elect
//! anyone else until their own minimum election timeout has passed since they got that
//! heartbeat, and CheckQuorum plus the disruptive-vote rule make them keep that promise.
//!
//! Invariants: pending reads are confirmed in request order; rounds only grow within a term;
//! a follower's acknowledged round never exceeds the last round sent, so only an answer to a
//! round actually broadcast confirms a read; every pending read is answered (ready or
//! rejected) when the leader steps down.

use super::api::{Action, ProposeError, RequestId};
use super::limits::{HEARTBEAT_ROUNDS_REMEMBERED, LEASE_DRIFT_DIVISOR, PENDING_READS_MAX};
use super::quorum;
use super::replica::{Phase, Replica};
use rcraft_wire::{LogIndex, MessageBody, NodeId, ReadMode};
use std::collections::VecDeque;

/// Who asked for a read: this node's caller, or a follower serving a follower read.
#[derive(Clone, Copy, Debug)]
pub(super) enum ReadOrigin {
    /// `Input::ReadIndex` at this node; answered with `ReadReady` or `ReadRejected`.
    Local(RequestId),
    /// A follower's `ReadIndexRequest`; answered with a `ReadIndexResponse`.
    Remote {
        /// The follower.
        from: NodeId,
        /// Its request number, echoed.
        request: u64,
    },
}

/// A read waiting for its heartbeat round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    origin: ReadOrigin,
    index: LogIndex,
    round: u64,
}

/// The leader's read bookkeeping.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<ReadOrigin>,
    /// Reads waiting for a quorum to answer their round, in request order.
    pending: VecDeque<PendingRead>,
    /// Last heartbeat round started.
    round: u64,
    /// A read needs a round that has not been broadcast yet.
    round_requested: bool,
    /// Recent rounds and the tick each was sent at (oldest first).
    round_sent_tick: VecDeque<(u64, u64)>,
}

impl ReadQueue {
    /// Starts a new heartbeat round at tick `now`; returns its number.
    pub(super) fn start_round(&mut self, now: u64) -> u64 {
        self.round += 1;
        self.round_requested = false;
        self.round_sent_tick.push_back((self.round, now));
        if self.round_sent_tick.len() > HEARTBEAT_ROUNDS_REMEMBERED {
            self.round_sent_tick.pop_front();
        }
        self.round
    }

    /// The round a follower's answer carrying `read_context` acknowledges: at most the last
    /// round sent. A larger context (from a buggy or forged answer) must not confirm reads
    /// waiting for a round not broadcast yet, nor stand for every later round.
    pub(super) fn acknowledged_round(&self, read_context: u64) -> u64 {
        read_context.min(self.round)
    }

    /// The tick round `round` was sent at, if still remembered.
    fn sent_tick(&self, round: u64) -> Option<u64> {
        self.round_sent_tick
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, tick)| *tick)
    }

    fn len(&self) -> usize {
        self.waiting_for_commit.len() + self.pending.len()
    }
}

/// The refusal of a lease read at a node running without lease reads.
pub(super) const LEASE_READS_OFF: &str = "lease reads are off on this cluster: a read \
    in lease mode needs the servers started with --lease-reads on (lease_reads = on in the \
    configuration file); use the linearizable or follower read mode instead";

impl Replica {
    /// `Input::ReadIndex`.
    pub(super) fn on_read_index(&mut self, id: RequestId, mode: ReadMode) {
        match mode {
            ReadMode::Linearizable => self.read_at_leader(ReadOrigin::Local(id)),
            ReadMode::Lease if !self.config.lease_reads => {
                let error = ProposeError::Rejected(LEASE_READS_OFF.to_string());
                self.actions.push(Action::ReadRejected { id, error });
            }
            // With lease reads on, every read at the leader uses the lease while it holds.
            ReadMode::Lease => self.read_at_leader(ReadOrigin::Local(id)),
            ReadMode::Follower if self.leader_state.is_some() => {
                self.read_at_leader(ReadOrigin::Local(id))
            }
            ReadMode::Follower => self.forward_read(id),
        }
    }

    /// A read to be served at this node's commit index once its leadership is confirmed.
    pub(super) fn read_at_leader(&mut self, origin: ReadOrigin) {
        let Some(state) = self.leader_state.as_mut() else {
            let error = self.not_leader();
            self.refuse_read(origin, error);
            return;
        };
        if state.reads.len() >= PENDING_READS_MAX {
            self.refuse_read(origin, ProposeError::Overloaded);
            return;
        }
        if self.log.term_at(self.log.committed_index()) != Some(self.term) {
            state.reads.waiting_for_commit.push(origin);
            return;
        }
        self.start_read(origin);
    }

    /// Answers a read that cannot be served: the caller's with `ReadRejected`, a follower's
    /// with a refusing `ReadIndexResponse` (the follower answers its caller).
    fn refuse_read(&mut self, origin: ReadOrigin, error: ProposeError) {
        match origin {
            ReadOrigin::Local(id) => self.actions.push(Action::ReadRejected { id, error }),
            ReadOrigin::Remote { from, request } => {
                let body = MessageBody::ReadIndexResponse {
                    request,
                    index: None,
                };
                self.send(from, body);
            }
        }
    }

    /// Answers a read whose leadership check passed at read index `index`.
    fn release_read(&mut self, origin: ReadOrigin, index: LogIndex) {
        match origin {
            ReadOrigin::Local(id) => {
                let term = self.term;
                self.actions.push(Action::ReadReady { id, index, term });
            }
            ReadOrigin::Remote { from, request } => {
                let body = MessageBody::ReadIndexResponse {
                    request,
                    index: Some(index),
                };
                self.send(from, body);
            }
        }
    }

    /// Confirms leadership for a read at the current commit index.
    fn start_read(&mut self, origin: ReadOrigin) {
        let index = self.log.committed_index();
        let single_voter = self.voters() == [self.id];
        let lease_ok = self.config.lease_reads && self.lease_valid();
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        if single_voter || lease_ok {
            self.release_read(origin, index);
            return;
        }
        let round = state.reads.round + 1;
        state.reads.round_requested = true;
        state.reads.pending.push_back(PendingRead {
            origin,
            index,
            round,
        });
    }

    /// Broadcasts the heartbeat round that reads stepped since the last drain wait for (one
    /// round per drain, so many reads share it).
    pub(super) fn maybe_broadcast_read_round(&mut self) {
        if self
            .leader_state
            .as_ref()
            .is_some_and(|s| s.reads.round_requested)
        {
            self.broadcast_heartbeat();
        }
    }

    /// Releases every read whose round a quorum has answered.
    pub(super) fn confirm_reads(&mut self) {
        let me = self.id;
        loop {
            let Some(state) = self.leader_state.as_mut() else {
                return;
            };
            let Some(read) = state.reads.pending.front().copied() else {
                return;
            };
            let confirmed = quorum::is_quorum(&self.membership, |id| {
                id == me
                    || state
                        .progress
                        .get(&id)
                        .is_some_and(|p| p.acked_round >= read.round)
            });
            if !confirmed {
                return;
            }
            state.reads.pending.pop_front();
            self.release_read(read.origin, read.index);
        }
    }

    /// The leader committed an entry: reads that waited for its first commit may start.
    pub(super) fn start_reads_waiting_for_commit(&mut self) {
        if self.log.term_at(self.log.committed_index()) != Some(self.term) {
            return;
        }
        let waiting = match self.leader_state.as_mut() {
            Some(state) => std::mem::take(&mut state.reads.waiting_for_commit),
            None => return,
        };
        for origin in waiting {
            self.start_read(origin);
        }
    }

    /// Leadership is lost: every read of this node's callers still waiting is refused.
    /// Followers' reads are dropped unanswered: an answer would carry this node's new term
    /// (disturbing a follower that may still follow a live leader), and each follower refuses
    /// its forwarded reads on its own when its leader or term changes or the leader stays
    /// silent for an election timeout.
    pub(super) fn reject_pending_reads(&mut self, leader: Option<NodeId>) {
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let mut origins: Vec<ReadOrigin> = std::mem::take(&mut state.reads.waiting_for_commit);
        origins.extend(state.reads.pending.drain(..).map(|r| r.origin));
        for origin in origins {
            if let ReadOrigin::Local(id) = origin {
                let error = ProposeError::NotLeader { leader };
                self.actions.push(Action::ReadRejected { id, error });
            }
        }
    }

    /// True while the leader holds a lease: a quorum answered a heartbeat sent recently
    /// enough (see the module header for the drift bound). Requires CheckQuorum.
    fn lease_valid(&self) -> bool {
        if !self.config.check_quorum || self.phase != Phase::Leader {
            return false;
        }
        let Some(state) = self.leader_state.as_ref() else {
            return false;
        };
        if state.lease_revoked {
            return false;
        }
        let now = self.now_ticks;
        let quorum_sent_tick = quorum::quorum_value(&self.membership, |id| {
            if id == self.id {
                return now;
            }
            let round = state.progress.get(&id).map(|p| p.acked_round).unwrap_or(0);
            state.reads.sent_tick(round).unwrap_or(0)
        });
        let min = self.config.election_timeout_min_ticks;
        let lease_ticks = (min - min / LEASE_DRIFT_DIVISOR).saturating_sub(1);
        // A round sent at tick 0 would be ambiguous with "never"; ticks start at 1 once a
        // leader has ticked, and a brand-new leader has no lease anyway.
        quorum_sent_tick > 0 && now.saturating_sub(quorum_sent_tick) < lease_ticks
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::Input;
    use super::*;
    use rcraft_wire::Message;

    use super::super::testing::{from_peer_in, leader_of_three, step_confirming as step};

    fn from_peer(from: u64, body: MessageBody) -> Input {
        from_peer_in(1, from, body)
    }

    fn read(id: RequestId) -> Input {
        Input::ReadIndex {
            id,
            mode: ReadMode::Linearizable,
        }
    }

    fn ready_reads(actions: &[Action]) -> Vec<RequestId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ReadReady { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The read context of the heartbeats among `actions` (one round per drain).
    fn heartbeat_round(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::Send(Message {
                body: MessageBody::Heartbeat { read_context, .. },
                ..
            }) => Some(*read_context),
            _ => None,
        })
    }

    #[test]
    fn an_answer_for_a_round_not_yet_sent_confirms_no_read() {
        let mut leader = leader_of_three(|_| {});
        // Read 7 waits for round r, broadcast when the actions are drained.
        let actions = step(&mut leader, read(7));
        let round = heartbeat_round(&actions).expect("a round is sent for the read");
        // Read 8 waits for round r + 1, not sent yet. An answer claiming a later round (a
        // forged or buggy peer) confirms only what was sent: read 7, never read 8.
        leader.step(read(8));
        let forged = MessageBody::HeartbeatResponse {
            read_context: round + 1,
        };
        leader.step(from_peer(2, forged));
        let actions = step(&mut leader, Input::Tick);
        assert_eq!(ready_reads(&actions), [7]);
        let next = heartbeat_round(&actions).expect("read 8's round is sent now");
        assert_eq!(next, round + 1);
        // Read 8 is confirmed by an answer to its own round, once sent.
        let ack = MessageBody::HeartbeatResponse { read_context: next };
        assert_eq!(ready_reads(&step(&mut leader, from_peer(3, ack))), [8]);
    }

    #[test]
    fn a_far_future_read_context_does_not_confirm_later_reads() {
        let mut leader = leader_of_three(|_| {});
        let forged = MessageBody::HeartbeatResponse {
            read_context: u64::MAX,
        };
        step(&mut leader, from_peer(2, forged));
        // Node 2's acknowledgement counts only up to the last round sent, so a new read still
        // needs a quorum to answer its own round: node 3 answering an older one is not enough.
        let actions = step(&mut leader, read(9));
        let round = heartbeat_round(&actions).expect("a round is sent for the read");
        let old = MessageBody::HeartbeatResponse {
            read_context: round - 1,
        };
        let actions = step(&mut leader, from_peer(3, old));
        assert!(ready_reads(&actions).is_empty(), "{actions:?}");
        let ack = MessageBody::HeartbeatResponse {
            read_context: round,
        };
        assert_eq!(ready_reads(&step(&mut leader, from_peer(3, ack))), [9]);
    }
}
