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
use super::delivery::Delivery;
use super::identity::PeerIdentities;
use super::inbound::{Close, Ctx, Inbound, REFUSAL_LOG_INTERVAL};
use super::peer::PeerLink;
use super::stream::Stream;
use super::{
    BACKLOG_RETRY_INTERVAL, CONNECTIONS_MAX, ClientConnId, NetCommand, NetConfig, NetEvent,
    NetStats, POLL_EVENTS_CAPACITY, READ_CHUNK_BYTES, SWEEP_INTERVAL_MAX, bump,
};
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rcraft_wire::{ClientResponse, ConnectionRole, Message, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    peers: BTreeMap<NodeId, PeerLink>,
    peer_tokens: HashMap<Token, NodeId>,
    /// Next token to hand out; tokens are never reused.
    next_token: usize,
    read_buf: Box<[u8]>,
    /// Inbound connections with newly queued responses.
    dirty_inbound: BTreeSet<Token>,
    /// Peer links with newly queued frames.
    dirty_peers: BTreeSet<NodeId>,
    /// Inbound connections paused by back-pressure.
    paused: BTreeSet<Token>,
    next_sweep: Instant,
    /// Set when `accept` failed for lack of resources; retried at the next sweep.
    accept_pending: bool,
    /// Open inbound connections per source address. Invariant: the count of `inbound`'s
    /// connections from that address; no zero entries.
    per_address: HashMap<IpAddr, usize>,
    /// The cluster id and data-dir incarnations this node knows (`identity.rs`).
    identities: PeerIdentities,
    /// The last refusal logged as a warning per peer, and when (`Close::Refused`).
    refusals_logged: BTreeMap<NodeId, (String, Instant)>,
}

impl EventLoop {
    pub(super) fn new(parts: Parts) -> io::Result<(EventLoop, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut listener = parts.listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Instant::now();
        let peers = parts
            .config
            .peers
            .iter()
            .map(|(&id, &addr)| (id, PeerLink::new(id, addr, &parts.config, now)))
            .collect();
        let event_loop = EventLoop {
            poll,
            listener,
            commands: parts.commands,
            stop: parts.stop,
            wake_pending: parts.wake_pending,
            delivery: Delivery::new(parts.events, parts.notify, parts.stats),
            inbound: HashMap::new(),
            peers,
            peer_tokens: HashMap::new(),
            next_token: FIRST_CONNECTION_TOKEN,
            read_buf: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            dirty_inbound: BTreeSet::new(),
            dirty_peers: BTreeSet::new(),
            paused: BTreeSet::new(),
            next_sweep: now,
            accept_pending: false,
            per_address: HashMap::new(),
            identities: PeerIdentities::new(&parts.config),
            refusals_logged: BTreeMap::new(),
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
        self.dial_all_peers();
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
        Some(self.next_sweep.saturating_duration_since(Instant::now()))
    }

    fn sweep_interval(&self) -> Duration {
        SWEEP_INTERVAL_MAX
            .min(self.config.stall_timeout / 2)
            .min(self.config.connect_timeout / 2)
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
                if let Some(&id) = self.peer_tokens.get(&token) {
                    self.service_peer(id);
                }
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
            known_peers: &self.peers,
            delivery: &mut self.delivery,
            identities: &mut self.identities,
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
            self.dial_now_if_down(peer);
        }
    }

    /// A peer that dials us is up: if our own link to it is down, dial it now rather than
    /// when its back-off delay ends (up to `reconnect_backoff_max` after a long absence),
    /// so a restarted node hears from us, e.g. the leader, at once.
    fn dial_now_if_down(&mut self, peer: NodeId) {
        let now = Instant::now();
        let Some(link) = self.peers.get_mut(&peer) else {
            return;
        };
        link.peer_is_up(&self.config, now);
        if link.may_dial(now) {
            log::debug!(
                "node {}: peer {peer} dialled us; dialling it back now",
                self.config.node_id
            );
            self.dial_peer(peer);
        }
    }

