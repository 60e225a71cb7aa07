//! The `Replica`: one node's Raft state, the role dispatcher, and the persistence plumbing
//! that holds back promises until storage confirms them.
//!
//! Owned by the node's consensus thread (or the simulator); never shared. Handlers for each
//! concept live in sibling files (`election.rs`, `replication.rs`, `read_index.rs`,
//! `follower_read.rs`, `snapshot.rs`, `membership.rs`), all as `impl Replica` blocks over the fields defined here.
//!
//! Invariants:
//! - `leader_state.is_some()` exactly when `role == Role::Leader`;
//! - a message that promises durable state (a vote grant, a real vote request carrying our own
//!   vote, an append acknowledgement) leaves only after the `Persist` that made the promise
//!   true is confirmed by `StorageOutcome::Persisted` (thesis §10.2.1 and DESIGN.md §4);
//! - entries reach `Action::Apply` only when committed *and* durable locally, in order, once,
//!   and at most `apply_window_entries` beyond the applied index.

use super::ahead::AheadAppends;
use super::api::{
    Action, ApplyOutcome, CoreConfig, HardState, Input, LostEntries, ProposeError, RecoveredState,
    StorageAction, StorageOutcome,
};
use super::error::{CoreError, Result};
use super::follower_read::ForwardedReads;
use super::gray_failure::LatencyWatch;
use super::link_probe::LinkWatch;
use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::read_index::ReadQueue;
use super::rng::SplitMix64;
use super::snapshot::IncomingSnapshot;
use super::vote_recovery::VoteRecovery;
use rcraft_wire::{
    Entry, LogIndex, Membership, Message, MessageBody, NodeId, PeerProgress, ReplicationState,
    Role, Term,
};
use std::collections::{BTreeMap, VecDeque};

/// A snapshot of a replica's state, for status reports, tests and checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreStatus {
    /// This node.
    pub id: NodeId,
    /// Its role (a pre-candidate reports `Candidate`; a non-voting member `Learner`).
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// The leader it knows of in this term.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index the state machine reported applied.
    pub applied_index: LogIndex,
    /// Last index of the log.
    pub last_index: LogIndex,
    /// Highest index durable on this node.
    pub persisted_index: LogIndex,
    /// Index covered by the latest snapshot.
    pub snapshot_index: LogIndex,
    /// Configuration in force.
    pub membership: Membership,
    /// On a leader, each other member's replication progress in id order; empty otherwise.
    pub replication: Vec<PeerProgress>,
    /// Entries this node lost from its disk and is fetching again; until they are repaired it
    /// does not campaign and votes only for a candidate whose log covers them (see
    /// `Replica::repair`).
    pub repairing: Option<LostEntries>,
    /// This node lost the record of its votes (a damaged hard-state file): the voters whose
    /// terms it still waits for. Until they answered it does not vote (see
    /// `vote_recovery.rs`); `None` when its votes are known.
    pub votes_unknown: Option<Vec<NodeId>>,
}

impl CoreStatus {
    /// The wire form reported to clients and operators (`rcraft status`).
    pub fn to_node_status(&self) -> rcraft_wire::NodeStatus {
        let mut voters: Vec<NodeId> = self
            .membership
            .voters
            .union(&self.membership.voters_outgoing)
            .copied()
            .collect();
        voters.dedup();
        rcraft_wire::NodeStatus {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            last_index: self.last_index,
            snapshot_index: self.snapshot_index,
            voters,
            learners: self.membership.learners.iter().copied().collect(),
            membership: self.membership.clone(),
            replication: self.replication.clone(),
            repairing: self.repairing.map(|lost| rcraft_wire::LostRange {
                from: lost.from,
                through: lost.through,
            }),
            votes_unknown: self.votes_unknown.clone(),
            // Only the node layer knows a range its only server went on without.
            lost: None,
        }
    }
}

/// The phase of an election this node runs, or its role otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Following (or idle, with no leader known).
    Follower,
    /// Running a Pre-Vote round for `term + 1` (thesis §9.6); term and vote unchanged.
    PreCandidate,
    /// Running a real election in `term`.
    Candidate,
    /// Leading in `term`.
    Leader,
}

