//! Client connections as bytes, in the runs with byte streams (`wire.rs`): each simulated
//! client holds at most one connection, to the node it targets, accepted by that node's own
//! network code (`rcraft::node::testing::SimPeerNet`: the network thread's `AcceptNet`, with
//! its caps on connections overall and per source address, and `Inbound`'s handshake and
//! frame decoding). A request goes out as `rcraft::Client` encodes it (its handshake,
//! `rcraft::client::handshake`, on a new connection; the request frame,
//! `rcraft::wire::encode_client_request`), reaches the consensus handler as the events the
//! network thread hands it, and every answer (a refusal or timeout from the consensus side,
//! a write's or registration's result and a read's from the apply side) is queued and written
//! by `AcceptNet`'s client-reply path; the client decodes the bytes (handshake check, frame
//! decoder, `Frame::to_client_response`) and only then learns the outcome.
//!
//! A connection breaks when its node crashes or is isolated from the cluster, where the
//! network would lose a message (while not calm), and when the node's stall sweep closes it (a request frame left incomplete past
//! the stall timeout); the client then counts whatever it had in flight on it as unknown and
//! retries on a new connection, as `rcraft::Client` does. A connection a cap refuses is an
//! answer too: the client's attempt was never sent, and it tries another node (or the same
//! one later). Clients come from a few source addresses (drawn per run), and in some runs the
//! caps are low enough that they meet them.
//!
//! Owned by one world (inside its [`Wire`](crate::wire::Wire)); draws come from the byte
//! streams' own generator.

use crate::checker::Verdict;
use crate::clients::Attempt;
use crate::history::ReadRecord;
use crate::params::{QUIET_END_MS, RUN_MS};
use crate::replica::SimCore;
use crate::rng::SimRng;
use crate::state_machine::Applied;
use crate::world::{Event, World};
use rcraft::client::{ClientOptions, check_handshake, handshake};
use rcraft::core::{ProposeError, RequestId};
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponse, ClientResponseBody, FrameDecoder,
    HANDSHAKE_BYTES, LogIndex, Term,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// Share of the byte-stream runs whose nodes allow few connections per source address, so
/// that clients sharing an address are refused: at least three quarters of them fit (the
/// liveness check needs clients that reach the leader; with one client of eight, or four, no
/// write was acknowledged within the check's bound in some seeds).
const LOW_ADDRESS_CAP_PER_MILLE: u64 = 300;
/// Share of the byte-stream runs whose nodes allow few connections overall: the peers' and
/// six or seven more, so that some of the eight clients are refused.
const LOW_OVERALL_CAP_PER_MILLE: u64 = 250;
/// Share of the byte-stream runs with a slow reader: one client takes the bytes its node
/// wrote to it only every 50-400 ms, through a socket buffer of 8-64 bytes, and the nodes
/// stop reading a client's requests at 32-192 unsent answer bytes, so that back-pressure
/// pauses its connection.
const SLOW_READER_PER_MILLE: u64 = 300;

/// A client that reads its answers late.
#[derive(Clone, Copy, Debug)]
struct SlowReader {
    client: usize,
    every_ms: u64,
    window: usize,
}

/// What the client connections did in a run (or in all runs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientWireCounts {
    /// Client connections opened (accepted by a node).
    pub(crate) connections: u64,
    /// Connections refused by the cap per source address.
    pub(crate) refused_per_address: u64,
    /// Connections refused by the cap on all connections.
    pub(crate) refused_overall: u64,
    /// Bytes carried, both ways.
    pub(crate) bytes: u64,
    /// Connections broken under their client (a crash, the network, the node's sweep).
    pub(crate) breaks: u64,
    /// Answers decoded by clients.
    pub(crate) answers: u64,
    /// Reads of a slow reader that found back-pressure had paused its connection.
    pub(crate) paused: u64,
}

impl ClientWireCounts {
    pub(crate) fn add(&mut self, other: &ClientWireCounts) {
        self.connections += other.connections;
        self.refused_per_address += other.refused_per_address;
        self.refused_overall += other.refused_overall;
        self.bytes += other.bytes;
        self.breaks += other.breaks;
        self.answers += other.answers;
        self.paused += other.paused;
    }
}

