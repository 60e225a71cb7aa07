//! `rcraft status`: every node's role, term, leader and log indexes, as a table or one JSON
//! object per line; exit 0 when a leader is known.

use crate::cluster::{
    ClusterArgs, Listed, ask_each, cluster_of, directory, per_node_options, tls_of, token_of,
};
use crate::{EXIT_FAILED, usage_error};
use clap::Args;
use rcraft::client::{ClientError, ClientOptions};
use rcraft::node::metrics::stage_latency_json;
use rcraft::wire::{NodeStatus, Role, StageLatency};
use serde_json::json;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Ask again until a leader is known, for at most MS milliseconds (10000 when --wait is
    /// given alone); then show the last answers.
    #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "10000")]
    wait: Option<u64>,
    /// Also show where each node's writes spend their time: percentiles of every stage of
    /// the write path since the node started (with --json: a "latency" list per node).
    #[arg(long)]
    latency: bool,
}

/// Pause between two rounds of `status --wait`.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) fn status(args: &StatusArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("status", &e),
    };
    let (token, tls) = match token_of(&args.cluster).and_then(|t| Ok((t, tls_of(&args.cluster)?))) {
        Ok(access) => access,
        Err(e) => return usage_error("status", &e),
    };
    let options = ClientOptions {
        token,
        tls,
        ..per_node_options(args.timeout_ms, cluster_id)
    };
    let deadline = Instant::now() + Duration::from_millis(args.wait.unwrap_or(0));
    let mut listed = directory(&servers, &options);
    while !leader_known(&listed) && Instant::now() + WAIT_POLL_INTERVAL < deadline {
        std::thread::sleep(WAIT_POLL_INTERVAL);
        listed = directory(&servers, &options);
    }
    let latencies = if args.latency {
        let addresses: Vec<_> = listed.iter().map(|l| l.address).collect();
        ask_each(&addresses, &options, |client, address| {
            client.latency_of(address)
        })
    } else {
        Vec::new()
    };
    let mut lines: Vec<String> = if args.json {
        status_json_lines(&listed, &latencies)
    } else {
        status_table(&listed)
    };
    if args.latency && !args.json {
        lines.extend(latency_tables(&listed, &latencies));
    }
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    if leader_known(&listed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// True when a node answered as leader, or the nodes name a leader this table cannot check
/// (none of its addresses is that node). A leader named by followers but unreachable, or
/// answering as something else, in the same table is not known.
fn leader_known(listed: &[Listed]) -> bool {
    let answered = || listed.iter().filter_map(|l| l.status.as_ref().ok());
    if answered().any(|s| s.role == Role::Leader) {
        return true;
    }
    let named = answered().filter_map(|s| s.leader);
    named
        .into_iter()
        .any(|leader| !listed.iter().any(|l| l.id == leader))
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
    }
}

fn status_json_lines(listed: &[Listed], latencies: &[Latency]) -> Vec<String> {
    listed
        .iter()
        .enumerate()
        .map(|(at, l)| {
            let address = l.address.to_string();
            let mut row = match &l.status {
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
                    "repairing": s.repairing.map(|lost| json!({
                        "from": lost.from.0,
                        "through": lost.through.0,
                    })),
                    "votes_unknown": s.votes_unknown.as_ref().map(|waiting| {
                        waiting.iter().map(|id| id.0).collect::<Vec<u64>>()
                    }),
                    "lost": s.lost.map(|lost| json!({
                        "from": lost.from.0,
                        "through": lost.through.0,
                    })),
                }),
                Err(e) => json!({
                    "id": l.id.0,
                    "address": address,
                    "reachable": false,
                    "error": e.to_string(),
                }),
            };
            if let (Some(Ok(stages)), Some(object)) = (latencies.get(at), row.as_object_mut()) {
                let stages: Vec<_> = stages.iter().map(stage_latency_json).collect();
                object.insert("latency".to_string(), json!(stages));
            }
            row.to_string()
        })
        .collect()
}

