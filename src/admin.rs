//! Cluster administration through a [`Client`]: membership changes planned against the
//! leader's configuration, a learner promoted once it has caught up, and how far a member's
//! log is behind the leader's, leadership moved to a chosen voter. `rcraft members` and
//! `rcraft transfer` are thin command lines over this module; an embedder calls the same
//! functions.
//!
//! Everything runs on the caller's thread and blocks until a deadline fixed when the
//! [`MemberAdmin`] is made. Changes are single-step (at most one voter changes), so the core
//! appends the target configuration as is, without a joint phase (thesis §4.1).

use crate::client::{Client, ClientError, ClientOptions};
use crate::node::net::auth::Token;
use crate::wire::{LogIndex, Membership, NodeId, NodeStatus, ReplicationState, Term};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Leader's last index minus the index through which it knows a learner's log matches, at
/// most, for the learner to count as caught up (and be promoted to voter). A new voter far
/// behind would slow commits, or stop them if another voter failed while it catches up.
pub const CATCH_UP_LAG_ENTRIES_MAX: u64 = 100;
/// Pause between two looks at a learner's progress.
const CATCH_UP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a change the leader refused without effect (an earlier change not committed
/// yet, a leader fresh from its election) is retried.
const CHANGE_REFUSED_RETRY_WINDOW: Duration = Duration::from_secs(3);
/// Pause before retrying a refused change.
const CHANGE_REFUSED_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One single-step membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a node that receives the log but does not vote.
    AddLearner(NodeId),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

impl fmt::Display for MemberChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberChange::AddLearner(id) => write!(f, "adding node {id} as a learner"),
            MemberChange::Promote(id) => write!(f, "promoting node {id} to voter"),
            MemberChange::Remove(id) => write!(f, "removing node {id}"),
        }
    }
}

/// Why an administrative operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// The change cannot be made from the configuration in force (e.g. the node is already a
    /// voter); nothing was asked of the cluster.
    Refused(String),
    /// The cluster did not do it: no leader answered, the change failed, the deadline passed.
    Failed(String),
}

impl AdminError {
    /// The message alone.
    pub fn message(&self) -> &str {
        match self {
            AdminError::Refused(m) | AdminError::Failed(m) => m,
        }
    }

