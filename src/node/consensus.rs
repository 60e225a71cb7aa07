//! The consensus thread: feeds the core every input and carries out its actions.
//!
//! Owns the core [`Replica`], the table of client requests waiting for the core's answer and
//! the tick clock. Each turn of its loop waits for any input (network event, storage event,
//! apply progress, API request) or the next tick deadline, then drains every queued input
//! (up to [`CONSENSUS_INPUT_BATCH_MAX`]) before draining the core's actions once, so
//! proposals that arrive together become one persist action and one append message.
//!
//! The thread sleeps on its [`Doorbell`] (never in a spinning or yielding wait, also not
//! while a full storage queue holds it back) and hands
//! its output on per destination, once per drain of the core's actions: storage commands in
//! the core's order behind one ring of the storage thread, apply commands likewise behind
//! one ring of the apply thread, every peer message in one network command, and every client
//! answer in one more (see [`Outbox`]).
//!
//! Invariants: persist commands reach the storage thread in sequence order and are never
//! dropped (a full queue makes this thread wait, which pushes back on clients); apply commands
//! reach the apply thread in the order the core emitted them, so a proposal's waiter always
//! precedes its entry, and this thread never waits for the apply thread: what does not fit
//! in its queue waits in a bounded backlog here (`apply_backlog`), so a slow state machine
//! never stops heartbeats, votes or elections (issue 14, finding 16 of
//! docs/SIM_FINDINGS.md); every request in `pending` is answered exactly once (outcome,
//! error, timeout or shutdown).

use super::apply::{ApplyCommand, ApplyProgress};
use super::error::Error;
use super::limits::{
    APPLY_BACKLOG_MAX, CONSENSUS_INPUT_BATCH_MAX, PENDING_REQUESTS_MAX, TICK_CATCH_UP_MAX,
};
use super::mailbox::{Doorbell, Ringing};
use super::metrics::MetricsHook;
use super::net::delivery::EventBatches;
use super::observe::Observer;
use super::results::ApplyMsg;
use super::storage_io::{StorageCommand, StorageEvent};
use super::transport::{NetEvent, Replier, ReplyTo};
use crate::core::describe::describe_action;
use crate::core::{Action, Input, LostEntries, ProposeError, Replica, RequestId};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use rcraft_wire::{
    ClientRequestBody, ClientResponseBody, LogIndex, Membership, Message, NodeId, NodeStatus,
    ReadMode, Session, SnapshotMeta,
};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often a full storage queue is looked at again.
const ROOM_POLL_INTERVAL: Duration = Duration::from_micros(200);

/// Requests from `NodeHandle` callers.
pub(crate) enum ApiRequest {
    /// Propose a command; the outcome goes to `reply`.
    Propose {
        /// Optional client session for at-most-once application.
        session: Option<Session>,
        /// The command.
        command: Vec<u8>,
        /// Where the outcome goes.
        reply: Sender<ClientResponseBody>,
    },
    /// A read in one of the client protocol's modes.
    Read {
        /// The query.
        query: Vec<u8>,
        /// How the read is made consistent.
        mode: ReadMode,
        /// Where the outcome goes.
        reply: Sender<ClientResponseBody>,
    },
    /// The node's status.
    Status {
        /// Where it goes.
        reply: Sender<NodeStatus>,
    },
    /// Hand leadership to `target`.
    TransferLeader {
        /// The node to become leader.
        target: NodeId,
        /// Where the outcome goes.
        reply: Sender<ClientResponseBody>,
    },
    /// Move the cluster to `membership`.
    ChangeMembership {
        /// The target configuration.
        membership: Membership,
        /// Where the outcome goes.
        reply: Sender<ClientResponseBody>,
    },
    /// Start receiving applied commands.
    Subscribe(Sender<ApplyMsg>),
    /// Snapshot the state machine now.
    Snapshot {
        /// Where the outcome goes.
        reply: Sender<ClientResponseBody>,
    },
    /// Stop the node.
    Shutdown,
}

/// The receiving ends the consensus thread waits on, and the doorbell every sender to them
/// rings.
pub(crate) struct Inbox {
    /// Everything one network-loop turn decoded, per message.
    pub(crate) net: EventBatches,
    pub(crate) storage: Receiver<StorageEvent>,
    pub(crate) apply: Receiver<ApplyProgress>,
    pub(crate) api: Receiver<ApiRequest>,
    pub(crate) doorbell: Doorbell,
}

/// What one drain of the core's actions produced for the network thread, handed on in one
/// command each when the drain ends. Storage and apply commands are queued as they come
/// (their order is the core's) and their threads are rung once at the end.
#[derive(Default)]
struct Outbox {
    /// Peer messages, in the core's order.
    peers: Vec<Message>,
    /// Answers to requesters, in the order they were decided.
    replies: Vec<(ReplyTo, ClientResponseBody)>,
    /// Storage commands were queued since the storage thread was last rung.
    storage_unrung: bool,
    /// Apply commands were queued since the apply thread was last rung.
    apply_unrung: bool,
}

