//! The apply thread: runs the user's state machine over committed entries.
//!
//! Owns the [`StateMachine`], the client [`SessionTable`], the proposals waiting for their
//! index to apply, the reads waiting for their read index, and the applied-entry subscribers.
//! It receives [`ApplyCommand`]s from the consensus thread on one ordered channel, so a
//! proposal's waiter always arrives before the entry it waits for, and reports
//! [`ApplyProgress`] back once per drained batch. The logic is [`ApplyHandler`] (no thread,
//! channel or clock of its own; the cluster simulator drives it through `node::testing`);
//! [`Applier::run`] is the thread's loop around it.
//!
//! Commands carrying a client session go through the [`SessionTable`] (Raft thesis §6.3): a
//! registration creates a session and answers its client id without reaching the state
//! machine; a retry of a client's last write is answered from the table; a write from a
//! client the table does not hold (never registered, or forgotten to make room) is refused
//! with a definite error and never applied, since it may be the retry of a write applied
//! before the client was forgotten.
//!
//! Snapshots are written here, by the thread that owns the state machine, when the
//! [`SnapshotPolicy`] says one is due (entries or log bytes applied since the last one) or
//! when asked ([`ApplyCommand::TakeSnapshot`], or [`ApplyCommand::ReplaceSnapshot`] when the
//! leader's storage found the snapshot file damaged); the consensus thread only learns the
//! result, so it never waits for a snapshot to be written.
//!
//! A snapshot a leader sends may be restored while it is still being received
//! ([`ApplyCommand::SnapshotArriving`], only for a state machine whose restore is atomic,
//! [`StateMachine::restores_atomically`]): the restore reads the partial file through the
//! storage thread's [`IncomingSnapshot`] as chunks become durable. Its result stays pending
//! (`streamed`) until storage has installed the snapshot ([`ApplyCommand::Restore`]), which
//! then costs only bookkeeping; nothing is reported to the consensus thread before that.
//! While a streamed state is pending, committed entries it covers are counted as applied
//! without running them (their outcome is unknown to waiters, subscribers do not see them),
//! and no snapshot is taken (the state is ahead of `applied`).
//!
//! Invariants: entries are applied in index order with no gaps, each index at most once;
//! `applied` only grows except when a snapshot is restored (then it jumps to the snapshot's
//! index); a proposal is answered success only when its own (index, term) is applied; the
//! state machine holds the state at `applied`, or, while `streamed` is pending, the state at
//! its index (which is above `applied`).

use super::error::Error;
use super::incoming_snapshot::IncomingSnapshot;
use super::limits::{
    APPLIED_SUBSCRIBER_STALL_MAX, ENTRY_LOG_OVERHEAD_BYTES, EXPIRY_SWEEP_INTERVAL,
};
use super::mailbox::{Doorbell, Next, Ringing, next_or_wait};
use super::metrics::{MetricsHook, Stage};
use super::results::ApplyMsg;
use super::sessions::{SessionCheck, SessionTable, expired_message};
use super::snapshot_files::SnapshotFiles;
use super::snapshot_format::{read_snapshot, read_to_end_of_snapshot, write_snapshot};
use super::transport::{Replier, ReplyTo};
use crate::StateMachine;
use crate::core::ApplyOutcome;
use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use rcraft_wire::{
    ClientResponseBody, Entry, EntryPayload, LogIndex, Membership, Session, SnapshotMeta, Term,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Work for the apply thread, in the order the consensus thread decided it.
pub(crate) enum ApplyCommand {
    /// Committed, durable entries to apply in order.
    Entries(Vec<Entry>),
    /// Answer `reply` when `index` is applied: success if its term is `term`.
    WaitProposal {
        /// Index the proposal was appended at.
        index: LogIndex,
        /// Term it was appended with.
        term: Term,
        /// Who waits.
        reply: ReplyTo,
        /// After this, the waiter is told the outcome is unknown.
        deadline: Instant,
    },
    /// Serve `query` once `index` is applied.
    Read {
        /// The read index.
        index: LogIndex,
        /// Leader term that confirmed it.
        term: Term,
        /// The query for the state machine.
        query: Vec<u8>,
        /// Who waits.
        reply: ReplyTo,
        /// After this, the waiter is told the read failed.
        deadline: Instant,
    },
    /// A received snapshot was made current: restore the state machine from it.
    Restore(SnapshotMeta),
    /// Storage started writing (or resumed) the chunks of a snapshot from the leader: restore
    /// it while it arrives, if the state machine's restore is atomic.
    SnapshotArriving(SnapshotMeta),
    /// Add a receiver of applied commands.
    Subscribe(Sender<ApplyMsg>),
    /// Take a snapshot now (unless the latest one already covers every applied entry) and
    /// answer `reply` with its index, term and size (`result`: the size in bytes, u64 LE).
    TakeSnapshot {
        /// Who waits.
        reply: ReplyTo,
    },
    /// The latest snapshot's file (at index `damaged`) is damaged on disk: write a new one of
    /// the current state even if the latest covers every applied entry (at the same index and
    /// term it replaces the damaged file under the same name), and report it as taken.
    ReplaceSnapshot {
        /// Index of the damaged snapshot.
        damaged: LogIndex,
    },
}

/// When the apply thread takes a snapshot on its own: after `every_entries` applied entries
/// or `log_bytes` bytes of applied log since the last one, whichever comes first (0 turns
/// either trigger off); and how many entries the core keeps in its log behind each one
/// (reported with it, `ApplyOutcome::SnapshotTaken`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotPolicy {
    /// Entries applied since the last snapshot.
    pub(crate) every_entries: u64,
    /// Approximate log bytes (payload plus a fixed per-entry overhead) applied since the last
    /// snapshot.
    pub(crate) log_bytes: u64,
    /// Entries kept in the core's log behind a new snapshot, for slow followers.
    pub(crate) retain_entries: u64,
}

impl SnapshotPolicy {
    /// Never snapshot on its own (only when asked).
    #[cfg(test)]
    pub(crate) const ON_DEMAND_ONLY: SnapshotPolicy = SnapshotPolicy {
        every_entries: 0,
        log_bytes: 0,
        retain_entries: 0,
    };

    fn due(&self, entries: u64, bytes: u64) -> bool {
        (self.every_entries > 0 && entries >= self.every_entries)
            || (self.log_bytes > 0 && bytes >= self.log_bytes)
    }
}

/// What the apply thread tells the consensus thread: the core's own input, handed to it as
/// it is, and what only the node acts on.
#[derive(Debug)]
pub(crate) enum ApplyProgress {
    /// For the core: entries applied, or a local snapshot durable.
    Core(ApplyOutcome),
    /// A received snapshot was restored; the state is now at its index.
    Restored(SnapshotMeta),
    /// The committed entries have a gap, or the state machine's snapshot could not be
    /// written, read or restored ([`Error::Apply`]): the node must stop.
    Failed(Error),
    /// An answer the consensus thread gives once it has taken in the progress sent before
    /// it: a snapshot taken on demand is answered this way, so a caller that then asks for
    /// the node's status sees the snapshot and the compacted log.
    Answer(ReplyTo, ClientResponseBody),
}

/// What one applied entry answers its proposer: the state machine's response, or an error.
type Outcome = Result<Vec<u8>, Refusal>;

/// Why an applied entry answers its proposer with an error.
#[derive(Clone, Debug)]
struct Refusal {
    /// True when the command did not and will not take effect (it was refused); false when
    /// the apply thread cannot know.
    definite: bool,
    message: String,
}

impl Refusal {
    /// The command was refused: it did not and will not take effect.
    fn definite(message: String) -> Refusal {
        Refusal {
            definite: true,
            message,
        }
    }

    /// Whether the command took effect is unknown here.
    fn unknown(message: &str) -> Refusal {
        Refusal {
            definite: false,
            message: message.to_string(),
        }
    }
}

struct ProposalWaiter {
    term: Term,
    reply: ReplyTo,
    deadline: Instant,
}

/// A received snapshot restored while it arrived, not yet installed by storage.
struct Streamed {
    meta: SnapshotMeta,
    /// How long the restore took.
    took: Duration,
}

/// Where and how the apply thread restores snapshots while they arrive.
struct Streaming {
    incoming: IncomingSnapshot,
    /// Longest to wait for the next durable byte.
    stall_limit: Duration,
}

struct ReadWaiter {
    term: Term,
    query: Vec<u8>,
    reply: ReplyTo,
    deadline: Instant,
}

/// The apply thread: its handler, and the channels the handler never touches.
pub(crate) struct Applier {
    handler: ApplyHandler,
    replier: Replier,
    subscribers: Vec<Sender<ApplyMsg>>,
}

