//! Starting and stopping a node: recovery, channel wiring, thread spawning, joining.
//!
//! [`Node::start`] runs on the caller's thread: it validates the configuration, opens and
//! recovers storage, restores the state machine from the latest snapshot, builds the core,
//! starts the network thread and then the storage, apply and consensus threads. The returned
//! [`NodeHandle`] owns a [`Runtime`] that joins them all on shutdown, in an order that lets
//! each thread finish its queued work: consensus first (it drops the storage and apply
//! senders), then storage (drains, syncs, saves the hard state), apply, and last the network.

use super::apply::{Applier, SnapshotPolicy};
use super::consensus::{ApiRequest, Consensus, ConsensusSettings, Exit, Inbox};
use super::data_dir;
use super::error::{Error, Fatal, Result};
use super::handle::NodeHandle;
use super::initial_voters;
use super::limits::{
    API_REQUEST_QUEUE_DEPTH, APPLY_COMMAND_QUEUE_DEPTH, APPLY_PROGRESS_QUEUE_DEPTH,
    NET_EVENT_QUEUE_DEPTH, SNAPSHOT_STREAM_STALL_MAX, STORAGE_COMMAND_QUEUE_DEPTH,
    STORAGE_EVENT_QUEUE_DEPTH,
};
use super::mailbox::{Doorbell, ringing};
use super::metrics::{MetricsHook, NodeMetrics};
use super::metrics_http::{MetricsServer, MetricsSource};
use super::net::auth::{ClientTokens, PeerSecrets};
use super::net::delivery::{EventSink, event_batches};
use super::net::{NetConfig, NetHandle, Network};
use super::peer_delay::{
    DelayedPeers, PEER_DELAY_FAILPOINT, PEER_DELAY_FAILPOINT_MAX_MS, failpoint_delay,
};
use super::snapshot_files::StoreSnapshots;
use super::storage_thread::{FSYNC_DELAY_FAILPOINT, fsync_delay_failpoint, open_storage};
use super::transport::{Replier, Transport};
use crate::core::{CoreConfig, RecoveredState, Replica, SelfDemotionConfig};
use crate::{Config, StateMachine};
use rcraft_wire::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Starts nodes. See [`Node::start`].
pub struct Node;

