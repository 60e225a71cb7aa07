//! A blocking client for an rcraft cluster: leader discovery, retries, and sessions for
//! at-most-once writes (Raft thesis §6.3). It carries opaque commands ([`Client::submit`])
//! and queries ([`Client::query`]) for any state machine; the built-in KV store's codec sits
//! on top of it in [`KvClient`](crate::kv_client::KvClient).
//!
//! The decisions live in [`ClientCore`], which does no I/O (see `client_core.rs`): the
//! blocking [`Client`] here and the loadtest's event-loop engine both drive it, so both find
//! the leader, retry, keep sessions and fail over the same way. This file holds the blocking
//! driver, the client's options and errors, and the client handshake (built in one place:
//! [`handshake`], [`check_handshake`]).
//!
//! A [`Client`] is owned by one thread and holds at most one TCP connection, to the node it
//! currently believes leads. Each operation runs under a deadline ([`ClientOptions::timeout`]):
//! it tries the last known leader, follows `NotLeader` hints (by node id, or by the leader
//! address the hint carries), otherwise goes round the list, pausing with a growing backoff
//! when nobody knows a leader. Every wait on a socket is bounded by
//! [`ClientOptions::attempt_timeout`], so a dead or stopped node costs one attempt, never the
//! whole deadline; and once an attempt has waited an election timeout
//! ([`ClientOptions::leader_probe_after`]) the client asks the other nodes who leads and moves
//! on when a newer leader is named, so a paused or cut-off leader costs about an election.
//!
//! Writes carry a session (Raft thesis §6.3): before its first write the client registers
//! one, a replicated entry whose index becomes its `client_id`; each new write takes the next
//! `sequence` (from 1). A retry of the same write reuses the same sequence, so the cluster
//! applies it at most once. The cluster forgets the least recently used sessions past
//! `SESSIONS_MAX` and refuses a write whose session it forgot ("session expired"), since it
//! cannot tell whether an earlier attempt was applied: if no attempt of that write may have
//! reached a node before, the client registers a new session and sends the write again;
//! otherwise the write's outcome is unknown and reported so (the next write registers anew).
//! Invariant: once any attempt of a write may have reached a node (its bytes were fully
//! written), a failure of that write is reported as not definite.

mod client_core;
mod conn_stream;

pub use client_core::{ClientCore, Next};

use crate::node::SnapshotResult;
use client_core::Effect;
pub use conn_stream::ConnStream;
use rcraft_wire::{
    CLUSTER_ID_UNKNOWN, ClientRequest, ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX,
    FrameDecoder, HANDSHAKE_BYTES, Handshake, LogIndex, Membership, NodeId, NodeStatus, ReadMode,
    RecordedEvent, Role, SnapshotChunk, StageLatency, Term, encode_client_request,
};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Shortest socket timeout set; the OS refuses a zero timeout.
const SOCKET_TIMEOUT_MIN: Duration = Duration::from_millis(1);
/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Tuning of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Deadline for one operation, all retries included.
    pub timeout: Duration,
    /// Longest wait for one node's answer (or connection) before trying again.
    pub attempt_timeout: Duration,
    /// First pause when no leader is known or the leader is overloaded; doubles each time.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// Cluster id sent in the handshake: the servers must be of this cluster. The default,
    /// [`CLUSTER_ID_UNKNOWN`], accepts any (the cluster id is made when a cluster
    /// bootstraps, so a client rarely knows it).
    pub cluster_id: u64,
    /// When set, an operation of a client that has never had an answer fails with
    /// [`ClientError::Io`] (the last reason) once every server has refused the connection,
    /// or closed it during the handshake, for this long: nothing is running there, or it is
    /// another cluster. `None` keeps trying until the timeout (a cluster that is starting).
    pub unreachable_give_up: Option<Duration>,
    /// The client or admin token sent in the handshake, for nodes started with token files
    /// (SECURITY.md); `None` sends none.
    pub token: Option<crate::node::net::auth::Token>,
    /// TLS to the nodes (`--cacert`; the `tls` feature): the CA their certificates must chain
    /// to, and this client's certificate when they ask for one. `None`: plain TCP.
    pub tls: Option<crate::tls::ClientTls>,
    /// When an attempt has waited this long for its answer, ask the other nodes who leads and
    /// move to a newer leader they name (a paused or cut-off leader is replaced in about an
    /// election timeout). Set it to the cluster's longest election timeout; `None` waits for
    /// the attempt timeout.
    pub leader_probe_after: Option<Duration>,
    /// After the first, ask again this often while the answer is still missing; also the
    /// longest wait for one node's status during such a probe.
    pub leader_probe_interval: Duration,
    /// How [`Client::query`] reads: [`ReadMode::Follower`] sends each read to the node this
    /// client is connected to (any node that knows the leader serves it), spreading reads
    /// over the cluster; the other modes go to the leader.
    pub read_mode: ReadMode,
}

/// [`ClientOptions::leader_probe_after`] by default: the longest election timeout of a node's
/// default settings (150-300 ms).
pub const LEADER_PROBE_AFTER_DEFAULT: Duration = Duration::from_millis(300);
/// [`ClientOptions::leader_probe_interval`] by default.
pub const LEADER_PROBE_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            cluster_id: CLUSTER_ID_UNKNOWN,
            unreachable_give_up: None,
            token: None,
            tls: None,
            leader_probe_after: Some(LEADER_PROBE_AFTER_DEFAULT),
            leader_probe_interval: LEADER_PROBE_INTERVAL_DEFAULT,
            read_mode: ReadMode::Linearizable,
        }
    }
}

/// Longest wait for one node's answer in [`ClientOptions::with_timeout`].
pub const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(1);
/// [`ClientOptions::unreachable_give_up`] in [`ClientOptions::with_timeout`]: long enough for
/// nodes that are just starting to open their port.
pub const UNREACHABLE_GIVE_UP: Duration = Duration::from_millis(500);

impl ClientOptions {
    /// Options for a command-line tool: operations end within `timeout` (at least 1 ms),
    /// each node is given at most [`ATTEMPT_TIMEOUT_MAX`] to answer, and a client that never
    /// reached any node gives up after [`UNREACHABLE_GIVE_UP`] of refused connections.
    pub fn with_timeout(timeout: Duration, cluster_id: u64) -> ClientOptions {
        let timeout = timeout.max(Duration::from_millis(1));
        ClientOptions {
            timeout,
            attempt_timeout: timeout.min(ATTEMPT_TIMEOUT_MAX),
            cluster_id,
            unreachable_give_up: Some(UNREACHABLE_GIVE_UP),
            ..ClientOptions::default()
        }
    }
}

/// A committed write or a served read (cRaft's `ClientResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResult {
    /// Term of the entry (for a read: of the leader that served it).
    pub term: Term,
    /// Index of the entry (for a read: the read index).
    pub index: LogIndex,
    /// The state machine's answer.
    pub response: Vec<u8>,
}

