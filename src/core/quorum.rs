//! Quorum arithmetic over a [`Membership`]: majorities, joint majorities (Raft thesis §4.3),
//! the commit index a quorum supports, and vote tallies.
//!
//! Pure functions; no state. Invariant kept by every function here: in a joint configuration a
//! decision needs a majority of the incoming voters *and* of the outgoing voters, and an empty
//! voter set imposes no constraint (so a non-joint configuration is the same as a joint one
//! whose outgoing half is empty).

use rcraft_wire::{LogIndex, Membership, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Outcome of counting votes (or acknowledgements) against a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer be reached with the missing answers.
    Lost,
    /// Not decided yet.
    Pending,
}

/// The highest index that a majority of `voters` has reached, where `reached(id)` is the
/// index node `id` is known to hold. `u64::MAX` for an empty voter set (no constraint).
pub fn majority_index(voters: &BTreeSet<NodeId>, reached: impl Fn(NodeId) -> LogIndex) -> LogIndex {
    LogIndex(majority_value(voters, |id| reached(id).0))
}

/// The highest value that a majority of `voters` has reached (an index, or a tick count for
/// leases). `u64::MAX` for an empty voter set.
pub fn majority_value(voters: &BTreeSet<NodeId>, reached: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // Computed for every proposal on a leader: no allocation for a usual cluster size.
    const ON_STACK: usize = 16;
    let mut stack = [0u64; ON_STACK];
    let mut heap = Vec::new();
    let values: &mut [u64] = if voters.len() <= ON_STACK {
        &mut stack[..voters.len()]
    } else {
        heap.resize(voters.len(), 0);
        &mut heap
    };
    for (value, id) in values.iter_mut().zip(voters) {
        *value = reached(*id);
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, a majority is n/2 + 1; the (n/2)-th largest value (0-based) is held by
    // at least that many voters.
    values[voters.len() / 2]
}

/// The outgoing half of a joint configuration, which must agree as well as the incoming one
/// (thesis §4.3); empty outside a joint configuration.
#[cfg(not(feature = "bug-joint-one-majority"))]
fn outgoing_voters(membership: &Membership) -> &BTreeSet<NodeId> {
    &membership.voters_outgoing
}

/// PLANTED BUG (mutation check only): a joint configuration decides by the incoming majority
/// alone, so the old and the new configuration can each commit or elect on their own.
#[cfg(feature = "bug-joint-one-majority")]
fn outgoing_voters(_membership: &Membership) -> &BTreeSet<NodeId> {
    static NONE: BTreeSet<NodeId> = BTreeSet::new();
    &NONE
}

/// The highest value a quorum of `membership` has reached (both halves when joint).
pub fn quorum_value(membership: &Membership, reached: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = majority_value(&membership.voters, &reached);
    let outgoing = majority_value(outgoing_voters(membership), &reached);
    incoming.min(outgoing)
}

/// The highest index a quorum of `membership` holds (both halves when joint).
pub fn quorum_index(membership: &Membership, reached: impl Fn(NodeId) -> LogIndex) -> LogIndex {
    let incoming = majority_index(&membership.voters, &reached);
    let outgoing = majority_index(outgoing_voters(membership), &reached);
    incoming.min(outgoing)
}

/// Tally of `votes` (granted or refused per voter; absent means not answered) in one simple
/// majority configuration.
pub fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let mut granted = 0;
    let mut missing = 0;
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let needed = voters.len() / 2 + 1;
    if granted >= needed {
        VoteResult::Won
    } else if granted + missing >= needed {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Tally of `votes` in `membership`: won only when every half wins, lost when any half loses.
pub fn quorum_vote(membership: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let incoming = majority_vote(&membership.voters, votes);
    let outgoing = majority_vote(outgoing_voters(membership), votes);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// True when the nodes for which `active(id)` holds form a quorum of `membership`.
pub fn is_quorum(membership: &Membership, active: impl Fn(NodeId) -> bool) -> bool {
    let votes: BTreeMap<NodeId, bool> = membership
        .voters
        .iter()
        .chain(membership.voters_outgoing.iter())
        .map(|id| (*id, active(*id)))
        .collect();
    quorum_vote(membership, &votes) == VoteResult::Won
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|i| NodeId(*i)).collect()
    }

    fn joint(incoming: &[u64], outgoing: &[u64]) -> Membership {
        Membership {
            voters: ids(incoming),
            voters_outgoing: ids(outgoing),
            learners: BTreeSet::new(),
        }
    }

    fn matches(pairs: &[(u64, u64)]) -> impl Fn(NodeId) -> LogIndex {
        let map: BTreeMap<NodeId, LogIndex> = pairs
            .iter()
            .map(|(id, m)| (NodeId(*id), LogIndex(*m)))
            .collect();
        move |id| map.get(&id).copied().unwrap_or_default()
    }

    #[test]
    fn majority_index_of_odd_and_even_clusters() {
        let reached = matches(&[(1, 5), (2, 3), (3, 9)]);
        assert_eq!(majority_index(&ids(&[1, 2, 3]), &reached), LogIndex(5));
        let reached = matches(&[(1, 5), (2, 3), (3, 9), (4, 1)]);
        // Four voters need three: 9, 5, 3 -> 3.
        assert_eq!(majority_index(&ids(&[1, 2, 3, 4]), &reached), LogIndex(3));
        assert_eq!(majority_index(&ids(&[1]), &reached), LogIndex(5));
        assert_eq!(majority_index(&ids(&[]), &reached), LogIndex(u64::MAX));
    }

    /// The value on the stack (up to 16 voters) and past it agree with a plain sort.
    #[test]
    fn majority_value_of_small_and_large_voter_sets() {
        for n in [1u64, 2, 3, 15, 16, 17, 40] {
            let voters: BTreeSet<NodeId> = (1..=n).map(NodeId).collect();
            let reached = |id: NodeId| (id.0 * 7919) % 101;
            let mut sorted: Vec<u64> = voters.iter().map(|&id| reached(id)).collect();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(
                majority_value(&voters, reached),
                sorted[n as usize / 2],
                "{n} voters"
            );
        }
    }

    #[test]
    fn joint_quorum_index_is_the_minimum_of_both_halves() {
        let reached = matches(&[(1, 10), (2, 10), (3, 2), (4, 1), (5, 1)]);
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        // Incoming majority holds 10; outgoing majority holds only 1.
        assert_eq!(quorum_index(&m, &reached), LogIndex(1));
        let m = joint(&[1, 2, 3], &[]);
        assert_eq!(quorum_index(&m, &reached), LogIndex(10));
    }

    #[test]
    fn vote_tally_won_lost_pending() {
        let voters = ids(&[1, 2, 3]);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(2), false);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), false);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Lost);
        votes.insert(NodeId(3), true);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Won);
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        let m = joint(&[1, 2, 3], &[4, 5, 6]);
        let mut votes = BTreeMap::new();
        for id in [1, 2, 3] {
            votes.insert(NodeId(id), true);
        }
        assert_eq!(quorum_vote(&m, &votes), VoteResult::Pending);
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(quorum_vote(&m, &votes), VoteResult::Lost);
        votes.insert(NodeId(5), true);
        votes.insert(NodeId(6), true);
        assert_eq!(quorum_vote(&m, &votes), VoteResult::Won);
    }

    #[test]
    fn is_quorum_counts_only_voters() {
        let mut m = joint(&[1, 2, 3], &[]);
        m.learners = ids(&[4, 5]);
        assert!(is_quorum(&m, |id| id.0 <= 2));
        assert!(!is_quorum(&m, |id| id.0 == 1 || id.0 >= 4));
    }
}
