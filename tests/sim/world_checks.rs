//! The rules the world judges while it runs and at its end, each as a pure function of the
//! few values it judges, so that a unit test can feed it a bad state and see it fail.
//!
//! The world (`world.rs`, `effects.rs`) gathers those values from its nodes, disks and
//! history and calls these; the tests below call the same functions, each with a state it
//! must reject and one it must pass. They also drive, through a world and a disk, the checks
//! that need them: `World::restore_checked` (every snapshot a node restores) and the disk
//! model's own rules (`disk.rs`). The global checker (`checker.rs`), the client history
//! (`history.rs`) and `World::judge_revotes` (`hard_state_damage.rs`) have tests of their own.

use crate::checker::Verdict;
use crate::params::{LIVENESS_BOUND_MS, SLOW_DISK_HANDOVER_BOUND_MS, TICK_MS};
use crate::replica::CoreView;
use rcraft::core::{ApplyOutcome, LostEntries, SelfDemotion, SelfDemotionReason};
use rcraft::wire::{LogIndex, Membership, NodeId, Term};

/// What a node's view after a step says of itself: its term and commit index never go back
/// within one life (`before`: its view after its previous step), it reports the last index
/// its persist actions describe (`log_last`), applied <= commit <= last, and it uses the
/// latest configuration in its log or snapshot (`latest`).
pub(crate) fn view_consistent(
    id: NodeId,
    before: Option<&CoreView>,
    view: &CoreView,
    log_last: LogIndex,
    latest: &Membership,
) -> Verdict {
    if let Some(before) = before {
        if view.term < before.term || view.commit_index < before.commit_index {
            return Err(format!(
                "node {id}: term or commit index went backwards: {before:?} -> {view:?}"
            ));
        }
    }
    if view.last_index != log_last {
        return Err(format!(
            "node {id}: reports last index {} but its persist actions describe a log ending at \
             {log_last}",
            view.last_index
        ));
    }
    if view.commit_index > view.last_index || view.applied_index > view.commit_index {
        return Err(format!(
            "node {id}: inconsistent indexes: applied {} commit {} last {}",
            view.applied_index, view.commit_index, view.last_index
        ));
    }
    if view.membership != *latest {
        return Err(format!(
            "configuration in force: node {id} uses {:?} but the latest configuration in its \
             log (or snapshot) is {latest:?}",
            view.membership
        ));
    }
    Ok(())
}

/// The storage thread's order: the sequence numbers of a node's persists grow within one
/// life (`last`: the previous one).
pub(crate) fn persist_seq_grows(seq: u64, last: Option<u64>) -> Verdict {
    if last.is_some_and(|last| seq <= last) {
        return Err(format!(
            "persist sequence numbers must grow: {seq} after {last:?}"
        ));
    }
    Ok(())
}

/// State machine safety: entries are applied contiguously, `index` right after `applied`.
pub(crate) fn applies_next(index: LogIndex, applied: LogIndex) -> Verdict {
    if index != applied.next() {
        return Err(format!("applies index {index} after index {applied}"));
    }
    Ok(())
}

/// The apply handler reports to the core exactly how far one batch took the state machine
/// (`applied`); the report is what the core hears.
pub(crate) fn reported_applied(
    applied: LogIndex,
    reported: Option<ApplyOutcome>,
) -> Result<ApplyOutcome, String> {
    match reported {
        Some(outcome @ ApplyOutcome::Applied { index }) if index == applied => Ok(outcome),
        other => Err(format!(
            "the apply handler applied entries through {applied} and reported {other:?} to the \
             core"
        )),
    }
}

/// A snapshot restored on a running node never moves its state machine back: the snapshot's
/// index is at least the index applied (finding 1).
pub(crate) fn restore_not_behind(id: NodeId, snapshot: LogIndex, applied: LogIndex) -> Verdict {
    if snapshot < applied {
        return Err(format!(
            "node {id}: installs a snapshot at {snapshot} behind its applied index {applied}"
        ));
    }
    Ok(())
}

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
    /// How long ago the slowness of the demotion's kind turned off (a calm phase heals it);
    /// `None` while it is on.
    pub(crate) slow_off_for: Option<u64>,
    /// The demotion's target votes in the configuration the node used.
    pub(crate) to_is_voter: bool,
}