/// Why an operation failed. [`ClientError::is_definite`] says whether it certainly did not
/// take effect.
#[derive(Debug)]
pub enum ClientError {
    /// The deadline passed while the nodes named another leader (or none); nothing was
    /// proposed.
    NotLeader {
        /// The last leader named, if any.
        hint: Option<NodeId>,
    },
    /// The deadline passed. `definite` is false when an attempt may still commit.
    Timeout {
        /// True when no attempt can take effect.
        definite: bool,
    },
    /// The leader refused the operation because it is over its limits, until the deadline.
    Overloaded,
    /// The server answered with an error.
    Server {
        /// True when the operation certainly did not and will not take effect.
        definite: bool,
        /// The server's message.
        message: String,
    },
    /// A connection to one node failed (from [`Client::status_of`]).
    Io {
        /// The node.
        address: SocketAddr,
        /// What failed.
        error: io::Error,
    },
    /// A node answered with something this client cannot understand.
    Protocol {
        /// True when the operation certainly did not take effect.
        definite: bool,
        /// What was wrong.
        message: String,
    },
    /// The request was refused before sending (empty server list, key or value too long).
    InvalidInput(String),
}

impl ClientError {
    /// True when the operation certainly did not and will not take effect; false when its
    /// outcome is unknown.
    pub fn is_definite(&self) -> bool {
        match self {
            ClientError::NotLeader { .. }
            | ClientError::Overloaded
            | ClientError::Io { .. }
            | ClientError::InvalidInput(_) => true,
            ClientError::Timeout { definite }
            | ClientError::Server { definite, .. }
            | ClientError::Protocol { definite, .. } => *definite,
        }
    }