/// One client's connection.
struct ClientConn {
    /// The node it is connected to.
    node: usize,
    /// The connection's token at that node.
    conn: u64,
    /// Names this connection among every one of the run (tokens repeat across a node's
    /// lives): bytes in flight for another are ignored.
    serial: u64,
    /// The node's handshake answer, until complete.
    hello: Vec<u8>,
    /// Decodes the node's answers once the handshake is in.
    decoder: FrameDecoder,
    /// When the last bytes of each direction (toward the node, back) are due, so that
    /// each direction arrives in order.
    last_arrival: [u64; 2],
}

/// An answer the apply side gave (on its way to the client as bytes) and what the simulator
/// knows of it beyond the bytes.
enum Stashed {
    /// A write's or registration's: its attempt, entry index and what applying it did.
    Applied(Attempt, LogIndex, Applied),
    /// A read's: what it returned (the state at `applied`, these writes).
    Read(ReadRecord, LogIndex, Vec<u64>),
}

/// The client connections of one world.
pub(crate) struct ClientWire {
    /// Each client's connection, if it holds one.
    conns: Vec<Option<ClientConn>>,
    /// How many source addresses the clients share (client `c` uses address `c % n`).
    addresses: u64,
    /// The cap on connections per source address.
    pub(crate) per_address_max: usize,
    /// The cap on all accepted connections, peers' included.
    pub(crate) connections_max: usize,
    /// Unsent answer bytes at which a node stops reading a client's requests.
    pub(crate) pending_out_max: usize,
    /// The client that reads late, in some runs.
    slow_reader: Option<SlowReader>,
    next_serial: u64,
    /// Which connection (serial) each request outstanding on one was sent on.
    sent_on: BTreeMap<RequestId, u64>,
    /// The answers of the apply side in flight, by request.
    stashed: BTreeMap<RequestId, Stashed>,
    pub(crate) counts: ClientWireCounts,
}

impl ClientWire {
    /// The client connections of a byte-stream run of `clients` clients and `nodes` nodes;
    /// `low_caps` false keeps the node's caps (runs whose checks need steady client load at
    /// the leader: gray failure).
    pub(crate) fn new(
        rng: &mut SimRng,
        clients: usize,
        nodes: usize,
        low_caps: bool,
    ) -> ClientWire {
        let addresses = rng.between(1, 4);
        let sharing = (clients as u64).div_ceil(addresses);
        let low_address_cap = low_caps && sharing >= 4 && rng.chance(LOW_ADDRESS_CAP_PER_MILLE);
        let per_address_max = match low_address_cap {
            true => rng.between((3 * sharing).div_ceil(4), sharing - 1) as usize,
            false => rcraft::node::limits::CONNECTIONS_PER_ADDRESS_MAX,
        };
        let connections_max = match low_caps && rng.chance(LOW_OVERALL_CAP_PER_MILLE) {
            true => nodes - 1 + rng.between(6, 7) as usize,
            false => rcraft::node::limits::CONNECTIONS_MAX,
        };
        let slow_reader = rng.chance(SLOW_READER_PER_MILLE).then(|| SlowReader {
            client: rng.below(clients as u64) as usize,
            every_ms: rng.between(50, 400),
            window: rng.between(8, 64) as usize,
        });
        let pending_out_max = match slow_reader {
            Some(_) => rng.between(32, 192) as usize,
            None => rcraft::node::net::CLIENT_PENDING_OUT_BYTES_MAX,
        };
        ClientWire {
            pending_out_max,
            slow_reader,
            conns: (0..clients).map(|_| None).collect(),
            addresses,
            per_address_max,
            connections_max,
            next_serial: 1,
            sent_on: BTreeMap::new(),
            stashed: BTreeMap::new(),
            counts: ClientWireCounts::default(),
        }
    }

