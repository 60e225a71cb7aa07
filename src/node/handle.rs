//! [`NodeHandle`]: the embedding API of a running node.
//!
//! Each call sends one request to the consensus thread and blocks on its own reply channel
//! for at most the configured RPC timeout. The handle owns the node's threads: `shutdown`
//! (or dropping the handle) stops and joins them.

use super::consensus::ApiRequest;
use super::error::{Error, Result};
use super::limits::{APPLIED_SUBSCRIBER_QUEUE_DEPTH, SNAPSHOT_ANSWER_WAIT_MAX};
use super::mailbox::Ringing;
use super::metrics_http::Unhealthy;
use super::results::{ApplyMsg, ProposeResult, ReadResult, SnapshotResult};
use super::runtime::Runtime;
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use rcraft_wire::{
    ClientResponseBody, LogIndex, Membership, NodeId, NodeStatus, ReadMode, Session, Term,
};
use std::net::SocketAddr;
use std::time::Duration;

/// How often `wait_for_leader` looks at the status.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running node. Cheap calls, each blocking for at most the configured RPC timeout.
pub struct NodeHandle {
    id: NodeId,
    servers: Vec<SocketAddr>,
    rpc_timeout: Duration,
    api: Ringing<ApiRequest>,
    runtime: Option<Runtime>,
}

impl NodeHandle {
    pub(crate) fn new(
        id: NodeId,
        servers: Vec<SocketAddr>,
        rpc_timeout: Duration,
        api: Ringing<ApiRequest>,
        runtime: Runtime,
    ) -> NodeHandle {
        NodeHandle {
            id,
            servers,
            rpc_timeout,
            api,
            runtime: Some(runtime),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address this node listens on for peers and clients: its configured address, with
    /// the real port when that was 0 (useful for a one-node cluster; peers cannot find a node
    /// configured with port 0). `None` after shutdown.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.runtime.as_ref().map(Runtime::local_addr)
    }

    /// Replicates `command`, waits until it is applied here and returns the state machine's
    /// response with the entry's term and index. Only the leader accepts proposals; others
    /// answer [`Error::NotLeader`] with a hint. A command over
    /// [`COMMAND_BYTES_MAX`](super::limits::COMMAND_BYTES_MAX) is refused with
    /// [`Error::TooLarge`].
    pub fn propose(&self, command: Vec<u8>) -> Result<ProposeResult> {
        self.propose_in_session(None, command)
    }

    /// Like [`propose`](Self::propose), applying the command at most once per `session`
    /// sequence number even when retried (Raft thesis §6.3).
    ///
    /// `session.client_id` comes from [`register_session`](Self::register_session); its
    /// `sequence` starts at 1 and grows by one per new command, and a retry of a command
    /// repeats its sequence (a retry of the latest one is answered with the saved response).
    /// The cluster remembers at most [`SESSIONS_MAX`](super::limits::SESSIONS_MAX) sessions
    /// and forgets the least recently used first. A command whose session it does not hold is
    /// refused, not applied: [`Error::is_session_expired`] is true and the error is definite
    /// for this call. If this call retried one whose outcome was unknown, that earlier one may
    /// have applied the command: its outcome stays unknown. Register a new session for the
    /// next commands.
    pub fn propose_in_session(
        &self,
        session: Option<Session>,
        command: Vec<u8>,
    ) -> Result<ProposeResult> {
        Error::check_size("command", command.len())?;
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::Propose {
            session,
            command,
            reply,
        })?;
        let (term, index, response) = self.ok_parts(self.wait(&answer)?)?;
        Ok(ProposeResult {
            term,
            index,
            response,
        })
    }

    /// Registers a new client session for [`propose_in_session`](Self::propose_in_session)
    /// and returns its client id (the log index of the registration, so unique in the
    /// cluster). Leader only. The registration is a replicated log entry that creates the
    /// session on every replica without reaching the state machine. After a failure whose
    /// outcome is unknown, just register again: a session that was created but never used is
    /// forgotten in time.
    pub fn register_session(&self) -> Result<u64> {
        let registered = self.propose_in_session(Some(Session::REGISTER), Vec::new())?;
        let client_id: [u8; 8] =
            registered
                .response
                .as_slice()
                .try_into()
                .map_err(|_| Error::Failed {
                    definite: false,
                    message: "the registration's answer holds no client id".to_string(),
                })?;
        Ok(u64::from_le_bytes(client_id))
    }

