//! Every message rcraft sends: Raft messages between peers, and client requests/responses.
//!
//! Peer messages follow the Raft paper's RPCs (Figure 2) plus the thesis extensions rcraft
//! implements: Pre-Vote (§9.6), fast log backtracking hints (§5.3 of the paper, "conflict
//! term"), heartbeats that carry a read context for ReadIndex (§6.4), chunked InstallSnapshot
//! (§5.7 / paper §7), TimeoutNow for leadership transfer (§3.10) and read-index requests
//! for follower reads (§6.4).

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
        /// Entries to store, in index order; on the wire their WAL records back to back
        /// ([`crate::record::AsRecords`]).
        #[rkyv(with = crate::record::AsRecords)]
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
        /// CRC-32C of `data`, computed by the sender from its snapshot file; the receiver
        /// refuses a chunk that does not match it.
        chunk_crc: u32,
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
    /// A follower asks the leader for a read index on behalf of a follower read (thesis
    /// §6.4: "followers could also offload reads"). The leader confirms its leadership as for
    /// a read of its own, then answers with its commit index.
    ReadIndexRequest {
        /// Chosen by the follower, echoed in the answer.
        request: u64,
    },
    /// Answer to a `ReadIndexRequest`.
    ReadIndexResponse {
        /// Echoes the request.
        request: u64,
        /// The read index once leadership is confirmed; `None` when the receiver refused
        /// (not the leader of this term, or over its read limit).
        index: Option<LogIndex>,
    },
    /// A node repairing entries lost from its disk asks a voter how far its log reaches
    /// (protocol-aware recovery, issue 15). Outside the term rules: answered whatever the
    /// terms, and changes nothing at the receiver.
    RepairQuery {
        /// The range the asker lost, when it repairs one (`None` when it asks only for the
        /// answerer's term, its own votes being unknown).
        lost: Option<RepairedRange>,
    },
    /// Answer to a `RepairQuery`.
    RepairAnswer {
        /// The last index of the answerer's log, or the end of the range it is repairing
        /// itself when that is further: no entry past it was ever acknowledged by it.
        log_end: LogIndex,
        /// The answerer's last log entry (index and term): a repairing node of a pair votes
        /// for the answerer only while its vote request shows this same log.
        last_log_index: LogIndex,
        /// Term of the entry at `last_log_index`.
        last_log_term: Term,
        /// The answerer's snapshot index (0 without one): its log cannot tell which
        /// configurations the entries up to it held.
        snapshot_index: LogIndex,
        /// Index of the last joint configuration entry in the answerer's log after its
        /// snapshot (0 when there is none).
        last_joint_index: LogIndex,
        /// Whether the configuration of the answerer's snapshot is a simple one whose voters
        /// are exactly the asker and the answerer (false without a snapshot).
        snapshot_pair: bool,
        /// Whether the answerer's log may hold a configuration entry of the asker's lost
        /// log: a membership entry at an index in or after the lost range, in a term up to
        /// the asker's recovered term, other than one at the range's last index in another
        /// term than the one recorded there; or a snapshot reaching into the range (which
        /// hides its entries). False when the query named no range.
        range_membership: bool,
    },
    /// Gray-failure link probe (self-demotion on slow links, `src/core/link_probe.rs`): the
    /// receiver echoes `sent_tick` at once in a `LinkProbeReply`, so the sender measures its
    /// round trip over this link. Outside the term rules: answered whatever the terms, and
    /// changes nothing at the receiver but, at a leader of the same term, the report below.
    LinkProbe {
        /// The sender's tick count when it sent the probe (its own clock; echoed as is).
        sent_tick: u64,
        /// From a follower to its leader: the median round trip it measures to the other
        /// voters, leaving the leader out, in thousandths of a tick; `None` elsewhere or
        /// when it has no fresh measurement.
        peers_milliticks: Option<u64>,
    },
    /// Answer to a `LinkProbe`.
    LinkProbeReply {
        /// Echoes the probe.
        sent_tick: u64,
    },
}