    /// The same kind of error with `message` in place of its own.
    pub fn with_message(&self, message: String) -> AdminError {
        match self {
            AdminError::Refused(_) => AdminError::Refused(message),
            AdminError::Failed(_) => AdminError::Failed(message),
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AdminError {}

/// Membership administration of one cluster, every operation bounded by one deadline.
pub struct MemberAdmin {
    servers: Vec<SocketAddr>,
    cluster_id: u64,
    deadline: Instant,
    timeout: Duration,
    token: Option<Token>,
    tls: Option<crate::tls::ClientTls>,
}

impl MemberAdmin {
    /// Administration of the cluster at `servers` whose operations end within `timeout`
    /// from now.
    pub fn new(servers: Vec<SocketAddr>, cluster_id: u64, timeout: Duration) -> MemberAdmin {
        MemberAdmin {
            servers,
            cluster_id,
            deadline: Instant::now() + timeout,
            timeout,
            token: None,
            tls: None,
        }
    }

    /// The same, sending `token` (the admin token of nodes with token files).
    pub fn with_token(self, token: Option<Token>) -> MemberAdmin {
        MemberAdmin { token, ..self }
    }

    /// The same, over TLS (`--cacert`) when `tls` is given.
    pub fn with_tls(self, tls: Option<crate::tls::ClientTls>) -> MemberAdmin {
        MemberAdmin { tls, ..self }
    }

    /// The addresses asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// A client whose operations end by the deadline.
    pub fn client(&self) -> Result<Client, AdminError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        let options = ClientOptions {
            token: self.token.clone(),
            tls: self.tls.clone(),
            ..ClientOptions::with_timeout(left, self.cluster_id)
        };
        Client::new(&self.servers, options).map_err(|e| AdminError::Refused(e.to_string()))
    }

    fn timed_out(&self) -> AdminError {
        AdminError::Failed(format!("timed out after {} ms", self.timeout.as_millis()))
    }

    /// The leader's status: its view of the configuration.
    pub fn leader_status(&self) -> Result<NodeStatus, AdminError> {
        self.client()?
            .leader_status()
            .map_err(|e| AdminError::Failed(format!("no leader answered: {e}")))
    }

    /// Proposes `change` against the leader's configuration `current` and waits until it is
    /// committed. Returns the configuration now in force and the leader that committed it.
    ///
    /// The leader refuses a change, without changing anything, while an earlier one is not
    /// committed yet or before it has committed an entry of its own term (right after an
    /// election). Such refusals are retried for a few seconds, planning again from the
    /// leader's configuration each time.
    pub fn apply_change(
        &self,
        current: &Membership,
        change: MemberChange,
    ) -> Result<(Membership, Option<NodeId>), AdminError> {
        let mut current = current.clone();
        let mut retry_until = None;
        loop {
            let target = plan_member_change(&current, change).map_err(AdminError::Refused)?;
            let mut client = self.client()?;
            let refusal = match client.change_membership(target.clone()) {
                Ok(_) => return Ok((target, client.leader())),
                Err(e) if e.is_permission_denied() => return Err(change_failure(change, &e)),
                Err(e @ ClientError::Server { definite: true, .. }) => e,
                Err(e) => return Err(change_failure(change, &e)),
            };
            let until = *retry_until.get_or_insert(Instant::now() + CHANGE_REFUSED_RETRY_WINDOW);
            let now = Instant::now();
            if now + CHANGE_REFUSED_RETRY_PAUSE >= until.min(self.deadline) {
                return Err(change_failure(change, &refusal));
            }
            std::thread::sleep(CHANGE_REFUSED_RETRY_PAUSE);
            current = self.leader_status()?.membership;
        }
    }

    /// Waits until the leader reports learner `id`'s log matching its own to within
    /// [`CATCH_UP_LAG_ENTRIES_MAX`] entries, or the deadline passes (the error says how far it
    /// got). `label` names the node in that error, e.g. `node 3 (127.0.0.1:7003)`.
    pub fn wait_caught_up(&self, id: NodeId, label: &str) -> Result<(), AdminError> {
        let mut last_seen = "no answer yet".to_string();
        while Instant::now() + CATCH_UP_POLL_INTERVAL < self.deadline {
            match self.leader_status() {
                Ok(leader) => match replication_lag(&leader, id) {
                    None => return Ok(()),
                    Some(behind) => last_seen = behind,
                },
                // A failed look (the deadline may pass during it) is reported as the last
                // thing seen if the learner never catches up.
                Err(failure) => last_seen = failure.to_string(),
            }
            std::thread::sleep(CATCH_UP_POLL_INTERVAL);
        }
        Err(AdminError::Failed(format!(
            "{label} did not catch up within {} ms ({last_seen})",
            self.timeout.as_millis()
        )))
    }

    /// Waits for learner `id` to catch up, then promotes it; returns the configuration now in
    /// force.
    pub fn promote_when_caught_up(
        &self,
        id: NodeId,
        label: &str,
        current: &Membership,
    ) -> Result<Membership, AdminError> {
        self.wait_caught_up(id, label)?;
        // The configuration may have moved on while the learner caught up.
        let current = match self.leader_status() {
            Ok(status) => status.membership,
            Err(_) => current.clone(),
        };
        Ok(self.apply_change(&current, MemberChange::Promote(id))?.0)
    }
}

/// Pause between two looks at who leads while a leadership transfer is under way.
const TRANSFER_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the transfer request is sent again while leadership has not moved: the leader
/// abandons a transfer after an election timeout (thesis §3.10), so a slow target gets
/// another chance.
const TRANSFER_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// A leadership transfer that happened (or was not needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transferred {
    /// The leader before the transfer.
    pub from: NodeId,
    /// The leader now: the target.
    pub to: NodeId,
    /// The new leader's term.
    pub term: Term,
}

impl MemberAdmin {
    /// Moves leadership to voter `target` (thesis §3.10) and waits until it reports itself
    /// leader. Refused without asking anything when `target` is not a voter of the leader's
    /// configuration; when `target` leads already, nothing is asked and `from == to`.
    pub fn transfer_leadership(&self, target: NodeId) -> Result<Transferred, AdminError> {
        let first = self.leader_status()?;
        if first.id == target {
            return Ok(Transferred {
                from: target,
                to: target,
                term: first.term,
            });
        }
        if !first.membership.is_voter(target) {
            return Err(AdminError::Refused(format!(
                "node {target} is not a voter ({}); only a voter can lead",
                describe_membership(&first.membership)
            )));
        }
        let mut leader = first.clone();
        let mut asked_at: Option<Instant> = None;
        while Instant::now() + TRANSFER_POLL_INTERVAL < self.deadline {
            if asked_at.is_none_or(|at| at.elapsed() >= TRANSFER_RETRY_INTERVAL) {
                // A refusal (the leader moved on, a transfer already under way) is answered
                // by the next look at who leads.
                let _ = self.client()?.transfer_leader(target);
                asked_at = Some(Instant::now());
            }
            std::thread::sleep(TRANSFER_POLL_INTERVAL);
            if let Ok(now) = self.leader_status() {
                if now.id == target {
                    return Ok(Transferred {
                        from: first.id,
                        to: target,
                        term: now.term,
                    });
                }
                leader = now;
            }
        }
        Err(AdminError::Failed(format!(
            "leadership did not move to node {target} within {} ms (node {} leads at term {})",
            self.timeout.as_millis(),
            leader.id,
            leader.term
        )))
    }
}

/// How far node `id` is behind the leader whose status is `leader`, or `None` when it is
/// within [`CATCH_UP_LAG_ENTRIES_MAX`] entries of the leader's last index and the leader
/// streams entries to it and heard from it lately. The last two keep a node that never
/// answered from counting as caught up on a short log (its match index is 0).
pub fn replication_lag(leader: &NodeStatus, id: NodeId) -> Option<String> {
    let Some(progress) = leader.replication.iter().find(|p| p.id == id) else {
        return Some(format!("leader {} does not replicate to it yet", leader.id));
    };
    if progress.state != ReplicationState::Replicate || !progress.recently_active {
        let silent = if progress.recently_active {
            ""
        } else {
            ", not heard from lately"
        };
        return Some(format!(
            "leader {} has not seen it acknowledge its log ({}{silent})",
            leader.id,
            replication_state_name(progress.state)
        ));
    }
    let lag = leader.last_index.0.saturating_sub(progress.match_index.0);
    if lag <= CATCH_UP_LAG_ENTRIES_MAX {
        return None;
    }
    Some(format!(
        "its log matches the leader's through index {}, {lag} behind the leader's {} ({})",
        progress.match_index,
        leader.last_index,
        replication_state_name(progress.state)
    ))
}

/// The leader's replication state for one member, as operators read it.
pub fn replication_state_name(state: ReplicationState) -> String {
    match state {
        ReplicationState::Probe => "probing".to_string(),
        ReplicationState::Replicate => "replicating".to_string(),
        ReplicationState::Snapshot { offset, size_bytes } => {
            format!("sending snapshot, {offset} of {size_bytes} bytes")
        }
    }
}

/// The leader's match index for node `id` and how it replicates to it: the leader itself
/// matches through its last index; `None` for a node the leader does not replicate to.
pub fn leader_view(leader: &NodeStatus, id: NodeId) -> Option<(LogIndex, String)> {
    if id == leader.id {
        return Some((leader.last_index, "leader".to_string()));
    }
    leader
        .replication
        .iter()
        .find(|p| p.id == id)
        .map(|p| (p.match_index, replication_state_name(p.state)))
}

/// The one-line failure of a change the leader did not confirm.
fn change_failure(change: MemberChange, error: &ClientError) -> AdminError {
    let outcome = if error.is_definite() {
        "nothing changed"
    } else {
        "the change may or may not take effect, check with `rcraft members list`"
    };
    AdminError::Failed(format!("{change}: {error}; {outcome}"))
}

/// The configuration after `change`, or why it cannot be made.
pub fn plan_member_change(
    current: &Membership,
    change: MemberChange,
) -> Result<Membership, String> {
    if current.is_joint() {
        return Err(format!(
            "a joint configuration is in force ({}); wait until the leader leaves it",
            describe_membership(current)
        ));
    }
    let mut target = current.clone();
    match change {
        MemberChange::AddLearner(id) => {
            if current.voters.contains(&id) {
                return Err(format!("node {id} is already a voter"));
            }
            if !target.learners.insert(id) {
                return Err(format!("node {id} is already a learner"));
            }
        }
        MemberChange::Promote(id) => {
            if current.voters.contains(&id) {
                return Err(format!("node {id} is already a voter"));
            }
            if !target.learners.remove(&id) {
                return Err(format!(
                    "node {id} is not a member; add it with `rcraft members add {id}`"
                ));
            }
            target.voters.insert(id);
        }
        MemberChange::Remove(id) => {
            if current.voters.len() == 1 && current.voters.contains(&id) {
                return Err(format!(
                    "node {id} is the last voter; a cluster needs at least one"
                ));
            }
            if !target.voters.remove(&id) && !target.learners.remove(&id) {
                return Err(format!("node {id} is not a member"));
            }
        }
    }
    Ok(target)
}

fn id_list(ids: &BTreeSet<NodeId>) -> String {
    if ids.is_empty() {
        return "none".to_string();
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.join(",")
}

/// `voters 0,1,2; learners 3`, or while joint `voters 1,2,3 (joint with outgoing voters
/// 0,1,2); learners none`.
pub fn describe_membership(membership: &Membership) -> String {
    let joint = if membership.is_joint() {
        format!(
            " (joint with outgoing voters {})",
            id_list(&membership.voters_outgoing)
        )
    } else {
        String::new()
    };
    format!(
        "voters {}{joint}; learners {}",
        id_list(&membership.voters),
        id_list(&membership.learners)
    )
}

/// How `id` takes part in `membership`: `voter`, `voter (outgoing)`, `learner` or `none`.
pub fn membership_label(membership: &Membership, id: NodeId) -> &'static str {
    if membership.voters.contains(&id) {
        "voter"
    } else if membership.voters_outgoing.contains(&id) {
        "voter (outgoing)"
    } else if membership.learners.contains(&id) {
        "learner"
    } else {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PeerProgress, Role, Term};

    fn membership(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        let set = |ids: &[u64]| ids.iter().copied().map(NodeId).collect();
        Membership {
            voters: set(voters),
            voters_outgoing: set(outgoing),
            learners: set(learners),
        }
    }

    #[test]
    fn member_changes_are_planned_or_refused() {
        use MemberChange::{AddLearner, Promote, Remove};
        let three = membership(&[0, 1, 2], &[], &[]);
        let with_learner = membership(&[0, 1, 2], &[], &[3]);
        assert_eq!(
            plan_member_change(&three, AddLearner(NodeId(3))),
            Ok(with_learner.clone())
        );
        assert_eq!(
            plan_member_change(&with_learner, Promote(NodeId(3))),
            Ok(membership(&[0, 1, 2, 3], &[], &[]))
        );
        assert_eq!(
            plan_member_change(&with_learner, Remove(NodeId(3))),
            Ok(three.clone())
        );
        assert_eq!(
            plan_member_change(&three, Remove(NodeId(0))),
            Ok(membership(&[1, 2], &[], &[]))
        );
        let refused = [
            (&three, AddLearner(NodeId(1)), "node 1 is already a voter"),
            (&with_learner, AddLearner(NodeId(3)), "already a learner"),
            (&three, Promote(NodeId(2)), "node 2 is already a voter"),
            (&three, Promote(NodeId(3)), "node 3 is not a member"),
            (&three, Remove(NodeId(3)), "node 3 is not a member"),
        ];
        for (current, change, why) in refused {
            let e = plan_member_change(current, change).unwrap_err();
            assert!(e.contains(why), "{change:?}: {e}");
        }
        let one = membership(&[2], &[], &[0]);
        let e = plan_member_change(&one, Remove(NodeId(2))).unwrap_err();
        assert!(e.contains("node 2 is the last voter"), "{e}");
        assert!(plan_member_change(&one, Remove(NodeId(0))).is_ok());
        let joint = membership(&[1, 2, 3], &[0, 1, 2], &[]);
        let e = plan_member_change(&joint, Remove(NodeId(3))).unwrap_err();
        assert!(e.contains("joint configuration"), "{e}");
    }

    #[test]
    fn memberships_are_described_and_labelled() {
        assert_eq!(
            describe_membership(&membership(&[0, 1, 2], &[], &[3])),
            "voters 0,1,2; learners 3"
        );
        let joint = membership(&[1, 2, 3], &[0, 1, 2], &[]);
        assert_eq!(
            describe_membership(&joint),
            "voters 1,2,3 (joint with outgoing voters 0,1,2); learners none"
        );
        assert_eq!(membership_label(&joint, NodeId(0)), "voter (outgoing)");
        assert_eq!(membership_label(&joint, NodeId(1)), "voter");
        assert_eq!(membership_label(&joint, NodeId(3)), "voter");
        assert_eq!(membership_label(&joint, NodeId(4)), "none");
        let learner = membership(&[0], &[], &[1]);
        assert_eq!(membership_label(&learner, NodeId(1)), "learner");
    }

    #[test]
    fn a_learner_is_caught_up_when_the_leader_says_its_log_matches() {
        let leader = |match_index: u64, state| NodeStatus {
            id: NodeId(0),
            role: Role::Leader,
            term: Term(2),
            leader: Some(NodeId(0)),
            commit_index: LogIndex(500),
            applied_index: LogIndex(500),
            last_index: LogIndex(500),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0)],
            learners: vec![NodeId(1)],
            membership: membership(&[0], &[], &[1]),
            replication: vec![PeerProgress {
                id: NodeId(1),
                match_index: LogIndex(match_index),
                next_index: LogIndex(match_index + 1),
                state,
                recently_active: true,
            }],
            repairing: None,
            votes_unknown: None,
            lost: None,
        };
        assert_eq!(
            replication_lag(&leader(400, ReplicationState::Replicate), NodeId(1)),
            None
        );
        let far = replication_lag(&leader(399, ReplicationState::Replicate), NodeId(1));
        assert_eq!(
            far.as_deref(),
            Some(
                "its log matches the leader's through index 399, 101 behind the leader's 500 (replicating)"
            )
        );
        let snapshot = ReplicationState::Snapshot {
            offset: 10,
            size_bytes: 40,
        };
        let sending = replication_lag(&leader(0, snapshot), NodeId(1)).unwrap();
        assert!(
            sending.ends_with("(sending snapshot, 10 of 40 bytes)"),
            "{sending}"
        );
        // A node that never answered has match index 0; on a short log that is within the
        // allowed lag, yet it has not caught up.
        let mut short = leader(0, ReplicationState::Probe);
        short.last_index = LogIndex(3);
        short.replication[0].recently_active = false;
        assert_eq!(
            replication_lag(&short, NodeId(1)).as_deref(),
            Some("leader 0 has not seen it acknowledge its log (probing, not heard from lately)")
        );
        short.replication[0].state = ReplicationState::Replicate;
        assert!(replication_lag(&short, NodeId(1)).is_some());
        short.replication[0].recently_active = true;
        assert_eq!(replication_lag(&short, NodeId(1)), None);
        let unknown = replication_lag(&leader(0, ReplicationState::Probe), NodeId(2));
        assert_eq!(
            unknown.as_deref(),
            Some("leader 0 does not replicate to it yet")
        );
    }
}