/// Gray failure: only the node whose disk is slow may hand leadership over of its own accord
/// for a slow disk, only the node whose links are slow for slow links, and while they are
/// slow or within [`SLOW_DISK_HANDOVER_BOUND_MS`] after they turned fast again (the averages
/// ramp down as they ramped up; later its disk or links are as fast as the others'), only to
/// another voter, and not again within `cooldown_ms` of its previous one in the same life.
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
    if let Some(off_for) = (facts.slow_off_for).filter(|&ms| ms > SLOW_DISK_HANDOVER_BOUND_MS) {
        return Err(format!(
            "self-demotion {off_for} ms after its {what} turned as fast as the others' (bound \
             {SLOW_DISK_HANDOVER_BOUND_MS} ms): {demotion:?}"
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
    fn persists_out_of_order_gaps_in_applying_a_wrong_report_or_a_restore_back_are_rejected() {
        assert_eq!(persist_seq_grows(1, None), Ok(()));
        assert_eq!(persist_seq_grows(5, Some(4)), Ok(()));
        let err = persist_seq_grows(4, Some(4)).unwrap_err();
        assert_eq!(err, "persist sequence numbers must grow: 4 after Some(4)");
        assert!(persist_seq_grows(3, Some(4)).is_err());

        assert_eq!(applies_next(LogIndex(8), LogIndex(7)), Ok(()));
        let err = applies_next(LogIndex(9), LogIndex(7)).unwrap_err();
        assert_eq!(err, "applies index 9 after index 7");
        assert!(applies_next(LogIndex(7), LogIndex(7)).is_err());

        let through = |index| {
            Some(ApplyOutcome::Applied {
                index: LogIndex(index),
            })
        };
        assert_eq!(
            reported_applied(LogIndex(6), through(6)),
            through(6).ok_or(String::new())
        );
        let err = reported_applied(LogIndex(6), through(5)).unwrap_err();
        assert!(err.starts_with("the apply handler applied entries through 6 and reported"));
        assert!(reported_applied(LogIndex(6), None).is_err());

        assert_eq!(
            restore_not_behind(NodeId(2), LogIndex(30), LogIndex(30)),
            Ok(())
        );
        let err = restore_not_behind(NodeId(2), LogIndex(29), LogIndex(30)).unwrap_err();
        assert_eq!(
            err,
            "node 2: installs a snapshot at 29 behind its applied index 30"
        );
    }

    #[test]
    fn a_view_that_goes_back_or_disagrees_with_its_log_is_rejected() {
        let id = NodeId(1);
        let three = voters(&[0, 1, 2]);
        let before = view(false, None);
        let check = |after: &CoreView, log_last: u64, latest: &Membership| {
            view_consistent(id, Some(&before), after, LogIndex(log_last), latest)
        };
        let ahead = CoreView {
            term: Term(5),
            commit_index: LogIndex(12),
            last_index: LogIndex(14),
            ..before.clone()
        };
        assert_eq!(check(&ahead, 14, &three), Ok(()));
        // After a restart there is no earlier view to go back from.
        let restarted = CoreView {
            term: Term(1),
            commit_index: LogIndex(0),
            applied_index: LogIndex(0),
            ..before.clone()
        };
        assert_eq!(
            view_consistent(id, None, &restarted, LogIndex(10), &three),
            Ok(())
        );
        let err = check(&restarted, 10, &three).unwrap_err();
        assert!(
            err.starts_with("node 1: term or commit index went backwards"),
            "{err}"
        );
        let older_commit = CoreView {
            commit_index: LogIndex(9),
            applied_index: LogIndex(9),
            ..before.clone()
        };
        assert!(check(&older_commit, 10, &three).is_err());
        let err = check(&before, 11, &three).unwrap_err();
        assert_eq!(
            err,
            "node 1: reports last index 10 but its persist actions describe a log ending at 11"
        );
        let beyond = CoreView {
            commit_index: LogIndex(11),
            ..before.clone()
        };
        let err = check(&beyond, 10, &three).unwrap_err();
        assert_eq!(
            err,
            "node 1: inconsistent indexes: applied 10 commit 11 last 10"
        );
        let applied_beyond = CoreView {
            applied_index: LogIndex(11),
            commit_index: LogIndex(10),
            ..before.clone()
        };
        assert!(check(&applied_beyond, 10, &three).is_err());
        let err = check(&before, 10, &voters(&[0, 1, 2, 3])).unwrap_err();
        assert!(
            err.starts_with("configuration in force: node 1 uses"),
            "{err}"
        );
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
            slow_off_for: None,
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
        // Soon after a heal made the disk fast again, the averages still hold the slow
        // syncs; long after, the disk is as fast as the others' (finding 55).
        let just_healed = DemotionFacts {
            slow_off_for: Some(SLOW_DISK_HANDOVER_BOUND_MS),
            ..facts(&disk)
        };
        assert_eq!(demotion_allowed(&just_healed, cooldown), Ok(()));
        let long_healed = DemotionFacts {
            slow_off_for: Some(SLOW_DISK_HANDOVER_BOUND_MS + 1),
            ..facts(&disk)
        };
        let err = demotion_allowed(&long_healed, cooldown).unwrap_err();
        let late = SLOW_DISK_HANDOVER_BOUND_MS + 1;
        let expected = format!("self-demotion {late} ms after its disk turned as fast as the");
        assert!(err.starts_with(&expected), "{err}");
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

    mod restore {
        //! `World::restore_checked`: a snapshot a node restores (at a start or an install)
        //! equals the committed log replayed through a fresh session table, and names the
        //! configuration (and its entry) the committed log has in force at its index.

        use crate::checker::Checker;
        use crate::disk::StoredSnapshot;
        use crate::state_machine::{AppendList, checksum, encode_write};
        use crate::world::{TraceMode, World};
        use rcraft::node::testing::SimSessions;
        use rcraft::wire::{
            Entry, EntryPayload, LogIndex, Membership, NodeId, Session, SnapshotMeta, Term,
        };

        fn world() -> World<rcraft::node::testing::SimConsensus> {
            let quiet = TraceMode {
                keep_lines: 0,
                echo: false,
            };
            World::new(785, true, quiet)
        }

        /// A registration (client 1), that client's first write (7), and a write without a
        /// session (8), at indexes 1..=3 of term 2.
        fn entries() -> Vec<Entry> {
            let command = |index, session, write_id| {
                let data = if write_id == 0 {
                    Vec::new()
                } else {
                    encode_write(write_id, 0)
                };
                let payload = EntryPayload::Command {
                    session,
                    data: data.into(),
                };
                Entry::new(Term(2), LogIndex(index), payload)
            };
            let first = Session {
                client_id: 1,
                sequence: 1,
            };
            vec![
                command(1, Some(Session::REGISTER), 0),
                command(2, Some(first), 7),
                command(3, None, 8),
            ]
        }

        fn commit_all(checker: &mut Checker, entries: &[Entry]) {
            for entry in entries {
                let no_leaders = std::iter::empty();
                checker
                    .observe_commit(NodeId(0), Term(2), entry, no_leaders)
                    .unwrap();
            }
        }

        fn snapshot(bytes: Vec<u8>, term: Term, membership: &Membership) -> StoredSnapshot {
            let meta = SnapshotMeta {
                index: LogIndex(3),
                term,
                membership: membership.clone(),
                membership_entry: Some((LogIndex(0), Term(0))),
                size_bytes: bytes.len() as u64,
                checksum: checksum(&bytes),
            };
            StoredSnapshot { meta, bytes }
        }

        /// The state machine after `entries`, as a node would save it.
        fn model_bytes(
            world: &World<rcraft::node::testing::SimConsensus>,
            entries: &[Entry],
        ) -> Vec<u8> {
            let mut model = AppendList::new(&world.initial_membership, world.params.sessions_max);
            for entry in entries {
                model.apply(entry).unwrap();
            }
            model.snapshot_bytes()
        }

        #[test]
        fn a_snapshot_unlike_the_committed_log_is_rejected() {
            let mut world = world();
            let initial = world.initial_membership.clone();
            let entries = entries();
            let good = snapshot(model_bytes(&world, &entries), Term(2), &initial);
            // Nothing committed yet: the snapshot covers entries never seen committed.
            let err = world.restore_checked(NodeId(1), &good).unwrap_err();
            assert_eq!(
                err,
                "node 1: snapshot at 3 covers entries never seen committed"
            );
            commit_all(&mut world.checker, &entries);
            let restored = world.restore_checked(NodeId(1), &good).unwrap();
            assert_eq!(restored.writes, vec![7, 8]);

            // A write missing, or the right writes under another term.
            let fewer = snapshot(model_bytes(&world, &entries[..2]), Term(2), &initial);
            let err = world.restore_checked(NodeId(1), &fewer).unwrap_err();
            assert!(
                err.ends_with("whose contents differ from the committed log"),
                "{err}"
            );
            let other_term = snapshot(good.bytes.clone(), Term(3), &initial);
            let err = world.restore_checked(NodeId(1), &other_term).unwrap_err();
            assert!(
                err.ends_with("whose contents differ from the committed log"),
                "{err}"
            );

            // The same writes, but a session table that forgot client 1 (its retry of write 7
            // would then be refused, or applied again, after the restore).
            let state: Vec<u8> = [7u64, 8].iter().flat_map(|w| w.to_le_bytes()).collect();
            let forgot =
                SimSessions::with_capacity(world.params.sessions_max).snapshot_bytes(&state);
            let forgot = snapshot(forgot, Term(2), &initial);
            let err = world.restore_checked(NodeId(1), &forgot).unwrap_err();
            assert_eq!(
                err,
                "state machine safety: node 1 restores a snapshot at index 3 term 2 whose \
                 session table differs from the committed log's"
            );
        }

        #[test]
        fn a_snapshot_naming_another_configuration_is_rejected() {
            let mut world = world();
            let initial = world.initial_membership.clone();
            let entries = entries();
            commit_all(&mut world.checker, &entries);
            let bytes = model_bytes(&world, &entries);
            let mut smaller = initial.clone();
            let last = *smaller.voters.iter().next_back().unwrap();
            smaller.voters.remove(&last);
            let err = world
                .restore_checked(NodeId(1), &snapshot(bytes.clone(), Term(2), &smaller))
                .unwrap_err();
            assert!(
                err.starts_with("snapshot membership: node 1 restores a snapshot at index 3"),
                "{err}"
            );
            // The right configuration, said to come from an entry the committed log lacks.
            let mut named = snapshot(bytes, Term(2), &initial);
            named.meta.membership_entry = Some((LogIndex(2), Term(2)));
            let err = world.restore_checked(NodeId(1), &named).unwrap_err();
            assert!(
                err.starts_with("snapshot membership entry: node 1"),
                "{err}"
            );
        }
    }

    mod disk_rules {
        //! The simulated disk's own rules (`disk.rs`): what becomes durable never votes twice
        //! in one term or moves the term back, no write lands at or below the log's start
        //! after a snapshot (issue 14, finding 1), and the log is compacted only under a
        //! durable snapshot.

        use crate::disk::{Disk, HardStateDamage, StoredSnapshot};
        use crate::state_machine::checksum;
        use crate::world_checks::vote_released_durably;
        use rcraft::core::HardState;
        use rcraft::wire::{Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term};

        fn hard_state(term: u64, vote: Option<u64>) -> Option<HardState> {
            Some(HardState {
                term: Term(term),
                vote: vote.map(NodeId),
                ..Default::default()
            })
        }

        fn entries(from: u64, through: u64) -> Vec<Entry> {
            let entry = |i| Entry::new(Term(1), LogIndex(i), EntryPayload::Noop);
            (from..=through).map(entry).collect()
        }

        #[test]
        fn two_durable_votes_in_one_term_are_rejected() {
            let mut disk = Disk::default();
            disk.write(1, hard_state(5, Some(1)), Vec::new());
            // The same vote saved again is one vote.
            disk.write(2, hard_state(5, Some(1)), Vec::new());
            assert_eq!(disk.sync_all(), Ok(()));
            assert_eq!(disk.durable_vote(Term(5)), Some(NodeId(1)));
            disk.write(3, hard_state(5, Some(2)), Vec::new());
            let err = disk.sync_all().unwrap_err();
            assert_eq!(err, "voted twice in term 5: for 1 and then for 2");
        }

        /// Finding 55: a vote a damaged hard state lost is no longer on the disk, though the
        /// disk model keeps its record for the one-vote-per-term checks; granting it again
        /// must wait until it is saved again.
        #[test]
        fn a_vote_whose_record_a_damaged_hard_state_lost_is_not_durable() {
            let released = |disk: &Disk| {
                let term = Term(5);
                let durable = disk.durable_vote(term);
                vote_released_durably(NodeId(1), term, durable, disk.durable_term())
            };
            let mut disk = Disk::default();
            disk.write(1, hard_state(5, Some(1)), Vec::new());
            disk.sync_all().unwrap();
            assert_eq!(released(&disk), Ok(()));
            // One slot still readable: the vote is still held.
            disk.damage_hard_state(HardStateDamage::OneSlot);
            assert_eq!(released(&disk), Ok(()));
            disk.damage_hard_state(HardStateDamage::BothSlots);
            let err = released(&disk).unwrap_err();
            assert_eq!(
                err,
                "persistence contract: grants its vote to 1 in term 5 while its disk holds vote \
                 None for that term"
            );
            disk.write(2, hard_state(5, Some(1)), Vec::new());
            disk.sync_all().unwrap();
            assert_eq!(released(&disk), Ok(()));
        }

        #[test]
        fn a_durable_term_that_goes_back_is_rejected() {
            let mut disk = Disk::default();
            disk.write(1, hard_state(5, None), Vec::new());
            disk.write(2, hard_state(6, None), Vec::new());
            assert_eq!(disk.sync_through(2), Ok(()));
            disk.write(3, hard_state(4, None), Vec::new());
            let err = disk.sync_through(3).unwrap_err();
            assert_eq!(err, "durable term went backwards: 4 after 6");
        }

        #[test]
        fn a_write_below_the_snapshot_or_a_compaction_beyond_it_is_rejected() {
            let mut disk = Disk::default();
            disk.write(1, hard_state(1, None), entries(1, 6));
            disk.sync_all().unwrap();
            let err = disk.compact(LogIndex(4)).unwrap_err();
            assert_eq!(
                err,
                "CompactLog through 4 but the durable snapshot covers only 0"
            );
            let bytes = vec![1, 2, 3];
            let meta = SnapshotMeta {
                index: LogIndex(4),
                term: Term(1),
                membership: Membership::with_voters([NodeId(0)]),
                membership_entry: Some((LogIndex(0), Term(0))),
                size_bytes: bytes.len() as u64,
                checksum: checksum(&bytes),
            };
            disk.save_snapshot(StoredSnapshot { meta, bytes }).unwrap();
            assert_eq!(disk.compact(LogIndex(4)), Ok(()));
            assert!(disk.compact(LogIndex(5)).is_err());
            // Entries after the snapshot may be written again; from its index or below not.
            disk.write(2, None, entries(5, 7));
            assert_eq!(disk.sync_all(), Ok(()));
            disk.write(3, None, entries(4, 8));
            let err = disk.sync_all().unwrap_err();
            assert_eq!(
                err,
                "disk: persist 3 writes from index 4, at or below the log's start after snapshot \
                 index 4 (installed or compacted before this write)"
            );
        }
    }
}
