//! The rules the world judges while it runs and at its end, each as a pure function of the
//! few values it judges, so that a unit test can feed it a bad state and see it fail.
//!
//! The world (`world.rs`, `effects.rs`) gathers those values from its nodes, disks and
//! history and calls these; the tests below call the same functions. The global checker
//! (`checker.rs`) and the client history (`history.rs`) have tests of their own.

use crate::checker::Verdict;
use crate::params::{LIVENESS_BOUND_MS, SLOW_DISK_HANDOVER_BOUND_MS, TICK_MS};
use crate::replica::CoreView;
use rcraft::core::{LostEntries, SelfDemotion, SelfDemotionReason};
use rcraft::wire::{LogIndex, Membership, NodeId, Term};

/// Commit quorum: a quorum of `membership` (both halves when joint) holds (`index`, `term`),
/// `holds` telling which voters do. `leader` of `leader_term` made the commit.
pub(crate) fn quorum_holds(
    leader: NodeId,
    leader_term: Term,
    membership: &Membership,
    index: LogIndex,
    term: Term,
    holds: impl Fn(NodeId) -> bool,
) -> Verdict {
    for half in [&membership.voters, &membership.voters_outgoing] {
        if half.is_empty() {
            continue;
        }
        let holders: Vec<NodeId> = half.iter().copied().filter(|id| holds(*id)).collect();
        if holders.len() <= half.len() / 2 {
            return Err(format!(
                "commit quorum: leader {leader} of term {leader_term} commits index {index} \
                 (term {term}) with configuration {membership:?}, but only {holders:?} of \
                 voters {half:?} hold it"
            ));
        }
    }
    Ok(())
}

/// Commit quorum of a leader's new commit index: held by a quorum of the configuration in
/// force, or, when an uncommitted change was appended after the committed index (`before`:
/// the configuration before that change), of the one before it (the commit may have been
/// counted before the change was appended in the same turn; a change of one voter keeps
/// every majority of the two overlapping). The error names the configuration in force.
pub(crate) fn commit_quorum(
    leader: NodeId,
    leader_term: Term,
    in_force: &Membership,
    before: Option<&Membership>,
    index: LogIndex,
    term: Term,
    holds: impl Fn(NodeId) -> bool,
) -> Verdict {
    let verdict = quorum_holds(leader, leader_term, in_force, index, term, &holds);
    match before {
        Some(previous)
            if verdict.is_err()
                && quorum_holds(leader, leader_term, previous, index, term, &holds).is_ok() =>
        {
            Ok(())
        }
        _ => verdict,
    }
}

/// Persist before acknowledging (thesis §10.2.1): a vote granted to `to` in `term` leaves
/// the node only once its disk holds that vote (`durable_vote`), or a newer term
/// (`durable_term`): a vote stepped in the same turn as a newer term is saved only under
/// that term, and the node can then never vote in the older term again, which is all the
/// grant promises.
pub(crate) fn vote_released_durably(
    to: NodeId,
    term: Term,
    durable_vote: Option<NodeId>,
    durable_term: Term,
) -> Verdict {
    let moved_on = durable_term > term;
    if durable_vote != Some(to) && !moved_on {
        return Err(format!(
            "persistence contract: grants its vote to {to} in term {term} while its disk \
             holds vote {durable_vote:?} for that term"
        ));
    }
    Ok(())
}

/// Persist before acknowledging: an append acknowledged to `to` through `match_index`
/// leaves the node only once its disk holds entries (or a snapshot) through there
/// (`durable_through`). Terms are not compared: a newer truncation may already be in
/// memory, not yet durable.
pub(crate) fn ack_released_durably(
    to: NodeId,
    match_index: LogIndex,
    durable_through: LogIndex,
) -> Verdict {
    if match_index > durable_through {
        return Err(format!(
            "persistence contract: acknowledges index {match_index} to {to} while its disk \
             holds entries only through {durable_through}"
        ));
    }
    Ok(())
}

