//! The network thread: one mio event loop that owns the listener and every TCP connection of
//! a node, turns inbound frames into [`NetEvent`]s and carries out [`NetCommand`]s.
//!
//! Threads: the network thread owns all sockets, frame decoders and write buffers. Other
//! threads talk to it only through a bounded command channel (wrapped by [`NetSender`], which
//! also kicks the loop's `mio::Waker`) and receive from it through the bounded event channel
//! given to [`Network::spawn`].
//!
//! Invariants and policies:
//! - Nothing grows without bound: the command channel, each peer's outbound queue
//!   (`peer_queue_frames` / `peer_queue_bytes`), each client's inflight requests and pending
//!   response bytes, the number of connections, and every frame (`frame_bytes_max`).
//! - Outbound peer messages are dropped and counted when the peer's queue is full or the peer
//!   is unreachable; Raft retransmits. Inbound peer messages are dropped and counted when the
//!   event channel is full. Client requests are never dropped: when the event channel is full
//!   the loop stops reading from clients (back-pressure) until the consensus side catches up.
//! - A connection that sends a bad handshake, a bad frame, an oversized length or stalls in
//!   the middle of a frame is closed with a `log::warn!` naming the reason; no other
//!   connection is affected.
//! - Each pair of nodes uses two TCP connections: each node dials every peer and sends its
//!   own messages on that connection; a connection accepted from a peer is only read.
//!
//! ```
//! use rcraft::node::net::{NetConfig, NetEvent, Network};
//! use rcraft::wire::NodeId;
//! use std::collections::{BTreeMap, BTreeSet};
//!
//! let listen = "127.0.0.1:0".parse().unwrap();
//! let config = NetConfig::new(NodeId(0), 42, listen, BTreeMap::new());
//! let (events_tx, events_rx) = crossbeam_channel::bounded::<NetEvent>(1024);
//! let net = Network::spawn(config, events_tx).unwrap();
//! let sender = net.sender(); // clone one per thread that sends or replies
//! // The consensus thread would now loop on `events_rx`, calling `sender.send_peer(..)`
//! // and `sender.reply(conn, ..)`.
//! assert!(events_rx.try_recv().is_err());
//! drop(sender);
//! net.shutdown();
//! ```