impl Node {
    /// Starts node `config.id` of the cluster `config.servers` with `state_machine`:
    /// recovers the data directory (term, vote, log, latest snapshot), listens on its own
    /// address and returns a handle once every thread runs. Nodes of a fresh cluster start as
    /// followers; one is elected leader within a few election timeouts.
    pub fn start(config: Config, state_machine: impl StateMachine) -> Result<NodeHandle> {
        validate(&config)?;
        let fsync_delay = fsync_delay_failpoint().map_err(Error::Failpoint)?;
        let peer_delay = failpoint_delay(PEER_DELAY_FAILPOINT, PEER_DELAY_FAILPOINT_MAX_MS)
            .map_err(Error::Failpoint)?;
        // Listening first: a node that cannot (port in use, an address not of this host)
        // fails before it writes anything into a fresh data dir.
        let listen = config.listen_address();
        let listener = std::net::TcpListener::bind(listen).map_err(|e| {
            let e = match (e.kind(), config.listen_addr) {
                (std::io::ErrorKind::AddrNotAvailable, None) => std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; it is not an address of this host: if peers reach this node \
                         through NAT or a container, give the address to listen on with \
                         --listen-addr"
                    ),
                ),
                _ => e,
            };
            Error::io(format!("listening on {listen}"), e)
        })?;
        let identity = data_dir::check_or_record(&config)?;
        warn_if_data_dir_is_open(&config);
        // The configuration before any membership entry: `initial_voters` on a fresh data
        // dir, else the one stored there at the first start.
        let initial_membership = initial_voters::load_or_store(&config)?;
        // A damaged snapshot is fetched again from a peer; the only server has none.
        let has_peers = config.servers.len() > 1;
        let opened = open_storage(&config.data_dir, initial_membership.clone(), has_peers)
            .map_err(Error::StorageOpen)?;
        let (recovered, lost_alone) = alone_goes_on_without_lost_entries(&config, opened.recovered);
        let replica = Replica::new(core_config(&config), recovered).map_err(Error::Core)?;

        // Every thread sleeps on its own doorbell, rung by whoever queues work for it.
        let consensus_bell = Doorbell::new();
        let (net_tx, net_rx) = event_batches(NET_EVENT_QUEUE_DEPTH);
        let bell = consensus_bell.clone();
        let notify = Box::new(move || bell.ring());
        let net_tx = EventSink::Batches(net_tx);
        let net =
            Network::spawn_notifying(listener, net_config(&config, identity)?, net_tx, notify)
                .map_err(|e| Error::io(format!("starting the network thread on {listen}"), e))?;
        let mut transport: Arc<dyn Transport> = Arc::new(net.sender());
        if let Some(delay) = peer_delay {
            log::warn!(
                "node {}: fault injection for tests: {PEER_DELAY_FAILPOINT}={} makes every peer \
                 message of this node leave {} ms late",
                config.id,
                delay.as_millis(),
                delay.as_millis()
            );
            let delayed = DelayedPeers::spawn(transport, delay)
                .map_err(|e| Error::io("starting the peer delay thread".to_string(), e))?;
            transport = Arc::new(delayed);
        }
        let replier = Replier::new(transport);

        let snapshots = Box::new(StoreSnapshots::new(opened.snapshots));
        let mut applier = Applier::new(
            Box::new(state_machine),
            snapshots,
            initial_membership,
            SnapshotPolicy {
                every_entries: config.snapshot_every,
                log_bytes: config.snapshot_log_bytes,
                retain_entries: config.snapshot_retain_entries,
            },
            replier.clone(),
        )?;
        // A snapshot received from a leader is restored while its chunks arrive (when the
        // state machine's restore is atomic), from what the storage thread publishes.
        applier
            .restore_while_receiving(opened.thread.incoming_snapshot(), SNAPSHOT_STREAM_STALL_MAX);

        let (storage_bell, apply_bell) = (Doorbell::new(), Doorbell::new());
        let (storage_tx, storage_rx) = ringing(STORAGE_COMMAND_QUEUE_DEPTH, &storage_bell);
        let (storage_events_tx, storage_events_rx) =
            ringing(STORAGE_EVENT_QUEUE_DEPTH, &consensus_bell);
        let (apply_tx, apply_rx) = ringing(APPLY_COMMAND_QUEUE_DEPTH, &apply_bell);
        let (progress_tx, progress_rx) = ringing(APPLY_PROGRESS_QUEUE_DEPTH, &consensus_bell);
        let (api_tx, api_rx) = ringing(API_REQUEST_QUEUE_DEPTH, &consensus_bell);

        let settings = ConsensusSettings {
            servers: config.servers.clone(),
            tick: Duration::from_millis(config.tick_ms),
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            applied: applier.applied(),
            snapshot_chunk_bytes: config.snapshot_chunk_bytes,
            lost_alone,
        };
        let recovered = replica.status();
        let mut consensus = Consensus::new(replica, settings, replier, storage_tx, apply_tx);
        let metrics = Arc::new(NodeMetrics::new());
        metrics.set_net(net.shared_stats());
        metrics.recorder.record(
            recovered.term,
            "started",
            format!(
                "node {} started on {}: recovered term {}, last index {}, snapshot index {}",
                config.id,
                net.local_addr(),
                recovered.term,
                recovered.last_index,
                recovered.snapshot_index
            ),
        );
        consensus.set_metrics(MetricsHook::new(Arc::clone(&metrics)));
        applier.set_metrics(MetricsHook::new(Arc::clone(&metrics)));
        let mut storage_thread = opened.thread;
        storage_thread.set_metrics(MetricsHook::new(Arc::clone(&metrics)));
        if let Some(delay) = fsync_delay {
            log::warn!(
                "node {}: fault injection for tests: {FSYNC_DELAY_FAILPOINT}={} delays every \
                 log sync of this node by {} ms",
                config.id,
                delay.as_millis(),
                delay.as_millis()
            );
            storage_thread.set_fsync_delay(delay);
        }
        let metrics = MetricsSource {
            metrics,
            api: api_tx.clone(),
            net: net.shared_stats(),
            timeout: Duration::from_millis(config.rpc_timeout_ms),
        };
        let inbox = Inbox {
            net: net_rx,
            storage: storage_events_rx,
            apply: progress_rx,
            api: api_rx,
            doorbell: consensus_bell,
        };
        let id = config.id;
        let storage = spawn(id, "storage", move || {
            storage_thread.run(storage_rx, storage_bell, storage_events_tx)
        })?;
        let apply = spawn(id, "apply", move || {
            applier.run(apply_rx, apply_bell, progress_tx)
        })?;
        let consensus = spawn(id, "consensus", move || consensus.run(inbox))?;
        log::info!("node {id} started on {}", net.local_addr());
        let metrics_server = match config.metrics_addr {
            Some(address) => match MetricsServer::start(address, metrics.clone()) {
                Ok(server) => Some(server),
                Err(e) => {
                    // The threads run: stop them before reporting the failure.
                    let _ = api_tx.send(ApiRequest::Shutdown);
                    let parts = (consensus, storage, apply, net);
                    let runtime = Runtime::new(parts, metrics, None, config.data_dir.clone());
                    let _ = runtime.join();
                    return Err(Error::io(format!("serving metrics on {address}"), e));
                }
            },
            None => None,
        };
        let parts = (consensus, storage, apply, net);
        let runtime = Runtime::new(parts, metrics, metrics_server, config.data_dir.clone());
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        Ok(NodeHandle::new(
            id,
            config.servers,
            rpc_timeout,
            api_tx,
            runtime,
        ))
    }
}