/// Persistence contract: an entry (`index`, `term`) is applied only once the disk holds it
/// (`durable_term`, the durable term at `index`) or a durable snapshot covers it
/// (`snapshot_index`).
pub(crate) fn applied_durably(
    index: LogIndex,
    term: Term,
    snapshot_index: LogIndex,
    durable_term: Option<Term>,
) -> Verdict {
    if index > snapshot_index && durable_term != Some(term) {
        return Err(format!(
            "persistence contract: applies index {index} term {term} while its disk holds \
             {durable_term:?} there"
        ));
    }
    Ok(())
}

/// Convergence at the end of a run: every running member of the configuration of the node
/// that applied the most (`most`, with its applied index) applied as much; `members` gives
/// each one's id and applied index, in node order.
pub(crate) fn converged(
    most: (NodeId, LogIndex),
    members: impl IntoIterator<Item = (NodeId, LogIndex)>,
) -> Verdict {
    let (most_id, most_applied) = most;
    for (id, applied) in members {
        if applied < most_applied {
            return Err(format!(
                "convergence: at the end node {id} applied through {applied}, node {most_id} \
                 through {most_applied}"
            ));
        }
    }
    Ok(())
}

/// Liveness at the end of a calm phase that began at `since`, with `commit` the highest index
/// known committed then: a leader exists (`leader_membership`, the configuration of the first
/// node that leads and votes in it), every voter of that configuration among the running
/// nodes (`running`: id and applied index, in node order) has applied through `commit`, and a
/// write invoked since the heal was acknowledged (`acked`).
pub(crate) fn live(
    since: u64,
    commit: LogIndex,
    leader_membership: Option<&Membership>,
    running: &[(NodeId, LogIndex)],
    acked: bool,
) -> Verdict {
    if let Some(membership) = leader_membership {
        let behind = running
            .iter()
            .find(|(id, applied)| membership.is_voter(*id) && *applied < commit);
        if let Some((id, applied)) = behind {
            return Err(format!(
                "liveness: healed since t={since}ms with index {commit} committed, yet \
                 after {} ticks voter {id} has applied only through {applied}",
                LIVENESS_BOUND_MS / TICK_MS,
            ));
        }
    }
    let leader = leader_membership.is_some();
    if !leader || !acked {
        return Err(format!(
            "liveness: healed since t={since}ms, yet after {} ticks {}",
            LIVENESS_BOUND_MS / TICK_MS,
            if leader {
                "no write invoked since then was acknowledged"
            } else {
                "there is no leader"
            }
        ));
    }
    Ok(())
}

/// Repair by the liveness check of a calm phase that began at `since`: no node (`nodes`: its
/// id, its view when up, what its disk says it lost) still waits for its voters' terms after
/// its hard state was damaged, or still repairs entries its disk lost.
pub(crate) fn repaired<'a>(
    since: u64,
    nodes: impl IntoIterator<Item = (NodeId, Option<&'a CoreView>, Option<LostEntries>)>,
) -> Verdict {
    for (id, view, lost) in nodes {
        if view.is_some_and(|v| v.votes_unknown) {
            return Err(format!(
                "repair: healed since t={since}ms, yet node {id} still waits for its voters' \
                 terms after its hard state was damaged"
            ));
        }
        if view.is_some_and(|v| v.repairing.is_some()) {
            return Err(format!(
                "repair: healed since t={since}ms, yet node {id} still repairs entries its \
                 disk lost ({lost:?})"
            ));
        }
    }
    Ok(())
}