    /// True when a node refused the request for lack of a token's permission (SECURITY.md):
    /// asking again, or another node, cannot help.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, ClientError::Server { definite: true, message }
            if message.starts_with(crate::node::net::auth::PERMISSION_DENIED))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotLeader { hint: Some(id) } => write!(f, "not leader (leader is {id})"),
            ClientError::NotLeader { hint: None } => write!(f, "no leader known"),
            ClientError::Timeout { definite: true } => {
                write!(f, "timed out; the operation did not take effect")
            }
            ClientError::Timeout { definite: false } => {
                write!(f, "timed out; the outcome is unknown")
            }
            ClientError::Overloaded => write!(f, "leader overloaded"),
            ClientError::Server { message, .. } => write!(f, "server error: {message}"),
            ClientError::Io { address, error } => write!(f, "{address}: {error}"),
            ClientError::Protocol { message, .. } => write!(f, "protocol error: {message}"),
            ClientError::InvalidInput(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Result of client operations.
pub type Result<T> = std::result::Result<T, ClientError>;

/// One open connection, past the handshake.
struct Connection {
    /// Index into the server list.
    server: usize,
    stream: ConnStream,
    decoder: FrameDecoder,
    /// Reused for every read (allocating and zeroing it per request cost more CPU than the
    /// request's own system calls).
    read_buf: Box<[u8]>,
    /// The socket's current `SO_RCVTIMEO` / `SO_SNDTIMEO`, so they are set only when needed.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Connection {
    /// Makes the next blocking read end by `deadline`.
    fn bound_read(&mut self, deadline: Instant) -> io::Result<()> {
        let stream = self.stream.tcp();
        bound_wait(&mut self.read_timeout, deadline, |t| {
            stream.set_read_timeout(Some(t))
        })
    }

    /// Makes the next blocking write end by `deadline`.
    fn bound_write(&mut self, deadline: Instant) -> io::Result<()> {
        let stream = self.stream.tcp();
        bound_wait(&mut self.write_timeout, deadline, |t| {
            stream.set_write_timeout(Some(t))
        })
    }

    /// Writes `frame` whole by `deadline`.
    fn send(&mut self, frame: &[u8], deadline: Instant) -> io::Result<()> {
        self.bound_write(deadline)?;
        self.stream.write_all(frame)
    }
}

/// Keeps a socket timeout between half of and all of the time left until `deadline`, calling
/// `set` only when it is outside that range: a blocking call then never outlasts the
/// deadline, and back-to-back requests with the same time budget make no extra system call.
fn bound_wait(
    current: &mut Option<Duration>,
    deadline: Instant,
    set: impl FnOnce(Duration) -> io::Result<()>,
) -> io::Result<()> {
    let left = remaining(deadline)?;
    if current.is_some_and(|t| t <= left && t >= left / 2) {
        return Ok(());
    }
    set(left)?;
    *current = Some(left);
    Ok(())
}

/// A blocking client of an rcraft cluster. See the module docs.
pub struct Client {
    /// Every decision: leader, retries, session, failover.
    core: ClientCore,
    connection: Option<Connection>,
    /// The cluster id this client holds its servers to: `options.cluster_id`, else the one
    /// the first node that answered named; [`CLUSTER_ID_UNKNOWN`] until then. A node of
    /// another cluster (two clusters mixed in one server list) is refused.
    cluster_id: u64,
    /// Reused for every request's frame.
    frame: Vec<u8>,
}

impl Client {
    /// A client of the cluster at `servers` (in node-id order). Opens no connection:
    /// the first operation does.
    pub fn new(servers: &[SocketAddr], options: ClientOptions) -> Result<Client> {
        Ok(Client {
            cluster_id: options.cluster_id,
            core: ClientCore::new(servers, options)?,
            connection: None,
            frame: Vec::new(),
        })
    }

    /// A client of the cluster at `servers`, connected to one reachable node within
    /// `options.timeout` (else [`ClientError::Timeout`]).
    pub fn connect(servers: &[SocketAddr], options: ClientOptions) -> Result<Client> {
        let mut client = Client::new(servers, options)?;
        let options = client.core.options().clone();
        let deadline = Instant::now() + options.timeout;
        let mut backoff = options.backoff_min;
        loop {
            let target = client.core.round_robin();
            let attempt_deadline = deadline.min(Instant::now() + options.attempt_timeout);
            match client.ensure_connection(target, attempt_deadline) {
                Ok(()) => return Ok(client),
                Err(_) => client.core.advance_round_robin(target),
            }
            if !pause(&options, &mut backoff, deadline) {
                return Err(ClientError::Timeout { definite: true });
            }
        }
    }

    /// The id of this client's current session, assigned by the cluster when the client
    /// registered it; `None` before the first write and after the cluster forgot the session
    /// (the next write registers a new one).
    pub fn client_id(&self) -> Option<u64> {
        self.core.client_id()
    }

    /// The node this client believes leads, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.core.leader()
    }

    /// The server list, in node-id order.
    pub fn servers(&self) -> &[SocketAddr] {
        self.core.servers()
    }

    /// Replicate `command` and apply it, at most once even across retries. Registers a
    /// session first when the client has none (see the module docs). A command over
    /// [`COMMAND_BYTES_MAX`](crate::node::limits::COMMAND_BYTES_MAX) is refused before
    /// anything is sent ([`ClientError::InvalidInput`]).
    pub fn submit(&mut self, command: Vec<u8>) -> Result<ClientResult> {
        self.core.begin_write(command, Instant::now())?;
        self.drive()
    }

    /// A linearizable read answered by the state machine's `query`. A query over
    /// [`COMMAND_BYTES_MAX`](crate::node::limits::COMMAND_BYTES_MAX) is refused before
    /// anything is sent.
    pub fn query(&mut self, query: Vec<u8>) -> Result<ClientResult> {
        self.core.begin_read(query, Instant::now())?;
        self.drive()
    }

    /// Ask the leader to hand leadership to `target`.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<ClientResult> {
        let body = ClientRequestBody::TransferLeader { target };
        self.call(body, Effect::ReadOnly)
    }

    /// Asks the leader to move the cluster to `membership` (through a joint configuration
    /// when more than one voter changes) and waits until the change is committed and applied
    /// on the leader. Every member must have an address in the servers' configuration.
    ///
    /// With more than one voter changed, the answer comes when the joint configuration has
    /// committed; the leader proposes the final one on its own, and a further change is
    /// refused until that commits too (watch `leader_status`). One voter at a time needs no
    /// joint step.
    ///
    /// Retried across leader changes like a write: once an attempt may have reached a node,
    /// a failure is reported as not definite (the change may still commit). Proposing the
    /// configuration already in force succeeds, so retrying a change that did commit is
    /// harmless. Changes are not compare-and-set: two admins changing membership at once can
    /// overwrite each other's change.
    pub fn change_membership(&mut self, membership: Membership) -> Result<ClientResult> {
        let body = ClientRequestBody::ChangeMembership { membership };
        self.call(body, Effect::Write)
    }

    /// The status of the node that reports itself leader, found within the client's timeout
    /// (the last known leader first, then the leader other nodes name, then every node in
    /// turn). A named leader is found by the id the nodes report (not by list position), and
    /// when no listed address reports that id, by the address the naming node gives for it.
    /// [`ClientError::NotLeader`] with the last hint when none answered as leader.
    pub fn leader_status(&mut self) -> Result<NodeStatus> {
        let options = self.core.options().clone();
        let deadline = Instant::now() + options.timeout;
        let mut backoff = options.backoff_min;
        let mut hint = None;
        let mut hops_in_a_row = 0usize;
        // Which server reported which id.
        let mut reported: BTreeMap<NodeId, usize> = BTreeMap::new();
        loop {
            let target = self.core.leader_index().unwrap_or(self.core.round_robin());
            let mut followed_hint = false;
            match self.status_of(self.core.servers()[target]) {
                Ok(status) if status.role == Role::Leader => {
                    self.core.found_leader(target, status.term);
                    return Ok(status);
                }
                Ok(status) => {
                    reported.insert(status.id, target);
                    hint = status.leader.or(hint);
                    let next = status
                        .leader
                        .and_then(|id| self.server_of(id, target, &reported, deadline))
                        .filter(|&i| i != target);
                    match next {
                        Some(i) => {
                            self.core.set_leader(i);
                            followed_hint = true;
                        }
                        None => self.core.forget_leader(target),
                    }
                }
                Err(e) if e.is_permission_denied() => return Err(e),
                Err(e) => {
                    log::debug!("{}: no status: {e}", self.core.servers()[target]);
                    self.core.forget_leader(target);
                }
            }
            hops_in_a_row = if followed_hint { hops_in_a_row + 1 } else { 0 };
            // A fresh hint is tried at once; a hint cycle means an election is under way.
            let should_pause = !followed_hint || hops_in_a_row >= self.core.servers().len();
            if (should_pause && !pause(&options, &mut backoff, deadline))
                || Instant::now() >= deadline
            {
                return Err(ClientError::NotLeader { hint });
            }
        }
    }

    /// The server to ask for node `id`, named by `servers[from]`: the one that reported that
    /// id, else its position in the list unless that server reported another id, else the
    /// address `servers[from]` gives for it when asked for a read (added to the list).
    fn server_of(
        &mut self,
        id: NodeId,
        from: usize,
        reported: &BTreeMap<NodeId, usize>,
        deadline: Instant,
    ) -> Option<usize> {
        if let Some(&i) = reported.get(&id) {
            return Some(i);
        }
        let position = id.0 as usize;
        if position < self.core.servers().len() && !reported.values().any(|&i| i == position) {
            return Some(position);
        }
        // A follower answers a read with the leader's address; an empty query is harmless if
        // it happens to lead by now (the state machine refuses it).
        let probe = ClientRequestBody::Read {
            query: Vec::new(),
            mode: ReadMode::Linearizable,
        };
        let attempt_deadline = deadline.min(Instant::now() + self.core.options().attempt_timeout);
        match self.ask_once(from, probe, attempt_deadline) {
            Ok(ClientResponseBody::NotLeader {
                leader: Some(leader),
                leader_address,
            }) if leader == id => self.core.follow_hint(from, None, leader_address.as_deref()),
            _ => None,
        }
    }

    /// The status of the node at `address`, over a connection of its own, within one
    /// attempt timeout.
    pub fn status_of(&mut self, address: SocketAddr) -> Result<NodeStatus> {
        let timeout = self.core.options().attempt_timeout;
        self.status_within(address, timeout)
    }

    /// The status of the node at `address`, over a connection of its own, within `timeout`.
    fn status_within(&mut self, address: SocketAddr, timeout: Duration) -> Result<NodeStatus> {
        match self.exchange_alone(address, ClientRequestBody::Status, timeout)? {
            ClientResponseBody::Status(status) => Ok(*status),
            ClientResponseBody::Error { definite, message } => {
                Err(ClientError::Server { definite, message })
            }
            other => Err(ClientError::Protocol {
                definite: true,
                message: format!("unexpected answer to status: {other:?}"),
            }),
        }
    }

    /// The per-stage write latency of the node at `address` since it started, over a
    /// connection of its own, within one attempt timeout.
    pub fn latency_of(&mut self, address: SocketAddr) -> Result<Vec<StageLatency>> {
        let timeout = self.core.options().attempt_timeout;
        match self.exchange_alone(address, ClientRequestBody::Latency, timeout)? {
            ClientResponseBody::Latency(stages) => Ok(stages),
            ClientResponseBody::Error { definite, message } => {
                Err(ClientError::Server { definite, message })
            }
            other => Err(ClientError::Protocol {
                definite: true,
                message: format!("unexpected answer to a latency request: {other:?}"),
            }),
        }
    }

    /// The flight recorder of the node at `address`: its recent notable events, oldest
    /// first, over a connection of its own, within one attempt timeout.
    pub fn events_of(&mut self, address: SocketAddr) -> Result<Vec<RecordedEvent>> {
        let timeout = self.core.options().attempt_timeout;
        match self.exchange_alone(address, ClientRequestBody::Events, timeout)? {
            ClientResponseBody::Events(events) => Ok(events),
            ClientResponseBody::Error { definite, message } => {
                Err(ClientError::Server { definite, message })
            }
            other => Err(ClientError::Protocol {
                definite: true,
                message: format!("unexpected answer to an events request: {other:?}"),
            }),
        }
    }

    /// Asks the node at `address` to snapshot its state machine now, over a connection of
    /// its own; waits up to one attempt timeout. Returns the snapshot's index, term and size.
    pub fn snapshot_of(&mut self, address: SocketAddr) -> Result<SnapshotResult> {
        let timeout = self.core.options().attempt_timeout;
        match self.exchange_alone(address, ClientRequestBody::Snapshot, timeout)? {
            ClientResponseBody::Ok {
                term,
                index,
                result,
            } => SnapshotResult::from_answer(term, index, &result).ok_or(ClientError::Protocol {
                definite: true,
                message: "the snapshot answer has no size".to_string(),
            }),
            ClientResponseBody::Error { definite, message } => {
                Err(ClientError::Protocol { definite, message })
            }
            other => Err(ClientError::Protocol {
                definite: true,
                message: format!("unexpected answer to snapshot: {other:?}"),
            }),
        }
    }

    /// Data of the current snapshot of the node at `servers[server]` from `offset`, for a
    /// backup: one chunk (up to the node's `snapshot_chunk_bytes`) with the snapshot's
    /// metadata, over this client's connection to that node (kept between calls, so the node
    /// checks a backup read in sequence as it goes), within one attempt timeout. `index` names
    /// the snapshot (0: whichever is current); a node whose current snapshot is another answers
    /// [`ClientError::Server`]. The caller checks `chunk_crc` and, at the end, the whole data
    /// against `meta.checksum`.
    pub fn snapshot_chunk_of(
        &mut self,
        server: usize,
        index: LogIndex,
        offset: u64,
    ) -> Result<SnapshotChunk> {
        let address =
            *self.core.servers().get(server).ok_or_else(|| {
                ClientError::InvalidInput(format!("no server at position {server}"))
            })?;
        let deadline = Instant::now() + self.core.options().attempt_timeout;
        let body = ClientRequestBody::ReadSnapshot { index, offset };
        let answer = self
            .ask_once(server, body, deadline)
            .map_err(|why| ClientError::Io {
                address,
                error: io::Error::new(io::ErrorKind::TimedOut, why),
            })?;
        match answer {
            ClientResponseBody::SnapshotChunk(chunk) => Ok(*chunk),
            ClientResponseBody::Error { definite, message } => {
                Err(ClientError::Server { definite, message })
            }
            ClientResponseBody::Overloaded => Err(ClientError::Overloaded),
            other => Err(ClientError::Protocol {
                definite: true,
                message: format!("unexpected answer to a snapshot read: {other:?}"),
            }),
        }
    }

    /// One request to the node at `address` over a connection of its own, answered within
    /// `timeout`; any failure to get an answer is [`ClientError::Io`].
    fn exchange_alone(
        &mut self,
        address: SocketAddr,
        body: ClientRequestBody,
        timeout: Duration,
    ) -> Result<ClientResponseBody> {
        let io_error = |error| ClientError::Io { address, error };
        let deadline = Instant::now() + timeout;
        let options = self.core.options();
        let mut connection =
            open_connection(address, usize::MAX, options, &mut self.cluster_id, deadline)
                .map_err(io_error)?;
        let request = ClientRequest {
            request_id: self.core.take_request_id(),
            body,
        };
        exchange(&mut connection, &request, &mut self.frame, deadline)
            .map_err(|why| io_error(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// One request to `servers[server]` over this client's connection (opened if needed),
    /// outside any operation; the connection is dropped when no answer comes.
    fn ask_once(
        &mut self,
        server: usize,
        body: ClientRequestBody,
        deadline: Instant,
    ) -> std::result::Result<ClientResponseBody, String> {
        self.ensure_connection(server, deadline)
            .map_err(|e| e.to_string())?;
        let request = ClientRequest {
            request_id: self.core.take_request_id(),
            body,
        };
        let connection = self.connection.as_mut().expect("connection just ensured");
        let answer = exchange(connection, &request, &mut self.frame, deadline);
        if answer.is_err() {
            self.drop_connection();
        }
        answer
    }

    /// Run one operation (other than a session write) to completion or to the timeout.
    fn call(&mut self, body: ClientRequestBody, effect: Effect) -> Result<ClientResult> {
        self.core.begin(body, effect, Instant::now());
        self.drive()
    }

    /// Does what the core says until the operation ends.
    fn drive(&mut self) -> Result<ClientResult> {
        loop {
            match self.core.poll(Instant::now()) {
                Next::Done(result) => return result,
                Next::Sleep { until } => {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                Next::Send {
                    server,
                    deadline,
                    reconnect,
                } => self.send(server, deadline, reconnect),
                Next::AwaitAnswer { until } => self.await_answer(until),
                Next::Probe { servers } => self.probe(&servers),
            }
        }
    }

    /// Sends the core's request to `servers[server]` and reports how that went.
    fn send(&mut self, server: usize, deadline: Instant, reconnect: bool) {
        if reconnect {
            self.drop_connection();
        }
        if let Err(e) = self.ensure_connection(server, deadline) {
            return self.core.on_connect_failed(e, Instant::now());
        }
        self.frame.clear();
        if let Err(e) = encode_client_request(self.core.request(), &mut self.frame) {
            let why = format!("cannot encode request: {e}");
            return self.core.on_send_failed(why, Instant::now());
        }
        let connection = self.connection.as_mut().expect("connection just ensured");
        // A write that fails leaves at most part of the frame with the server, which cannot
        // decode it into a request: the request cannot take effect.
        match connection.send(&self.frame, deadline) {
            Ok(()) => self.core.on_sent(Instant::now()),
            Err(e) => {
                self.drop_connection();
                self.core.on_send_failed(e.to_string(), Instant::now());
            }
        }
    }

    /// Reads until the answer to the request in flight arrives or `until` passes.
    fn await_answer(&mut self, until: Instant) {
        let request_id = self.core.request().request_id;
        let Some(connection) = self.connection.as_mut() else {
            return self.core.on_lost("no connection".into(), Instant::now());
        };
        match read_response(connection, request_id, until) {
            Ok(body) => self.core.on_answer(request_id, body, Instant::now()),
            // The core decides at its next poll whether the attempt is over.
            Err(None) => {}
            Err(Some(why)) => {
                self.drop_connection();
                self.core.on_lost(why, Instant::now());
            }
        }
    }

    /// Asks `servers` for their status, one after the other, each within the probe interval,
    /// until the core moves on.
    fn probe(&mut self, servers: &[usize]) {
        let timeout = self.core.options().leader_probe_interval;
        for &server in servers {
            let address = self.core.servers()[server];
            match self.status_within(address, timeout) {
                Ok(status) => self.core.on_status(server, &status, Instant::now()),
                Err(e) => log::debug!("{address}: no status while probing: {e}"),
            }
            if !self.core.awaits_answer() {
                return;
            }
        }
    }

    fn ensure_connection(&mut self, target: usize, deadline: Instant) -> io::Result<()> {
        if self.connection.as_ref().is_some_and(|c| c.server == target) {
            return Ok(());
        }
        self.drop_connection();
        let address = self.core.servers()[target];
        let options = self.core.options();
        let connection = open_connection(address, target, options, &mut self.cluster_id, deadline)?;
        self.connection = Some(connection);
        Ok(())
    }

    fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.stream.tcp().shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Sleep for the current backoff (doubling it), unless that would pass the deadline.
/// Returns false when the deadline has come.
fn pause(options: &ClientOptions, backoff: &mut Duration, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep((*backoff).min(deadline - now));
    *backoff = (*backoff * 2).min(options.backoff_max);
    Instant::now() < deadline
}

/// The handshake a client sends when it opens a connection (the only place it is built),
/// with the token block when the options carry a token (`wire/PROTOCOL.md` section 2.1).
pub fn handshake(options: &ClientOptions) -> Vec<u8> {
    let hello = Handshake::client(options.cluster_id);
    let Some(token) = &options.token else {
        return hello.encode().to_vec();
    };
    let mut bytes = hello.with_auth().encode().to_vec();
    let len = u16::try_from(token.bytes().len()).expect("a token is at most 1024 bytes");
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(token.bytes());
    bytes
}

/// Checks the handshake a node answered with: a node of this client's cluster.
pub fn check_handshake(theirs: &[u8; HANDSHAKE_BYTES], options: &ClientOptions) -> io::Result<()> {
    check_cluster_of(theirs, options.cluster_id).map(drop)
}

/// Checks that the answering node is of cluster `expected` (any, when unknown) and returns
/// the cluster id it named.
fn check_cluster_of(theirs: &[u8; HANDSHAKE_BYTES], expected: u64) -> io::Result<u64> {
    let invalid = |e: rcraft_wire::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let handshake = Handshake::decode(theirs).map_err(invalid)?;
    handshake.check_cluster(expected).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the node belongs to cluster {:#x}, not {expected:#x} (given with \
                 --cluster-id, or named by the first node this client reached): do the \
                 servers listed belong to two clusters?",
                handshake.cluster_id
            ),
        )
    })?;
    Ok(handshake.cluster_id)
}

