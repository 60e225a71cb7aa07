//! The consensus core's contract with the outside: its configuration, its inputs and the
//! actions it asks the caller to carry out.
//!
//! The core never performs I/O. The caller (the node's consensus thread, or the simulator)
//! feeds [`Input`]s to `Replica::step` and then drains [`Action`]s and carries them out in
//! order. Persistence is explicit: an [`Action::Persist`] carries a sequence number and the
//! core releases whatever depended on it (vote grants, append acknowledgements, its own match
//! index) only when [`StorageOutcome::Persisted`] with that sequence number arrives (DESIGN.md §4,
//! thesis §10.2.1).

use rcraft_wire::{
    Entry, LogIndex, Membership, Message, NodeId, ReadMode, Session, SnapshotMeta, Term,
};
use std::fmt;

/// Durable per-node Raft state that must be on disk before the core acts on it (paper Fig. 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate that received this node's vote in `term`, if any.
    pub vote: Option<NodeId>,
    /// A commit index known at the time of saving; a hint that speeds up restart, never
    /// trusted beyond the durable log.
    pub commit: LogIndex,
    /// This node lost the record of its votes (its hard-state file was damaged) and has not
    /// yet learned a term above every term it may have voted in: `term` is only a lower
    /// bound and `vote` means nothing. Until it learns one, it grants no vote and never
    /// campaigns (`vote_recovery.rs`). Saved, so it stays so across restarts.
    pub votes_unknown: bool,
}

/// Tuning of one replica. Time is counted in ticks; the caller decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// This node.
    pub id: NodeId,
    /// Election timeout is drawn uniformly from `[min, max)` ticks after every reset.
    pub election_timeout_min_ticks: u64,
    /// Upper bound (exclusive) of the election timeout draw.
    pub election_timeout_max_ticks: u64,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// Run a Pre-Vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// Leader steps down if it has not heard from a quorum within an election timeout
    /// (thesis §6.2); also enables ignoring disruptive votes while a leader is live (§4.2.3).
    pub check_quorum: bool,
    /// Serve reads from a leader lease instead of a heartbeat round (thesis §6.4.1). Relies on
    /// bounded clock drift; off by default.
    pub lease_reads: bool,
    /// Most AppendRequests in flight to one follower in the replicate state.
    pub max_inflight_messages: usize,
    /// Most entry bytes in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most entry bytes in one AppendRequest (at least one entry is always sent).
    pub max_append_bytes: u64,
    /// Proposals are refused with [`ProposeError::Overloaded`] while the leader holds more
    /// than this many bytes of uncommitted entries.
    pub max_uncommitted_bytes: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// Most snapshot chunks requested or sent to one follower and not yet acknowledged (the
    /// pipelining window of a transfer; 1 is stop-and-wait).
    pub snapshot_chunks_in_flight: u64,
    /// Snapshot bytes the leader may request per tick, shared by all its transfers so they
    /// cannot crowd out log replication; unspent budget carries over up to one tick's worth
    /// plus one chunk. 0 means unlimited.
    pub snapshot_bytes_per_tick: u64,
    /// Gray-failure self-demotion: a leader whose own log writes stay far slower than its
    /// followers' hands leadership over (core/gray_failure.rs); `None` turns it off.
    pub self_demotion: Option<SelfDemotionConfig>,
    /// Most entries handed to the state machine (`Action::Apply`) and not yet reported
    /// applied (`ApplyOutcome::Applied`). Committed entries beyond it wait in the log and go out as
    /// the state machine reports progress, so a slow state machine never makes its caller
    /// hold an unbounded backlog of them.
    pub apply_window_entries: u64,
    /// Most bytes of log entries (each counted as its `Entry::size_bytes` plus the `Entry`
    /// value itself, `log::cache_cost`) kept in memory once they are durable
    /// and handed to the state machine: the newest such entries stay cached for followers
    /// that are nearly caught up; older ones are read back from storage
    /// ([`StorageAction::ReadEntries`]) when a follower needs them. Entries not yet durable or not
    /// yet handed to the state machine are always kept (their bytes are bounded by
    /// `max_uncommitted_bytes`, the storage queue and `apply_window_entries`); on a leader,
    /// entries a follower that keeps up has not acknowledged are kept up to
    /// `max_inflight_bytes` beyond this bound.
    pub entry_cache_bytes: u64,
    /// Seed for the election-timeout generator; give each node a different one.
    pub seed: u64,
}