/// Fixed settings of the consensus thread.
pub(crate) struct ConsensusSettings {
    /// Every server's address, by id, for leader hints.
    pub(crate) servers: Vec<SocketAddr>,
    /// Length of one tick.
    pub(crate) tick: Duration,
    /// How long a client request may wait inside the node.
    pub(crate) rpc_timeout: Duration,
    /// Applied index at start (the restored snapshot's).
    pub(crate) applied: LogIndex,
    /// Entries kept in the log behind a new snapshot.
    pub(crate) snapshot_retain_entries: u64,
    /// Most data bytes of one snapshot chunk (to a follower, or to a client's backup).
    pub(crate) snapshot_chunk_bytes: u64,
    /// Entries the only server of its cluster found lost at its start and went on without
    /// (`runtime.rs`), shown in its status.
    pub(crate) lost_alone: Option<rcraft_wire::LostRange>,
}

/// A client request the core has not answered yet.
struct Pending {
    reply: ReplyTo,
    /// For a read: the query to run once the read index is applied.
    query: Option<Vec<u8>>,
    deadline: Instant,
}

/// One input taken from the inbox by [`Consensus::wait_for_input`].
enum Received {
    Net(Vec<NetEvent>),
    Storage(StorageEvent),
    Apply(ApplyProgress),
    Api(ApiRequest),
    /// The tick deadline passed with nothing queued.
    Nothing,
}

/// Why the consensus loop ended.
pub(crate) enum Exit {
    /// `shutdown()` was called.
    Shutdown,
    /// A fatal error (storage or state machine): the node stopped.
    Failed(String),
}

/// Everything the consensus thread owns.
pub(crate) struct Consensus {
    replica: Replica,
    settings: ConsensusSettings,
    replier: Replier,
    storage: Ringing<StorageCommand>,
    apply: Ringing<ApplyCommand>,
    outbox: Outbox,
    pending: HashMap<RequestId, Pending>,
    next_request_id: RequestId,
    applied: LogIndex,
    next_tick: Instant,
    /// Events received while waiting for room in a full queue; handled before new input.
    deferred_storage: VecDeque<StorageEvent>,
    deferred_apply: VecDeque<ApplyProgress>,
    /// Apply commands, in the core's order, waiting for room in the apply thread's queue:
    /// this thread never waits for a slow state machine (it goes on heartbeating, voting and
    /// campaigning) and hands these over as the apply thread makes room, which it rings this
    /// thread for. Bounded: the core hands out committed entries only within its apply
    /// window, and new client requests are refused (`Overloaded`) while this holds
    /// [`APPLY_BACKLOG_MAX`] commands.
    apply_backlog: VecDeque<ApplyCommand>,
    /// Set by a fatal event; the loop stops at the end of the turn.
    failure: Option<String>,
    /// The received snapshot (index, term, data checksum) the apply thread was told is
    /// arriving (`ApplyCommand::SnapshotArriving`).
    announced_snapshot: Option<(LogIndex, rcraft_wire::Term, u32)>,
    /// Tells operators about role, leader and membership changes (node/observe.rs).
    observer: Observer,
    /// The lost range the core was repairing at the end of the last turn, to say when it is
    /// whole again (by entries or by a snapshot past it).
    repairing: Option<LostEntries>,
    /// The core's votes were unknown at the end of the last turn (a damaged hard state), to
    /// say when it votes again.
    votes_unknown: bool,
    /// The membership the network thread was last told (it forgets the data-dir incarnation
    /// of peers that leave); `None` before the first turn.
    membership_told: Option<Membership>,
}

impl Consensus {
    /// Builds the thread's state around a recovered replica.
    pub(crate) fn new(
        replica: Replica,
        settings: ConsensusSettings,
        replier: Replier,
        storage: Ringing<StorageCommand>,
        apply: Ringing<ApplyCommand>,
    ) -> Consensus {
        Consensus {
            observer: Observer::new(&replica),
            repairing: replica.repairing(),
            votes_unknown: log_votes_unknown(&replica),
            membership_told: None,
            replica,
            applied: settings.applied,
            next_tick: Instant::now() + settings.tick,
            settings,
            replier,
            storage,
            apply,
            outbox: Outbox::default(),
            pending: HashMap::new(),
            next_request_id: 1,
            deferred_storage: VecDeque::new(),
            deferred_apply: VecDeque::new(),
            apply_backlog: VecDeque::new(),
            failure: None,
            announced_snapshot: None,
        }
    }

    /// Writes the node's metrics from now on (node/metrics.rs).
    pub(crate) fn set_metrics(&mut self, metrics: MetricsHook) {
        self.observer.set_metrics(metrics);
    }

    /// The thread body.
    pub(crate) fn run(mut self, inbox: Inbox) -> Exit {
        let exit = self.run_loop(&inbox);
        self.hand_on();
        let message = match &exit {
            Exit::Shutdown => "the node is shutting down".to_string(),
            Exit::Failed(reason) => format!("the node stopped: {reason}"),
        };
        for (_, pending) in self.pending.drain() {
            let body = failure_body(&pending, &message);
            self.outbox.replies.push((pending.reply, body));
        }
        // Waiters the apply thread never got will not get an outcome either.
        for command in std::mem::take(&mut self.apply_backlog) {
            let (reply, definite) = match command {
                ApplyCommand::WaitProposal { reply, .. } => (reply, false),
                ApplyCommand::Read { reply, .. } => (reply, true),
                _ => continue,
            };
            let body = ClientResponseBody::Error {
                definite,
                message: message.clone(),
            };
            self.outbox.replies.push((reply, body));
        }
        self.hand_on();
        exit
    }