/// The apply thread's logic, with no thread, channel or clock of its own: it takes
/// [`ApplyCommand`]s one at a time and collects what they produce (answers to waiters,
/// [`ApplyProgress`] for the consensus thread, applied commands for subscribers) until its
/// owner takes them. [`Applier::run`] is the thread's loop around it; the cluster simulator
/// drives the same handler single-threaded (`node::testing::SimApply`). The one blocking
/// call it may make is a restore while a snapshot arrives (`restore_while_receiving`, only in
/// a running node), which reads the partial file as storage makes it durable.
pub(crate) struct ApplyHandler {
    state_machine: Box<dyn StateMachine>,
    sessions: SessionTable,
    snapshots: Box<dyn SnapshotFiles>,
    /// Highest applied index, and the term of that entry.
    applied: LogIndex,
    applied_term: Term,
    /// Membership in force at `applied` (saved in snapshot metadata).
    membership: Membership,
    /// The (index, term) of the entry `membership` comes from (`(0, 0)` for the initial
    /// configuration; `None` when restored from a snapshot that did not say).
    membership_entry: Option<(LogIndex, Term)>,
    /// Entries and approximate log bytes applied since the last snapshot; a snapshot is
    /// taken when `policy` says so.
    applied_since_snapshot: u64,
    bytes_since_snapshot: u64,
    policy: SnapshotPolicy,
    /// The latest snapshot taken or restored here.
    latest_snapshot: Option<SnapshotMeta>,
    proposals: BTreeMap<LogIndex, Vec<ProposalWaiter>>,
    reads: BTreeMap<LogIndex, Vec<ReadWaiter>>,
    /// Answers collected since the owner last took them (the thread sends a batch's
    /// together: one hand-off and one network wake-up per batch instead of per answer).
    outbox: Vec<(ReplyTo, ClientResponseBody)>,
    /// Progress for the consensus thread, in order, since the owner last took it.
    progress: Vec<ApplyProgress>,
    /// Applied commands for subscribers, collected only while `publishing`.
    published: Vec<ApplyMsg>,
    publishing: bool,
    /// Receivers of applied commands asked for since the owner last took them.
    new_subscribers: Vec<Sender<ApplyMsg>>,
    /// Where durations are measured from (the thread's clock; the simulator's is fixed).
    clock: fn() -> Instant,
    /// Set when snapshots may be restored while they arrive.
    streaming: Option<Streaming>,
    /// The snapshot the state machine holds while storage has not installed it yet.
    streamed: Option<Streamed>,
    /// A damaged snapshot to replace once no streamed state is pending (a snapshot written
    /// meanwhile would hold a state ahead of its label).
    deferred_replacement: Option<LogIndex>,
    /// Where snapshot save durations and sizes go (node/metrics.rs).
    metrics: MetricsHook,
}

impl Applier {
    /// Builds the apply thread's state, restoring the state machine from the latest snapshot
    /// if any. `initial_membership` is used when there is no snapshot.
    pub(crate) fn new(
        state_machine: Box<dyn StateMachine>,
        snapshots: Box<dyn SnapshotFiles>,
        initial_membership: Membership,
        policy: SnapshotPolicy,
        replier: Replier,
    ) -> Result<Applier, Error> {
        let handler = ApplyHandler::new(
            state_machine,
            snapshots,
            initial_membership,
            policy,
            SessionTable::default(),
            Instant::now,
        )?;
        Ok(Applier {
            handler,
            replier,
            subscribers: Vec::new(),
        })
    }

    /// Writes snapshot metrics to `metrics` from now on.
    pub(crate) fn set_metrics(&mut self, metrics: MetricsHook) {
        self.handler.metrics = metrics;
    }

    /// See [`ApplyHandler::restore_while_receiving`].
    pub(crate) fn restore_while_receiving(
        &mut self,
        incoming: IncomingSnapshot,
        stall_limit: Duration,
    ) {
        self.handler.restore_while_receiving(incoming, stall_limit);
    }

    /// Makes the session table remember at most `capacity` clients (instead of
    /// `SESSIONS_MAX`), so tests can see clients forgotten.
    #[cfg(test)]
    pub(crate) fn limit_sessions(&mut self, capacity: usize) {
        self.handler.sessions.set_capacity(capacity);
    }

    /// Index covered by the state at start (the restored snapshot's, or 0).
    pub(crate) fn applied(&self) -> LogIndex {
        self.handler.applied
    }

    /// The thread body: runs until the consensus thread drops its sender or a fatal error.
    /// Sleeps on `doorbell` while idle (waking every [`EXPIRY_SWEEP_INTERVAL`] to expire
    /// waiters), never in a spinning or yielding wait.
    pub(crate) fn run(
        mut self,
        commands: Receiver<ApplyCommand>,
        doorbell: Doorbell,
        progress: Ringing<ApplyProgress>,
    ) {
        let mut next_sweep = Instant::now() + EXPIRY_SWEEP_INTERVAL;
        loop {
            match next_or_wait(&commands, &doorbell, Some(next_sweep)) {
                Next::Message(first) => {
                    ring_if_room_made(&commands, &progress);
                    if let Err(error) = self.run_batch(first, &commands, &progress) {
                        log::error!("apply thread stopping: {error}");
                        let message = format!("the node stopped: {error}");
                        self.handler.answer_all_waiters(&message);
                        self.send_replies();
                        let _ = progress.send(ApplyProgress::Failed(error));
                        return;
                    }
                }
                Next::Idle => {}
                Next::Disconnected => {
                    self.handler.answer_all_waiters("the node is shutting down");
                    self.send_replies();
                    return;
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.handler.expire_waiters(now);
                self.send_replies();
                next_sweep = now + EXPIRY_SWEEP_INTERVAL;
            }
        }
    }

    /// Handles `first` and everything queued behind it, then reports once.
    fn run_batch(
        &mut self,
        first: ApplyCommand,
        commands: &Receiver<ApplyCommand>,
        progress: &Ringing<ApplyProgress>,
    ) -> Result<(), Error> {
        let before = self.handler.applied;
        let taken = Instant::now();
        let mut handled = self.handler.handle(first);
        while handled.is_ok() {
            let Ok(next) = commands.try_recv() else {
                break;
            };
            ring_if_room_made(commands, progress);
            handled = self.handler.handle(next);
        }
        if handled.is_ok() {
            self.handler.serve_ready_reads();
        }
        self.publish();
        // Answers go out before anything slow (progress, a snapshot), and also when the batch
        // failed half-way: those entries were applied.
        let answers = self.send_replies();
        (self.handler.metrics).with(|m| m.stage_each(Stage::Reply, answers, taken.elapsed()));
        self.send_progress(progress);
        handled?;
        self.handler.report_applied(before);
        self.send_progress(progress);
        let snapshot = self.handler.snapshot_when_due();
        self.send_progress(progress);
        self.send_replies();
        snapshot
    }

    /// Sends the answers the handler collected; returns how many.
    fn send_replies(&mut self) -> usize {
        let replies = self.handler.take_replies();
        let count = replies.len();
        if count > 0 {
            self.replier.send_all(replies);
        }
        count
    }

    fn send_progress(&mut self, progress: &Ringing<ApplyProgress>) {
        for report in self.handler.take_progress() {
            let _ = progress.send(report);
        }
    }

    /// Sends the commands the handler applied to every subscriber, forgetting those that
    /// went away or stopped reading.
    fn publish(&mut self) {
        self.subscribers.append(&mut self.handler.new_subscribers);
        let published = std::mem::take(&mut self.handler.published);
        for msg in published {
            self.subscribers.retain(|subscriber| {
                match subscriber.send_timeout(msg.clone(), APPLIED_SUBSCRIBER_STALL_MAX) {
                    Ok(()) => true,
                    Err(SendTimeoutError::Timeout(_)) => {
                        log::warn!("an applied-entry subscriber stopped reading; dropping it");
                        false
                    }
                    Err(SendTimeoutError::Disconnected(_)) => false,
                }
            });
        }
        self.handler.publishing = !self.subscribers.is_empty();
    }
}

impl ApplyHandler {
    /// Builds the handler, restoring the state machine from the latest snapshot if any.
    /// `initial_membership` is used when there is no snapshot; `clock` measures how long
    /// snapshots take (logs and metrics only).
    pub(crate) fn new(
        state_machine: Box<dyn StateMachine>,
        mut snapshots: Box<dyn SnapshotFiles>,
        initial_membership: Membership,
        policy: SnapshotPolicy,
        sessions: SessionTable,
        clock: fn() -> Instant,
    ) -> Result<ApplyHandler, Error> {
        let current = snapshots
            .open_current()
            .map_err(Error::apply_by("opening the latest snapshot"))?;
        let mut applier = ApplyHandler {
            state_machine,
            sessions,
            snapshots,
            applied: LogIndex(0),
            applied_term: Term(0),
            membership: initial_membership,
            membership_entry: Some((LogIndex(0), Term(0))),
            applied_since_snapshot: 0,
            bytes_since_snapshot: 0,
            policy,
            latest_snapshot: None,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            outbox: Vec::new(),
            progress: Vec::new(),
            published: Vec::new(),
            publishing: false,
            new_subscribers: Vec::new(),
            clock,
            streaming: None,
            streamed: None,
            deferred_replacement: None,
            metrics: MetricsHook::default(),
        };
        if let Some((meta, mut reader)) = current {
            applier.restore_from(&meta, &mut *reader)?;
        }
        Ok(applier)
    }

    /// Restores snapshots received from a leader while they arrive, reading their progress
    /// from `incoming`, when the state machine's restore is atomic; a restore gives up when no
    /// new byte arrives for `stall_limit`.
    pub(crate) fn restore_while_receiving(
        &mut self,
        incoming: IncomingSnapshot,
        stall_limit: Duration,
    ) {
        if self.state_machine.restores_atomically() {
            self.streaming = Some(Streaming {
                incoming,
                stall_limit,
            });
        }
    }

    /// The answers collected since last taken, in order.
    pub(crate) fn take_replies(&mut self) -> Vec<(ReplyTo, ClientResponseBody)> {
        std::mem::take(&mut self.outbox)
    }

    /// The progress collected since last taken, in order.
    pub(crate) fn take_progress(&mut self) -> Vec<ApplyProgress> {
        std::mem::take(&mut self.progress)
    }

    /// Highest applied index (the state machine may be ahead while a snapshot restored as it
    /// arrived is not installed yet).
    pub(crate) fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Term of the entry at `applied`, and the configuration in force there.
    pub(crate) fn applied_term_and_membership(&self) -> (Term, &Membership) {
        (self.applied_term, &self.membership)
    }

