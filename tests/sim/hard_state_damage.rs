//! Damage to a node's hard-state file (bit flips, unreadable sectors, a synced write the disk
//! dropped), drawn at restarts in the runs that have it; the node must then not vote until it
//! has learned a term above every term it may have voted in (`src/core/vote_recovery.rs`).
//!
//! Owned by one world: a generator of its own (so every other draw of a seed stays as it
//! was) decides which restarting node finds its hard state damaged, and how. One node at a
//! time: while any node's durable hard state is marked `votes_unknown`, no other is damaged
//! (the argument needs fewer than a quorum of voters without their votes at once). And only
//! while every node's configuration (each half of a joint one) has at least
//! `DAMAGE_VOTERS_MIN` voters: the damaged node waits for every voter of its configuration,
//! and of the one before while it does not know the latest committed; a voter removed and
//! shut down meanwhile never answers, so the others must be able to elect a leader without
//! the damaged node, which then tells it the commit (seed 67: a node left the only voter of
//! its configuration waited for ever for the removed one; docs/ARCHITECTURE.md, "Lost votes"). The
//! checker's one-vote-per-term checks, and the disk's, span the damage (the record of every
//! vote saved or granted is kept outside the node), and at every liveness check no node may
//! still wait for its voters' terms (`World::check_repaired`).

use crate::disk::HardStateDamage;
use crate::params::{
    DAMAGE_VOTERS_MIN, HARD_STATE_DAMAGE_PER_RESTART_PER_MILLE, HARD_STATE_DAMAGE_RUNS_PER_MILLE,
    RunParams,
};
use crate::replica::SimCore;
use crate::rng::SimRng;
use crate::world::World;

/// The generator deciding hard-state damage, in the runs that have it (not those running the
/// real storage thread beside the model: it does not model damage).
pub(crate) fn hard_state_damage_rng(seed: u64, params: &RunParams) -> Option<SimRng> {
    let mut rng = SimRng::new(seed ^ 0x4A2D_57A7_E000_0001);
    (!params.real_storage && rng.chance(HARD_STATE_DAMAGE_RUNS_PER_MILLE)).then_some(rng)
}

impl<C: SimCore> World<C> {
    /// At a restart of `node`, in the runs that have it: its hard state may be found damaged.
    pub(crate) fn maybe_damage_hard_state(&mut self, node: usize) {
        let Some(rng) = self.hard_state_damage_rng.as_mut() else {
            return;
        };
        if !rng.chance(HARD_STATE_DAMAGE_PER_RESTART_PER_MILLE) {
            return;
        }
        let kind = match rng.between(0, 2) {
            0 => HardStateDamage::BothSlots,
            1 => HardStateDamage::OneSlot,
            _ => HardStateDamage::LostWriteThenOneSlot,
        };
        let another = (self.nodes.iter().enumerate())
            .any(|(other, n)| other != node && n.disk.votes_unknown());
        let large = |m: &rcraft::wire::Membership| {
            let outgoing = m.voters_outgoing.len();
            m.voters.len() >= DAMAGE_VOTERS_MIN && (outgoing == 0 || outgoing >= DAMAGE_VOTERS_MIN)
        };
        let initial = &self.initial_membership;
        let all_large = (self.nodes.iter()).all(|n| large(&n.disk.latest_membership(initial)));
        if another || !all_large {
            return;
        }
        self.nodes[node].disk.damage_hard_state(kind);
        if self.tracing() {
            self.note(format!("node {node}'s hard state damaged: {kind:?}"));
        }
    }
}
