//! `rcraft status`: every node's role, term, leader and log indexes, as a table or one JSON
//! object per line; exit 0 when a leader is known.

use crate::cluster::{ClusterArgs, ask_each, cluster_of, per_node_options};
use crate::{EXIT_FAILED, usage_error};
use clap::Args;
use rcraft::client::ClientError;
use rcraft::wire::{NodeStatus, Role};
use serde_json::json;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// One JSON object per node and line instead of a table.
    #[arg(long)]
    json: bool,
    /// Longest wait for each node's answer.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    timeout_ms: u64,
}

pub(crate) fn status(args: &StatusArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("status", &e),
    };
    let options = per_node_options(args.timeout_ms, cluster_id);
    let answers = ask_each(&servers, &options, |client, address| {
        client.status_of(address)
    });
    let lines: Vec<String> = if args.json {
        status_json_lines(&servers, &answers)
    } else {
        status_table(&servers, &answers)
    };
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let leader_known = answers
        .iter()
        .flatten()
        .any(|s| s.leader.is_some() || s.role == Role::Leader);
    if leader_known {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
    }
}

fn status_json_lines(
    servers: &[SocketAddr],
    answers: &[Result<NodeStatus, ClientError>],
) -> Vec<String> {
    let rows = servers.iter().zip(answers).enumerate();
    rows.map(|(i, (address, answer))| {
        let address = address.to_string();
        let row = match answer {
            Ok(s) => json!({
                "id": s.id.0,
                "address": address,
                "reachable": true,
                "role": role_name(s.role),
                "term": s.term.0,
                "leader": s.leader.map(|l| l.0),
                "commit_index": s.commit_index.0,
                "applied_index": s.applied_index.0,
                "last_index": s.last_index.0,
                "snapshot_index": s.snapshot_index.0,
            }),
            Err(e) => json!({
                "id": i,
                "address": address,
                "reachable": false,
                "error": e.to_string(),
            }),
        };
        row.to_string()
    })
    .collect()
}

fn status_table(
    servers: &[SocketAddr],
    answers: &[Result<NodeStatus, ClientError>],
) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT"
    )];
    for (i, (address, answer)) in servers.iter().zip(answers).enumerate() {
        lines.push(match answer {
            Ok(s) => format!(
                "{:<3} {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
                s.id.to_string(),
                address.to_string(),
                role_name(s.role),
                s.term.to_string(),
                s.leader.map_or("-".to_string(), |l| l.to_string()),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_index.to_string(),
                s.snapshot_index.to_string(),
            ),
            Err(e) => format!("{i:<3} {:<22} unreachable ({e})", address.to_string()),
        });
    }
    lines
}
