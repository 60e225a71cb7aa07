//! The outbound link to one peer: a lazily dialled TCP connection (TLS over it when the node
//! has peer TLS, `stream.rs`), its queue of encoded frames, and the re-dial back-off.
//!
//! Owned by the network thread's peer handler (`peers.rs`), which decides when the link
//! dials (when a message is queued and no connection exists and the back-off delay has
//! passed, when the network thread starts, and when the peer dials us, the back-off then
//! reset) and hands it the new connection ([`PeerLink::attach`]). The link sends our handshake followed by queued frames
//! without waiting for the answer, and checks the peer's answering handshake (right cluster,
//! right node). With a cluster secret the handshake carries a fresh nonce, the answer's
//! proof is checked and ours sent before any queued frame (`auth.rs`): frames wait in `out`
//! until then. Invariants: `conn` is `None` exactly while the link is down; frames are only
//! queued while a connection exists or is being made (a down link drops them: Raft
//! retransmits); `backoff` stays within `[reconnect_backoff_min, reconnect_backoff_max]`.

use super::auth::{Nonce, Side, Transcript};
use super::identity::{self, PeerIdentities};
use super::inbound::Close;
use super::out_buffer::{OutBuffer, PushError};
use super::stream::{ByteStream, Stream};
use super::{NetConfig, NetStats, bump};
use mio::Token;
use rcraft_wire::{FrameDecoder, Handshake, MAC_BYTES, Message, NONCE_BYTES, NodeId};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An open (or opening) connection to a peer.
pub(super) struct PeerConn<S: ByteStream = Stream> {
    /// TCP, or TLS over it when the node has peer TLS (`stream.rs`); an in-memory stream in
    /// the simulator.
    pub(super) stream: S,
    pub(super) token: Token,
    decoder: FrameDecoder,
    /// Our handshake (and, with a secret, our nonce then our proof): written before `out`.
    preface: OutBuffer,
    /// Our nonce, when the link authenticates.
    nonce: Option<Nonce>,
    /// The peer's answering handshake, once decoded (its auth block may still be on the way).
    answer: Option<Handshake>,
    /// The TCP connect completed.
    connected: bool,
    /// The peer's answering handshake arrived and checked out.
    verified: bool,
    started: Instant,
}

pub(super) struct PeerLink<S: ByteStream = Stream> {
    pub(super) id: NodeId,
    pub(super) addr: SocketAddr,
    pub(super) conn: Option<PeerConn<S>>,
    out: OutBuffer,
    backoff: Duration,
    /// The link may dial again from this instant.
    retry_at: Instant,
}

impl<S: ByteStream> PeerLink<S> {
    pub(super) fn new(
        id: NodeId,
        addr: SocketAddr,
        config: &NetConfig,
        now: Instant,
    ) -> PeerLink<S> {
        PeerLink {
            id,
            addr,
            conn: None,
            out: OutBuffer::default(),
            backoff: config.reconnect_backoff_min,
            retry_at: now,
        }
    }

    /// The peer showed it is up (it dialled us): forget the back-off, so a down link dials at
    /// once instead of waiting out a delay grown while the peer was away.
    pub(super) fn peer_is_up(&mut self, config: &NetConfig, now: Instant) {
        self.backoff = config.reconnect_backoff_min;
        self.retry_at = now;
    }

    /// True when the link is down and its back-off delay has passed.
    pub(super) fn may_dial(&self, now: Instant) -> bool {
        self.conn.is_none() && now >= self.retry_at
    }

    /// Encodes `message` into the queue of an up (or connecting) link; drops and counts it
    /// when the link is down or the queue is full. Returns whether it was queued.
    pub(super) fn queue(
        &mut self,
        message: &Message,
        config: &NetConfig,
        stats: &NetStats,
    ) -> bool {
        if self.conn.is_none() {
            bump(&stats.peer_dropped_link_down, 1);
            return false;
        }
        let full = self.out.pending_frames() >= config.peer_queue_frames
            || (self.out.pending_bytes() >= config.peer_queue_bytes
                && self.out.pending_frames() > 0);
        if full {
            bump(&stats.peer_dropped_queue_full, 1);
            return false;
        }
        let encode = |out: &mut Vec<u8>| rcraft_wire::encode_message(message, out);
        match self.out.push_frame(config.frame_bytes_max, encode) {
            Ok(()) => true,
            Err(PushError::TooLarge { payload_bytes }) => {
                log::warn!(
                    "node {}: dropping a {payload_bytes} B message to {}: over the frame limit",
                    config.node_id,
                    self.id
                );
                bump(&stats.peer_dropped_queue_full, 1);
                false
            }
            Err(PushError::Encode(e)) => {
                log::error!(
                    "node {}: cannot encode a message to {}: {e}",
                    config.node_id,
                    self.id
                );
                false
            }
        }
    }