mod accepted;
pub mod auth;
pub(crate) mod delivery;
mod event_loop;
mod identity;
mod inbound;
mod out_buffer;
mod peer;
mod peers;
pub(crate) mod sim_link;
pub mod stream;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;
use rcraft_wire::{ClientResponse, FRAME_BYTES_MAX, Message, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Depth of the channel carrying [`NetCommand`]s to the network thread.
pub const COMMAND_QUEUE_DEPTH: usize = 8192;
/// Default cap on frames queued for one peer.
pub const PEER_QUEUE_FRAMES: usize = 4096;
/// Default cap on bytes queued for one peer: twice the core's in-flight window
/// (`CoreConfig::max_inflight_bytes`, 8 MiB), so a window and its resend fit. What is queued
/// for a peer that stopped reading is stale by the time it reads again (the leader resends
/// from its acknowledged index); 32 MiB kept up to 64 MiB of buffer per paused peer on each
/// leader it had (docs/BENCHMARKS.md, "Issue 13 on a quiet machine").
pub const PEER_QUEUE_BYTES: usize = 16 << 20;
/// Default cap on requests one client may have in flight before the loop stops reading it.
pub const CLIENT_INFLIGHT_MAX: usize = super::limits::CLIENT_REQUESTS_IN_FLIGHT_MAX;
/// Unsent response bytes at which the loop stops reading a client's requests.
pub const CLIENT_PENDING_OUT_BYTES_MAX: usize = 4 << 20;
/// Most simultaneous inbound connections; more are accepted and closed at once.
pub const CONNECTIONS_MAX: usize = super::limits::CONNECTIONS_MAX;
/// Bytes read from a socket per `read` call.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Default time allowed for a handshake or for the rest of a started frame to arrive.
pub const STALL_TIMEOUT: Duration = super::limits::STALL_TIMEOUT;
/// Default time allowed for an outbound TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First delay before re-dialling a peer after a failure.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Cap of the doubling re-dial delay: the longest election timeout at the default tick (30
/// ticks of 10 ms), so that after a partition heals a link is back within about one election
/// timeout. A link waiting out its delay drops what it is given, and at 1 s (before
/// docs/SIM_FINDINGS.md 45) votes and heartbeats were dropped for up to a second after every
/// link came back, delaying the first election after the heal by that much.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(300);
/// Longest the loop sleeps while it has timers to check.
pub const SWEEP_INTERVAL_MAX: Duration = Duration::from_millis(100);
/// How often the loop retries handing a held-back client event to a full event channel.
pub const BACKLOG_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// Most readiness events taken from one `poll` call.
pub const POLL_EVENTS_CAPACITY: usize = 1024;

/// Configuration of one node's network thread.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// This node.
    pub node_id: NodeId,
    /// Cluster id sent and checked in every handshake; [`rcraft_wire::CLUSTER_ID_UNKNOWN`]
    /// for a node that joins a cluster, until it learns the id at its first contact.
    pub cluster_id: u64,
    /// The random incarnation of this node's data dir, sent in every peer handshake (zero:
    /// none, for tests of the network alone).
    pub incarnation: u64,
    /// The data dir and its identity file, where the thread records a learned cluster id and
    /// the incarnation of each peer it accepts (whose earlier records it starts from).
    /// `None`: kept in memory only.
    pub(crate) identity_file: Option<(std::path::PathBuf, super::data_dir::Identity)>,
    /// Address to listen on for peers and clients (one port for both).
    pub listen: SocketAddr,
    /// Every other node and its address. Must not contain `node_id`.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Largest frame payload accepted or sent.
    pub frame_bytes_max: u32,
    /// Cap on frames queued for one peer.
    pub peer_queue_frames: usize,
    /// Cap on bytes queued for one peer (one frame is always allowed into an empty queue).
    pub peer_queue_bytes: usize,
    /// Cap on requests one client may have in flight.
    pub client_inflight_max: usize,
    /// Unsent answer bytes of one client at which its requests are no longer read
    /// ([`CLIENT_PENDING_OUT_BYTES_MAX`] unless a test lowers it).
    pub client_pending_out_bytes_max: usize,
    /// Cap on simultaneous inbound connections from one IP address.
    pub connections_per_address_max: usize,
    /// Cap on simultaneous inbound connections, peers' and clients' together
    /// ([`CONNECTIONS_MAX`] unless a test lowers it).
    pub connections_max: usize,
    /// Time allowed for a handshake, or for a started frame to complete.
    pub stall_timeout: Duration,
    /// Time allowed for an outbound connect.
    pub connect_timeout: Duration,
    /// First re-dial delay after a failed or lost peer connection.
    pub reconnect_backoff_min: Duration,
    /// Cap of the re-dial delay.
    pub reconnect_backoff_max: Duration,
    /// Before sleeping in `epoll_wait`, keep polling without sleeping for this long, so that
    /// an answer arriving within it costs no thread wake-up. Zero (the default) never spins;
    /// it trades CPU for latency, so measure before enabling (docs/BENCHMARKS.md, "Wire").
    pub idle_spin: Duration,
    /// The cluster secrets: when set, peers must prove they hold one (mutual HMAC
    /// challenge-response, `auth.rs`) before any of their frames is read, and this node
    /// proves it to the peers it dials. `None`: peers are trusted by their handshake.
    pub peer_secrets: Option<Arc<auth::PeerSecrets>>,
    /// The client and admin tokens: when set, a client's requests need the permission of the
    /// token it sent (`auth::Permission`). `None`: every client may do everything.
    pub client_tokens: Option<Arc<auth::ClientTokens>>,
    /// TLS for peer and client links (`crate::tls`; the `tls` feature): new connections take
    /// the slot's current configuration. `None`: plain TCP.
    pub tls: Option<Arc<crate::tls::TlsSlot>>,
}

impl NetConfig {
    /// A configuration with every limit at its default.
    pub fn new(
        node_id: NodeId,
        cluster_id: u64,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> NetConfig {
        NetConfig {
            node_id,
            cluster_id,
            incarnation: 0,
            identity_file: None,
            listen,
            peers,
            frame_bytes_max: FRAME_BYTES_MAX,
            peer_queue_frames: PEER_QUEUE_FRAMES,
            peer_queue_bytes: PEER_QUEUE_BYTES,
            client_inflight_max: CLIENT_INFLIGHT_MAX,
            client_pending_out_bytes_max: CLIENT_PENDING_OUT_BYTES_MAX,
            connections_per_address_max: super::limits::CONNECTIONS_PER_ADDRESS_MAX,
            connections_max: CONNECTIONS_MAX,
            stall_timeout: STALL_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            reconnect_backoff_min: RECONNECT_BACKOFF_MIN,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX,
            idle_spin: Duration::ZERO,
            peer_secrets: None,
            client_tokens: None,
            tls: None,
        }
    }
}

/// Identifies one client connection for the lifetime of a network thread; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientConnId(pub u64);

impl fmt::Display for ClientConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// What the network thread hands to the consensus side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A Raft message from a peer (its `from` matches the peer's handshake and its `to` is
    /// this node).
    Peer(Message),
    /// A request from a client; answer it with [`NetSender::reply`] on `conn`.
    Client {
        /// The connection to answer on.
        conn: ClientConnId,
        /// The request.
        request: rcraft_wire::ClientRequest,
        /// When the network thread decoded it (for the `queue_wait` stage).
        received: std::time::Instant,
    },
    /// The client connection closed; replies to it are discarded from now on.
    ClientClosed(ClientConnId),
}

