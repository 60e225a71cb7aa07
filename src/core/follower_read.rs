//! Follower reads (thesis §6.4, "followers could also offload reads"): a follower that knows
//! the leader of its term asks it for a read index, and the caller serves the read once this
//! node's state machine applied through that index, as it does for a leader's read.
//!
//! Owned by a follower's (or learner's) `Replica`. The leader side is `read_index.rs`: a
//! `ReadIndexRequest` is a read of remote origin that waits for the same heartbeat round (or
//! lease) as a read of the leader's own callers, and is answered with its read index.
//!
//! Why this is linearizable: the read arrived here before the leader recorded its commit
//! index, and the leader confirmed it still led after recording it; so the index covers every
//! write acknowledged before the read began, and applying through it here (entries up to a
//! committed index are the same on every node) yields a state at least that new.
//!
//! The reads stepped between two drains share one `ReadIndexRequest`, sent when the actions
//! are drained, as a leader's reads share one heartbeat round.
//!
//! Invariants: at most `FORWARDED_READS_MAX` reads are forwarded at once; each is asked of
//! the leader of the term it arrived in, and is answered exactly once: ready when that leader
//! answers with an index in that same term, rejected when the leader refuses, when this
//! node's term or leader changes or it stops following, or when the leader stays silent for a
//! maximum election timeout. A duplicate or late answer finds no entry and is ignored.

use super::api::{Action, ProposeError, RequestId};
use super::limits::FORWARDED_READS_MAX;
use super::replica::{Phase, Replica};
use super::rng::SplitMix64;
use rcraft_wire::{LogIndex, MessageBody, NodeId, Term};
use std::collections::BTreeMap;

/// Follower reads sent to the leader in one `ReadIndexRequest` (every read stepped since the
/// last drain shares one request, as a leader's reads share one heartbeat round).
#[derive(Clone, Debug)]
struct ForwardedBatch {
    /// The callers' ids, in request order.
    ids: Vec<RequestId>,
    /// The leader asked.
    leader: NodeId,
    /// The term it was asked in.
    term: Term,
    /// `now_ticks` when it was asked.
    sent_tick: u64,
}

/// A follower's table of forwarded reads.
#[derive(Debug, Default)]
pub(super) struct ForwardedReads {
    /// Sent batches by request number.
    sent: BTreeMap<u64, ForwardedBatch>,
    /// Reads stepped since the last drain, with the leader and term they are for; sent as
    /// one batch when the actions are drained.
    unsent: Vec<(RequestId, NodeId, Term)>,
    /// Reads in `sent` and `unsent`. Invariant: `<= FORWARDED_READS_MAX`.
    count: usize,
    /// The next request number; request numbers are never reused by one replica, and each
    /// replica starts at its own (see [`ForwardedReads::new`]).
    next_request: u64,
}

impl ForwardedReads {
    /// An empty table whose request numbers start at a number drawn from `seed` (a node's
    /// seed differs at every start). Starting at 0 in every life let a restarted follower
    /// take the leader's late answer to the request its previous life sent under the same
    /// number for its own new request, and serve a read at a stale index (simulator seed
    /// 7910). Drawn apart from the replica's generator, so election timeouts stay as they were.
    pub(super) fn new(seed: u64) -> ForwardedReads {
        let first = SplitMix64::new(seed ^ 0xF0DE_D5EA_D000_0001).next_u64();
        ForwardedReads {
            // Half the range: numbers only grow, one per drain, and never wrap.
            next_request: first >> 1,
            ..ForwardedReads::default()
        }
    }
}

impl Replica {
    /// A follower read at a node that does not lead: forward it to the leader, or refuse it
    /// with the leader hint.
    pub(super) fn forward_read(&mut self, id: RequestId) {
        let leader = match self.leader {
            Some(leader) if self.phase == Phase::Follower && leader != self.id => leader,
            _ => {
                let error = self.not_leader();
                self.actions.push(Action::ReadRejected { id, error });
                return;
            }
        };
        if self.forwarded_reads.count >= FORWARDED_READS_MAX {
            let error = ProposeError::NotLeader {
                leader: Some(leader),
            };
            self.actions.push(Action::ReadRejected { id, error });
            return;
        }
        self.forwarded_reads.count += 1;
        self.forwarded_reads.unsent.push((id, leader, self.term));
    }