/// When a slow leader hands leadership over (core/gray_failure.rs). All in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfDemotionConfig {
    /// The leader must have been slow this long, with fresh measurements throughout.
    pub window_ticks: u64,
    /// Slow means the leader's average durability latency is at least this many times the
    /// median follower's (a follower's below one tick counts as one tick)...
    pub ratio: u64,
    /// ...and at least this much above it, so tick-sized noise on fast disks never counts.
    pub min_gap_ticks: u64,
    /// After handing over, this node does not try again for this long (across terms), so
    /// leadership cannot ping-pong.
    pub cooldown_ticks: u64,
    /// The network half (core/link_probe.rs): every voter that leads or follows a known
    /// leader probes every other voter this often, followers report what they measure
    /// between themselves, and a leader whose own links stay far slower hands over. 0 turns
    /// the probes and the network half off (the disk half still runs).
    pub link_probe_interval_ticks: u64,
}

impl SelfDemotionConfig {
    /// Defaults for a 10 ms tick: 4 times the median follower and 100 ms above it, for 5 s;
    /// then no new attempt for 60 s. No link probes: a node turns them on (at its heartbeat
    /// interval), so that tests of the core that count messages see only Raft's own.
    pub const DEFAULT: SelfDemotionConfig = SelfDemotionConfig {
        window_ticks: 500,
        ratio: 4,
        min_gap_ticks: 10,
        cooldown_ticks: 6_000,
        link_probe_interval_ticks: 0,
    };
}

/// What made a leader hand leadership over of its own accord.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfDemotionReason {
    /// Its own log writes took far longer to become durable than its followers' round trips.
    SlowDisk,
    /// Its round trips to its followers took far longer than theirs between themselves.
    SlowLinks,
}

impl SelfDemotionReason {
    /// A short fixed word for logs and metric labels: `disk` or `network`.
    pub fn name(self) -> &'static str {
        match self {
            SelfDemotionReason::SlowDisk => "disk",
            SelfDemotionReason::SlowLinks => "network",
        }
    }
}

/// Why a leader hands leadership over of its own accord: its figures, for the operator's log,
/// the flight recorder and the simulator's checks. Latencies are moving averages in
/// thousandths of a tick. For [`SelfDemotionReason::SlowDisk`] they run from handing entries
/// over (to its own disk, or to the network for a follower) until they are durable (on its
/// disk, or acknowledged by the follower); for [`SelfDemotionReason::SlowLinks`] they are
/// probe round trips (core/link_probe.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfDemotion {
    /// What was slow.
    pub reason: SelfDemotionReason,
    /// The follower leadership is handed to.
    pub to: NodeId,
    /// Slow disk: this leader's own durability latency. Slow links: its round trip to the
    /// follower that completes its quorum (the fastest ones first).
    pub leader_milliticks: u64,
    /// Slow disk: the median follower's durable round trip. Slow links: the median of the
    /// followers' reports of their round trips between themselves.
    pub median_follower_milliticks: u64,
    /// The chosen follower's figure of the same kind.
    pub target_milliticks: u64,
    /// Followers (voters) with fresh measurements (slow links: fresh reports).
    pub followers_measured: usize,
    /// How long the leader had counted as slow.
    pub slow_for_ticks: u64,
}

impl CoreConfig {
    /// Defaults matching a 10 ms tick: election timeout 150-300 ms, heartbeat 50 ms.
    pub fn new(id: NodeId, seed: u64) -> CoreConfig {
        CoreConfig {
            id,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_inflight_messages: 64,
            max_inflight_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_in_flight: 4,
            snapshot_bytes_per_tick: 8 << 20,
            self_demotion: Some(SelfDemotionConfig::DEFAULT),
            apply_window_entries: 4096,
            entry_cache_bytes: 64 << 20,
            seed,
        }
    }
}

/// What the replica recovered from storage at start.
#[derive(Clone, Debug, Default)]
pub struct RecoveredState {
    /// Saved term, vote and commit hint.
    pub hard_state: HardState,
    /// Latest durable snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log after the snapshot, contiguous, in index order (entries at or below
    /// the snapshot index are skipped).
    pub entries: Vec<Entry>,
    /// Configuration to use when neither the snapshot nor the log holds one (a fresh cluster).
    pub initial_membership: Membership,
    /// Entries this node had synced, and so may have acknowledged, that its storage lost
    /// (damaged or missing below the synced frontier). The replica starts repairing them:
    /// see `Replica::repair`.
    pub lost: Option<LostEntries>,
}