/// Connect to `address`, exchange handshakes and check the cluster id against `cluster_id`
/// (learning it when unknown), all by `deadline`.
fn open_connection(
    address: SocketAddr,
    server: usize,
    options: &ClientOptions,
    cluster_id: &mut u64,
    deadline: Instant,
) -> io::Result<Connection> {
    let tcp = TcpStream::connect_timeout(&address, remaining(deadline)?)?;
    tcp.set_nodelay(true)?;
    let write_timeout = remaining(deadline)?;
    tcp.set_write_timeout(Some(write_timeout))?;
    tcp.set_read_timeout(Some(write_timeout))?;
    let mut stream = ConnStream::open(tcp, options.tls.as_ref(), address)?;
    stream.write_all(&handshake(options))?;
    let mut theirs = [0u8; HANDSHAKE_BYTES];
    let read_timeout = remaining(deadline)?;
    stream.tcp().set_read_timeout(Some(read_timeout))?;
    stream
        .read_exact(&mut theirs)
        .map_err(|e| handshake_error(e, read_timeout, options.cluster_id))?;
    let theirs = check_cluster_of(&theirs, *cluster_id)?;
    if *cluster_id == CLUSTER_ID_UNKNOWN {
        *cluster_id = theirs;
    }
    Ok(Connection {
        server,
        stream,
        decoder: FrameDecoder::new(FRAME_BYTES_MAX),
        read_buf: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
        read_timeout: Some(read_timeout),
        write_timeout: Some(write_timeout),
    })
}