/// What other threads ask the network thread to do.
#[derive(Clone, Debug)]
pub enum NetCommand {
    /// Send a message to the peer named in its `to` field.
    Peer(Message),
    /// Send several messages, each to its `to`.
    Peers(Vec<Message>),
    /// Answer a client request.
    Reply {
        /// The connection the request came from.
        conn: ClientConnId,
        /// The answer.
        response: ClientResponse,
    },
    /// Answer several client requests (one command for a batch of answers; each
    /// connection's answers are written with one `write` at the end of the loop turn).
    Replies(Vec<(ClientConnId, ClientResponse)>),
    /// Close a client connection (e.g. after a fatal error on its session).
    CloseClient(ClientConnId),
    /// The members of the cluster changed (voters, outgoing voters and learners): forget the
    /// recorded incarnation of every peer that is not one of them.
    Members(BTreeSet<NodeId>),
    /// Add, move (`Some`) or forget (`None`) a peer after a membership change.
    UpdatePeer {
        /// The peer.
        id: NodeId,
        /// Its new address, or `None` to drop the link.
        addr: Option<SocketAddr>,
    },
}

/// The network thread has stopped; the command was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetClosed;

impl fmt::Display for NetClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the network thread has stopped")
    }
}

impl std::error::Error for NetClosed {}

/// Counters kept by the network thread; read them with [`NetHandle::stats`].
#[derive(Debug, Default)]
pub struct NetStats {
    peer_frames_sent: AtomicU64,
    peer_dropped_queue_full: AtomicU64,
    peer_dropped_link_down: AtomicU64,
    peer_dropped_unknown: AtomicU64,
    peer_dropped_events_full: AtomicU64,
    commands_dropped_full: AtomicU64,
    replies_to_closed: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    peer_connects: AtomicU64,
    client_pauses: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    client_connections: AtomicU64,
    auth_failures: AtomicU64,
    requests_refused_permission: AtomicU64,
    connections_refused_per_address: AtomicU64,
    connections_stalled: AtomicU64,
}

/// A copy of the network thread's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    /// Peer frames fully written to a socket.
    pub peer_frames_sent: u64,
    /// Outbound peer messages dropped because that peer's queue was full.
    pub peer_dropped_queue_full: u64,
    /// Outbound peer messages dropped because the peer was unreachable (in back-off) or the
    /// connection failed with them still queued.
    pub peer_dropped_link_down: u64,
    /// Outbound messages to a node with no known address, or inbound ones not meant for us.
    pub peer_dropped_unknown: u64,
    /// Inbound peer messages dropped because the event channel was full.
    pub peer_dropped_events_full: u64,
    /// Peer messages dropped by [`NetSender`] because the command channel was full.
    pub commands_dropped_full: u64,
    /// Replies for client connections that had already closed.
    pub replies_to_closed: u64,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Connections closed for a protocol violation, a timeout or the connection cap.
    pub connections_refused: u64,
    /// Outbound peer connections that completed their handshake.
    pub peer_connects: u64,
    /// Times a client connection stopped being read for back-pressure (full event channel,
    /// too many requests in flight, or too many unsent response bytes).
    pub client_pauses: u64,
    /// Bytes read from every connection (peers and clients).
    pub bytes_received: u64,
    /// Bytes written to every connection (peers and clients).
    pub bytes_sent: u64,
    /// Frames decoded from every connection after its handshake (peers and clients).
    pub frames_received: u64,
    /// Client connections open now (handshake done).
    pub client_connections: u64,
    /// Peers that failed to prove they hold the cluster secret (or could not check ours), and
    /// clients that sent a token this node does not know.
    pub auth_failures: u64,
    /// Client requests refused for lack of permission.
    pub requests_refused_permission: u64,
    /// Inbound connections closed at once because their source address had
    /// `connections_per_address_max` open.
    pub connections_refused_per_address: u64,
    /// Connections closed because a handshake or a started frame did not complete within the
    /// stall timeout.
    pub connections_stalled: u64,
}