/// A range of log entries this node synced and no longer holds: `entries` ends before `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostEntries {
    /// First index lost.
    pub from: LogIndex,
    /// Last index the node may have acknowledged.
    pub through: LogIndex,
    /// The term of the entry at `through`, when storage recorded it with the synced frontier
    /// (storage/FORMAT.md §1.1); `None` for a log written before it did, or a frontier found
    /// otherwise. Lets the repair judge a candidate by Raft's own up-to-date check against
    /// the lost log (`src/core/repair.rs`).
    pub through_term: Option<Term>,
}

/// Identifies a proposal or a read request of the caller, echoed in the outcome.
pub type RequestId = u64;

/// Why a proposal or read was refused. All of these are definite: nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader (or stepping down, or transferring leadership); try `leader`.
    NotLeader {
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// Over the uncommitted-bytes cap; retry later.
    Overloaded,
    /// Refused for another reason (e.g. a membership change while one is pending).
    Rejected(String),
}

/// Inputs to `Replica::step`.
#[derive(Clone, Debug)]
pub enum Input {
    /// One unit of logical time passed.
    Tick,
    /// A message from a peer arrived.
    Message(Message),
    /// Append a command. Outcome: [`Action::Proposed`] or [`Action::ProposeRejected`].
    Propose {
        /// Caller's id for this proposal.
        id: RequestId,
        /// Client session, for at-most-once application.
        session: Option<Session>,
        /// Command bytes.
        data: Vec<u8>,
    },
    /// Change membership to `membership` (the core enters a joint configuration when more
    /// than one voter changes). Outcome as for `Propose`.
    ProposeMembership {
        /// Caller's id.
        id: RequestId,
        /// Target configuration.
        membership: Membership,
    },
    /// Ask for a linearizable read point. Outcome: [`Action::ReadReady`] or
    /// [`Action::ReadRejected`], exactly once. `Linearizable` and `Lease` are served by the
    /// leader only; `Lease` is refused with [`ProposeError::Rejected`] when
    /// `CoreConfig::lease_reads` is off. `Follower` is served by the leader as a linearizable
    /// read, and by a follower that knows the leader of its term after the leader confirmed a
    /// read index for it (thesis §6.4).
    ReadIndex {
        /// Caller's id for this read.
        id: RequestId,
        /// Who may serve it and how.
        mode: ReadMode,
    },
    /// Storage's answer to one of its actions ([`Action::Storage`]), or its report of a
    /// damaged local snapshot: what the storage thread sends, taken as it is.
    Storage(StorageOutcome),
    /// What the state machine's side reports: entries applied, or a local snapshot taken.
    /// What the apply thread sends, taken as it is.
    Apply(ApplyOutcome),
    /// Hand leadership to `target` (leader only).
    TransferLeadership {
        /// The node to become leader.
        target: NodeId,
    },
    /// Start an election now (tests, or operators forcing a campaign).
    Campaign,
}

/// Actions the caller carries out, in the order they are drained.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send a message. May be dropped by the network; Raft retransmits.
    Send(Message),
    /// Work for storage ([`StorageAction`]): the storage thread takes it as it is and
    /// carries the storage actions out in the order they were drained.
    Storage(StorageAction),
    /// These entries are committed and durable locally: apply them in order. No-op and
    /// membership entries are included (the state machine skips them but counts them as
    /// applied). After a restart, application resumes after the snapshot index, so the state
    /// machine must first be restored from the recovered snapshot.
    Apply {
        /// Contiguous committed entries.
        entries: Vec<Entry>,
    },
    /// A received snapshot was installed ([`StorageOutcome::SnapshotInstalled`]) and the core's log now
    /// starts after it: restore the state machine from it (the current snapshot, or a newer
    /// one installed since) before applying any entry of a later [`Action::Apply`]. The core
    /// does not wait for the restore; the caller reports it with [`ApplyOutcome::Applied`] as usual.
    RestoreSnapshot {
        /// The installed snapshot.
        meta: SnapshotMeta,
    },
    /// A proposal was appended at (`term`, `index`); its result arrives when that index is
    /// applied with that term. If another entry is applied at `index`, the proposal was lost.
    Proposed {
        /// Caller's id.
        id: RequestId,
        /// Term of the new entry.
        term: Term,
        /// Index of the new entry.
        index: LogIndex,
    },
    /// A proposal was refused; nothing was appended.
    ProposeRejected {
        /// Caller's id.
        id: RequestId,
        /// Why.
        error: ProposeError,
    },
    /// A read may be served once the state machine has applied through `index`.
    ReadReady {
        /// Caller's id.
        id: RequestId,
        /// Read index.
        index: LogIndex,
        /// Leader term at which the read was confirmed.
        term: Term,
    },
    /// A read cannot be served here.
    ReadRejected {
        /// Caller's id.
        id: RequestId,
        /// Why.
        error: ProposeError,
    },
    /// This leader's own writes (or its links to its followers) have been far slower than
    /// its followers' for a sustained window, so it starts handing leadership to `to` (the
    /// transfer's messages follow).
    /// Nothing to carry out: tell the operator why (core/gray_failure.rs).
    SelfDemotion(SelfDemotion),
}