/// State only a leader has.
#[derive(Debug)]
pub(super) struct LeaderState {
    /// One per member other than this node. Invariant: keys == members() minus self.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Bytes of entries after the commit index (the overload cap counts these).
    pub uncommitted_bytes: u64,
    /// A leadership transfer in progress: target and ticks since it started.
    pub transfer: Option<(NodeId, u64)>,
    /// Ticks the transfer in progress may take beyond an election timeout: 0, except after
    /// a self-demotion for slow links, where the catch-up and `TimeoutNow` need round trips
    /// of the slow leader's (gray_failure.rs).
    pub transfer_grace_ticks: u64,
    /// `TimeoutNow` was sent in this term: voters may now elect the target despite their
    /// lease (`leadership_transfer`), so this leader serves no more lease reads.
    pub lease_revoked: bool,
    /// ReadIndex requests and heartbeat rounds.
    pub reads: ReadQueue,
    /// Snapshot bytes that may still be requested before the next refill (see
    /// `CoreConfig::snapshot_bytes_per_tick`; unused when that is 0).
    pub snapshot_budget: u64,
    /// The follower whose transfer was last given a snapshot chunk: the next round of
    /// requests starts after it, so that a budget that pays for one chunk at a time goes to
    /// every transfer in turn rather than always to the lowest id.
    pub snapshot_turn: Option<NodeId>,
    /// Own and followers' durability latencies, for self-demotion (gray_failure.rs).
    pub latency: LatencyWatch,
    /// This leader is not a voter of the committed configuration: it hands leadership over
    /// (`transfer`) and steps down once it sent `TimeoutNow` or the transfer gave up
    /// (replication.rs, `hand_over_on_removal`).
    pub leaving: bool,
}

/// The entry (index, term) a held acknowledgement promises the durable log holds.
pub(super) type Promised = (LogIndex, Term);

/// Writes collected since the last drain, emitted as one `StorageAction::Persist` by `take_actions`.
#[derive(Debug, Default)]
pub(super) struct PersistState {
    /// Sequence number the next `Persist` action will carry.
    pub next_seq: u64,
    /// Highest sequence number confirmed durable.
    pub confirmed_seq: u64,
    /// Entries to write in the next `Persist`, contiguous.
    pub buffer: Vec<Entry>,
    /// Term or vote changed since the last `Persist`.
    pub hard_state_dirty: bool,
    /// Issued, unconfirmed persists and the last (index, term) each wrote.
    pub unconfirmed: VecDeque<(u64, Option<(LogIndex, Term)>)>,
    /// Messages held until the persist with the given sequence number is confirmed; an
    /// AppendResponse that acknowledges entries carries the entry (index, term) it promises.
    pub gated: VecDeque<(u64, Message, Option<Promised>)>,
}

/// A lost range being repaired, and the term this node had when it found the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Repair {
    pub lost: LostEntries,
    /// Every entry this node acknowledged, it acknowledged in this term or an earlier one
    /// (`Term(u64::MAX)` while its votes are unknown and the bound not yet learned).
    pub recovered_term: Term,
    /// The other voter when the configuration of the log it recovered (the last in its
    /// intact part) is a simple one of exactly two voters, this node and that one
    /// (`repair.rs`, "Two voters").
    pub pair: Option<NodeId>,
}