/// The threads of a running node.
pub(crate) struct Runtime {
    consensus: JoinHandle<Exit>,
    storage: JoinHandle<std::result::Result<(), Arc<super::storage_error::StorageError>>>,
    apply: JoinHandle<()>,
    net: NetHandle,
    /// What the metrics are read from (for `NodeHandle::metrics_text` and `/metrics`).
    metrics: MetricsSource,
    /// The `/metrics` responder, when `metrics_addr` is set.
    metrics_server: Option<MetricsServer>,
    /// Where the flight recorder is written on a fatal stop.
    data_dir: std::path::PathBuf,
}

/// The node's threads, as `Runtime::new` takes them.
type Threads = (
    JoinHandle<Exit>,
    JoinHandle<std::result::Result<(), Arc<super::storage_error::StorageError>>>,
    JoinHandle<()>,
    NetHandle,
);

impl Runtime {
    fn new(
        (consensus, storage, apply, net): Threads,
        metrics: MetricsSource,
        metrics_server: Option<MetricsServer>,
        data_dir: std::path::PathBuf,
    ) -> Runtime {
        Runtime {
            consensus,
            storage,
            apply,
            net,
            metrics,
            metrics_server,
            data_dir,
        }
    }

    /// What the metrics are read from.
    pub(crate) fn metrics(&self) -> &MetricsSource {
        &self.metrics
    }

    /// The address `/metrics` is served on, if any.
    pub(crate) fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::address)
    }

    /// Waits for the consensus thread to stop (the caller asked it to), then for the others
    /// in dependency order. Returns the error that stopped the node, if any.
    pub(crate) fn join(mut self) -> Result<()> {
        if let Some(server) = self.metrics_server.take() {
            server.stop();
        }
        let exit = self.consensus.join();
        let storage = self.storage.join();
        let apply = self.apply.join();
        let consensus_fatal = match exit {
            Ok(Exit::Shutdown) => None,
            Ok(Exit::Failed(why)) => Some(why),
            Err(payload) => Some(Fatal::panicked("consensus", payload.as_ref())),
        };
        let storage_error = match storage {
            Ok(Err(error)) => Some(error),
            _ => None,
        };
        let apply_panic = apply
            .err()
            .map(|payload| Fatal::panicked("apply", payload.as_ref()));
        // What the consensus thread stopped on comes first, then storage's own error, then
        // a panic (a consensus thread that panicked saw nothing).
        let reason = match (&consensus_fatal, &storage_error, &apply_panic) {
            (Some(why), _, _) if !matches!(why, Fatal::Panicked { .. }) => Some(why.to_string()),
            (_, Some(error), _) => Some(error.to_string()),
            (Some(why), _, _) | (None, None, Some(why)) => Some(why.to_string()),
            _ => None,
        };
        if let Some(reason) = reason {
            dump_flight_recorder(&self.metrics, &self.data_dir, &reason);
        }
        self.net.shutdown();
        let mut result = Ok(());
        if let Some(error) = storage_error {
            result = Err(Error::StorageStopped(error));
        }
        if let Some(why) = consensus_fatal {
            result = result.and(Err(Error::Fatal(why)));
        }
        if let Some(why) = apply_panic {
            result = result.and(Err(Error::Fatal(why)));
        }
        result
    }

    /// The TLS configuration of the node's links, when it has TLS.
    pub(crate) fn tls(&self) -> Option<&Arc<crate::tls::TlsSlot>> {
        self.net.tls()
    }

    /// The address the network thread listens on (the real port when configured with 0).
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.net.local_addr()
    }

    /// True once the consensus thread has ended (shutdown or a fatal error).
    pub(crate) fn is_stopped(&self) -> bool {
        self.consensus.is_finished()
    }
}

