//! `rcraft snapshot save FILE` and `rcraft snapshot restore FILE`: a backup of the cluster's
//! state taken over the client protocol, and a new node's data dir made from one.
//!
//! Save: a linearizable read gives a read index `R` and the node that served it (the leader);
//! that node is asked to snapshot now (its applied index is then at least `R`, so the backup
//! holds every write acknowledged before the save began; a snapshot below `R`, after a restart
//! of that node, is asked for again); then its snapshot file is read in chunks over one
//! connection and written with [`BackupFile`] (chunk and whole-data checksums, temporary file,
//! sync, rename). A node that replaces its snapshot meanwhile answers that it is no longer
//! current, and the save starts over, a bounded number of times.

use crate::cluster::{ClusterArgs, client_options, cluster_of, token_of};
use crate::serve::{ServeArgs, keep_files_private, serve_config};
use crate::{EXIT_FAILED, usage_error};
use clap::Args;
use rcraft::client::{Client, ClientError, ClientOptions};
use rcraft::kv::KvCommand;
use rcraft::node::backup::BackupFile;
use rcraft::node::restore::restore_backup;
use rcraft::wire::{LogIndex, Membership, NodeId, SnapshotChunk};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(crate) struct SaveArgs {
    /// Where to write the backup (written under FILE.tmp, then renamed).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Longest wait for the whole backup.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    timeout_ms: u64,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup, as written by `rcraft snapshot save`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The new node, as `rcraft serve` will run it: its id, the new cluster's servers and
    /// voters, its data dir (which must not exist or be empty).
    #[command(flatten)]
    serve: ServeArgs,
}

/// Whole saves tried before giving up (each restarted because the snapshot changed).
const SAVE_ATTEMPTS_MAX: u32 = 5;
/// Pause before asking an overloaded node again.
const OVERLOADED_PAUSE: Duration = Duration::from_millis(50);

/// A key the read barrier reads; its value does not matter.
const BARRIER_KEY: &[u8] = b"rcraft-backup-read-barrier";

/// What one save attempt came to when it did not succeed.
enum Failure {
    /// The snapshot changed or is being replaced: start over.
    Again(String),
    /// Give up.
    Fatal(String),
}

/// What a successful save wrote.
struct Saved {
    node: NodeId,
    address: std::net::SocketAddr,
    read_index: LogIndex,
    chunk: SnapshotChunk,
}

