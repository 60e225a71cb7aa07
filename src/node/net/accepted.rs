//! The accepted side of the network thread as a handler without I/O: which connections are
//! open and from where, the cap on them and per source address, servicing one (decode,
//! deliver, write its answers), back-pressure (pausing a client connection and resuming it),
//! queued client replies, the stall sweep, how a closed connection is counted and logged,
//! and that a peer's newer connection closes its older ones.
//!
//! It opens no socket, reads no clock and owns no channel: it is fed the time and events (a
//! connection was accepted, a connection has bytes, a reply to queue, the sweep is due) and
//! releases connections through the [`AcceptIo`] its driver hands it. Two drivers: the mio
//! event loop (`event_loop.rs`: accepts and registers sockets) and the simulator's
//! `SimPeerNet` (`sim_link.rs`: in-memory streams, simulated time, and tokens of its own, since
//! diallers' tokens may collide). Per-connection work (handshake, authentication, decoding
//! and checks) is [`Inbound`]'s.
//!
//! Owned by the network thread. Invariants: `per_address` holds, for each source address,
//! the count of `conns` from it, and no zero entry; `paused` and `dirty` name only
//! connections in `conns`; at most one connection per peer has completed its handshake
//! (a newer one closes the others when its own completes).

use super::auth::Nonce;
use super::delivery::Delivery;
use super::inbound::{Close, Ctx, Inbound};
use super::peers::PeerNet;
use super::stream::{ByteStream, Stream};
use super::{NetConfig, NetEvent, NetStats, bump};
use mio::Token;
use rcraft_wire::{ClientResponse, ConnectionRole, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the handler asks of its driver: the only I/O on the accepted side.
pub(super) trait AcceptIo<S: ByteStream> {
    /// A fresh nonce for an authenticating handshake.
    fn fresh_nonce(&mut self) -> io::Result<Nonce>;
    /// `conn` is closed: stop watching it (it is closed when dropped).
    fn release(&mut self, conn: &mut Inbound<S>);
}

/// What a handler call needs besides the handler: configuration, the delivery of decoded
/// events (and the counters), the peer handler (the known peers and their identities, and
/// its refusal log), the read buffer, and the driver's I/O.
pub(super) struct AcceptCx<'a, S: ByteStream, I> {
    pub(super) config: &'a NetConfig,
    pub(super) delivery: &'a mut Delivery,
    pub(super) peers: &'a mut PeerNet<S>,
    pub(super) read_buf: &'a mut [u8],
    pub(super) io: I,
}

/// What servicing a connection did that its driver may act on.
#[derive(Default)]
pub(super) struct Serviced {
    /// The connection was closed, and why.
    pub(super) closed: Option<String>,
    /// Its handshake completed as this peer's (the driver tells the peer handler, which dials
    /// it back if its link is down).
    pub(super) peer_up: Option<NodeId>,
}

/// The accepted connections of one node; see the module header.
pub(super) struct AcceptNet<S: ByteStream = Stream> {
    conns: BTreeMap<Token, Inbound<S>>,
    /// Open connections per source address.
    per_address: BTreeMap<IpAddr, usize>,
    /// Connections with newly queued responses.
    dirty: BTreeSet<Token>,
    /// Connections paused by back-pressure.
    paused: BTreeSet<Token>,
}

impl<S: ByteStream> AcceptNet<S> {
    pub(super) fn new() -> AcceptNet<S> {
        AcceptNet {
            conns: BTreeMap::new(),
            per_address: BTreeMap::new(),
            dirty: BTreeSet::new(),
            paused: BTreeSet::new(),
        }
    }

