//! The network thread's event loop: one mio `Poll` over the listener, the waker, every
//! accepted connection and every outbound peer link.
//!
//! Owned entirely by the network thread. One iteration: wait for readiness (or a timer),
//! service ready sockets (edge-triggered: read until `WouldBlock` or a short read, write
//! until `WouldBlock`), drain the command channel encoding frames into per-connection
//! buffers, write every buffer that got new frames once (coalescing many frames into one
//! `write`), retry held-back client events and resume paused clients, then check timeouts. Tokens are never reused, so a stale event
//! or a reply for a closed connection can never reach a newer one.

use super::auth;
use super::auth::Nonce;
use super::delivery::Delivery;
use super::inbound::{Close, Ctx, Inbound};
use super::peer::PeerConn;
use super::peers::{Dialled, PeerCx, PeerIo, PeerNet};
use super::stream::Stream;
use super::{
    BACKLOG_RETRY_INTERVAL, CONNECTIONS_MAX, ClientConnId, NetCommand, NetConfig, NetEvent,
    NetStats, POLL_EVENTS_CAPACITY, READ_CHUNK_BYTES, bump,
};
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use rcraft_wire::{ClientResponse, ConnectionRole, NodeId};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION_TOKEN: usize = 2;

/// Everything [`EventLoop::new`] needs.
pub(super) struct Parts {
    pub(super) listener: TcpListener,
    pub(super) config: NetConfig,
    pub(super) commands: Receiver<NetCommand>,
    pub(super) events: super::delivery::EventSink,
    pub(super) notify: super::delivery::Notify,
    pub(super) stats: Arc<NetStats>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) wake_pending: Arc<AtomicBool>,
}

pub(super) struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    config: NetConfig,
    commands: Receiver<NetCommand>,
    stop: Arc<AtomicBool>,
    /// Shared with every `NetSender`: true while a wake-up is on its way (see `NetSender`).
    wake_pending: Arc<AtomicBool>,
    delivery: Delivery,
    inbound: HashMap<Token, Inbound>,
    /// The outbound peer links and their timers (`peers.rs`), driven with real sockets.
    peers: PeerNet,
    /// Next token to hand out; tokens are never reused.
    next_token: usize,
    read_buf: Box<[u8]>,
    /// Inbound connections with newly queued responses.
    dirty_inbound: BTreeSet<Token>,
    /// Inbound connections paused by back-pressure.
    paused: BTreeSet<Token>,
    /// Set when `accept` failed for lack of resources; retried at the next sweep.
    accept_pending: bool,
    /// Open inbound connections per source address. Invariant: the count of `inbound`'s
    /// connections from that address; no zero entries.
    per_address: HashMap<IpAddr, usize>,
}

/// The event loop's side of the peer handler's I/O: real sockets, registered with `Poll`.
struct MioPeerIo<'a> {
    node: NodeId,
    registry: &'a Registry,
    next_token: &'a mut usize,
    tls: Option<&'a crate::tls::TlsSlot>,
}

impl PeerIo<Stream> for MioPeerIo<'_> {
    fn dial(&mut self, _peer: NodeId, addr: SocketAddr) -> io::Result<Dialled<Stream>> {
        let token = Token(*self.next_token);
        *self.next_token += 1;
        let tcp = TcpStream::connect(addr)?;
        let mut stream = Stream::dialled_peer(tcp, self.tls, addr)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.registry.register(stream.tcp_mut(), token, interest)?;
        Ok(Dialled {
            token,
            stream,
            connected: false,
        })
    }

    fn fresh_nonce(&mut self) -> io::Result<Nonce> {
        auth::fresh_nonce()
    }

    fn release(&mut self, peer: NodeId, conn: &mut PeerConn<Stream>) {
        if let Err(e) = self.registry.deregister(conn.stream.tcp_mut()) {
            log::debug!("node {}: deregister link to {peer}: {e}", self.node);
        }
    }
}

/// Splits the loop into the peer handler and what a handler call needs (disjoint fields).
macro_rules! peer_cx {
    ($self:ident) => {
        (
            &mut $self.peers,
            PeerCx {
                config: &$self.config,
                stats: &$self.delivery.stats,
                read_buf: &mut $self.read_buf,
                io: MioPeerIo {
                    node: $self.config.node_id,
                    registry: $self.poll.registry(),
                    next_token: &mut $self.next_token,
                    tls: $self.config.tls.as_deref(),
                },
            },
        )
    };
}

