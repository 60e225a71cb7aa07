//! The consensus thread's logic as a handler with no thread, channel, sleep or clock of its
//! own: [`ConsensusLogic`] owns the core [`Replica`], the table of client requests waiting
//! for the core's answer, the apply backlog and the tick clock, and is fed one received item
//! at a time with the time it is handled at. What it decides goes to an [`Outbox`] grouped
//! per destination, each group in the order it must be carried out.
//!
//! Two drivers run it: the consensus thread (`consensus.rs`, a thin loop that waits on its
//! doorbell, receives, calls the handler and hands the outbox to the channels) and the
//! cluster simulator (`tests/sim/`, through `node::testing::SimConsensus`), which passes its
//! simulated time and routes the outbox to its disk model, state machine, network and
//! clients. Both run this code; neither has a copy of it.
//!
//! One turn, as both drivers make it: [`ConsensusLogic::receive`] for every item taken (each
//! first feeds the core the ticks that fell due by then), [`ConsensusLogic::tick`] when the
//! turn woke for its deadline with nothing received, then [`ConsensusLogic::finish_turn`],
//! which carries out the core's actions into the outbox; then the driver hands the outbox on.
//!
//! Invariants: storage commands leave in the core's order and are never dropped (the driver
//! may wait for room; a backup's read is the one exception, refused when there is none);
//! apply commands leave in the order the core emitted them, so a proposal's waiter always
//! precedes its entry, and the handler never waits for the apply side: what has not left
//! yet waits in [`Outbox::apply`], the apply backlog, bounded because new client requests
//! are refused (`Overloaded`) while it holds [`APPLY_BACKLOG_MAX`] commands (issue 14,
//! finding 16 of docs/SIM_FINDINGS.md); every request in the pending table is answered
//! exactly once (outcome, error, timeout or shutdown).

use super::apply::{ApplyCommand, ApplyProgress};
use super::consensus::{ApiRequest, Exit};
use super::error::{Error, Fatal};
use super::limits::{APPLY_BACKLOG_MAX, PENDING_REQUESTS_MAX, TICK_CATCH_UP_MAX};
use super::metrics::MetricsHook;
use super::observe::Observer;
use super::received_snapshot::ReceivedSnapshots;
use super::storage_io::{StorageCommand, StorageEvent};
use super::transport::{NetEvent, ReplyTo};
use crate::core::describe::describe_action;
use crate::core::{
    Action, ApplyOutcome, Input, LostEntries, ProposeError, Replica, RequestId, SelfDemotion,
    StorageAction, StorageOutcome,
};
use crossbeam_channel::Sender;
use rcraft_wire::{
    ClientRequestBody, ClientResponseBody, LogIndex, Membership, Message, NodeId, NodeStatus,
    ReadMode, Session,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    /// Most data bytes of one snapshot chunk (to a follower, or to a client's backup).
    pub(crate) snapshot_chunk_bytes: u64,
    /// Entries the only server of its cluster found lost at its start and went on without
    /// (`runtime.rs`), shown in its status.
    pub(crate) lost_alone: Option<rcraft_wire::LostRange>,
}

/// One item the consensus thread took from its inbox.
pub(crate) enum Received {
    /// Everything one network-loop turn decoded.
    Net(Vec<NetEvent>),
    /// From the storage thread.
    Storage(StorageEvent),
    /// From the apply thread.
    Apply(ApplyProgress),
    /// From a `NodeHandle` caller.
    Api(ApiRequest),
}

