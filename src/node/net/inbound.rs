//! One accepted connection: a peer that dials us, or a client.
//!
//! Owned by the network thread. The connection starts with no role; its first
//! [`HANDSHAKE_BYTES`](rcraft_wire::HANDSHAKE_BYTES) bytes decide it (read through `stream`,
//! inside TLS when the node has it; a role whose links need TLS and did not come over it is
//! refused, `Stream::refusal_for`). A peer connection only
//! carries peer messages towards us; a client connection carries requests towards us and
//! responses back. Invariants: `inflight` counts requests delivered (or refused) and not yet
//! answered; a paused connection decodes nothing until [`Inbound::resume`]; `role` is set
//! only once the handshake is complete, which with a cluster secret means the peer proved it
//! holds the secret (`auth.rs`), so no frame of an unauthenticated peer is ever decoded; a
//! client request needing more than `permission` is answered with a definite refusal and
//! never delivered.

use super::auth::{Nonce, Permission, Proof, Side, Transcript};
use super::delivery::Delivery;
use super::identity::{PeerIdentities, Refused};
use super::out_buffer::{OutBuffer, PushError};
use super::peer::PeerLink;
use super::stream::{ByteStream, Stream};
use super::{ClientConnId, NetConfig, NetEvent, bump};
use rcraft_wire::{
    ClientResponse, ClientResponseBody, ConnectionRole, Frame, FrameDecoder, Handshake, MAC_BYTES,
    NONCE_BYTES, NodeId,
};
use std::collections::BTreeMap;
use std::io;
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
    /// A peer refused for its identity, or refusing ours (`identity.rs`): logged as a
    /// warning the first time and then at most once per [`REFUSAL_LOG_INTERVAL`] for the
    /// same peer and reason, since the refused node keeps dialling.
    Refused {
        /// The other node.
        peer: NodeId,
        /// Why, in full.
        why: String,
    },
}

/// How often the same refusal of the same peer is logged as a warning (module `Close`).
pub(super) const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Close {
    /// Whether the other side closed or reset the connection (as against a local or network
    /// failure, or a refusal).
    pub(super) fn closed_by_peer(&self) -> bool {
        match self {
            Close::Eof => true,
            Close::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            Close::Protocol(_) | Close::Refused { .. } => false,
        }
    }

    /// The reason in words, for a caller that reports it rather than logs it.
    pub(super) fn describe(&self) -> String {
        match self {
            Close::Eof => "closed by the other side".to_string(),
            Close::Io(e) => e.to_string(),
            Close::Protocol(why) => why.clone(),
            Close::Refused { why, .. } => why.clone(),
        }
    }

    /// A failed read: TLS failures (`InvalidData`, which a plain socket never reports) are
    /// the other side's doing, so they are logged as refusals.
    pub(super) fn from_read(e: io::Error) -> Close {
        match e.kind() {
            io::ErrorKind::InvalidData => Close::Protocol(e.to_string()),
            _ => Close::Io(e),
        }
    }
}

/// What an inbound connection needs from the loop while it decodes.
pub(super) struct Ctx<'a, P = PeerLink> {
    pub(super) config: &'a NetConfig,
    /// The peers this node knows (configured or added by a membership change); a handshake
    /// claiming any other node id is refused.
    pub(super) known_peers: &'a BTreeMap<NodeId, P>,
    /// Where the nonces of authenticated handshakes come from: the operating system's random
    /// source ([`auth::fresh_nonce`]), or the simulator's seeded generator.
    pub(super) fresh_nonce: &'a mut dyn FnMut() -> io::Result<Nonce>,
    pub(super) delivery: &'a mut Delivery,
    /// The cluster id and the incarnations this node knows (`identity.rs`).
    pub(super) identities: &'a mut PeerIdentities,
}

/// A handshake with an authentication block, half done.
enum Pending {
    /// A peer's handshake (checked) arrived; its nonce has not.
    PeerNonce(Handshake),
    /// We answered with our nonce and proof; the peer's proof has not arrived.
    PeerProof(Transcript, Handshake),
    /// A client's handshake arrived; its token has not.
    ClientToken,
}