    /// Sends the reads stepped since the last drain to the leader, as one request.
    pub(super) fn send_forwarded_reads(&mut self) {
        let table = &mut self.forwarded_reads;
        let Some(&(_, leader, term)) = table.unsent.first() else {
            return;
        };
        // `settle_forwarded_reads` ran after every step, so every unsent read is for this
        // leader and term.
        let ids: Vec<RequestId> = table.unsent.drain(..).map(|(id, _, _)| id).collect();
        let request = table.next_request;
        table.next_request += 1;
        let batch = ForwardedBatch {
            ids,
            leader,
            term,
            sent_tick: self.now_ticks,
        };
        table.sent.insert(request, batch);
        self.send(leader, MessageBody::ReadIndexRequest { request });
    }

    /// A follower asks this node, in this node's term, for a read index.
    pub(super) fn on_read_index_request(&mut self, from: NodeId, request: u64) {
        self.read_at_leader(super::read_index::ReadOrigin::Remote { from, request });
    }

    /// The leader answered a forwarded read (the message is of this node's current term).
    pub(super) fn on_read_index_response(
        &mut self,
        from: NodeId,
        request: u64,
        index: Option<LogIndex>,
    ) {
        let Some(batch) = self.forwarded_reads.sent.get(&request) else {
            return;
        };
        if batch.leader != from || batch.term != self.term {
            return;
        }
        let batch = self
            .forwarded_reads
            .sent
            .remove(&request)
            .expect("checked present");
        self.forwarded_reads.count -= batch.ids.len();
        for id in batch.ids {
            match index {
                Some(index) => {
                    let term = batch.term;
                    self.actions.push(Action::ReadReady { id, index, term });
                }
                None => {
                    let error = ProposeError::NotLeader {
                        leader: self.leader,
                    };
                    self.actions.push(Action::ReadRejected { id, error });
                }
            }
        }
    }

