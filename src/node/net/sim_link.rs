//! One node's peer connections over in-memory byte streams, for the cluster simulator
//! (`tests/sim/`, through `node::testing`): the network thread's own peer logic
//! ([`PeerNet`], `peers.rs`: which links exist, when they dial, the re-dial back-off, with
//! each link's handshake, authentication, framing and encoding of outgoing messages;
//! [`Inbound`]: the handshake checks, authentication, and the decoding and checks of
//! incoming frames) driven single-threaded with simulated time, with the mio loop's sockets
//! replaced by [`SimStream`]s ([`SimIo`] dials them), and the accepted connections kept by
//! the loop's own [`AcceptNet`] handler (`accepted.rs`: a peer's newer connection closes its
//! older ones, the stall sweep, the counting and logging of closes). Nothing of the connection logic is
//! copied here: this module moves bytes in and out of the streams.
//!
//! Owned by one simulated node. The simulator carries the bytes each side writes to the other
//! side, in order and split where it likes; it names a connection by the token its dialler
//! gave it (the simulator hands out increasing ones, so an older connection's token is lower),
//! and bytes of a connection either side already closed are ignored, as a closed socket's
//! would be. Diallers' tokens may collide, so each accepted connection gets a token of this
//! node's own for the handler, as the loop's accept does. Invariants: `origin` maps exactly
//! the tokens of the handler's connections; a link's connection is always `connected` (a
//! simulated connect completes at once). The sweep runs on simulated time before each
//! input; a connection it closes for stalling is handed to the simulator
//! ([`SimPeerNet::take_stalled`]), which breaks it at its dialler.
//!
//! Client connections go through the same [`AcceptNet`]: a simulated client connects from a
//! source address of its choosing (admitted or refused by the handler's caps, overall and per
//! address, as the loop's accept is), its bytes are decoded by the connection's [`Inbound`]
//! (handshake, frames, permission checks) into the events the network thread hands the
//! consensus thread, and the answers the consensus side gives are queued and written by the
//! handler's client-reply path, for the simulator to carry back as bytes. Not driven here:
//! back-pressure (the simulator's delivery never backs up, and a simulated stream never
//! refuses a write).

use super::accepted::{AcceptCx, AcceptIo, AcceptNet};
use super::auth::{Nonce, PeerSecrets};
use super::delivery::{Delivery, EventSink};
use super::inbound::{Close, Inbound};
use super::peer::PeerConn;
use super::peers::{Dialled, PeerCx, PeerIo, PeerNet};
use super::stream::ByteStream;
use super::{ClientConnId, NetConfig, NetEvent, NetStats, NetStatsSnapshot};
use crossbeam_channel::Receiver;
use mio::Token;
use rcraft_wire::{ClientResponse, ConnectionRole, Message, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One end of a simulated connection: bytes that arrived and were not read yet, and bytes
/// written and not yet taken by the simulator.
#[derive(Default)]
pub(super) struct SimStream {
    arrived: Vec<u8>,
    read: usize,
    written: Vec<u8>,
    /// When set, the most written bytes the other side has not taken yet (a socket's send
    /// buffer toward a reader that does not keep up): a write beyond it would block.
    window: Option<usize>,
}

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let waiting = &self.arrived[self.read..];
        if waiting.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = waiting.len().min(buf.len());
        buf[..n].copy_from_slice(&waiting[..n]);
        self.read += n;
        if self.read == self.arrived.len() {
            self.arrived.clear();
            self.read = 0;
        }
        Ok(n)
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = match self.window {
            Some(window) => window.saturating_sub(self.written.len()),
            None => buf.len(),
        };
        if room == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ByteStream for SimStream {
    fn short_read_drains(&self) -> bool {
        true
    }

    fn refusal_for(&self, _role: ConnectionRole) -> Option<String> {
        None
    }

    fn finish_connect(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

/// How a simulated node's network is set up.
#[derive(Clone, Debug)]
pub struct SimNetSettings {
    /// This node.
    pub node_id: NodeId,
    /// The cluster id every handshake carries.
    pub cluster_id: u64,
    /// This node's data-dir incarnation (the same in every life of the node).
    pub incarnation: u64,
    /// Every other node.
    pub peers: Vec<NodeId>,
    /// The cluster secret, when peers authenticate.
    pub secret: Option<Vec<u8>>,
    /// Seeds the nonces of authenticated handshakes.
    pub nonce_seed: u64,
    /// Tokens of the connections this node dials start here (above those of its earlier
    /// lives, so that a peer tells a new connection from an old one's late bytes).
    pub first_token: u64,
    /// Time allowed for a handshake answer (the network thread's `stall_timeout`; the
    /// simulator shortens it in some runs so that the timer fires).
    pub stall_timeout_ms: u64,
    /// Cap on open connections from one source address (the network thread's
    /// `connections_per_address_max`; the simulator lowers it in some runs so that clients
    /// meet it).
    pub connections_per_address_max: usize,
    /// Cap on open accepted connections, peers' and clients' (the network thread's
    /// `connections_max`; lowered in some runs so that clients meet it).
    pub connections_max: usize,
    /// Unsent answer bytes at which a client's requests are no longer read (the network
    /// thread's `client_pending_out_bytes_max`; lowered in runs with a slow reader so that
    /// back-pressure pauses it).
    pub client_pending_out_bytes_max: usize,
}

/// What arrived on a client connection ([`SimPeerNet::client_receive`]).
#[derive(Debug, Default)]
pub struct SimClientReceived {
    /// The events the network thread hands the consensus thread, in order: the requests
    /// decoded (and closes of client connections), for [`SimConsensus::net_events`].
    ///
    /// [`SimConsensus::net_events`]: crate::node::testing::SimConsensus::net_events
    pub events: Vec<NetEvent>,
    /// The node closed the connection, and why (after delivering `events`).
    pub closed: Option<String>,
}

/// What became of a message handed to [`SimPeerNet::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimSend {
    /// Encoded into the link's connection `conn` (which may have been dialled for it).
    Queued {
        /// The connection's token.
        conn: u64,
    },
    /// Dropped, as the network thread drops it: the link is down and waits out its back-off,
    /// or the link's queue is full, or the message is too large.
    Dropped,
}

/// One simulated node's peer network: its links to every peer and the connections peers
/// dialled to it, each the network thread's own type over an in-memory stream (`SimStream`).
pub struct SimPeerNet {
    config: NetConfig,
    delivery: Delivery,
    events: Receiver<NetEvent>,
    stats: Arc<NetStats>,
    /// The network thread's outbound links, dials, back-off and timers (`peers.rs`).
    peers: PeerNet<SimStream>,
    /// The network thread's accepted connections (`accepted.rs`), under tokens of ours.
    accepted: AcceptNet<SimStream>,
    /// The peer and dialler's token of each of `accepted`'s connections.
    origin: BTreeMap<Token, (NodeId, u64)>,
    /// The newest connection token seen from each peer (a lower one is an old connection's),
    /// with the token it has here.
    newest: BTreeMap<NodeId, (u64, Token)>,
    /// The token of the next accepted connection.
    next_accepted: u64,
    /// Accepted connections the sweep closed, not yet taken ([`SimPeerNet::take_stalled`]).
    stalled: Vec<(NodeId, u64)>,
    /// The tokens of the handler's client connections (those accepted through
    /// [`SimPeerNet::client_connect`] and still open).
    clients: BTreeSet<Token>,
    /// Client connections the node closed on its own (the sweep), not yet taken
    /// ([`SimPeerNet::take_closed_clients`]).
    closed_clients: Vec<u64>,
    /// Client connections refused by the cap on all open connections (counted in the
    /// handler's `connections_refused` with the refusals of peers).
    clients_refused_overall: u64,
    /// Simulated time zero.
    base: Instant,
    read_buf: Vec<u8>,
    next_token: u64,
    nonce_state: u64,
}

/// The simulator's side of the peer handler's I/O: in-memory streams, connected at once,
/// with increasing tokens and seeded nonces.
struct SimIo<'a> {
    next_token: &'a mut u64,
    nonce_state: &'a mut u64,
}

impl PeerIo<SimStream> for SimIo<'_> {
    fn dial(&mut self, _peer: NodeId, _addr: SocketAddr) -> io::Result<Dialled<SimStream>> {
        let token = *self.next_token;
        *self.next_token += 1;
        Ok(Dialled {
            token: Token(token as usize),
            stream: SimStream::default(),
            connected: true,
        })
    }

    fn fresh_nonce(&mut self) -> io::Result<Nonce> {
        Ok(next_nonce(self.nonce_state))
    }

    fn release(&mut self, _peer: NodeId, _conn: &mut PeerConn<SimStream>) {}
}

