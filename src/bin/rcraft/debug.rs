//! `rcraft debug events`: every listed node's flight recorder (its recent notable events:
//! term and role changes, votes, snapshot stages, slow fsyncs, dropped frames, membership
//! changes, starts), human-readable or one JSON object per event and line. Exit 0 when every
//! node asked answered, 1 otherwise.

use crate::cluster::{
    ClusterArgs, address_of, ask_each, cluster_of, directory, per_node_options, tls_of, token_of,
};
use crate::{EXIT_FAILED, usage_error};
use clap::{Args, Subcommand};
use rcraft::client::ClientOptions;
use rcraft::node::flight_recorder::describe_event;
use rcraft::wire::NodeId;
use serde_json::json;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct DebugArgs {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Show each node's flight recorder: its last few thousand notable events, oldest first.
    Events(EventsArgs),
}

#[derive(Args)]
struct EventsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only this node (the id it reports); default: every listed node.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// One JSON object per event and line: {"node","address","seq","unix_ms","term","kind",
    /// "detail"}.
    #[arg(long)]
    json: bool,
    /// Longest wait for each node's answer.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    timeout_ms: u64,
}

pub(crate) fn debug(args: &DebugArgs) -> ExitCode {
    match &args.command {
        DebugCommand::Events(events) => debug_events(events),
    }
}

fn debug_events(args: &EventsArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("debug events", &e),
    };
    let (token, tls) = match token_of(&args.cluster).and_then(|t| Ok((t, tls_of(&args.cluster)?))) {
        Ok(access) => access,
        Err(e) => return usage_error("debug events", &e),
    };
    let options = ClientOptions {
        token,
        tls,
        ..per_node_options(args.timeout_ms, cluster_id)
    };
    let listed = directory(&servers, &options);
    let asked: Vec<(NodeId, SocketAddr)> = match args.id {
        Some(id) => match address_of(&listed, NodeId(id)) {
            Some(address) => vec![(NodeId(id), address)],
            None => {
                let why = format!("--id {id}: no listed address is node {id}");
                return usage_error("debug events", &why);
            }
        },
        None => listed.iter().map(|l| (l.id, l.address)).collect(),
    };
    let addresses: Vec<SocketAddr> = asked.iter().map(|&(_, address)| address).collect();
    let answers = ask_each(&addresses, &options, |client, address| {
        client.events_of(address)
    });
    let mut out = io::stdout().lock();
    let mut all_answered = true;
    for ((id, address), answer) in asked.iter().zip(answers) {
        match (answer, args.json) {
            (Ok(events), true) => {
                for e in events {
                    let line = json!({
                        "node": id.0,
                        "address": address.to_string(),
                        "seq": e.seq,
                        "unix_ms": e.unix_ms,
                        "term": e.term.0,
                        "kind": e.kind,
                        "detail": e.detail,
                    });
                    let _ = writeln!(out, "{line}");
                }
            }
            (Ok(events), false) => {
                let _ = writeln!(out, "node {id} {address}: {} events", events.len());
                for e in &events {
                    let _ = writeln!(out, "  {}", describe_event(e));
                }
            }
            (Err(e), json) => {
                all_answered = false;
                if json {
                    let line = json!({"node": id.0, "address": address.to_string(), "error": e.to_string()});
                    let _ = writeln!(out, "{line}");
                } else {
                    let _ = writeln!(out, "node {id} {address}: unreachable ({e})");
                }
            }
        }
    }
    if all_answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
