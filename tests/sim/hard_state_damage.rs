//! Damage to a node's hard-state file (bit flips, unreadable sectors, a synced write the disk
//! dropped), drawn at restarts in the runs that have it; the node must then not vote until it
//! has learned a term above every term it may have voted in (`src/core/vote_recovery.rs`).
//!
//! Owned by one world: a generator of its own (so every other draw of a seed stays as it
//! was) decides which restarting node finds its hard state damaged, and how. The damaged
//! nodes stay a minority: the nodes whose durable hard state is marked `votes_unknown`, or
//! whose lost log range is not repaired, with the new one, are fewer than half the voters of
//! every configuration (the argument needs fewer than a quorum of voters held back at once,
//! and the others able to elect a leader: `World::voters_needed_for_damage`). And only
//! while every node's configuration (each half of a joint one) has at least
//! `HARD_STATE_DAMAGE_VOTERS_MIN` voters: the damaged node waits for every voter of its configuration,
//! and of the one before while it does not know the latest committed; a voter removed and
//! shut down meanwhile never answers, so the others must be able to elect a leader without
//! the damaged node, which then tells it the commit (seed 67: a node left the only voter of
//! its configuration waited for ever for the removed one; docs/ARCHITECTURE.md, "Lost votes"). The
//! checker's one-vote-per-term checks, and the disk's, span the damage (the record of every
//! vote saved or granted is kept outside the node), and at every liveness check no node may
//! still wait for its voters' terms (`World::check_repaired`).

use crate::disk::HardStateDamage;
use crate::params::{
    HARD_STATE_DAMAGE_PER_RESTART_PER_MILLE, HARD_STATE_DAMAGE_RUNS_PER_MILLE,
    HARD_STATE_DAMAGE_VOTERS_MIN, RunParams,
};
use crate::replica::SimCore;
use crate::rng::SimRng;
use crate::world::World;

/// The generator deciding hard-state damage, in the runs that have it (with the real storage
/// thread beside the model too: its file's bytes are then damaged, `Disk::damage_real_hard_state`).
pub(crate) fn hard_state_damage_rng(seed: u64, _params: &RunParams) -> Option<SimRng> {
    let mut rng = SimRng::new(seed ^ 0x4A2D_57A7_E000_0001);
    rng.chance(HARD_STATE_DAMAGE_RUNS_PER_MILLE).then_some(rng)
}

impl<C: SimCore> World<C> {
    /// True while a node other than `node` is held back by damage of either kind: its votes
    /// unknown (it grants no vote until all its voters answered), or a lost log range not
    /// repaired (it votes only for a candidate covering the range). Each kind alone leaves
    /// the others a quorum to elect a leader, which then lets the damaged node recover; two
    /// damaged voters of four, one of each kind, left two (seed 785, SIM_FINDINGS 27: the
    /// node without its votes waited for a removed voter, finding 21, the one with a lost
    /// range for a candidate holding it). So the damaged nodes, whatever their kinds, stay a
    /// minority of every configuration ([`World::voters_needed_for_damage`]).
    pub(crate) fn another_node_damaged(&self, node: usize) -> bool {
        self.damaged_besides(node) > 0
    }

    /// How many nodes other than `node` are held back by damage of either kind.
    pub(crate) fn damaged_besides(&self, node: usize) -> usize {
        (self.nodes.iter().enumerate())
            .filter(|&(other, n)| {
                other != node
                    && (n.disk.votes_unknown()
                        || n.disk.lost().is_some()
                        || n.view.as_ref().is_some_and(|v| v.repairing.is_some()))
            })
            .count()
    }

    /// The fewest voters every configuration (each half of a joint one) must have for
    /// `node` to be damaged now: at least `min`, and enough that the damaged nodes, `node`
    /// included, are a minority of it (the fault model: damage on any minority of
    /// nodes; the others are then a quorum that can elect the leader which repairs them).
    /// One damaged node needs `min` voters (three by default; the seeds of finding 10 try
    /// pairs with two), two need five.
    pub(crate) fn voters_needed_for_damage(&self, node: usize, min: usize) -> usize {
        match self.damaged_besides(node) {
            0 => min,
            others => min.max(2 * (others + 1) + 1),
        }
    }