    /// A linearizable read: confirms leadership (ReadIndex), waits until the read index is
    /// applied here, then answers with the state machine's `query`. Leader only (others
    /// answer [`Error::NotLeader`]). A query over
    /// [`COMMAND_BYTES_MAX`](super::limits::COMMAND_BYTES_MAX) is refused with
    /// [`Error::TooLarge`]. The same as [`read_with`](Self::read_with) in
    /// [`ReadMode::Linearizable`].
    pub fn read(&self, query: Vec<u8>) -> Result<ReadResult> {
        self.read_with(query, ReadMode::Linearizable)
    }

    /// A read in `mode`, the modes of the client protocol (`rcraft kv --read-mode`):
    ///
    /// - [`ReadMode::Linearizable`]: as [`read`](Self::read), on the leader.
    /// - [`ReadMode::Lease`]: on the leader, skipping the heartbeat round while its lease
    ///   holds; needs `lease_reads` on, else a definite error naming the setting. Linearizable
    ///   under the clock-drift bound the lease assumes.
    /// - [`ReadMode::Follower`]: on any voter or learner: it asks the leader for a read index
    ///   and answers once it has applied through it (on the leader, a linearizable read).
    ///   Linearizable, and it spares the leader the state machine's work.
    pub fn read_with(&self, query: Vec<u8>, mode: ReadMode) -> Result<ReadResult> {
        Error::check_size("query", query.len())?;
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::Read { query, mode, reply })?;
        let (term, index, response) = self.ok_parts(self.wait(&answer)?)?;
        Ok(ReadResult {
            term,
            index,
            response,
        })
    }

    /// Every metric of this node in the Prometheus text format (what `GET /metrics` serves
    /// when `metrics_addr` is set).
    pub fn metrics_text(&self) -> Result<String> {
        let runtime = self.runtime.as_ref().ok_or(Error::Stopped)?;
        Ok(runtime.metrics().render())
    }

    /// This node's health as `/health` reports it: `Ok` with why it is healthy (a leader is
    /// known and the applied index is close to the commit index), or `Err` with why not.
    pub fn health(&self) -> std::result::Result<String, Unhealthy> {
        match self.runtime.as_ref() {
            Some(runtime) => runtime.metrics().health(),
            None => Err(Unhealthy::ShutDown),
        }
    }

    /// The address `/metrics` and `/health` are served on, when `metrics_addr` is set (the
    /// real port when it asked for port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.runtime.as_ref().and_then(Runtime::metrics_addr)
    }

    /// This node's view of itself and the cluster.
    pub fn status(&self) -> Result<NodeStatus> {
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::Status { reply })?;
        self.wait(&answer)
    }

    /// Waits until this node knows a leader (itself or another node) and returns its id, or
    /// [`Error::Timeout`] after `timeout`. Polls [`status`](Self::status).
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.status()?.leader {
                return Ok(leader);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            std::thread::sleep(LEADER_POLL_INTERVAL);
        }
    }

    /// Asks this node, which must be the leader, to hand leadership to `target`. Returns once
    /// the transfer has started; watch [`status`](Self::status) for its completion.
    pub fn transfer_leader(&self, target: NodeId) -> Result<()> {
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::TransferLeader { target, reply })?;
        match self.wait(&answer)? {
            ClientResponseBody::Ok { .. } => Ok(()),
            other => Err(self.error_from(other)),
        }
    }

    /// Moves the cluster to `membership` (through a joint configuration when more than one
    /// voter changes, Raft thesis §4.3); returns once the change is committed and applied
    /// here. Leader only. Every member must be one of the configured servers.
    ///
    /// When more than one voter changes, "committed" means the joint configuration: the leader
    /// then proposes the final one on its own, and until that commits (one more round trip) a
    /// further change is refused as "not committed yet"; [`status`](Self::status) shows it.
    /// Changing one voter at a time needs no joint step.
    pub fn change_membership(&self, membership: Membership) -> Result<ProposeResult> {
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::ChangeMembership { membership, reply })?;
        let (term, index, response) = self.ok_parts(self.wait(&answer)?)?;
        Ok(ProposeResult {
            term,
            index,
            response,
        })
    }

    /// Snapshots this node's state machine now (any node, leader or not) and compacts its
    /// log behind the snapshot; returns once the snapshot is durable (waiting up to the
    /// longer of the rpc timeout and `SNAPSHOT_ANSWER_WAIT_MAX`). When the latest
    /// snapshot already covers every applied entry, that one is returned. The snapshot is
    /// written by the apply thread: consensus goes on meanwhile.
    pub fn snapshot(&self) -> Result<SnapshotResult> {
        let (reply, answer) = bounded(1);
        self.request(ApiRequest::Snapshot { reply })?;
        let wait = self.rpc_timeout.max(SNAPSHOT_ANSWER_WAIT_MAX);
        let answer = answer.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => Error::Timeout,
            RecvTimeoutError::Disconnected => Error::Stopped,
        });
        match answer? {
            ClientResponseBody::Ok {
                term,
                index,
                result,
            } => SnapshotResult::from_answer(term, index, &result).ok_or_else(|| {
                self.error_from(ClientResponseBody::Error {
                    definite: true,
                    message: "the snapshot answer has no size".to_string(),
                })
            }),
            other => Err(self.error_from(other)),
        }
    }

    /// A stream of every command applied from now on, in log order (cRaft's `ApplyMsg`).
    /// The receiver must keep up: the apply thread waits when the stream is full, and drops a
    /// subscriber that leaves it full for `APPLIED_SUBSCRIBER_STALL_MAX`. Drop the receiver to
    /// unsubscribe.
    pub fn subscribe_applied(&self) -> Result<Receiver<ApplyMsg>> {
        let (sender, receiver) = bounded(APPLIED_SUBSCRIBER_QUEUE_DEPTH);
        self.request(ApiRequest::Subscribe(sender))?;
        Ok(receiver)
    }

    /// Reads the node's TLS certificate, key and CA files again (`rcraft serve` does on
    /// SIGHUP): connections opened from now on use them, open ones keep theirs. On an error
    /// (naming the file and problem) the previous files stay in use. `Ok(false)` when the
    /// node has no TLS.
    pub fn reload_tls(&self) -> Result<bool> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(Error::Stopped);
        };
        match runtime.tls() {
            None => Ok(false),
            Some(slot) => slot.reload().map(|()| true).map_err(Error::Tls),
        }
    }

    /// True once the node stopped by itself (a fatal storage or state-machine error) or was
    /// shut down; every call then fails with [`Error::Stopped`] or the stopping error.
    pub fn has_stopped(&self) -> bool {
        self.runtime.as_ref().is_none_or(Runtime::is_stopped)
    }

    /// Stops the node: the threads finish, storage is synced, every thread is joined.
    /// Returns the error that stopped the node earlier, if one did.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let _ = self.api.send(ApiRequest::Shutdown);
        runtime.join()
    }

    fn request(&self, request: ApiRequest) -> Result<()> {
        self.api
            .send_timeout(request, self.rpc_timeout)
            .map_err(|e| match e {
                crossbeam_channel::SendTimeoutError::Timeout(_) => Error::Overloaded,
                crossbeam_channel::SendTimeoutError::Disconnected(_) => Error::Stopped,
            })
    }

    fn wait<T>(&self, answer: &Receiver<T>) -> Result<T> {
        answer.recv_timeout(self.rpc_timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => Error::Timeout,
            RecvTimeoutError::Disconnected => Error::Stopped,
        })
    }

    /// The term, index and answer of a successful reply, or the reply turned into an error.
    fn ok_parts(&self, body: ClientResponseBody) -> Result<(Term, LogIndex, Vec<u8>)> {
        match body {
            ClientResponseBody::Ok {
                term,
                index,
                result,
            } => Ok((term, index, result)),
            other => Err(self.error_from(other)),
        }
    }

    fn error_from(&self, body: ClientResponseBody) -> Error {
        match body {
            ClientResponseBody::NotLeader { leader, .. } => Error::NotLeader {
                hint: leader,
                address: leader.and_then(|id| self.servers.get(id.0 as usize).copied()),
            },
            ClientResponseBody::Overloaded => Error::Overloaded,
            ClientResponseBody::Error { definite, message } => Error::Failed { definite, message },
            ClientResponseBody::Ok { .. }
            | ClientResponseBody::Status(_)
            | ClientResponseBody::Latency(_)
            | ClientResponseBody::Events(_)
            | ClientResponseBody::SnapshotChunk(_) => Error::Failed {
                definite: false,
                message: "unexpected answer from the node".to_string(),
            },
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("node {} stopped with an error: {e}", self.id);
        }
    }
}