/// One node's Raft state machine. See the module header and `docs/ARCHITECTURE.md`.
#[derive(Debug)]
pub struct Replica {
    pub(super) config: CoreConfig,
    pub(super) id: NodeId,
    pub(super) rng: SplitMix64,
    /// Latest term seen (persistent, paper Fig. 2).
    pub(super) term: Term,
    /// Vote cast in `term` (persistent).
    pub(super) vote: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) phase: Phase,
    /// Leader of `term`, when known.
    pub(super) leader: Option<NodeId>,
    /// Some exactly while leading.
    pub(super) leader_state: Option<LeaderState>,
    /// Votes received in the current (pre-)election.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Configuration in force and the index it was appended at (0 for the initial one).
    pub(super) membership: Membership,
    pub(super) membership_index: LogIndex,
    /// The term of the entry at `membership_index` (its snapshot's term when that is where
    /// the configuration comes from; 0 for the initial one), kept since compaction may drop
    /// the entry (`repair.rs`, "Two voters").
    pub(super) membership_term: Term,
    pub(super) initial_membership: Membership,
    /// Ticks since the last reset of the election timer (followers, candidates), or since the
    /// last CheckQuorum round (leaders).
    pub(super) election_elapsed: u64,
    /// Current randomized election timeout, drawn from the configured range.
    pub(super) election_timeout_ticks: u64,
    /// Ticks since the leader's last heartbeat broadcast.
    pub(super) heartbeat_elapsed: u64,
    /// Ticks since this replica was built (for leases).
    pub(super) now_ticks: u64,
    /// With lease reads, a restarted node refuses votes for its first minimum election
    /// timeout: before the crash it may have answered a heartbeat that a leader's lease
    /// counts on, a promise it no longer remembers (thesis §6.4.1).
    pub(super) boot_lease: bool,
    pub(super) persist: PersistState,
    /// Highest index the state machine reported applied.
    pub(super) applied: LogIndex,
    /// Highest index handed out in `Action::Apply`. Invariant: `applied <= apply_requested`.
    pub(super) apply_requested: LogIndex,
    /// A snapshot being received from a leader.
    pub(super) incoming_snapshot: Option<IncomingSnapshot>,
    /// `StorageAction::WriteSnapshotChunk`s not yet answered (`StorageOutcome::SnapshotChunkWritten`, or
    /// `StorageOutcome::SnapshotInstalled` for a final chunk), of
    /// any transfer. Storage answers each once, in the order it got them, so while the final
    /// chunk of a transfer (handed over last) is with storage, an answer that leaves this
    /// above zero is about an earlier chunk.
    pub(super) chunk_writes_unanswered: u64,
    /// The snapshots storage was last told are in use (`StorageAction::KeepSnapshots`), in (index,
    /// term) order. Invariant: after each drain, the current snapshot and every snapshot a
    /// transfer sends.
    pub(super) snapshots_kept: Vec<rcraft_wire::SnapshotMeta>,
    /// A local snapshot whose file storage found damaged (`StorageOutcome::SnapshotDamaged`), until
    /// a snapshot at another point replaces it: transfers of it then start over.
    pub(super) damaged_snapshot: Option<(LogIndex, Term)>,
    /// Entries lost from this node's disk that it may have acknowledged, while not yet
    /// repaired. Protocol-aware recovery (Alagappan et al., FAST 2018): an acknowledgement
    /// may have completed the quorum that committed them, so until the node holds them
    /// again it must not help elect a leader whose log might lack them, nor become one.
    /// Invariant: while `Some`, this node never campaigns and grants a vote or pre-vote only
    /// to a candidate that covers the range (`Repair::candidate_covers`).
    pub(super) repair: Option<Repair>,
    /// While repairing: the voters that answered a `RepairQuery` with a log ending before the
    /// lost range, each with whether its answer's term was above the recovered term (only
    /// those count, `repair.rs`), and the configuration (its index) they were counted in.
    pub(super) repair_witnesses: (LogIndex, BTreeMap<NodeId, bool>),
    /// While repairing: each voter's last answer, for the tail rule (`repair.rs`); counted in
    /// the configuration of `repair_witnesses.0`.
    pub(super) repair_tails: BTreeMap<NodeId, super::repair::RepairTail>,
    /// While `Some`, this node lost the record of its votes (`HardState::votes_unknown`) and
    /// gathers the terms of its voters. Invariant: while `Some`, it grants no vote or
    /// pre-vote in a term up to the bound its voters gave, and never campaigns before they
    /// all answered (`vote_recovery.rs`).
    pub(super) vote_recovery: Option<VoteRecovery>,
    /// While repairing a range lost from the log of a pair: the last entry (index, term) of
    /// the other voter's log when it answered a `RepairQuery` with a log that holds every
    /// committed entry of the range (`repair.rs`, "Two voters"); it gets this node's vote
    /// while its log ends there.
    pub(super) repair_pair: Option<(LogIndex, Term)>,
    /// Proposals were appended since the last drain; their AppendRequests go out then.
    pub(super) proposals_unsent: bool,
    /// Follower reads waiting for the leader's read index.
    pub(super) forwarded_reads: ForwardedReads,
    /// Tick of this node's last gray-failure self-demotion, for its cool-down (kept across
    /// terms, unlike the leader state).
    pub(super) last_self_demotion: Option<u64>,
    /// Id of the next `StorageAction::ReadEntries`; ids only grow, so a late answer to a read the
    /// leader gave up on is told apart.
    pub(super) next_entries_read: u64,
    /// Round trips to the other voters, from link probes (link_probe.rs; every role).
    pub(super) links: LinkWatch,
    /// Appends from the current leader kept ahead of the log until their predecessor
    /// arrives (`ahead.rs`).
    pub(super) ahead: AheadAppends,
    pub(super) actions: Vec<Action>,
}