/// What the handler decided, per destination, each group in the order it must be carried
/// out. The driver empties every group but `apply` at the end of a turn; `apply` it empties
/// from the front as far as the apply side has room.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Storage commands, in the core's order.
    pub(crate) storage: Vec<StorageCommand>,
    /// Apply commands, in the core's order: the apply backlog (see the module's invariants).
    pub(crate) apply: VecDeque<ApplyCommand>,
    /// Peer messages, in the core's order.
    pub(crate) peers: Vec<Message>,
    /// Answers to requesters, in the order they were decided.
    pub(crate) replies: Vec<(ReplyTo, ClientResponseBody)>,
    /// Status answers to `NodeHandle` callers.
    pub(crate) statuses: Vec<(Sender<NodeStatus>, NodeStatus)>,
    /// The members, when they changed since the network side was last told (it forgets the
    /// data-dir incarnation of peers that leave).
    pub(crate) members: Option<BTreeSet<NodeId>>,
    /// Leadership handed over of the core's own accord (gray failure), already logged and
    /// counted; for a driver that checks them (the simulator). The thread drops them.
    pub(crate) self_demotions: Vec<SelfDemotion>,
}

/// A client request the core has not answered yet.
struct Pending {
    reply: ReplyTo,
    /// For a read: the query to run once the read index is applied.
    query: Option<Vec<u8>>,
    deadline: Instant,
}

/// Everything the consensus thread decides with.
pub(crate) struct ConsensusLogic {
    replica: Replica,
    settings: ConsensusSettings,
    outbox: Outbox,
    pending: HashMap<RequestId, Pending>,
    next_request_id: RequestId,
    applied: LogIndex,
    /// When the next tick falls due.
    next_tick: Instant,
    /// Set by a fatal event; the driver stops at the end of the turn.
    failure: Option<Fatal>,
    /// The stages of the snapshots received from leaders (node/received_snapshot.rs).
    received: ReceivedSnapshots,
    /// Tells operators about role, leader and membership changes, and times the request
    /// stages (node/observe.rs); `None` in the simulator, which checks what it would log
    /// itself (the observer reads the wall clock for its metrics; no decision depends on it).
    observer: Option<Observer>,
    /// The lost range the core was repairing at the end of the last turn, to say when it is
    /// whole again (by entries or by a snapshot past it).
    repairing: Option<LostEntries>,
    /// The core's votes were unknown at the end of the last turn (a damaged hard state), to
    /// say when it votes again.
    votes_unknown: bool,
    /// The membership the network side was last told; `None` before the first turn.
    membership_told: Option<Membership>,
}

impl ConsensusLogic {
    /// The handler around a recovered replica, its clock starting at `now`.
    pub(crate) fn new(replica: Replica, settings: ConsensusSettings, now: Instant) -> Self {
        ConsensusLogic {
            observer: Some(Observer::new(&replica)),
            repairing: replica.repairing(),
            votes_unknown: log_votes_unknown(&replica),
            membership_told: None,
            replica,
            applied: settings.applied,
            next_tick: now + settings.tick,
            settings,
            outbox: Outbox::default(),
            pending: HashMap::new(),
            next_request_id: 1,
            failure: None,
            received: ReceivedSnapshots::default(),
        }
    }

    /// Writes the node's metrics from now on (node/metrics.rs).
    pub(crate) fn set_metrics(&mut self, metrics: MetricsHook) {
        if let Some(observer) = &mut self.observer {
            observer.set_metrics(metrics);
        }
    }

    /// The handler without its observer (for the simulator): nothing is logged or timed.
    pub(crate) fn unobserved(mut self) -> Self {
        self.observer = None;
        self
    }

    /// Tells the observer, if there is one.
    fn observe(&mut self, tell: impl FnOnce(&mut Observer)) {
        if let Some(observer) = &mut self.observer {
            tell(observer);
        }
    }

