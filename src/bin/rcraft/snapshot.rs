//! `rcraft snapshot`: ask nodes to snapshot their state machine and compact their log now.

use crate::cluster::{ClusterArgs, ask_each, cluster_of, per_node_options};
use crate::{EXIT_FAILED, usage_error};
use clap::Args;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only this node (its position in the server list); default: every node.
    #[arg(long, value_name = "N")]
    id: Option<usize>,
    /// Longest wait for each node's snapshot to be durable.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    timeout_ms: u64,
}

/// `rcraft snapshot`: one line per node asked, `node ID ADDRESS: snapshot at index I term T,
/// B bytes` or `node ID ADDRESS: failed: WHY`; exit 0 only when every node asked succeeded.
pub(crate) fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("snapshot", &e),
    };
    let asked: Vec<(usize, SocketAddr)> = match args.id {
        Some(id) if id >= servers.len() => {
            let why = format!("--id {id}: only {} servers are listed", servers.len());
            return usage_error("snapshot", &why);
        }
        Some(id) => vec![(id, servers[id])],
        None => servers.iter().copied().enumerate().collect(),
    };
    let options = per_node_options(args.timeout_ms, cluster_id);
    let addresses: Vec<SocketAddr> = asked.iter().map(|&(_, address)| address).collect();
    let answers = ask_each(&addresses, &options, |client, address| {
        client.snapshot_of(address)
    });
    let mut out = io::stdout().lock();
    let mut all_ok = true;
    for ((id, address), answer) in asked.iter().zip(&answers) {
        let line = match answer {
            Ok(s) => format!(
                "node {id} {address}: snapshot at index {} term {}, {} bytes",
                s.index, s.term, s.size_bytes
            ),
            Err(e) => {
                all_ok = false;
                format!("node {id} {address}: failed: {e}")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