/// The handshake's read failed: say why in the words an operator needs. A node closes the
/// connection without answering when the cluster id differs (its log says so).
pub fn handshake_error(e: io::Error, waited: Duration, cluster_id: u64) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            if cluster_id == CLUSTER_ID_UNKNOWN =>
        {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the node closed the connection during the handshake: does it need TLS (give \
                 --cacert) or a token (--token-file)? (the node's log says why)",
            )
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "the node closed the connection during the handshake: is it a node of \
                 cluster {cluster_id:#x} (give --cluster-id or --config), and does it need TLS \
                 (give --cacert) or a token (--token-file)? (the node's log says why)"
            ),
        ),
        // A TLS alert, e.g. a node asking for a client certificate (--client-cert-auth).
        io::ErrorKind::InvalidData => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS: {e} (the node's log says why)"),
        ),
        _ if is_timeout(&e) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no handshake: timed out after {} ms", waited.as_millis()),
        ),
        _ => e,
    }
}

/// True for the errors a blocking socket call reports when its timeout ends.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Time left until `deadline`, at least [`SOCKET_TIMEOUT_MIN`]; `TimedOut` once it passed.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    Ok(left.max(SOCKET_TIMEOUT_MIN))
}

/// Write one request (encoded into `frame`) and read frames until its response arrives or
/// `deadline` passes; `Err` says why no answer came.
fn exchange(
    connection: &mut Connection,
    request: &ClientRequest,
    frame: &mut Vec<u8>,
    deadline: Instant,
) -> std::result::Result<ClientResponseBody, String> {
    let started = Instant::now();
    frame.clear();
    encode_client_request(request, frame).map_err(|e| format!("cannot encode request: {e}"))?;
    connection
        .send(frame, deadline)
        .map_err(|e| e.to_string())?;
    match read_response(connection, request.request_id, deadline) {
        Ok(body) => Ok(body),
        Err(Some(why)) => Err(why),
        Err(None) => Err(format!(
            "no answer: timed out after {} ms",
            started.elapsed().as_millis()
        )),
    }
}

