//! Membership changes from outside, as an operator would make them: during chaos, the leader
//! (sometimes another node) is asked to add or remove learners and voters, to promote or
//! demote, to replace voters (which takes a joint configuration), sometimes twice in a row
//! (the second must be refused while the first is uncommitted) and sometimes with an invalid
//! target (refused). Nodes removed by a committed configuration are shut down a moment later,
//! and started again from their old disk when a later change adds them back.
//!
//! Part of [`World`]'s single-threaded event loop. Node slots beyond the initial voters start
//! as spares outside the configuration (see `params.rs`).

use crate::checker::Verdict;
use crate::params::{DAMAGE_VOTERS_MIN, RETIRE_DELAY_MAX_MS};
use crate::replica::SimCore;
use crate::world::{Event, World};
use rcraft::core::Input;
use rcraft::wire::{Membership, NodeId};
use std::collections::BTreeSet;

/// Kinds of change asked for, in the order of their weights in [`CHANGE_WEIGHTS`].
#[derive(Clone, Copy, Debug)]
enum Change {
    AddLearner,
    PromoteLearner,
    AddVoter,
    RemoveVoter,
    DemoteVoter,
    RemoveLearner,
    ReplaceVoter,
    TwoVoters,
    Invalid,
}

const CHANGES: [Change; 9] = [
    Change::AddLearner,
    Change::PromoteLearner,
    Change::AddVoter,
    Change::RemoveVoter,
    Change::DemoteVoter,
    Change::RemoveLearner,
    Change::ReplaceVoter,
    Change::TwoVoters,
    Change::Invalid,
];
const CHANGE_WEIGHTS: [u64; 9] = [4, 4, 2, 3, 1, 1, 3, 1, 1];

/// Chance, per mille, that a second change is asked right after the first, while it is in
/// flight.
const SECOND_CHANGE_PER_MILLE: u64 = 250;
/// Chance, per mille, that a change is asked of a random up node instead of the leader.
const NOT_LEADER_PER_MILLE: u64 = 100;
/// A node that an uncommitted change may add or drop is looked at again after this long.
const RECHECK_MS: u64 = 4 * RETIRE_DELAY_MAX_MS;
/// Fewest voters a removal leaves.
const MIN_VOTERS: usize = 1;

impl<C: SimCore> World<C> {
    /// Asks for one membership change (or two) during chaos, then schedules the next.
    pub(crate) fn on_membership(&mut self) -> Verdict {
        let Some(gap_max) = self.params.membership_gap_max_ms else {
            return Ok(());
        };
        let gap = self.rng.between(10, gap_max);
        self.schedule(self.now + gap, Event::Membership);
        if self.calm {
            return Ok(());
        }
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect();
        let target = match self.believed_leader() {
            Some(leader) if !self.rng.chance(NOT_LEADER_PER_MILLE) => leader,
            Some(_) if !up.is_empty() => self.rng.pick(&up),
            _ => return Ok(()),
        };
        self.ask_change(target)?;
        if self.rng.chance(SECOND_CHANGE_PER_MILLE) {
            self.ask_change(target)?;
        }
        Ok(())
    }