    /// Carries out one command: applies entries, registers waiters, restores, snapshots.
    /// `Err` is fatal: the node must stop.
    pub(crate) fn handle(&mut self, command: ApplyCommand) -> Result<(), Error> {
        match command {
            ApplyCommand::Entries(entries) => {
                for entry in entries {
                    self.apply_entry(entry)?;
                }
            }
            ApplyCommand::WaitProposal {
                index,
                term,
                reply,
                deadline,
            } => {
                self.add_proposal_waiter(index, term, reply, deadline);
            }
            ApplyCommand::Read {
                index,
                term,
                query,
                reply,
                deadline,
            } => {
                let waiter = ReadWaiter {
                    term,
                    query,
                    reply,
                    deadline,
                };
                self.reads.entry(index).or_default().push(waiter);
            }
            ApplyCommand::Restore(meta) => {
                self.restore_installed(&meta)?;
                self.progress.push(ApplyProgress::Restored(meta));
            }
            ApplyCommand::SnapshotArriving(meta) => self.restore_arriving(&meta)?,
            ApplyCommand::Subscribe(sender) => {
                self.publishing = true;
                self.new_subscribers.push(sender);
            }
            ApplyCommand::TakeSnapshot { reply, .. } if self.streamed.is_some() => {
                // The state is ahead of `applied`: a snapshot now would be labelled wrongly.
                let body = ClientResponseBody::Error {
                    definite: true,
                    message: "a snapshot from the leader is being installed; try again".to_string(),
                };
                self.outbox.push((reply, body));
            }
            ApplyCommand::TakeSnapshot { reply } => self.snapshot_on_demand(reply)?,
            ApplyCommand::ReplaceSnapshot { damaged } if self.streamed.is_some() => {
                self.deferred_replacement = Some(damaged);
            }
            ApplyCommand::ReplaceSnapshot { damaged } => {
                self.snapshot_forced(damaged)?;
            }
        }
        Ok(())
    }

    /// Takes a snapshot for a caller that asked for one; the latest snapshot is answered
    /// instead when it already covers every applied entry.
    fn snapshot_on_demand(&mut self, reply: ReplyTo) -> Result<(), Error> {
        let current = self
            .latest_snapshot
            .clone()
            .filter(|meta| meta.index == self.applied);
        let meta = match current {
            Some(meta) => meta,
            None if self.applied == LogIndex(0) => {
                let body = ClientResponseBody::Error {
                    definite: true,
                    message: "nothing applied yet: no snapshot to take".to_string(),
                };
                self.outbox.push((reply, body));
                return Ok(());
            }
            None => match self.take_snapshot() {
                Ok(meta) => {
                    self.snapshot_taken(meta.clone());
                    meta
                }
                Err(error) => {
                    let body = ClientResponseBody::Error {
                        definite: true,
                        message: error.to_string(),
                    };
                    self.outbox.push((reply, body));
                    return Err(error);
                }
            },
        };
        let body = ClientResponseBody::Ok {
            term: meta.term,
            index: meta.index,
            result: meta.size_bytes.to_le_bytes().to_vec(),
        };
        // Behind the `SnapshotTaken` report: answered once consensus knows the snapshot.
        self.progress.push(ApplyProgress::Answer(reply, body));
        Ok(())
    }

    /// Writes a snapshot of the current state whatever the latest one covers, to replace the
    /// damaged file of the snapshot at `damaged`. Failing to write it is fatal, as for any
    /// snapshot.
    fn snapshot_forced(&mut self, damaged: LogIndex) -> Result<(), Error> {
        if let Some(newer) = self
            .latest_snapshot
            .as_ref()
            .filter(|latest| latest.index > damaged)
        {
            // Written since: it removed the damaged file.
            log::info!(
                "damaged snapshot {damaged} was already replaced by snapshot {}",
                newer.index
            );
            return Ok(());
        }
        if self.applied < damaged || self.applied == LogIndex(0) {
            // Cannot happen on the node that took or restored that snapshot; a snapshot of
            // less state would not replace it.
            log::warn!(
                "snapshot {damaged} is damaged but the state is only at {}: not replaced",
                self.applied
            );
            return Ok(());
        }
        let meta = self.take_snapshot()?;
        log::info!(
            "snapshot at index {} replaces the damaged snapshot at index {damaged}",
            meta.index
        );
        self.snapshot_taken(meta);
        Ok(())
    }

    fn add_proposal_waiter(
        &mut self,
        index: LogIndex,
        term: Term,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        if index <= self.applied {
            // Only possible after a snapshot restore jumped over the index: whether the entry
            // at `index` was ours is no longer known here.
            let body = unknown_outcome("the entry was covered by an installed snapshot");
            self.outbox.push((reply, body));
            return;
        }
        let waiter = ProposalWaiter {
            term,
            reply,
            deadline,
        };
        self.proposals.entry(index).or_default().push(waiter);
    }

    /// Reports the applied index when it moved since `before` (the batch's start).
    pub(crate) fn report_applied(&mut self, before: LogIndex) {
        if self.applied != before {
            let index = self.applied;
            self.progress
                .push(ApplyProgress::Core(ApplyOutcome::Applied { index }));
        }
    }

    /// Reports the local snapshot `meta` durable, with the entries the core keeps behind it.
    fn snapshot_taken(&mut self, meta: SnapshotMeta) {
        let retain_entries = self.policy.retain_entries;
        self.progress
            .push(ApplyProgress::Core(ApplyOutcome::SnapshotTaken {
                meta,
                retain_entries,
            }));
    }

