//! Every message rcraft sends: Raft messages between peers, and client requests/responses.
//!
//! Peer messages follow the Raft paper's RPCs (Figure 2) plus the thesis extensions rcraft
//! implements: Pre-Vote (§9.6), fast log backtracking hints (§5.3 of the paper, "conflict
//! term"), heartbeats that carry a read context for ReadIndex (§6.4), chunked InstallSnapshot
//! (§5.7 / paper §7) and TimeoutNow for leadership transfer (§3.10).

use crate::types::{Entry, LogIndex, Membership, NodeId, Session, SnapshotMeta, Term};
use rkyv::{Archive, Deserialize, Serialize};

/// A Raft message between two peers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's current term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// The RPC.
    pub body: MessageBody,
}

/// Where a follower's log disagrees with the leader's, so the leader can skip a whole term of
/// entries per round trip instead of one entry.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct ConflictHint {
    /// Term of the follower's entry at the probed index, if it has one.
    pub term: Option<Term>,
    /// First index the follower holds with `term`; or its last index + 1 when its log is
    /// shorter than the probed index.
    pub first_index: LogIndex,
}

/// The body of a peer message.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum MessageBody {
    /// RequestVote, or a Pre-Vote probe when `pre_vote` is set.
    VoteRequest {
        /// True for a Pre-Vote round (thesis §9.6): nobody changes term or vote.
        pre_vote: bool,
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// Set when campaigning after TimeoutNow: voters skip the live-leader check.
        leadership_transfer: bool,
    },
    /// Answer to a vote request.
    VoteResponse {
        /// Echoes the request.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries. Empty `entries` is a probe.
    AppendRequest {
        /// Index of the entry before `entries`.
        prev_log_index: LogIndex,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// Entries to store, in index order.
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: LogIndex,
    },
    /// Answer to AppendEntries.
    AppendResponse {
        /// True when the log now matches the leader's through `match_index`.
        success: bool,
        /// On success, the last index known to match; on failure, the probed index.
        match_index: LogIndex,
        /// On failure, where to retry from.
        conflict: Option<ConflictHint>,
    },
    /// Leader liveness and commit propagation; `read_context` ties it to ReadIndex rounds.
    Heartbeat {
        /// Leader's commit index, capped at what the follower is known to hold.
        leader_commit: LogIndex,
        /// Opaque round number echoed in the response.
        read_context: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResponse {
        /// Echoes the heartbeat.
        read_context: u64,
    },
    /// One chunk of a snapshot, in order of offset.
    InstallSnapshot {
        /// Which snapshot; identical in every chunk of one transfer.
        meta: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
        /// True on the last chunk.
        done: bool,
    },
    /// Answer to a snapshot chunk: where the receiver wants to continue.
    InstallSnapshotResponse {
        /// Index of the snapshot being transferred.
        snapshot_index: LogIndex,
        /// Bytes durably received so far; the next chunk should start here.
        next_offset: u64,
        /// True once the snapshot is installed.
        done: bool,
        /// True when the receiver refused the chunk (wrong offset, bad checksum); the
        /// sender resumes from `next_offset`.
        rejected: bool,
    },
    /// Leadership transfer: campaign now, skipping the election timeout.
    TimeoutNow,
}

/// A client's request; `request_id` is echoed in the response so many can be in flight.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct ClientRequest {
    /// Chosen by the client; unique per connection while in flight.
    pub request_id: u64,
    /// What is asked.
    pub body: ClientRequestBody,
}

/// The body of a client request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum ClientRequestBody {
    /// Replicate a command and apply it; at most once per session sequence number.
    Write {
        /// The client's session, for at-most-once application.
        session: Option<Session>,
        /// The command for the state machine.
        command: Vec<u8>,
    },
    /// A linearizable read (ReadIndex) answered by the state machine's query function.
    Read {
        /// The query for the state machine.
        query: Vec<u8>,
    },
    /// The node's view of the cluster.
    Status,
    /// Ask the leader to hand leadership to `target`.
    TransferLeader {
        /// The node to become leader.
        target: NodeId,
    },
    /// Ask the leader to move the cluster to `membership` (through a joint configuration
    /// when more than one voter changes). Answered with `Ok` once the change committed.
    ChangeMembership {
        /// The target configuration.
        membership: Membership,
    },
    /// Ask this node to snapshot its state machine now (any node, leader or not) and compact
    /// its log behind it. Answered with `Ok` once the snapshot is durable: `index` and `term`
    /// are the snapshot's, `result` its size in bytes (u64 little-endian).
    Snapshot,
}

/// A response to a client request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct ClientResponse {
    /// Echoes the request.
    pub request_id: u64,
    /// The outcome.
    pub body: ClientResponseBody,
}

/// The outcome of a client request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum ClientResponseBody {
    /// Done: the command committed at (`term`, `index`) and the state machine answered
    /// `result`; for a read, `index` is the read index it was served at.
    Ok {
        /// Term of the entry (or of the leader serving the read).
        term: Term,
        /// Index of the entry (or the read index).
        index: LogIndex,
        /// The state machine's answer.
        result: Vec<u8>,
    },
    /// This node is not the leader; nothing was proposed. Retry at the hinted leader.
    NotLeader {
        /// The leader this node believes in, if any.
        leader: Option<NodeId>,
        /// That leader's client address, when known.
        leader_address: Option<String>,
    },
    /// Rejected before proposing because the leader is over its limits. Definite; retry later.
    Overloaded,
    /// Failed. `definite` says whether the operation certainly did not take effect.
    Error {
        /// True when the command certainly did not and will not take effect.
        definite: bool,
        /// What went wrong.
        message: String,
    },
    /// Answer to [`ClientRequestBody::Status`].
    Status(NodeStatus),
}

/// Role of a node, as reported by status.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum Role {
    /// Follows a leader.
    Follower,
    /// Running a (pre-)election.
    Candidate,
    /// Leads the cluster.
    Leader,
    /// Receives the log without voting.
    Learner,
}

/// A node's view of itself and the cluster.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the state machine.
    pub applied_index: LogIndex,
    /// Last index in its log.
    pub last_index: LogIndex,
    /// Index covered by its latest snapshot.
    pub snapshot_index: LogIndex,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
}