    /// Takes `stream` as the link's new connection, with our handshake (and `nonce`, which
    /// the link authenticates with exactly when the node has a cluster secret) queued first.
    pub(super) fn attach(
        &mut self,
        stream: S,
        token: Token,
        nonce: Option<Nonce>,
        config: &NetConfig,
        identities: &PeerIdentities,
        now: Instant,
    ) -> &mut PeerConn<S> {
        self.out.clear();
        let mut preface = OutBuffer::default();
        let hello = identities.hello(config.node_id);
        match nonce {
            Some(nonce) => {
                preface.push_raw(&hello.with_auth().encode());
                preface.push_raw(&nonce);
            }
            None => preface.push_raw(&hello.encode()),
        }
        self.conn.insert(PeerConn {
            stream,
            token,
            decoder: FrameDecoder::new(config.frame_bytes_max),
            preface,
            nonce,
            answer: None,
            connected: false,
            verified: false,
            started: now,
        })
    }

    /// The connection's transport is up (a TCP connect completed): our handshake may go out.
    pub(super) fn connected(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.connected = true;
        }
    }

    /// Reads and checks the peer's handshake answer as far as it arrived, then writes our
    /// handshake and queued frames. Returns the number of frames written.
    pub(super) fn pump(
        &mut self,
        read_buf: &mut [u8],
        config: &NetConfig,
        stats: &NetStats,
        identities: &mut PeerIdentities,
    ) -> Result<usize, Close> {
        if !self.conn.as_ref().is_some_and(|conn| conn.connected) {
            return Ok(0);
        }
        self.read_answer(read_buf, config, stats, identities)?;
        self.flush()
    }

    fn read_answer(
        &mut self,
        read_buf: &mut [u8],
        config: &NetConfig,
        stats: &NetStats,
        identities: &mut PeerIdentities,
    ) -> Result<(), Close> {
        let conn = self.conn.as_mut().expect("connected");
        loop {
            match conn.stream.read(read_buf) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => conn.decoder.push(&read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::from_read(e)),
            }
            if !conn.verified && !Self::check_answer(conn, self.id, config, stats, identities)? {
                continue;
            }
            if !conn.verified {
                conn.verified = true;
                self.backoff = config.reconnect_backoff_min;
                bump(&stats.peer_connects, 1);
                log::info!(
                    "node {}: connected to peer {} at {}",
                    config.node_id,
                    self.id,
                    self.addr
                );
            }
            if conn.decoder.buffered_bytes() > 0 {
                return Err(Close::Protocol(
                    "unexpected bytes after the handshake answer".into(),
                ));
            }
        }
    }

    /// Bytes written since the last call.
    pub(super) fn take_written_bytes(&mut self) -> u64 {
        self.out.take_written_bytes()
    }

    /// Checks the peer's answer as far as it has arrived: the handshake (not a refusal, right
    /// node, right cluster, the data dir this node knows for it, authenticating exactly when
    /// we do), then with a secret the peer's nonce and proof, after which our proof is
    /// queued. Once all of it checked out, records what the answer taught (`identity.rs`)
    /// and returns true.
    fn check_answer(
        conn: &mut PeerConn<S>,
        expected: NodeId,
        config: &NetConfig,
        stats: &NetStats,
        identities: &mut PeerIdentities,
    ) -> Result<bool, Close> {
        let bad = |e: rcraft_wire::Error| Close::Protocol(format!("bad handshake answer: {e}"));
        if conn.answer.is_none() {
            let Some(answer) = conn.decoder.next_handshake().map_err(bad)? else {
                return Ok(false);
            };
            if answer.refusal.is_some() {
                let why = identity::refused_by(expected, &answer, config.node_id, identities);
                return Err(Close::Refused {
                    peer: expected,
                    why,
                });
            }
            answer.check_peer(expected).map_err(bad)?;
            identities
                .check(expected, answer.cluster_id, answer.incarnation)
                .map_err(|refused| Close::Refused {
                    peer: expected,
                    why: refused.to_string(),
                })?;
            if answer.auth != conn.nonce.is_some() {
                return Err(Close::Protocol(if answer.auth {
                    format!("peer {expected} authenticates, and this node has no cluster secret")
                } else {
                    format!("peer {expected} did not authenticate its answer")
                }));
            }
            conn.answer = Some(answer);
        }
        let answer = conn.answer.expect("set above");
        let record = |identities: &mut PeerIdentities| {
            identities
                .accept(expected, answer.cluster_id, answer.incarnation)
                .map_err(|e| {
                    Close::Io(io::Error::other(format!(
                        "recording node {expected}'s identity: {e}"
                    )))
                })
        };
        let (Some(nonce), Some(secrets)) = (conn.nonce, config.peer_secrets.as_ref()) else {
            record(identities)?;
            return Ok(true);
        };
        let Some(block) = conn
            .decoder
            .next_block::<{ NONCE_BYTES + MAC_BYTES }>()
            .map_err(bad)?
        else {
            return Ok(false);
        };
        let (their_nonce, their_proof) = block.split_at(NONCE_BYTES);
        let transcript = Transcript {
            cluster_id: identities.agreed_cluster(answer.cluster_id),
            dialler: config.node_id,
            acceptor: expected,
            dialler_nonce: nonce,
            acceptor_nonce: their_nonce.try_into().expect("nonce length"),
        };
        let their_proof = their_proof.try_into().expect("proof length");
        if !secrets.verify(Side::Acceptor, &transcript, their_proof) {
            bump(&stats.auth_failures, 1);
            return Err(Close::Protocol(format!(
                "peer {expected} failed to prove it holds the cluster secret"
            )));
        }
        record(identities)?;
        conn.preface
            .push_raw(&secrets.prove(Side::Dialler, &transcript));
        Ok(true)
    }

    /// Writes our handshake, then (once the peer's answer checked out, when the link
    /// authenticates) queued frames, until done or the socket would block. Returns frames
    /// written.
    pub(super) fn flush(&mut self) -> Result<usize, Close> {
        let Some(conn) = self.conn.as_mut().filter(|conn| conn.connected) else {
            return Ok(0);
        };
        conn.preface.write_to(&mut conn.stream).map_err(Close::Io)?;
        let held = conn.preface.pending_bytes() > 0 || (conn.nonce.is_some() && !conn.verified);
        let sent = match held {
            true => 0,
            false => self.out.write_to(&mut conn.stream).map_err(Close::Io)?,
        };
        // TLS records still waiting for the socket (a no-op for plain TCP).
        conn.stream.flush().map_err(Close::Io)?;
        Ok(sent)
    }

    /// Tears the connection down and schedules the next dial. Returns the connection (for
    /// deregistration) and how many queued frames were dropped.
    pub(super) fn fail(
        &mut self,
        config: &NetConfig,
        now: Instant,
    ) -> (Option<PeerConn<S>>, usize) {
        let conn = self.conn.take();
        let dropped = self.out.clear();
        self.retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(config.reconnect_backoff_max);
        (conn, dropped)
    }

    /// True when the connection was verified (used to pick the log level on failure).
    pub(super) fn was_verified(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| conn.verified)
    }

    /// Why the connection should be torn down for taking too long, if it should.
    pub(super) fn timeout_reason(&self, now: Instant, config: &NetConfig) -> Option<String> {
        let conn = self.conn.as_ref()?;
        let age = now.duration_since(conn.started);
        if !conn.connected && age > config.connect_timeout {
            return Some(format!("connect took over {:?}", config.connect_timeout));
        }
        if !conn.verified && age > config.stall_timeout {
            return Some(format!(
                "no handshake answer within {:?}",
                config.stall_timeout
            ));
        }
        None
    }
}

impl<S: ByteStream> PeerLink<S> {
    /// Handles readiness: completes the connect, reads the peer's handshake, writes queued
    /// frames. Returns the number of frames written.
    pub(super) fn on_ready(
        &mut self,
        read_buf: &mut [u8],
        config: &NetConfig,
        stats: &NetStats,
        identities: &mut PeerIdentities,
    ) -> Result<usize, Close> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(0);
        };
        if !conn.connected {
            if !conn.stream.finish_connect().map_err(Close::Io)? {
                return Ok(0);
            }
            self.connected();
        }
        self.pump(read_buf, config, stats, identities)
    }
}