/// The storage-bound actions of [`Action::Storage`]: the storage thread takes them as its
/// commands as they are (the simulator routes them to its simulated disk), in the order drained.
#[derive(Clone, Debug)]
pub enum StorageAction {
    /// Make these durable, in this order: first, when `entries` is non-empty and its first
    /// index is at or below the current last index, truncate the log from that index; then
    /// append `entries`; then save `hard_state` when present. Then answer with
    /// [`StorageOutcome::Persisted`] carrying `seq`. Sequence numbers start at 1 for every new
    /// `Replica` and grow by one per action; several may be made durable with one sync and
    /// confirmed with the highest one.
    Persist {
        /// Sequence number to echo.
        seq: u64,
        /// New hard state, when it changed.
        hard_state: Option<HardState>,
        /// Entries to write, contiguous, in index order.
        entries: Vec<Entry>,
    },
    /// Read log entries `[low, high]` from storage, stopping after the first entry that
    /// brings their `Entry::size_bytes` to `max_bytes` or more (at least one entry), and
    /// answer with [`StorageOutcome::EntriesRead`] echoing `id`, `to` and `low`. The leader needs
    /// them for a follower and no longer holds them in memory; they are durable (written by
    /// a `Persist` confirmed earlier), though storage may have compacted them meanwhile (then
    /// answer with an error). Reads never block the core.
    ReadEntries {
        /// Identifies this read; echoed in the answer.
        id: u64,
        /// The follower the entries are for.
        to: NodeId,
        /// First index to read.
        low: LogIndex,
        /// Last index to read at most.
        high: LogIndex,
        /// Stop once this many entry bytes are read.
        max_bytes: u64,
    },
    /// Read `max_bytes` of the current local snapshot from `offset` and answer with
    /// [`StorageOutcome::SnapshotChunkRead`].
    ReadSnapshotChunk {
        /// Follower being sent the snapshot.
        to: NodeId,
        /// The snapshot to read.
        meta: SnapshotMeta,
        /// Offset to read from.
        offset: u64,
        /// Most bytes to read.
        max_bytes: u64,
    },
    /// Write a received snapshot chunk to the partial snapshot file (starting a new one when
    /// `meta` differs from the partial file's; bytes already held are skipped and answered
    /// with the durable offset, whichever leader sends them), sync it, and when `done` verify the whole file's
    /// checksum, make it the current snapshot, discard the whole log (the snapshot replaces
    /// it), and answer with [`StorageOutcome::SnapshotInstalled`]; every other chunk, and a final one
    /// whose snapshot fails its check, is answered with [`StorageOutcome::SnapshotChunkWritten`].
    /// Every chunk is answered exactly once, in the order the chunks were given: the core
    /// tells the final chunk's answer from earlier ones by counting.
    WriteSnapshotChunk {
        /// Leader that sent it.
        from: NodeId,
        /// The snapshot.
        meta: SnapshotMeta,
        /// Offset of `data`.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
        /// CRC-32C of `data` as the leader sent it; storage refuses a chunk that does not
        /// match (answering `rejected` with its durable offset).
        chunk_crc: u32,
        /// Last chunk.
        done: bool,
    },
    /// The log before `through` (inclusive) is covered by a snapshot and may be removed from
    /// storage. Entries kept behind a snapshot are harmless: on recovery the core skips entries
    /// at or below the snapshot index.
    CompactLog {
        /// Highest index that may be removed.
        through: LogIndex,
    },
    /// These snapshots are in use: the current one, and those being sent to followers (a
    /// transfer goes on with the snapshot it started with, even once a newer one is taken).
    /// Keep their files readable until a later `KeepSnapshots` no longer lists them; remove
    /// the older files not listed, and no file newer than every one listed (a local snapshot
    /// the core has not heard of yet). Emitted last in a drain whenever the set changes, and
    /// in the first drain of a new `Replica` that has a snapshot.
    KeepSnapshots {
        /// The snapshots in use, in (index, term) order.
        in_use: Vec<SnapshotMeta>,
    },
}