    fn run_loop(&mut self, inbox: &Inbox) -> Exit {
        loop {
            if let Some(exit) = self.turn(inbox) {
                return exit;
            }
        }
    }

    /// One turn: wait for input, feed the ticks that fell due meanwhile, then every queued
    /// input, then carry out the core's actions once.
    fn turn(&mut self, inbox: &Inbox) -> Option<Exit> {
        let first = match self.wait_for_input(inbox) {
            Ok(first) => first,
            Err(exit) => return Some(exit),
        };
        // Time goes in before any input: a loop that was blocked (a slow fsync, a full queue,
        // a paused process) must not judge a read against the clock of before the stall, when
        // a lease that has run out since still looked valid (issue 14, finding 4).
        self.tick_if_due();
        if let Some(exit) = self.on_received(first) {
            return Some(exit);
        }
        if let Some(exit) = self.drain_inputs(inbox) {
            return Some(exit);
        }
        self.tick_if_due();
        self.carry_out_actions(inbox);
        self.hand_on();
        (self.observer).on_turn(&self.replica, self.applied, self.pending.len());
        self.tell_membership();
        let repairing = self.replica.repairing();
        log_repair_finished(std::mem::replace(&mut self.repairing, repairing), repairing);
        if self.votes_unknown && self.replica.votes_unknown_waiting_for().is_none() {
            self.votes_unknown = false;
            let term = self.replica.hard_state().term;
            log::info!(
                "votes known again: every voter told its term, none above {term}; this node \
                 votes in no term up to {term} and as usual from term {} on",
                term.0 + 1
            );
        }
        self.failure.take().map(Exit::Failed)
    }

    /// Tells the network thread the members when they changed since it was last told.
    fn tell_membership(&mut self) {
        let membership = self.replica.membership();
        if self.membership_told.as_ref() != Some(membership) {
            self.replier
                .transport()
                .members_changed(membership.members());
            self.membership_told = Some(membership.clone());
        }
    }

    /// Sleeps until one input arrives or the tick deadline passes; not at all while events
    /// kept by `wait_for_room` wait to be handled.
    fn wait_for_input(&mut self, inbox: &Inbox) -> Result<Received, Exit> {
        if !self.deferred_storage.is_empty() || !self.deferred_apply.is_empty() {
            return Ok(Received::Nothing);
        }
        loop {
            if let Some(received) = try_receive(inbox)? {
                return Ok(received);
            }
            if !self.apply_backlog.is_empty() && !self.apply.is_full() {
                return Ok(Received::Nothing); // The apply thread made room for the backlog.
            }
            if Instant::now() >= self.next_tick {
                return Ok(Received::Nothing);
            }
            inbox.doorbell.wait(Some(self.next_tick));
        }
    }

    fn on_received(&mut self, received: Received) -> Option<Exit> {
        match received {
            Received::Net(events) => events.into_iter().for_each(|e| self.on_net_event(e)),
            Received::Storage(event) => self.on_storage_event(event),
            Received::Apply(progress) => self.on_apply_progress(progress),
            Received::Api(request) => return self.on_api_request(request),
            Received::Nothing => {}
        }
        None
    }