/// What the self-demotion rules judge of one gray-failure self-demotion.
pub(crate) struct DemotionFacts<'a> {
    /// The demotion as the node reported it.
    pub(crate) demotion: &'a SelfDemotion,
    /// The demoting node (its index in the world) and id.
    pub(crate) node: usize,
    pub(crate) id: NodeId,
    /// Sim time now, and of the node's previous self-demotion in this life, if any.
    pub(crate) now: u64,
    pub(crate) previous: Option<u64>,
    /// The node whose disk is slow, and the one whose links are slow, once chosen.
    pub(crate) slow_disk_node: Option<usize>,
    pub(crate) slow_links_node: Option<usize>,
    /// The demotion's target votes in the configuration the node used.
    pub(crate) to_is_voter: bool,
}

/// Gray failure: only the node whose disk is slow may hand leadership over of its own accord
/// for a slow disk, only the node whose links are slow for slow links, only to another voter,
/// and not again within `cooldown_ms` of its previous one in the same life.
pub(crate) fn demotion_allowed(facts: &DemotionFacts<'_>, cooldown_ms: u64) -> Verdict {
    let DemotionFacts { demotion, now, .. } = *facts;
    if let Some(at) = facts.previous.filter(|&at| now < at + cooldown_ms) {
        return Err(format!(
            "self-demotion at t={now}ms within the cool-down of the one at t={at}ms: {demotion:?}"
        ));
    }
    let (slow, what) = match demotion.reason {
        SelfDemotionReason::SlowDisk => (facts.slow_disk_node, "disk"),
        SelfDemotionReason::SlowLinks => (facts.slow_links_node, "links"),
    };
    if slow != Some(facts.node) {
        return Err(format!(
            "self-demotion without a slow {what} (slow: {slow:?}): {demotion:?}"
        ));
    }
    if demotion.to == facts.id || !facts.to_is_voter {
        return Err(format!(
            "self-demotion to a node that cannot lead: {demotion:?}"
        ));
    }
    Ok(())
}