    /// A short description for failure reports.
    pub(crate) fn describe(&self) -> String {
        let slow = match self.slow_reader {
            Some(s) => format!(
                ", client {} reads every {} ms through {} B (pause at {} B)",
                s.client, s.every_ms, s.window, self.pending_out_max
            ),
            None => String::new(),
        };
        format!(
            "clients from {} addresses, at most {} connections per address and {} in all{slow}",
            self.addresses, self.per_address_max, self.connections_max
        )
    }

    /// The slow reader's socket buffer, if `client` is the slow reader.
    fn window(&self, client: usize) -> Option<usize> {
        (self.slow_reader)
            .filter(|s| s.client == client)
            .map(|s| s.window)
    }

    /// Whether `client` takes its bytes only at its own pace.
    fn reads_late(&self, client: usize) -> bool {
        self.window(client).is_some()
    }

    fn address(&self, client: usize) -> SocketAddr {
        let host = (client as u64 % self.addresses) as u8 + 1;
        SocketAddr::from((Ipv4Addr::new(10, 0, 0, host), 40_000 + client as u16))
    }
}

/// The options of a simulated client: `rcraft::Client`'s defaults (no token, any cluster).
fn options() -> ClientOptions {
    ClientOptions::default()
}

/// What a client sends: the request in `rcraft::Client`'s frame.
fn request_bytes(request_id: RequestId, body: ClientRequestBody) -> Result<Vec<u8>, String> {
    let mut frame = Vec::new();
    let request = ClientRequest { request_id, body };
    rcraft::wire::encode_client_request(&request, &mut frame)
        .map_err(|e| format!("a client cannot encode its request: {e}"))?;
    Ok(frame)
}

impl<C: SimCore> World<C> {
    /// True when clients reach the nodes over connections (runs with byte streams).
    pub(crate) fn clients_over_wire(&self) -> bool {
        self.wire.is_some()
    }

    fn client_wire(&mut self) -> &mut ClientWire {
        &mut self.wire.as_mut().expect("a run with byte streams").clients
    }

    /// Client `client` sends request `request_id` to `node` over its connection (opened now
    /// if it has none to `node`; one to another node is closed first). `Ok(false)` when a
    /// cap refused the connection: nothing was sent.
    pub(crate) fn client_send(
        &mut self,
        client: usize,
        node: usize,
        request_id: RequestId,
        body: ClientRequestBody,
    ) -> Result<bool, String> {
        let mut bytes = Vec::new();
        if !self.client_holds_connection(client, node) {
            self.client_hang_up(client);
            if !self.client_connect(client, node)? {
                return Ok(false);
            }
            bytes = handshake(&options());
        }
        bytes.extend(request_bytes(request_id, body)?);
        let serial = self.client_wire().conns[client]
            .as_ref()
            .expect("open")
            .serial;
        self.client_wire().sent_on.insert(request_id, serial);
        self.carry_client_bytes(client, true, bytes);
        Ok(true)
    }

    fn client_holds_connection(&mut self, client: usize, node: usize) -> bool {
        let wire = self.client_wire();
        wire.conns[client].as_ref().is_some_and(|c| c.node == node)
    }

    /// Opens a connection from `client` to `node`; false when a cap refused it.
    fn client_connect(&mut self, client: usize, node: usize) -> Result<bool, String> {
        let now = self.now;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let addr = wire.clients.address(client);
        let window = wire.clients.window(client);
        let Some(net) = wire.nets[node].as_mut() else {
            return Err(format!(
                "client {client} connects to node {node}, which is down"
            ));
        };
        let (before, overall_before) = (net.stats(), net.clients_refused_overall());
        let connected = net.client_connect(now, addr, window);
        let (after, overall_after) = (net.stats(), net.clients_refused_overall());
        let counts = &mut wire.clients.counts;
        counts.refused_overall += overall_after - overall_before;
        counts.refused_per_address +=
            after.connections_refused_per_address - before.connections_refused_per_address;
        let conn = match connected {
            Ok(conn) => conn,
            Err(why) => {
                if self.tracing() {
                    self.note(format!("  client {client} to node {node}: {why}"));
                }
                return Ok(false);
            }
        };
        let clients = &mut wire.clients;
        clients.counts.connections += 1;
        let serial = clients.next_serial;
        clients.next_serial += 1;
        clients.conns[client] = Some(ClientConn {
            node,
            conn,
            serial,
            hello: Vec::new(),
            decoder: FrameDecoder::new(rcraft::wire::FRAME_BYTES_MAX),
            last_arrival: [0, 0],
        });
        if let Some(slow) = clients.slow_reader.filter(|s| s.client == client) {
            let at = now + slow.every_ms;
            self.schedule(at, Event::ClientReads { client, serial });
        }
        self.break_closed_clients(node);
        Ok(true)
    }

