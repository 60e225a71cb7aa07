//! The seam between the simulator and the consensus core: the few calls the simulator makes.
//!
//! The simulator is generic over [`SimCore`] so that the world, the disk and the checkers do
//! not depend on the core's internals; `rcraft::core::Replica` implements it below. One value
//! is owned by one simulated node of one world (one thread).

use rcraft::core::{Action, CoreConfig, Input, LostEntries, RecoveredState, Replica};
use rcraft::wire::{LogIndex, Membership, NodeId, Role, Term};

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

/// A consensus core the simulator can drive.
pub(crate) trait SimCore: Sized {
    /// Builds a replica from its configuration and recovered state.
    fn start(config: CoreConfig, recovered: RecoveredState) -> Result<Self, String>;
    /// Feeds one input.
    fn step(&mut self, input: Input);
    /// Drains the actions queued by the inputs so far, in order.
    fn take_actions(&mut self) -> Vec<Action>;
    /// Its current view of itself.
    fn view(&self) -> CoreView;
}

impl SimCore for Replica {
    fn start(config: CoreConfig, recovered: RecoveredState) -> Result<Self, String> {
        Replica::new(config, recovered).map_err(|e| e.to_string())
    }

    fn step(&mut self, input: Input) {
        Replica::step(self, input);
        // The core's own invariant assertions, after every step (they panic; the runner
        // turns a panic into a failure with its seed).
        self.check_invariants();
    }

    fn take_actions(&mut self) -> Vec<Action> {
        Replica::take_actions(self)
    }

    fn view(&self) -> CoreView {
        let status = self.status();
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