impl Replica {
    /// Builds a replica from its configuration and what storage recovered.
    pub fn new(config: CoreConfig, recovered: RecoveredState) -> Result<Replica> {
        validate_config(&config)?;
        let log = RaftLog::recover(
            recovered.snapshot,
            recovered.entries,
            recovered.hard_state.commit,
        )?;
        let applied = log.snapshot_index();
        let repair = recovered
            .lost
            .filter(|lost| lost.through > log.last_index())
            .map(|lost| Repair {
                lost,
                // With its votes unknown the saved term is only a lower bound of the terms
                // this node acknowledged in: none is known until the vote bound (SIM_FINDINGS
                // 24), so no candidate covers it and no leader's term is later.
                recovered_term: match recovered.hard_state.votes_unknown {
                    true => Term(u64::MAX),
                    false => recovered.hard_state.term,
                },
                pair: None,
            });
        // With its votes unknown, the saved term is only a lower bound (it may even be the
        // default, both slots lost): the log shows terms the node certainly reached.
        let votes_unknown = recovered.hard_state.votes_unknown;
        let (term, vote) = if votes_unknown {
            (recovered.hard_state.term.max(log.last_term()), None)
        } else {
            (recovered.hard_state.term, recovered.hard_state.vote)
        };
        let mut replica = Replica {
            id: config.id,
            rng: SplitMix64::new(config.seed),
            term,
            vote,
            log,
            phase: Phase::Follower,
            leader: None,
            leader_state: None,
            votes: BTreeMap::new(),
            membership: recovered.initial_membership.clone(),
            membership_index: LogIndex(0),
            membership_term: Term(0),
            initial_membership: recovered.initial_membership,
            election_elapsed: 0,
            election_timeout_ticks: 0,
            heartbeat_elapsed: 0,
            now_ticks: 0,
            boot_lease: config.lease_reads,
            persist: PersistState {
                next_seq: 1,
                ..PersistState::default()
            },
            applied,
            apply_requested: applied,
            incoming_snapshot: None,
            chunk_writes_unanswered: 0,
            snapshots_kept: Vec::new(),
            damaged_snapshot: None,
            repair,
            repair_witnesses: (LogIndex(0), BTreeMap::new()),
            repair_tails: BTreeMap::new(),
            vote_recovery: votes_unknown.then(VoteRecovery::default),
            repair_pair: None,
            proposals_unsent: false,
            forwarded_reads: ForwardedReads::new(config.seed),
            last_self_demotion: None,
            next_entries_read: 1,
            links: LinkWatch::default(),
            ahead: AheadAppends::default(),
            actions: Vec::new(),
            config,
        };
        if replica.log.last_term() > replica.term {
            return Err(CoreError::RecoveredLog(format!(
                "last entry term {} is above the saved term {}",
                replica.log.last_term(),
                replica.term
            )));
        }
        replica.refresh_membership();
        let pair = replica.other_of_pair();
        if let Some(repair) = replica.repair.as_mut() {
            repair.pair = pair;
        }
        replica.reset_election_timer();
        Ok(replica)
    }

    /// Feeds one input; the resulting actions are queued for [`Replica::take_actions`].
    pub fn step(&mut self, input: Input) {
        match input {
            Input::Tick => self.on_tick(),
            Input::Message(message) => self.on_message(message),
            Input::Propose { id, session, data } => self.on_propose(id, session, data),
            Input::ProposeMembership { id, membership } => {
                self.on_propose_membership(id, membership)
            }
            Input::ReadIndex { id, mode } => self.on_read_index(id, mode),
            Input::Storage(outcome) => self.on_storage_outcome(outcome),
            Input::Apply(ApplyOutcome::Applied { index }) => self.on_applied(index),
            Input::Apply(ApplyOutcome::SnapshotTaken {
                meta,
                retain_entries,
            }) => self.on_snapshot_taken(meta, retain_entries),
            Input::TransferLeadership { target } => self.on_transfer_leadership(target),
            Input::Campaign => self.on_campaign(),
        }
        self.finish_step();
    }

    /// [`Input::Storage`]: storage's answer to one of its actions, or a damaged snapshot.
    fn on_storage_outcome(&mut self, outcome: StorageOutcome) {
        match outcome {
            StorageOutcome::Persisted { seq } => self.on_persisted(seq),
            StorageOutcome::EntriesRead {
                id,
                to,
                low,
                entries,
            } => self.on_entries_read(id, to, low, entries),
            StorageOutcome::SnapshotChunkRead {
                to,
                meta,
                offset,
                data,
            } => self.on_snapshot_chunk_read(to, meta, offset, data),
            StorageOutcome::SnapshotChunkWritten {
                meta,
                next_offset,
                rejected,
            } => self.on_snapshot_chunk_written(meta, next_offset, rejected),
            StorageOutcome::SnapshotInstalled { meta } => self.on_snapshot_installed(meta),
            StorageOutcome::SnapshotDamaged { index, term } => {
                self.on_snapshot_damaged(index, term)
            }
        }
    }