    /// The client closes its connection (it moves to another node): the node reads its end.
    fn client_hang_up(&mut self, client: usize) {
        let now = self.now;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(conn) = wire.clients.conns[client].take() else {
            return;
        };
        if let Some(net) = wire.nets[conn.node].as_mut() {
            net.client_closed(now, conn.conn, false);
        }
        self.forget_connection(conn.serial);
    }

    /// Forgets what was outstanding on connection `serial`: its answers will never come.
    fn forget_connection(&mut self, serial: u64) {
        let wire = self.client_wire();
        let gone: Vec<RequestId> = (wire.sent_on.iter())
            .filter(|&(_, &s)| s == serial)
            .map(|(&request, _)| request)
            .collect();
        for request in gone {
            wire.sent_on.remove(&request);
            wire.stashed.remove(&request);
        }
    }

    /// `client`'s connection broke under it: both ends close, and whatever it had in flight
    /// there has an unknown outcome (it sends it again, on a new connection).
    fn client_connection_broken(&mut self, client: usize) {
        let now = self.now;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(conn) = wire.clients.conns[client].take() else {
            return;
        };
        wire.clients.counts.breaks += 1;
        if let Some(net) = wire.nets[conn.node].as_mut() {
            net.client_closed(now, conn.conn, true);
        }
        if self.tracing() {
            self.note(format!(
                "  client {client}'s connection {} to node {} breaks",
                conn.conn, conn.node
            ));
        }
        self.forget_connection(conn.serial);
        self.client_connection_lost(client);
    }

    /// `node` was cut off from the cluster (a partition isolating it): its clients, outside,
    /// are cut off from it too, so every client connection to it breaks (they connect
    /// again, to it or elsewhere).
    pub(crate) fn client_links_cut(&mut self, node: usize) {
        self.client_wire_crash(node);
    }

    /// `node` crashed: every client connection to it breaks.
    pub(crate) fn client_wire_crash(&mut self, node: usize) {
        let Some(wire) = self.wire.as_ref() else {
            return;
        };
        let broken: Vec<usize> = (0..wire.clients.conns.len())
            .filter(|&c| {
                wire.clients.conns[c]
                    .as_ref()
                    .is_some_and(|conn| conn.node == node)
            })
            .collect();
        for client in broken {
            self.client_connection_broken(client);
        }
    }

    /// The client connections `node` closed on its own (its stall sweep) break at their
    /// clients.
    pub(crate) fn break_closed_clients(&mut self, node: usize) {
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[node].as_mut() else {
            return;
        };
        for conn in net.take_closed_clients() {
            let wire = self.wire.as_ref().expect("a run with byte streams");
            let client = (0..wire.clients.conns.len()).find(|&c| {
                (wire.clients.conns[c].as_ref()).is_some_and(|k| k.node == node && k.conn == conn)
            });
            if let Some(client) = client {
                self.client_connection_broken(client);
            }
        }
    }

