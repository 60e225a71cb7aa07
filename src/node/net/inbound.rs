//! One accepted connection: a peer that dials us, or a client.
//!
//! Owned by the network thread. The connection starts with no role; its first
//! [`HANDSHAKE_BYTES`](rcraft_wire::HANDSHAKE_BYTES) bytes decide it. A peer connection only
//! carries peer messages towards us; a client connection carries requests towards us and
//! responses back. Invariants: `inflight` counts requests delivered and not yet answered;
//! a paused connection decodes nothing until [`Inbound::resume`].

use super::delivery::Delivery;
use super::out_buffer::{OutBuffer, PushError};
use super::peer::PeerLink;
use super::{CLIENT_PENDING_OUT_BYTES_MAX, ClientConnId, NetConfig, NetEvent, bump};
use mio::net::TcpStream;
use rcraft_wire::{ClientResponse, ConnectionRole, Frame, FrameDecoder, Handshake, NodeId};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// Why a connection is being closed.
pub(super) enum Close {
    /// The other side closed it.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// The other side broke the protocol or a limit; logged as a warning.
    Protocol(String),
}

/// What an inbound connection needs from the loop while it decodes.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a NetConfig,
    /// The peers this node knows (configured or added by a membership change); a handshake
    /// claiming any other node id is refused.
    pub(super) known_peers: &'a BTreeMap<NodeId, PeerLink>,
    pub(super) delivery: &'a mut Delivery,
}

pub(super) struct Inbound {
    pub(super) stream: TcpStream,
    pub(super) addr: SocketAddr,
    pub(super) id: ClientConnId,
    decoder: FrameDecoder,
    pub(super) role: Option<ConnectionRole>,
    out: OutBuffer,
    /// Requests delivered and not yet answered.
    inflight: usize,
    opened_at: Instant,
    /// When the frame now partly buffered started arriving; `None` when nothing is buffered.
    partial_since: Option<Instant>,
    /// Set when decoding stopped for back-pressure.
    pub(super) paused: bool,
}

impl Inbound {
    pub(super) fn new(
        stream: TcpStream,
        addr: SocketAddr,
        id: ClientConnId,
        frame_bytes_max: u32,
        now: Instant,
    ) -> Inbound {
        Inbound {
            stream,
            addr,
            id,
            decoder: FrameDecoder::new(frame_bytes_max),
            role: None,
            out: OutBuffer::default(),
            inflight: 0,
            opened_at: now,
            partial_since: None,
            paused: false,
        }
    }

    /// A short description for log lines.
    pub(super) fn describe(&self) -> String {
        match self.role {
            None => format!("connection from {} (no handshake yet)", self.addr),
            Some(ConnectionRole::Client) => format!("{} at {}", self.id, self.addr),
            Some(ConnectionRole::Peer(id)) => format!("peer {id} inbound from {}", self.addr),
        }
    }