pub(super) struct Inbound<S: ByteStream = Stream> {
    /// TCP, or TLS over it (`stream.rs`); an in-memory stream in the simulator.
    pub(super) stream: S,
    pub(super) addr: SocketAddr,
    pub(super) id: ClientConnId,
    decoder: FrameDecoder,
    pub(super) role: Option<ConnectionRole>,
    /// Set between a handshake announcing an authentication block and the end of that block.
    pending: Option<Pending>,
    /// What a client connection may do (meaningless for a peer).
    permission: Permission,
    out: OutBuffer,
    /// Requests delivered and not yet answered.
    inflight: usize,
    opened_at: Instant,
    /// When the frame now partly buffered started arriving; `None` when nothing is buffered.
    partial_since: Option<Instant>,
    /// Set when decoding stopped for back-pressure.
    pub(super) paused: bool,
}

impl<S: ByteStream> Inbound<S> {
    pub(super) fn new(
        stream: S,
        addr: SocketAddr,
        id: ClientConnId,
        frame_bytes_max: u32,
        now: Instant,
    ) -> Inbound<S> {
        Inbound {
            stream,
            addr,
            id,
            decoder: FrameDecoder::new(frame_bytes_max),
            role: None,
            pending: None,
            permission: Permission::None,
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
            None => format!("connection from {}", self.addr),
            Some(ConnectionRole::Client) => format!("{} at {}", self.id, self.addr),
            Some(ConnectionRole::Peer(id)) => format!("peer {id} inbound from {}", self.addr),
        }
    }