    /// Replaces a damaged snapshot whose replacement waited, and takes a snapshot when the
    /// policy says one is due (never while a streamed state is ahead of `applied`).
    pub(crate) fn snapshot_when_due(&mut self) -> Result<(), Error> {
        if self.streamed.is_none() {
            if let Some(damaged) = self.deferred_replacement.take() {
                self.snapshot_forced(damaged)?;
            }
        }
        if self.streamed.is_none()
            && self
                .policy
                .due(self.applied_since_snapshot, self.bytes_since_snapshot)
        {
            let meta = self.take_snapshot()?;
            self.snapshot_taken(meta);
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<(), Error> {
        if entry.index <= self.applied {
            return Ok(()); // Already covered by a restored snapshot.
        }
        if entry.index != self.applied.next() {
            return Err(Error::apply(format!(
                "committed entry {} arrived after applied index {}: a gap in the log",
                entry.index, self.applied
            )));
        }
        if let Some(streamed) = &self.streamed {
            if entry.index <= streamed.meta.index {
                self.skip_covered_entry(entry);
                return Ok(());
            }
            // The log reached the streamed snapshot's index: the state is the one at
            // `applied`, whether or not storage installs that snapshot.
            log::info!(
                "the log reached snapshot {}, restored while it arrived",
                streamed.meta.index
            );
            self.streamed = None;
        }
        self.bytes_since_snapshot += ENTRY_LOG_OVERHEAD_BYTES
            + match &entry.payload {
                EntryPayload::Command { data, .. } => data.len() as u64,
                _ => 0,
            };
        let outcome = match entry.payload {
            EntryPayload::Noop => Ok(Vec::new()),
            EntryPayload::Membership(membership) => {
                self.membership = membership;
                self.membership_entry = Some((entry.index, entry.term));
                Ok(Vec::new())
            }
            // A registration carries no command for the state machine or its subscribers.
            EntryPayload::Command {
                session: Some(Session::REGISTER),
                data,
            } => self.register_session(entry.index, &data),
            EntryPayload::Command { session, data } => {
                let outcome = self.apply_command(entry.index, session, &data);
                self.publish(entry.index, entry.term, &data);
                outcome
            }
        };
        self.applied = entry.index;
        self.applied_term = entry.term;
        self.applied_since_snapshot += 1;
        self.answer_proposals(entry.index, entry.term, outcome);
        Ok(())
    }

    /// Counts `entry` as applied without running it: the state restored from a snapshot
    /// that is still being installed already includes it.
    fn skip_covered_entry(&mut self, entry: Entry) {
        if let EntryPayload::Membership(membership) = entry.payload {
            self.membership = membership;
            self.membership_entry = Some((entry.index, entry.term));
        }
        self.applied = entry.index;
        self.applied_term = entry.term;
        let covered = Refusal::unknown("the entry was covered by a snapshot restored meanwhile");
        self.answer_proposals(entry.index, entry.term, Err(covered));
    }

    /// Creates the session of the registration entry at `index`; the answer is the new
    /// client id (u64 little-endian). The state machine sees nothing.
    fn register_session(&mut self, index: LogIndex, data: &[u8]) -> Outcome {
        if !data.is_empty() {
            return Err(Refusal::definite(
                "a session registration carries no command".to_string(),
            ));
        }
        let client_id = self.sessions.register(index);
        Ok(client_id.to_le_bytes().to_vec())
    }

    /// Applies one command unless its session says it already was, or that it may have
    /// been (an unknown client: its session was forgotten, or never registered).
    fn apply_command(&mut self, index: LogIndex, session: Option<Session>, data: &[u8]) -> Outcome {
        let Some(session) = session else {
            return Ok(self.state_machine.apply(index, data));
        };
        match self.sessions.check(session) {
            SessionCheck::Apply => {
                let response = self.state_machine.apply(index, data);
                // The session keeps the response for a retry; a proposer waiting here gets a
                // copy. With nobody waiting (a follower's entries) nothing reads the outcome.
                let answer = if self.proposals.contains_key(&index) {
                    response.clone()
                } else {
                    Vec::new()
                };
                self.sessions.record(session, index, response);
                Ok(answer)
            }
            SessionCheck::Duplicate(response) => Ok(response),
            SessionCheck::Stale => Err(Refusal::unknown(&format!(
                "client {} sequence {} was superseded by a later write",
                session.client_id, session.sequence
            ))),
            SessionCheck::Expired => Err(Refusal::definite(expired_message(session.client_id))),
            SessionCheck::ReservedSequence => Err(Refusal::definite(format!(
                "client {}: sequence 0 is reserved for registering a session (from client 0)",
                session.client_id
            ))),
            SessionCheck::Register => {
                unreachable!("registrations are applied by register_session, never as writes")
            }
        }
    }

    /// Keeps an applied command for the subscribers, if there are any: a copy, so that a
    /// subscriber holding it does not hold the buffer the command arrived in (a follower's
    /// whole batch).
    fn publish(&mut self, index: LogIndex, term: Term, command: &[u8]) {
        if self.publishing {
            self.published.push(ApplyMsg {
                index,
                term,
                command: command.to_vec(),
            });
        }
    }

    fn answer_proposals(&mut self, index: LogIndex, term: Term, outcome: Outcome) {
        let Some(mut waiters) = self.proposals.remove(&index) else {
            return;
        };
        // The last waiter (usually the only one) takes the outcome, the others a copy.
        let Some(last) = waiters.pop() else {
            return;
        };
        for waiter in waiters {
            let body = proposal_answer(index, term, waiter.term, outcome.clone());
            self.outbox.push((waiter.reply, body));
        }
        let body = proposal_answer(index, term, last.term, outcome);
        self.outbox.push((last.reply, body));
    }

    pub(crate) fn serve_ready_reads(&mut self) {
        let pending = self.reads.split_off(&self.applied.next());
        let ready = std::mem::replace(&mut self.reads, pending);
        for (index, waiters) in ready {
            for waiter in waiters {
                let result = self.state_machine.query(&waiter.query);
                let body = ClientResponseBody::Ok {
                    term: waiter.term,
                    index,
                    result,
                };
                self.outbox.push((waiter.reply, body));
            }
        }
    }

    fn take_snapshot(&mut self) -> Result<SnapshotMeta, Error> {
        let meta = SnapshotMeta {
            index: self.applied,
            term: self.applied_term,
            membership: self.membership.clone(),
            membership_entry: self.membership_entry,
            size_bytes: 0,
            checksum: 0,
        };
        let (sessions, state_machine) = (&self.sessions, &*self.state_machine);
        let started = (self.clock)();
        let mut write = |out: &mut dyn std::io::Write| write_snapshot(out, sessions, state_machine);
        let meta = self
            .snapshots
            .save(meta, &mut write)
            .map_err(Error::apply_by(format!(
                "writing the snapshot at index {}",
                self.applied
            )))?;
        (self.metrics).with(|m| m.snapshot_saved(started.elapsed(), meta.size_bytes));
        log::info!(
            "snapshot taken at index {} ({} bytes in {:.3} s)",
            meta.index,
            meta.size_bytes,
            started.elapsed().as_secs_f64()
        );
        self.applied_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        self.latest_snapshot = Some(meta.clone());
        Ok(meta)
    }

    /// Storage installed `meta`: the state machine is restored from it unless the state
    /// already covers it, with no read at all when it was restored while it arrived.
    fn restore_installed(&mut self, meta: &SnapshotMeta) -> Result<(), Error> {
        let streamed = self.streamed.take();
        if meta.index > self.applied {
            return match streamed {
                Some(streamed) if same_snapshot(&streamed.meta, meta) => {
                    self.adopt_snapshot(meta, streamed.took, " while it was received");
                    Ok(())
                }
                _ => self.restore_current(meta),
            };
        }
        // A duplicate or stale install (the state already covers it): restoring would roll
        // the state machine back and lose applied entries.
        log::info!(
            "snapshot {} not restored: already applied through {}",
            meta.index,
            self.applied
        );
        self.streamed = streamed.filter(|streamed| streamed.meta.index > self.applied);
        Ok(())
    }

    /// Restores `meta` from its partial file while storage receives it, if the state machine
    /// allows it and the snapshot is ahead of the state. A failure leaves the state as it was
    /// (the restore is atomic) and is only logged: `Restore` reads the installed file later.
    fn restore_arriving(&mut self, meta: &SnapshotMeta) -> Result<(), Error> {
        let Some(streaming) = &self.streaming else {
            return Ok(());
        };
        let ahead = self
            .streamed
            .as_ref()
            .map_or(self.applied, |s| s.meta.index);
        if meta.index <= ahead {
            return Ok(());
        }
        let mut reader = match streaming.incoming.open_reader(meta, streaming.stall_limit) {
            Ok(reader) => reader,
            Err(why) => {
                log::info!(
                    "snapshot {} not restored while it arrives: {why}",
                    meta.index
                );
                return Ok(());
            }
        };
        log::info!(
            "restoring snapshot {} ({} bytes) while it is received",
            meta.index,
            meta.size_bytes
        );
        let started = (self.clock)();
        if let Err(e) = read_snapshot(&mut reader, &mut self.sessions, &mut *self.state_machine) {
            log::warn!(
                "restoring snapshot {} while it arrived failed, the state is unchanged ({e}); \
                 it is restored once installed",
                meta.index
            );
            return Ok(());
        }
        // A state machine that stopped reading early has not seen the data's checksum yet.
        reader.finish().map_err(Error::apply_by(format!(
            "snapshot {} was restored from data that then failed its check; stopping rather \
             than serving that state",
            meta.index
        )))?;
        self.streamed = Some(Streamed {
            meta: meta.clone(),
            took: started.elapsed(),
        });
        Ok(())
    }

    /// Restores from the snapshot store's current snapshot, which must be `expected`.
    fn restore_current(&mut self, expected: &SnapshotMeta) -> Result<(), Error> {
        let (meta, mut reader) = self
            .snapshots
            .open_current()
            .map_err(Error::apply_by(format!(
                "opening snapshot {}",
                expected.index
            )))?
            .ok_or_else(|| {
                Error::apply(format!("snapshot {} to restore is missing", expected.index))
            })?;
        if meta.index > expected.index {
            // The core takes a snapshot as soon as storage installed it, without waiting for
            // this restore, so storage may have installed a newer one meanwhile (its `Restore`
            // follows). Its state includes everything the older one holds, and the entries
            // between the two are skipped as covered.
            log::info!(
                "snapshot {} was replaced by snapshot {} before it was restored; restoring that",
                expected.index,
                meta.index
            );
            return self.restore_from(&meta, &mut *reader);
        }
        if meta.index != expected.index || meta.term != expected.term {
            return Err(Error::apply(format!(
                "current snapshot is ({}, {}), expected ({}, {})",
                meta.index, meta.term, expected.index, expected.term
            )));
        }
        self.restore_from(&meta, &mut *reader)
    }

    fn restore_from(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut dyn std::io::Read,
    ) -> Result<(), Error> {
        let started = (self.clock)();
        read_snapshot(reader, &mut self.sessions, &mut *self.state_machine)
            .and_then(|()| read_to_end_of_snapshot(reader))
            .map_err(Error::apply_by(format!(
                "restoring the snapshot at index {}",
                meta.index
            )))?;
        self.streamed = None;
        self.adopt_snapshot(meta, started.elapsed(), "");
        Ok(())
    }

    /// The bookkeeping of a restore once the state machine holds `meta`'s state: applied
    /// index, term, membership, and the proposals it covers. `how` ends the log line.
    fn adopt_snapshot(&mut self, meta: &SnapshotMeta, took: Duration, how: &str) {
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.membership = meta.membership.clone();
        self.membership_entry = meta.membership_entry;
        self.applied_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        self.latest_snapshot = Some(meta.clone());
        let covered = self.proposals.split_off(&meta.index.next());
        for waiter in std::mem::replace(&mut self.proposals, covered)
            .into_values()
            .flatten()
        {
            let body = unknown_outcome("the entry was covered by an installed snapshot");
            self.outbox.push((waiter.reply, body));
        }
        log::info!(
            "state restored from the snapshot at index {} ({} bytes in {:.3} s{how})",
            meta.index,
            meta.size_bytes,
            took.as_secs_f64()
        );
    }

    /// Answers every waiting proposal (outcome unknown) and read (failed) before the thread
    /// ends, so no requester waits for its timeout.
    pub(crate) fn answer_all_waiters(&mut self, message: &str) {
        for waiter in std::mem::take(&mut self.proposals).into_values().flatten() {
            self.outbox.push((waiter.reply, unknown_outcome(message)));
        }
        for waiter in std::mem::take(&mut self.reads).into_values().flatten() {
            let body = ClientResponseBody::Error {
                definite: true,
                message: message.to_string(),
            };
            self.outbox.push((waiter.reply, body));
        }
    }

    /// Tells waiters whose deadline passed that their outcome is unknown (writes) or that
    /// the read failed.
    pub(crate) fn expire_waiters(&mut self, now: Instant) {
        for waiters in self.proposals.values_mut() {
            for waiter in extract_expired(waiters, now, |w| w.deadline) {
                let body = unknown_outcome("timed out waiting for the entry to commit");
                self.outbox.push((waiter.reply, body));
            }
        }
        self.proposals.retain(|_, waiters| !waiters.is_empty());
        for waiters in self.reads.values_mut() {
            for waiter in extract_expired(waiters, now, |w| w.deadline) {
                let body = ClientResponseBody::Error {
                    definite: true,
                    message: "timed out waiting for the read index to apply".to_string(),
                };
                self.outbox.push((waiter.reply, body));
            }
        }
        self.reads.retain(|_, waiters| !waiters.is_empty());
    }
}

/// Takes the items whose deadline passed out of `items`, keeping the others in order.
/// Allocates nothing when none expired (the common case of every periodic sweep).
fn extract_expired<T>(
    items: &mut Vec<T>,
    now: Instant,
    deadline: impl Fn(&T) -> Instant,
) -> Vec<T> {
    if !items.iter().any(|item| deadline(item) <= now) {
        return Vec::new();
    }
    let (expired, live): (Vec<T>, Vec<T>) = items.drain(..).partition(|item| deadline(item) <= now);
    *items = live;
    expired
}

/// The same snapshot: same point and the same bytes (by their announced checksum).
fn same_snapshot(a: &SnapshotMeta, b: &SnapshotMeta) -> bool {
    (a.index, a.term, a.checksum, a.size_bytes) == (b.index, b.term, b.checksum, b.size_bytes)
}

fn unknown_outcome(message: &str) -> ClientResponseBody {
    ClientResponseBody::Error {
        definite: false,
        message: message.to_string(),
    }
}

/// The answer to a proposal of `proposed_term` waiting on `index`, where the entry of `term`
/// was applied with `outcome`.
fn proposal_answer(
    index: LogIndex,
    term: Term,
    proposed_term: Term,
    outcome: Outcome,
) -> ClientResponseBody {
    if proposed_term != term {
        return ClientResponseBody::Error {
            definite: true,
            message: format!("the entry at index {index} was replaced by another leader's"),
        };
    }
    match outcome {
        Ok(result) => ClientResponseBody::Ok {
            term,
            index,
            result,
        },
        Err(refusal) => ClientResponseBody::Error {
            definite: refusal.definite,
            message: refusal.message,
        },
    }
}

/// Rings the consensus thread when `commands` was full before the command just taken from
/// it: the consensus thread holds back what did not fit (its apply backlog) and never waits
/// for room, so it must hear that there is some. A queue that was not full needs no ring.
fn ring_if_room_made(commands: &Receiver<ApplyCommand>, progress: &Ringing<ApplyProgress>) {
    if commands
        .capacity()
        .is_some_and(|capacity| commands.len() + 1 >= capacity)
    {
        progress.ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::incoming_snapshot::ArrivalStart;
    use crate::node::mailbox::{ringing, unrung};
    use crate::node::snapshot_files::SnapshotFileError;
    use crate::node::transport::{ClientConnId, Transport};
    use crossbeam_channel::{bounded, unbounded};
    use rcraft_storage::SimFs;
    use rcraft_wire::{ClientResponse, Message, NodeId};
    use std::io::{self, Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Appends every command; answers queries with the whole journal.
    #[derive(Default)]
    struct Journal(Vec<u8>);

    impl StateMachine for Journal {
        fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
            self.0.extend_from_slice(command);
            index.0.to_le_bytes().to_vec()
        }
        fn query(&self, _query: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
        fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&self.0)
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            self.0.clear();
            input.read_to_end(&mut self.0).map(|_| ())
        }
    }

    /// Snapshots kept in memory, shared so a test can inspect them.
    #[derive(Clone, Default)]
    struct MemorySnapshots(Arc<Mutex<Option<StoredSnapshot>>>);

    type StoredSnapshot = (SnapshotMeta, Vec<u8>);

    impl SnapshotFiles for MemorySnapshots {
        fn save(
            &mut self,
            mut meta: SnapshotMeta,
            write: crate::node::snapshot_files::SnapshotWriteFn<'_>,
        ) -> Result<SnapshotMeta, SnapshotFileError> {
            let mut data = Vec::new();
            write(&mut data).map_err(SnapshotFileError::StateMachine)?;
            meta.size_bytes = data.len() as u64;
            *self.0.lock().unwrap() = Some((meta.clone(), data));
            Ok(meta)
        }
        fn open_current(
            &mut self,
        ) -> Result<Option<crate::node::snapshot_files::OpenSnapshot>, SnapshotFileError> {
            Ok(self.0.lock().unwrap().clone().map(|(meta, data)| {
                let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(data));
                (meta, reader)
            }))
        }
    }

    struct NoNetwork;

    impl Transport for NoNetwork {
        fn send_peers(&self, _messages: Vec<Message>) {}
        fn reply(&self, _conn: ClientConnId, _response: ClientResponse) {}
    }

    fn command(term: u64, index: u64, data: &[u8], session: Option<Session>) -> Entry {
        Entry::new(
            Term(term),
            LogIndex(index),
            EntryPayload::Command {
                session,
                data: data.into(),
            },
        )
    }

    fn start(
        snapshots: MemorySnapshots,
        snapshot_every: u64,
    ) -> (
        Ringing<ApplyCommand>,
        Receiver<ApplyProgress>,
        std::thread::JoinHandle<()>,
    ) {
        let policy = SnapshotPolicy {
            every_entries: snapshot_every,
            log_bytes: 0,
            retain_entries: 0,
        };
        start_with(snapshots, policy)
    }

    fn start_with(
        snapshots: MemorySnapshots,
        policy: SnapshotPolicy,
    ) -> (
        Ringing<ApplyCommand>,
        Receiver<ApplyProgress>,
        std::thread::JoinHandle<()>,
    ) {
        let replier = Replier::new(Arc::new(NoNetwork));
        let membership = Membership::with_voters([NodeId(0)]);
        let applier = Applier::new(
            Box::new(Journal::default()),
            Box::new(snapshots),
            membership,
            policy,
            replier,
        )
        .unwrap();
        let doorbell = Doorbell::new();
        let (commands, commands_rx) = ringing(64, &doorbell);
        let (progress, thread) = spawn_applier(applier, commands_rx, doorbell);
        (commands, progress, thread)
    }

    /// Runs `applier` on its own thread; its progress is read as the consensus thread reads
    /// it: answers sent behind progress (`ApplyProgress::Answer`) are given to their
    /// callers, and everything else is handed on to the returned receiver. Joining the
    /// returned thread waits for the applier and for all its progress to be handed on.
    fn spawn_applier(
        applier: Applier,
        commands: Receiver<ApplyCommand>,
        doorbell: Doorbell,
    ) -> (Receiver<ApplyProgress>, std::thread::JoinHandle<()>) {
        let (progress_tx, progress) = unbounded();
        let (handed_tx, handed) = unbounded();
        let applying =
            std::thread::spawn(move || applier.run(commands, doorbell, unrung(progress_tx)));
        let thread = std::thread::spawn(move || {
            for report in progress {
                match report {
                    ApplyProgress::Answer(ReplyTo::Api(caller), body) => {
                        let _ = caller.send(body);
                    }
                    other => {
                        let _ = handed_tx.send(other);
                    }
                }
            }
            applying.join().unwrap();
        });
        (handed, thread)
    }

    fn wait_reply(rx: &Receiver<ClientResponseBody>) -> ClientResponseBody {
        rx.recv_timeout(Duration::from_secs(5)).expect("an answer")
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// A registration entry: its session's client id will be `index`.
    fn registration(term: u64, index: u64) -> Entry {
        command(term, index, b"", Some(Session::REGISTER))
    }

    fn wait_proposal(index: u64, term: u64, reply: Sender<ClientResponseBody>) -> ApplyCommand {
        ApplyCommand::WaitProposal {
            index: LogIndex(index),
            term: Term(term),
            reply: ReplyTo::Api(reply),
            deadline: later(),
        }
    }

    #[test]
    fn answers_proposals_by_index_and_term_and_dedups_sessions() {
        let (commands, progress, thread) = start(MemorySnapshots::default(), 0);
        let (registered_tx, registered_rx) = bounded(1);
        let (ok_tx, ok_rx) = bounded(1);
        let (lost_tx, lost_rx) = bounded(1);
        let (dup_tx, dup_rx) = bounded(1);
        let session = Session {
            client_id: 1,
            sequence: 1,
        };
        commands.send(wait_proposal(1, 1, registered_tx)).unwrap();
        commands.send(wait_proposal(2, 1, ok_tx)).unwrap();
        commands.send(wait_proposal(3, 1, lost_tx)).unwrap();
        commands.send(wait_proposal(4, 2, dup_tx)).unwrap();
        let entries = vec![
            registration(1, 1),
            command(1, 2, b"a", Some(session)),
            command(2, 3, b"b", None),
            command(2, 4, b"a", Some(session)),
        ];
        commands.send(ApplyCommand::Entries(entries)).unwrap();

        // The registration answers the new client id: its own index.
        let registered = ClientResponseBody::Ok {
            term: Term(1),
            index: LogIndex(1),
            result: 1u64.to_le_bytes().to_vec(),
        };
        assert_eq!(wait_reply(&registered_rx), registered);
        let first = ClientResponseBody::Ok {
            term: Term(1),
            index: LogIndex(2),
            result: 2u64.to_le_bytes().to_vec(),
        };
        assert_eq!(wait_reply(&ok_rx), first);
        assert!(matches!(
            wait_reply(&lost_rx),
            ClientResponseBody::Error { definite: true, .. }
        ));
        // The retry at index 4 is answered with the first write's response, not applied again.
        let retried = ClientResponseBody::Ok {
            term: Term(2),
            index: LogIndex(4),
            result: 2u64.to_le_bytes().to_vec(),
        };
        assert_eq!(wait_reply(&dup_rx), retried);
        assert_eq!(state_at(&commands, 4), b"ab");
        drop(commands);
        thread.join().unwrap();
        let applied: Vec<_> = progress.try_iter().collect();
        assert!(matches!(
            applied.last(),
            Some(ApplyProgress::Core(ApplyOutcome::Applied {
                index: LogIndex(4)
            }))
        ));
    }

    /// An applier whose session table holds at most `capacity` clients.
    fn start_with_sessions(snapshots: MemorySnapshots, capacity: usize) -> Started {
        let replier = Replier::new(Arc::new(NoNetwork));
        let membership = Membership::with_voters([NodeId(0)]);
        let policy = SnapshotPolicy::ON_DEMAND_ONLY;
        let mut applier = Applier::new(
            Box::new(Journal::default()),
            Box::new(snapshots),
            membership,
            policy,
            replier,
        )
        .unwrap();
        applier.limit_sessions(capacity);
        let doorbell = Doorbell::new();
        let (commands, commands_rx) = ringing(64, &doorbell);
        let (progress, thread) = spawn_applier(applier, commands_rx, doorbell);
        (commands, progress, thread)
    }

    fn is_session_expired(body: &ClientResponseBody) -> bool {
        matches!(
            body,
            ClientResponseBody::Error { definite: true, message }
                if rcraft_wire::is_session_expired(message)
        )
    }

    #[test]
    fn a_retry_from_an_evicted_session_is_refused_and_not_applied_again() {
        let snapshots = MemorySnapshots::default();
        let (commands, _progress, thread) = start_with_sessions(snapshots.clone(), 2);
        let evicted = Session {
            client_id: 1,
            sequence: 1,
        };
        // Client 1 registers and writes; clients 3 and 4 register after it, so the table
        // (two clients) forgets client 1, the least recent.
        let entries = vec![
            registration(1, 1),
            command(1, 2, b"a", Some(evicted)),
            registration(1, 3),
            registration(1, 4),
        ];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        // Client 1's reply was lost; it retries its write under a new leader.
        let (retry_tx, retry_rx) = bounded(1);
        commands.send(wait_proposal(5, 2, retry_tx)).unwrap();
        let retry = command(2, 5, b"a", Some(evicted));
        commands.send(ApplyCommand::Entries(vec![retry])).unwrap();
        let answer = wait_reply(&retry_rx);
        assert!(is_session_expired(&answer), "{answer:?}");
        assert_eq!(state_at(&commands, 5), b"a", "the retry was applied again");
        // Client 3 is still known: its first write applies.
        let write = Session {
            client_id: 3,
            sequence: 1,
        };
        let entries = vec![command(2, 6, b"b", Some(write))];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        assert_eq!(state_at(&commands, 6), b"ab");
        assert!(matches!(
            take_snapshot(&commands),
            ClientResponseBody::Ok { .. }
        ));
        drop(commands);
        thread.join().unwrap();

        // The table is in the snapshot: a replica restored from it decides the same.
        let (commands, _progress, thread) = start_with_sessions(snapshots, 2);
        let (retry_tx, retry_rx) = bounded(1);
        let (dup_tx, dup_rx) = bounded(1);
        commands.send(wait_proposal(7, 3, retry_tx)).unwrap();
        commands.send(wait_proposal(8, 3, dup_tx)).unwrap();
        let entries = vec![
            command(3, 7, b"a", Some(evicted)),
            command(3, 8, b"b", Some(write)),
        ];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        let answer = wait_reply(&retry_rx);
        assert!(is_session_expired(&answer), "{answer:?}");
        let duplicate = ClientResponseBody::Ok {
            term: Term(3),
            index: LogIndex(8),
            result: 6u64.to_le_bytes().to_vec(),
        };
        assert_eq!(wait_reply(&dup_rx), duplicate);
        assert_eq!(state_at(&commands, 8), b"ab");
        drop(commands);
        thread.join().unwrap();
    }

    #[test]
    fn a_write_from_a_never_registered_client_is_refused() {
        let (commands, progress, thread) = start(MemorySnapshots::default(), 0);
        let (refused_tx, refused_rx) = bounded(1);
        let (reserved_tx, reserved_rx) = bounded(1);
        let (bad_registration_tx, bad_registration_rx) = bounded(1);
        commands.send(wait_proposal(1, 1, refused_tx)).unwrap();
        commands.send(wait_proposal(3, 1, reserved_tx)).unwrap();
        commands
            .send(wait_proposal(4, 1, bad_registration_tx))
            .unwrap();
        let subscriber = {
            let (tx, rx) = bounded(16);
            commands.send(ApplyCommand::Subscribe(tx)).unwrap();
            rx
        };
        let unknown = Session {
            client_id: 77,
            sequence: 1,
        };
        let reserved = Session {
            client_id: 2,
            sequence: 0,
        };
        let entries = vec![
            command(1, 1, b"x", Some(unknown)),
            registration(1, 2),
            command(1, 3, b"y", Some(reserved)),
            command(1, 4, b"z", Some(Session::REGISTER)),
        ];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        let answer = wait_reply(&refused_rx);
        assert!(is_session_expired(&answer), "{answer:?}");
        for rx in [&reserved_rx, &bad_registration_rx] {
            let answer = wait_reply(rx);
            assert!(
                matches!(answer, ClientResponseBody::Error { definite: true, .. }),
                "{answer:?}"
            );
            assert!(!is_session_expired(&answer), "{answer:?}");
        }
        assert_eq!(
            state_at(&commands, 4),
            b"",
            "nothing reached the state machine"
        );
        drop(commands);
        thread.join().unwrap();
        assert!(matches!(
            progress.try_iter().last(),
            Some(ApplyProgress::Core(ApplyOutcome::Applied {
                index: LogIndex(4)
            }))
        ));
        // Subscribers see the log's commands, refused ones too, but not registrations.
        let published: Vec<u64> = subscriber.try_iter().map(|m| m.index.0).collect();
        assert_eq!(published, vec![1, 3]);
    }

    #[test]
    fn read_waits_for_its_index() {
        let (commands, _progress, thread) = start(MemorySnapshots::default(), 0);
        let (read_tx, read_rx) = bounded(1);
        let read = ApplyCommand::Read {
            index: LogIndex(2),
            term: Term(1),
            query: Vec::new(),
            reply: ReplyTo::Api(read_tx),
            deadline: later(),
        };
        commands.send(read).unwrap();
        commands
            .send(ApplyCommand::Entries(vec![command(1, 1, b"x", None)]))
            .unwrap();
        assert!(read_rx.recv_timeout(Duration::from_millis(100)).is_err());
        commands
            .send(ApplyCommand::Entries(vec![command(1, 2, b"y", None)]))
            .unwrap();
        match wait_reply(&read_rx) {
            ClientResponseBody::Ok { result, index, .. } => {
                assert_eq!((result.as_slice(), index), (&b"xy"[..], LogIndex(2)));
            }
            other => panic!("unexpected {other:?}"),
        }
        drop(commands);
        thread.join().unwrap();
    }

    #[test]
    fn snapshots_every_n_entries_and_restores_with_sessions() {
        let snapshots = MemorySnapshots::default();
        let (commands, progress, thread) = start(snapshots.clone(), 3);
        let session = Session {
            client_id: 1,
            sequence: 7,
        };
        let entries = vec![
            registration(1, 1),
            command(1, 2, b"p", Some(session)),
            command(1, 3, b"q", None),
        ];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        drop(commands);
        thread.join().unwrap();
        let taken = progress
            .try_iter()
            .find_map(|p| match p {
                ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) => Some(meta),
                _ => None,
            })
            .expect("a snapshot");
        assert_eq!((taken.index, taken.term), (LogIndex(3), Term(1)));

        // A new applier restores from it: state, applied index and the session table.
        let (commands, _progress, thread) = start(snapshots, 0);
        let (dup_tx, dup_rx) = bounded(1);
        commands.send(wait_proposal(4, 2, dup_tx)).unwrap();
        let retry = command(2, 4, b"p", Some(session));
        commands.send(ApplyCommand::Entries(vec![retry])).unwrap();
        let expected = ClientResponseBody::Ok {
            term: Term(2),
            index: LogIndex(4),
            result: 2u64.to_le_bytes().to_vec(),
        };
        assert_eq!(wait_reply(&dup_rx), expected);
        assert_eq!(state_at(&commands, 4), b"pq");
        drop(commands);
        thread.join().unwrap();
    }

    /// A snapshot names where its configuration comes from: `(0, 0)` before any membership
    /// entry, else the last one applied, and after a restore the snapshot's until the next one
    /// (docs/SIM_FINDINGS.md, finding 39: a repairing peer leans on it).
    #[test]
    fn a_snapshot_names_the_configuration_entry_in_force() {
        // One applier per batch, each restored from the snapshot the one before took.
        let taken = |snapshots: &MemorySnapshots, entries: Vec<Entry>| {
            let (commands, progress, thread) = start(snapshots.clone(), 2);
            commands.send(ApplyCommand::Entries(entries)).unwrap();
            drop(commands);
            thread.join().unwrap();
            let points: Vec<_> = (progress.try_iter())
                .filter_map(|p| match p {
                    ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) => {
                        Some((meta.index, meta.membership_entry))
                    }
                    _ => None,
                })
                .collect();
            points
        };
        let snapshots = MemorySnapshots::default();
        let initial = vec![command(1, 1, b"a", None), command(1, 2, b"b", None)];
        assert_eq!(
            taken(&snapshots, initial),
            [(LogIndex(2), Some((LogIndex(0), Term(0))))]
        );
        let pair = Membership::with_voters([NodeId(0), NodeId(1)]);
        let members = Entry::new(Term(2), LogIndex(3), EntryPayload::Membership(pair));
        assert_eq!(
            taken(&snapshots, vec![members, command(2, 4, b"c", None)]),
            [(LogIndex(4), Some((LogIndex(3), Term(2))))]
        );
        let more = vec![command(2, 5, b"d", None), command(2, 6, b"e", None)];
        assert_eq!(
            taken(&snapshots, more),
            [(LogIndex(6), Some((LogIndex(3), Term(2))))]
        );
    }