/// What the state machine's side reports to the core ([`Input::Apply`]). The apply thread
/// produces these and the consensus thread hands them to the core as they are (the
/// simulator's apply handler produces the same values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The state machine applied every entry through `index`.
    Applied {
        /// Highest applied index.
        index: LogIndex,
    },
    /// A local snapshot through `meta.index` is durable; the core may compact its log view
    /// (keeping `retain_entries` entries behind it for slow followers).
    SnapshotTaken {
        /// The new snapshot.
        meta: SnapshotMeta,
        /// How many entries before `meta.index` to keep (the node's setting).
        retain_entries: u64,
    },
}

/// What storage reports to the core ([`Input::Storage`]): the answer to each of its actions
/// ([`StorageAction`]) that asks for one, and a damaged local snapshot it found. The storage
/// thread produces these and the consensus thread hands them to the core as they are (the
/// simulator's disk model produces the same values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOutcome {
    /// Storage made the [`StorageAction::Persist`] with this sequence number (and all before
    /// it) durable.
    Persisted {
        /// Sequence number of the persist action.
        seq: u64,
    },
    /// Answer to [`StorageAction::ReadEntries`]: the entries read from storage, or why they
    /// could not be (the range is no longer in storage, or unreadable); then the follower is
    /// sent the snapshot instead, when there is one.
    EntriesRead {
        /// The request's id.
        id: u64,
        /// The follower they are for.
        to: NodeId,
        /// The first index asked for.
        low: LogIndex,
        /// Entries from `low` on, contiguous, in index order; or why there are none.
        entries: std::result::Result<Vec<Entry>, ReadEntriesError>,
    },
    /// Answer to [`StorageAction::ReadSnapshotChunk`] (none when the chunk could not be read,
    /// or its file is damaged: then [`StorageOutcome::SnapshotDamaged`] is reported once).
    SnapshotChunkRead {
        /// The follower the chunk is for.
        to: NodeId,
        /// The snapshot read from.
        meta: SnapshotMeta,
        /// Offset of `data`.
        offset: u64,
        /// The bytes; shorter than asked only at the end of the snapshot.
        data: Vec<u8>,
    },
    /// Answer to [`StorageAction::WriteSnapshotChunk`] (every one but a final chunk that
    /// installed its snapshot, answered by [`StorageOutcome::SnapshotInstalled`]): the chunk is
    /// durable in the partial file.
    SnapshotChunkWritten {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Bytes durable so far.
        next_offset: u64,
        /// True when the chunk was refused (wrong offset or bad checksum); the leader is asked
        /// to resume at `next_offset`.
        rejected: bool,
    },
    /// Answer to the final [`StorageAction::WriteSnapshotChunk`] of a snapshot: storage
    /// verified the whole snapshot and made it current, and the log it keeps restarts after
    /// it (or it already held that snapshot, or a newer one). The core resets its log to the
    /// snapshot point when it is newer than its own and asks for the state machine to be
    /// restored ([`Action::RestoreSnapshot`]).
    SnapshotInstalled {
        /// The snapshot.
        meta: SnapshotMeta,
    },
    /// The file of the local snapshot at `index` and `term` is damaged: storage sends no more
    /// of it, and a replacement is being written. Transfers of it start over with the
    /// current snapshot once that is another one (a newer snapshot, or the same point
    /// written again).
    SnapshotDamaged {
        /// Index of the damaged snapshot.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
}

/// Why storage could not read the entries a [`StorageAction::ReadEntries`] asked for. Not
/// fatal: the leader sends the follower the snapshot instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEntriesError {
    /// What kind of failure.
    pub kind: ReadFailure,
    /// Storage's description of it (the range, the file, the cause).
    pub message: String,
}

/// The kinds of [`ReadEntriesError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// The range is not (all) in the log any more: compacted behind a snapshot, or cut.
    NotHeld,
    /// A record in the range fails its checksum or does not decode.
    Damaged,
    /// The read itself failed (an I/O error, or storage refuses further work).
    Io,
}

impl ReadEntriesError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ReadFailure, message: impl Into<String>) -> ReadEntriesError {
        ReadEntriesError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ReadEntriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReadEntriesError {}
