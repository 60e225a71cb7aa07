//! Byte streams between the nodes, in the runs that have them ([`WIRE_RUNS_PER_MILLE`]): each
//! node's network is the network thread's own connection logic
//! (`rcraft::node::testing::SimPeerNet`: the peer links and accepted connections of
//! `src/node/net/`, over in-memory streams), so a message goes out as the bytes the node's
//! encoder and link write (handshake first on a new connection, with the cluster secret's
//! challenge and proofs in some runs) and comes in through the receiver's handshake checks,
//! frame decoder and message checks. The network thread's peer handler runs as on a real node:
//! it dials every peer at start, dials back at once a peer that dialled it, and its timers run
//! on sim time (the handshakes of those dials are carried like answers, delayed and never
//! lost); in some runs the handshake answer's timeout is shorter than a connection's stall,
//! so that the timer fires. The simulator only carries the bytes: in order per
//! connection and direction, cut at random points into pieces that arrive at different times
//! (a frame split across reads, several frames in one).
//!
//! A connection is TCP-like: it neither loses, duplicates nor reorders bytes; instead, where
//! the message-level network loses a message, the connection breaks (that message and
//! whatever else was in flight on it are lost, both ends close, and the link dials again after
//! its back-off, with a fresh handshake), and so it does when bytes would cross a cut link or
//! reach a crashed node. A node's crash closes every connection it had. Bytes any node's code
//! refuses (a handshake or frame that does not check out) fail the seed: every sender here is
//! honest, so a refusal is a bug of the encoder, the decoder or the handshake.
//!
//! A connection is slow by the clock, not by the message (SIM_FINDINGS 47): the network's
//! "very slow" tail becomes stalls of each connection's direction, drawn over time (on average
//! one every `100 s / slow_per_mille`, each lasting up to `slow_delay_max_ms`); bytes sent into
//! a stall arrive when it ends. Drawn per message, as the message-level network does, a busy
//! connection (a leader's) would stall in proportion to what it carries while the followers'
//! nearly idle links to each other almost never did, and the head-of-line blocking made every
//! busy leader look like one with slow links to the gray-failure rule.
//!
//! Owned by one world; the draws come from a generator of its own, so the runs without byte
//! streams keep their histories.

use crate::checker::Verdict;
use crate::client_wire::{ClientWire, ClientWireCounts};
use crate::params::{SLOW_LINKS_EXTRA_MS, WIRE_RUNS_PER_MILLE, WIRE_SECRET_PER_MILLE};
use crate::replica::SimCore;
use crate::rng::SimRng;
use crate::world::{Event, World};
use rcraft::node::testing::{SimNetSettings, SimPeerNet, SimSend};
use rcraft::wire::{Message, NodeId};
use std::collections::BTreeMap;

/// Cluster id in every simulated handshake.
const CLUSTER_ID: u64 = 0x51_3C1A;

/// Share of the runs with byte streams whose nodes allow a handshake answer only a short
/// time (one of [`SHORT_STALL_TIMEOUTS_MS`], below the longest connection stall), so that
/// the network thread's handshake timer fires; the others keep the node's default.
const SHORT_STALL_PER_MILLE: u64 = 250;
const SHORT_STALL_TIMEOUTS_MS: [u64; 2] = [150, 300];

/// What the byte streams did in a run (or in all runs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WireCounts {
    /// Runs with byte streams.
    pub(crate) runs: u64,
    /// Bytes carried.
    pub(crate) bytes: u64,
    /// Pieces the bytes arrived in.
    pub(crate) pieces: u64,
    /// Connections dialled.
    pub(crate) connections: u64,
    /// Connections broken by the network (loss, a cut link, a crash).
    pub(crate) breaks: u64,
    /// Messages a node's link dropped (down and backing off).
    pub(crate) dropped: u64,
    /// Links torn down by the network thread's timer for a late handshake answer.
    pub(crate) timeouts: u64,
    /// Accepted connections the network thread's sweep closed for stalling (their
    /// handshake, or a client's request frame, incomplete past the stall timeout).
    pub(crate) stalled: u64,
    /// What the client connections did (`client_wire.rs`).
    pub(crate) clients: ClientWireCounts,
}