impl AcceptIo<SimStream> for SimIo<'_> {
    fn fresh_nonce(&mut self) -> io::Result<Nonce> {
        Ok(next_nonce(self.nonce_state))
    }

    fn release(&mut self, _conn: &mut Inbound<SimStream>) {}
}

/// A peer's made-up address (the simulator has none; it appears in log lines only).
fn sim_addr(id: NodeId) -> SocketAddr {
    let port = 10_000 + (id.0 % 50_000) as u16;
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// splitmix64: the nonces of a simulated node, reproducible from its seed.
fn next_nonce(state: &mut u64) -> Nonce {
    let mut nonce = [0u8; rcraft_wire::NONCE_BYTES];
    for chunk in nonce.chunks_mut(8) {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    nonce
}

impl SimPeerNet {
    /// A node's network with every link down and no connection.
    pub fn new(settings: SimNetSettings) -> Result<SimPeerNet, String> {
        let peers = settings
            .peers
            .iter()
            .map(|&id| (id, sim_addr(id)))
            .collect();
        let listen = sim_addr(settings.node_id);
        let mut config = NetConfig::new(settings.node_id, settings.cluster_id, listen, peers);
        config.incarnation = settings.incarnation;
        config.stall_timeout = Duration::from_millis(settings.stall_timeout_ms);
        config.connections_per_address_max = settings.connections_per_address_max;
        config.connections_max = settings.connections_max;
        config.client_pending_out_bytes_max = settings.client_pending_out_bytes_max;
        if let Some(secret) = settings.secret {
            let secrets = PeerSecrets::new(vec![secret]).map_err(|e| e.to_string())?;
            config.peer_secrets = Some(Arc::new(secrets));
        }
        let base = Instant::now();
        let (sender, events) = crossbeam_channel::unbounded();
        let stats = Arc::new(NetStats::default());
        let delivery = Delivery::new(EventSink::Each(sender), Box::new(|| {}), stats.clone());
        Ok(SimPeerNet {
            peers: PeerNet::new(&config, base),
            config,
            delivery,
            events,
            stats,
            accepted: AcceptNet::new(),
            origin: BTreeMap::new(),
            newest: BTreeMap::new(),
            next_accepted: 1,
            stalled: Vec::new(),
            clients: BTreeSet::new(),
            closed_clients: Vec::new(),
            clients_refused_overall: 0,
            base,
            read_buf: vec![0; super::READ_CHUNK_BYTES],
            next_token: settings.first_token,
            nonce_state: settings.nonce_seed,
        })
    }

    fn at(&self, now_ms: u64) -> Instant {
        self.base + Duration::from_millis(now_ms)
    }

    /// The peer handler and what its calls need (disjoint fields).
    fn split(&mut self) -> (&mut PeerNet<SimStream>, PeerCx<'_, SimIo<'_>>) {
        let cx = PeerCx {
            config: &self.config,
            stats: &self.stats,
            read_buf: &mut self.read_buf,
            io: SimIo {
                next_token: &mut self.next_token,
                nonce_state: &mut self.nonce_state,
            },
        };
        (&mut self.peers, cx)
    }

    /// The accepted-connection handler and what its calls need (disjoint fields).
    fn split_accepted(
        &mut self,
    ) -> (
        &mut AcceptNet<SimStream>,
        AcceptCx<'_, SimStream, SimIo<'_>>,
    ) {
        let cx = AcceptCx {
            config: &self.config,
            delivery: &mut self.delivery,
            peers: &mut self.peers,
            read_buf: &mut self.read_buf,
            io: SimIo {
                next_token: &mut self.next_token,
                nonce_state: &mut self.nonce_state,
            },
        };
        (&mut self.accepted, cx)
    }

    /// Forgets the origin of connections the handler closed, and the client connections it
    /// closed.
    fn prune_origin(&mut self) {
        let accepted = &self.accepted;
        self.origin.retain(|&token, _| accepted.contains(token));
        self.clients.retain(|&token| accepted.contains(token));
    }

    /// The loop's timers at `now`: when the sweep is due, links whose handshake answer is
    /// overdue are torn down (as at the end of each loop turn).
    fn timers(&mut self, now: Instant) {
        if self.peers.sweep_due(&self.config, now) {
            let (peers, mut cx) = self.split();
            peers.sweep(&mut cx, now);
            let (accepted, mut cx) = self.split_accepted();
            accepted.sweep(&mut cx, now);
            let accepted = &self.accepted;
            let stalled = (self.origin.iter()).filter(|&(&token, _)| !accepted.contains(token));
            self.stalled.extend(stalled.map(|(_, &origin)| origin));
            let closed = (self.clients.iter()).filter(|&&token| !accepted.contains(token));
            self.closed_clients
                .extend(closed.map(|token| token.0 as u64));
            self.prune_origin();
        }
    }

    /// The connections peers dialled to us that the sweep closed for stalling since the last
    /// call, as (peer, dialler's token): the simulator breaks them at their dialler too, as
    /// a closed socket would.
    pub fn take_stalled(&mut self) -> Vec<(NodeId, u64)> {
        std::mem::take(&mut self.stalled)
    }

    /// The network thread starts: it dials every peer (take the handshakes with
    /// [`SimPeerNet::take_all_sent`]).
    pub fn start(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        let (peers, mut cx) = self.split();
        peers.start(&mut cx, now);
        peers.flush(&mut cx, now);
    }

    /// Sends `message` to its `to` as the network thread does (dials first when the link is
    /// down and its back-off has passed, queues, then writes what the connection may send
    /// at the end of the turn; take it with [`SimPeerNet::take_sent`]).
    pub fn send(&mut self, now_ms: u64, message: &Message) -> SimSend {
        let now = self.at(now_ms);
        self.timers(now);
        let (peers, mut cx) = self.split();
        let queued = peers.send(&mut cx, message, now);
        peers.flush(&mut cx, now);
        let conn = (self.peers.links.get(&message.to))
            .and_then(|link| link.conn.as_ref())
            .map(|conn| conn.token.0 as u64);
        match (queued, conn) {
            (true, Some(conn)) => SimSend::Queued { conn },
            _ => SimSend::Dropped,
        }
    }

    /// The bytes our link to `peer` wrote since the last call, with its connection's token.
    pub fn take_sent(&mut self, peer: NodeId) -> Option<(u64, Vec<u8>)> {
        let conn = self.peers.links.get_mut(&peer)?.conn.as_mut()?;
        let bytes = std::mem::take(&mut conn.stream.written);
        (!bytes.is_empty()).then_some((conn.token.0 as u64, bytes))
    }

    /// The bytes every link wrote since the last call (a new connection's handshake, dialled
    /// at start or when its peer dialled us), with the peer and connection token.
    pub fn take_all_sent(&mut self) -> Vec<(NodeId, u64, Vec<u8>)> {
        let peers: Vec<NodeId> = self.peers.links.keys().copied().collect();
        (peers.into_iter())
            .filter_map(|peer| {
                let (conn, bytes) = self.take_sent(peer)?;
                Some((peer, conn, bytes))
            })
            .collect()
    }

    /// The bytes the connection `peer` dialled to us wrote (handshake answers) since the last
    /// call, with its token.
    pub fn take_answers(&mut self, peer: NodeId) -> Option<(u64, Vec<u8>)> {
        let &(conn, token) = self.newest.get(&peer)?;
        let inbound = self.accepted.get_mut(token)?;
        let bytes = std::mem::take(&mut inbound.stream.written);
        (!bytes.is_empty()).then_some((conn, bytes))
    }

    /// Bytes arrived on connection `conn` that `peer` dialled to us: decoded and checked by
    /// the network thread's inbound connection. Returns the peer messages decoded, or why the
    /// connection is closed (then it is gone, as after the loop's close). Bytes of an older
    /// connection are ignored.
    pub fn receive(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        conn: u64,
        bytes: &[u8],
    ) -> Result<Vec<Message>, String> {
        let now = self.at(now_ms);
        self.timers(now);
        let newest = self.newest.get(&peer).copied();
        if newest.is_some_and(|(newest, _)| conn < newest) {
            return Ok(Vec::new());
        }
        let token = match newest {
            Some((newest, token)) if newest == conn => token,
            _ => {
                // A new connection, accepted as the loop does; once its handshake completes,
                // the handler closes the peer's older ones.
                let token = Token(self.next_accepted as usize);
                self.next_accepted += 1;
                self.newest.insert(peer, (conn, token));
                let id = ClientConnId(token.0 as u64);
                let max = self.config.frame_bytes_max;
                let inbound = Inbound::new(SimStream::default(), sim_addr(peer), id, max, now);
                self.accepted.insert(token, inbound);
                self.origin.insert(token, (peer, conn));
                token
            }
        };
        let Some(inbound) = self.accepted.get_mut(token) else {
            // This connection was closed: its late bytes are lost.
            return Ok(Vec::new());
        };
        inbound.stream.arrived.extend_from_slice(bytes);
        let (accepted, mut cx) = self.split_accepted();
        let serviced = accepted.service(&mut cx, token, now);
        self.prune_origin();
        let messages = self
            .events
            .try_iter()
            .filter_map(|event| match event {
                NetEvent::Peer(message) => Some(message),
                _ => None,
            })
            .collect();
        if let Some(why) = serviced.closed {
            return Err(why);
        }
        if let Some(id) = serviced.peer_up {
            // The peer is up: our link to it dials at once if it is down (its handshake is
            // written at the end of the turn: take it with `take_all_sent`).
            let (peers, mut cx) = self.split();
            peers.peer_dialled_us(&mut cx, id, now);
            peers.flush(&mut cx, now);
        }
        Ok(messages)
    }

    /// Bytes arrived from `peer` on our connection `conn` to it (its handshake answer):
    /// checked by the link, which then writes what waited for it. `Err` says why the link
    /// failed (it then waits out its back-off). Bytes of an older connection are ignored.
    pub fn receive_answer(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        conn: u64,
        bytes: &[u8],
    ) -> Result<(), String> {
        let now = self.at(now_ms);
        self.timers(now);
        let Some(link) = self.peers.links.get_mut(&peer) else {
            return Ok(());
        };
        let Some(current) = link.conn.as_mut().filter(|c| c.token.0 as u64 == conn) else {
            return Ok(());
        };
        current.stream.arrived.extend_from_slice(bytes);
        let (peers, mut cx) = self.split();
        match peers.on_ready(&mut cx, Token(conn as usize), now) {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// The network broke connection `conn` to `peer` (a lost message, a partition, the peer
    /// crashed): the link fails as on a socket error and waits out its back-off. `None`
    /// breaks whatever connection the link has.
    pub fn link_broken(&mut self, now_ms: u64, peer: NodeId, conn: Option<u64>) {
        let now = self.at(now_ms);
        let Some(link) = self.peers.links.get(&peer) else {
            return;
        };
        let current = link.conn.as_ref().map(|c| c.token.0 as u64);
        if current.is_some() && (conn.is_none() || conn == current) {
            let reset = Close::Io(io::ErrorKind::ConnectionReset.into());
            let (peers, mut cx) = self.split();
            peers.fail(&mut cx, peer, reset, now);
        }
    }

    /// The network broke connection `conn` that `peer` dialled to us (`None`: whichever it
    /// is): it is closed, and its late bytes will be ignored.
    pub fn accepted_broken(&mut self, now_ms: u64, peer: NodeId, conn: Option<u64>) {
        let now = self.at(now_ms);
        let broken: Vec<Token> = (self.origin.iter())
            .filter(|&(_, &(from, c))| from == peer && conn.is_none_or(|conn| conn == c))
            .map(|(&token, _)| token)
            .collect();
        for token in broken {
            let reset = Close::Io(io::ErrorKind::ConnectionReset.into());
            let (accepted, mut cx) = self.split_accepted();
            accepted.close(&mut cx, token, reset, now);
        }
        self.prune_origin();
    }

    /// A client connects from `addr`: admitted as the loop's accept admits a socket (under
    /// the cap on open connections and the cap per source address), else refused (the loop
    /// closes the socket at once; the refusal is counted and logged). Returns the
    /// connection's token, which names it from now on. `window` makes the client a slow
    /// reader: the node's writes block once that many bytes wait untaken
    /// ([`SimPeerNet::client_writable`] when the client took them).
    pub fn client_connect(
        &mut self,
        now_ms: u64,
        addr: SocketAddr,
        window: Option<usize>,
    ) -> Result<u64, String> {
        let now = self.at(now_ms);
        self.timers(now);
        let refused_before = self.stats.snapshot().connections_refused;
        if !self.accepted.admit(&self.config, &self.stats, addr) {
            if self.stats.snapshot().connections_refused > refused_before {
                self.clients_refused_overall += 1;
            }
            return Err(format!(
                "connection from {addr} refused by a cap on connections"
            ));
        }
        let token = Token(self.next_accepted as usize);
        self.next_accepted += 1;
        let id = ClientConnId(token.0 as u64);
        let max = self.config.frame_bytes_max;
        let stream = SimStream {
            window,
            ..SimStream::default()
        };
        let inbound = Inbound::new(stream, addr, id, max, now);
        self.accepted.insert(token, inbound);
        self.clients.insert(token);
        Ok(token.0 as u64)
    }

    /// Bytes arrived on client connection `conn`: decoded and checked by the network thread's
    /// inbound connection, whose events (the requests, for the consensus thread) are returned
    /// with why the node closed the connection, if it did. Bytes of a closed connection are
    /// ignored.
    pub fn client_receive(&mut self, now_ms: u64, conn: u64, bytes: &[u8]) -> SimClientReceived {
        let now = self.at(now_ms);
        self.timers(now);
        let token = Token(conn as usize);
        let mut received = SimClientReceived::default();
        if self.clients.contains(&token)
            && let Some(inbound) = self.accepted.get_mut(token)
        {
            inbound.stream.arrived.extend_from_slice(bytes);
            let (accepted, mut cx) = self.split_accepted();
            received.closed = accepted.service(&mut cx, token, now).closed;
            self.prune_origin();
        }
        received.events = self.take_client_events();
        received
    }

    /// Client connection `conn` may be written again (a slow reader took the bytes waiting
    /// for it): serviced as the loop services a writable socket (its queued answers written,
    /// what it may decode again decoded), then paused connections that may decode again are
    /// resumed, as at the end of each loop turn. Returns what that delivered.
    pub fn client_writable(&mut self, now_ms: u64, conn: u64) -> SimClientReceived {
        let now = self.at(now_ms);
        self.timers(now);
        let token = Token(conn as usize);
        let mut received = SimClientReceived::default();
        if self.clients.contains(&token) {
            let (accepted, mut cx) = self.split_accepted();
            received.closed = accepted.service(&mut cx, token, now).closed;
            accepted.resume_paused(&mut cx, now);
            self.prune_origin();
        }
        received.events = self.take_client_events();
        received
    }

    /// Whether back-pressure paused client connection `conn` (its requests wait unread).
    pub fn client_paused(&mut self, conn: u64) -> bool {
        let token = Token(conn as usize);
        self.clients.contains(&token) && self.accepted.get_mut(token).is_some_and(|c| c.paused)
    }

    /// The events for the consensus thread that client connections produced and nobody took
    /// yet (closes by the sweep among them); peer messages are never among them.
    pub fn take_client_events(&mut self) -> Vec<NetEvent> {
        (self.events.try_iter())
            .filter(|event| !matches!(event, NetEvent::Peer(_)))
            .collect()
    }

    /// The consensus thread's answers of one turn, as (connection, response): queued on their
    /// connections and written once each, as the loop's `NetCommand::Replies` is (an answer
    /// to a connection already closed is counted and dropped). Take the bytes with
    /// [`SimPeerNet::take_client_written`].
    pub fn client_replies(&mut self, now_ms: u64, replies: &[(u64, ClientResponse)]) {
        let now = self.at(now_ms);
        self.timers(now);
        for (conn, response) in replies {
            let token = Token(*conn as usize);
            (self.accepted).queue_reply(&self.config, &self.stats, token, response);
        }
        let (accepted, mut cx) = self.split_accepted();
        accepted.flush(&mut cx, now);
        self.prune_origin();
    }

    /// The bytes the node wrote to client connection `conn` since the last call (its
    /// handshake answer, its replies).
    pub fn take_client_written(&mut self, conn: u64) -> Option<Vec<u8>> {
        let token = Token(conn as usize);
        if !self.clients.contains(&token) {
            return None;
        }
        let inbound = self.accepted.get_mut(token)?;
        let bytes = std::mem::take(&mut inbound.stream.written);
        (!bytes.is_empty()).then_some(bytes)
    }

    /// Client connection `conn` ended at the client's side: closed by the client (`reset`
    /// false: the node reads its end) or broken by the network (`reset` true).
    pub fn client_closed(&mut self, now_ms: u64, conn: u64, reset: bool) {
        let now = self.at(now_ms);
        let token = Token(conn as usize);
        if !self.clients.contains(&token) {
            return;
        }
        let reason = match reset {
            true => Close::Io(io::ErrorKind::ConnectionReset.into()),
            false => Close::Eof,
        };
        let (accepted, mut cx) = self.split_accepted();
        accepted.close(&mut cx, token, reason, now);
        self.prune_origin();
    }

    /// The client connections the node closed on its own (its sweep: a request frame left
    /// incomplete past the stall timeout) since the last call: the simulator breaks them at
    /// their clients.
    pub fn take_closed_clients(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.closed_clients)
    }

    /// Client connections refused by the cap on all open connections (the handler counts
    /// them in `connections_refused`, with refused peers).
    pub fn clients_refused_overall(&self) -> u64 {
        self.clients_refused_overall
    }

    /// The network thread's counters.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::{LogIndex, MessageBody, Term};

    fn settings(node: u64, secret: bool) -> SimNetSettings {
        SimNetSettings {
            node_id: NodeId(node),
            cluster_id: 7,
            incarnation: 100 + node,
            peers: [0, 1]
                .into_iter()
                .filter(|&p| p != node)
                .map(NodeId)
                .collect(),
            secret: secret.then(|| b"a simulated cluster secret".to_vec()),
            nonce_seed: node,
            first_token: (node + 1) << 32,
            stall_timeout_ms: 10_000,
            connections_per_address_max: 64,
            connections_max: 64,
            client_pending_out_bytes_max: 1 << 20,
        }
    }

    fn heartbeat(n: u64) -> Message {
        Message {
            from: NodeId(0),
            to: NodeId(1),
            term: Term(3),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex(n),
                read_context: n,
            },
        }
    }

    /// Node 0 sends three messages to node 1, its bytes handed over `step` bytes at a time
    /// (answers back at once); returns what node 1 decoded.
    fn exchange(secret: bool, step: usize) -> Vec<Message> {
        let mut a = SimPeerNet::new(settings(0, secret)).unwrap();
        let mut b = SimPeerNet::new(settings(1, secret)).unwrap();
        for n in 1..=3 {
            assert!(matches!(a.send(0, &heartbeat(n)), SimSend::Queued { .. }));
        }
        let mut received = Vec::new();
        // Until nothing moves: the dialler's bytes, then the acceptor's answers.
        for _ in 0..10 {
            let mut moved = false;
            if let Some((conn, bytes)) = a.take_sent(NodeId(1)) {
                moved = true;
                for piece in bytes.chunks(step) {
                    received.extend(b.receive(1, NodeId(0), conn, piece).unwrap());
                }
            }
            if let Some((conn, bytes)) = b.take_answers(NodeId(0)) {
                moved = true;
                for piece in bytes.chunks(step) {
                    a.receive_answer(1, NodeId(1), conn, piece).unwrap();
                }
            }
            if !moved {
                break;
            }
        }
        received
    }

    #[test]
    fn messages_cross_in_any_split_with_and_without_the_secret() {
        let sent: Vec<Message> = (1..=3).map(heartbeat).collect();
        for secret in [false, true] {
            for step in [1, 2, 7, 64, 4096] {
                assert_eq!(exchange(secret, step), sent, "secret {secret}, step {step}");
            }
        }
    }

    #[test]
    fn a_damaged_frame_closes_the_connection_and_its_late_bytes_are_ignored() {
        let mut a = SimPeerNet::new(settings(0, false)).unwrap();
        let mut b = SimPeerNet::new(settings(1, false)).unwrap();
        a.send(0, &heartbeat(1));
        let (conn, mut bytes) = a.take_sent(NodeId(1)).unwrap();
        // The frame's checksum or length no longer matches: the acceptor refuses it.
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let refused = b.receive(1, NodeId(0), conn, &bytes).unwrap_err();
        assert!(
            refused.contains("frame") || refused.contains("message"),
            "{refused}"
        );
        // Later bytes of that connection are never read, as a closed socket's.
        assert_eq!(b.receive(2, NodeId(0), conn, &bytes), Ok(Vec::new()));
    }

    #[test]
    fn a_broken_link_waits_out_its_back_off_then_dials_a_new_connection() {
        let mut a = SimPeerNet::new(settings(0, false)).unwrap();
        let SimSend::Queued { conn: first } = a.send(0, &heartbeat(1)) else {
            panic!("not queued");
        };
        a.link_broken(10, NodeId(1), Some(first));
        // Within the first back-off (50 ms) the link is down and drops what it is given.
        assert_eq!(a.send(20, &heartbeat(2)), SimSend::Dropped);
        assert_eq!(a.stats().peer_dropped_link_down, 1);
        let SimSend::Queued { conn: second } = a.send(70, &heartbeat(3)) else {
            panic!("not queued after the back-off");
        };
        assert!(second > first);
        // The new connection starts with a handshake again.
        let (_, bytes) = a.take_sent(NodeId(1)).unwrap();
        let mut b = SimPeerNet::new(settings(1, false)).unwrap();
        assert_eq!(
            b.receive(70, NodeId(0), second, &bytes),
            Ok(vec![heartbeat(3)])
        );
    }

    #[test]
    fn a_link_whose_handshake_is_never_answered_is_torn_down_by_the_stall_timer() {
        let mut a = SimPeerNet::new(settings(0, false)).unwrap();
        let SimSend::Queued { conn: first } = a.send(0, &heartbeat(1)) else {
            panic!("not queued");
        };
        // Within the stall timeout (10 s) the connection waits for its answer.
        assert_eq!(
            a.send(9_000, &heartbeat(2)),
            SimSend::Queued { conn: first }
        );
        assert_eq!(a.stats().connections_refused, 0);
        // Past it, the next sweep tears the link down; it backs off, then dials anew.
        assert_eq!(a.send(10_100, &heartbeat(3)), SimSend::Dropped);
        assert_eq!(a.stats().connections_refused, 1);
        let SimSend::Queued { conn: second } = a.send(10_200, &heartbeat(4)) else {
            panic!("not dialled again after the back-off");
        };
        assert!(second > first);
    }

    #[test]
    fn the_thread_dials_every_peer_at_start_and_back_when_a_peer_dials_it() {
        let mut a = SimPeerNet::new(settings(0, false)).unwrap();
        a.start(0);
        let sent = a.take_all_sent();
        assert_eq!(sent.len(), 1, "one handshake per peer");
        assert_eq!(sent[0].0, NodeId(1));

        let mut b = SimPeerNet::new(settings(1, false)).unwrap();
        let to_a = Message {
            from: NodeId(1),
            to: NodeId(0),
            ..heartbeat(1)
        };
        let SimSend::Queued { conn } = b.send(0, &to_a) else {
            panic!("not queued");
        };
        b.link_broken(1, NodeId(0), Some(conn));
        b.take_all_sent();
        // B's link to A now backs off (50 ms)...
        assert_eq!(b.send(2, &to_a), SimSend::Dropped);
        // ...until A dials B: B forgets the back-off and dials A back at once.
        let (a_conn, a_bytes) = (sent[0].1, sent[0].2.clone());
        assert_eq!(b.receive(3, NodeId(0), a_conn, &a_bytes), Ok(Vec::new()));
        let back = b.take_all_sent();
        assert_eq!(back.len(), 1, "B dialled A back");
        assert_eq!(back[0].0, NodeId(0));
        assert!(back[0].1 > conn, "a new connection");
    }

    #[test]
    fn a_peers_newer_connection_closes_its_older_one_once_its_handshake_completes() {
        let mut a = SimPeerNet::new(settings(0, true)).unwrap();
        let mut b = SimPeerNet::new(settings(1, true)).unwrap();
        let SimSend::Queued { conn: first } = a.send(0, &heartbeat(1)) else {
            panic!("not queued");
        };
        let (_, hello) = a.take_sent(NodeId(1)).unwrap();
        assert_eq!(b.receive(1, NodeId(0), first, &hello), Ok(Vec::new()));
        let (_, answer) = b.take_answers(NodeId(0)).unwrap();
        a.receive_answer(2, NodeId(1), first, &answer).unwrap();
        let (_, proof) = a.take_sent(NodeId(1)).unwrap();
        assert_eq!(
            b.receive(3, NodeId(0), first, &proof),
            Ok(vec![heartbeat(1)])
        );
        assert_eq!(b.origin.len(), 1);

        // A's link breaks at its end only; it dials anew.
        a.link_broken(4, NodeId(1), Some(first));
        let SimSend::Queued { conn: second } = a.send(100, &heartbeat(2)) else {
            panic!("not dialled again");
        };
        let (_, hello) = a.take_sent(NodeId(1)).unwrap();
        assert_eq!(b.receive(101, NodeId(0), second, &hello), Ok(Vec::new()));
        // Until the new connection proves itself, the older one stays open.
        assert_eq!(b.origin.len(), 2);
        let (_, answer) = b.take_answers(NodeId(0)).unwrap();
        a.receive_answer(102, NodeId(1), second, &answer).unwrap();
        let (_, proof) = a.take_sent(NodeId(1)).unwrap();
        assert_eq!(
            b.receive(103, NodeId(0), second, &proof),
            Ok(vec![heartbeat(2)])
        );
        let open: Vec<(NodeId, u64)> = b.origin.values().copied().collect();
        assert_eq!(open, vec![(NodeId(0), second)]);
        assert_eq!(b.stats().connections_refused, 0);

        // A crash of A breaks whatever it had dialled.
        b.accepted_broken(104, NodeId(0), None);
        assert!(b.origin.is_empty());
        assert_eq!(b.receive(105, NodeId(0), second, &[0]), Ok(Vec::new()));
    }

    #[test]
    fn an_accepted_connection_whose_handshake_stalls_is_closed_by_the_sweep() {
        let mut a = SimPeerNet::new(settings(0, true)).unwrap();
        let mut b = SimPeerNet::new(settings(1, true)).unwrap();
        let SimSend::Queued { conn } = a.send(0, &heartbeat(1)) else {
            panic!("not queued");
        };
        let (_, hello) = a.take_sent(NodeId(1)).unwrap();
        assert_eq!(b.receive(1, NodeId(0), conn, &hello), Ok(Vec::new()));
        // A's proof never comes. Within the stall timeout (10 s) the connection waits.
        let to_a = Message {
            from: NodeId(1),
            to: NodeId(0),
            ..heartbeat(1)
        };
        b.send(9_000, &to_a);
        assert_eq!(b.take_stalled(), Vec::new());
        // Past it, the sweep closes it, counted, and hands it over to be broken at A.
        b.send(10_100, &to_a);
        assert_eq!(b.take_stalled(), vec![(NodeId(0), conn)]);
        assert_eq!(b.stats().connections_stalled, 1);
        assert!(b.origin.is_empty());
        // Its late bytes are never read.
        assert_eq!(b.receive(10_200, NodeId(0), conn, &[0]), Ok(Vec::new()));
    }
    fn client_addr(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, 0, 0, host), port))
    }

    fn write_request(request_id: u64) -> Vec<u8> {
        let request = rcraft_wire::ClientRequest {
            request_id,
            body: rcraft_wire::ClientRequestBody::Write {
                session: None,
                command: b"x".to_vec(),
            },
        };
        let mut frame = Vec::new();
        rcraft_wire::encode_client_request(&request, &mut frame).unwrap();
        frame
    }

    #[test]
    fn a_clients_request_in_pieces_is_decoded_and_its_answer_written_back() {
        let mut b = SimPeerNet::new(settings(1, false)).unwrap();
        let conn = b.client_connect(0, client_addr(1, 40_000), None).unwrap();
        let options = crate::client::ClientOptions::default();
        let mut bytes = crate::client::handshake(&options);
        bytes.extend(write_request(7));
        let mut events = Vec::new();
        for piece in bytes.chunks(5) {
            let received = b.client_receive(1, conn, piece);
            assert_eq!(received.closed, None);
            events.extend(received.events);
        }
        let [
            NetEvent::Client {
                conn: id, request, ..
            },
        ] = &events[..]
        else {
            panic!("one request expected: {events:?}");
        };
        assert_eq!((id.0, request.request_id), (conn, 7));
        // The handshake answer, then the reply, as bytes a client decodes.
        let hello = b.take_client_written(conn).unwrap();
        assert_eq!(hello.len(), rcraft_wire::HANDSHAKE_BYTES);
        let reply = ClientResponse {
            request_id: 7,
            body: rcraft_wire::ClientResponseBody::Overloaded,
        };
        b.client_replies(2, &[(conn, reply.clone())]);
        let written = b.take_client_written(conn).unwrap();
        let mut decoder = rcraft_wire::FrameDecoder::new(rcraft_wire::FRAME_BYTES_MAX);
        decoder.push(&written);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame.to_client_response().unwrap(), reply);
        // Once the client hung up, a reply to it is counted and dropped.
        b.client_closed(3, conn, false);
        b.client_replies(4, &[(conn, reply)]);
        assert_eq!(b.take_client_written(conn), None);
        assert_eq!(b.stats().replies_to_closed, 1);
        let closed = b.take_client_events();
        assert!(matches!(closed[..], [NetEvent::ClientClosed(id)] if id.0 == conn));
    }

    #[test]
    fn client_connections_meet_the_cap_per_address_and_the_cap_on_all() {
        let mut b = SimPeerNet::new(SimNetSettings {
            connections_per_address_max: 2,
            connections_max: 3,
            ..settings(1, false)
        })
        .unwrap();
        let first = b.client_connect(0, client_addr(1, 1), None).unwrap();
        b.client_connect(0, client_addr(1, 2), None).unwrap();
        assert!(b.client_connect(0, client_addr(1, 3), None).is_err());
        assert_eq!(b.stats().connections_refused_per_address, 1);
        b.client_connect(0, client_addr(2, 1), None).unwrap();
        assert!(b.client_connect(0, client_addr(3, 1), None).is_err());
        assert_eq!(b.clients_refused_overall(), 1);
        // A closed connection makes room again.
        b.client_closed(1, first, true);
        b.client_connect(1, client_addr(3, 1), None).unwrap();
    }

    #[test]
    fn a_client_frame_left_incomplete_past_the_stall_timeout_is_closed_by_the_sweep() {
        let mut b = SimPeerNet::new(SimNetSettings {
            stall_timeout_ms: 150,
            ..settings(1, false)
        })
        .unwrap();
        let conn = b.client_connect(0, client_addr(1, 1), None).unwrap();
        let options = crate::client::ClientOptions::default();
        let mut bytes = crate::client::handshake(&options);
        bytes.extend(write_request(1));
        let half = bytes.len() - 3;
        assert!(b.client_receive(1, conn, &bytes[..half]).events.is_empty());
        // The sweep runs before the next input past the timeout.
        b.client_connect(200, client_addr(2, 1), None).unwrap();
        assert_eq!(b.take_closed_clients(), vec![conn]);
        assert_eq!(b.stats().connections_stalled, 1);
        // The rest of the frame arrives too late: ignored, as a closed socket's bytes.
        let late = b.client_receive(201, conn, &bytes[half..]);
        assert!(late.closed.is_none());
        assert!(
            !(late.events.iter()).any(|e| matches!(e, NetEvent::Client { .. })),
            "{:?}",
            late.events
        );
    }
    #[test]
    fn a_client_that_does_not_read_its_answers_is_paused_until_it_does() {
        let mut b = SimPeerNet::new(SimNetSettings {
            client_pending_out_bytes_max: 100,
            ..settings(1, false)
        })
        .unwrap();
        let conn = b.client_connect(0, client_addr(1, 1), Some(16)).unwrap();
        let options = crate::client::ClientOptions::default();
        let hello = crate::client::handshake(&options);
        assert!(b.client_receive(1, conn, &hello).events.is_empty());
        let reply = |request_id| ClientResponse {
            request_id,
            body: rcraft_wire::ClientResponseBody::Overloaded,
        };
        // Each request is answered at once; the client reads nothing, so the answers wait
        // behind the 16 bytes its socket buffer holds until their bytes reach the cap.
        // The next request is read only while the answers' unsent bytes stay under the cap.
        let mut answered = 0;
        loop {
            assert!(answered < 100, "never paused");
            let received = b.client_receive(2, conn, &write_request(answered + 1));
            if received.events.is_empty() {
                break;
            }
            answered += 1;
            b.client_replies(2, &[(conn, reply(answered))]);
        }
        assert!(b.client_paused(conn));
        assert_eq!(b.stats().client_pauses, 1);
        // The client reads: what waited is written, and its request is read at last.
        let mut taken = Vec::new();
        let mut resumed = Vec::new();
        for _ in 0..100 {
            taken.extend(b.take_client_written(conn).unwrap_or_default());
            resumed.extend(b.client_writable(4, conn).events);
            if !b.client_paused(conn) && !resumed.is_empty() {
                break;
            }
        }
        let [NetEvent::Client { request, .. }] = &resumed[..] else {
            panic!("the waiting request was not read: {resumed:?}");
        };
        assert_eq!(request.request_id, answered + 1);
        while let Some(more) = b.take_client_written(conn) {
            taken.extend(more);
            assert!(b.client_writable(5, conn).events.is_empty());
        }
        let mut decoder = rcraft_wire::FrameDecoder::new(rcraft_wire::FRAME_BYTES_MAX);
        decoder.push(&taken[rcraft_wire::HANDSHAKE_BYTES..]);
        let mut ids = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            ids.push(frame.to_client_response().unwrap().request_id);
        }
        assert_eq!(
            ids,
            (1..=answered).collect::<Vec<_>>(),
            "every answer, in order"
        );
    }
}
