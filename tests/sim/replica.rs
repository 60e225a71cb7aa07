//! The seam between the simulator and a node's consensus side: the few calls the simulator
//! makes.
//!
//! The simulator is generic over [`SimCore`] so that the world, the disk and the checkers do
//! not depend on the node's internals; the node's own consensus-thread handler
//! (`rcraft::node::testing::SimConsensus`, around `rcraft::core::Replica`) implements it
//! below. One value is owned by one simulated node of one world (one thread).

use rcraft::core::{CoreConfig, Input, LostEntries, RecoveredState};
use rcraft::node::net::NetEvent;
use rcraft::node::testing::{SimConsensus, SimConsensusSettings, SimTurn};
use rcraft::wire::{
    ClientRequestBody, LogIndex, Membership, Message, NodeId, Role, SnapshotMeta, Term,
};

/// What the simulator reads of a replica after every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CoreView {
    /// Follower, candidate, leader or learner.
    pub(crate) role: Role,
    /// Current term.
    pub(crate) term: Term,
    /// The leader it believes in.
    pub(crate) leader: Option<NodeId>,
    /// Highest index known committed.
    pub(crate) commit_index: LogIndex,
    /// Highest index the core knows applied.
    pub(crate) applied_index: LogIndex,
    /// Last index of its log.
    pub(crate) last_index: LogIndex,
    /// Index of the latest snapshot it knows.
    pub(crate) snapshot_index: LogIndex,
    /// The configuration it uses.
    pub(crate) membership: Membership,
    /// The entries its disk lost that it is repairing (meanwhile it votes only for candidates covering them).
    pub(crate) repairing: Option<LostEntries>,
    /// Its hard state was damaged and it still waits for its voters' terms (meanwhile it
    /// neither votes nor campaigns).
    pub(crate) votes_unknown: bool,
}

/// A node's consensus side the simulator can drive: fed inputs with the simulated time,
/// asked to end a turn, observed through its core.
pub(crate) trait SimCore: Sized {
    /// Builds a node's consensus side around a replica recovered with `recovered`; its first
    /// tick falls due at `first_tick_ms`.
    fn start(
        config: CoreConfig,
        recovered: RecoveredState,
        settings: &SimConsensusSettings,
        first_tick_ms: u64,
    ) -> Result<Self, String>;
    /// Feeds the ticks due at `now`.
    fn tick(&mut self, now: u64);
    /// Feeds a peer's message.
    fn message(&mut self, message: Message, now: u64);
    /// Feeds a client's request, named `request_id` in the answers.
    fn client(&mut self, request_id: u64, body: ClientRequestBody, now: u64);
    /// Feeds what the network thread decoded from client connections.
    fn net_events(&mut self, events: Vec<NetEvent>, now: u64);
    /// Feeds what storage or the state machine reported (in the core's terms).
    fn report(&mut self, input: Input, now: u64) -> Result<(), String>;
    /// The apply side restored the received snapshot `meta`.
    fn restored(&mut self, meta: SnapshotMeta, now: u64);
    /// A fault: the core campaigns at once.
    fn campaign(&mut self);
    /// Ends the turn: what it decided, per destination.
    fn finish_turn(&mut self, now: u64) -> Result<SimTurn, String>;
    /// Its current view of itself.
    fn view(&self) -> CoreView;
}

/// The node's own consensus-thread handler (`rcraft::node::testing::SimConsensus`), with
/// the core's invariant assertions after every input (they panic; the runner turns a panic
/// into a failure with its seed).
impl SimCore for SimConsensus {
    fn start(
        config: CoreConfig,
        recovered: RecoveredState,
        settings: &SimConsensusSettings,
        first_tick_ms: u64,
    ) -> Result<Self, String> {
        SimConsensus::start(config, recovered, settings, first_tick_ms)
    }

    fn tick(&mut self, now: u64) {
        SimConsensus::tick(self, now);
        self.replica().check_invariants();
    }

    fn message(&mut self, message: Message, now: u64) {
        SimConsensus::message(self, message, now);
        self.replica().check_invariants();
    }

    fn client(&mut self, request_id: u64, body: ClientRequestBody, now: u64) {
        SimConsensus::client(self, request_id, body, now);
        self.replica().check_invariants();
    }

    fn net_events(&mut self, events: Vec<NetEvent>, now: u64) {
        SimConsensus::net_events(self, events, now);
        self.replica().check_invariants();
    }

    fn report(&mut self, input: Input, now: u64) -> Result<(), String> {
        SimConsensus::report(self, input, now)?;
        self.replica().check_invariants();
        Ok(())
    }

    fn restored(&mut self, meta: SnapshotMeta, now: u64) {
        SimConsensus::restored(self, meta, now);
        self.replica().check_invariants();
    }

    fn campaign(&mut self) {
        SimConsensus::campaign(self);
        self.replica().check_invariants();
    }

    fn finish_turn(&mut self, now: u64) -> Result<SimTurn, String> {
        // Only ticks due since the last input step the core here; the next input checks.
        SimConsensus::finish_turn(self, now)
    }

    fn view(&self) -> CoreView {
        let status = self.replica().status();
        CoreView {
            role: status.role,
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            last_index: status.last_index,
            snapshot_index: status.snapshot_index,
            membership: status.membership,
            repairing: status.repairing,
            votes_unknown: status.votes_unknown.is_some(),
        }
    }
}