impl WireCounts {
    pub(crate) fn add(&mut self, other: &WireCounts) {
        self.runs += other.runs;
        self.bytes += other.bytes;
        self.pieces += other.pieces;
        self.connections += other.connections;
        self.breaks += other.breaks;
        self.dropped += other.dropped;
        self.timeouts += other.timeouts;
        self.stalled += other.stalled;
        self.clients.add(&other.clients);
    }
}

/// The byte streams of one world.
pub(crate) struct Wire {
    pub(crate) rng: SimRng,
    /// Each node's network, while it is up.
    pub(crate) nets: Vec<Option<SimPeerNet>>,
    /// The cluster secret, in runs that authenticate peers.
    secret: Option<Vec<u8>>,
    /// How long a node's link waits for a handshake answer.
    stall_timeout_ms: u64,
    /// Latest arrival scheduled per (dialler, acceptor, toward the acceptor), so that the
    /// bytes of each direction arrive in order.
    last_arrival: BTreeMap<(usize, usize, bool), u64>,
    /// The clients' connections to the nodes (`client_wire.rs`).
    pub(crate) clients: ClientWire,
    /// Newest connection token seen per (dialler, acceptor).
    newest_conn: BTreeMap<(usize, usize), u64>,
    /// The open connection per (dialler, acceptor); the bytes of any other are dropped on
    /// arrival, as a closed socket's (a restarted node never reads its earlier life's).
    open: BTreeMap<(usize, usize), u64>,
    /// Per (dialler, acceptor, toward the acceptor): the next stall of that direction, as
    /// (start, end) in sim milliseconds.
    stalls: BTreeMap<(usize, usize, bool), (u64, u64)>,
    /// Counts so far; see [`Wire::counts`] for the whole.
    counts: WireCounts,
}

impl Wire {
    /// The byte streams of `seed`'s world, if its run has them.
    pub(crate) fn for_seed(seed: u64, nodes: usize, low_caps: bool) -> Option<Wire> {
        let mut rng = SimRng::new(seed ^ 0x5A0B_5707_0000_0003);
        if !rng.chance(WIRE_RUNS_PER_MILLE) {
            return None;
        }
        let secret = rng
            .chance(WIRE_SECRET_PER_MILLE)
            .then(|| format!("the simulated cluster's secret {seed}").into_bytes());
        let default_stall_ms = rcraft::node::net::STALL_TIMEOUT.as_millis() as u64;
        let stall_timeout_ms = match rng.chance(SHORT_STALL_PER_MILLE) {
            true => rng.pick(&SHORT_STALL_TIMEOUTS_MS),
            false => default_stall_ms,
        };
        let clients = ClientWire::new(&mut rng, crate::params::CLIENTS, nodes, low_caps);
        Some(Wire {
            clients,
            rng,
            nets: (0..nodes).map(|_| None).collect(),
            secret,
            stall_timeout_ms,
            last_arrival: BTreeMap::new(),
            newest_conn: BTreeMap::new(),
            open: BTreeMap::new(),
            stalls: BTreeMap::new(),
            counts: WireCounts {
                runs: 1,
                ..WireCounts::default()
            },
        })
    }

    /// What the byte streams did so far, the timeouts of the networks still up included.
    pub(crate) fn counts(&self) -> WireCounts {
        let mut counts = self.counts;
        counts.clients = self.clients.counts;
        counts.timeouts += self.nets.iter().flatten().map(net_timeouts).sum::<u64>();
        counts.stalled += (self.nets.iter().flatten())
            .map(|net| net.stats().connections_stalled)
            .sum::<u64>();
        counts
    }

    /// A short description for failure reports.
    pub(crate) fn describe(&self) -> String {
        format!(
            "byte streams (secret={}, stall timeout {} ms, {})",
            self.secret.is_some(),
            self.stall_timeout_ms,
            self.clients.describe()
        )
    }
}

/// Links `net` tore down for a late handshake answer: its refusals count them, but for the
/// accepted connections its sweep closed and the clients the cap on all connections refused
/// (any other refusal fails the seed).
fn net_timeouts(net: &SimPeerNet) -> u64 {
    let stats = net.stats();
    stats.connections_refused - stats.connections_stalled - net.clients_refused_overall()
}