    /// Handles every input already queued (bounded), so the core acts on them as one batch.
    fn drain_inputs(&mut self, inbox: &Inbox) -> Option<Exit> {
        let mut taken = 0;
        while taken < CONSENSUS_INPUT_BATCH_MAX {
            let before = taken;
            while let Some(event) = self.deferred_storage.pop_front() {
                self.on_storage_event(event);
            }
            while let Some(progress) = self.deferred_apply.pop_front() {
                self.on_apply_progress(progress);
            }
            if let Ok(event) = inbox.storage.try_recv() {
                self.on_storage_event(event);
                taken += 1;
            }
            if let Ok(progress) = inbox.apply.try_recv() {
                self.on_apply_progress(progress);
                taken += 1;
            }
            if let Ok(events) = inbox.net.try_recv() {
                taken += events.len().max(1);
                events.into_iter().for_each(|e| self.on_net_event(e));
            }
            match inbox.api.try_recv() {
                Ok(request) => {
                    if let Some(exit) = self.on_api_request(request) {
                        return Some(exit);
                    }
                    taken += 1;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Some(Exit::Shutdown),
            }
            if taken == before {
                break;
            }
        }
        None
    }

    /// Feeds the core one tick per elapsed tick length and expires old pending requests.
    fn tick_if_due(&mut self) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        let mut ticks = 0;
        while self.next_tick <= now && ticks < TICK_CATCH_UP_MAX {
            self.replica.step(Input::Tick);
            self.next_tick += self.settings.tick;
            ticks += 1;
        }
        if self.next_tick <= now {
            // The thread was stopped or starved for long: restart the clock from now rather
            // than replay the whole gap tick by tick.
            self.next_tick = now + self.settings.tick;
        }
        self.expire_pending(now);
    }

    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                self.observer.on_request_failed();
                let body = failure_body(&pending, "timed out waiting for the leader");
                self.reply(pending.reply, body);
            }
        }
    }

    fn on_net_event(&mut self, event: NetEvent) {
        match event {
            NetEvent::Peer(message) => {
                self.observer.on_peer_message(&message);
                self.replica.step(Input::Message(message));
            }
            NetEvent::Client {
                conn,
                request,
                received,
            } => {
                self.observer.on_client_request(received);
                let reply = ReplyTo::Client {
                    conn,
                    request_id: request.request_id,
                };
                self.on_client_request(reply, request.body);
            }
            // Answers to a closed connection are dropped by the network thread; waiting
            // requests of that connection expire on their own.
            NetEvent::ClientClosed(_) => {}
        }
    }

    fn on_client_request(&mut self, reply: ReplyTo, body: ClientRequestBody) {
        match body {
            ClientRequestBody::Write { session, command } => self.propose(reply, session, command),
            ClientRequestBody::Read { query, mode } => self.read(reply, query, mode),
            ClientRequestBody::Status => {
                let status = self.status();
                self.reply(reply, ClientResponseBody::Status(Box::new(status)));
            }
            ClientRequestBody::TransferLeader { target } => self.transfer_leader(reply, target),
            ClientRequestBody::ChangeMembership { membership } => {
                self.change_membership(reply, membership)
            }
            ClientRequestBody::Snapshot => self.snapshot(reply),
            ClientRequestBody::ReadSnapshot { index, offset } => {
                self.read_snapshot(reply, index, offset)
            }
            ClientRequestBody::Events => {
                let events = self.observer.recorded_events();
                self.replier.send(reply, ClientResponseBody::Events(events));
            }
            ClientRequestBody::Latency => {
                let stages = self.observer.latency_report();
                self.replier
                    .send(reply, ClientResponseBody::Latency(stages));
            }
        }
    }

    /// Asks the apply thread for a snapshot; never waits for room in its queue, nor jumps the
    /// apply backlog.
    fn snapshot(&mut self, reply: ReplyTo) {
        if !self.apply_backlog.is_empty() {
            self.reply(reply, ClientResponseBody::Overloaded);
            return;
        }
        match self.apply.try_send(ApplyCommand::TakeSnapshot { reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(ApplyCommand::TakeSnapshot { reply })) => {
                self.reply(reply, ClientResponseBody::Overloaded);
            }
            Err(_) => self.fail("the apply thread stopped".to_string()),
        }
    }

    /// Asks the storage thread for a chunk of the current snapshot for a client's backup; it
    /// answers the client itself. Never waits for room in the storage queue.
    fn read_snapshot(&mut self, reply: ReplyTo, index: LogIndex, offset: u64) {
        let ReplyTo::Client { conn, .. } = &reply else {
            let message = "a backup is read over a client connection".to_string();
            let body = ClientResponseBody::Error {
                definite: true,
                message,
            };
            return self.reply(reply, body);
        };
        let command = StorageCommand::ReadSnapshotForClient {
            conn: *conn,
            reply,
            index,
            offset,
            max_bytes: self.settings.snapshot_chunk_bytes,
        };
        match self.storage.try_push(command) {
            Ok(()) => self.outbox.storage_unrung = true,
            Err(TrySendError::Full(StorageCommand::ReadSnapshotForClient { reply, .. })) => {
                self.reply(reply, ClientResponseBody::Overloaded);
            }
            Err(TrySendError::Full(_)) => unreachable!("the command pushed comes back"),
            Err(TrySendError::Disconnected(_)) => {
                self.fail("the storage thread stopped".to_string())
            }
        }
    }

    fn on_api_request(&mut self, request: ApiRequest) -> Option<Exit> {
        match request {
            ApiRequest::Propose {
                session,
                command,
                reply,
            } => {
                self.propose(ReplyTo::Api(reply), session, command);
            }
            ApiRequest::Read { query, mode, reply } => self.read(ReplyTo::Api(reply), query, mode),
            ApiRequest::Status { reply } => {
                let _ = reply.try_send(self.status());
            }
            ApiRequest::TransferLeader { target, reply } => {
                self.transfer_leader(ReplyTo::Api(reply), target);
            }
            ApiRequest::ChangeMembership { membership, reply } => {
                self.change_membership(ReplyTo::Api(reply), membership);
            }
            ApiRequest::Subscribe(sender) => {
                self.send_apply(ApplyCommand::Subscribe(sender));
            }
            ApiRequest::Snapshot { reply } => self.snapshot(ReplyTo::Api(reply)),
            ApiRequest::Shutdown => return Some(Exit::Shutdown),
        }
        None
    }

    /// Registers a request and returns its id, or answers `Overloaded` when the table is full
    /// or the state machine is that far behind (see `apply_backlog`).
    fn register(&mut self, reply: ReplyTo, query: Option<Vec<u8>>) -> Option<RequestId> {
        if self.pending.len() >= PENDING_REQUESTS_MAX
            || self.apply_backlog.len() >= APPLY_BACKLOG_MAX
        {
            self.reply(reply, ClientResponseBody::Overloaded);
            return None;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let deadline = Instant::now() + self.settings.rpc_timeout;
        self.pending.insert(
            id,
            Pending {
                reply,
                query,
                deadline,
            },
        );
        Some(id)
    }

    fn propose(&mut self, reply: ReplyTo, session: Option<Session>, data: Vec<u8>) {
        if let Err(too_large) = Error::check_size("command", data.len()) {
            self.reply(reply, definite_error(&too_large));
            return;
        }
        if let Some(id) = self.register(reply, None) {
            self.replica.step(Input::Propose { id, session, data });
        }
    }

    fn read(&mut self, reply: ReplyTo, query: Vec<u8>, mode: ReadMode) {
        if let Err(too_large) = Error::check_size("query", query.len()) {
            self.reply(reply, definite_error(&too_large));
            return;
        }
        if let Some(id) = self.register(reply, Some(query)) {
            self.replica.step(Input::ReadIndex { id, mode });
        }
    }

    /// Proposes a configuration change. Every member needs an address in `config.servers`,
    /// since that list is how nodes find each other.
    fn change_membership(&mut self, reply: ReplyTo, membership: Membership) {
        let servers = self.settings.servers.len() as u64;
        if let Some(unknown) = membership.members().into_iter().find(|id| id.0 >= servers) {
            let body = ClientResponseBody::Error {
                definite: true,
                message: format!("node {unknown} has no address in the configured servers"),
            };
            self.reply(reply, body);
            return;
        }
        if let Some(id) = self.register(reply, None) {
            self.replica
                .step(Input::ProposeMembership { id, membership });
        }
    }

    fn transfer_leader(&mut self, reply: ReplyTo, target: NodeId) {
        let status = self.status();
        if status.leader != Some(status.id) {
            let body = self.not_leader(status.leader);
            self.reply(reply, body);
            return;
        }
        self.replica.step(Input::TransferLeadership { target });
        let body = ClientResponseBody::Ok {
            term: status.term,
            index: status.commit_index,
            result: Vec::new(),
        };
        self.reply(reply, body);
    }

    fn on_storage_event(&mut self, event: StorageEvent) {
        match event {
            StorageEvent::Persisted { seq } => {
                self.replica.step(Input::Persisted { seq });
            }
            StorageEvent::SnapshotChunkRead {
                to,
                meta,
                offset,
                data,
            } => {
                (self.observer).on_snapshot_chunk_read(to, &meta, offset, data.len());
                self.replica.step(Input::SnapshotChunkRead {
                    to,
                    meta,
                    offset,
                    data,
                });
            }
            StorageEvent::EntriesRead {
                id,
                to,
                low,
                entries,
            } => {
                if let Err(reason) = &entries {
                    log::warn!("reading entries from {low} for node {to}: {reason}");
                }
                self.replica.step(Input::EntriesRead {
                    id,
                    to,
                    low,
                    entries: entries.map_err(|e| e.to_string()),
                });
            }
            StorageEvent::ClientAnswer { reply, body } => self.reply(reply, body),
            StorageEvent::SnapshotChunkWritten {
                meta,
                next_offset,
                rejected,
            } => {
                self.announce_arriving_snapshot(&meta, next_offset, rejected);
                let input = Input::SnapshotChunkWritten {
                    meta,
                    next_offset,
                    installed: false,
                    rejected,
                };
                self.replica.step(input);
            }
            StorageEvent::SnapshotStored { meta } => {
                self.observer.on_snapshot_stored();
                self.announced_snapshot = None;
                self.send_apply(ApplyCommand::Restore(meta.clone()));
                self.on_snapshot_installed(meta);
            }
            StorageEvent::SnapshotDamaged {
                index,
                term,
                path,
                reason,
            } => {
                // The state machine in memory is fine: a snapshot of it replaces the file (the
                // core then sends the new one). Storage reports each damaged file once.
                log::info!(
                    "asking for a new snapshot to replace {} (index {index}, term {term}: \
                     {reason})",
                    path.display()
                );
                self.replica.step(Input::SnapshotDamaged { index, term });
                self.send_apply(ApplyCommand::ReplaceSnapshot { damaged: index });
            }
            StorageEvent::Failed(error) => self.fail(error.to_string()),
        }
    }

    /// Tells the apply thread once per transfer (and again after a refused chunk, which may
    /// have made it start over) that a snapshot's chunks are arriving, so it can restore the
    /// snapshot meanwhile.
    fn announce_arriving_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        next_offset: u64,
        rejected: bool,
    ) {
        let key = (meta.index, meta.term, meta.checksum);
        if rejected {
            self.announced_snapshot = None;
        } else if next_offset > 0 && self.announced_snapshot != Some(key) {
            self.announced_snapshot = Some(key);
            self.send_apply(ApplyCommand::SnapshotArriving(meta.clone()));
        }
    }

    fn on_apply_progress(&mut self, progress: ApplyProgress) {
        match progress {
            ApplyProgress::Applied(index) => {
                self.applied = index;
                self.replica.step(Input::Applied { index });
            }
            ApplyProgress::SnapshotTaken(meta) => {
                let retain_entries = self.settings.snapshot_retain_entries;
                self.replica.step(Input::SnapshotTaken {
                    meta,
                    retain_entries,
                });
            }
            ApplyProgress::Restored(meta) => self.applied = self.applied.max(meta.index),
            ApplyProgress::Failed(reason) => self.fail(reason),
        }
    }

    /// Storage installed a received snapshot (verified, durable, the log restarted after it)
    /// and the apply thread was just asked to restore it: the core takes it now, without
    /// waiting for the restore. The apply thread carries out its commands in order, so the
    /// restore comes before any entry the core commits after the snapshot; and a restore held
    /// up (a large or slow state machine, or a restore reading an abandoned transfer until
    /// its stall limit, queued before it) delays only applying on this node, never its votes,
    /// acknowledgements or elections (issue 14, finding 7).
    fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        let input = Input::SnapshotChunkWritten {
            next_offset: meta.size_bytes,
            meta,
            installed: true,
            rejected: false,
        };
        self.replica.step(input);
    }

    fn fail(&mut self, reason: String) {
        log::error!("node stopping: {reason}");
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Drains the core's actions and carries them out, until it has none left (carrying out
    /// one action may deliver events that make the core produce more). Each drain's output
    /// is handed on per destination when it ends.
    fn carry_out_actions(&mut self, inbox: &Inbox) {
        loop {
            let actions = take_actions(&mut self.replica);
            if actions.is_empty() || self.failure.is_some() {
                return;
            }
            for action in actions {
                // The same one-line form as the interaction scripts; built only when traced.
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("node {}: {}", self.replica.id(), describe_action(&action));
                }
                self.carry_out(action, inbox);
            }
            self.hand_on();
        }
    }

    /// Hands the outbox on: what of the apply backlog fits, one ring each for the storage and
    /// apply threads if they were given commands, one network command for all peer messages
    /// and one for all answers.
    fn hand_on(&mut self) {
        self.hand_over_apply_backlog();
        if std::mem::take(&mut self.outbox.storage_unrung) {
            self.storage.ring();
        }
        if std::mem::take(&mut self.outbox.apply_unrung) {
            self.apply.ring();
        }
        let peers = std::mem::take(&mut self.outbox.peers);
        if !peers.is_empty() {
            self.observer.on_sent(&peers);
            self.replier.transport().send_peers(peers);
        }
        if !self.outbox.replies.is_empty() {
            self.replier.send_all(self.outbox.replies.drain(..));
        }
    }

    /// Queues an answer for the end of the drain.
    fn reply(&mut self, to: ReplyTo, body: ClientResponseBody) {
        self.outbox.replies.push((to, body));
    }

    fn carry_out(&mut self, action: Action, inbox: &Inbox) {
        match action {
            Action::Send(message) => self.outbox.peers.push(message),
            Action::Persist {
                seq,
                hard_state,
                entries,
            } => {
                let command = StorageCommand::Persist {
                    seq,
                    hard_state,
                    entries,
                };
                self.send_storage(inbox, command);
            }
            Action::Apply { entries } => self.send_apply(ApplyCommand::Entries(entries)),
            Action::Proposed { id, term, index } => {
                self.observer.on_proposed(index);
                self.on_proposed(id, term, index);
            }
            Action::ReadReady { id, index, term } => self.on_read_ready(id, index, term),
            Action::ProposeRejected { id, error } | Action::ReadRejected { id, error } => {
                self.on_rejected(id, error);
            }
            Action::ReadSnapshotChunk {
                to,
                meta,
                offset,
                max_bytes,
            } => {
                let command = StorageCommand::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    max_bytes,
                };
                self.send_storage(inbox, command);
            }
            Action::ReadEntries {
                id,
                to,
                low,
                high,
                max_bytes,
            } => {
                let command = StorageCommand::ReadEntries {
                    id,
                    to,
                    low,
                    high,
                    max_bytes,
                };
                self.send_storage(inbox, command);
            }
            Action::WriteSnapshotChunk {
                meta,
                offset,
                data,
                chunk_crc,
                done,
                ..
            } => {
                let command = StorageCommand::WriteSnapshotChunk {
                    meta,
                    offset,
                    data,
                    chunk_crc,
                    done,
                };
                self.send_storage(inbox, command);
            }
            Action::CompactLog { through } => {
                self.send_storage(inbox, StorageCommand::CompactLog { through });
            }
            Action::SelfDemotion(demotion) => {
                let term = self.replica.hard_state().term;
                (self.observer).on_self_demotion(&demotion, self.settings.tick, term);
            }
            Action::KeepSnapshots { in_use } => {
                self.send_storage(inbox, StorageCommand::KeepSnapshots { in_use });
            }
        }
    }

    fn on_proposed(&mut self, id: RequestId, term: rcraft_wire::Term, index: LogIndex) {
        if let Some(pending) = self.pending.remove(&id) {
            let command = ApplyCommand::WaitProposal {
                index,
                term,
                reply: pending.reply,
                deadline: pending.deadline,
            };
            self.send_apply(command);
        }
    }

    fn on_read_ready(&mut self, id: RequestId, index: LogIndex, term: rcraft_wire::Term) {
        if let Some(pending) = self.pending.remove(&id) {
            let command = ApplyCommand::Read {
                index,
                term,
                query: pending.query.unwrap_or_default(),
                reply: pending.reply,
                deadline: pending.deadline,
            };
            self.send_apply(command);
        }
    }

    fn on_rejected(&mut self, id: RequestId, error: ProposeError) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if !matches!(error, ProposeError::NotLeader { .. }) {
            self.observer.on_request_failed();
        }
        let body = match error {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::Overloaded => ClientResponseBody::Overloaded,
            ProposeError::Rejected(message) => ClientResponseBody::Error {
                definite: true,
                message,
            },
        };
        self.reply(pending.reply, body);
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ClientResponseBody {
        let leader_address = leader
            .and_then(|id| self.settings.servers.get(id.0 as usize))
            .map(|addr| addr.to_string());
        ClientResponseBody::NotLeader {
            leader,
            leader_address,
        }
    }

    /// Queues a storage command, waiting for room if the queue is full. Events that arrive
    /// meanwhile are kept for the next turn so the storage thread never waits on us.
    fn send_storage(&mut self, inbox: &Inbox, command: StorageCommand) {
        let mut command = command;
        loop {
            match self.storage.try_push(command) {
                Ok(()) => {
                    self.outbox.storage_unrung = true;
                    return;
                }
                Err(TrySendError::Full(back)) => command = back,
                Err(TrySendError::Disconnected(_)) => {
                    return self.fail("the storage thread stopped".to_string());
                }
            }
            // A full queue: make sure the storage thread is awake to empty it.
            self.storage.ring();
            self.wait_for_room(inbox);
        }
    }

    /// Queues an apply command behind the backlog, never waiting: what does not fit in the
    /// apply thread's queue now waits in `apply_backlog` (the order is the core's either way).
    fn send_apply(&mut self, command: ApplyCommand) {
        self.apply_backlog.push_back(command);
        self.hand_over_apply_backlog();
    }

    /// Moves the apply backlog into the apply thread's queue, in order, until it is full.
    fn hand_over_apply_backlog(&mut self) {
        while let Some(command) = self.apply_backlog.pop_front() {
            match self.apply.try_push(command) {
                Ok(()) => self.outbox.apply_unrung = true,
                Err(TrySendError::Full(back)) => {
                    self.apply_backlog.push_front(back);
                    // Whatever is queued must be taken, so that the apply thread rings back.
                    self.apply.ring();
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.apply_backlog.clear();
                    return self.fail("the apply thread stopped".to_string());
                }
            }
        }
    }

    /// Sleeps a little while the storage queue is full (its thread does not ring when it
    /// makes room), keeping what storage and apply report meanwhile for the next turn.
    fn wait_for_room(&mut self, inbox: &Inbox) {
        inbox
            .doorbell
            .wait(Some(Instant::now() + ROOM_POLL_INTERVAL));
        self.deferred_storage.extend(inbox.storage.try_iter());
        self.deferred_apply.extend(inbox.apply.try_iter());
    }

    /// This node's view of the cluster.
    fn status(&self) -> NodeStatus {
        NodeStatus {
            lost: self.settings.lost_alone,
            ..core_status(&self.replica, self.applied)
        }
    }
}