    /// Decodes what is buffered, then reads until the socket would block, a short read shows
    /// it drained, or back-pressure pauses the connection.
    pub(super) fn pump(
        &mut self,
        read_buf: &mut [u8],
        ctx: &mut Ctx<'_>,
        now: Instant,
    ) -> Result<(), Close> {
        let mut decoded_any = false;
        let mut drained = false;
        loop {
            decoded_any |= self.decode(ctx)?;
            if self.paused {
                return Ok(());
            }
            if drained {
                break;
            }
            match self.stream.read(read_buf) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => {
                    bump(&ctx.delivery.stats.bytes_received, n as u64);
                    self.decoder.push(&read_buf[..n]);
                    // A short read emptied the socket's receive queue: bytes arriving later
                    // raise a new edge, so the read that would only say `WouldBlock` (one
                    // wasted syscall per request on a busy client connection) is skipped.
                    drained = n < read_buf.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::Io(e)),
            }
        }
        if self.decoder.buffered_bytes() == 0 {
            self.partial_since = None;
        } else if decoded_any || self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        Ok(())
    }

    fn may_decode(&self, ctx: &Ctx<'_>) -> bool {
        match self.role {
            Some(ConnectionRole::Client) => {
                !ctx.delivery.has_backlog()
                    && self.inflight < ctx.config.client_inflight_max
                    && self.out.pending_bytes() < CLIENT_PENDING_OUT_BYTES_MAX
            }
            _ => true,
        }
    }

    /// Decodes buffered frames until none is complete or the connection pauses.
    fn decode(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, Close> {
        let mut decoded_any = false;
        loop {
            if self.role.is_none() {
                match self.decoder.next_handshake() {
                    Ok(Some(handshake)) => self.on_handshake(handshake, ctx)?,
                    Ok(None) => return Ok(decoded_any),
                    Err(e) => return Err(Close::Protocol(format!("bad handshake: {e}"))),
                }
                continue;
            }
            if !self.may_decode(ctx) {
                self.paused = true;
                return Ok(decoded_any);
            }
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    bump(&ctx.delivery.stats.frames_received, 1);
                    decoded_any = true;
                    self.on_frame(&frame, ctx)?;
                }
                Ok(None) => return Ok(decoded_any),
                Err(e) => return Err(Close::Protocol(format!("bad frame: {e}"))),
            }
        }
    }

    fn on_handshake(&mut self, handshake: Handshake, ctx: &mut Ctx<'_>) -> Result<(), Close> {
        let config = ctx.config;
        handshake
            .check_cluster(config.cluster_id)
            .map_err(|e| Close::Protocol(format!("bad handshake: {e}")))?;
        if let ConnectionRole::Peer(id) = handshake.role {
            if id == config.node_id {
                return Err(Close::Protocol("handshake claims our own node id".into()));
            }
            if !ctx.known_peers.contains_key(&id) {
                return Err(Close::Protocol(format!(
                    "handshake claims node id {id}, which is not a member of this cluster"
                )));
            }
        }
        self.role = Some(handshake.role);
        if handshake.role == ConnectionRole::Client {
            bump(&ctx.delivery.stats.client_connections, 1);
        }
        log::debug!("node {}: accepted {}", config.node_id, self.describe());
        self.out
            .push_raw(&Handshake::peer(config.cluster_id, config.node_id).encode());
        self.flush()
    }

    fn on_frame(&mut self, frame: &Frame, ctx: &mut Ctx<'_>) -> Result<(), Close> {
        match self.role {
            Some(ConnectionRole::Peer(peer)) => {
                let message = frame
                    .to_message()
                    .map_err(|e| Close::Protocol(format!("bad peer frame: {e}")))?;
                message
                    .check_well_formed()
                    .map_err(|e| Close::Protocol(format!("malformed peer message: {e}")))?;
                if message.from != peer {
                    return Err(Close::Protocol(format!(
                        "message from node {} on node {peer}'s connection",
                        message.from
                    )));
                }
                if message.to != ctx.config.node_id {
                    log::debug!("dropping message for node {} from {peer}", message.to);
                    bump(&ctx.delivery.stats.peer_dropped_unknown, 1);
                    return Ok(());
                }
                ctx.delivery.peer_message(message);
            }
            Some(ConnectionRole::Client) => {
                let request = frame
                    .to_client_request()
                    .map_err(|e| Close::Protocol(format!("bad client frame: {e}")))?;
                self.inflight += 1;
                ctx.delivery.client_event(NetEvent::Client {
                    conn: self.id,
                    request,
                    received: Instant::now(),
                });
            }
            None => unreachable!("frames are decoded only after the handshake"),
        }
        Ok(())
    }

    /// Queues a response; the caller flushes. A response too large to send is replaced by an
    /// error response so that the client is not left waiting.
    pub(super) fn queue_reply(&mut self, response: &ClientResponse, frame_bytes_max: u32) {
        self.inflight = self.inflight.saturating_sub(1);
        let encode = |out: &mut Vec<u8>| rcraft_wire::encode_client_response(response, out);
        match self.out.push_frame(frame_bytes_max, encode) {
            Ok(()) => {}
            Err(PushError::TooLarge { payload_bytes }) => {
                log::warn!(
                    "{}: response of {payload_bytes} B is over the frame limit",
                    self.id
                );
                let refusal = ClientResponse {
                    request_id: response.request_id,
                    body: rcraft_wire::ClientResponseBody::Error {
                        definite: false,
                        message: format!("response of {payload_bytes} B exceeds the frame limit"),
                    },
                };
                let encode = |out: &mut Vec<u8>| rcraft_wire::encode_client_response(&refusal, out);
                if let Err(e) = self.out.push_frame(frame_bytes_max, encode) {
                    log::error!("{}: cannot encode a refusal: {e:?}", self.id);
                }
            }
            Err(PushError::Encode(e)) => log::error!("{}: cannot encode a response: {e}", self.id),
        }
    }

    /// Bytes written since the last call.
    pub(super) fn take_written_bytes(&mut self) -> u64 {
        self.out.take_written_bytes()
    }

    /// Writes queued bytes until done or the socket would block.
    pub(super) fn flush(&mut self) -> Result<(), Close> {
        self.out
            .write_to(&mut self.stream)
            .map(drop)
            .map_err(Close::Io)
    }

    /// True when a paused connection may decode again.
    pub(super) fn can_resume(&self, ctx: &Ctx<'_>) -> bool {
        self.may_decode(ctx)
    }

    /// Unpauses; the stall clock restarts because the wait was ours, not the sender's.
    pub(super) fn resume(&mut self, now: Instant) {
        self.paused = false;
        if self.partial_since.is_some() {
            self.partial_since = Some(now);
        }
    }

    /// Why this connection should be closed for stalling, if it should.
    pub(super) fn stall_reason(&self, now: Instant, config: &NetConfig) -> Option<String> {
        if self.paused {
            return None;
        }
        let limit = config.stall_timeout;
        if self.role.is_none() && now.duration_since(self.opened_at) > limit {
            return Some(format!("no handshake within {limit:?}"));
        }
        let since = self.partial_since?;
        (now.duration_since(since) > limit)
            .then(|| format!("a frame stayed incomplete for over {limit:?}"))
    }
}