/// Records a fatal stop and writes the flight recorder into the data directory.
fn dump_flight_recorder(metrics: &MetricsSource, data_dir: &std::path::Path, reason: &str) {
    let recorder = &metrics.metrics.recorder;
    recorder.record_now("fatal_stop", format!("the node stopped: {reason}"));
    match recorder.dump_to(data_dir) {
        Ok(path) => log::error!("flight recorder written to {}", path.display()),
        Err(e) => log::error!(
            "writing the flight recorder into {}: {e}",
            data_dir.display()
        ),
    }
}

fn spawn<T: Send + 'static>(
    id: NodeId,
    role: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(format!("rcraft-{role}-{id}"))
        .spawn(body)
        .map_err(|e| Error::io(format!("starting the {role} thread"), e))
}

/// Checks what the runtime relies on (a `Config` built by hand may skip `build_config`).
fn validate(config: &Config) -> Result<()> {
    let problem = if config.id.0 as usize >= config.servers.len() {
        Some(format!(
            "id {} is not one of the {} servers",
            config.id,
            config.servers.len()
        ))
    } else if config.tick_ms == 0 {
        Some("tick_ms must be at least 1".to_string())
    } else if config.election_timeout_min_ms >= config.election_timeout_max_ms {
        Some("the election timeout range is empty".to_string())
    } else if config.heartbeat_ms >= config.election_timeout_min_ms {
        Some("the heartbeat must be shorter than the election timeout".to_string())
    } else if config.rpc_timeout_ms == 0 {
        Some("rpc_timeout_ms must be at least 1".to_string())
    } else if config.join && config.initial_voters.is_some() {
        Some("join and initial_voters exclude each other".to_string())
    } else if let Some(voters) = &config.initial_voters {
        let ids: Vec<u64> = voters.iter().map(|id| id.0).collect();
        crate::config::check_initial_voters(&ids, config.servers.len())
            .err()
            .map(|problem| problem.to_string())
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(Error::Config(p)))
}

/// The core's tuning: milliseconds converted to ticks (rounded up, at least one tick).
pub(crate) fn core_config(config: &Config) -> CoreConfig {
    let ticks = |ms: u64| ms.div_ceil(config.tick_ms).max(1);
    let mut core = CoreConfig::new(config.id, seed(config.id));
    core.election_timeout_min_ticks = ticks(config.election_timeout_min_ms);
    core.election_timeout_max_ticks =
        ticks(config.election_timeout_max_ms).max(core.election_timeout_min_ticks + 1);
    core.heartbeat_interval_ticks =
        ticks(config.heartbeat_ms).min(core.election_timeout_min_ticks.saturating_sub(1).max(1));
    core.pre_vote = config.pre_vote;
    core.check_quorum = config.check_quorum;
    core.lease_reads = config.lease_reads;
    core.self_demotion = config.self_demotion.then(|| SelfDemotionConfig {
        window_ticks: ticks(config.self_demotion_window_ms),
        ratio: config.self_demotion_ratio,
        min_gap_ticks: ticks(config.self_demotion_min_gap_ms),
        // A cool-down of 0 stays 0 (the next slow window may demote again).
        cooldown_ticks: config.self_demotion_cooldown_ms.div_ceil(config.tick_ms),
        // The network half probes links as often as the leader sends heartbeats.
        link_probe_interval_ticks: core.heartbeat_interval_ticks,
    });
    core.max_inflight_bytes = config.inflight_bytes_max;
    core.max_uncommitted_bytes = config.uncommitted_bytes_max;
    core.entry_cache_bytes = config.entry_cache_bytes;
    core.snapshot_chunk_bytes = config.snapshot_chunk_bytes;
    core.snapshot_chunks_in_flight = config.snapshot_chunks_in_flight;
    // A rate of 0 stays 0 (unlimited); any other rate allows at least a byte per tick.
    core.snapshot_bytes_per_tick = match config.snapshot_bytes_per_sec {
        0 => 0,
        rate => (rate.saturating_mul(config.tick_ms) / 1000).max(1),
    };
    core
}