/// The answer for a request that will not get an outcome.
fn failure_body(pending: &Pending, message: &str) -> ClientResponseBody {
    ClientResponseBody::Error {
        // A read has no effect; a write the core never answered was never proposed only if
        // the core is synchronous, which this thread does not assume.
        definite: pending.query.is_some(),
        message: message.to_string(),
    }
}

/// The answer for a request refused before reaching the core.
fn definite_error(error: &Error) -> ClientResponseBody {
    ClientResponseBody::Error {
        definite: true,
        message: error.to_string(),
    }
}

/// Takes one queued input, if any: storage and apply progress first, as in a drain.
fn try_receive(inbox: &Inbox) -> Result<Option<Received>, Exit> {
    let stopped = |thread: &str| Exit::Failed(format!("the {thread} thread stopped"));
    match inbox.storage.try_recv() {
        Ok(event) => return Ok(Some(Received::Storage(event))),
        Err(TryRecvError::Disconnected) => return Err(stopped("storage")),
        Err(TryRecvError::Empty) => {}
    }
    match inbox.apply.try_recv() {
        Ok(progress) => return Ok(Some(Received::Apply(progress))),
        Err(TryRecvError::Disconnected) => return Err(stopped("apply")),
        Err(TryRecvError::Empty) => {}
    }
    match inbox.net.try_recv() {
        Ok(events) => return Ok(Some(Received::Net(events))),
        Err(TryRecvError::Disconnected) => return Err(stopped("network")),
        Err(TryRecvError::Empty) => {}
    }
    match inbox.api.try_recv() {
        Ok(request) => Ok(Some(Received::Api(request))),
        Err(TryRecvError::Disconnected) => Err(Exit::Shutdown),
        Err(TryRecvError::Empty) => Ok(None),
    }
}