    #[test]
    fn a_stale_or_duplicate_restore_never_rolls_the_state_back() {
        let snapshots = MemorySnapshots::default();
        let (commands, progress, thread) = start(snapshots.clone(), 2);
        let entries = vec![command(1, 1, b"a", None), command(1, 2, b"b", None)];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        let meta = loop {
            match progress
                .recv_timeout(Duration::from_secs(5))
                .expect("progress")
            {
                ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) => break meta,
                _ => continue,
            }
        };
        assert_eq!(meta.index, LogIndex(2));
        commands
            .send(ApplyCommand::Entries(vec![command(1, 3, b"c", None)]))
            .unwrap();
        commands.send(ApplyCommand::Restore(meta.clone())).unwrap();
        assert_eq!(state_at(&commands, 3), b"abc");
        drop(commands);
        thread.join().unwrap();
        let restored = progress
            .try_iter()
            .any(|p| matches!(p, ApplyProgress::Restored(m) if m == meta));
        assert!(restored, "the core is still told the install finished");
    }

    /// Issue 14, finding 7: the core takes a received snapshot as soon as storage installed
    /// it, so storage may install a newer one before this thread restores the first. The
    /// newer one is restored then, and the entries between the two are covered.
    #[test]
    fn a_restore_overtaken_by_a_newer_installed_snapshot_restores_that_one() {
        let leader_snapshots = MemorySnapshots::default();
        let (commands, progress, thread) = start(leader_snapshots.clone(), 2);
        // One batch per snapshot: a snapshot is taken at the end of a batch.
        let mut taken = Vec::new();
        for pair in [[1, 2], [3, 4]] {
            let entries = pair
                .iter()
                .map(|&i| command(1, i, &[b'a' + i as u8 - 1], None))
                .collect();
            commands.send(ApplyCommand::Entries(entries)).unwrap();
            loop {
                let next = progress.recv_timeout(Duration::from_secs(5));
                if let ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) =
                    next.expect("progress")
                {
                    taken.push(meta);
                    break;
                }
            }
        }
        drop(commands);
        thread.join().unwrap();
        let [older, newer] = taken.as_slice() else {
            panic!("two snapshots expected: {taken:?}");
        };
        assert_eq!((older.index, newer.index), (LogIndex(2), LogIndex(4)));