    /// Proposes one random change to `node`'s view of the configuration.
    fn ask_change(&mut self, node: usize) -> Verdict {
        let Some(current) = self.nodes[node].view.as_ref().map(|v| v.membership.clone()) else {
            return Ok(());
        };
        let kind = CHANGES[self.rng.weighted(&CHANGE_WEIGHTS)];
        let Some(target) = self.change_target(kind, &current) else {
            return Ok(());
        };
        if self.tracing() {
            self.note(format!(
                "membership: ask node {node} for {kind:?}: {current:?} -> {target:?}"
            ));
        }
        // Whoever the target adds is started (from its old disk, if it was retired), and shut
        // down again if the change is refused or lost.
        let added: Vec<usize> = target
            .members()
            .difference(&current.members())
            .filter_map(|id| self.index_of(*id))
            .collect();
        for i in added {
            if self.nodes[i].retired {
                self.recall(i);
            } else {
                self.schedule(self.now + RECHECK_MS, Event::Retire { node: i });
            }
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.nodes[node].membership_requests.insert(id);
        self.feed(
            node,
            Input::ProposeMembership {
                id,
                membership: target,
            },
        )
    }

    /// The configuration `kind` turns `current` into; `None` when it does not apply.
    fn change_target(&mut self, kind: Change, current: &Membership) -> Option<Membership> {
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let members = current.members();
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !members.contains(id))
            .collect();
        let voters: Vec<NodeId> = current.voters.iter().copied().collect();
        let learners: Vec<NodeId> = current.learners.iter().copied().collect();
        let non_voters: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !current.voters.contains(id))
            .collect();
        let mut target = Membership {
            voters: current.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners: current.learners.clone(),
        };
        // While a node is held back by damage (its votes unknown, or a lost range), no
        // removal leaves fewer than `DAMAGE_VOTERS_MIN` voters: damage strikes only while
        // every configuration has that many, so that the others can elect the leader that
        // lets the damaged node recover, and shrinking afterwards undid that (SIM_FINDINGS
        // 28, seed 146: {3, 4} with node 3 waiting for a removed voter's term, finding 21).
        // With several damaged, they stay a minority (two damaged: five voters).
        let damaged = self.damaged_besides(usize::MAX);
        let floor = if damaged > 0 {
            DAMAGE_VOTERS_MIN.max(2 * damaged + 1)
        } else {
            MIN_VOTERS
        };
        let can_remove = voters.len() > floor;
        match kind {
            Change::AddLearner if !outsiders.is_empty() => {
                target.learners.insert(self.rng.pick(&outsiders));
            }
            Change::PromoteLearner if !learners.is_empty() => {
                let id = self.rng.pick(&learners);
                target.learners.remove(&id);
                target.voters.insert(id);
            }
            Change::AddVoter if !outsiders.is_empty() => {
                target.voters.insert(self.rng.pick(&outsiders));
            }
            Change::RemoveVoter if can_remove => {
                target.voters.remove(&self.rng.pick(&voters));
            }
            Change::DemoteVoter if can_remove => {
                let id = self.rng.pick(&voters);
                target.voters.remove(&id);
                target.learners.insert(id);
            }
            Change::RemoveLearner if !learners.is_empty() => {
                target.learners.remove(&self.rng.pick(&learners));
            }
            Change::ReplaceVoter if !non_voters.is_empty() => {
                let (out, into) = (self.rng.pick(&voters), self.rng.pick(&non_voters));
                target.voters.remove(&out);
                target.learners.remove(&into);
                target.voters.insert(into);
            }
            Change::TwoVoters if non_voters.len() >= 2 => {
                for id in non_voters.iter().take(2) {
                    target.learners.remove(id);
                    target.voters.insert(*id);
                }
                if can_remove && self.rng.chance(500) {
                    target.voters.remove(&self.rng.pick(&voters));
                }
            }
            Change::Invalid => match self.rng.below(3) {
                0 => target.voters_outgoing = current.voters.clone(),
                1 => target.voters.clear(),
                _ => {
                    let id = self.rng.pick(&voters);
                    target.learners.insert(id);
                }
            },
            _ => return None,
        }
        Some(target)
    }

    /// A membership entry committed: every node outside the latest committed configuration
    /// is shut down a moment later, unless a change has taken it back by then.
    pub(crate) fn schedule_retirements(&mut self) {
        let committed = self
            .checker
            .latest_committed_membership()
            .unwrap_or(&self.initial_membership)
            .members();
        for node in 0..self.nodes.len() {
            if !self.nodes[node].retired && !committed.contains(&self.nodes[node].id) {
                let delay = self.rng.between(0, RETIRE_DELAY_MAX_MS);
                self.schedule(self.now + delay, Event::Retire { node });
            }
        }
    }

    /// Shuts `node` down for good if it is outside the latest committed configuration and
    /// outside the latest configuration of every member of it, in memory and on disk (any of
    /// them may yet be elected with a configuration that needs it). Removed nodes' stale
    /// configurations do not count, or two removed nodes could keep each other running.
    pub(crate) fn on_retire(&mut self, node: usize) -> Verdict {
        let id = self.nodes[node].id;
        let committed = self
            .checker
            .latest_committed_membership()
            .unwrap_or(&self.initial_membership);
        if self.nodes[node].retired || committed.members().contains(&id) {
            return Ok(());
        }
        let committed_members = committed.members();
        let still_wanted = self.nodes.iter().any(|other| {
            other.id != id
                && committed_members.contains(&other.id)
                && (other.log.latest_membership().1.members().contains(&id)
                    || other
                        .disk
                        .latest_membership(&self.initial_membership)
                        .members()
                        .contains(&id))
        });
        if still_wanted {
            // An uncommitted change may still add it, or be overwritten: look again later.
            self.schedule(self.now + RECHECK_MS, Event::Retire { node });
            return Ok(());
        }
        if self.tracing() {
            self.note(format!("retire node {node}"));
        }
        if self.nodes[node].core.is_some() {
            self.crash(node)?;
        }
        self.nodes[node].retired = true;
        Ok(())
    }

    /// Every retired member of `membership` (a new leader's) is started again.
    pub(crate) fn recall_retired_members(&mut self, membership: &Membership) -> Verdict {
        for id in membership.members() {
            if let Some(node) = self.index_of(id) {
                self.recall(node);
            }
        }
        Ok(())
    }

    /// A retired node is no longer retired and restarts now (from its old disk).
    fn recall(&mut self, node: usize) {
        if !self.nodes[node].retired {
            return;
        }
        self.nodes[node].retired = false;
        self.schedule(self.now, Event::Restart { node });
        self.schedule(self.now + RECHECK_MS, Event::Retire { node });
    }
}
