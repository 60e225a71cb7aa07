//! The consensus thread: a thin loop around [`ConsensusLogic`] (`consensus_logic.rs`), which
//! feeds the core every input and carries out its actions into an [`Outbox`].
//!
//! Each turn waits on the thread's [`Doorbell`] for any input (network event, storage event,
//! apply progress, API request) or the next tick deadline (never in a spinning or yielding
//! wait, also not while a full storage queue holds it back), hands the handler every queued
//! input (up to [`CONSENSUS_INPUT_BATCH_MAX`]) with the time it is taken at, lets it finish
//! the turn (the core's actions, drained once, so proposals that arrive together become one
//! persist action and one append message), then hands the outbox on per destination:
//! storage commands in the core's order behind one ring of the storage thread, waiting for
//! room in its queue; what of the apply backlog fits in the apply thread's queue behind one
//! ring of it; every peer message in one network command, and every client answer in one
//! more.
//!
//! Invariants: persist commands reach the storage thread in sequence order and are never
//! dropped (a full queue makes this thread wait, which pushes back on clients; what storage
//! and apply report meanwhile waits for the next turn); this thread never waits for the
//! apply thread (the backlog stays in the handler, issue 14, finding 16 of
//! docs/SIM_FINDINGS.md); a request refused for want of room (a snapshot or a backup's
//! read) is answered `Overloaded`.

use super::apply::{ApplyCommand, ApplyProgress};
pub(crate) use super::consensus_logic::ConsensusSettings;
use super::consensus_logic::{ConsensusLogic, Received};
use super::error::Fatal;
use super::limits::CONSENSUS_INPUT_BATCH_MAX;
use super::mailbox::{Doorbell, Ringing};
use super::metrics::MetricsHook;
use super::net::delivery::EventBatches;
use super::results::ApplyMsg;
use super::storage_io::{StorageCommand, StorageEvent};
use super::transport::Replier;
use crate::core::Replica;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use rcraft_wire::{ClientResponseBody, Membership, NodeId, NodeStatus, ReadMode, Session};
use std::collections::VecDeque;
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

/// Why the consensus loop ended.
pub(crate) enum Exit {
    /// `shutdown()` was called.
    Shutdown,
    /// A fatal error (storage, the apply thread, a bug between the threads): the node
    /// stopped.
    Failed(Fatal),
}