impl<C: SimCore> World<C> {
    /// `node` starts (or restarts): its network comes up with every link down.
    pub(crate) fn wire_start(&mut self, node: usize) -> Verdict {
        let seed = self.seed;
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let incarnation = self.nodes[node].incarnation;
        let Some(wire) = self.wire.as_mut() else {
            return Ok(());
        };
        let id = ids[node];
        let settings = SimNetSettings {
            node_id: id,
            cluster_id: CLUSTER_ID,
            // One data dir for every life of the node.
            incarnation: 0x1D_0000 + node as u64,
            peers: ids.iter().copied().filter(|&p| p != id).collect(),
            secret: wire.secret.clone(),
            nonce_seed: seed ^ ((node as u64) << 48) ^ incarnation,
            first_token: (incarnation + 1) << 32,
            stall_timeout_ms: wire.stall_timeout_ms,
            connections_per_address_max: wire.clients.per_address_max,
            connections_max: wire.clients.connections_max,
            client_pending_out_bytes_max: wire.clients.pending_out_max,
        };
        let mut net = SimPeerNet::new(settings).map_err(|e| format!("node {id}: network: {e}"))?;
        // The thread dials every peer when it starts.
        net.start(self.now);
        wire.nets[node] = Some(net);
        self.carry_handshakes(node);
        Ok(())
    }

    /// Carries what `node`'s links wrote besides the messages handed to `wire_send`: the
    /// handshakes of the connections its network thread dialled on its own (at start, or
    /// back to a peer that dialled it). Like answers, they are not lost: only delayed.
    fn carry_handshakes(&mut self, node: usize) {
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[node].as_mut() else {
            return;
        };
        for (peer, conn, bytes) in net.take_all_sent() {
            let Some(to) = self.index_of(peer) else {
                continue;
            };
            let delay = self.answer_delay();
            self.carry(node, to, conn, true, bytes, delay);
        }
    }

    /// `node` crashed: its network is gone and every connection it had breaks.
    pub(crate) fn wire_crash(&mut self, node: usize) {
        let now = self.now;
        let id = self.nodes[node].id;
        if self.wire.is_none() {
            return;
        }
        self.client_wire_crash(node);
        let wire = self.wire.as_mut().expect("checked above");
        if let Some(net) = wire.nets[node].take() {
            wire.counts.timeouts += net_timeouts(&net);
            wire.counts.stalled += net.stats().connections_stalled;
        }
        wire.open
            .retain(|&(dialler, acceptor), _| dialler != node && acceptor != node);
        for net in wire.nets.iter_mut().flatten() {
            net.link_broken(now, id, None);
            net.accepted_broken(now, id, None);
        }
    }

    /// Sends `msg` from `node` over its link, when the run has byte streams; false when it
    /// has not (the message then travels as a value). `delays` is the message-level
    /// network's verdict: none breaks the connection, else the first is the bytes' delay.
    pub(crate) fn wire_send(&mut self, node: usize, msg: &Message, delays: &[u64]) -> Verdict {
        let verdict = self.wire_send_bytes(node, msg, delays);
        self.break_stalled(node);
        verdict
    }

    /// The accepted connections `node`'s sweep closed for stalling break at their diallers
    /// too (a closed socket's other end learns it), so a dialler's link dials anew rather
    /// than write into a connection nobody reads.
    fn break_stalled(&mut self, acceptor: usize) {
        let now = self.now;
        let acceptor_id = self.nodes[acceptor].id;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[acceptor].as_mut() else {
            return;
        };
        for (peer, conn) in net.take_stalled() {
            let Some(dialler) = self.index_of(peer) else {
                continue;
            };
            let wire = self.wire.as_mut().expect("a run with byte streams");
            if wire.open.get(&(dialler, acceptor)) == Some(&conn) {
                wire.open.remove(&(dialler, acceptor));
            }
            if let Some(net) = wire.nets[dialler].as_mut() {
                net.link_broken(now, acceptor_id, Some(conn));
            }
        }
    }