    /// The core, for observation.
    pub(crate) fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Steps the core directly with an input no node thread sends (a fault the simulator
    /// injects: an election timeout firing at once).
    pub(crate) fn step_core(&mut self, input: Input) {
        self.replica.step(input);
    }

    /// What was decided and not handed on yet.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// When the next tick falls due: the driver wakes by then at the latest.
    pub(crate) fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// The fatal error, once one happened: the driver stops at the end of the turn.
    pub(crate) fn take_failure(&mut self) -> Option<Fatal> {
        self.failure.take()
    }

    /// Handles one received item at `now`, after the ticks that fell due by then: time goes
    /// in before any input, so a driver that was blocked (a slow fsync, a full queue, a
    /// paused process) never has a read judged against the clock of before the stall, when
    /// a lease that has run out since still looked valid (issue 14, finding 4). Returns
    /// `Exit::Shutdown` for a shutdown request.
    pub(crate) fn receive(&mut self, item: Received, now: Instant) -> Option<Exit> {
        self.tick(now);
        match item {
            Received::Net(events) => events.into_iter().for_each(|e| self.on_net_event(e, now)),
            Received::Storage(event) => self.on_storage_event(event),
            Received::Apply(progress) => self.on_apply_progress(progress),
            Received::Api(request) => return self.on_api_request(request, now),
        }
        None
    }

    /// Feeds the core one tick per tick length elapsed by `now` and expires pending requests
    /// whose deadline passed.
    pub(crate) fn tick(&mut self, now: Instant) {
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
            // The driver was stopped or starved for long: restart the clock from now rather
            // than replay the whole gap tick by tick.
            self.next_tick = now + self.settings.tick;
        }
        self.expire_pending(now);
    }

    /// Ends a turn at `now`: the ticks due, then the core's actions carried out into the
    /// outbox, then what operators are told about the turn. The driver hands the outbox on,
    /// then stops if [`ConsensusLogic::take_failure`] says a fatal error happened.
    pub(crate) fn finish_turn(&mut self, now: Instant) {
        self.tick(now);
        self.carry_out_actions();
        if let Some(observer) = &mut self.observer {
            if !self.outbox.peers.is_empty() {
                observer.on_sent(&self.outbox.peers);
            }
            observer.on_turn(&self.replica, self.applied, self.pending.len());
        }
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
    }

    /// The driver stops: every request still waiting, in the pending table or the apply
    /// backlog, is answered with `exit`'s reason.
    pub(crate) fn stop(&mut self, exit: &Exit) {
        let message = match exit {
            Exit::Shutdown => "the node is shutting down".to_string(),
            Exit::Failed(reason) => format!("the node stopped: {reason}"),
        };
        for (_, pending) in self.pending.drain() {
            let body = failure_body(&pending, &message);
            self.outbox.replies.push((pending.reply, body));
        }
        // Waiters the apply side never got will not get an outcome either.
        for command in std::mem::take(&mut self.outbox.apply) {
            let (reply, definite) = match command {
                ApplyCommand::WaitProposal { reply, .. } => (reply, false),
                ApplyCommand::Read { reply, .. } => (reply, true),
                ApplyCommand::TakeSnapshot { reply } => (reply, true),
                _ => continue,
            };
            let body = ClientResponseBody::Error {
                definite,
                message: message.clone(),
            };
            self.outbox.replies.push((reply, body));
        }
    }