/// Gray failure: `node`, whose disk (or links: `what`) turned slow at `since` while it led,
/// handed leadership over of its own accord (one of `demotions`, each (sim time, node, life),
/// at or after `since`) to a node that leads now (`leader`), within the bound.
pub(crate) fn handed_over(
    node: usize,
    since: u64,
    what: &str,
    demotions: &[(u64, usize, u64)],
    leader: Option<usize>,
) -> Verdict {
    let demoted = demotions.iter().any(|&(at, n, _)| n == node && at >= since);
    if demoted && leader.is_some() && leader != Some(node) {
        return Ok(());
    }
    Err(format!(
        "gray failure: node {node}'s {what} turned slow at t={since}ms while it led; {} ms \
         later it {} handed leadership over, and the leader is {leader:?}",
        SLOW_DISK_HANDOVER_BOUND_MS,
        if demoted { "had" } else { "had not" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft::wire::Role;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    fn voters(list: &[u64]) -> Membership {
        Membership::with_voters(ids(list))
    }

    fn joint(new: &[u64], old: &[u64]) -> Membership {
        Membership {
            voters_outgoing: ids(old).into_iter().collect(),
            ..voters(new)
        }
    }

    fn holders(list: &[u64]) -> impl Fn(NodeId) -> bool {
        let list = ids(list);
        move |id| list.contains(&id)
    }

    fn commit(in_force: &Membership, before: Option<&Membership>, held_by: &[u64]) -> Verdict {
        let (index, term) = (LogIndex(7), Term(3));
        commit_quorum(
            NodeId(0),
            Term(3),
            in_force,
            before,
            index,
            term,
            holders(held_by),
        )
    }

    #[test]
    fn a_commit_held_by_a_minority_is_rejected() {
        let three = voters(&[0, 1, 2]);
        assert_eq!(commit(&three, None, &[0, 1]), Ok(()));
        let err = commit(&three, None, &[0]).unwrap_err();
        assert!(
            err.starts_with("commit quorum: leader 0 of term 3 commits index 7 (term 3)"),
            "{err}"
        );
        assert!(err.contains("only [NodeId(0)] of voters"), "{err}");
        // Half of an even configuration is no quorum.
        assert!(commit(&voters(&[0, 1, 2, 3]), None, &[0, 1]).is_err());
        assert_eq!(commit(&voters(&[0, 1, 2, 3]), None, &[0, 1, 3]), Ok(()));
        // Holders outside the configuration do not count.
        assert!(commit(&three, None, &[0, 3, 4]).is_err());
    }

    #[test]
    fn a_joint_commit_needs_a_quorum_of_each_half() {
        let joint = joint(&[0, 3, 4], &[0, 1, 2]);
        assert_eq!(commit(&joint, None, &[0, 1, 3]), Ok(()));
        // A majority of the new half only, or of the old half only.
        let err = commit(&joint, None, &[0, 3, 4]).unwrap_err();
        assert!(
            err.contains("of voters {NodeId(0), NodeId(1), NodeId(2)}"),
            "{err}"
        );
        let err = commit(&joint, None, &[0, 1, 2]).unwrap_err();
        assert!(
            err.contains("of voters {NodeId(0), NodeId(3), NodeId(4)}"),
            "{err}"
        );
    }

    #[test]
    fn a_commit_counted_before_an_uncommitted_change_is_judged_by_both_configurations() {
        // {0,1,2} changed to {0,1,2,3} after the committed index: {0,1} is a quorum of the
        // configuration before the change only.
        let (before, after) = (voters(&[0, 1, 2]), voters(&[0, 1, 2, 3]));
        assert!(commit(&after, None, &[0, 1]).is_err());
        assert_eq!(commit(&after, Some(&before), &[0, 1]), Ok(()));
        // A quorum of neither is rejected, with the configuration in force named.
        let err = commit(&after, Some(&before), &[0, 3]).unwrap_err();
        assert!(err.contains("of voters {NodeId(0), NodeId(1), NodeId(2), NodeId(3)}"));
    }

    #[test]
    fn a_vote_granted_before_it_is_durable_is_rejected() {
        let (to, term) = (NodeId(2), Term(5));
        assert_eq!(vote_released_durably(to, term, Some(to), term), Ok(()));
        // Saved under a newer term only: it can never vote in term 5 again.
        assert_eq!(vote_released_durably(to, term, None, Term(6)), Ok(()));
        let err = vote_released_durably(to, term, None, term).unwrap_err();
        assert_eq!(
            err,
            "persistence contract: grants its vote to 2 in term 5 while its disk holds vote \
             None for that term"
        );
        // A durable vote for another candidate, or a durable term below the grant's.
        assert!(vote_released_durably(to, term, Some(NodeId(1)), term).is_err());
        assert!(vote_released_durably(to, term, None, Term(4)).is_err());
    }

    #[test]
    fn an_append_acknowledged_before_it_is_durable_is_rejected() {
        let to = NodeId(0);
        assert_eq!(ack_released_durably(to, LogIndex(9), LogIndex(9)), Ok(()));
        assert_eq!(ack_released_durably(to, LogIndex(3), LogIndex(9)), Ok(()));
        let err = ack_released_durably(to, LogIndex(10), LogIndex(9)).unwrap_err();
        assert_eq!(
            err,
            "persistence contract: acknowledges index 10 to 0 while its disk holds entries \
             only through 9"
        );
    }

    #[test]
    fn an_entry_applied_before_it_is_durable_is_rejected() {
        let (index, term) = (LogIndex(8), Term(2));
        assert_eq!(
            applied_durably(index, term, LogIndex(0), Some(term)),
            Ok(())
        );
        // Covered by a durable snapshot: the log may hold nothing there.
        assert_eq!(applied_durably(index, term, LogIndex(8), None), Ok(()));
        let err = applied_durably(index, term, LogIndex(7), None).unwrap_err();
        assert_eq!(
            err,
            "persistence contract: applies index 8 term 2 while its disk holds None there"
        );
        // Another term at that index on disk is not this entry.
        assert!(applied_durably(index, term, LogIndex(0), Some(Term(1))).is_err());
    }

    #[test]
    fn replicas_that_did_not_converge_are_rejected() {
        let most = (NodeId(1), LogIndex(40));
        let members = |applied: &[u64]| -> Vec<(NodeId, LogIndex)> {
            let pairs = applied.iter().enumerate();
            pairs
                .map(|(i, &a)| (NodeId(i as u64), LogIndex(a)))
                .collect()
        };
        assert_eq!(converged(most, members(&[40, 40, 40])), Ok(()));
        let err = converged(most, members(&[40, 40, 39])).unwrap_err();
        assert_eq!(
            err,
            "convergence: at the end node 2 applied through 39, node 1 through 40"
        );
    }

    #[test]
    fn no_leader_no_acknowledged_write_or_a_voter_behind_fail_liveness() {
        let three = voters(&[0, 1, 2]);
        let commit = LogIndex(20);
        let running = [(NodeId(0), LogIndex(25)), (NodeId(1), LogIndex(20))];
        assert_eq!(live(100, commit, Some(&three), &running, true), Ok(()));
        let bound = LIVENESS_BOUND_MS / TICK_MS;
        let err = live(100, commit, None, &running, true).unwrap_err();
        assert_eq!(
            err,
            format!("liveness: healed since t=100ms, yet after {bound} ticks there is no leader")
        );
        let err = live(100, commit, Some(&three), &running, false).unwrap_err();
        assert!(
            err.ends_with("no write invoked since then was acknowledged"),
            "{err}"
        );
        let behind = [(NodeId(0), LogIndex(25)), (NodeId(2), LogIndex(19))];
        let err = live(100, commit, Some(&three), &behind, true).unwrap_err();
        assert_eq!(
            err,
            format!(
                "liveness: healed since t=100ms with index 20 committed, yet after {bound} \
                 ticks voter 2 has applied only through 19"
            )
        );
        // A learner (or a removed node) behind is not expected to catch up.
        let with_learner = Membership {
            learners: ids(&[2]).into_iter().collect(),
            ..voters(&[0, 1])
        };
        assert_eq!(
            live(100, commit, Some(&with_learner), &behind, true),
            Ok(())
        );
    }

    fn view(votes_unknown: bool, repairing: Option<LostEntries>) -> CoreView {
        CoreView {
            role: Role::Follower,
            term: Term(4),
            leader: Some(NodeId(0)),
            commit_index: LogIndex(10),
            applied_index: LogIndex(10),
            last_index: LogIndex(10),
            snapshot_index: LogIndex(0),
            membership: voters(&[0, 1, 2]),
            repairing,
            votes_unknown,
        }
    }

    #[test]
    fn a_node_still_repairing_or_without_its_votes_fails_the_repair_check() {
        let lost = LostEntries {
            from: LogIndex(5),
            through: LogIndex(9),
            through_term: Some(Term(3)),
        };
        let whole = view(false, None);
        // A node that is down has no view: it is judged when it is up.
        let healthy = [
            (NodeId(0), Some(&whole), None),
            (NodeId(1), None, Some(lost)),
        ];
        assert_eq!(repaired(50, healthy), Ok(()));
        let repairing = view(false, Some(lost));
        let err = repaired(
            50,
            [
                (NodeId(0), Some(&whole), None),
                (NodeId(1), Some(&repairing), Some(lost)),
            ],
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "repair: healed since t=50ms, yet node 1 still repairs entries its disk lost"
            ),
            "{err}"
        );
        let unknown = view(true, None);
        let err = repaired(50, [(NodeId(2), Some(&unknown), None)]).unwrap_err();
        assert_eq!(
            err,
            "repair: healed since t=50ms, yet node 2 still waits for its voters' terms after \
             its hard state was damaged"
        );
    }

    fn demotion(reason: SelfDemotionReason, to: u64) -> SelfDemotion {
        SelfDemotion {
            reason,
            to: NodeId(to),
            leader_milliticks: 9_000,
            median_follower_milliticks: 1_000,
            target_milliticks: 1_000,
            followers_measured: 2,
            slow_for_ticks: 30,
        }
    }

    fn facts(demotion: &SelfDemotion) -> DemotionFacts<'_> {
        DemotionFacts {
            demotion,
            node: 1,
            id: NodeId(1),
            now: 5_000,
            previous: None,
            slow_disk_node: Some(1),
            slow_links_node: None,
            to_is_voter: true,
        }
    }

    #[test]
    fn a_self_demotion_without_cause_to_a_non_voter_or_too_soon_is_rejected() {
        let cooldown = 1_000;
        let disk = demotion(SelfDemotionReason::SlowDisk, 2);
        assert_eq!(demotion_allowed(&facts(&disk), cooldown), Ok(()));
        // Not the slow node.
        let other = DemotionFacts {
            slow_disk_node: Some(2),
            ..facts(&disk)
        };
        let err = demotion_allowed(&other, cooldown).unwrap_err();
        assert!(
            err.starts_with("self-demotion without a slow disk (slow: Some(2))"),
            "{err}"
        );
        // Slow links claimed where only the disk is slow.
        let links = demotion(SelfDemotionReason::SlowLinks, 2);
        let err = demotion_allowed(&facts(&links), cooldown).unwrap_err();
        assert!(
            err.starts_with("self-demotion without a slow links (slow: None)"),
            "{err}"
        );
        let links_run = DemotionFacts {
            slow_disk_node: None,
            slow_links_node: Some(1),
            ..facts(&links)
        };
        assert_eq!(demotion_allowed(&links_run, cooldown), Ok(()));
        // To itself, or to a node that does not vote.
        let to_self = demotion(SelfDemotionReason::SlowDisk, 1);
        let err = demotion_allowed(&facts(&to_self), cooldown).unwrap_err();
        assert!(
            err.starts_with("self-demotion to a node that cannot lead"),
            "{err}"
        );
        let to_learner = DemotionFacts {
            to_is_voter: false,
            ..facts(&disk)
        };
        assert!(demotion_allowed(&to_learner, cooldown).is_err());
        // Within the cool-down of the previous one in this life; after it, allowed.
        let again = DemotionFacts {
            previous: Some(4_500),
            ..facts(&disk)
        };
        let err = demotion_allowed(&again, cooldown).unwrap_err();
        assert!(
            err.starts_with(
                "self-demotion at t=5000ms within the cool-down of the one at t=4500ms"
            ),
            "{err}"
        );
        let later = DemotionFacts {
            previous: Some(4_000),
            ..facts(&disk)
        };
        assert_eq!(demotion_allowed(&later, cooldown), Ok(()));
    }

    #[test]
    fn a_slow_leader_that_kept_leading_or_left_no_leader_is_rejected() {
        let since = 2_000;
        let demoted = [(1_500, 1, 0), (2_300, 1, 0)];
        assert_eq!(handed_over(1, since, "disk", &demoted, Some(2)), Ok(()));
        // Demoted, but no other node leads (or it leads again).
        let err = handed_over(1, since, "disk", &demoted, None).unwrap_err();
        assert_eq!(
            err,
            format!(
                "gray failure: node 1's disk turned slow at t=2000ms while it led; \
                 {SLOW_DISK_HANDOVER_BOUND_MS} ms later it had handed leadership over, and the \
                 leader is None"
            )
        );
        assert!(handed_over(1, since, "disk", &demoted, Some(1)).is_err());
        // Another node leads, but the slow one never demoted itself since the slowness
        // began (a crash or an election moved leadership, not the rule).
        let before_or_other = [(1_500, 1, 0), (2_300, 2, 0)];
        let err = handed_over(1, since, "links", &before_or_other, Some(2)).unwrap_err();
        assert!(err.contains("node 1's links turned slow"), "{err}");
        assert!(
            err.contains("later it had not handed leadership over"),
            "{err}"
        );
    }
}
