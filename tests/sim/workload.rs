//! What happens to the cluster from outside: client writes and reads, local snapshots, and
//! (during chaos) crashes, restarts, partitions, heals, leadership transfers and forced
//! campaigns, all drawn from the seed.
//!
//! Part of [`World`]'s single-threaded event loop. Faults favour the leader (crash it, cut it
//! off) because the classic Raft bugs need leader changes at awkward moments.

use crate::checker::Verdict;
use crate::params::{CLIENTS, QUIET_END_MS, RUN_MS};
use crate::replica::SimCore;
use crate::world::{Event, World};
use rcraft::core::{Input, ProposeError, RequestId};
use rcraft::wire::{ClientRequestBody, NodeId, ReadMode, Role};
use std::collections::BTreeSet;

/// Fault kinds, in the order of their weights in [`FAULT_WEIGHTS`].
#[derive(Clone, Copy, Debug)]
enum Fault {
    CrashAny,
    CrashLeader,
    IsolateAny,
    IsolateLeader,
    Split,
    OneWay,
    Heal,
    TransferLeadership,
    Campaign,
}

const FAULTS: [Fault; 9] = [
    Fault::CrashAny,
    Fault::CrashLeader,
    Fault::IsolateAny,
    Fault::IsolateLeader,
    Fault::Split,
    Fault::OneWay,
    Fault::Heal,
    Fault::TransferLeadership,
    Fault::Campaign,
];
const FAULT_WEIGHTS: [u64; 9] = [3, 3, 2, 2, 2, 2, 3, 1, 1];