    fn wire_send_bytes(&mut self, node: usize, msg: &Message, delays: &[u64]) -> Verdict {
        let now = self.now;
        let Some(to) = self.index_of(msg.to) else {
            return Err(format!("message to unknown node {}: {msg:?}", msg.to));
        };
        let late = self.slow_links_on && self.slow_links_node == Some(node);
        let extra = if late { SLOW_LINKS_EXTRA_MS } else { 0 };
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[node].as_mut() else {
            return Err(format!("node {node} sends while down: {msg:?}"));
        };
        if net.send(now, msg) == SimSend::Dropped {
            wire.counts.dropped += 1;
            if self.tracing() {
                self.note(format!("  link {node}->{to} is down: message dropped"));
            }
            return Ok(());
        }
        let Some((conn, bytes)) = net.take_sent(msg.to) else {
            return Ok(());
        };
        let Some(&delay) = delays.first() else {
            if self.tracing() {
                self.note(format!("  connection {conn} {node}->{to} breaks"));
            }
            self.wire_break(node, to, conn);
            return Ok(());
        };
        // A very slow message is a stall of the connection instead, by the clock (`carry`).
        let delay = match delay > self.network.profile().delay_max_ms {
            true => self.answer_delay(),
            false => delay,
        };
        self.carry(node, to, conn, true, bytes, delay + extra);
        Ok(())
    }

    /// Schedules `bytes` of connection `conn` (dialled by `dialler` to `acceptor`) to arrive
    /// at its other end, in one to three pieces, after the bytes sent before them.
    fn carry(
        &mut self,
        dialler: usize,
        acceptor: usize,
        conn: u64,
        toward_acceptor: bool,
        bytes: Vec<u8>,
        delay: u64,
    ) {
        let now = self.now;
        let stalled_until = self.stalled_until(dialler, acceptor, toward_acceptor);
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let newest = wire.newest_conn.entry((dialler, acceptor)).or_insert(0);
        if *newest < conn {
            *newest = conn;
            wire.open.insert((dialler, acceptor), conn);
            wire.counts.connections += 1;
        }
        wire.counts.bytes += bytes.len() as u64;
        let last = wire
            .last_arrival
            .entry((dialler, acceptor, toward_acceptor))
            .or_insert(0);
        // In order after the bytes sent before; a piece may lag the one before it by a
        // millisecond (a read in between), but only while nothing queues ahead: a gap per
        // piece behind a backlog would cap the link at a few frames per millisecond and
        // grow the queue without bound under a burst.
        let due = (now + delay).max(stalled_until);
        let mut at = due.max(*last);
        let pieces = wire.rng.between(1, 3).min(bytes.len() as u64).max(1);
        let mut cuts: Vec<usize> = (1..pieces)
            .map(|_| wire.rng.between(1, bytes.len() as u64 - 1) as usize)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(bytes.len());
        let mut start = 0;
        let mut scheduled = Vec::new();
        for end in cuts {
            scheduled.push((at, bytes[start..end].to_vec()));
            start = end;
            if at <= due {
                at += wire.rng.between(0, 1);
            }
        }
        wire.counts.pieces += scheduled.len() as u64;
        *last = scheduled.last().map_or(*last, |(at, _)| *at);
        for (at, piece) in scheduled {
            self.schedule(
                at,
                Event::Bytes {
                    dialler,
                    acceptor,
                    conn,
                    toward_acceptor,
                    bytes: piece,
                },
            );
        }
    }

    /// The network broke connection `conn` from `dialler` to `acceptor`: both ends close.
    fn wire_break(&mut self, dialler: usize, acceptor: usize, conn: u64) {
        let now = self.now;
        let (dialler_id, acceptor_id) = (self.nodes[dialler].id, self.nodes[acceptor].id);
        let wire = self.wire.as_mut().expect("a run with byte streams");
        wire.counts.breaks += 1;
        if wire.open.get(&(dialler, acceptor)) == Some(&conn) {
            wire.open.remove(&(dialler, acceptor));
        }
        if let Some(net) = wire.nets[dialler].as_mut() {
            net.link_broken(now, acceptor_id, Some(conn));
        }
        if let Some(net) = wire.nets[acceptor].as_mut() {
            net.accepted_broken(now, dialler_id, Some(conn));
        }
    }

