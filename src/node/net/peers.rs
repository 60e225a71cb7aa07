//! The peer side of the network thread as a handler without I/O: which outbound links exist
//! and to which address, when each dials (at start, when a message waits and the back-off
//! allowed it, at once when the peer dialled us), the re-dial back-off, the connect and
//! handshake timers, queueing and flushing frames, and what a failed link logs and counts.
//!
//! It opens no socket, reads no clock and owns no channel: it is fed the time and events
//! (a message to send, a connection became ready, a peer dialled us, a peer's address
//! changed, the sweep is due) and opens, writes and releases connections through the
//! [`PeerIo`] its driver hands it. Two drivers: the mio event loop (`event_loop.rs`: real
//! sockets registered with its `Poll`) and the simulator's `SimPeerNet` (`sim_link.rs`:
//! in-memory streams, simulated time), so the simulator runs this code, timers included,
//! rather than a restatement of it. Per-connection work (handshake, authentication,
//! framing) is [`PeerLink`]'s.
//!
//! Owned by the network thread. Invariants: `tokens` maps exactly the tokens of the links'
//! current connections to their peers; `links` never holds this node; the sweep deadline
//! is never more than [`sweep_interval`] ahead.

use super::identity::PeerIdentities;
use super::inbound::{Close, REFUSAL_LOG_INTERVAL};
use super::peer::{PeerConn, PeerLink};
use super::stream::{ByteStream, Stream};
use super::{NetConfig, NetStats, SWEEP_INTERVAL_MAX, bump};
use crate::node::net::auth::Nonce;
use mio::Token;
use rcraft_wire::{Message, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A connection the driver opened for a link.
pub(super) struct Dialled<S> {
    /// Names the connection in later readiness events; never reused.
    pub(super) token: Token,
    pub(super) stream: S,
    /// The transport is up already (an in-memory stream); else the driver reports
    /// readiness and the stream tells when its connect completed
    /// ([`ByteStream::finish_connect`]).
    pub(super) connected: bool,
}

/// What the handler asks of its driver: the only I/O on the peer side.
pub(super) trait PeerIo<S: ByteStream> {
    /// Starts a connection to `peer` at `addr`.
    fn dial(&mut self, peer: NodeId, addr: SocketAddr) -> io::Result<Dialled<S>>;
    /// A fresh nonce for an authenticating handshake.
    fn fresh_nonce(&mut self) -> io::Result<Nonce>;
    /// The link to `peer` dropped `conn`: stop watching it (it is closed when dropped).
    fn release(&mut self, peer: NodeId, conn: &mut PeerConn<S>);
}

/// What a handler call needs besides the handler: shared configuration and counters, the
/// read buffer, and the driver's I/O.
pub(super) struct PeerCx<'a, I> {
    pub(super) config: &'a NetConfig,
    pub(super) stats: &'a NetStats,
    pub(super) read_buf: &'a mut [u8],
    pub(super) io: I,
}

/// Time between sweeps (timeouts of links and inbound connections).
pub(super) fn sweep_interval(config: &NetConfig) -> Duration {
    SWEEP_INTERVAL_MAX
        .min(config.stall_timeout / 2)
        .min(config.connect_timeout / 2)
}

/// The outbound links of one node; see the module header.
pub(super) struct PeerNet<S: ByteStream = Stream> {
    /// One link per known peer.
    pub(super) links: BTreeMap<NodeId, PeerLink<S>>,
    /// The cluster id and data-dir incarnations this node knows (`identity.rs`); shared
    /// with the inbound connections' checks.
    pub(super) identities: PeerIdentities,
    /// The peer of each current connection's token.
    tokens: BTreeMap<Token, NodeId>,
    /// Links with newly queued frames (or a new connection with its handshake to write).
    dirty: BTreeSet<NodeId>,
    /// The last refusal logged as a warning per peer, and when (`Close::Refused`).
    refusals_logged: BTreeMap<NodeId, (String, Instant)>,
    next_sweep: Instant,
}