    /// Drains the queued actions, in the order they must be carried out.
    ///
    /// Work that batches well is deferred to here: the AppendRequests for proposals, the
    /// heartbeat round for reads, and the `Persist` of everything written, so a caller that
    /// steps many inputs (say, every proposal waiting in its channel) before draining gets one
    /// message per follower and one durable write for the whole batch (DESIGN.md §5).
    pub fn take_actions(&mut self) -> Vec<Action> {
        if self.phase == Phase::Leader {
            if self.proposals_unsent {
                self.broadcast_append(false);
            }
            self.maybe_broadcast_read_round();
        }
        self.send_forwarded_reads();
        self.proposals_unsent = false;
        self.flush_persist();
        self.keep_snapshots_in_use();
        std::mem::take(&mut self.actions)
    }

    /// This replica's view of itself and the cluster.
    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            id: self.id,
            role: self.role(),
            term: self.term,
            leader: self.leader,
            commit_index: self.log.committed_index(),
            applied_index: self.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            snapshot_index: self.log.snapshot_index(),
            membership: self.membership.clone(),
            replication: self.replication_progress(),
            repairing: self.repair.map(|repair| repair.lost),
            votes_unknown: self.votes_unknown_waiting_for(),
        }
    }

    /// The leader's view of every other member's replication; empty when not leading.
    fn replication_progress(&self) -> Vec<PeerProgress> {
        let Some(state) = &self.leader_state else {
            return Vec::new();
        };
        state
            .progress
            .iter()
            .map(|(&id, pr)| PeerProgress {
                id,
                match_index: pr.match_index,
                next_index: pr.next_index,
                state: match &pr.state {
                    ProgressState::Probe => ReplicationState::Probe,
                    ProgressState::Replicate => ReplicationState::Replicate,
                    ProgressState::Snapshot(transfer) => ReplicationState::Snapshot {
                        offset: transfer.offset,
                        size_bytes: transfer.meta.size_bytes,
                    },
                },
                recently_active: pr.recent_active,
            })
            .collect()
    }

    /// Role as reported to operators.
    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Leader => Role::Leader,
            Phase::Candidate | Phase::PreCandidate => Role::Candidate,
            // A voter being demoted by a joint change is listed as a learner of the new
            // configuration but still votes in the old one until the change completes.
            Phase::Follower
                if self.membership.learners.contains(&self.id)
                    && !self.membership.is_voter(self.id) =>
            {
                Role::Learner
            }
            Phase::Follower => Role::Follower,
        }
    }

    /// The leader this replica knows of in its current term (cheap; [`status`](Self::status)
    /// copies more).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Highest index durable on this node.
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted_index()
    }

    /// The configuration in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The range lost from this node's disk that it is still repairing, if any.
    pub fn repairing(&self) -> Option<LostEntries> {
        self.repair.map(|repair| repair.lost)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Current term, vote and commit index (what the last `Persist` saved or will save).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed_index(),
            votes_unknown: !self.votes_known(),
        }
    }

    /// The entries held in memory (the entry cache), in index order.
    pub fn log_entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.log.cached_entries()
    }

    /// First index of the entries held in memory (last index + 1 when none are).
    pub fn log_cache_first_index(&self) -> LogIndex {
        self.log.cache_first_index()
    }

    /// What the entries held in memory cost, in bytes (`Entry::size_bytes` plus the value).
    pub fn log_cache_bytes(&self) -> u64 {
        self.log.cache_bytes()
    }

    /// The entry at `index`, when held in memory.
    pub fn log_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Term of the entry at `index`, when known.
    pub fn log_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The configuration in force at `index`, for the `membership` of a [`SnapshotMeta`]
    /// taken at `index`. `None` when `index` is beyond the log or compacted away (or falls
    /// between a retained entry and the snapshot without a membership entry in between).
    ///
    /// [`SnapshotMeta`]: rcraft_wire::SnapshotMeta
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        self.log.membership_at(index, &self.initial_membership)
    }

    /// True while leading.
    pub fn is_leader(&self) -> bool {
        self.phase == Phase::Leader
    }

    /// Asserts the internal invariants (for tests and the simulator; cheap enough to call
    /// after every step).
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        self.ahead
            .check_invariants(self.term, self.log.last_index());
        assert_eq!(self.leader_state.is_some(), self.phase == Phase::Leader);
        assert!(self.apply_requested <= self.log.committed_index().max(self.log.snapshot_index()));
        assert!(self.apply_requested.0 - self.applied.0 <= self.config.apply_window_entries);
        if let Some(state) = &self.leader_state {
            for (id, pr) in &state.progress {
                assert!(pr.match_index < pr.next_index, "progress of {id}");
                assert!(
                    pr.match_index <= self.log.last_index(),
                    "match of {id} beyond log"
                );
            }
        }
    }

    fn on_tick(&mut self) {
        self.now_ticks += 1;
        match self.phase {
            Phase::Leader => self.tick_leader(),
            Phase::Follower | Phase::PreCandidate | Phase::Candidate => self.tick_election(),
        }
        self.tick_ahead();
        self.tick_link_probes();
        self.tick_repair();
        self.tick_vote_recovery();
    }

    fn on_propose(&mut self, id: u64, session: Option<rcraft_wire::Session>, data: Vec<u8>) {
        // The command's bytes are copied once, into the entry's record, which the entry's
        // command then views.
        let entry = |term, index| rcraft_wire::Entry::command(term, index, session, &data);
        match self.append_proposal(entry) {
            Ok((term, index)) => self.actions.push(Action::Proposed { id, term, index }),
            Err(error) => self.actions.push(Action::ProposeRejected { id, error }),
        }
    }

    /// The state machine's progress; `finish_step` then hands out what waited for room in
    /// the apply window.
    fn on_applied(&mut self, index: LogIndex) {
        if index > self.applied {
            self.applied = index.min(self.apply_requested);
        }
    }

    /// The refusal given to a proposal or read at a node that cannot lead it now.
    pub(super) fn not_leader(&self) -> ProposeError {
        let leader = match &self.leader_state {
            Some(state) => state.transfer.map(|(target, _)| target),
            None => self.leader,
        };
        ProposeError::NotLeader { leader }
    }

    /// Work done after every input: hand out the entries that became applicable, then keep
    /// the entry cache within its bytes (only entries durable and handed out may go).
    fn finish_step(&mut self) {
        self.maybe_finish_repair();
        self.maybe_end_vote_recovery();
        self.maybe_apply();
        self.settle_forwarded_reads();
        self.evict_entry_cache();
    }

    /// Keeps the entry cache within `entry_cache_bytes`, dropping only entries durable and
    /// handed to the state machine. On a leader, entries a follower that keeps up (replicating,
    /// heard from lately) has not acknowledged stay first, up to one in-flight window
    /// (`max_inflight_bytes`) beyond the bound: a resend after a lost message, or a follower
    /// a few entries behind, then needs no storage read.
    fn evict_entry_cache(&mut self) {
        let (max, through) = (self.config.entry_cache_bytes, self.apply_requested);
        let keeping_up = (self.leader_state.as_ref()).and_then(|state| {
            (state.progress.values())
                .filter(|pr| pr.recent_active && pr.state == ProgressState::Replicate)
                .map(|pr| pr.match_index)
                .min()
        });
        if let Some(floor) = keeping_up {
            self.log.evict(through.min(floor), max);
            let slack = max.saturating_add(self.config.max_inflight_bytes);
            self.log.evict(through, slack);
        } else {
            self.log.evict(through, max);
        }
    }

    // ----- persistence -----

    /// Queues entries for the next `Persist` (they are already in the in-memory log).
    pub(super) fn persist_entries(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let buffer = &mut self.persist.buffer;
        if let (Some(start), Some(end)) = (buffer.first(), buffer.last()) {
            if first.index > start.index && first.index <= end.index.next() {
                let keep = (first.index.0 - start.index.0) as usize;
                buffer.truncate(keep);
            } else {
                // A truncation below what is buffered: write the buffer first, in order.
                self.flush_persist();
            }
        }
        self.persist.buffer.extend_from_slice(entries);
    }

    /// Term or vote changed; the next `Persist` saves the hard state.
    pub(super) fn mark_hard_state_dirty(&mut self) {
        self.persist.hard_state_dirty = true;
    }

    /// Emits one `Persist` action for everything buffered.
    pub(super) fn flush_persist(&mut self) {
        if self.persist.buffer.is_empty() && !self.persist.hard_state_dirty {
            return;
        }
        let seq = self.persist.next_seq;
        self.persist.next_seq += 1;
        let entries = std::mem::take(&mut self.persist.buffer);
        let last = entries.last().map(|e| (e.index, e.term));
        let hard_state = self.persist.hard_state_dirty.then(|| self.hard_state());
        self.persist.hard_state_dirty = false;
        self.persist.unconfirmed.push_back((seq, last));
        if let (Some(state), Some(_)) = (self.leader_state.as_mut(), last) {
            state.latency.on_local_issued(seq, self.now_ticks);
        }
        self.actions.push(Action::Storage(StorageAction::Persist {
            seq,
            hard_state,
            entries,
        }));
    }

    /// The persist a promise made now depends on: the one being built, else the latest one
    /// issued and not yet confirmed; `None` when everything is durable.
    pub(super) fn pending_persist_seq(&self) -> Option<u64> {
        if !self.persist.buffer.is_empty() || self.persist.hard_state_dirty {
            Some(self.persist.next_seq)
        } else if self.persist.next_seq - 1 > self.persist.confirmed_seq {
            Some(self.persist.next_seq - 1)
        } else {
            None
        }
    }

    fn on_persisted(&mut self, seq: u64) {
        if seq <= self.persist.confirmed_seq || seq >= self.persist.next_seq {
            return;
        }
        self.persist.confirmed_seq = seq;
        if let Some(state) = self.leader_state.as_mut() {
            state.latency.on_local_confirmed(seq, self.now_ticks);
        }
        while let Some(&(done, last)) = self.persist.unconfirmed.front() {
            if done > seq {
                break;
            }
            self.persist.unconfirmed.pop_front();
            if let Some((index, term)) = last {
                self.log.mark_persisted(index, term);
            }
        }
        while self
            .persist
            .gated
            .front()
            .is_some_and(|(s, _, _)| *s <= seq)
        {
            let (_, message, promise) = self.persist.gated.pop_front().expect("checked non-empty");
            if let Some((index, term)) = promise {
                if self.log.persisted_index() < index || self.log.term_at(index) != Some(term) {
                    // A later leader's entries replaced the unsynced ones it acknowledges,
                    // in this very persist (SIM_FINDINGS 62): the promise no longer holds.
                    // Dropped, as the network may drop it.
                    continue;
                }
            }
            self.actions.push(Action::Send(message));
        }
        if self.phase == Phase::Leader {
            self.maybe_advance_commit();
        }
        self.maybe_finish_repair();
        self.maybe_win_after_persist();
    }

    /// Hands newly committed, locally durable entries to the state machine, at most
    /// `apply_window_entries` beyond what it reported applied.
    fn maybe_apply(&mut self) {
        // While storage installs a received snapshot it discards the log and restores the
        // state machine; entries handed out meanwhile would be applied after that restore,
        // below its index (simulator seed 884: a heartbeat's commit index arrived during the
        // install). The install's completion moves the apply point to the snapshot.
        if self.snapshot_finishing() {
            return;
        }
        let window_end = LogIndex(
            self.applied
                .0
                .saturating_add(self.config.apply_window_entries),
        );
        let upto = (self.log.committed_index())
            .min(self.log.persisted_index())
            .min(window_end);
        if upto <= self.apply_requested {
            return;
        }
        let from = self.apply_requested.next();
        // Never evicted: the cache keeps every entry not yet handed out.
        assert!(
            from >= self.log.cache_first_index(),
            "entries to apply left the cache"
        );
        let entries: Vec<Entry> = self.log.cached(from, upto).cloned().collect();
        if entries.is_empty() {
            return;
        }
        self.apply_requested = upto;
        self.actions.push(Action::Apply { entries });
    }

    // ----- sending -----

    /// Sends `body` to `to` at the current term, holding it back while it promises state
    /// that is not durable yet.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_at(to, term, body);
    }

    /// As [`Replica::send`] with an explicit term (Pre-Vote messages carry `term + 1`).
    pub(super) fn send_at(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let gate = if promises_durable_state(&body) {
            self.pending_persist_seq()
        } else {
            None
        };
        let promise = match &body {
            MessageBody::AppendResponse {
                success: true,
                match_index,
                ..
            } => (self.log.term_at(*match_index)).map(|term| (*match_index, term)),
            _ => None,
        };
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        match gate {
            Some(seq) => self.persist.gated.push_back((seq, message, promise)),
            None => self.actions.push(Action::Send(message)),
        }
    }

    /// Draws a new randomized election timeout and restarts the election timer.
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout_ticks = self.rng.in_range(
            self.config.election_timeout_min_ticks,
            self.config.election_timeout_max_ticks,
        );
    }
}