    /// A piece of connection `conn` arrives: decoded by the receiving node's own code; the
    /// messages it completes are stepped as delivered ones are, and the answers it causes go
    /// back.
    pub(crate) fn on_bytes(
        &mut self,
        dialler: usize,
        acceptor: usize,
        conn: u64,
        toward_acceptor: bool,
        bytes: Vec<u8>,
    ) -> Verdict {
        let verdict = self.receive_bytes(dialler, acceptor, conn, toward_acceptor, bytes);
        self.break_stalled(if toward_acceptor { acceptor } else { dialler });
        verdict
    }

    fn receive_bytes(
        &mut self,
        dialler: usize,
        acceptor: usize,
        conn: u64,
        toward_acceptor: bool,
        bytes: Vec<u8>,
    ) -> Verdict {
        let now = self.now;
        let (dialler_id, acceptor_id) = (self.nodes[dialler].id, self.nodes[acceptor].id);
        let (from, to) = match toward_acceptor {
            true => (dialler_id, acceptor_id),
            false => (acceptor_id, dialler_id),
        };
        let receiver = if toward_acceptor { acceptor } else { dialler };
        let wire = self.wire.as_mut().expect("a run with byte streams");
        if wire.open.get(&(dialler, acceptor)) != Some(&conn) {
            return Ok(());
        }
        let down = wire.nets[receiver].is_none();
        if self.network.is_cut(from, to) || down {
            self.wire_break(dialler, acceptor, conn);
            return Ok(());
        }
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let net = wire.nets[receiver].as_mut().expect("checked above");
        if toward_acceptor {
            let messages = net.receive(now, dialler_id, conn, &bytes).map_err(|why| {
                format!(
                    "network: node {acceptor} closed connection {conn} from node {dialler}: {why}"
                )
            })?;
            let answer = net.take_answers(dialler_id);
            for message in messages {
                if self.nodes[acceptor].core.is_some() {
                    self.deliver_message(acceptor, message)?;
                }
            }
            if let Some((conn, bytes)) = answer {
                let delay = self.answer_delay();
                self.carry(dialler, acceptor, conn, false, bytes, delay);
            }
            // The acceptor dials back a peer that dialled it, if its own link was down.
            self.carry_handshakes(acceptor);
        } else {
            net.receive_answer(now, acceptor_id, conn, &bytes)
                .map_err(|why| {
                    format!(
                        "network: node {dialler} closed its connection {conn} to node {acceptor}: {why}"
                    )
                })?;
            // What waited for the answer (with a secret: our proof, then the queued frames).
            if let Some((conn, bytes)) = net.take_sent(acceptor_id) {
                let delay = self.answer_delay();
                self.carry(dialler, acceptor, conn, true, bytes, delay);
            }
        }
        Ok(())
    }

    /// When the stall that the direction (`dialler` to `acceptor`, or back) is in now ends, or
    /// now when it is in none: stalls come by the clock, whatever the connection carries
    /// (see the module header), and not while the network is calm.
    fn stalled_until(&mut self, dialler: usize, acceptor: usize, toward_acceptor: bool) -> u64 {
        let now = self.now;
        let p = self.network.profile();
        let (per_mille, min, max) = (p.slow_per_mille, p.delay_max_ms, p.slow_delay_max_ms);
        if per_mille == 0 || self.network.is_calm() {
            return now;
        }
        let mean_gap_ms = 100_000 / per_mille;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let rng = &mut wire.rng;
        let key = (dialler, acceptor, toward_acceptor);
        let stall = wire.stalls.entry(key).or_insert_with(|| {
            let start = now + rng.between(0, 2 * mean_gap_ms);
            (start, start + rng.between(min, max))
        });
        while stall.1 <= now {
            let start = stall.1 + rng.between(0, 2 * mean_gap_ms);
            *stall = (start, start + rng.between(min, max));
        }
        match stall.0 <= now {
            true => stall.1,
            false => now,
        }
    }

    /// The delay of bytes sent in answer to bytes (no loss is drawn for them).
    fn answer_delay(&mut self) -> u64 {
        let p = &self.params.network;
        let (min, max) = (p.delay_min_ms, p.delay_max_ms);
        let wire = self.wire.as_mut().expect("a run with byte streams");
        wire.rng.between(min, max)
    }
}