/// `rcraft snapshot save FILE`: one line `saved snapshot at index I term T (...) from node N
/// ADDRESS to FILE`; exit 0 on success, 1 when it failed, 2 for bad usage.
pub(crate) fn save(args: &SaveArgs) -> ExitCode {
    const WHAT: &str = "snapshot save";
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error(WHAT, &e),
    };
    let token = match token_of(&args.cluster) {
        Ok(token) => token,
        Err(e) => return usage_error(WHAT, &e),
    };
    let options = ClientOptions {
        token,
        ..client_options(args.timeout_ms, cluster_id)
    };
    keep_files_private();
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let mut client = match Client::new(&servers, options.clone()) {
        Ok(client) => client,
        Err(e) => return usage_error(WHAT, &e),
    };
    let mut attempt = 1;
    let outcome = loop {
        match save_once(&mut client, &options, &args.file, deadline) {
            Ok(saved) => break Ok(saved),
            Err(Failure::Again(why)) if attempt < SAVE_ATTEMPTS_MAX => {
                log::info!("starting the backup again: {why}");
                attempt += 1;
            }
            Err(Failure::Again(why) | Failure::Fatal(why)) => break Err(why),
        }
    };
    match outcome {
        Ok(saved) => {
            let meta = &saved.chunk.meta;
            println!(
                "saved snapshot at index {} term {} ({}, {} bytes, checksum {:#010x}) from \
                 node {} {} to {} (read index {})",
                meta.index,
                meta.term,
                membership_text(&meta.membership),
                meta.size_bytes,
                meta.checksum,
                saved.node,
                saved.address,
                args.file.display(),
                saved.read_index
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("rcraft {WHAT}: {why}; no backup written");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// One attempt: read barrier, snapshot on the node that served it, stream it to `file`. The
/// node is then asked over a client of its own whose answers may take until `deadline` (a
/// large snapshot takes long to write; the cluster client gives each node a second).
fn save_once(
    client: &mut Client,
    options: &ClientOptions,
    file: &Path,
    deadline: Instant,
) -> Result<Saved, Failure> {
    let fatal = |what: &str, e: ClientError| Failure::Fatal(format!("{what}: {e}"));
    let barrier = KvCommand::Get {
        key: BARRIER_KEY.to_vec(),
    };
    let read = client
        .query(barrier.encode())
        .map_err(|e| fatal("finding the leader", e))?;
    let node = client
        .leader()
        .ok_or_else(|| Failure::Fatal("the node that served the read is not known".to_string()))?;
    let address = client.servers()[node.0 as usize];
    let node_options = ClientOptions {
        attempt_timeout: deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
        ..options.clone()
    };
    let mut client = Client::new(&[address], node_options)
        .map_err(|e| fatal(&format!("connecting to node {node} {address}"), e))?;
    let client = &mut client;
    let server = 0; // The node's position in that client's list.
    // Named by the id it reports, as every command does (the list may be in another order).
    let node = client.status_of(address).map_or(node, |status| status.id);
    let taken = client
        .snapshot_of(address)
        .map_err(|e| fatal(&format!("asking node {node} {address} for a snapshot"), e))?;
    if taken.index < read.index {
        return Err(Failure::Again(format!(
            "node {node} snapshotted at {} below the read index {}",
            taken.index, read.index
        )));
    }
    let first = next_chunk(client, server, taken.index, 0, deadline)?;
    let mut backup =
        BackupFile::create(file, &first.meta).map_err(|e| Failure::Fatal(e.to_string()))?;
    let mut chunk = first;
    loop {
        backup
            .append(&chunk)
            .map_err(|e| Failure::Again(e.to_string()))?;
        if chunk.done {
            break;
        }
        let offset = backup.next_offset();
        chunk = next_chunk(client, server, taken.index, offset, deadline)?;
    }
    backup.finish().map_err(|e| Failure::Again(e.to_string()))?;
    Ok(Saved {
        node,
        address,
        read_index: read.index,
        chunk,
    })
}

/// The chunk at `offset` of snapshot `index` of `servers[server]`, waiting out an overloaded
/// node until `deadline`.
fn next_chunk(
    client: &mut Client,
    server: usize,
    index: LogIndex,
    offset: u64,
    deadline: Instant,
) -> Result<SnapshotChunk, Failure> {
    loop {
        match client.snapshot_chunk_of(server, index, offset) {
            Ok(chunk) => return Ok(chunk),
            Err(ClientError::Overloaded) if Instant::now() < deadline => {
                std::thread::sleep(OVERLOADED_PAUSE)
            }
            Err(e) if e.is_permission_denied() => {
                return Err(Failure::Fatal(format!("reading the snapshot: {e}")));
            }
            Err(ClientError::Server { message, .. }) if Instant::now() < deadline => {
                return Err(Failure::Again(message));
            }
            Err(e) => {
                let why = format!("reading snapshot {index} at offset {offset}: {e}");
                return Err(Failure::Fatal(why));
            }
        }
    }
}

/// `rcraft snapshot restore FILE ...`: a few lines saying what was made; exit 0 on success, 1
/// when the backup or the target was refused, 2 for bad usage.
pub(crate) fn restore(args: &RestoreArgs) -> ExitCode {
    const WHAT: &str = "snapshot restore";
    let config = match serve_config(&args.serve) {
        Ok(config) => config,
        Err(e) => return usage_error(WHAT, &e),
    };
    keep_files_private();
    match restore_backup(&config, &args.file) {
        Ok(restored) => {
            println!(
                "restored       {} into {} as node {} of cluster {:#x}",
                args.file.display(),
                restored.data_dir.display(),
                config.id,
                restored.cluster_id
            );
            println!(
                "snapshot       index {}, term {}, {} bytes of state, checksum verified",
                restored.index, restored.term, restored.data_bytes
            );
            println!(
                "membership     {} (the backup's: {})",
                membership_text(&restored.membership),
                membership_text(&restored.old_membership)
            );
            println!(
                "next           restore the other voters' data dirs from the same file, then \
                 start every node with rcraft serve and the same flags"
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("rcraft {WHAT}: {why}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn membership_text(m: &Membership) -> String {
    let ids = |set: &std::collections::BTreeSet<NodeId>| {
        let list: Vec<String> = set.iter().map(ToString::to_string).collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(",")
        }
    };
    let mut text = format!("voters {}", ids(&m.voters));
    if m.is_joint() {
        text += &format!(" (joint with {})", ids(&m.voters_outgoing));
    }
    if !m.learners.is_empty() {
        text += &format!(", learners {}", ids(&m.learners));
    }
    text
}
