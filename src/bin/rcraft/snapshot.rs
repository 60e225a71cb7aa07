//! `rcraft snapshot`: ask nodes to snapshot their state machine and compact their log now;
//! `rcraft snapshot save|restore` take and restore a backup (`backup.rs`).

use crate::cluster::{
    ClusterArgs, address_of, ask_each, cluster_of, directory, per_node_options, token_of,
};
use crate::{EXIT_FAILED, usage_error};
use clap::{Args, Subcommand};
use rcraft::client::ClientOptions;
use rcraft::config;
use rcraft::wire::NodeId;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SnapshotArgs {
    #[command(subcommand)]
    command: Option<SnapshotCommand>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only this node (the id it reports; its position in an id-ordered list); default:
    /// every node.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Longest wait for each node's snapshot to be durable.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    timeout_ms: u64,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stream a consistent snapshot of the cluster's state into FILE (a backup).
    Save(crate::backup::SaveArgs),
    /// Make a new node's data dir from a backup FILE (with `rcraft serve`'s flags).
    Restore(Box<crate::backup::RestoreArgs>),
}

/// Longest wait for a node's status when finding which address is which node.
const STATUS_TIMEOUT_MS: u64 = 1000;

/// `rcraft snapshot`: one line per node asked, `node ID ADDRESS: snapshot at index I term T,
/// B bytes` or `node ID ADDRESS: failed: WHY`; exit 0 only when every node asked succeeded.
pub(crate) fn snapshot(args: &SnapshotArgs) -> ExitCode {
    match &args.command {
        Some(SnapshotCommand::Save(save)) => return crate::backup::save(save),
        Some(SnapshotCommand::Restore(restore)) => return crate::backup::restore(restore),
        None => {}
    }
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("snapshot", &e),
    };
    let token = match token_of(&args.cluster) {
        Ok(token) => token,
        Err(e) => return usage_error("snapshot", &e),
    };
    let with_token = |options| ClientOptions {
        token: token.clone(),
        ..options
    };
    let options = with_token(per_node_options(args.timeout_ms, cluster_id));
    // Nodes are named by the ids they report, whatever the order of the list.
    let listed = directory(
        &servers,
        &with_token(per_node_options(STATUS_TIMEOUT_MS, cluster_id)),
    );
    let asked: Vec<(NodeId, SocketAddr)> = match args.id {
        Some(id) => match address_of(&listed, NodeId(id)) {
            Some(address) => vec![(NodeId(id), address)],
            None => {
                let why = format!(
                    "--id {id}: no listed address is node {id} ({})",
                    config::servers_listed(servers.len())
                );
                return usage_error("snapshot", &why);
            }
        },
        None => listed.iter().map(|l| (l.id, l.address)).collect(),
    };
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
