//! Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the target's
//! log up to date, then tells it to campaign at once with `TimeoutNow`. The transfer is
//! abandoned after an election timeout so a dead target cannot block the cluster.
//!
//! Runs on the replica's owner thread. Invariant: a transfer exists only while leading, and
//! only towards a voter of the configuration in force.

use super::replica::Replica;
use rcraft_wire::{MessageBody, NodeId};

impl Replica {
    /// `Input::TransferLeadership`.
    pub(super) fn on_transfer_leadership(&mut self, target: NodeId) {
        if target == self.id || !self.membership.is_voter(target) {
            return;
        }
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        if !state.progress.contains_key(&target) {
            return;
        }
        if state.transfer.is_some_and(|(current, _)| current == target) {
            return;
        }
        state.transfer = Some((target, 0));
        state.transfer_grace_ticks = 0;
        if !self.maybe_send_timeout_now(target) {
            self.send_append(target, true);
        }
    }

    /// Sends `TimeoutNow` when `peer` is the transfer target and holds the whole log.
    /// Returns true when sent.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: NodeId) -> bool {
        let last = self.log.last_index();
        let Some(state) = self.leader_state.as_ref() else {
            return false;
        };
        let is_target = state.transfer.is_some_and(|(target, _)| target == peer);
        let caught_up = state
            .progress
            .get(&peer)
            .is_some_and(|pr| pr.match_index == last);
        if is_target && caught_up {
            let mut leaving = false;
            if let Some(state) = self.leader_state.as_mut() {
                state.lease_revoked = true;
                leaving = state.leaving;
            }
            self.send(peer, MessageBody::TimeoutNow);
            if leaving {
                self.become_follower(self.term, None);
            }
            return true;
        }
        false
    }

    /// Leader tick: give up a transfer that took longer than an election timeout (and its
    /// grace, see `LeaderState::transfer_grace_ticks`).
    pub(super) fn tick_transfer(&mut self) {
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let limit =
            (self.config.election_timeout_min_ticks).saturating_add(state.transfer_grace_ticks);
        if let Some((target, elapsed)) = state.transfer {
            state.transfer = (elapsed + 1 < limit).then_some((target, elapsed + 1));
            if state.transfer.is_none() && state.leaving {
                // A leader removed from the voters that could not hand over.
                self.become_follower(self.term, None);
            }
        }
    }
}