/// Whether a message states something that must be durable first: a granted real vote, a
/// real vote request (it carries our own vote for ourselves), an append acknowledgement, a
/// "snapshot done" answer (the leader takes the snapshot index as our match index, and we
/// may have answered from log entries that are not durable yet), or a `RepairAnswer` (a
/// repairing node counts its term as one this node will never accept appends below, even
/// after a restart, and its log end as the durable one: `repair.rs`).
fn promises_durable_state(body: &MessageBody) -> bool {
    match body {
        MessageBody::RepairAnswer { .. } => true,
        MessageBody::VoteRequest { pre_vote, .. } => !pre_vote,
        MessageBody::VoteResponse { pre_vote, granted } => *granted && !pre_vote,
        MessageBody::AppendResponse { success, .. } => *success && ack_waits_for_persist(),
        MessageBody::InstallSnapshotResponse { done, .. } => *done,
        _ => false,
    }
}

/// Append acknowledgements wait for durability, except in the planted-bug build.
#[cfg(not(feature = "bug-ack-before-persist"))]
fn ack_waits_for_persist() -> bool {
    true
}

/// PLANTED BUG (mutation check only): acknowledge appends before they are durable, so a
/// crash can lose entries a quorum "has".
#[cfg(feature = "bug-ack-before-persist")]
fn ack_waits_for_persist() -> bool {
    false
}