impl NetStats {
    pub(crate) fn snapshot(&self) -> NetStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetStatsSnapshot {
            peer_frames_sent: get(&self.peer_frames_sent),
            peer_dropped_queue_full: get(&self.peer_dropped_queue_full),
            peer_dropped_link_down: get(&self.peer_dropped_link_down),
            peer_dropped_unknown: get(&self.peer_dropped_unknown),
            peer_dropped_events_full: get(&self.peer_dropped_events_full),
            commands_dropped_full: get(&self.commands_dropped_full),
            replies_to_closed: get(&self.replies_to_closed),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            peer_connects: get(&self.peer_connects),
            client_pauses: get(&self.client_pauses),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            frames_received: get(&self.frames_received),
            client_connections: get(&self.client_connections),
            auth_failures: get(&self.auth_failures),
            requests_refused_permission: get(&self.requests_refused_permission),
            connections_refused_per_address: get(&self.connections_refused_per_address),
            connections_stalled: get(&self.connections_stalled),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The sending side of the network thread; cheap to clone, one per producing thread.
#[derive(Clone)]
pub struct NetSender {
    commands: Sender<NetCommand>,
    waker: Arc<Waker>,
    /// Set by the first `wake` after the loop last looked at its commands, cleared by the
    /// loop just before it drains them: later senders skip the `eventfd` write, since the
    /// loop will see their commands anyway (one wake-up per loop turn, not per command).
    wake_pending: Arc<AtomicBool>,
    stats: Arc<NetStats>,
}

impl NetSender {
    /// Queues a peer message and wakes the loop. Returns false when it was dropped (command
    /// channel full, or the thread stopped); Raft retransmits.
    pub fn send_peer(&self, message: Message) -> bool {
        let queued = self.push(NetCommand::Peer(message)) == Ok(true);
        self.wake();
        queued
    }

    /// Queues several peer messages as one command and wakes the loop once.
    pub fn send_peers(&self, messages: Vec<Message>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let queued = self.push(NetCommand::Peers(messages)) == Ok(true);
        self.wake();
        queued
    }

    /// Queues a client reply and wakes the loop. Blocks while the command channel is full
    /// (back-pressure on the caller); fails only when the network thread has stopped.
    pub fn reply(
        &self,
        conn: ClientConnId,
        response: ClientResponse,
    ) -> std::result::Result<(), NetClosed> {
        let result = self.push(NetCommand::Reply { conn, response }).map(drop);
        self.wake();
        result
    }

    /// Queues many client replies as one command and wakes the loop once. Blocks while the
    /// command channel is full; fails only when the network thread has stopped.
    pub fn reply_all(
        &self,
        replies: Vec<(ClientConnId, ClientResponse)>,
    ) -> std::result::Result<(), NetClosed> {
        if replies.is_empty() {
            return Ok(());
        }
        let result = self.push(NetCommand::Replies(replies)).map(drop);
        self.wake();
        result
    }

    /// Queues any number of commands, then wakes the loop once. Peer messages are dropped
    /// when the channel is full; other commands wait for room. Fails only when the network
    /// thread has stopped.
    pub fn send_batch(
        &self,
        commands: impl IntoIterator<Item = NetCommand>,
    ) -> std::result::Result<(), NetClosed> {
        let mut result = Ok(());
        for command in commands {
            if self.push(command).is_err() {
                result = Err(NetClosed);
                break;
            }
        }
        self.wake();
        result
    }

    /// Queues one command without waking the loop: call [`NetSender::wake`] after a batch.
    /// Returns `Ok(false)` when a peer message was dropped (and counted) because the channel
    /// was full; other commands wait for room instead. Fails only when the thread stopped.
    pub fn push(&self, command: NetCommand) -> std::result::Result<bool, NetClosed> {
        match command {
            NetCommand::Peer(_) | NetCommand::Peers(_) => match self.commands.try_send(command) {
                Ok(()) => Ok(true),
                Err(TrySendError::Full(_)) => {
                    bump(&self.stats.commands_dropped_full, 1);
                    Ok(false)
                }
                Err(TrySendError::Disconnected(_)) => Err(NetClosed),
            },
            other => self
                .commands
                .send(other)
                .map(|()| true)
                .map_err(|_| NetClosed),
        }
    }

    /// Wakes the network thread so it drains the command channel.
    pub fn wake(&self) {
        // SeqCst pairs with the loop's clear-then-drain: a sender that finds the flag set
        // pushed its command before the loop cleared it, so that drain sees the command.
        if self.wake_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.waker.wake() {
            log::error!("network thread waker failed: {e}");
        }
    }

    /// Asks the network thread to close a client connection.
    pub fn close_client(&self, conn: ClientConnId) -> std::result::Result<(), NetClosed> {
        let result = self.push(NetCommand::CloseClient(conn)).map(drop);
        self.wake();
        result
    }

    /// Tells the network thread the members of the cluster ([`NetCommand::Members`]).
    pub fn members_changed(&self, members: BTreeSet<NodeId>) -> std::result::Result<(), NetClosed> {
        let result = self.push(NetCommand::Members(members)).map(drop);
        self.wake();
        result
    }

    /// Adds, moves or forgets a peer.
    pub fn update_peer(
        &self,
        id: NodeId,
        addr: Option<SocketAddr>,
    ) -> std::result::Result<(), NetClosed> {
        let result = self.push(NetCommand::UpdatePeer { id, addr }).map(drop);
        self.wake();
        result
    }
}

/// Owns the running network thread. Dropping it stops the thread, like [`NetHandle::shutdown`].
pub struct NetHandle {
    sender: NetSender,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The TLS configuration the thread uses, for reloading (`NodeHandle::reload_tls`).
    tls: Option<Arc<crate::tls::TlsSlot>>,
}

impl NetHandle {
    /// The TLS configuration of this node's links, when it has TLS.
    pub fn tls(&self) -> Option<&Arc<crate::tls::TlsSlot>> {
        self.tls.as_ref()
    }

    /// A sender for another thread.
    pub fn sender(&self) -> NetSender {
        self.sender.clone()
    }

    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The thread's counters.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.sender.stats.snapshot()
    }

    /// The counters themselves, for readers on other threads (the metrics responder).
    pub(crate) fn shared_stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.sender.stats)
    }

    /// Stops the thread, closing every connection and the listener, and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        self.sender.wake();
        if thread.join().is_err() {
            log::error!("network thread panicked");
        }
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts network threads.
pub struct Network;