impl<S: ByteStream> PeerNet<S> {
    /// Every configured peer's link, down, free to dial at `now`.
    pub(super) fn new(config: &NetConfig, now: Instant) -> PeerNet<S> {
        PeerNet {
            links: (config.peers.iter())
                .map(|(&id, &addr)| (id, PeerLink::new(id, addr, config, now)))
                .collect(),
            identities: PeerIdentities::new(config),
            tokens: BTreeMap::new(),
            dirty: BTreeSet::new(),
            refusals_logged: BTreeMap::new(),
            next_sweep: now,
        }
    }

    /// The peer whose link owns connection `token`.
    pub(super) fn peer_of(&self, token: Token) -> Option<NodeId> {
        self.tokens.get(&token).copied()
    }

    /// The thread starts: dials every peer once, so they learn at once that this node is up
    /// (and answer by dialling back, see [`PeerNet::peer_dialled_us`]) instead of when it
    /// first has something to send.
    pub(super) fn start<I: PeerIo<S>>(&mut self, cx: &mut PeerCx<'_, I>, now: Instant) {
        let ids: Vec<NodeId> = (self.links.iter())
            .filter(|(_, link)| link.may_dial(now))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.dial(cx, id, now);
        }
    }

    /// Queues `message` for its `to`, dialling first when the link is down and its back-off
    /// has passed; written at the next [`PeerNet::flush`]. Returns whether it was queued (a
    /// down link, a full queue or an unknown peer drops it, counted: Raft retransmits).
    pub(super) fn send<I: PeerIo<S>>(
        &mut self,
        cx: &mut PeerCx<'_, I>,
        message: &Message,
        now: Instant,
    ) -> bool {
        let id = message.to;
        let Some(link) = self.links.get(&id) else {
            log::debug!(
                "node {}: no address for node {id}; dropping",
                cx.config.node_id
            );
            bump(&cx.stats.peer_dropped_unknown, 1);
            return false;
        };
        if link.may_dial(now) {
            self.dial(cx, id, now);
        }
        let link = self.links.get_mut(&id).expect("checked above");
        let queued = link.queue(message, cx.config, cx.stats);
        if queued {
            self.dirty.insert(id);
        }
        queued
    }

    /// Writes every link with newly queued frames once (many frames in one write).
    pub(super) fn flush<I: PeerIo<S>>(&mut self, cx: &mut PeerCx<'_, I>, now: Instant) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            let flushed = link.flush();
            bump(&cx.stats.bytes_sent, link.take_written_bytes());
            match flushed {
                Ok(sent) => bump(&cx.stats.peer_frames_sent, sent as u64),
                Err(reason) => self.fail(cx, id, reason, now),
            }
        }
    }

    /// Connection `token` is ready (or has new bytes): completes its connect, reads the
    /// peer's handshake answer, writes what may go. Returns why the link failed, if it did.
    pub(super) fn on_ready<I: PeerIo<S>>(
        &mut self,
        cx: &mut PeerCx<'_, I>,
        token: Token,
        now: Instant,
    ) -> Option<String> {
        let id = self.peer_of(token)?;
        let link = self.links.get_mut(&id)?;
        let ready = link.on_ready(cx.read_buf, cx.config, cx.stats, &mut self.identities);
        bump(&cx.stats.bytes_sent, link.take_written_bytes());
        match ready {
            Ok(sent) => {
                bump(&cx.stats.peer_frames_sent, sent as u64);
                None
            }
            Err(reason) => {
                let why = reason.describe();
                self.fail(cx, id, reason, now);
                Some(why)
            }
        }
    }

    /// `peer` dialled us, so it is up: if our link to it is down, dial it now rather than
    /// when its back-off delay ends (up to `reconnect_backoff_max` after a long absence), so
    /// a restarted node hears from us, e.g. the leader, at once.
    pub(super) fn peer_dialled_us<I: PeerIo<S>>(
        &mut self,
        cx: &mut PeerCx<'_, I>,
        peer: NodeId,
        now: Instant,
    ) {
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        link.peer_is_up(cx.config, now);
        if link.may_dial(now) {
            log::debug!(
                "node {}: peer {peer} dialled us; dialling it back now",
                cx.config.node_id
            );
            self.dial(cx, peer, now);
        }
    }

    /// `id`'s address is now `addr` (`None`: it left): its link, if the address changed,
    /// is torn down and a new one made.
    pub(super) fn update_peer<I: PeerIo<S>>(
        &mut self,
        cx: &mut PeerCx<'_, I>,
        id: NodeId,
        addr: Option<SocketAddr>,
        now: Instant,
    ) {
        if id == cx.config.node_id {
            return;
        }
        if self.links.get(&id).map(|link| link.addr) == addr {
            return;
        }
        if self.links.contains_key(&id) {
            self.fail(cx, id, Close::Eof, now);
            self.links.remove(&id);
            self.dirty.remove(&id);
        }
        if let Some(addr) = addr {
            self.links
                .insert(id, PeerLink::new(id, addr, cx.config, now));
        }
        log::info!(
            "node {}: peer {id} address is now {addr:?}",
            cx.config.node_id
        );
    }

    /// True (once per interval) when the sweep is due; the driver then sweeps its own
    /// connections and calls [`PeerNet::sweep`].
    pub(super) fn sweep_due(&mut self, config: &NetConfig, now: Instant) -> bool {
        if now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + sweep_interval(config);
        true
    }

    /// When the next sweep is due.
    pub(super) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Tears down every link whose connect or handshake answer took too long.
    pub(super) fn sweep<I: PeerIo<S>>(&mut self, cx: &mut PeerCx<'_, I>, now: Instant) {
        let late: Vec<(NodeId, String)> = (self.links.iter())
            .filter_map(|(&id, link)| Some((id, link.timeout_reason(now, cx.config)?)))
            .collect();
        for (id, why) in late {
            self.fail(cx, id, Close::Protocol(why), now);
        }
    }

    /// Opens a connection for `id`'s link, our handshake queued first.
    fn dial<I: PeerIo<S>>(&mut self, cx: &mut PeerCx<'_, I>, id: NodeId, now: Instant) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        let addr = link.addr;
        let nonce = match cx.config.peer_secrets {
            Some(_) => cx.io.fresh_nonce().map(Some),
            None => Ok(None),
        };
        let dialled = nonce.and_then(|nonce| Ok((nonce, cx.io.dial(id, addr)?)));
        let (nonce, dialled) = match dialled {
            Ok(dialled) => dialled,
            Err(e) => return self.fail(cx, id, Close::Io(e), now),
        };
        let link = self.links.get_mut(&id).expect("checked above");
        link.attach(
            dialled.stream,
            dialled.token,
            nonce,
            cx.config,
            &self.identities,
            now,
        );
        self.tokens.insert(dialled.token, id);
        if dialled.connected {
            link.connected();
            // Our handshake may go out at once.
            self.dirty.insert(id);
        }
    }

    /// Tears `id`'s connection down (dropping its queue), schedules the next dial after the
    /// back-off, and logs and counts why.
    pub(super) fn fail<I: PeerIo<S>>(
        &mut self,
        cx: &mut PeerCx<'_, I>,
        id: NodeId,
        reason: Close,
        now: Instant,
    ) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let node = cx.config.node_id;
        let addr = link.addr;
        let verified = link.was_verified();
        let (conn, dropped) = link.fail(cx.config, now);
        bump(&cx.stats.peer_dropped_link_down, dropped as u64);
        match reason {
            Close::Protocol(why) => {
                bump(&cx.stats.connections_refused, 1);
                log::warn!("node {node}: closing link to peer {id} at {addr}: {why}");
            }
            Close::Refused { peer, why } => {
                bump(&cx.stats.connections_refused, 1);
                let line = format!("node {node}: closing link to peer {id} at {addr}: {why}");
                self.log_refusal(peer, line, &why, now);
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
            self.tokens.remove(&conn.token);
            cx.io.release(id, &mut conn);
        }
    }

    /// Logs `line` as a warning the first time `peer` is refused for `why`, and then at most
    /// once per [`REFUSAL_LOG_INTERVAL`]; at debug level in between.
    pub(super) fn log_refusal(&mut self, peer: NodeId, line: String, why: &str, now: Instant) {
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
}