/// One node's answer to a latency request.
type Latency = Result<Vec<StageLatency>, ClientError>;

/// Per node, a table of its write-path stages.
fn latency_tables(listed: &[Listed], latencies: &[Latency]) -> Vec<String> {
    let mut lines = Vec::new();
    for (l, latency) in listed.iter().zip(latencies) {
        let role = l
            .status
            .as_ref()
            .map_or("unreachable", |s| role_name(s.role));
        lines.push(String::new());
        lines.push(format!(
            "node {} {} ({role}): write latency since start",
            l.id, l.address
        ));
        let stages = match latency {
            Ok(stages) if stages.is_empty() => {
                lines.push("  no writes timed yet".to_string());
                continue;
            }
            Ok(stages) => stages,
            Err(e) => {
                lines.push(format!("  unreachable ({e})"));
                continue;
            }
        };
        lines.push(format!(
            "  {:<20} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "STAGE", "PEER", "COUNT", "P50_US", "P90_US", "P99_US", "MAX_US"
        ));
        for s in stages {
            lines.push(format!(
                "  {:<20} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
                s.stage,
                s.peer.map_or("-".to_string(), |p| p.to_string()),
                s.count,
                s.p50_us,
                s.p90_us,
                s.p99_us,
                s.max_us
            ));
        }
    }
    lines
}

fn status_table(listed: &[Listed]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT"
    )];
    for l in listed {
        let address = l.address;
        let repairing = l.status.as_ref().ok().and_then(|s| s.repairing);
        let votes_unknown = l.status.as_ref().ok().and_then(|s| s.votes_unknown.clone());
        let lost_alone = l.status.as_ref().ok().and_then(|s| s.lost);
        lines.push(match &l.status {
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
            Err(e) => format!(
                "{:<3} {:<22} unreachable ({e})",
                l.id.to_string(),
                l.address.to_string()
            ),
        });
        if let Some(lost) = repairing {
            lines.push(format!(
                "    repairing: entries {}..={} were lost from this node's disk; fetching them \
                 from the leader (until then it votes only for a candidate whose log covers them)",
                lost.from, lost.through
            ));
        }
        if let Some(waiting) = votes_unknown {
            let ids: Vec<String> = waiting.iter().map(|id| id.to_string()).collect();
            lines.push(format!(
                "    votes unknown: its hard state (whom it voted for) was damaged; it neither \
                 votes nor campaigns until voters {} have told their current terms",
                ids.join(", ")
            ));
        }
        if let Some(lost) = lost_alone {
            lines.push(format!(
                "    lost: entries {}..={} were lost from this node's disk at its start; it is the \
                 only server of its cluster, so no copy is left and it went on without them \
                 (writes acknowledged in them are gone: OPERATIONS.md §7)",
                lost.from, lost.through
            ));
        }
    }
    if let Some((from, through)) = held_by_no_node(listed) {
        lines.push(format!(
            "LOST: no node holds entries {from}..={through}, which a node synced (and may have \
             acknowledged) before its disk lost them; if any was committed, no intact copy is \
             left. No node counts them as held: nothing is served from them (OPERATIONS.md §7)"
        ));
    }
    lines
}

/// The entries some node lost from its disk that no listed node holds any more, when every
/// listed node answered: one past the longest log through the furthest end of a lost range.
/// A node holds exactly the entries up to its last index (a lost range starts right after
/// it), so an entry above every last index is held by none of them.
fn held_by_no_node(listed: &[Listed]) -> Option<(u64, u64)> {
    let statuses: Vec<&NodeStatus> = listed
        .iter()
        .map(|l| l.status.as_ref().ok())
        .collect::<Option<_>>()?;
    let claimed = statuses
        .iter()
        .filter_map(|s| s.repairing)
        .map(|lost| lost.through.0)
        .max()?;
    let held = statuses.iter().map(|s| s.last_index.0).max()?;
    (claimed > held).then_some((held + 1, claimed))
}