/// Which node may serve a read, and how it makes sure the answer is not stale.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum ReadMode {
    /// The leader serves it after confirming its leadership (ReadIndex, thesis §6.4), or from
    /// its lease when the cluster runs with lease reads on.
    #[default]
    Linearizable,
    /// The leader serves it from its lease (thesis §6.4.1: no heartbeat round while the lease
    /// holds). Refused with a definite error when the cluster runs without lease reads.
    Lease,
    /// Any node that knows the leader serves it: it asks the leader for a read index and
    /// answers once it has applied through it. As linearizable as `Linearizable`; spreads the
    /// work of running queries over the followers.
    Follower,
}

impl ReadMode {
    /// Every mode, in the order command-line tools list them.
    pub const ALL: [ReadMode; 3] = [ReadMode::Linearizable, ReadMode::Lease, ReadMode::Follower];

    /// The mode's name on command lines (`--read-mode NAME`).
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Linearizable => "linearizable",
            ReadMode::Lease => "lease",
            ReadMode::Follower => "follower",
        }
    }
}

impl std::fmt::Display for ReadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(text: &str) -> Result<ReadMode, String> {
        ReadMode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| {
                format!("unknown read mode {text:?}: expected linearizable, lease or follower")
            })
    }
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
    /// A linearizable read answered by the state machine's query function.
    Read {
        /// The query for the state machine.
        query: Vec<u8>,
        /// Which node may serve it and how.
        mode: ReadMode,
    },
    /// The node's view of the cluster.
    Status,
    /// Ask the leader to hand leadership to `target`.
    TransferLeader {
        /// The node to become leader.
        target: NodeId,
    },
    /// Ask the leader to move the cluster to `membership` (through a joint configuration
    /// when more than one voter changes). Answered with `Ok` once the change committed (the
    /// joint configuration, when there is one: the final one follows on its own).
    ChangeMembership {
        /// The target configuration.
        membership: Membership,
    },
    /// Ask this node to snapshot its state machine now (any node, leader or not) and compact
    /// its log behind it. Answered with `Ok` once the snapshot is durable: `index` and `term`
    /// are the snapshot's, `result` its size in bytes (u64 little-endian).
    Snapshot,
    /// This node's per-stage write latency since it started; answered with `Latency`.
    Latency,
    /// This node's flight recorder: its recent notable events; answered with `Events`.
    Events,
    /// Part of this node's current snapshot file, for a backup (`rcraft snapshot save`):
    /// answered with `SnapshotChunk` holding up to one snapshot chunk of data from `offset`,
    /// or `Error { definite: true }` when the current snapshot is not at `index` (0: any)
    /// any more, or cannot be read.
    ReadSnapshot {
        /// The snapshot wanted (its last index), or 0 for whichever is current.
        index: LogIndex,
        /// Offset in its data.
        offset: u64,
    },
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
    /// Answer to [`ClientRequestBody::Status`] (boxed: it is by far the largest answer, and
    /// every other one would carry its size).
    Status(Box<NodeStatus>),
    /// Answer to [`ClientRequestBody::Latency`]: one entry per stage with samples, in the
    /// order of the write path.
    Latency(Vec<StageLatency>),
    /// Answer to [`ClientRequestBody::Events`]: the events held, oldest first.
    Events(Vec<RecordedEvent>),
    /// Answer to [`ClientRequestBody::ReadSnapshot`]. Boxed so that the archived enum keeps
    /// its size (a larger one would move the root of every response archive).
    SnapshotChunk(Box<SnapshotChunk>),
}

/// Part of a node's snapshot file, sent to a client taking a backup.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct SnapshotChunk {
    /// The whole snapshot: index, term, membership (and its entry point), data size and data
    /// CRC-32C.
    pub meta: SnapshotMeta,
    /// Offset of `data` in the snapshot's data.
    pub offset: u64,
    /// The bytes, as read from the node's file.
    pub data: Vec<u8>,
    /// CRC-32C of `data`, computed by the node from what it read.
    pub chunk_crc: u32,
    /// `data` ends the snapshot.
    pub done: bool,
}