    /// At a restart of `node`, in the runs that have it: its hard state may be found damaged.
    /// Where the real storage runs, its file's bytes are damaged as `kind` says, and its
    /// restart must read what the model says is readable.
    pub(crate) fn maybe_damage_hard_state(&mut self, node: usize) -> Result<(), String> {
        let Some(rng) = self.hard_state_damage_rng.as_mut() else {
            return Ok(());
        };
        if !rng.chance(HARD_STATE_DAMAGE_PER_RESTART_PER_MILLE) {
            return Ok(());
        }
        let kind = match rng.between(0, 2) {
            0 => HardStateDamage::BothSlots,
            1 => HardStateDamage::OneSlot,
            _ => HardStateDamage::LostWriteThenOneSlot,
        };
        let real_draw = (self.nodes[node].disk.has_real_storage()).then(|| rng.next_u64());
        let needed = self.voters_needed_for_damage(node, HARD_STATE_DAMAGE_VOTERS_MIN);
        let large = |m: &rcraft::wire::Membership| {
            let outgoing = m.voters_outgoing.len();
            m.voters.len() >= needed && (outgoing == 0 || outgoing >= needed)
        };
        let initial = &self.initial_membership;
        let all_large = (self.nodes.iter()).all(|n| large(&n.disk.latest_membership(initial)));
        if !all_large {
            return Ok(());
        }
        self.damage.hard_states += 1;
        if self.another_node_damaged(node) {
            self.damage.beside_another += 1;
        }
        if let Some(draw) = real_draw {
            self.nodes[node].disk.damage_real_hard_state(kind, draw)?;
            self.damage.real_bytes += 1;
        }
        self.nodes[node].disk.damage_hard_state(kind);
        if self.tracing() {
            self.note(format!("node {node}'s hard state damaged: {kind:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::disk::HardStateDamage;
    use crate::world::{TraceMode, World};
    use rcraft::wire::{Entry, EntryPayload, LogIndex, Term};

    fn world() -> World<rcraft::node::testing::SimConsensus> {
        let quiet = TraceMode {
            keep_lines: 0,
            echo: false,
        };
        World::new(785, true, quiet)
    }

    #[test]
    fn a_node_with_a_lost_range_keeps_the_others_votes_known() {
        let mut world = world();
        let initial = world.initial_membership.clone();
        let disk = &mut world.nodes[2].disk;
        let entry = |i| Entry::new(Term(1), LogIndex(i), EntryPayload::Noop);
        disk.write(1, None, vec![entry(1), entry(2)]);
        disk.sync_all().unwrap();
        assert!(disk.lose_synced_tail(1, &initial, |_| true).is_some());
        assert!(world.another_node_damaged(1));
        assert!(!world.another_node_damaged(2));
    }

    #[test]
    fn a_node_without_its_votes_keeps_the_others_logs_whole() {
        let mut world = world();
        world.nodes[2]
            .disk
            .damage_hard_state(HardStateDamage::OneSlot);
        assert!(world.another_node_damaged(0));
        assert!(!world.another_node_damaged(2));
    }

    fn save_vote(
        world: &mut World<rcraft::node::testing::SimConsensus>,
        node: usize,
        term: u64,
        vote: u64,
    ) {
        let hard_state = rcraft::core::HardState {
            term: Term(term),
            vote: Some(rcraft::wire::NodeId(vote)),
            ..Default::default()
        };
        let disk = &mut world.nodes[node].disk;
        disk.write(1, Some(hard_state), Vec::new());
        disk.sync_all().unwrap();
    }

    #[test]
    fn a_lost_self_vote_nobody_granted_may_be_cast_again_for_another() {
        let mut world = world();
        let own = world.nodes[1].id.0;
        save_vote(&mut world, 1, 5, own);
        world.nodes[1]
            .disk
            .damage_hard_state(HardStateDamage::BothSlots);
        save_vote(&mut world, 1, 5, (own + 1) % 3);
        assert_eq!(world.judge_revotes(1), Ok(()));
    }

    #[test]
    fn a_lost_vote_for_another_or_a_granted_candidacy_counts_twice() {
        let mut world = world();
        let own = world.nodes[1].id;
        let other = rcraft::wire::NodeId((own.0 + 1) % 3);
        save_vote(&mut world, 1, 5, other.0);
        world.nodes[1]
            .disk
            .damage_hard_state(HardStateDamage::BothSlots);
        save_vote(&mut world, 1, 5, (own.0 + 2) % 3);
        assert!(world.judge_revotes(1).is_err());

        let mut world = self::world();
        save_vote(&mut world, 1, 5, own.0);
        world
            .checker
            .observe_vote_granted(other, Term(5), own)
            .unwrap();
        world.nodes[1]
            .disk
            .damage_hard_state(HardStateDamage::BothSlots);
        save_vote(&mut world, 1, 5, other.0);
        assert!(world.judge_revotes(1).is_err());
    }

    #[test]
    fn damaged_nodes_stay_a_minority_of_the_voters() {
        let mut world = world();
        assert_eq!(world.voters_needed_for_damage(0, 3), 3);
        assert_eq!(world.voters_needed_for_damage(0, 2), 2);
        world.nodes[2]
            .disk
            .damage_hard_state(HardStateDamage::BothSlots);
        // A second damaged node needs five voters; the damaged one itself is not counted twice.
        assert_eq!(world.voters_needed_for_damage(0, 3), 5);
        assert_eq!(world.voters_needed_for_damage(2, 3), 3);
        world.nodes[1]
            .disk
            .damage_hard_state(HardStateDamage::OneSlot);
        assert_eq!(world.damaged_besides(0), 2);
        assert_eq!(world.voters_needed_for_damage(0, 3), 7);
    }
}
