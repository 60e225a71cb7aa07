//! Node configuration: the values every thread of a node is started with.
//!
//! Read from a cRaft `craft.conf` (`id`, `ELECTION_TIMEOUT`, `RPC_TIMEOUT`,
//! `HEART_BEAT_INTERVAL`, repeated `servers = host:port`, `loglevel`) plus rcraft's own keys,
//! then overridden by command-line flags. Invariant after validation: `id` indexes `servers`,
//! `election_timeout_min_ms < election_timeout_max_ms`, `heartbeat_ms < election_timeout_min_ms`.

use rcraft_wire::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything needed to start one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node; index into `servers`.
    pub id: NodeId,
    /// Every server's address in id order (cRaft's repeated `servers =` lines). Each node
    /// listens on its own address for peers and clients.
    pub servers: Vec<SocketAddr>,
    /// Directory for the WAL, hard state and snapshots.
    pub data_dir: PathBuf,
    /// Identifies the cluster in the connection handshake; nodes of different clusters refuse
    /// each other.
    pub cluster_id: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// cRaft's `RPC_TIMEOUT`: how long a client request may wait inside the node.
    pub rpc_timeout_ms: u64,
    /// Length of one consensus tick.
    pub tick_ms: u64,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`), as cRaft's `loglevel`.
    pub log_level: String,
}

impl Config {
    /// A configuration with rcraft's defaults for node `id` of `servers`.
    pub fn new(id: NodeId, servers: Vec<SocketAddr>, data_dir: PathBuf) -> Config {
        Config {
            id,
            servers,
            data_dir,
            cluster_id: 0x7263_7261_6674, // "rcraft"
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_ms: 50,
            rpc_timeout_ms: 5000,
            tick_ms: 10,
            snapshot_every: 100_000,
            log_level: "info".to_string(),
        }
    }
}
