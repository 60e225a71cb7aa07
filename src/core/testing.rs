//! Helpers for the core's unit tests (and the node's tests of the consensus loop): stepping a
//! replica with its persists confirmed at once, peer messages, and a leader to start from.
//!
//! Test-only; owns nothing.

use super::api::{Action, CoreConfig, Input, RecoveredState, StorageAction, StorageOutcome};
use super::replica::Replica;
use rcraft_wire::{LogIndex, Membership, Message, MessageBody, NodeId, Term};

/// Steps `input`, confirming every persist at once, and returns every action it led to.
pub(crate) fn step_confirming(replica: &mut Replica, input: Input) -> Vec<Action> {
    replica.step(input);
    let mut all = Vec::new();
    loop {
        let actions = replica.take_actions();
        if actions.is_empty() {
            return all;
        }
        for action in &actions {
            if let Action::Storage(StorageAction::Persist { seq, .. }) = action {
                replica.step(Input::Storage(StorageOutcome::Persisted { seq: *seq }));
            }
        }
        all.extend(actions);
    }
}

/// A message of term `term` from node `from` to node 1.
pub(crate) fn from_peer_in(term: u64, from: u64, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(1),
        term: Term(term),
        body,
    })
}

/// A message of term `term` from node `from` to node 2.
pub(crate) fn to_node_2(from: u64, term: u64, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(2),
        term: Term(term),
        body,
    })
}

/// A vote request (a pre-vote when `pre_vote`) from candidate `from` to node 2 in `term`, the
/// candidate's log ending at (`last_index`, `last_term`).
pub(crate) fn vote_request_to_node_2(
    from: u64,
    term: u64,
    pre_vote: bool,
    (last_index, last_term): (u64, u64),
) -> Input {
    to_node_2(
        from,
        term,
        MessageBody::VoteRequest {
            pre_vote,
            last_log_index: LogIndex(last_index),
            last_log_term: Term(last_term),
            leadership_transfer: false,
        },
    )
}

/// The `granted` of every vote response among `actions`, in order.
pub(crate) fn votes_granted(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message {
                body: MessageBody::VoteResponse { granted, .. },
                ..
            }) => Some(*granted),
            _ => None,
        })
        .collect()
}

/// Node 2 of voters 1, 2, 3, freshly started, without Pre-Vote or CheckQuorum: a plain
/// follower (or voter) for tests that feed it messages one by one.
pub(crate) fn node_2_of_three() -> Replica {
    let recovered = RecoveredState {
        initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
        ..RecoveredState::default()
    };
    let mut config = CoreConfig::new(NodeId(2), 2);
    config.pre_vote = false;
    config.check_quorum = false;
    Replica::new(config, recovered).expect("a valid configuration")
}

/// Node 1, leader of nodes 1-3 in term 1 (elected with node 2's vote, Pre-Vote off), its
/// no-op committed with node 2's acknowledgement; `configure` adjusts its configuration.
pub(crate) fn leader_of_three(configure: impl FnOnce(&mut CoreConfig)) -> Replica {
    let recovered = RecoveredState {
        initial_membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        ..RecoveredState::default()
    };
    let mut config = CoreConfig::new(NodeId(1), 5);
    config.pre_vote = false;
    configure(&mut config);
    let mut leader = Replica::new(config, recovered).expect("a valid configuration");
    step_confirming(&mut leader, Input::Campaign);
    let vote = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    };
    step_confirming(&mut leader, from_peer_in(1, 2, vote));
    let ack = MessageBody::AppendResponse {
        success: true,
        match_index: LogIndex(1),
        conflict: None,
    };
    step_confirming(&mut leader, from_peer_in(1, 2, ack));
    assert_eq!(leader.status().commit_index, LogIndex(1), "no-op committed");
    leader
}