/// One notable event of a node's flight recorder.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct RecordedEvent {
    /// Number of the event since the node started (a gap: older events were dropped).
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The node's term when it happened (its last known term for events of other threads).
    pub term: Term,
    /// What kind of event (a short fixed word, e.g. `election_won`, `slow_fsync`).
    pub kind: String,
    /// What happened, as one sentence.
    pub detail: String,
}

/// Latency of one stage of the write path on one node, since it started (microseconds).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct StageLatency {
    /// The stage: `queue_wait`, `wal_append`, `fsync`, `replication`, `commit`, `apply`,
    /// `reply` (leader), `receive_to_durable` (follower).
    pub stage: String,
    /// For `replication`: the follower.
    pub peer: Option<NodeId>,
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
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
    /// The configuration in force as this node sees it, with the two halves of a joint
    /// configuration apart (`voters` above is their union).
    pub membership: Membership,
    /// On a leader, how far each other member's log is known to match its own, in id order;
    /// empty on every other node.
    pub replication: Vec<PeerProgress>,
    /// Entries this node had synced and lost from its disk, which it is fetching again from
    /// the leader; `None` when its log holds everything it synced (protocol-aware recovery,
    /// docs/OPERATIONS.md §7). While it is `Some` the node does not vote.
    pub repairing: Option<LostRange>,
    /// The node lost the record of its votes (its hard-state file was damaged): the voters
    /// whose current terms it still waits for. Until all have answered it does not vote or
    /// campaign; `None` when its votes are known.
    pub votes_unknown: Option<Vec<NodeId>>,
    /// Entries this node synced and found lost from its disk at its start, when it is the
    /// only server of its cluster: no other node can hold them, so it went on without them
    /// and writes acknowledged in the range are gone (docs/OPERATIONS.md §7). `None` on
    /// every other node, and after a restart that found nothing lost.
    pub lost: Option<LostRange>,
}

/// What a repairing node tells its voters of the range it lost (`MessageBody::RepairQuery`).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct RepairedRange {
    /// First index lost.
    pub from: LogIndex,
    /// Last index lost (the synced frontier).
    pub through: LogIndex,
    /// The term of the entry at `through`, as recorded with the frontier (0: not known).
    pub through_term: Term,
    /// The asker's recovered term: no entry it acknowledged has a later term.
    pub recovered_term: Term,
}

/// A range of log indexes, both ends included, that a node lost from its disk.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct LostRange {
    /// First index lost.
    pub from: LogIndex,
    /// Last index lost.
    pub through: LogIndex,
}

impl LostRange {
    /// How many entries the range holds.
    pub fn len(&self) -> u64 {
        self.through.0.saturating_add(1).saturating_sub(self.from.0)
    }

    /// True when the range holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A leader's view of one member's replication, as reported by status.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct PeerProgress {
    /// The member.
    pub id: NodeId,
    /// Highest index known to be in the member's log and matching the leader's.
    pub match_index: LogIndex,
    /// Next index the leader will send.
    pub next_index: LogIndex,
    /// How the leader is replicating to it.
    pub state: ReplicationState,
    /// The member answered since the leader's last CheckQuorum round (about one election
    /// timeout ago).
    pub recently_active: bool,
}

/// How a leader is replicating to one member.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum ReplicationState {
    /// Finding where the member's log matches, one message at a time.
    Probe,
    /// Streaming entries.
    Replicate,
    /// Sending a snapshot; `offset` bytes of it are acknowledged.
    Snapshot {
        /// Bytes the member holds durably.
        offset: u64,
        /// Size of the snapshot.
        size_bytes: u64,
    },
}