    /// Decodes what is buffered, then reads until the socket would block, a short read shows
    /// it drained, or back-pressure pauses the connection.
    pub(super) fn pump<P>(
        &mut self,
        read_buf: &mut [u8],
        ctx: &mut Ctx<'_, P>,
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
                    // Not with TLS, where rustls may hold more than one read hands out.
                    drained = n < read_buf.len() && self.stream.short_read_drains();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::from_read(e)),
            }
        }
        if self.decoder.buffered_bytes() == 0 {
            self.partial_since = None;
        } else if decoded_any || self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        Ok(())
    }

    fn may_decode<P>(&self, ctx: &Ctx<'_, P>) -> bool {
        match self.role {
            Some(ConnectionRole::Client) => {
                !ctx.delivery.has_backlog()
                    && self.inflight < ctx.config.client_inflight_max
                    && self.out.pending_bytes() < ctx.config.client_pending_out_bytes_max
            }
            _ => true,
        }
    }

    /// Decodes buffered frames until none is complete or the connection pauses.
    fn decode<P>(&mut self, ctx: &mut Ctx<'_, P>) -> Result<bool, Close> {
        let mut decoded_any = false;
        loop {
            if self.role.is_none() {
                if self.handshake_step(ctx)? {
                    continue;
                }
                return Ok(decoded_any);
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

    /// Takes the next piece of the handshake off the stream. Returns false when it has not
    /// fully arrived (nothing was taken).
    fn handshake_step<P>(&mut self, ctx: &mut Ctx<'_, P>) -> Result<bool, Close> {
        let bad = |e: rcraft_wire::Error| match e {
            rcraft_wire::Error::BadHandshakeMagic { found } if found[0] == 22 => Close::Protocol(
                "bad handshake: this is a TLS ClientHello, and this node has no TLS \
                 (--cert-file, --peer-cert-file)"
                    .to_string(),
            ),
            e => Close::Protocol(format!("bad handshake: {e}")),
        };
        match self.pending.take() {
            None => match self.decoder.next_handshake().map_err(bad)? {
                Some(handshake) => self.on_handshake(handshake, ctx)?,
                None => return Ok(false),
            },
            Some(Pending::PeerNonce(hello)) => match self.decoder.next_block().map_err(bad)? {
                Some(nonce) => self.on_peer_nonce(hello, nonce, ctx)?,
                None => {
                    self.pending = Some(Pending::PeerNonce(hello));
                    return Ok(false);
                }
            },
            Some(Pending::PeerProof(transcript, hello)) => {
                match self.decoder.next_block::<MAC_BYTES>().map_err(bad)? {
                    Some(proof) => self.on_peer_proof(&transcript, &hello, &proof, ctx)?,
                    None => {
                        self.pending = Some(Pending::PeerProof(transcript, hello));
                        return Ok(false);
                    }
                }
            }
            Some(Pending::ClientToken) => match self.decoder.next_token().map_err(bad)? {
                Some(token) => self.on_client_token(&token, ctx)?,
                None => {
                    self.pending = Some(Pending::ClientToken);
                    return Ok(false);
                }
            },
        }
        Ok(true)
    }

    fn on_handshake<P>(&mut self, handshake: Handshake, ctx: &mut Ctx<'_, P>) -> Result<(), Close> {
        let config = ctx.config;
        if let Some(why) = self.stream.refusal_for(handshake.role) {
            return Err(Close::Protocol(why));
        }
        let ConnectionRole::Peer(id) = handshake.role else {
            handshake
                .check_cluster(ctx.identities.cluster_id())
                .map_err(|e| Close::Protocol(format!("bad handshake: {e}")))?;
            if handshake.auth {
                self.pending = Some(Pending::ClientToken);
                return Ok(());
            }
            // No token: today's trust when the node has no token files.
            self.permission = match &config.client_tokens {
                Some(_) => Permission::None,
                None => Permission::Admin,
            };
            bump(&ctx.delivery.stats.client_connections, 1);
            return self.accept(ConnectionRole::Client, ctx);
        };
        if id == config.node_id {
            return Err(Close::Protocol("handshake claims our own node id".into()));
        }
        if !ctx.known_peers.contains_key(&id) {
            return Err(Close::Protocol(format!(
                "handshake claims node id {id}, which is not a member of this cluster"
            )));
        }
        // Checked before authenticating: a refusal changes nothing here, so an impostor
        // gains nothing from it, while the refused node learns why.
        if let Err(refused) =
            (ctx.identities).check(id, handshake.cluster_id, handshake.incarnation)
        {
            return Err(self.refuse(&refused, ctx));
        }
        match (&config.peer_secrets, handshake.auth) {
            (Some(_), true) => {
                self.pending = Some(Pending::PeerNonce(handshake));
                Ok(())
            }
            (None, false) => {
                self.accept_peer(&handshake, ctx)?;
                self.accept(ConnectionRole::Peer(id), ctx)
            }
            (Some(_), false) => Err(Close::Protocol(format!(
                "peer {id} did not authenticate, and this node requires the cluster secret"
            ))),
            (None, true) => Err(Close::Protocol(format!(
                "peer {id} authenticates with a cluster secret, and this node has none \
                 (--secret-file)"
            ))),
        }
    }

    /// Answers a refused peer with the reason, and returns why the connection closes.
    fn refuse<P>(&mut self, refused: &Refused, ctx: &mut Ctx<'_, P>) -> Close {
        let answer = refused.answer(ctx.identities.cluster_id(), ctx.config.node_id);
        self.out.push_raw(&answer.encode());
        // Best effort: the connection closes whether or not the answer got out.
        let _ = self.flush();
        Close::Refused {
            peer: refused.peer(),
            why: refused.to_string(),
        }
    }

    /// Records what a peer's accepted handshake taught this node (`identity.rs`).
    fn accept_peer<P>(&mut self, hello: &Handshake, ctx: &mut Ctx<'_, P>) -> Result<(), Close> {
        let ConnectionRole::Peer(id) = hello.role else {
            return Ok(());
        };
        (ctx.identities)
            .accept(id, hello.cluster_id, hello.incarnation)
            .map_err(|e| {
                Close::Io(io::Error::other(format!(
                    "recording node {id}'s identity: {e}"
                )))
            })
    }

    /// A peer's nonce arrived: answer with our handshake, our nonce and our proof.
    fn on_peer_nonce<P>(
        &mut self,
        hello: Handshake,
        nonce: Nonce,
        ctx: &mut Ctx<'_, P>,
    ) -> Result<(), Close> {
        let config = ctx.config;
        let ConnectionRole::Peer(peer) = hello.role else {
            return Err(Close::Protocol(
                "a client handshake awaiting a peer nonce".into(),
            ));
        };
        let secrets = config
            .peer_secrets
            .as_ref()
            .expect("checked at the handshake");
        let transcript = Transcript {
            cluster_id: ctx.identities.agreed_cluster(hello.cluster_id),
            dialler: peer,
            acceptor: config.node_id,
            dialler_nonce: nonce,
            acceptor_nonce: (ctx.fresh_nonce)().map_err(Close::Io)?,
        };
        let answer = ctx.identities.hello(config.node_id).with_auth();
        self.out.push_raw(&answer.encode());
        self.out.push_raw(&transcript.acceptor_nonce);
        self.out
            .push_raw(&secrets.prove(Side::Acceptor, &transcript));
        self.pending = Some(Pending::PeerProof(transcript, hello));
        const _: () = assert!(NONCE_BYTES == MAC_BYTES);
        self.flush()
    }

    fn on_peer_proof<P>(
        &mut self,
        transcript: &Transcript,
        hello: &Handshake,
        proof: &Proof,
        ctx: &mut Ctx<'_, P>,
    ) -> Result<(), Close> {
        let config = ctx.config;
        let secrets = config
            .peer_secrets
            .as_ref()
            .expect("checked at the handshake");
        if !secrets.verify(Side::Dialler, transcript, proof) {
            bump(&ctx.delivery.stats.auth_failures, 1);
            return Err(Close::Protocol(format!(
                "peer {} failed to prove it holds the cluster secret",
                transcript.dialler
            )));
        }
        self.accept_peer(hello, ctx)?;
        self.role = Some(ConnectionRole::Peer(transcript.dialler));
        log::debug!(
            "node {}: accepted {} (authenticated)",
            config.node_id,
            self.describe()
        );
        Ok(())
    }

    fn on_client_token<P>(&mut self, token: &[u8], ctx: &mut Ctx<'_, P>) -> Result<(), Close> {
        let config = ctx.config;
        self.permission = match &config.client_tokens {
            Some(tokens) => tokens.permission(Some(token)),
            None => Permission::Admin,
        };
        if self.permission == Permission::None {
            bump(&ctx.delivery.stats.auth_failures, 1);
            log::warn!(
                "node {}: {} at {} sent a token this node does not know; it may do nothing",
                config.node_id,
                self.id,
                self.addr
            );
        }
        bump(&ctx.delivery.stats.client_connections, 1);
        self.accept(ConnectionRole::Client, ctx)
    }

    /// The handshake is complete (without an authentication block, or a client's): answer.
    fn accept<P>(&mut self, role: ConnectionRole, ctx: &Ctx<'_, P>) -> Result<(), Close> {
        let node = ctx.config.node_id;
        self.role = Some(role);
        log::debug!("node {node}: accepted {}", self.describe());
        self.out.push_raw(&ctx.identities.hello(node).encode());
        self.flush()
    }

    fn on_frame<P>(&mut self, frame: &Frame, ctx: &mut Ctx<'_, P>) -> Result<(), Close> {
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
                let needed = Permission::needed_for(&request.body);
                if needed > self.permission {
                    bump(&ctx.delivery.stats.requests_refused_permission, 1);
                    let refusal = ClientResponse {
                        request_id: request.request_id,
                        body: ClientResponseBody::Error {
                            definite: true,
                            message: needed.refusal(),
                        },
                    };
                    self.queue_reply(&refusal, ctx.config.frame_bytes_max);
                    return Ok(());
                }
                if needed == Permission::Admin {
                    log::info!(
                        "node {}: admin request {:?} from {} at {}",
                        ctx.config.node_id,
                        request.body,
                        self.id,
                        self.addr
                    );
                }
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
        self.out.write_to(&mut self.stream).map_err(Close::Io)?;
        // TLS records still waiting for the socket (a no-op for plain TCP).
        self.stream.flush().map_err(Close::Io)
    }

    /// True when a paused connection may decode again.
    pub(super) fn can_resume<P>(&self, ctx: &Ctx<'_, P>) -> bool {
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