    /// Schedules `bytes` on `client`'s connection toward its node (or back), in one to three
    /// pieces, after the bytes sent before them; where the network would lose a message the
    /// connection breaks instead. A piece may come very late (the network's slow tail),
    /// which can leave a frame incomplete past the node's stall timeout.
    fn carry_client_bytes(&mut self, client: usize, toward_node: bool, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let now = self.now;
        let calm = self.network.is_calm();
        let p = self.network.profile().clone();
        let wire = self.wire.as_mut().expect("a run with byte streams");
        if !calm && wire.rng.chance(p.drop_per_mille) {
            self.client_connection_broken(client);
            return;
        }
        let rng = &mut wire.rng;
        let Some(conn) = wire.clients.conns[client].as_mut() else {
            return;
        };
        wire.clients.counts.bytes += bytes.len() as u64;
        let direction = usize::from(!toward_node);
        let mut at =
            (now + rng.between(p.delay_min_ms, p.delay_max_ms)).max(conn.last_arrival[direction]);
        let pieces = rng.between(1, 3).min(bytes.len() as u64).max(1);
        let mut cuts: Vec<usize> = (1..pieces)
            .map(|_| rng.between(1, bytes.len() as u64 - 1) as usize)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(bytes.len());
        let mut scheduled = Vec::new();
        let mut start = 0;
        for end in cuts {
            scheduled.push((at, bytes[start..end].to_vec()));
            start = end;
            at += match !calm && rng.chance(p.slow_per_mille) {
                true => rng.between(p.delay_max_ms, p.slow_delay_max_ms),
                false => rng.between(0, 1),
            };
        }
        conn.last_arrival[direction] = scheduled.last().map_or(at, |(at, _)| *at);
        let (node, serial) = (conn.node, conn.serial);
        for (at, piece) in scheduled {
            self.schedule(
                at,
                Event::ClientBytes {
                    client,
                    node,
                    serial,
                    toward_node,
                    bytes: piece,
                },
            );
        }
    }

    /// A piece of `client`'s connection `serial` to `node` arrives.
    pub(crate) fn on_client_bytes(
        &mut self,
        client: usize,
        node: usize,
        serial: u64,
        toward_node: bool,
        bytes: Vec<u8>,
    ) -> Verdict {
        let wire = self.client_wire();
        let Some(conn) = wire.conns[client].as_ref().filter(|c| c.serial == serial) else {
            return Ok(()); // A closed connection's late bytes.
        };
        let conn = conn.conn;
        let verdict = match toward_node {
            true => self.node_reads_client(client, node, conn, &bytes),
            false => self.client_reads(client, node, &bytes),
        };
        if self.wire.as_ref().is_some_and(|w| w.nets[node].is_some()) {
            self.break_closed_clients(node);
        }
        verdict
    }

    /// The slow reader `client` takes what its node wrote to its connection `serial` (the
    /// node's loop then finds the socket writable: it writes what waited and resumes
    /// reading the client's requests if back-pressure had paused it), then reads again later.
    pub(crate) fn on_client_reads(&mut self, client: usize, serial: u64) -> Verdict {
        let now = self.now;
        if now + QUIET_END_MS >= RUN_MS {
            // The clients stop before the end (the replicas are then checked converged): it
            // closes its connection, and the requests its node had not read yet are dropped
            // with it. Read on, a request paused since before the stop would be proposed in
            // the quiet end (seed 184 of the first runs with a slow reader).
            self.client_hang_up(client);
            return Ok(());
        }
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(conn) = wire.clients.conns[client]
            .as_ref()
            .filter(|c| c.serial == serial)
        else {
            return Ok(());
        };
        let (node, token) = (conn.node, conn.conn);
        let every = wire.clients.slow_reader.map_or(0, |s| s.every_ms);
        let Some(net) = wire.nets[node].as_mut() else {
            return Ok(());
        };
        if net.client_paused(token) {
            wire.clients.counts.paused += 1;
        }
        let mut bytes = net.take_client_written(token).unwrap_or_default();
        let received = net.client_writable(now, token);
        bytes.extend(net.take_client_written(token).unwrap_or_default());
        if let Some(why) = received.closed {
            return Err(format!(
                "network: node {node} closed client {client}'s connection {token}: {why}"
            ));
        }
        self.schedule(now + every, Event::ClientReads { client, serial });
        self.carry_client_bytes(client, false, bytes);
        if !received.events.is_empty() && self.nodes[node].core.is_some() {
            let core = self.nodes[node].core.as_mut().expect("checked above");
            core.net_events(received.events, now);
            self.drain(node)?;
        }
        self.break_closed_clients(node);
        Ok(())
    }