    pub(super) fn contains(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    pub(super) fn get_mut(&mut self, token: Token) -> Option<&mut Inbound<S>> {
        self.conns.get_mut(&token)
    }

    /// Whether a connection from `addr` may be accepted: under the cap on open connections
    /// and under the cap per source address; a refusal is logged and counted.
    pub(super) fn admit(&self, config: &NetConfig, stats: &NetStats, addr: SocketAddr) -> bool {
        let node = config.node_id;
        if self.conns.len() >= config.connections_max {
            let max = config.connections_max;
            log::warn!("node {node}: refusing connection from {addr}: {max} open");
            bump(&stats.connections_refused, 1);
            return false;
        }
        let from_address = self.per_address.get(&addr.ip()).copied().unwrap_or(0);
        if from_address >= config.connections_per_address_max {
            let max = config.connections_per_address_max;
            log::warn!("node {node}: refusing connection from {addr}: {max} open from its address");
            bump(&stats.connections_refused_per_address, 1);
            return false;
        }
        true
    }

    /// Adds a connection the driver accepted (after [`AcceptNet::admit`]); the driver then
    /// services it, since bytes may already be waiting.
    pub(super) fn insert(&mut self, token: Token, conn: Inbound<S>) {
        *self.per_address.entry(conn.addr.ip()).or_insert(0) += 1;
        self.conns.insert(token, conn);
    }

    /// Connection `token` has bytes (or may decode again): decodes and delivers what it can,
    /// writes its answers; closes it if it failed; when its handshake just completed as a
    /// peer's, closes that peer's other connections (a peer dials anew only after losing its
    /// previous link, so they are stale).
    pub(super) fn service<I: AcceptIo<S>>(
        &mut self,
        cx: &mut AcceptCx<'_, S, I>,
        token: Token,
        now: Instant,
    ) -> Serviced {
        let Some(conn) = self.conns.get_mut(&token) else {
            return Serviced::default();
        };
        let role_before = conn.role;
        let io = &mut cx.io;
        let mut fresh_nonce = || io.fresh_nonce();
        let mut ctx = Ctx {
            config: cx.config,
            known_peers: &cx.peers.links,
            delivery: cx.delivery,
            identities: &mut cx.peers.identities,
            fresh_nonce: &mut fresh_nonce,
        };
        let result = (conn.pump(cx.read_buf, &mut ctx, now)).and_then(|()| conn.flush());
        bump(&cx.delivery.stats.bytes_sent, conn.take_written_bytes());
        if conn.paused && self.paused.insert(token) {
            bump(&cx.delivery.stats.client_pauses, 1);
        }
        let role_after = conn.role;
        let mut serviced = Serviced::default();
        if let Err(reason) = result {
            serviced.closed = Some(reason.describe());
            self.close(cx, token, reason, now);
        }
        if let (None, Some(ConnectionRole::Peer(peer))) = (role_before, role_after) {
            self.close_older_links_from(cx, peer, token, now);
            serviced.peer_up = Some(peer);
        }
        serviced
    }

    /// Closes every connection of `peer` but `newest` (see [`AcceptNet::service`]).
    fn close_older_links_from<I: AcceptIo<S>>(
        &mut self,
        cx: &mut AcceptCx<'_, S, I>,
        peer: NodeId,
        newest: Token,
        now: Instant,
    ) {
        let stale: Vec<Token> = (self.conns.iter())
            .filter(|&(&token, conn)| {
                token != newest && conn.role == Some(ConnectionRole::Peer(peer))
            })
            .map(|(&token, _)| token)
            .collect();
        for token in stale {
            let why = format!("superseded by a newer connection from peer {peer}");
            self.close(cx, token, Close::Io(io::Error::other(why)), now);
        }
    }

    /// Closes connection `token`, logging and counting why; a client's close is delivered.
    pub(super) fn close<I: AcceptIo<S>>(
        &mut self,
        cx: &mut AcceptCx<'_, S, I>,
        token: Token,
        reason: Close,
        now: Instant,
    ) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        self.paused.remove(&token);
        self.dirty.remove(&token);
        let ip = conn.addr.ip();
        if let Some(count) = self.per_address.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&ip);
            }
        }
        let node = cx.config.node_id;
        let stats = &cx.delivery.stats;
        let what = conn.describe();
        match reason {
            Close::Eof => log::debug!("node {node}: {what} closed"),
            Close::Io(e) => log::info!("node {node}: closing {what}: {e}"),
            Close::Refused { peer, why } => {
                bump(&stats.connections_refused, 1);
                let line = format!("node {node}: closing {what}: {why}");
                cx.peers.log_refusal(peer, line, &why, now);
            }
            Close::Protocol(why) => {
                bump(&stats.connections_refused, 1);
                log::warn!("node {node}: closing {what}: {why}");
            }
        }
        cx.io.release(&mut conn);
        if conn.role == Some(ConnectionRole::Client) {
            (stats.client_connections).fetch_sub(1, Ordering::Relaxed);
            cx.delivery.client_event(NetEvent::ClientClosed(conn.id));
        }
    }

    /// Closes client connection `token` (the consensus side asked), after writing what it
    /// can of its queued replies; a connection that is not a client's is left alone.
    pub(super) fn close_client<I: AcceptIo<S>>(
        &mut self,
        cx: &mut AcceptCx<'_, S, I>,
        token: Token,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.role == Some(ConnectionRole::Client) {
            let _ = conn.flush();
            self.close(cx, token, Close::Eof, now);
        }
    }

    /// Queues `response` on client connection `token`, written at the next
    /// [`AcceptNet::flush`]; a reply to a connection gone (or not a client's) is counted.
    pub(super) fn queue_reply(
        &mut self,
        config: &NetConfig,
        stats: &NetStats,
        token: Token,
        response: &ClientResponse,
    ) {
        match self.conns.get_mut(&token) {
            Some(conn) if conn.role == Some(ConnectionRole::Client) => {
                conn.queue_reply(response, config.frame_bytes_max);
                self.dirty.insert(token);
            }
            _ => bump(&stats.replies_to_closed, 1),
        }
    }

    /// Writes every connection with newly queued replies once.
    pub(super) fn flush<I: AcceptIo<S>>(&mut self, cx: &mut AcceptCx<'_, S, I>, now: Instant) {
        for token in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            let flushed = conn.flush();
            bump(&cx.delivery.stats.bytes_sent, conn.take_written_bytes());
            if let Err(reason) = flushed {
                self.close(cx, token, reason, now);
            }
        }
    }

    /// Resumes and services every paused connection that may decode again. Returns the
    /// peers whose handshake completed meanwhile (as [`Serviced::peer_up`]).
    pub(super) fn resume_paused<I: AcceptIo<S>>(
        &mut self,
        cx: &mut AcceptCx<'_, S, I>,
        now: Instant,
    ) -> Vec<NodeId> {
        let mut peers_up = Vec::new();
        for token in std::mem::take(&mut self.paused) {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            let mut no_nonce = || Err(io::Error::other("not decoding"));
            let ctx = Ctx {
                config: cx.config,
                known_peers: &cx.peers.links,
                delivery: cx.delivery,
                identities: &mut cx.peers.identities,
                fresh_nonce: &mut no_nonce,
            };
            if conn.can_resume(&ctx) {
                conn.resume(now);
                peers_up.extend(self.service(cx, token, now).peer_up);
            } else {
                self.paused.insert(token);
            }
        }
        peers_up
    }

    /// Closes every connection that stalled (no handshake, or a frame left incomplete, for
    /// longer than the stall timeout); counted.
    pub(super) fn sweep<I: AcceptIo<S>>(&mut self, cx: &mut AcceptCx<'_, S, I>, now: Instant) {
        let stalled: Vec<(Token, String)> = (self.conns.iter())
            .filter_map(|(&token, conn)| Some((token, conn.stall_reason(now, cx.config)?)))
            .collect();
        for (token, why) in stalled {
            bump(&cx.delivery.stats.connections_stalled, 1);
            self.close(cx, token, Close::Protocol(why), now);
        }
    }
}