/// A seed for the election timer: different per node and per start.
fn seed(id: NodeId) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Reports a data directory that group or others may read or enter: its log and snapshots
/// hold every client's data (SECURITY.md, files at rest). A warning, not a refusal: the
/// operator may have reasons (a shared backup user), and refusing would stop a running
/// cluster's restart.
fn warn_if_data_dir_is_open(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(&config.data_dir) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "node {}: data dir {} has mode {mode:03o}: group or others can read the log and \
             snapshots; chmod 700 it",
            config.id,
            config.data_dir.display()
        );
    }
}

fn net_config(config: &Config, identity: data_dir::Identity) -> Result<NetConfig> {
    let peers: BTreeMap<NodeId, _> = config
        .servers
        .iter()
        .enumerate()
        .map(|(i, addr)| (NodeId(i as u64), *addr))
        .filter(|(id, _)| *id != config.id)
        .collect();
    let listen = config.listen_address();
    let mut net = NetConfig::new(config.id, identity.cluster_id, listen, peers);
    net.incarnation = identity.incarnation;
    net.identity_file = Some((config.data_dir.clone(), identity));
    if let Some(path) = &config.secret_file {
        let secrets = PeerSecrets::from_file(path).map_err(Error::Auth)?;
        net.peer_secrets = Some(Arc::new(secrets));
    }
    let (client, admin) = (&config.client_token_file, &config.admin_token_file);
    if client.is_some() || admin.is_some() {
        let tokens =
            ClientTokens::from_files(client.as_deref(), admin.as_deref()).map_err(Error::Auth)?;
        net.client_tokens = Some(Arc::new(tokens));
    }
    if let Some(slot) = crate::tls::TlsSlot::load(&config.tls).map_err(Error::Tls)? {
        net.tls = Some(Arc::new(slot));
    }
    Ok(net)
}

/// A node that lost synced entries repairs them from a leader and meanwhile does not campaign
/// (`src/core/repair.rs`). The only server of its cluster would wait for a leader that cannot
/// come: no other node exists (node ids index the server list), so no other node holds the
/// entries or acknowledged them, and nothing is gained by waiting. It names the range and
/// goes on without it (storage/FORMAT.md §4.1, docs/OPERATIONS.md §7), and returns it for
/// its status. The range was synced (the WAL counts only records whose sync returned), so
/// writes acknowledged in it are gone.
fn alone_goes_on_without_lost_entries(
    config: &Config,
    recovered: RecoveredState,
) -> (RecoveredState, Option<rcraft_wire::LostRange>) {
    let Some(lost) = recovered.lost.filter(|_| config.servers.len() == 1) else {
        return (recovered, None);
    };
    log::error!(
        "entries {}..={} are lost from the only server of this cluster: no other node holds \
         them or acknowledged them, so it goes on without them (the disk lost them after \
         they were synced; if any of them was acknowledged to a client, that write is lost)",
        lost.from,
        lost.through
    );
    let range = rcraft_wire::LostRange {
        from: lost.from,
        through: lost.through,
    };
    (
        RecoveredState {
            lost: None,
            ..recovered
        },
        Some(range),
    )
}