impl<C: SimCore> World<C> {
    /// The node that believes itself leader in the highest term, among the up nodes.
    pub(crate) fn believed_leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.core.is_some())
            .filter_map(|(i, n)| {
                let v = n.view.as_ref()?;
                (v.role == Role::Leader).then_some((v.term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect()
    }

    fn all_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Injects one random fault and schedules the next, while chaos lasts.
    pub(crate) fn on_fault(&mut self) -> Verdict {
        if self.calm {
            return Ok(());
        }
        let gap = self.rng.between(10, self.params.fault_gap_max_ms);
        self.schedule(self.now + gap, Event::Fault);
        let fault = FAULTS[self.rng.weighted(&FAULT_WEIGHTS)];
        let up = self.up_nodes();
        let leader = self.believed_leader();
        let any_up = (!up.is_empty()).then(|| self.rng.pick(&up));
        if self.tracing() {
            self.note(format!("fault {fault:?} (leader {leader:?}, up {up:?})"));
        }
        match fault {
            Fault::CrashAny => any_up.map_or(Ok(()), |n| self.crash_for_a_while(n)),
            Fault::CrashLeader => leader.map_or(Ok(()), |n| self.crash_for_a_while(n)),
            Fault::IsolateAny | Fault::IsolateLeader => {
                let target = if matches!(fault, Fault::IsolateAny) {
                    self.rng.below(self.nodes.len() as u64) as usize
                } else if let Some(l) = leader {
                    l
                } else {
                    return Ok(());
                };
                let ids = self.all_ids();
                self.network.isolate(ids[target], &ids);
                self.client_links_cut(target);
                Ok(())
            }
            Fault::Split => {
                let ids = self.all_ids();
                let side: BTreeSet<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(500))
                    .collect();
                self.network.split(&side, &ids);
                Ok(())
            }
            Fault::OneWay => {
                let ids = self.all_ids();
                let (from, to) = (self.rng.pick(&ids), self.rng.pick(&ids));
                self.network.cut_one_way(from, to);
                Ok(())
            }
            Fault::Heal => {
                self.network.heal();
                Ok(())
            }
            Fault::TransferLeadership => {
                let Some(l) = leader else { return Ok(()) };
                let target = self.rng.pick(&self.all_ids());
                self.feed(l, Input::TransferLeadership { target })
            }
            Fault::Campaign => any_up.map_or(Ok(()), |n| self.feed(n, Input::Campaign)),
        }?;
        if self.tracing() {
            let cuts = self.network.describe_cuts();
            self.note(format!("cut links: {cuts}"));
        }
        Ok(())
    }

    fn crash_for_a_while(&mut self, node: usize) -> Verdict {
        self.crash(node)?;
        let downtime = self.rng.between(10, self.params.downtime_max_ms);
        self.schedule(self.now + downtime, Event::Restart { node });
        Ok(())
    }

    /// A client invokes a write or a read at the believed leader (sometimes at any node, so
    /// followers refuse some writes and linearizable reads, and serve follower reads), then
    /// schedules the next operation.
    pub(crate) fn on_client(&mut self) -> Verdict {
        if self.now + QUIET_END_MS >= RUN_MS {
            // The clients stop before the end, so the replicas can be checked converged.
            return Ok(());
        }
        let gap = self.rng.between(1, self.params.client_gap_max_ms);
        self.schedule(self.now + gap, Event::Client);
        let up = self.up_nodes();
        if up.is_empty() {
            return Ok(());
        }
        let client = self.rng.below(CLIENTS as u64) as usize;
        let target = match self.clients[client].target {
            Some(node) if self.nodes[node].core.is_some() => node,
            _ => {
                let node = match self.believed_leader() {
                    Some(leader) if self.rng.chance(700) => leader,
                    _ => self.rng.pick(&up),
                };
                self.clients[client].target = Some(node);
                node
            }
        };
        if self.rng.chance(self.params.read_per_mille) {
            // Half the reads are follower reads, served where they arrive when that node
            // follows a leader (half of them sent to any node, so followers serve many); a
            // few ask for the lease (refused unless the seed runs lease reads). The checkers
            // hold every mode to the same linearizability.
            let mode = match self.rng.below(10) {
                0..5 => ReadMode::Linearizable,
                5..9 => ReadMode::Follower,
                _ => ReadMode::Lease,
            };
            let target = match mode {
                ReadMode::Follower if self.rng.chance(500) => self.rng.pick(&up),
                _ => target,
            };
            let id = self.next_request_id;
            self.next_request_id += 1;
            self.request_client.insert(id, client);
            let read = self.history.invoke_read(self.now);
            self.nodes[target].reads.insert(id, read);
            if !self.clients_over_wire() {
                return self.feed(target, Input::ReadIndex { id, mode });
            }
            let body = ClientRequestBody::Read {
                query: Vec::new(),
                mode,
            };
            if !self.client_send(client, target, id, body)? {
                // A cap refused the connection: the read was never sent.
                self.nodes[target].reads.remove(&id);
                self.connection_refused(id);
            }
            return Ok(());
        }
        self.client_write(client, target)
    }

    /// A refused request tells its client where the leader is; it goes there next (or
    /// anywhere, without a hint).
    pub(crate) fn redirect_client(&mut self, id: RequestId, error: &ProposeError) {
        let Some(client) = self.request_client.remove(&id) else {
            return;
        };
        self.clients[client].target = match error {
            ProposeError::NotLeader {
                leader: Some(leader),
            } => self.index_of(*leader),
            _ => None,
        };
    }

    /// Leader churn: with the seed's probability, a node that just became leader is crashed
    /// or cut off a moment later, often before its first entry of the term is replicated;
    /// or a young leader is deposed right after it advanced its commit index.
    pub(crate) fn maybe_churn(&mut self, node: usize, after_commit: bool) {
        if self.calm || !self.rng.chance(self.params.churn_per_mille) {
            return;
        }
        let incarnation = self.nodes[node].incarnation;
        // After a commit, the cut is immediate: it also stops the leader's messages still in
        // flight (its next entries, its no-op), which a crash would let through.
        let delay = if after_commit {
            0
        } else {
            self.rng.between(1, 150)
        };
        self.schedule(
            self.now + delay,
            Event::Depose {
                node,
                incarnation,
                cut_off_only: after_commit,
            },
        );
    }

    /// Carries out a churn decision made when `node` became leader.
    pub(crate) fn on_depose(
        &mut self,
        node: usize,
        incarnation: u64,
        cut_off_only: bool,
    ) -> Verdict {
        let n = &self.nodes[node];
        if self.calm || n.core.is_none() || n.incarnation != incarnation {
            return Ok(());
        }
        if self.tracing() {
            self.note(format!("churn: depose node {node}"));
        }
        if !cut_off_only && self.rng.chance(333) {
            return self.crash_for_a_while(node);
        }
        // Cut off for a while: it keeps its log (and its clients' writes) and comes back.
        let ids = self.all_ids();
        self.network.isolate(ids[node], &ids);
        self.client_links_cut(node);
        let away = self.rng.between(20, 300);
        self.schedule(self.now + away, Event::Reconnect { node });
        Ok(())
    }

    /// Some up node snapshots its state machine at its applied index, then schedules the next.
    pub(crate) fn on_snapshot(&mut self) -> Verdict {
        let storm = self.params.snapshot_storm;
        let gap = self.rng.between(50, 500);
        let gap = if storm { gap / 50 } else { gap };
        self.schedule(self.now + gap, Event::Snapshot);
        let up = self.up_nodes();
        if up.is_empty() {
            return Ok(());
        }
        let node = self.rng.pick(&up);
        // In a storm, mostly the leader: it is the one sending snapshots.
        let leader = up.iter().copied().find(|&i| {
            let view = self.nodes[i].view.as_ref();
            view.is_some_and(|v| v.role == rcraft::wire::Role::Leader)
        });
        let node = match leader {
            Some(leader) if storm && self.rng.chance(800) => leader,
            _ => node,
        };
        let n = &mut self.nodes[node];
        let covered = n.disk.snapshot().map(|s| s.meta.index);
        let applied = n.sm.applied_index();
        if applied.0 == 0 || covered >= Some(applied) {
            return Ok(());
        }
        let id = n.id;
        let Some((snapshot, taken)) = n.sm.snapshot().map_err(|e| format!("node {id}: {e}"))?
        else {
            return Ok(());
        };
        let meta = snapshot.meta.clone();
        n.disk
            .save_snapshot(snapshot.clone())
            .map_err(|e| format!("node {id}: {e}"))?;
        n.snapshots.insert(meta.index, snapshot);
        if self.tracing() {
            self.note(format!("node {node} takes a snapshot at {}", meta.index));
        }
        // As the apply handler reported it (with the entries its node keeps behind it).
        self.feed(node, Input::Apply(taken))
    }
}