/// The consensus thread: the handler and the channels it is driven through.
pub(crate) struct Consensus {
    logic: ConsensusLogic,
    replier: Replier,
    storage: Ringing<StorageCommand>,
    apply: Ringing<ApplyCommand>,
    /// Events received while waiting for room in a full storage queue; handled before new
    /// input.
    deferred_storage: VecDeque<StorageEvent>,
    deferred_apply: VecDeque<ApplyProgress>,
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
            logic: ConsensusLogic::new(replica, settings, Instant::now()),
            replier,
            storage,
            apply,
            deferred_storage: VecDeque::new(),
            deferred_apply: VecDeque::new(),
        }
    }

    /// Writes the node's metrics from now on (node/metrics.rs).
    pub(crate) fn set_metrics(&mut self, metrics: MetricsHook) {
        self.logic.set_metrics(metrics);
    }

    /// The thread body.
    pub(crate) fn run(mut self, inbox: Inbox) -> Exit {
        let exit = loop {
            if let Some(exit) = self.turn(&inbox) {
                break exit;
            }
        };
        self.hand_on(&inbox);
        self.logic.stop(&exit);
        self.hand_on(&inbox);
        exit
    }

    /// One turn: wait for input, hand the handler every queued input (each after the ticks
    /// that fell due by then), let it finish the turn, hand its outbox on.
    fn turn(&mut self, inbox: &Inbox) -> Option<Exit> {
        let first = match self.wait_for_input(inbox) {
            Ok(first) => first,
            Err(exit) => return Some(exit),
        };
        match first {
            Some(item) => {
                if let Some(exit) = self.logic.receive(item, Instant::now()) {
                    return Some(exit);
                }
            }
            None => self.logic.tick(Instant::now()),
        }
        if let Some(exit) = self.drain_inputs(inbox) {
            return Some(exit);
        }
        self.logic.finish_turn(Instant::now());
        self.hand_on(inbox);
        self.logic.take_failure().map(Exit::Failed)
    }

    /// Sleeps until one input arrives or the tick deadline passes; not at all while events
    /// kept by `wait_for_room` wait to be handled. `None`: nothing received (the deadline
    /// passed, or the apply thread made room for the backlog).
    fn wait_for_input(&mut self, inbox: &Inbox) -> Result<Option<Received>, Exit> {
        if !self.deferred_storage.is_empty() || !self.deferred_apply.is_empty() {
            return Ok(None);
        }
        loop {
            if let Some(received) = try_receive(inbox)? {
                return Ok(Some(received));
            }
            if !self.logic.outbox().apply.is_empty() && !self.apply.is_full() {
                return Ok(None); // The apply thread made room for the backlog.
            }
            let deadline = self.logic.next_tick();
            if Instant::now() >= deadline {
                return Ok(None);
            }
            inbox.doorbell.wait(Some(deadline));
        }
    }

    /// Hands the handler every input already queued (bounded), so the core acts on them as
    /// one batch.
    fn drain_inputs(&mut self, inbox: &Inbox) -> Option<Exit> {
        let mut taken = 0;
        while taken < CONSENSUS_INPUT_BATCH_MAX {
            let before = taken;
            while let Some(event) = self.deferred_storage.pop_front() {
                self.logic.receive(Received::Storage(event), Instant::now());
            }
            while let Some(progress) = self.deferred_apply.pop_front() {
                self.logic
                    .receive(Received::Apply(progress), Instant::now());
            }
            if let Ok(event) = inbox.storage.try_recv() {
                self.logic.receive(Received::Storage(event), Instant::now());
                taken += 1;
            }
            if let Ok(progress) = inbox.apply.try_recv() {
                self.logic
                    .receive(Received::Apply(progress), Instant::now());
                taken += 1;
            }
            if let Ok(events) = inbox.net.try_recv() {
                taken += events.len().max(1);
                self.logic.receive(Received::Net(events), Instant::now());
            }
            match inbox.api.try_recv() {
                Ok(request) => {
                    if let Some(exit) = self.logic.receive(Received::Api(request), Instant::now()) {
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

    /// Hands the outbox on: every storage command (waiting for room), what of the apply
    /// backlog fits, one ring each for the storage and apply threads if they were given
    /// commands, one network command for all peer messages and one for all answers, and the
    /// members when they changed.
    fn hand_on(&mut self, inbox: &Inbox) {
        let storage = std::mem::take(&mut self.logic.outbox().storage);
        let mut storage_unrung = false;
        for command in storage {
            storage_unrung |= self.send_storage(inbox, command);
        }
        if storage_unrung {
            self.storage.ring();
        }
        if self.hand_over_apply_backlog() {
            self.apply.ring();
        }
        let outbox = self.logic.outbox();
        let peers = std::mem::take(&mut outbox.peers);
        let replies = std::mem::take(&mut outbox.replies);
        let statuses = std::mem::take(&mut outbox.statuses);
        let members = outbox.members.take();
        outbox.self_demotions.clear(); // The handler's observer logged and counted them.
        if !peers.is_empty() {
            self.replier.transport().send_peers(peers);
        }
        if !replies.is_empty() {
            self.replier.send_all(replies);
        }
        for (reply, status) in statuses {
            let _ = reply.try_send(status);
        }
        if let Some(members) = members {
            self.replier.transport().members_changed(members);
        }
    }

    /// Queues a storage command, waiting for room if the queue is full (a backup's read is
    /// refused instead). Events that arrive meanwhile are kept for the next turn so the
    /// storage thread never waits on us. Returns whether it was queued.
    fn send_storage(&mut self, inbox: &Inbox, command: StorageCommand) -> bool {
        let mut command = command;
        loop {
            match self.storage.try_push(command) {
                Ok(()) => return true,
                Err(TrySendError::Full(StorageCommand::ReadSnapshotForClient {
                    reply, ..
                })) => {
                    self.logic
                        .outbox()
                        .replies
                        .push((reply, ClientResponseBody::Overloaded));
                    return false;
                }
                Err(TrySendError::Full(back)) => command = back,
                Err(TrySendError::Disconnected(_)) => {
                    self.logic.fail(Fatal::ThreadStopped("storage"));
                    return false;
                }
            }
            // A full queue: make sure the storage thread is awake to empty it.
            self.storage.ring();
            self.wait_for_room(inbox);
        }
    }

    /// Moves the apply backlog into the apply thread's queue, in order, until it is full (a
    /// snapshot request that finds no room is refused). Returns whether anything was queued.
    fn hand_over_apply_backlog(&mut self) -> bool {
        let mut queued = false;
        while let Some(command) = self.logic.outbox().apply.pop_front() {
            match self.apply.try_push(command) {
                Ok(()) => queued = true,
                Err(TrySendError::Full(ApplyCommand::TakeSnapshot { reply })) => {
                    let refused = (reply, ClientResponseBody::Overloaded);
                    self.logic.outbox().replies.push(refused);
                }
                Err(TrySendError::Full(back)) => {
                    self.logic.outbox().apply.push_front(back);
                    // Whatever is queued must be taken, so that the apply thread rings back.
                    self.apply.ring();
                    return queued;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.logic.outbox().apply.clear();
                    self.logic.fail(Fatal::ThreadStopped("apply"));
                    return queued;
                }
            }
        }
        queued
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
}

/// Takes one queued input, if any: storage and apply progress first, as in a drain.
fn try_receive(inbox: &Inbox) -> Result<Option<Received>, Exit> {
    let stopped = |thread: &'static str| Exit::Failed(Fatal::ThreadStopped(thread));
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