        // The follower's store already holds the newer one when the older one's turn comes.
        let snapshots = MemorySnapshots::default();
        let (commands, progress, thread) = start(snapshots.clone(), 1000);
        *snapshots.0.lock().unwrap() = leader_snapshots.0.lock().unwrap().clone();
        commands.send(ApplyCommand::Restore(older.clone())).unwrap();
        let covered = vec![command(1, 3, b"c", None)];
        commands.send(ApplyCommand::Entries(covered)).unwrap();
        commands.send(ApplyCommand::Restore(newer.clone())).unwrap();
        let next = vec![command(1, 5, b"e", None)];
        commands.send(ApplyCommand::Entries(next)).unwrap();
        assert_eq!(state_at(&commands, 5), b"abcde");
        drop(commands);
        thread.join().unwrap();
        assert!(
            !progress
                .try_iter()
                .any(|p| matches!(p, ApplyProgress::Failed(_)))
        );
    }

    fn take_snapshot(commands: &Ringing<ApplyCommand>) -> ClientResponseBody {
        let (tx, rx) = bounded(1);
        let reply = ReplyTo::Api(tx);
        commands.send(ApplyCommand::TakeSnapshot { reply }).unwrap();
        wait_reply(&rx)
    }

    fn snapshots_taken(progress: &Receiver<ApplyProgress>) -> Vec<LogIndex> {
        progress
            .try_iter()
            .filter_map(|p| match p {
                ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) => Some(meta.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn snapshots_after_enough_log_bytes() {
        let policy = SnapshotPolicy {
            every_entries: 0,
            log_bytes: 2 * ENTRY_LOG_OVERHEAD_BYTES + 100,
            retain_entries: 0,
        };
        let (commands, progress, thread) = start_with(MemorySnapshots::default(), policy);
        let big = [b'x'; 60];
        commands
            .send(ApplyCommand::Entries(vec![command(1, 1, &big, None)]))
            .unwrap();
        // The on-demand answer comes after the batch before it, so the first batch's
        // progress is all sent by then.
        assert!(matches!(
            take_snapshot(&commands),
            ClientResponseBody::Ok { .. }
        ));
        assert_eq!(snapshots_taken(&progress), vec![LogIndex(1)]);
        commands
            .send(ApplyCommand::Entries(vec![command(1, 2, &big, None)]))
            .unwrap();
        commands
            .send(ApplyCommand::Entries(vec![command(1, 3, &big, None)]))
            .unwrap();
        drop(commands);
        thread.join().unwrap();
        // 2 x (60 + overhead) bytes since the snapshot at 1 pass the limit at index 3 only
        // if both batches were counted: a snapshot at 2 would mean the counter never reset.
        let taken = snapshots_taken(&progress);
        assert!(!taken.contains(&LogIndex(2)), "{taken:?}");
        assert_eq!(taken.last(), Some(&LogIndex(3)), "{taken:?}");
    }

    #[test]
    fn an_on_demand_snapshot_covers_every_applied_entry() {
        let snapshots = MemorySnapshots::default();
        let policy = SnapshotPolicy::ON_DEMAND_ONLY;
        let (commands, progress, thread) = start_with(snapshots.clone(), policy);
        assert!(matches!(
            take_snapshot(&commands),
            ClientResponseBody::Error { definite: true, .. }
        ));
        let entries = (1..=3).map(|i| command(1, i, b"e", None)).collect();
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        let first = take_snapshot(&commands);
        let ClientResponseBody::Ok { index, result, .. } = &first else {
            panic!("unexpected {first:?}");
        };
        assert_eq!(*index, LogIndex(3));
        let stored = snapshots
            .0
            .lock()
            .unwrap()
            .clone()
            .expect("a stored snapshot");
        assert_eq!(result, &stored.0.size_bytes.to_le_bytes().to_vec());
        // Nothing new applied: the same snapshot is answered and no new one written.
        assert_eq!(take_snapshot(&commands), first);
        drop(commands);
        thread.join().unwrap();
        assert_eq!(snapshots_taken(&progress), vec![LogIndex(3)]);
    }

    #[test]
    fn an_on_demand_snapshot_is_answered_behind_its_report() {
        let applier = Applier::new(
            Box::new(Journal::default()),
            Box::new(MemorySnapshots::default()),
            Membership::with_voters([NodeId(0)]),
            SnapshotPolicy::ON_DEMAND_ONLY,
            Replier::new(Arc::new(NoNetwork)),
        )
        .unwrap();
        let doorbell = Doorbell::new();
        let (commands, commands_rx) = ringing(64, &doorbell);
        let (progress_tx, progress) = unbounded();
        let thread =
            std::thread::spawn(move || applier.run(commands_rx, doorbell, unrung(progress_tx)));
        let entries = (1..=2).map(|i| command(1, i, b"e", None)).collect();
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        let (tx, direct) = bounded(1);
        let reply = ReplyTo::Api(tx);
        commands.send(ApplyCommand::TakeSnapshot { reply }).unwrap();
        drop(commands);
        thread.join().unwrap();
        // Not answered directly: a caller could then ask consensus for the node's status
        // before consensus heard of the snapshot.
        assert!(direct.try_recv().is_err());
        let reports: Vec<_> = progress.try_iter().collect();
        let taken = reports.iter().position(|p| {
            matches!(
                p,
                ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. })
                    if meta.index == LogIndex(2)
            )
        });
        let answered = reports.iter().position(|p| {
            matches!(
                p,
                ApplyProgress::Answer(ReplyTo::Api(_), ClientResponseBody::Ok { index, .. })
                    if *index == LogIndex(2)
            )
        });
        assert!(
            matches!((taken, answered), (Some(t), Some(a)) if t < a),
            "{reports:?}"
        );
    }

    #[test]
    fn a_damaged_snapshot_is_written_again_even_when_it_covers_every_entry() {
        let snapshots = MemorySnapshots::default();
        let (commands, progress, thread) =
            start_with(snapshots.clone(), SnapshotPolicy::ON_DEMAND_ONLY);
        let entries = (1..=3).map(|i| command(1, i, b"e", None)).collect();
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        assert!(matches!(
            take_snapshot(&commands),
            ClientResponseBody::Ok { .. }
        ));
        // Damage the stored copy, as a bad disk would; the forced snapshot rewrites it.
        snapshots.0.lock().unwrap().as_mut().unwrap().1.clear();
        let damaged = LogIndex(3);
        commands
            .send(ApplyCommand::ReplaceSnapshot { damaged })
            .unwrap();
        drop(commands);
        thread.join().unwrap();
        assert_eq!(snapshots_taken(&progress), vec![LogIndex(3), LogIndex(3)]);
        let stored = snapshots.0.lock().unwrap().clone().unwrap();
        assert!(!stored.1.is_empty(), "the snapshot was not written again");
        assert_eq!(stored.0.index, LogIndex(3));
    }

    #[test]
    fn a_gap_in_committed_entries_stops_the_thread() {
        let (commands, progress, thread) = start(MemorySnapshots::default(), 0);
        commands
            .send(ApplyCommand::Entries(vec![command(1, 2, b"x", None)]))
            .unwrap();
        thread.join().unwrap();
        assert!(matches!(progress.try_recv(), Ok(ApplyProgress::Failed(_))));
    }

    /// A journal whose restore builds the new state aside: it opts in to restores while a
    /// snapshot arrives.
    #[derive(Default)]
    struct SwappingJournal(Vec<u8>);

    impl StateMachine for SwappingJournal {
        fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
            self.0.extend_from_slice(command);
            index.0.to_le_bytes().to_vec()
        }
        fn query(&self, _query: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
        fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&self.0)
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            let mut state = Vec::new();
            input.read_to_end(&mut state)?;
            self.0 = state;
            Ok(())
        }
        fn restores_atomically(&self) -> bool {
            true
        }
    }

    type Started = (
        Ringing<ApplyCommand>,
        Receiver<ApplyProgress>,
        std::thread::JoinHandle<()>,
    );

    /// An applier holding `ab` (entries 1 and 2) that restores snapshots while they arrive
    /// through `incoming` (if `state_machine` opts in).
    fn start_receiving(
        state_machine: Box<dyn StateMachine>,
        snapshots: MemorySnapshots,
        incoming: &IncomingSnapshot,
        stall_limit: Duration,
    ) -> Started {
        let replier = Replier::new(Arc::new(NoNetwork));
        let membership = Membership::with_voters([NodeId(0)]);
        let policy = SnapshotPolicy::ON_DEMAND_ONLY;
        let mut applier = Applier::new(
            state_machine,
            Box::new(snapshots),
            membership,
            policy,
            replier,
        )
        .unwrap();
        applier.restore_while_receiving(incoming.clone(), stall_limit);
        let doorbell = Doorbell::new();
        let (commands, commands_rx) = ringing(64, &doorbell);
        let (progress, thread) = spawn_applier(applier, commands_rx, doorbell);
        let entries = vec![command(1, 1, b"a", None), command(1, 2, b"b", None)];
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        (commands, progress, thread)
    }

    /// The state answered by a read at `index`.
    fn state_at(commands: &Ringing<ApplyCommand>, index: u64) -> Vec<u8> {
        let (tx, rx) = bounded(1);
        let read = ApplyCommand::Read {
            index: LogIndex(index),
            term: Term(2),
            query: Vec::new(),
            reply: ReplyTo::Api(tx),
            deadline: later(),
        };
        commands.send(read).unwrap();
        match wait_reply(&rx) {
            ClientResponseBody::Ok { result, .. } => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A node snapshot at index 10 holding the user state `state`, and its metadata.
    fn received_snapshot(state: &[u8]) -> (SnapshotMeta, Vec<u8>) {
        let mut data = Vec::new();
        write_snapshot(
            &mut data,
            &SessionTable::default(),
            &Journal(state.to_vec()),
        )
        .unwrap();
        let meta = SnapshotMeta {
            index: LogIndex(10),
            term: Term(2),
            membership: Membership::with_voters([NodeId(0)]),
            membership_entry: None,
            size_bytes: data.len() as u64,
            checksum: crc32c::crc32c(&data),
        };
        (meta, data)
    }

    const PARTIAL: &str = "/snapshots/partial";
    const HEADER_BYTES: u64 = 9;

    /// Writes data bytes `from..to` of the partial file and publishes them as durable (a new
    /// generation when `from` is 0).
    fn receive(fs: &SimFs, incoming: &IncomingSnapshot, meta: &SnapshotMeta, data: &[u8]) {
        use rcraft_storage::Fs;
        let path = std::path::Path::new(PARTIAL);
        fs.create_dir_all(std::path::Path::new("/snapshots"))
            .unwrap();
        let mut file = fs.open_write(path).unwrap();
        file.write_at(0, &[0; HEADER_BYTES as usize]).unwrap();
        file.write_at(HEADER_BYTES, data).unwrap();
        incoming.begin(ArrivalStart {
            meta: meta.clone(),
            header_bytes: HEADER_BYTES,
            durable: data.len() as u64,
            file: fs.open_read(path).unwrap(),
        });
    }

    fn restored(progress: &Receiver<ApplyProgress>) -> Vec<LogIndex> {
        progress
            .try_iter()
            .filter_map(|p| match p {
                ApplyProgress::Restored(meta) => Some(meta.index),
                ApplyProgress::Failed(why) => panic!("the apply thread failed: {why}"),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_snapshot_restored_while_it_arrives_is_installed_without_reading_it_again() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let (meta, data) = received_snapshot(b"snapshot state");
        let half = data.len() / 2;
        receive(&fs, &incoming, &meta, &data[..half]);
        // No snapshot file at all: a `Restore` that read one would fail the thread.
        let snapshots = MemorySnapshots::default();
        let long = Duration::from_secs(60);
        let sm = Box::new(SwappingJournal::default());
        let (commands, progress, thread) = start_receiving(sm, snapshots, &incoming, long);
        assert_eq!(state_at(&commands, 2), b"ab");
        commands
            .send(ApplyCommand::SnapshotArriving(meta.clone()))
            .unwrap();
        // The rest arrives while the apply thread is restoring.
        let mut file = rcraft_storage::Fs::open_write(&fs, std::path::Path::new(PARTIAL)).unwrap();
        file.write_at(HEADER_BYTES + half as u64, &data[half..])
            .unwrap();
        incoming.advance(data.len() as u64);
        // Restored but not installed: reads see the new state, the core hears nothing yet,
        // and no snapshot can be taken.
        assert_eq!(state_at(&commands, 2), b"snapshot state");
        assert!(matches!(
            take_snapshot(&commands),
            ClientResponseBody::Error { definite: true, .. }
        ));
        commands.send(ApplyCommand::Restore(meta.clone())).unwrap();
        commands
            .send(ApplyCommand::Entries(vec![command(2, 11, b"!", None)]))
            .unwrap();
        assert_eq!(state_at(&commands, 11), b"snapshot state!");
        drop(commands);
        thread.join().unwrap();
        assert_eq!(restored(&progress), vec![LogIndex(10)]);
    }

    #[test]
    fn a_damaged_snapshot_is_replaced_only_once_a_streamed_state_is_installed() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let (meta, data) = received_snapshot(b"snapshot state");
        receive(&fs, &incoming, &meta, &data);
        let snapshots = MemorySnapshots::default();
        let long = Duration::from_secs(60);
        let sm = Box::new(SwappingJournal::default());
        let (commands, progress, thread) = start_receiving(sm, snapshots.clone(), &incoming, long);
        assert_eq!(state_at(&commands, 2), b"ab");
        commands
            .send(ApplyCommand::SnapshotArriving(meta.clone()))
            .unwrap();
        assert_eq!(state_at(&commands, 2), b"snapshot state");
        // The state is at 10 but `applied` at 2: a snapshot written now would label the
        // state of index 10 as index 2's. It waits.
        let replace = ApplyCommand::ReplaceSnapshot {
            damaged: LogIndex(2),
        };
        commands.send(replace).unwrap();
        assert_eq!(state_at(&commands, 2), b"snapshot state");
        assert!(
            snapshots.0.lock().unwrap().is_none(),
            "written while pending"
        );
        // Installed: the replacement is due now, and the restored snapshot (index 10)
        // already covers the damaged one, so nothing is written under a wrong label.
        commands.send(ApplyCommand::Restore(meta.clone())).unwrap();
        assert_eq!(state_at(&commands, 10), b"snapshot state");
        drop(commands);
        thread.join().unwrap();
        let taken: Vec<LogIndex> = progress
            .try_iter()
            .filter_map(|p| match p {
                ApplyProgress::Core(ApplyOutcome::SnapshotTaken { meta, .. }) => Some(meta.index),
                _ => None,
            })
            .collect();
        assert!(
            taken.iter().all(|index| *index >= LogIndex(10)),
            "{taken:?}"
        );
        assert!(snapshots.0.lock().unwrap().is_none());
    }

    #[test]
    fn an_abandoned_restore_keeps_the_state_and_the_installed_snapshot_is_read_later() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let (meta, data) = received_snapshot(b"snapshot state");
        receive(&fs, &incoming, &meta, &data[..data.len() / 2]);
        let snapshots = MemorySnapshots::default();
        let short = Duration::from_millis(20);
        let sm = Box::new(SwappingJournal::default());
        let (commands, progress, thread) = start_receiving(sm, snapshots.clone(), &incoming, short);
        // The other half never comes: the restore gives up and the state is as it was.
        commands
            .send(ApplyCommand::SnapshotArriving(meta.clone()))
            .unwrap();
        assert_eq!(state_at(&commands, 2), b"ab");
        commands
            .send(ApplyCommand::Entries(vec![command(1, 3, b"c", None)]))
            .unwrap();
        assert_eq!(state_at(&commands, 3), b"abc");
        // Storage installs it after all: `Restore` reads it.
        *snapshots.0.lock().unwrap() = Some((meta.clone(), data));
        commands.send(ApplyCommand::Restore(meta)).unwrap();
        assert_eq!(state_at(&commands, 10), b"snapshot state");
        drop(commands);
        thread.join().unwrap();
        assert_eq!(restored(&progress), vec![LogIndex(10)]);
    }

    #[test]
    fn committed_entries_through_a_snapshot_restored_meanwhile_confirm_it() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let (meta, data) = received_snapshot(b"snapshot state");
        receive(&fs, &incoming, &meta, &data);
        let long = Duration::from_secs(60);
        let sm = Box::new(SwappingJournal::default());
        let snapshots = MemorySnapshots::default();
        let (commands, progress, thread) = start_receiving(sm, snapshots, &incoming, long);
        commands.send(ApplyCommand::SnapshotArriving(meta)).unwrap();
        // Storage never installs it (say a new leader sent the entries instead): entries 3 to
        // 10 are already in the state; 11 is applied on top of it.
        let (waiter_tx, waiter_rx) = bounded(1);
        commands
            .send(ApplyCommand::WaitProposal {
                index: LogIndex(5),
                term: Term(1),
                reply: ReplyTo::Api(waiter_tx),
                deadline: later(),
            })
            .unwrap();
        let entries = (3..=10).map(|i| command(1, i, b"x", None)).collect();
        commands.send(ApplyCommand::Entries(entries)).unwrap();
        assert!(matches!(
            wait_reply(&waiter_rx),
            ClientResponseBody::Error {
                definite: false,
                ..
            }
        ));
        commands
            .send(ApplyCommand::Entries(vec![command(2, 11, b"!", None)]))
            .unwrap();
        assert_eq!(state_at(&commands, 11), b"snapshot state!");
        // The state is at `applied` again, so a snapshot can be taken.
        let taken = take_snapshot(&commands);
        assert!(
            matches!(
                taken,
                ClientResponseBody::Ok {
                    index: LogIndex(11),
                    ..
                }
            ),
            "{taken:?}"
        );
        drop(commands);
        thread.join().unwrap();
        assert!(restored(&progress).is_empty());
    }

    #[test]
    fn a_state_machine_that_does_not_opt_in_restores_only_once_installed() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let (meta, data) = received_snapshot(b"snapshot state");
        receive(&fs, &incoming, &meta, &data);
        let snapshots = MemorySnapshots::default();
        let long = Duration::from_secs(60);
        let sm = Box::new(Journal::default());
        let (commands, progress, thread) = start_receiving(sm, snapshots.clone(), &incoming, long);
        commands
            .send(ApplyCommand::SnapshotArriving(meta.clone()))
            .unwrap();
        assert_eq!(state_at(&commands, 2), b"ab");
        *snapshots.0.lock().unwrap() = Some((meta.clone(), data));
        commands.send(ApplyCommand::Restore(meta)).unwrap();
        assert_eq!(state_at(&commands, 10), b"snapshot state");
        drop(commands);
        thread.join().unwrap();
        assert_eq!(restored(&progress), vec![LogIndex(10)]);
    }
}