    /// Refuses every forwarded read that can no longer be answered: its leader or term is no
    /// longer this node's, this node stopped following, or the leader stayed silent for a
    /// maximum election timeout (the request or its answer was lost). Runs after every step.
    pub(super) fn settle_forwarded_reads(&mut self) {
        if self.forwarded_reads.count == 0 {
            return;
        }
        let (term, leader, now) = (self.term, self.leader, self.now_ticks);
        let following = self.phase == Phase::Follower;
        let timeout = self.config.election_timeout_max_ticks;
        let current = |read_leader: NodeId, read_term: Term| {
            following && read_term == term && leader == Some(read_leader)
        };
        let table = &mut self.forwarded_reads;
        let mut refused: Vec<RequestId> = Vec::new();
        table.unsent.retain(|&(id, read_leader, read_term)| {
            let keep = current(read_leader, read_term);
            if !keep {
                refused.push(id);
            }
            keep
        });
        let stale: Vec<u64> = table
            .sent
            .iter()
            .filter(|(_, batch)| {
                !current(batch.leader, batch.term) || now.saturating_sub(batch.sent_tick) >= timeout
            })
            .map(|(&request, _)| request)
            .collect();
        for request in stale {
            if let Some(batch) = table.sent.remove(&request) {
                refused.extend(batch.ids);
            }
        }
        table.count -= refused.len();
        for id in refused {
            let error = ProposeError::NotLeader { leader };
            self.actions.push(Action::ReadRejected { id, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::Input;
    use super::super::testing::{from_peer_in, leader_of_three, step_confirming};
    use super::*;
    use crate::core::{CoreConfig, RecoveredState};
    use rcraft_wire::{Membership, Message, ReadMode};

    /// A message of term `term` from node `from` to node 2.
    fn to_two(term: u64, from: u64, body: MessageBody) -> Input {
        Input::Message(Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(term),
            body,
        })
    }

    /// Node 2 following leader 1 in term 1, nodes 1-3.
    fn follower_of_three() -> Replica {
        follower_of_three_seeded(2)
    }

    /// As [`follower_of_three`], its replica built with `seed` (a node's seed differs at
    /// every start).
    fn follower_of_three_seeded(seed: u64) -> Replica {
        let config = CoreConfig::new(NodeId(2), seed);
        let recovered = RecoveredState {
            initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
            ..RecoveredState::default()
        };
        let mut follower = Replica::new(config, recovered).unwrap();
        let heartbeat = MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            read_context: 0,
        };
        follower.step(to_two(1, 1, heartbeat));
        follower.take_actions();
        follower
    }

    fn follower_read(id: RequestId) -> Input {
        Input::ReadIndex {
            id,
            mode: ReadMode::Follower,
        }
    }

    /// The ReadIndexRequests among `actions`, as (to, request).
    fn read_requests(actions: &[Action]) -> Vec<(NodeId, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    to,
                    body: MessageBody::ReadIndexRequest { request },
                    ..
                }) => Some((*to, *request)),
                _ => None,
            })
            .collect()
    }

    /// Read outcomes among `actions`: (id, Ok(index)) or (id, Err(error)).
    fn outcomes(actions: &[Action]) -> Vec<(RequestId, Result<LogIndex, ProposeError>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ReadReady { id, index, .. } => Some((*id, Ok(*index))),
                Action::ReadRejected { id, error } => Some((*id, Err(error.clone()))),
                _ => None,
            })
            .collect()
    }

    fn answer(request: u64, index: Option<LogIndex>) -> Input {
        let body = MessageBody::ReadIndexResponse { request, index };
        to_two(1, 1, body)
    }

    #[test]
    fn a_follower_read_is_ready_once_the_leader_confirms_its_index() {
        let mut follower = follower_of_three();
        let actions = step_confirming(&mut follower, follower_read(5));
        let requests = read_requests(&actions);
        assert_eq!(requests.len(), 1, "{actions:?}");
        assert_eq!(requests[0].0, NodeId(1));
        assert!(
            outcomes(&actions).is_empty(),
            "no answer before the leader's"
        );
        let actions = step_confirming(&mut follower, answer(requests[0].1, Some(LogIndex(7))));
        assert_eq!(outcomes(&actions), [(5, Ok(LogIndex(7)))]);
        // A duplicate of the answer (the network may duplicate) answers nothing again.
        let actions = step_confirming(&mut follower, answer(requests[0].1, Some(LogIndex(7))));
        assert!(outcomes(&actions).is_empty(), "{actions:?}");
    }

    #[test]
    fn a_restarted_follower_does_not_take_the_answer_meant_for_its_previous_life() {
        // Simulator seed 7910: the answer to the request a follower sent before it crashed
        // arrived after its restart, when a new read had gone out under the same number.
        let mut before = follower_of_three_seeded(2);
        let actions = step_confirming(&mut before, follower_read(1));
        let old_request = read_requests(&actions)[0].1;
        let mut after = follower_of_three_seeded(3);
        let actions = step_confirming(&mut after, follower_read(1));
        let new_request = read_requests(&actions)[0].1;
        assert_ne!(old_request, new_request);
        let actions = step_confirming(&mut after, answer(old_request, Some(LogIndex(1))));
        assert!(outcomes(&actions).is_empty(), "{actions:?}");
        let actions = step_confirming(&mut after, answer(new_request, Some(LogIndex(4))));
        assert_eq!(outcomes(&actions), [(1, Ok(LogIndex(4)))]);
    }

    #[test]
    fn reads_stepped_before_one_drain_share_one_request() {
        let mut follower = follower_of_three();
        follower.step(follower_read(1));
        follower.step(follower_read(2));
        let actions = step_confirming(&mut follower, follower_read(3));
        let requests = read_requests(&actions);
        assert_eq!(requests.len(), 1, "{actions:?}");
        let actions = step_confirming(&mut follower, answer(requests[0].1, Some(LogIndex(4))));
        let ready = [1, 2, 3].map(|id| (id, Ok(LogIndex(4))));
        assert_eq!(outcomes(&actions), ready);
    }

    #[test]
    fn the_leader_answers_a_remote_read_after_its_heartbeat_round() {
        let mut leader = leader_of_three(|_| {});
        let request = from_peer_in(1, 2, MessageBody::ReadIndexRequest { request: 3 });
        let actions = step_confirming(&mut leader, request);
        let round = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(Message {
                    body: MessageBody::Heartbeat { read_context, .. },
                    ..
                }) => Some(*read_context),
                _ => None,
            })
            .expect("the remote read waits for a heartbeat round");
        assert!(!actions.iter().any(|a| matches!(
            a,
            Action::Send(Message {
                body: MessageBody::ReadIndexResponse { .. },
                ..
            })
        )));
        let ack = MessageBody::HeartbeatResponse {
            read_context: round,
        };
        let actions = step_confirming(&mut leader, from_peer_in(1, 3, ack));
        let answers: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    to,
                    body: MessageBody::ReadIndexResponse { request, index },
                    ..
                }) => Some((*to, *request, *index)),
                _ => None,
            })
            .collect();
        let commit = leader.status().commit_index;
        assert_eq!(answers, [(NodeId(2), 3, Some(commit))]);
        // A follower read at the leader itself is an ordinary read.
        let actions = step_confirming(&mut leader, follower_read(8));
        assert!(read_requests(&actions).is_empty());
    }

    #[test]
    fn a_refusal_or_a_leader_change_rejects_each_read_once() {
        let mut follower = follower_of_three();
        let first = read_requests(&step_confirming(&mut follower, follower_read(1)))[0].1;
        let second = read_requests(&step_confirming(&mut follower, follower_read(2)))[0].1;
        let actions = step_confirming(&mut follower, answer(first, None));
        let hint = ProposeError::NotLeader {
            leader: Some(NodeId(1)),
        };
        assert_eq!(outcomes(&actions), [(1, Err(hint))]);
        // Node 3 leads term 2: read 2, asked of node 1 in term 1, is refused with the new hint.
        let heartbeat = MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            read_context: 0,
        };
        let actions = step_confirming(&mut follower, to_two(2, 3, heartbeat));
        let hint = ProposeError::NotLeader {
            leader: Some(NodeId(3)),
        };
        assert_eq!(outcomes(&actions), [(2, Err(hint))]);
        // Node 1's late answer, even claiming the new term, finds nothing to answer.
        let late = MessageBody::ReadIndexResponse {
            request: second,
            index: Some(LogIndex(1)),
        };
        let actions = step_confirming(&mut follower, to_two(2, 1, late));
        assert!(outcomes(&actions).is_empty(), "{actions:?}");
    }

    #[test]
    fn an_unanswered_read_expires_after_an_election_timeout() {
        let mut follower = follower_of_three();
        step_confirming(&mut follower, follower_read(4));
        let timeout = CoreConfig::new(NodeId(2), 2).election_timeout_max_ticks;
        let mut answered = Vec::new();
        for _ in 0..timeout {
            // Keep the follower following so only the expiry can answer the read.
            let heartbeat = MessageBody::Heartbeat {
                leader_commit: LogIndex(0),
                read_context: 0,
            };
            step_confirming(&mut follower, to_two(1, 1, heartbeat));
            answered.extend(outcomes(&step_confirming(&mut follower, Input::Tick)));
        }
        let hint = ProposeError::NotLeader {
            leader: Some(NodeId(1)),
        };
        assert_eq!(answered, [(4, Err(hint))]);
    }

    #[test]
    fn a_node_without_a_leader_refuses_at_once() {
        let config = CoreConfig::new(NodeId(2), 2);
        let recovered = RecoveredState {
            initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
            ..RecoveredState::default()
        };
        let mut idle = Replica::new(config, recovered).unwrap();
        let actions = step_confirming(&mut idle, follower_read(6));
        assert!(read_requests(&actions).is_empty());
        assert_eq!(
            outcomes(&actions),
            [(6, Err(ProposeError::NotLeader { leader: None }))]
        );
    }

    #[test]
    fn a_lease_read_without_lease_reads_is_refused_naming_the_setting() {
        let mut leader = leader_of_three(|_| {});
        let lease = Input::ReadIndex {
            id: 9,
            mode: ReadMode::Lease,
        };
        let actions = step_confirming(&mut leader, lease.clone());
        match outcomes(&actions).as_slice() {
            [(9, Err(ProposeError::Rejected(message)))] => {
                assert!(message.contains("--lease-reads on"), "{message}")
            }
            other => panic!("expected a definite refusal, got {other:?}"),
        }
        let mut leased = leader_of_three(|config| config.lease_reads = true);
        let actions = step_confirming(&mut leased, lease);
        assert!(
            !outcomes(&actions)
                .iter()
                .any(|(_, outcome)| matches!(outcome, Err(ProposeError::Rejected(_)))),
            "{actions:?}"
        );
    }
}