impl Network {
    /// Binds `config.listen` and starts the network thread; events go to `events`.
    pub fn spawn(config: NetConfig, events: Sender<NetEvent>) -> io::Result<NetHandle> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        Network::spawn_on(listener, config, events)
    }

    /// Starts the network thread on an already bound listener (`config.listen` is ignored).
    pub fn spawn_on(
        listener: std::net::TcpListener,
        config: NetConfig,
        events: Sender<NetEvent>,
    ) -> io::Result<NetHandle> {
        let events = delivery::EventSink::Each(events);
        Network::spawn_notifying(listener, config, events, Box::new(|| {}))
    }

    /// As [`Network::spawn_on`], handing events to `events` and calling `notify` once after
    /// each loop turn that queued events (the node hands its consensus thread one batch per
    /// turn and rings its doorbell with it).
    pub(crate) fn spawn_notifying(
        listener: std::net::TcpListener,
        config: NetConfig,
        events: delivery::EventSink,
        notify: delivery::Notify,
    ) -> io::Result<NetHandle> {
        if config.peers.contains_key(&config.node_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer list contains this node ({})", config.node_id),
            ));
        }
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (command_tx, command_rx): (Sender<NetCommand>, Receiver<NetCommand>) =
            crossbeam_channel::bounded(COMMAND_QUEUE_DEPTH);
        let stats = Arc::new(NetStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let wake_pending = Arc::new(AtomicBool::new(false));
        let tls = config.tls.clone();
        let parts = event_loop::Parts {
            listener: mio::net::TcpListener::from_std(listener),
            config,
            commands: command_rx,
            events,
            notify,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            wake_pending: Arc::clone(&wake_pending),
        };
        let (event_loop, waker) = event_loop::EventLoop::new(parts)?;
        let name = format!("rcraft-net-{}", event_loop.node_id());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || event_loop.run())?;
        Ok(NetHandle {
            sender: NetSender {
                commands: command_tx,
                waker: Arc::new(waker),
                wake_pending,
                stats,
            },
            local_addr,
            stop,
            thread: Some(thread),
            tls,
        })
    }
}
