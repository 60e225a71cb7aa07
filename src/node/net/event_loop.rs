//! The network thread's event loop: one mio `Poll` over the listener, the waker, every
//! accepted connection and every outbound peer link.
//!
//! Owned entirely by the network thread. One iteration: wait for readiness (or a timer),
//! service ready sockets (edge-triggered: read until `WouldBlock` or a short read, write
//! until `WouldBlock`), drain the command channel encoding frames into per-connection
//! buffers, write every buffer that got new frames once (coalescing many frames into one
//! `write`), retry held-back client events and resume paused clients, then check timeouts. Tokens are never reused, so a stale event
//! or a reply for a closed connection can never reach a newer one.

use super::accepted::{AcceptCx, AcceptIo, AcceptNet};
use super::auth;
use super::auth::Nonce;
use super::delivery::Delivery;
use super::inbound::Inbound;
use super::peer::PeerConn;
use super::peers::{Dialled, PeerCx, PeerIo, PeerNet};
use super::stream::Stream;
use super::{
    BACKLOG_RETRY_INTERVAL, ClientConnId, NetCommand, NetConfig, NetStats, POLL_EVENTS_CAPACITY,
    READ_CHUNK_BYTES, bump,
};
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use rcraft_wire::NodeId;
use std::io;
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
    /// The accepted connections, their limits, back-pressure and stall sweep
    /// (`accepted.rs`), driven with real sockets.
    accepted: AcceptNet,
    /// The outbound peer links and their timers (`peers.rs`), driven with real sockets.
    peers: PeerNet,
    /// Next token to hand out; tokens are never reused.
    next_token: usize,
    read_buf: Box<[u8]>,
    /// Set when `accept` failed for lack of resources; retried at the next sweep.
    accept_pending: bool,
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

/// The event loop's side of the accepted-connection handler's I/O.
struct MioAcceptIo<'a> {
    node: NodeId,
    registry: &'a Registry,
}

impl AcceptIo<Stream> for MioAcceptIo<'_> {
    fn fresh_nonce(&mut self) -> io::Result<Nonce> {
        auth::fresh_nonce()
    }

    fn release(&mut self, conn: &mut Inbound) {
        if let Err(e) = self.registry.deregister(conn.stream.tcp_mut()) {
            log::debug!("node {}: deregister {}: {e}", self.node, conn.describe());
        }
    }
}

/// Splits the loop into the accepted-connection handler and what a handler call needs
/// (disjoint fields).
macro_rules! accept_cx {
    ($self:ident) => {
        (
            &mut $self.accepted,
            AcceptCx {
                config: &$self.config,
                delivery: &mut $self.delivery,
                peers: &mut $self.peers,
                read_buf: &mut $self.read_buf,
                io: MioAcceptIo {
                    node: $self.config.node_id,
                    registry: $self.poll.registry(),
                },
            },
        )
    };
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
            accepted: AcceptNet::new(),
            peers: PeerNet::new(&parts.config, now),
            next_token: FIRST_CONNECTION_TOKEN,
            read_buf: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            accept_pending: false,
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
            token if self.accepted.contains(token) => self.service_inbound(token),
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
        if !(self.accepted).admit(&self.config, &self.delivery.stats, addr) {
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
        self.accepted.insert(token, conn);
        // Edge-triggered: bytes may already be waiting.
        self.service_inbound(token);
    }

    fn service_inbound(&mut self, token: Token) {
        let (accepted, mut cx) = accept_cx!(self);
        let serviced = accepted.service(&mut cx, token, Instant::now());
        if let Some(peer) = serviced.peer_up {
            let (peers, mut cx) = peer_cx!(self);
            peers.peer_dialled_us(&mut cx, peer, Instant::now());
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
            NetCommand::Reply { conn, response } => {
                let token = Token(conn.0 as usize);
                let stats = &self.delivery.stats;
                (self.accepted).queue_reply(&self.config, stats, token, &response);
            }
            NetCommand::Replies(replies) => {
                let stats = &self.delivery.stats;
                for (conn, response) in &replies {
                    let token = Token(conn.0 as usize);
                    (self.accepted).queue_reply(&self.config, stats, token, response);
                }
            }
            NetCommand::CloseClient(conn) => {
                let (accepted, mut cx) = accept_cx!(self);
                accepted.close_client(&mut cx, Token(conn.0 as usize), Instant::now());
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

    fn flush_dirty(&mut self) {
        let now = Instant::now();
        let (peers, mut cx) = peer_cx!(self);
        peers.flush(&mut cx, now);
        let (accepted, mut cx) = accept_cx!(self);
        accepted.flush(&mut cx, now);
    }

    fn resume_paused(&mut self) {
        let now = Instant::now();
        let (accepted, mut cx) = accept_cx!(self);
        for peer in accepted.resume_paused(&mut cx, now) {
            let (peers, mut cx) = peer_cx!(self);
            peers.peer_dialled_us(&mut cx, peer, now);
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
        let (accepted, mut cx) = accept_cx!(self);
        accepted.sweep(&mut cx, now);
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