    /// Dials every peer once when the thread starts, so they learn at once that this node is
    /// up (and answer by dialling back, see `dial_now_if_down`) instead of when it first has
    /// something to send.
    fn dial_all_peers(&mut self) {
        let now = Instant::now();
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, link)| link.may_dial(now))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.dial_peer(id);
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
                self.log_refusal(peer, format!("node {node}: closing {what}: {why}"), &why);
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

    /// Logs `line` as a warning the first time `peer` is refused for `why`, and then at most
    /// once per [`REFUSAL_LOG_INTERVAL`]; at debug level in between.
    fn log_refusal(&mut self, peer: NodeId, line: String, why: &str) {
        let now = Instant::now();
        let repeated = self.refusals_logged.get(&peer).is_some_and(|(last, at)| {
            last == why && now.duration_since(*at) < REFUSAL_LOG_INTERVAL
        });
        if repeated {
            log::debug!("{line}");
        } else {
            log::warn!("{line}");
            self.refusals_logged.insert(peer, (why.to_string(), now));
        }
    }

    fn service_peer(&mut self, id: NodeId) {
        let Some(link) = self.peers.get_mut(&id) else {
            return;
        };
        let stats = &self.delivery.stats;
        let ready = link.on_ready(
            &mut self.read_buf,
            &self.config,
            stats,
            &mut self.identities,
        );
        bump(&stats.bytes_sent, link.take_written_bytes());
        match ready {
            Ok(sent) => bump(&stats.peer_frames_sent, sent as u64),
            Err(reason) => self.fail_peer(id, reason),
        }
    }

    fn fail_peer(&mut self, id: NodeId, reason: Close) {
        let Some(link) = self.peers.get_mut(&id) else {
            return;
        };
        let node = self.config.node_id;
        let addr = link.addr;
        let verified = link.was_verified();
        let (conn, dropped) = link.fail(&self.config, Instant::now());
        bump(&self.delivery.stats.peer_dropped_link_down, dropped as u64);
        match reason {
            Close::Protocol(why) => {
                bump(&self.delivery.stats.connections_refused, 1);
                log::warn!("node {node}: closing link to peer {id} at {addr}: {why}");
            }
            Close::Refused { peer, why } => {
                bump(&self.delivery.stats.connections_refused, 1);
                let line = format!("node {node}: closing link to peer {id} at {addr}: {why}");
                self.log_refusal(peer, line, &why);
            }
            // A peer that shuts down or restarts closes its links: not a warning. A reset
            // means the same thing (a process that exits with frames of ours unread resets
            // the connection instead of closing it), so it is told the same way.
            Close::Eof | Close::Io(_) if verified && reason.closed_by_peer() => {
                log::info!(
                    "node {node}: peer {id} at {addr} closed the link (stopping or restarting?)"
                )
            }
            Close::Io(e) if verified => {
                log::warn!("node {node}: link to peer {id} at {addr} failed: {e}")
            }
            Close::Eof => log::debug!("node {node}: peer {id} at {addr} closed before answering"),
            Close::Io(e) => log::debug!("node {node}: cannot reach peer {id} at {addr}: {e}"),
        }
        if let Some(mut conn) = conn {
            self.peer_tokens.remove(&conn.token);
            if let Err(e) = self.poll.registry().deregister(conn.stream.tcp_mut()) {
                log::debug!("node {node}: deregister link to {id}: {e}");
            }
        }
    }

    fn dial_peer(&mut self, id: NodeId) {
        let token = self.allocate_token();
        let Some(link) = self.peers.get_mut(&id) else {
            return;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        let dialled = link
            .dial(token, &self.config, &self.identities, Instant::now())
            .and_then(|stream| self.poll.registry().register(stream, token, interest));
        match dialled {
            Ok(()) => {
                self.peer_tokens.insert(token, id);
            }
            Err(e) => self.fail_peer(id, Close::Io(e)),
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
            NetCommand::Peer(message) => self.queue_peer(&message),
            NetCommand::Peers(messages) => messages.iter().for_each(|m| self.queue_peer(m)),
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
            NetCommand::UpdatePeer { id, addr } => self.update_peer(id, addr),
            NetCommand::Members(members) => {
                if let Err(e) = self.identities.forget_except(members) {
                    log::error!(
                        "node {}: cannot record that peers left the membership: {e}",
                        self.config.node_id
                    );
                }
            }
        }
    }

    fn queue_peer(&mut self, message: &Message) {
        let id = message.to;
        let Some(link) = self.peers.get(&id) else {
            log::debug!(
                "node {}: no address for node {id}; dropping",
                self.config.node_id
            );
            bump(&self.delivery.stats.peer_dropped_unknown, 1);
            return;
        };
        if link.may_dial(Instant::now()) {
            self.dial_peer(id);
        }
        let link = self.peers.get_mut(&id).expect("checked above");
        if link.queue(message, &self.config, &self.delivery.stats) {
            self.dirty_peers.insert(id);
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

    fn update_peer(&mut self, id: NodeId, addr: Option<SocketAddr>) {
        if id == self.config.node_id {
            return;
        }
        let unchanged = self.peers.get(&id).map(|link| link.addr) == addr;
        if unchanged {
            return;
        }
        if self.peers.contains_key(&id) {
            self.fail_peer(id, Close::Eof);
            self.peers.remove(&id);
        }
        if let Some(addr) = addr {
            let link = PeerLink::new(id, addr, &self.config, Instant::now());
            self.peers.insert(id, link);
        }
        log::info!(
            "node {}: peer {id} address is now {addr:?}",
            self.config.node_id
        );
    }

    fn flush_dirty(&mut self) {
        for id in std::mem::take(&mut self.dirty_peers) {
            let Some(link) = self.peers.get_mut(&id) else {
                continue;
            };
            let flushed = link.flush();
            bump(&self.delivery.stats.bytes_sent, link.take_written_bytes());
            match flushed {
                Ok(sent) => bump(&self.delivery.stats.peer_frames_sent, sent as u64),
                Err(reason) => self.fail_peer(id, reason),
            }
        }
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
                known_peers: &self.peers,
                delivery: &mut self.delivery,
                identities: &mut self.identities,
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
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.sweep_interval();
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
        let late: Vec<(NodeId, String)> = self
            .peers
            .iter()
            .filter_map(|(&id, link)| Some((id, link.timeout_reason(now, &self.config)?)))
            .collect();
        for (id, why) in late {
            self.fail_peer(id, Close::Protocol(why));
        }
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