    /// `node`'s network thread reads client bytes: the requests it decodes go to its
    /// consensus handler as one batch of network events, and the handshake answer back.
    fn node_reads_client(
        &mut self,
        client: usize,
        node: usize,
        conn: u64,
        bytes: &[u8],
    ) -> Verdict {
        let now = self.now;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[node].as_mut() else {
            self.client_connection_broken(client);
            return Ok(());
        };
        let received = net.client_receive(now, conn, bytes);
        let answer = match wire.clients.reads_late(client) {
            true => None,
            false => net.take_client_written(conn),
        };
        if let Some(why) = received.closed {
            return Err(format!(
                "network: node {node} closed client {client}'s connection {conn}: {why}"
            ));
        }
        if let Some(answer) = answer {
            self.carry_client_bytes(client, false, answer);
        }
        if !received.events.is_empty() && self.nodes[node].core.is_some() {
            if self.tracing() {
                self.note(format!(
                    "  node {node} decodes {} events from client {client}",
                    received.events.len()
                ));
            }
            let core = self.nodes[node].core.as_mut().expect("checked above");
            core.net_events(received.events, now);
            self.drain(node)?;
        }
        Ok(())
    }

    /// `client` reads bytes from its node: the handshake answer first (checked as
    /// `rcraft::Client` checks it), then answer frames.
    fn client_reads(&mut self, client: usize, node: usize, bytes: &[u8]) -> Verdict {
        let conn = self.client_wire().conns[client]
            .as_mut()
            .expect("checked by the caller");
        let mut bytes = bytes;
        if conn.hello.len() < HANDSHAKE_BYTES {
            let take = (HANDSHAKE_BYTES - conn.hello.len()).min(bytes.len());
            conn.hello.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if conn.hello.len() == HANDSHAKE_BYTES {
                let hello: [u8; HANDSHAKE_BYTES] = conn.hello[..].try_into().expect("full");
                check_handshake(&hello, &options())
                    .map_err(|e| format!("client {client}: node {node}'s handshake: {e}"))?;
            }
        }
        conn.decoder.push(bytes);
        let mut responses = Vec::new();
        while let Some(frame) = (conn.decoder.next_frame())
            .map_err(|e| format!("client {client}: a bad frame from node {node}: {e}"))?
        {
            let response = (frame.to_client_response())
                .map_err(|e| format!("client {client}: a bad answer from node {node}: {e}"))?;
            responses.push(response);
        }
        for response in responses {
            self.client_wire().counts.answers += 1;
            self.client_decoded(client, node, response)?;
        }
        Ok(())
    }

    /// `client` decoded `response` from `node`: the answer its request was waiting for.
    fn client_decoded(&mut self, client: usize, node: usize, response: ClientResponse) -> Verdict {
        let request = response.request_id;
        if self.tracing() {
            self.note(format!(
                "  client {client} reads node {node}'s answer to request {request}: {:?}",
                response.body
            ));
        }
        let wire = self.client_wire();
        if wire.sent_on.remove(&request).is_none() {
            return Err(format!(
                "client {client}: node {node} answered request {request}, which is not \
                 outstanding on this connection"
            ));
        }
        match wire.stashed.remove(&request) {
            None => self.on_answer_to_client(node, request, response.body),
            Some(Stashed::Applied(attempt, index, applied)) => {
                check_applied_answer(&response.body, &applied)
                    .map_err(|e| format!("client {client}, request {request}: {e}"))?;
                self.attempt_applied(&attempt, index, &applied)
            }
            Some(Stashed::Read(read, applied, writes)) => {
                let now = self.now;
                self.history.complete_read(&read, applied, &writes, now)
            }
        }
    }