impl EventLoop {
    pub(super) fn new(parts: Parts) -> io::Result<(EventLoop, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut listener = parts.listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Instant::now();
        let event_loop = EventLoop {
            poll,
            listener,
            commands: parts.commands,
            stop: parts.stop,
            wake_pending: parts.wake_pending,
            delivery: Delivery::new(parts.events, parts.notify, parts.stats),
            inbound: HashMap::new(),
            peers: PeerNet::new(&parts.config, now),
            next_token: FIRST_CONNECTION_TOKEN,
            read_buf: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            dirty_inbound: BTreeSet::new(),
            paused: BTreeSet::new(),
            accept_pending: false,
            per_address: HashMap::new(),
            config: parts.config,
        };
        Ok((event_loop, waker))
    }

    pub(super) fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Runs until the stop flag is set.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(POLL_EVENTS_CAPACITY);
        let node = self.config.node_id;
        match self.listener.local_addr() {
            Ok(address) => log::info!("node {node}: network thread listening on {address}"),
            Err(e) => log::info!("node {node}: network thread listening (address unknown: {e})"),
        }
        let (peers, mut cx) = peer_cx!(self);
        peers.start(&mut cx, Instant::now());
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.wait(&mut events) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("node {node}: poll failed, network thread stops: {e}");
                break;
            }
            for event in events.iter() {
                self.on_ready(event.token());
            }
            self.drain_commands();
            self.flush_dirty();
            self.delivery.retry_backlog();
            self.resume_paused();
            self.sweep_if_due();
            // One wake-up of the consensus thread for everything this turn decoded.
            self.delivery.notify_if_delivered();
        }
        log::info!("node {node}: network thread stopped");
    }

    /// Waits for readiness: first spinning (non-sleeping polls) for up to `idle_spin` when
    /// configured, then sleeping until the next timer.
    fn wait(&mut self, events: &mut Events) -> io::Result<()> {
        let timeout = self.poll_timeout();
        if !self.config.idle_spin.is_zero() && timeout != Some(Duration::ZERO) {
            let spin_until = Instant::now() + self.config.idle_spin;
            while Instant::now() < spin_until {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() || !self.commands.is_empty() {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        self.poll.poll(events, timeout)
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.delivery.has_backlog() || !self.commands.is_empty() {
            return Some(if self.commands.is_empty() {
                BACKLOG_RETRY_INTERVAL
            } else {
                Duration::ZERO
            });
        }
        let next_sweep = self.peers.next_sweep();
        Some(next_sweep.saturating_duration_since(Instant::now()))
    }

    fn allocate_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn on_ready(&mut self, token: Token) {
        match token {
            LISTENER => self.accept_all(),
            WAKER => {}
            token if self.inbound.contains_key(&token) => self.service_inbound(token),
            token => {
                let (peers, mut cx) = peer_cx!(self);
                peers.on_ready(&mut cx, token, Instant::now());
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => self.on_accepted(stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("node {}: accept failed: {e}", self.config.node_id);
                    self.accept_pending = true;
                    return;
                }
            }
        }
    }

    fn on_accepted(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let node = self.config.node_id;
        if self.inbound.len() >= CONNECTIONS_MAX {
            log::warn!("node {node}: refusing connection from {addr}: {CONNECTIONS_MAX} open");
            bump(&self.delivery.stats.connections_refused, 1);
            return;
        }
        let from_address = self.per_address.get(&addr.ip()).copied().unwrap_or(0);
        if from_address >= self.config.connections_per_address_max {
            let max = self.config.connections_per_address_max;
            log::warn!("node {node}: refusing connection from {addr}: {max} open from its address");
            bump(&self.delivery.stats.connections_refused_per_address, 1);
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            log::warn!("node {node}: dropping connection from {addr}: TCP_NODELAY: {e}");
            return;
        }
        let token = self.allocate_token();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            log::warn!("node {node}: dropping connection from {addr}: register: {e}");
            return;
        }
        bump(&self.delivery.stats.connections_accepted, 1);
        let id = ClientConnId(token.0 as u64);
        let conn = Inbound::new(
            Stream::accepted(stream, self.config.tls.as_deref()),
            addr,
            id,
            self.config.frame_bytes_max,
            Instant::now(),
        );
        self.inbound.insert(token, conn);
        *self.per_address.entry(addr.ip()).or_insert(0) += 1;
        // Edge-triggered: bytes may already be waiting.
        self.service_inbound(token);
    }

    fn service_inbound(&mut self, token: Token) {
        let Some(conn) = self.inbound.get_mut(&token) else {
            return;
        };
        let role_before = conn.role;
        let mut ctx = Ctx {
            config: &self.config,
            known_peers: &self.peers.links,
            delivery: &mut self.delivery,
            identities: &mut self.peers.identities,
            fresh_nonce: &mut auth::fresh_nonce,
        };
        let result = conn
            .pump(&mut self.read_buf, &mut ctx, Instant::now())
            .and_then(|()| conn.flush());
        bump(&self.delivery.stats.bytes_sent, conn.take_written_bytes());
        if conn.paused && self.paused.insert(token) {
            bump(&self.delivery.stats.client_pauses, 1);
        }
        let role_after = conn.role;
        if let Err(reason) = result {
            self.close_inbound(token, reason);
        }
        if let (None, Some(ConnectionRole::Peer(peer))) = (role_before, role_after) {
            self.close_older_links_from(peer, token);
            let (peers, mut cx) = peer_cx!(self);
            peers.peer_dialled_us(&mut cx, peer, Instant::now());
        }
    }

    /// A peer dials anew only after losing its previous link (restart, timeout), so any
    /// other inbound connection from it is stale; close it rather than keep it forever.
    fn close_older_links_from(&mut self, peer: NodeId, newest: Token) {
        let stale: Vec<Token> = self
            .inbound
            .iter()
            .filter(|&(&token, conn)| {
                token != newest && conn.role == Some(ConnectionRole::Peer(peer))
            })
            .map(|(&token, _)| token)
            .collect();
        for token in stale {
            let why = format!("superseded by a newer connection from peer {peer}");
            self.close_inbound(token, Close::Io(io::Error::other(why)));
        }
    }

    fn close_inbound(&mut self, token: Token, reason: Close) {
        let Some(mut conn) = self.inbound.remove(&token) else {
            return;
        };
        self.paused.remove(&token);
        self.dirty_inbound.remove(&token);
        if let Some(count) = self.per_address.get_mut(&conn.addr.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&conn.addr.ip());
            }
        }
        let node = self.config.node_id;
        let what = conn.describe();
        match reason {
            Close::Eof => log::debug!("node {node}: {what} closed"),
            Close::Io(e) => log::info!("node {node}: closing {what}: {e}"),
            Close::Refused { peer, why } => {
                bump(&self.delivery.stats.connections_refused, 1);
                let line = format!("node {node}: closing {what}: {why}");
                (self.peers).log_refusal(peer, line, &why, Instant::now());
            }
            Close::Protocol(why) => {
                bump(&self.delivery.stats.connections_refused, 1);
                log::warn!("node {node}: closing {what}: {why}");
            }
        }
        if let Err(e) = self.poll.registry().deregister(conn.stream.tcp_mut()) {
            log::debug!("node {node}: deregister {what}: {e}");
        }
        if conn.role == Some(ConnectionRole::Client) {
            self.delivery
                .stats
                .client_connections
                .fetch_sub(1, Ordering::Relaxed);
            self.delivery.client_event(NetEvent::ClientClosed(conn.id));
        }
    }

    fn drain_commands(&mut self) {
        // Cleared before draining: a command pushed after this point either is drained now or
        // its sender sees the flag clear and wakes the loop again.
        self.wake_pending.store(false, Ordering::SeqCst);
        // Bounded so that a flood of commands cannot starve the sockets.
        for _ in 0..super::COMMAND_QUEUE_DEPTH {
            let Ok(command) = self.commands.try_recv() else {
                return;
            };
            self.on_command(command);
        }
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::Peer(message) => {
                let (peers, mut cx) = peer_cx!(self);
                peers.send(&mut cx, &message, Instant::now());
            }
            NetCommand::Peers(messages) => {
                let (peers, mut cx) = peer_cx!(self);
                let now = Instant::now();
                for message in &messages {
                    peers.send(&mut cx, message, now);
                }
            }
            NetCommand::Reply { conn, response } => self.queue_reply(conn, &response),
            NetCommand::Replies(replies) => {
                for (conn, response) in &replies {
                    self.queue_reply(*conn, response);
                }
            }
            NetCommand::CloseClient(conn) => {
                let token = Token(conn.0 as usize);
                if self
                    .inbound
                    .get(&token)
                    .is_some_and(|c| c.role == Some(ConnectionRole::Client))
                {
                    let _ = self.inbound.get_mut(&token).map(Inbound::flush);
                    self.close_inbound(token, Close::Eof);
                }
            }
            NetCommand::UpdatePeer { id, addr } => {
                let (peers, mut cx) = peer_cx!(self);
                peers.update_peer(&mut cx, id, addr, Instant::now());
            }
            NetCommand::Members(members) => {
                if let Err(e) = self.peers.identities.forget_except(members) {
                    log::error!(
                        "node {}: cannot record that peers left the membership: {e}",
                        self.config.node_id
                    );
                }
            }
        }
    }

    fn queue_reply(&mut self, conn: ClientConnId, response: &ClientResponse) {
        let token = Token(conn.0 as usize);
        match self.inbound.get_mut(&token) {
            Some(inbound) if inbound.role == Some(ConnectionRole::Client) => {
                inbound.queue_reply(response, self.config.frame_bytes_max);
                self.dirty_inbound.insert(token);
            }
            _ => bump(&self.delivery.stats.replies_to_closed, 1),
        }
    }

    fn flush_dirty(&mut self) {
        let (peers, mut cx) = peer_cx!(self);
        peers.flush(&mut cx, Instant::now());
        for token in std::mem::take(&mut self.dirty_inbound) {
            let Some(conn) = self.inbound.get_mut(&token) else {
                continue;
            };
            let flushed = conn.flush();
            bump(&self.delivery.stats.bytes_sent, conn.take_written_bytes());
            if let Err(reason) = flushed {
                self.close_inbound(token, reason);
            }
        }
    }

    fn resume_paused(&mut self) {
        let now = Instant::now();
        for token in std::mem::take(&mut self.paused) {
            let Some(conn) = self.inbound.get_mut(&token) else {
                continue;
            };
            let ctx = Ctx {
                config: &self.config,
                known_peers: &self.peers.links,
                delivery: &mut self.delivery,
                identities: &mut self.peers.identities,
                fresh_nonce: &mut auth::fresh_nonce,
            };
            if conn.can_resume(&ctx) {
                conn.resume(now);
                self.service_inbound(token);
            } else {
                self.paused.insert(token);
            }
        }
    }

    fn sweep_if_due(&mut self) {
        let now = Instant::now();
        if !self.peers.sweep_due(&self.config, now) {
            return;
        }
        if std::mem::take(&mut self.accept_pending) {
            self.accept_all();
        }
        let stalled: Vec<(Token, String)> = self
            .inbound
            .iter()
            .filter_map(|(&token, conn)| Some((token, conn.stall_reason(now, &self.config)?)))
            .collect();
        for (token, why) in stalled {
            bump(&self.delivery.stats.connections_stalled, 1);
            self.close_inbound(token, Close::Protocol(why));
        }
        let (peers, mut cx) = peer_cx!(self);
        peers.sweep(&mut cx, now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NetConfig, NetEvent, Network};
    use rcraft_wire::{LogIndex, Message, MessageBody, NodeId, Term};
    use std::collections::BTreeMap;
    use std::net::{SocketAddr, TcpListener};
    use std::time::{Duration, Instant};

    fn config(id: u64, listen: SocketAddr, peer: (u64, SocketAddr)) -> NetConfig {
        let peers = BTreeMap::from([(NodeId(peer.0), peer.1)]);
        let mut config = NetConfig::new(NodeId(id), 7, listen, peers);
        // Far longer than the test waits: only the reset can make the link dial again.
        config.reconnect_backoff_min = Duration::from_secs(60);
        config.reconnect_backoff_max = Duration::from_secs(60);
        config
    }

    fn heartbeat(n: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex(n),
                read_context: n,
            },
        }
    }

    #[test]
    fn a_peer_that_comes_back_is_dialled_at_once_despite_the_back_off() {
        let listener_a = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr_a = listener_a.local_addr().unwrap();
        let addr_b = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(); // Closed again: B is down when A starts.
        let (a_tx, _a_events) = crossbeam_channel::bounded(64);
        let a = Network::spawn_on(listener_a, config(1, addr_a, (2, addr_b)), a_tx).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // A's dial at start is refused; its next dial is a minute away.
        while a.stats().peer_dropped_link_down == 0 {
            assert!(Instant::now() < deadline, "the link never went down");
            a.sender().send_peer(heartbeat(0));
            std::thread::sleep(Duration::from_millis(5));
        }

        let listener_b = TcpListener::bind(addr_b).expect("rebind B's port");
        let (b_tx, b_events) = crossbeam_channel::bounded(64);
        let b = Network::spawn_on(listener_b, config(2, addr_b, (1, addr_a)), b_tx).unwrap();
        // B dials A when it starts; A then dials B back without waiting out its back-off.
        let mut n = 1;
        let received = loop {
            assert!(Instant::now() < deadline, "A never dialled B again");
            a.sender().send_peer(heartbeat(n));
            n += 1;
            if let Ok(event) = b_events.recv_timeout(Duration::from_millis(20)) {
                break event;
            }
        };
        assert!(matches!(received, NetEvent::Peer(m) if m.from == NodeId(1)));
        a.shutdown();
        b.shutdown();
    }
}