/// Tells the operator that entries lost from this node's disk are held again (storage
/// logged the loss at start).
fn log_repair_finished(before: Option<LostEntries>, after: Option<LostEntries>) {
    if let (Some(lost), None) = (before, after) {
        log::info!(
            "repaired: the lost entries {}..={} are held again (fetched from the leader, or \
             covered by its snapshot), or every other voter showed they were never committed; \
             this node votes again",
            lost.from,
            lost.through
        );
    }
}

/// At start: says so when the core does not know whom it voted for; returns whether it does not.
fn log_votes_unknown(replica: &Replica) -> bool {
    let Some(waiting) = replica.votes_unknown_waiting_for() else {
        return false;
    };
    log::warn!(
        "votes unknown: this node's hard state (its record of whom it voted for) was damaged; \
         it neither votes nor campaigns until every other voter ({}) has told its current term \
         (docs/OPERATIONS.md §7)",
        join_ids(&waiting)
    );
    true
}

/// Node ids as `1, 3`.
fn join_ids(ids: &[rcraft_wire::NodeId]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.join(", ")
}

fn take_actions(replica: &mut Replica) -> Vec<Action> {
    replica.take_actions()
}

/// The core's status with the apply thread's applied index, as clients see it.
fn core_status(replica: &Replica, applied: LogIndex) -> NodeStatus {
    NodeStatus {
        applied_index: applied,
        ..replica.status().to_node_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{from_peer_in, leader_of_three, step_confirming as step};
    use crate::node::mailbox::ringing;
    use crate::node::net::delivery::event_batches;
    use crate::node::transport::{ClientConnId, Transport};
    use crossbeam_channel::bounded;
    use rcraft_wire::{ClientResponse, Message, MessageBody};
    use std::sync::Arc;

    /// A network that drops everything: the test looks at what reaches the apply thread.
    struct NoNetwork;

    impl Transport for NoNetwork {
        fn send_peers(&self, _: Vec<Message>) {}
        fn reply(&self, _: ClientConnId, _: ClientResponse) {}
    }

    /// Node 1 leading nodes 1-3 with lease reads on, its no-op committed, and a lease: node
    /// 2 answered the heartbeat round it just sent.
    fn leader_holding_a_lease() -> Replica {
        let mut leader = leader_of_three(|config| config.lease_reads = true);
        let mut round = None;
        while round.is_none() {
            round = step(&mut leader, Input::Tick).iter().find_map(|a| match a {
                Action::Send(Message {
                    to: NodeId(2),
                    body: MessageBody::Heartbeat { read_context, .. },
                    ..
                }) => Some(*read_context),
                _ => None,
            });
        }
        let answer = MessageBody::HeartbeatResponse {
            read_context: round.unwrap(),
        };
        step(&mut leader, from_peer_in(1, 2, answer));
        leader
    }

    /// Runs one turn of a consensus loop around `leader` whose clock is `behind` late, with
    /// one read queued, and says whether the read was served at once (sent to apply).
    fn read_served_at_once(behind: Duration) -> bool {
        let (_net_tx, net) = event_batches(4);
        let (_storage_tx, storage) = bounded(4);
        let (_apply_progress_tx, apply) = bounded(4);
        let (api_tx, api) = bounded(4);
        let inbox = Inbox {
            net,
            storage,
            apply,
            api,
            doorbell: Doorbell::new(),
        };
        let (storage_commands, _storage_rx) = ringing(64, &Doorbell::new());
        let (apply_commands, apply_rx) = ringing(64, &Doorbell::new());
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let settings = ConsensusSettings {
            servers: vec![address; 3],
            tick: Duration::from_millis(10),
            rpc_timeout: Duration::from_secs(60),
            applied: LogIndex(0),
            snapshot_retain_entries: 0,
            snapshot_chunk_bytes: 1 << 20,
            lost_alone: None,
        };
        let replier = Replier::new(Arc::new(NoNetwork));
        let mut consensus = Consensus::new(
            leader_holding_a_lease(),
            settings,
            replier,
            storage_commands,
            apply_commands,
        );
        let (reply, _answer) = bounded(1);
        let read = ApiRequest::Read {
            query: Vec::new(),
            mode: ReadMode::Linearizable,
            reply,
        };
        api_tx.send(read).unwrap();
        consensus.next_tick = Instant::now() + Duration::from_secs(1) - behind;
        assert!(consensus.turn(&inbox).is_none());
        apply_rx
            .try_iter()
            .any(|command| matches!(command, ApplyCommand::Read { .. }))
    }

    /// Issue 14, finding 4: a read that waited while the loop was blocked for longer than the
    /// lease is judged after the overdue ticks, so the expired lease does not serve it.
    #[test]
    fn a_read_queued_during_a_stall_is_not_served_from_an_expired_lease() {
        // Control: on time, the lease serves the read at once.
        assert!(read_served_at_once(Duration::ZERO));
        // Five seconds overdue (500 ticks, far past the 13-tick lease): it must wait for a round.
        assert!(!read_served_at_once(Duration::from_secs(6)));
    }
}