fn validate_config(config: &CoreConfig) -> Result<()> {
    let bad = |why: &str| Err(CoreError::Config(why.to_string()));
    if config.election_timeout_min_ticks == 0
        || config.election_timeout_max_ticks <= config.election_timeout_min_ticks
    {
        return bad("election timeout range must be non-empty and above 0");
    }
    if config.heartbeat_interval_ticks == 0
        || config.heartbeat_interval_ticks >= config.election_timeout_min_ticks
    {
        return bad("heartbeat interval must be above 0 and below the election timeout");
    }
    if config.max_inflight_messages == 0 || config.max_inflight_bytes == 0 {
        return bad("in-flight window must be above 0");
    }
    if config.snapshot_chunk_bytes == 0 {
        return bad("snapshot chunk size must be above 0");
    }
    if config.snapshot_chunks_in_flight == 0 {
        return bad("snapshot chunks in flight must be above 0");
    }
    if config.apply_window_entries == 0 {
        return bad("apply window must be above 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::api::{CoreConfig, RecoveredState};
    use super::*;
    use rcraft_wire::Membership;

    fn node_with(id: u64, membership: Membership) -> Replica {
        let recovered = RecoveredState {
            initial_membership: membership,
            lost: None,
            ..RecoveredState::default()
        };
        Replica::new(CoreConfig::new(NodeId(id), 5), recovered).unwrap()
    }

    #[test]
    fn a_voter_being_demoted_reports_itself_as_a_follower_until_the_change_completes() {
        let ids = |ids: &[u64]| ids.iter().copied().map(NodeId).collect();
        // Joint: voters 1,3 (new) and 1,2,3 (old); node 2 becomes a learner of the new one.
        let joint = Membership {
            voters: ids(&[1, 3]),
            voters_outgoing: ids(&[1, 2, 3]),
            learners: ids(&[2, 4]),
        };
        assert_eq!(node_with(2, joint.clone()).role(), Role::Follower);
        assert_eq!(node_with(4, joint).role(), Role::Learner);
        let after = Membership {
            voters: ids(&[1, 3]),
            voters_outgoing: Default::default(),
            learners: ids(&[2]),
        };
        assert_eq!(node_with(2, after).role(), Role::Learner);
    }

    /// The indexes of every `Action::Apply` in `actions`.
    fn applied_indexes(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply { entries } => Some(entries.iter().map(|e| e.index.0)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Issue 14 (docs/SIM_FINDINGS.md, finding 16): committed entries go to the state
    /// machine only within the apply window; the rest wait in the log for its progress.
    #[test]
    fn committed_entries_are_handed_out_within_the_apply_window() {
        use super::super::testing::{from_peer_in, leader_of_three, step_confirming as step};
        let mut leader = leader_of_three(|config| config.apply_window_entries = 2);
        // The no-op (1) was handed out when it committed; nothing is reported applied yet.
        for id in 0..5 {
            let propose = Input::Propose {
                id,
                session: None,
                data: vec![id as u8],
            };
            step(&mut leader, propose);
        }
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(6),
            conflict: None,
        };
        let actions = step(&mut leader, from_peer_in(1, 2, ack));
        assert_eq!(leader.status().commit_index, LogIndex(6));
        assert_eq!(applied_indexes(&actions), [2]);
        let applied = |index| {
            Input::Apply(ApplyOutcome::Applied {
                index: LogIndex(index),
            })
        };
        assert_eq!(applied_indexes(&step(&mut leader, applied(1))), [3]);
        assert_eq!(applied_indexes(&step(&mut leader, applied(3))), [4, 5]);
        assert_eq!(applied_indexes(&step(&mut leader, applied(5))), [6]);
        assert!(applied_indexes(&step(&mut leader, applied(6))).is_empty());
        leader.check_invariants();
    }
}