impl Message {
    /// Checks what the Raft algorithm takes for granted about a message from a correct peer,
    /// so a damaged or hostile message is refused at the network edge instead of tripping an
    /// invariant of the consensus core.
    ///
    /// - AppendRequest: entries are contiguous from `prev_log_index + 1`, their terms never
    ///   decrease, never exceed the message term, and never precede `prev_log_term`; the index
    ///   arithmetic cannot overflow.
    /// - InstallSnapshot: the snapshot's term is not newer than the message term, and the chunk
    ///   lies inside the announced size.
    pub fn check_well_formed(&self) -> Result<(), String> {
        match &self.body {
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => check_append_entries(self.term, *prev_log_index, *prev_log_term, entries),
            MessageBody::InstallSnapshot {
                meta, offset, data, ..
            } => {
                if meta.term > self.term {
                    return Err(format!(
                        "snapshot term {} is newer than the message term {}",
                        meta.term, self.term
                    ));
                }
                let end = offset.checked_add(data.len() as u64);
                match end {
                    Some(end) if end <= meta.size_bytes => Ok(()),
                    _ => Err(format!(
                        "snapshot chunk at offset {} of {} bytes overruns the snapshot size {}",
                        offset,
                        data.len(),
                        meta.size_bytes
                    )),
                }
            }
            MessageBody::VoteRequest { last_log_term, .. } if *last_log_term > self.term => {
                Err(format!(
                    "last log term {last_log_term} is newer than the campaign term {}",
                    self.term
                ))
            }
            _ => Ok(()),
        }
    }
}

fn check_append_entries(
    term: Term,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: &[Entry],
) -> Result<(), String> {
    if prev_log_term > term {
        return Err(format!(
            "previous log term {prev_log_term} is newer than the message term {term}"
        ));
    }
    let mut expected_index = prev_log_index;
    let mut previous_term = prev_log_term;
    for entry in entries {
        expected_index = LogIndex(
            expected_index
                .0
                .checked_add(1)
                .ok_or_else(|| "entry index overflows".to_string())?,
        );
        if entry.index != expected_index {
            return Err(format!(
                "entry index {} where {} was expected (entries must follow the previous index)",
                entry.index, expected_index
            ));
        }
        if entry.term < previous_term || entry.term > term {
            return Err(format!(
                "entry {} has term {}, outside {}..={}",
                entry.index, entry.term, previous_term, term
            ));
        }
        previous_term = entry.term;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn append(prev: u64, prev_term: u64, entries: &[(u64, u64)]) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::AppendRequest {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term(prev_term),
                entries: entries
                    .iter()
                    .map(|&(index, term)| {
                        Entry::new(Term(term), LogIndex(index), EntryPayload::Noop)
                    })
                    .collect(),
                leader_commit: LogIndex(0),
            },
        }
    }

    #[test]
    fn read_modes_parse_from_their_names() {
        for mode in ReadMode::ALL {
            assert_eq!(mode.name().parse::<ReadMode>(), Ok(mode));
        }
        let error = "stale".parse::<ReadMode>().unwrap_err();
        assert!(
            error.contains("\"stale\"") && error.contains("follower"),
            "{error}"
        );
    }

    #[test]
    fn contiguous_append_is_well_formed() {
        assert_eq!(
            append(3, 2, &[(4, 2), (5, 3), (6, 5)]).check_well_formed(),
            Ok(())
        );
        assert_eq!(append(0, 0, &[]).check_well_formed(), Ok(()));
    }

    #[test]
    fn gaps_overlaps_and_bad_terms_are_refused() {
        assert!(append(3, 2, &[(5, 2)]).check_well_formed().is_err());
        assert!(append(3, 2, &[(3, 2)]).check_well_formed().is_err());
        assert!(append(3, 2, &[(4, 2), (4, 2)]).check_well_formed().is_err());
        assert!(append(3, 2, &[(4, 3), (5, 2)]).check_well_formed().is_err());
        assert!(append(3, 2, &[(4, 6)]).check_well_formed().is_err());
        assert!(append(3, 6, &[]).check_well_formed().is_err());
        assert!(append(u64::MAX, 2, &[(0, 2)]).check_well_formed().is_err());
    }

    #[test]
    fn snapshot_chunk_outside_the_snapshot_is_refused() {
        let chunk = |offset: u64, len: usize, size: u64| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    term: Term(4),
                    size_bytes: size,
                    ..SnapshotMeta::default()
                },
                offset,
                data: vec![0; len],
                chunk_crc: 0,
                done: false,
            },
        };
        assert_eq!(chunk(0, 10, 10).check_well_formed(), Ok(()));
        assert!(chunk(5, 10, 10).check_well_formed().is_err());
        assert!(chunk(u64::MAX, 1, 10).check_well_formed().is_err());
    }
}