/// Reads until the answer to `request_id` arrives. `Err(None)` when the deadline passed
/// (the caller says after how long), `Err(Some(why))` for any other failure.
fn read_response(
    connection: &mut Connection,
    request_id: u64,
    deadline: Instant,
) -> std::result::Result<ClientResponseBody, Option<String>> {
    let failed = |e: &dyn fmt::Display| Some(e.to_string());
    loop {
        while let Some(frame) = connection.decoder.next_frame().map_err(|e| failed(&e))? {
            let response = frame.to_client_response().map_err(|e| failed(&e))?;
            // Answers to earlier, abandoned requests on this connection are skipped.
            if response.request_id == request_id {
                return Ok(response.body);
            }
        }
        match connection.bound_read(deadline) {
            Err(e) if is_timeout(&e) => return Err(None),
            Err(e) => return Err(failed(&e)),
            Ok(()) => {}
        }
        match connection.stream.read(&mut connection.read_buf) {
            Ok(0) => return Err(Some("connection closed".to_string())),
            Ok(n) => connection.decoder.push(&connection.read_buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The socket timeout may end before the deadline (see `bound_wait`): try again
            // until the deadline itself passes.
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) if is_timeout(&e) => return Err(None),
            Err(e) => return Err(failed(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvResponse, VALUE_BYTES_MAX};
    use crate::kv_client::{CasOutcome, KvClient};
    use crate::node::limits::COMMAND_BYTES_MAX;
    use rcraft_wire::Session;
    use rcraft_wire::{ClientResponse, encode_client_response};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What a fake node does with one request: answer it, or close the connection.
    enum Reply {
        Answer(Box<ClientResponseBody>),
        Close,
        /// Never answer this request (a node that stopped after receiving it).
        Silence,
    }

    fn answer(body: ClientResponseBody) -> Reply {
        Reply::Answer(Box::new(body))
    }

    /// A node that answers the handshake as a node of `cluster_id` and nothing else.
    fn silent_node(cluster_id: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(&Handshake::peer(cluster_id, NodeId(0)).encode());
                held.push(stream);
            }
        });
        address
    }

    #[test]
    fn a_client_holds_its_servers_to_the_first_cluster_that_answered() {
        let (seven, eight) = (silent_node(7), silent_node(8));
        let mut client = Client::new(&[seven, eight], fast_options()).unwrap();
        // No answer to the request, but the handshake named cluster 7.
        assert!(client.status_of(seven).is_err());
        match client.status_of(eight) {
            Err(ClientError::Io { error, .. }) => assert!(
                error
                    .to_string()
                    .contains("belongs to cluster 0x8, not 0x7"),
                "{error}"
            ),
            other => panic!("a node of another cluster answered: {other:?}"),
        }
        // A client given a cluster id refuses any other from the start.
        let options = ClientOptions {
            cluster_id: 8,
            ..fast_options()
        };
        let mut client = Client::new(&[seven], options).unwrap();
        match client.status_of(seven) {
            Err(ClientError::Io { error, .. }) => {
                assert!(error.to_string().contains("not 0x8"), "{error}")
            }
            other => panic!("a node of another cluster answered: {other:?}"),
        }
    }

    type Handler = Box<dyn FnMut(&ClientRequest) -> Reply + Send>;

    /// A node stand-in speaking the real handshake and frames, recording every request.
    struct FakeNode {
        address: SocketAddr,
        requests: Arc<Mutex<Vec<ClientRequest>>>,
    }

    impl FakeNode {
        fn start(mut handler: Handler) -> FakeNode {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    serve_connection(stream, &mut handler, &seen);
                }
            });
            FakeNode { address, requests }
        }

        fn requests(&self) -> Vec<ClientRequest> {
            self.requests.lock().unwrap().clone()
        }
    }

    fn serve_connection(
        mut stream: TcpStream,
        handler: &mut Handler,
        seen: &Mutex<Vec<ClientRequest>>,
    ) {
        let mut theirs = [0u8; HANDSHAKE_BYTES];
        if stream.read_exact(&mut theirs).is_err() {
            return;
        }
        let ours = Handshake::peer(crate::config::CLUSTER_ID_DEFAULT, NodeId(0)).encode();
        if stream.write_all(&ours).is_err() {
            return;
        }
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            decoder.push(&chunk[..n]);
            while let Ok(Some(frame)) = decoder.next_frame() {
                let request = frame.to_client_request().unwrap();
                seen.lock().unwrap().push(request.clone());
                let body = match handler(&request) {
                    Reply::Answer(body) => *body,
                    Reply::Close => return,
                    Reply::Silence => continue,
                };
                let mut out = Vec::new();
                let response = ClientResponse {
                    request_id: request.request_id,
                    body,
                };
                encode_client_response(&response, &mut out).unwrap();
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }

    fn ok(result: &[u8]) -> Reply {
        answer(ClientResponseBody::Ok {
            term: Term(3),
            index: LogIndex(7),
            result: result.to_vec(),
        })
    }

    /// A follower read goes to the node the client is connected to, which serves it; once
    /// that node refuses one, the read follows the hint to the leader instead of asking the
    /// refusing node again.
    #[test]
    fn follower_reads_stay_on_the_connected_node_until_it_refuses() {
        let leader = FakeNode::start(Box::new(|_| ok(b"from the leader")));
        let leader_address = leader.address.to_string();
        let mut served = 0;
        let follower = FakeNode::start(Box::new(move |_| {
            served += 1;
            if served == 1 {
                return ok(b"from the follower");
            }
            answer(ClientResponseBody::NotLeader {
                leader: Some(NodeId(1)),
                leader_address: Some(leader_address.clone()),
            })
        }));
        let options = ClientOptions {
            read_mode: ReadMode::Follower,
            ..fast_options()
        };
        let mut client = Client::new(&[follower.address, leader.address], options).unwrap();
        assert_eq!(
            client.query(b"q".to_vec()).unwrap().response,
            b"from the follower"
        );
        assert_eq!(
            client.query(b"q".to_vec()).unwrap().response,
            b"from the leader"
        );
        assert_eq!(follower.requests().len(), 2);
        assert_eq!(leader.requests().len(), 1);
        for request in follower.requests().iter().chain(&leader.requests()) {
            assert!(
                matches!(
                    request.body,
                    ClientRequestBody::Read {
                        mode: ReadMode::Follower,
                        ..
                    }
                ),
                "{request:?}"
            );
        }
    }

    fn fast_options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_millis(600),
            attempt_timeout: Duration::from_millis(150),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            cluster_id: CLUSTER_ID_UNKNOWN,
            unreachable_give_up: None,
            token: None,
            tls: None,
            leader_probe_after: None,
            leader_probe_interval: Duration::from_millis(50),
            read_mode: ReadMode::Linearizable,
        }
    }

    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    fn session_of(request: &ClientRequest) -> Option<Session> {
        match &request.body {
            ClientRequestBody::Write { session, .. } => *session,
            _ => None,
        }
    }

    /// The sessions of the writes a node received, registrations left out.
    fn write_sessions(node: &FakeNode) -> Vec<Session> {
        let sessions = node
            .requests()
            .iter()
            .filter_map(session_of)
            .collect::<Vec<_>>();
        sessions
            .into_iter()
            .filter(|s| *s != Session::REGISTER)
            .collect()
    }

    /// Answers session registrations as a leader does (client ids 101, 102, ...: the
    /// registration's index) and hands every other request to `handler`.
    fn registering(mut handler: impl FnMut(&ClientRequest) -> Reply + Send + 'static) -> Handler {
        let mut index = 100u64;
        Box::new(move |request| {
            if session_of(request) != Some(Session::REGISTER) {
                return handler(request);
            }
            index += 1;
            answer(ClientResponseBody::Ok {
                term: Term(3),
                index: LogIndex(index),
                result: index.to_le_bytes().to_vec(),
            })
        })
    }

    fn session_expired(client_id: u64) -> Reply {
        answer(ClientResponseBody::Error {
            definite: true,
            message: format!(
                "{} client {client_id} is unknown",
                rcraft_wire::SESSION_EXPIRED_PREFIX
            ),
        })
    }

    #[test]
    fn follows_not_leader_hints_and_remembers_the_leader() {
        let follower = FakeNode::start(Box::new(|_| {
            answer(ClientResponseBody::NotLeader {
                leader: Some(NodeId(1)),
                leader_address: None,
            })
        }));
        let leader = FakeNode::start(registering(|_| ok(&KvResponse::Done.encode())));
        let servers = [follower.address, leader.address];
        let mut client = KvClient::new(&servers, fast_options()).unwrap();
        client.put(b"k", b"v").unwrap();
        client.put(b"k", b"w").unwrap();
        assert_eq!(follower.requests().len(), 1);
        assert_eq!(leader.requests().len(), 3, "one registration, two writes");
        assert_eq!(client.leader(), Some(NodeId(1)));
    }

    #[test]
    fn submit_returns_term_index_and_response() {
        let node = FakeNode::start(registering(|_| ok(b"answer")));
        let mut client = KvClient::connect(&[node.address], fast_options()).unwrap();
        let result = client.submit(b"cmd".to_vec()).unwrap();
        assert_eq!(result.term, Term(3));
        assert_eq!(result.index, LogIndex(7));
        assert_eq!(result.response, b"answer");
    }

    #[test]
    fn a_retried_write_reuses_its_sequence_and_the_next_write_does_not() {
        let mut calls = 0;
        let node = FakeNode::start(registering(move |_| {
            calls += 1;
            if calls == 1 {
                Reply::Close
            } else {
                ok(&KvResponse::Done.encode())
            }
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        assert_eq!(
            client.client_id(),
            None,
            "no session before the first write"
        );
        client.put(b"k", b"v").unwrap();
        client.put(b"k", b"w").unwrap();
        let registrations = node
            .requests()
            .iter()
            .filter(|r| session_of(r) == Some(Session::REGISTER))
            .count();
        assert_eq!(registrations, 1);
        let sessions = write_sessions(&node);
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions[0], sessions[1], "retry reuses the session");
        assert_eq!(sessions[0].sequence, 1);
        assert_eq!(sessions[2].sequence, sessions[1].sequence + 1);
        assert_eq!(Some(sessions[2].client_id), client.client_id());
        assert_eq!(
            client.client_id(),
            Some(101),
            "the id the registration answered"
        );
    }

    #[test]
    fn a_first_attempt_refused_as_session_expired_is_sent_again_in_a_new_session() {
        let mut writes = 0;
        let node = FakeNode::start(registering(move |request| {
            writes += 1;
            match session_of(request) {
                Some(session) if writes == 1 => session_expired(session.client_id),
                _ => ok(&KvResponse::Done.encode()),
            }
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        client.put(b"k", b"v").unwrap();
        let first = Session {
            client_id: 101,
            sequence: 1,
        };
        let again = Session {
            client_id: 102,
            sequence: 1,
        };
        assert_eq!(write_sessions(&node), vec![first, again]);
        assert_eq!(client.client_id(), Some(102));
    }

    #[test]
    fn a_retry_refused_as_session_expired_has_an_unknown_outcome() {
        let mut writes = 0;
        let node = FakeNode::start(registering(move |request| {
            writes += 1;
            match (writes, session_of(request)) {
                // The first attempt may have been applied: its answer is lost.
                (1, _) => Reply::Close,
                // Meanwhile the cluster forgot the session.
                (2, Some(session)) => session_expired(session.client_id),
                _ => ok(&KvResponse::Done.encode()),
            }
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(
            matches!(&e, ClientError::Server { definite: false, message }
                if message.contains("session expired")),
            "{e:?}"
        );
        assert!(!e.is_definite());
        assert_eq!(client.client_id(), None, "the forgotten session is dropped");
        // The next write registers a new session; the unknown one is not sent again.
        client.put(b"k", b"w").unwrap();
        let sessions = write_sessions(&node);
        assert_eq!(sessions.len(), 3, "{sessions:?}");
        assert_eq!(sessions[0], sessions[1]);
        assert_eq!(
            sessions[2],
            Session {
                client_id: 102,
                sequence: 1
            }
        );
    }

    #[test]
    fn unreachable_nodes_are_skipped() {
        let node = FakeNode::start(Box::new(|_| ok(&KvResponse::Value(None).encode())));
        let servers = [closed_port(), node.address];
        let mut client = KvClient::new(&servers, fast_options()).unwrap();
        assert_eq!(client.get(b"k").unwrap(), None);
    }

    #[test]
    fn nothing_reachable_is_a_definite_timeout() {
        let mut client = KvClient::new(&[closed_port()], fast_options()).unwrap();
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { definite: true }),
            "{e:?}"
        );
        assert!(KvClient::connect(&[closed_port()], fast_options()).is_err());
    }

    #[test]
    fn an_unanswered_write_has_an_unknown_outcome() {
        let node = FakeNode::start(registering(|_| Reply::Close));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { definite: false }),
            "{e:?}"
        );
        assert!(!e.is_definite());
        let e = client.get(b"k").unwrap_err();
        assert!(e.is_definite(), "a read never takes effect: {e:?}");
    }

    #[test]
    fn a_silent_node_does_not_hang_the_client() {
        // Accepts connections and handshakes but never reads a request.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(
                    &Handshake::peer(crate::config::CLUSTER_ID_DEFAULT, NodeId(0)).encode(),
                );
                held.push(stream);
            }
        });
        let mut client = KvClient::new(&[address], fast_options()).unwrap();
        // The session registration is never answered, so the write itself is never sent.
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { definite: true }),
            "{e:?}"
        );
        let e = client.status_of(address).unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e:?}");
    }

    #[test]
    fn no_leader_anywhere_reports_not_leader() {
        let node = FakeNode::start(Box::new(|_| {
            answer(ClientResponseBody::NotLeader {
                leader: None,
                leader_address: None,
            })
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(matches!(e, ClientError::NotLeader { hint: None }), "{e:?}");
        assert!(e.is_definite());
        assert!(node.requests().len() > 1, "retried until the deadline");
    }

    #[test]
    fn oversized_commands_queries_and_values_are_refused_before_sending() {
        let node = FakeNode::start(registering(|_| ok(b"")));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let over = COMMAND_BYTES_MAX + 1;
        let refusals = [
            (
                client.submit(vec![0; over]).unwrap_err(),
                over,
                COMMAND_BYTES_MAX,
            ),
            (
                client.query(vec![0; over]).unwrap_err(),
                over,
                COMMAND_BYTES_MAX,
            ),
            (
                client.put(b"k", &vec![0; VALUE_BYTES_MAX + 1]).unwrap_err(),
                VALUE_BYTES_MAX + 1,
                VALUE_BYTES_MAX,
            ),
        ];
        for (e, bytes, max) in refusals {
            assert!(matches!(e, ClientError::InvalidInput(_)), "{e:?}");
            assert!(e.is_definite());
            let message = e.to_string();
            let named = message.contains(&bytes.to_string()) && message.contains(&max.to_string());
            assert!(named, "the size and the limit are named: {message}");
        }
        assert!(node.requests().is_empty(), "nothing was sent");
        client.submit(vec![0; 10]).unwrap();
        // The session's registration, then the command.
        assert_eq!(node.requests().len(), 2);
    }

    #[test]
    fn definite_server_errors_are_returned_at_once() {
        let node = FakeNode::start(registering(|_| {
            answer(ClientResponseBody::Error {
                definite: true,
                message: "too large".into(),
            })
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let e = client.submit(b"x".to_vec()).unwrap_err();
        assert!(
            matches!(e, ClientError::Server { definite: true, .. }),
            "{e:?}"
        );
        assert_eq!(node.requests().len(), 2, "a registration and the write");
    }

    #[test]
    fn overloaded_until_the_deadline_is_definite() {
        let node = FakeNode::start(Box::new(|_| answer(ClientResponseBody::Overloaded)));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let e = client.put(b"k", b"v").unwrap_err();
        assert!(matches!(e, ClientError::Overloaded), "{e:?}");
    }

    #[test]
    fn kv_helpers_decode_answers() {
        let node = FakeNode::start(registering(|request| {
            let ClientRequestBody::Write { command, .. } = &request.body else {
                return ok(&KvResponse::Value(Some(b"v".to_vec())).encode());
            };
            match KvCommand::decode(command).unwrap() {
                KvCommand::Cas { .. } => ok(&KvResponse::Cas {
                    swapped: false,
                    current: Some(b"old".to_vec()),
                }
                .encode()),
                _ => ok(&KvResponse::Error("refused".into()).encode()),
            }
        }));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        assert_eq!(client.get(b"k").unwrap(), Some(b"v".to_vec()));
        let outcome = client.cas(b"k", Some(b"a"), b"b").unwrap();
        assert_eq!(
            outcome,
            CasOutcome {
                swapped: false,
                current: Some(b"old".to_vec())
            }
        );
        let e = client.delete(b"k").unwrap_err();
        assert!(
            matches!(e, ClientError::Server { definite: true, .. }),
            "{e:?}"
        );
        let e = client.put(b"", b"v").unwrap_err();
        assert!(matches!(e, ClientError::InvalidInput(_)), "{e:?}");
    }

    fn status_answer(id: u64, role: Role, leader: Option<u64>) -> Reply {
        status_in_term(id, role, leader, 2)
    }

    fn status_in_term(id: u64, role: Role, leader: Option<u64>, term: u64) -> Reply {
        answer(ClientResponseBody::Status(Box::new(NodeStatus {
            id: NodeId(id),
            role,
            term: Term(term),
            leader: leader.map(NodeId),
            commit_index: LogIndex(5),
            applied_index: LogIndex(5),
            last_index: LogIndex(5),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0), NodeId(1)],
            learners: vec![],
            membership: Membership::with_voters([NodeId(0), NodeId(1)]),
            replication: Vec::new(),
            repairing: None,
            votes_unknown: None,
            lost: None,
        })))
    }

    #[test]
    fn leader_status_follows_the_leader_a_follower_names() {
        let follower = FakeNode::start(Box::new(|_| status_answer(0, Role::Follower, Some(1))));
        let leader = FakeNode::start(Box::new(|_| status_answer(1, Role::Leader, Some(1))));
        let mut client =
            KvClient::new(&[follower.address, leader.address], fast_options()).unwrap();
        let status = client.leader_status().unwrap();
        assert_eq!(status.id, NodeId(1));
        assert_eq!(client.leader(), Some(NodeId(1)));
        assert_eq!(follower.requests().len(), 1);
    }

    #[test]
    fn leader_status_without_a_leader_is_not_leader() {
        let node = FakeNode::start(Box::new(|_| status_answer(0, Role::Candidate, None)));
        let mut client = KvClient::new(&[node.address, closed_port()], fast_options()).unwrap();
        let e = client.leader_status().unwrap_err();
        assert!(matches!(e, ClientError::NotLeader { hint: None }), "{e:?}");
    }

    #[test]
    fn a_membership_change_is_sent_and_an_unanswered_one_has_an_unknown_outcome() {
        let target = Membership::with_voters([NodeId(0), NodeId(2)]);
        let node = FakeNode::start(Box::new(|_| ok(b"")));
        let mut client = KvClient::new(&[node.address], fast_options()).unwrap();
        let result = client.change_membership(target.clone()).unwrap();
        assert_eq!(result.index, LogIndex(7));
        let sent = node.requests();
        assert!(
            matches!(&sent[0].body, ClientRequestBody::ChangeMembership { membership } if *membership == target),
            "{sent:?}"
        );
        let silent = FakeNode::start(Box::new(|_| Reply::Close));
        let mut client = KvClient::new(&[silent.address], fast_options()).unwrap();
        let e = client.change_membership(target).unwrap_err();
        assert!(!e.is_definite(), "{e:?}");
    }

    /// Options for the failover tests: attempts as long as the whole deadline, so only asking
    /// the other nodes who leads can end an unanswered attempt early.
    fn probing_options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            leader_probe_after: Some(Duration::from_millis(50)),
            leader_probe_interval: Duration::from_millis(50),
            ..fast_options()
        }
    }

    #[test]
    fn a_silent_leader_is_left_for_the_newer_leader_another_node_names() {
        // Node 0 leads in term 3, registers the session, then stops answering.
        let old = FakeNode::start(registering(|_| Reply::Silence));
        let new = FakeNode::start(Box::new(|request| match &request.body {
            // Elected in term 4, after the term the old leader answered in (3).
            ClientRequestBody::Status => status_in_term(1, Role::Leader, Some(1), 4),
            _ => ok(&KvResponse::Done.encode()),
        }));
        let mut client = KvClient::new(&[old.address, new.address], probing_options()).unwrap();
        // Without the probe this write would wait out its 30 s attempt and time out.
        client.put(b"k", b"v").unwrap();
        assert_eq!(client.leader(), Some(NodeId(1)));
        let sent_to_old = write_sessions(&old);
        let sent_to_new = write_sessions(&new);
        assert_eq!(sent_to_old.len(), 1, "{sent_to_old:?}");
        assert_eq!(
            sent_to_new, sent_to_old,
            "the retry keeps its session and sequence"
        );
        let statuses = new
            .requests()
            .iter()
            .filter(|r| r.body == ClientRequestBody::Status)
            .count();
        assert!(statuses >= 1);
    }

    #[test]
    fn a_probe_naming_the_same_leader_keeps_the_attempt_waiting() {
        // The leader answers the write late; the other node still names it (term 2 < 3).
        let mut writes = 0;
        let leader = FakeNode::start(registering(move |_| {
            writes += 1;
            if writes == 1 {
                std::thread::sleep(Duration::from_millis(400));
            }
            ok(&KvResponse::Done.encode())
        }));
        let follower = FakeNode::start(Box::new(|request| match &request.body {
            ClientRequestBody::Status => status_answer(1, Role::Follower, Some(0)),
            _ => answer(ClientResponseBody::NotLeader {
                leader: Some(NodeId(0)),
                leader_address: None,
            }),
        }));
        let servers = [leader.address, follower.address];
        let mut client = KvClient::new(&servers, probing_options()).unwrap();
        client.put(b"k", b"v").unwrap();
        assert_eq!(client.leader(), Some(NodeId(0)));
        let asked = follower.requests();
        assert!(!asked.is_empty(), "the slow answer made the client ask");
        assert!(
            asked.iter().all(|r| r.body == ClientRequestBody::Status),
            "nothing but status requests went to the follower: {asked:?}"
        );
        assert_eq!(write_sessions(&leader).len(), 1, "one attempt, answered");
    }
}
