//! `rcraft members list`: every listed address and every member, what each is in the
//! leader's configuration, how the leader replicates to it and its own log indexes.

use crate::members::{MembersCommon, MembersContext, MembersFailure, MembersListArgs};
use crate::status::role_name;
use rcraft::admin::{describe_membership, leader_view, membership_label};
use rcraft::client::ClientError;
use rcraft::wire::{LogIndex, Membership, NodeId, NodeStatus};
use serde_json::{Value, json};
use std::io::{self, Write};
use std::net::SocketAddr;

/// One row of `members list`: an address (or a member without one) and what it says.
struct MemberRow {
    id: NodeId,
    address: Option<SocketAddr>,
    label: &'static str,
    leader: bool,
    /// The leader's match index for this node and how it replicates to it.
    replication: Option<(LogIndex, String)>,
    status: Option<Result<NodeStatus, ClientError>>,
}

pub(crate) fn members_list(
    common: &MembersCommon,
    args: &MembersListArgs,
) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let leader = context.admin.leader_status()?;
    let membership = &leader.membership;
    let row = |id: NodeId, address, status| MemberRow {
        id,
        address,
        label: membership_label(membership, id),
        leader: id == leader.id,
        replication: leader_view(&leader, id),
        status,
    };
    // Every listed address under the id its node reports, then the members none of them is.
    let mut rows: Vec<MemberRow> = (context.listed.into_iter())
        .map(|l| row(l.id, Some(l.address), Some(l.status)))
        .collect();
    for id in membership.members() {
        if !rows.iter().any(|r| r.id == id) {
            rows.push(row(id, None, None));
        }
    }
    rows.sort_by_key(|r| r.id);
    let lines = if args.json {
        rows.iter().map(member_json).collect()
    } else {
        members_table(&rows, membership)
    };
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

fn member_json(row: &MemberRow) -> String {
    let mut object = json!({
        "id": row.id.0,
        "address": row.address.map(|a| a.to_string()),
        "membership": row.label,
        "leader": row.leader,
        "match_index": row.replication.as_ref().map(|(index, _)| index.0),
        "replication": row.replication.as_ref().map(|(_, state)| state),
    });
    let more = match &row.status {
        Some(Ok(s)) => json!({
            "reachable": true,
            "role": role_name(s.role),
            "term": s.term.0,
            "commit_index": s.commit_index.0,
            "applied_index": s.applied_index.0,
            "last_index": s.last_index.0,
        }),
        Some(Err(e)) => json!({"reachable": false, "error": e.to_string()}),
        None => json!({"reachable": false, "error": "no address in --servers"}),
    };
    if let (Some(object), Value::Object(more)) = (object.as_object_mut(), more) {
        object.extend(more);
    }
    object.to_string()
}

fn members_table(rows: &[MemberRow], membership: &Membership) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:<22} {:<17} {:<6} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "MEMBERSHIP", "LEADER", "MATCH", "COMMIT", "APPLIED", "LAST"
    )];
    for row in rows {
        let address = row.address.map_or("-".to_string(), |a| a.to_string());
        let leader = if row.leader { "*" } else { "" };
        let matched = row
            .replication
            .as_ref()
            .map_or("-".to_string(), |(index, _)| index.to_string());
        let head = format!(
            "{:<3} {address:<22} {:<17} {leader:<6} {matched:>10}",
            row.id.to_string(),
            row.label
        );
        lines.push(match &row.status {
            Some(Ok(s)) => format!(
                "{head} {:>10} {:>10} {:>10}",
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_index.to_string()
            ),
            Some(Err(e)) => format!("{head} unreachable ({e})"),
            None => format!("{head} no address in --servers"),
        });
    }
    lines.push(format!(
        "configuration: {}",
        describe_membership(membership)
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft::wire::{PeerProgress, ReplicationState, Role, Term};

    /// Voters 0 and 1, learner 2.
    fn two_voters_one_learner() -> Membership {
        let mut membership = Membership::with_voters([NodeId(0), NodeId(1)]);
        membership.learners.insert(NodeId(2));
        membership
    }

    #[test]
    fn members_list_rows_render() {
        let status = NodeStatus {
            id: NodeId(1),
            role: Role::Leader,
            term: Term(4),
            leader: Some(NodeId(1)),
            commit_index: LogIndex(9),
            applied_index: LogIndex(8),
            last_index: LogIndex(10),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0), NodeId(1)],
            learners: vec![NodeId(2)],
            membership: two_voters_one_learner(),
            replication: vec![PeerProgress {
                id: NodeId(2),
                match_index: LogIndex(7),
                next_index: LogIndex(8),
                state: ReplicationState::Replicate,
                recently_active: true,
            }],
            repairing: None,
            votes_unknown: None,
            lost: None,
        };
        assert_eq!(
            leader_view(&status, NodeId(1)),
            Some((LogIndex(10), "leader".into()))
        );
        let learner = leader_view(&status, NodeId(2));
        assert_eq!(learner, Some((LogIndex(7), "replicating".into())));
        assert_eq!(leader_view(&status, NodeId(5)), None);
        let status_for_views = status.clone();
        let row = |id: u64, label, leader, status| MemberRow {
            id: NodeId(id),
            address: (id < 3).then(|| format!("127.0.0.1:{}", 7000 + id).parse().unwrap()),
            label,
            leader,
            replication: leader_view(&status_for_views, NodeId(id)),
            status,
        };
        let unreachable = ClientError::InvalidInput("down".to_string());
        let rows = [
            row(1, "voter", true, Some(Ok(status))),
            row(2, "learner", false, Some(Err(unreachable))),
            row(5, "voter", false, None),
        ];
        assert_eq!(
            member_json(&rows[0]),
            r#"{"id":1,"address":"127.0.0.1:7001","membership":"voter","leader":true,"match_index":10,"replication":"leader","reachable":true,"role":"leader","term":4,"commit_index":9,"applied_index":8,"last_index":10}"#
        );
        assert_eq!(
            member_json(&rows[1]),
            r#"{"id":2,"address":"127.0.0.1:7002","membership":"learner","leader":false,"match_index":7,"replication":"replicating","reachable":false,"error":"invalid request: down"}"#
        );
        assert!(
            member_json(&rows[2]).contains(
                r#""address":null,"membership":"voter","leader":false,"match_index":null"#
            )
        );
        let table = members_table(&rows, &two_voters_one_learner());
        assert_eq!(table.len(), 5);
        assert!(
            table[1].starts_with("1   127.0.0.1:7001         voter             *              10")
        );
        assert!(table[2].contains(" learner "), "{}", table[2]);
        assert!(table[2].contains(" 7 unreachable"), "{}", table[2]);
        assert!(table[2].contains("unreachable (invalid request: down)"));
        assert!(table[3].contains("no address in --servers"));
        assert_eq!(table[4], "configuration: voters 0,1; learners 2");
    }
}