    /// A fatal error: the driver stops at the end of the turn.
    pub(crate) fn fail(&mut self, reason: Fatal) {
        log::error!("node stopping: {reason}");
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Notes the members for the network side when they changed since it was last told.
    fn tell_membership(&mut self) {
        let membership = self.replica.membership();
        if self.membership_told.as_ref() != Some(membership) {
            self.outbox.members = Some(membership.members());
            self.membership_told = Some(membership.clone());
        }
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
                self.observe(|o| o.on_request_failed());
                let body = failure_body(&pending, "timed out waiting for the leader");
                self.reply(pending.reply, body);
            }
        }
    }

    fn on_net_event(&mut self, event: NetEvent, now: Instant) {
        match event {
            NetEvent::Peer(message) => {
                self.observe(|o| o.on_peer_message(&message));
                self.replica.step(Input::Message(message));
            }
            NetEvent::Client {
                conn,
                request,
                received,
            } => {
                self.observe(|o| o.on_client_request(received));
                let reply = ReplyTo::Client {
                    conn,
                    request_id: request.request_id,
                };
                self.on_client_request(reply, request.body, now);
            }
            // Answers to a closed connection are dropped by the network thread; waiting
            // requests of that connection expire on their own.
            NetEvent::ClientClosed(_) => {}
        }
    }

    fn on_client_request(&mut self, reply: ReplyTo, body: ClientRequestBody, now: Instant) {
        match body {
            ClientRequestBody::Write { session, command } => {
                self.propose(reply, session, command, now)
            }
            ClientRequestBody::Read { query, mode } => self.read(reply, query, mode, now),
            ClientRequestBody::Status => {
                let status = self.status();
                self.reply(reply, ClientResponseBody::Status(Box::new(status)));
            }
            ClientRequestBody::TransferLeader { target } => self.transfer_leader(reply, target),
            ClientRequestBody::ChangeMembership { membership } => {
                self.change_membership(reply, membership, now)
            }
            ClientRequestBody::Snapshot => self.snapshot(reply),
            ClientRequestBody::ReadSnapshot { index, offset } => {
                self.read_snapshot(reply, index, offset)
            }
            ClientRequestBody::Events => {
                let events =
                    (self.observer.as_ref()).map_or_else(Vec::new, |o| o.recorded_events());
                self.reply(reply, ClientResponseBody::Events(events));
            }
            ClientRequestBody::Latency => {
                let stages = (self.observer.as_ref()).map_or_else(Vec::new, |o| o.latency_report());
                self.reply(reply, ClientResponseBody::Latency(stages));
            }
        }
    }

    /// Asks the apply side for a snapshot; never jumps the apply backlog (refused while it
    /// holds anything), and the driver refuses it too when the apply side has no room.
    fn snapshot(&mut self, reply: ReplyTo) {
        if !self.outbox.apply.is_empty() {
            self.reply(reply, ClientResponseBody::Overloaded);
            return;
        }
        self.outbox
            .apply
            .push_back(ApplyCommand::TakeSnapshot { reply });
    }

    /// Asks storage for a chunk of the current snapshot for a client's backup; storage
    /// answers the client itself. The driver refuses it (`Overloaded`) rather than wait for
    /// room in a full storage queue.
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
        self.outbox.storage.push(command);
    }

    fn on_api_request(&mut self, request: ApiRequest, now: Instant) -> Option<Exit> {
        match request {
            ApiRequest::Propose {
                session,
                command,
                reply,
            } => {
                self.propose(ReplyTo::Api(reply), session, command, now);
            }
            ApiRequest::Read { query, mode, reply } => {
                self.read(ReplyTo::Api(reply), query, mode, now)
            }
            ApiRequest::Status { reply } => {
                let status = self.status();
                self.outbox.statuses.push((reply, status));
            }
            ApiRequest::TransferLeader { target, reply } => {
                self.transfer_leader(ReplyTo::Api(reply), target);
            }
            ApiRequest::ChangeMembership { membership, reply } => {
                self.change_membership(ReplyTo::Api(reply), membership, now);
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
    /// or the state machine is that far behind (see [`Outbox::apply`]).
    fn register(
        &mut self,
        reply: ReplyTo,
        query: Option<Vec<u8>>,
        now: Instant,
    ) -> Option<RequestId> {
        if self.pending.len() >= PENDING_REQUESTS_MAX
            || self.outbox.apply.len() >= APPLY_BACKLOG_MAX
        {
            self.reply(reply, ClientResponseBody::Overloaded);
            return None;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let deadline = now + self.settings.rpc_timeout;
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

    fn propose(&mut self, reply: ReplyTo, session: Option<Session>, data: Vec<u8>, now: Instant) {
        if let Err(too_large) = Error::check_size("command", data.len()) {
            self.reply(reply, definite_error(&too_large));
            return;
        }
        if let Some(id) = self.register(reply, None, now) {
            self.replica.step(Input::Propose { id, session, data });
        }
    }

    fn read(&mut self, reply: ReplyTo, query: Vec<u8>, mode: ReadMode, now: Instant) {
        if let Err(too_large) = Error::check_size("query", query.len()) {
            self.reply(reply, definite_error(&too_large));
            return;
        }
        if let Some(id) = self.register(reply, Some(query), now) {
            self.replica.step(Input::ReadIndex { id, mode });
        }
    }

    /// Proposes a configuration change. Every member needs an address in `config.servers`,
    /// since that list is how nodes find each other.
    fn change_membership(&mut self, reply: ReplyTo, membership: Membership, now: Instant) {
        let servers = self.settings.servers.len() as u64;
        if let Some(unknown) = membership.members().into_iter().find(|id| id.0 >= servers) {
            let body = ClientResponseBody::Error {
                definite: true,
                message: format!("node {unknown} has no address in the configured servers"),
            };
            self.reply(reply, body);
            return;
        }
        if let Some(id) = self.register(reply, None, now) {
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
            StorageEvent::Core(outcome) => self.on_storage_outcome(outcome),
            StorageEvent::ClientAnswer { reply, body } => self.reply(reply, body),
            StorageEvent::Failed(error) => self.fail(Fatal::Storage(error)),
        }
    }

    /// Storage's answer for the core: what the node itself does with it first (the
    /// received-snapshot stage's transitions, the observer's counts, a replacement for a
    /// damaged snapshot), then the core takes it as it is.
    fn on_storage_outcome(&mut self, outcome: StorageOutcome) {
        match &outcome {
            StorageOutcome::Persisted { .. } | StorageOutcome::EntriesRead { .. } => {}
            StorageOutcome::SnapshotChunkRead {
                to,
                meta,
                offset,
                data,
            } => self.observe(|o| o.on_snapshot_chunk_read(*to, meta, *offset, data.len())),
            StorageOutcome::SnapshotChunkWritten {
                meta,
                next_offset,
                rejected,
            } => match self.received.chunk_written(meta, *next_offset, *rejected) {
                Ok(Some(arriving)) => self.send_apply(arriving),
                Ok(None) => {}
                Err(bug) => return self.fail(Fatal::SnapshotStage(bug)),
            },
            StorageOutcome::SnapshotInstalled { meta } => {
                self.observe(|o| o.on_snapshot_stored());
                if let Err(bug) = self.received.stored(meta) {
                    return self.fail(Fatal::SnapshotStage(bug));
                }
                // The core takes it now, without waiting for the restore it asks for
                // (`Action::RestoreSnapshot`): a restore held up delays only applying on this
                // node, never its votes, acknowledgements or elections (issue 14, finding 7).
            }
            StorageOutcome::SnapshotDamaged { index, .. } => {
                // The state machine in memory is fine: a snapshot of it replaces the file (the
                // core then sends the new one). Storage logged the file and the damage, and
                // reports each damaged file once.
                self.send_apply(ApplyCommand::ReplaceSnapshot { damaged: *index });
            }
        }
        self.replica.step(Input::Storage(outcome));
    }

    fn on_apply_progress(&mut self, progress: ApplyProgress) {
        match progress {
            ApplyProgress::Core(outcome) => {
                if let ApplyOutcome::Applied { index } = outcome {
                    self.applied = index;
                }
                self.replica.step(Input::Apply(outcome));
            }
            ApplyProgress::Restored(meta) => {
                if let Err(bug) = self.received.restored(&meta) {
                    return self.fail(Fatal::SnapshotStage(bug));
                }
                self.applied = self.applied.max(meta.index);
            }
            ApplyProgress::Failed(error) => self.fail(Fatal::Apply(Box::new(error))),
            ApplyProgress::Answer(reply, body) => self.reply(reply, body),
        }
    }

    /// Drains the core's actions into the outbox, once: carrying an action out never steps
    /// the core, so the drain leaves it none.
    fn carry_out_actions(&mut self) {
        if self.failure.is_some() {
            return;
        }
        for action in self.replica.take_actions() {
            // The same one-line form as the interaction scripts; built only when traced.
            if log::log_enabled!(log::Level::Trace) {
                log::trace!("node {}: {}", self.replica.id(), describe_action(&action));
            }
            self.carry_out(action);
        }
    }

    /// Queues an answer for the end of the turn.
    fn reply(&mut self, to: ReplyTo, body: ClientResponseBody) {
        self.outbox.replies.push((to, body));
    }

    /// Queues an apply command behind the backlog (the order is the core's).
    fn send_apply(&mut self, command: ApplyCommand) {
        self.outbox.apply.push_back(command);
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Send(message) => self.outbox.peers.push(message),
            Action::Storage(action) => {
                if let StorageAction::WriteSnapshotChunk { meta, .. } = &action {
                    self.received.chunk_handed(meta);
                }
                self.outbox.storage.push(StorageCommand::Core(action));
            }
            Action::Apply { entries } => self.send_apply(ApplyCommand::Entries(entries)),
            Action::RestoreSnapshot { meta } => match self.received.restore_asked(&meta) {
                Ok(restore) => self.send_apply(restore),
                Err(bug) => self.fail(Fatal::SnapshotStage(bug)),
            },
            Action::Proposed { id, term, index } => {
                self.observe(|o| o.on_proposed(index));
                self.on_proposed(id, term, index);
            }
            Action::ReadReady { id, index, term } => self.on_read_ready(id, index, term),
            Action::ProposeRejected { id, error } | Action::ReadRejected { id, error } => {
                self.on_rejected(id, error);
            }
            Action::SelfDemotion(demotion) => {
                let term = self.replica.hard_state().term;
                let tick = self.settings.tick;
                self.observe(|o| o.on_self_demotion(&demotion, tick, term));
                self.outbox.self_demotions.push(demotion);
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
            self.observe(|o| o.on_request_failed());
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

    /// This node's view of the cluster.
    fn status(&self) -> NodeStatus {
        NodeStatus {
            lost: self.settings.lost_alone,
            applied_index: self.applied,
            ..self.replica.status().to_node_status()
        }
    }
}

/// The answer for a request that will not get an outcome.
fn failure_body(pending: &Pending, message: &str) -> ClientResponseBody {
    ClientResponseBody::Error {
        // A read has no effect; a write the core never answered was never proposed only if
        // the core is synchronous, which this handler does not assume.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{from_peer_in, leader_of_three, step_confirming as step};
    use crossbeam_channel::bounded;
    use rcraft_wire::MessageBody;

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

    fn settings() -> ConsensusSettings {
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        ConsensusSettings {
            servers: vec![address; 3],
            tick: Duration::from_millis(10),
            rpc_timeout: Duration::from_secs(60),
            applied: LogIndex(0),
            snapshot_chunk_bytes: 1 << 20,
            lost_alone: None,
        }
    }

    /// Runs one turn of the handler around `leader`, handed a read `behind` after its next
    /// tick fell due, and says whether the read was served at once (sent to apply).
    fn read_served_at_once(behind: Duration) -> bool {
        let start = Instant::now();
        let mut logic = ConsensusLogic::new(leader_holding_a_lease(), settings(), start);
        let now = logic.next_tick() + behind;
        let (reply, _answer) = bounded(1);
        let read = ApiRequest::Read {
            query: Vec::new(),
            mode: ReadMode::Linearizable,
            reply,
        };
        assert!(logic.receive(Received::Api(read), now).is_none());
        logic.finish_turn(now);
        (logic.outbox().apply.iter()).any(|command| matches!(command, ApplyCommand::Read { .. }))
    }

    /// Issue 14, finding 4: a read that waited while the loop was blocked for longer than the
    /// lease is judged after the overdue ticks, so the expired lease does not serve it.
    #[test]
    fn a_read_queued_during_a_stall_is_not_served_from_an_expired_lease() {
        // Control: on time, the lease serves the read at once.
        assert!(read_served_at_once(Duration::ZERO));
        // Five seconds overdue (500 ticks, far past the 13-tick lease): it must wait for a round.
        assert!(!read_served_at_once(Duration::from_secs(5)));
    }

    /// Finding 16: the apply side's room is not the handler's concern; a backlog of
    /// `APPLY_BACKLOG_MAX` commands not handed on refuses new requests, and the snapshot
    /// request never jumps it.
    #[test]
    fn a_full_apply_backlog_refuses_new_requests_and_snapshots() {
        let now = Instant::now();
        let mut logic = ConsensusLogic::new(leader_holding_a_lease(), settings(), now);
        for _ in 0..APPLY_BACKLOG_MAX {
            let (sender, _) = bounded(1);
            let request = ApiRequest::Subscribe(sender);
            assert!(logic.receive(Received::Api(request), now).is_none());
        }
        let (reply, answer) = bounded(1);
        let write = ApiRequest::Propose {
            session: None,
            command: b"x".to_vec(),
            reply,
        };
        logic.receive(Received::Api(write), now);
        let (reply, snapshot_answer) = bounded(1);
        logic.receive(Received::Api(ApiRequest::Snapshot { reply }), now);
        logic.finish_turn(now);
        let replies = std::mem::take(&mut logic.outbox().replies);
        assert_eq!(replies.len(), 2);
        for (to, body) in replies {
            assert_eq!(body, ClientResponseBody::Overloaded);
            let ReplyTo::Api(sender) = to else {
                panic!("an API request is answered on its channel")
            };
            sender.try_send(body).unwrap();
        }
        assert_eq!(answer.try_recv(), Ok(ClientResponseBody::Overloaded));
        assert_eq!(
            snapshot_answer.try_recv(),
            Ok(ClientResponseBody::Overloaded)
        );
        assert_eq!(logic.outbox().apply.len(), APPLY_BACKLOG_MAX);
    }

    /// At a stop, every request still waiting is answered once: a write waiting in the
    /// apply backlog with an unknown outcome, a read still pending in the table with a
    /// definite failure.
    #[test]
    fn a_stop_answers_every_waiting_request_once() {
        let start = Instant::now();
        let leader = leader_of_three(|_| {});
        let mut logic = ConsensusLogic::new(leader, settings(), start);
        let (reply, write_answer) = bounded(2);
        let write = ApiRequest::Propose {
            session: None,
            command: b"x".to_vec(),
            reply,
        };
        logic.receive(Received::Api(write), start);
        // Without lease reads, the read waits in the table for a heartbeat round.
        let (reply, read_answer) = bounded(2);
        let read = ApiRequest::Read {
            query: Vec::new(),
            mode: ReadMode::Linearizable,
            reply,
        };
        logic.receive(Received::Api(read), start);
        logic.finish_turn(start);
        assert!(logic.outbox().replies.is_empty());
        let waiting = |c: &ApplyCommand| matches!(c, ApplyCommand::WaitProposal { .. });
        assert!(logic.outbox().apply.iter().any(waiting));
        logic.stop(&Exit::Shutdown);
        for (to, body) in std::mem::take(&mut logic.outbox().replies) {
            let ReplyTo::Api(sender) = to else {
                panic!("an API request is answered on its channel")
            };
            sender.try_send(body).unwrap();
        }
        let unknown = |answer: Result<ClientResponseBody, _>| match answer {
            Ok(ClientResponseBody::Error { definite, .. }) => Some(definite),
            _ => None,
        };
        assert_eq!(unknown(write_answer.try_recv()), Some(false));
        assert_eq!(unknown(read_answer.try_recv()), Some(true));
        assert!(write_answer.try_recv().is_err() && read_answer.try_recv().is_err());
        assert!(logic.outbox().apply.is_empty());
    }
}