    /// The consensus side's answers of one turn of `node` to requests that came over client
    /// connections: queued and written by the node's network code, carried back as bytes.
    pub(crate) fn send_client_replies(&mut self, node: usize, replies: Vec<(u64, ClientResponse)>) {
        if replies.is_empty() {
            return;
        }
        let now = self.now;
        let wire = self.wire.as_mut().expect("a run with byte streams");
        let Some(net) = wire.nets[node].as_mut() else {
            return;
        };
        net.client_replies(now, &replies);
        let clients: Vec<(usize, u64)> = (0..wire.clients.conns.len())
            .filter_map(|c| {
                let conn = wire.clients.conns[c].as_ref()?;
                (conn.node == node).then_some((c, conn.conn))
            })
            .collect();
        for (client, conn) in clients {
            let wire = self.wire.as_mut().expect("a run with byte streams");
            if wire.clients.reads_late(client) {
                continue;
            }
            let net = wire.nets[node].as_mut().expect("up");
            if let Some(bytes) = net.take_client_written(conn) {
                self.carry_client_bytes(client, false, bytes);
            }
        }
    }

    /// The connection request `request` went out on, at `node`: its token there, if the
    /// client still holds it.
    fn connection_of(&self, node: usize, request: RequestId) -> Option<u64> {
        let wire = self.wire.as_ref()?;
        let serial = *wire.clients.sent_on.get(&request)?;
        (wire.clients.conns.iter().flatten())
            .find(|c| c.serial == serial && c.node == node)
            .map(|c| c.conn)
    }

    /// `node` applied `attempt`'s entry at `index` with result `applied`: its apply handler's
    /// reply `body` goes back on the connection the request came on (the client learns the
    /// outcome when the bytes arrive).
    pub(crate) fn answer_applied(
        &mut self,
        node: usize,
        attempt: Attempt,
        index: LogIndex,
        applied: Applied,
        body: ClientResponseBody,
    ) {
        let Some(conn) = self.connection_of(node, attempt.request) else {
            return; // Its connection closed: the network thread drops the answer.
        };
        let response = ClientResponse {
            request_id: attempt.request,
            body,
        };
        let stashed = Stashed::Applied(attempt, index, applied);
        self.client_wire().stashed.insert(attempt.request, stashed);
        self.send_client_replies(node, vec![(conn, response)]);
    }

    /// `node` served read `request` at `applied` with `writes`: answered on its connection.
    pub(crate) fn answer_read(
        &mut self,
        node: usize,
        request: RequestId,
        read: ReadRecord,
        applied: LogIndex,
        writes: Vec<u64>,
    ) {
        let Some(conn) = self.connection_of(node, request) else {
            return;
        };
        let response = ClientResponse {
            request_id: request,
            body: ClientResponseBody::Ok {
                term: Term(0),
                index: applied,
                result: Vec::new(),
            },
        };
        let stashed = Stashed::Read(read, applied, writes);
        self.client_wire().stashed.insert(request, stashed);
        self.send_client_replies(node, vec![(conn, response)]);
    }

    /// A cap refused `client`'s connection for request `request` (nothing was sent): the
    /// client tries another node, or this one later.
    pub(crate) fn connection_refused(&mut self, request: RequestId) {
        let error = ProposeError::NotLeader { leader: None };
        self.redirect_client(request, &error);
    }
}

/// The answer a client decoded agrees with what the apply side did.
fn check_applied_answer(body: &ClientResponseBody, applied: &Applied) -> Result<(), String> {
    let agrees = match (body, applied) {
        (ClientResponseBody::Ok { result, .. }, Applied::Registered(id)) => {
            result[..] == id.to_le_bytes()
        }
        (ClientResponseBody::Ok { .. }, Applied::Write | Applied::Duplicate) => true,
        (ClientResponseBody::Error { definite, .. }, Applied::RefusedDefinite) => *definite,
        (ClientResponseBody::Error { definite, .. }, Applied::RefusedUnknown) => !*definite,
        _ => false,
    };
    match agrees {
        true => Ok(()),
        false => Err(format!(
            "decoded {body:?} for an entry applied as {applied:?}"
        )),
    }
}
