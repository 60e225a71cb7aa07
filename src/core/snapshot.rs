//! Snapshots: compacting the local log view after the state machine saved a snapshot, sending
//! a snapshot in chunks to a follower that needs compacted entries, and installing one
//! received from the leader (paper §7, thesis §5).
//!
//! Runs on the replica's owner thread. The core never touches snapshot bytes itself: the
//! leader asks the caller to read chunks (`Action::ReadSnapshotChunk`) and sends what comes
//! back; the follower asks the caller to write chunks (`Action::WriteSnapshotChunk`) and
//! answers the leader with the offset storage reports durable. Invariants: one chunk per
//! follower is outstanding at a time, in offset order; a follower resets its log only after
//! storage reports the snapshot verified, durable and restored.

use super::api::Action;
use super::progress::ProgressState;
use super::replica::{Phase, Replica};
use rcraft_wire::{LogIndex, MessageBody, NodeId, SnapshotMeta};

impl Replica {
    /// `Input::SnapshotTaken`: compact the log view behind a durable local snapshot.
    pub(super) fn on_snapshot_taken(&mut self, meta: SnapshotMeta, retain_entries: u64) {
        let usable = meta.index > self.log.snapshot_index()
            && meta.index <= self.apply_requested
            && self.log.term_at(meta.index) == Some(meta.term);
        if !usable {
            return;
        }
        let through = self.log.compact(meta.clone(), retain_entries);
        self.actions.push(Action::CompactLog { through });
        // Transfers of an older snapshot restart with the new one: the old file may go.
        let restart: Vec<NodeId> = match &self.leader_state {
            Some(state) => state
                .progress
                .iter()
                .filter(|(_, pr)| matches!(&pr.state, ProgressState::Snapshot(t) if t.meta != meta))
                .map(|(id, _)| *id)
                .collect(),
            None => return,
        };
        for peer in restart {
            self.start_snapshot_transfer(peer);
        }
    }

    /// Starts sending the current snapshot to `peer` (it needs entries we compacted away).
    pub(super) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let Some(meta) = self.log.snapshot().cloned() else {
            return;
        };
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&peer) else {
            return;
        };
        pr.become_snapshot(meta.clone());
        self.request_chunk(peer, meta, 0);
    }

    fn request_chunk(&mut self, to: NodeId, meta: SnapshotMeta, offset: u64) {
        self.actions.push(Action::ReadSnapshotChunk {
            to,
            meta,
            offset,
            max_bytes: self.config.snapshot_chunk_bytes,
        });
    }

    /// `Input::SnapshotChunkRead`: send the chunk if the transfer still wants it.
    pub(super) fn on_snapshot_chunk_read(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
    ) {
        let Some(state) = self.leader_state.as_ref() else {
            return;
        };
        let wanted = state.progress.get(&to).is_some_and(|pr| {
            matches!(&pr.state, ProgressState::Snapshot(t) if t.meta == meta && t.offset == offset)
        });
        if !wanted {
            return;
        }
        let done = offset + data.len() as u64 >= meta.size_bytes;
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            },
        );
    }

    /// The follower's answer to a chunk: continue at the offset it asks for, or go back to
    /// log replication once it installed the snapshot.
    pub(super) fn on_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        done: bool,
        _rejected: bool,
    ) {
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if done {
            let was_sending = matches!(pr.state, ProgressState::Snapshot(_));
            if !pr.maybe_update(snapshot_index) && !was_sending {
                return; // A duplicate or stale answer; replication already moved on.
            }
            pr.become_probe(snapshot_index.next());
            self.maybe_advance_commit();
            self.send_append(from, true);
            return;
        }
        let ProgressState::Snapshot(transfer) = &mut pr.state else {
            return;
        };
        if transfer.meta.index != snapshot_index {
            return;
        }
        // Accepted or rejected, the follower says where it wants the next chunk to start.
        transfer.offset = next_offset;
        transfer.idle_ticks = 0;
        let meta = transfer.meta.clone();
        self.request_chunk(from, meta, next_offset);
    }

    /// Leader heartbeat: a transfer that heard nothing for an election timeout re-sends its
    /// current chunk (the chunk or its answer was lost).
    pub(super) fn resume_stalled_snapshots(&mut self) {
        let interval = self.config.heartbeat_interval_ticks;
        let patience = self.config.election_timeout_min_ticks;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let mut stalled = Vec::new();
        for (id, pr) in state.progress.iter_mut() {
            if let ProgressState::Snapshot(transfer) = &mut pr.state {
                transfer.idle_ticks += interval;
                if transfer.idle_ticks >= patience {
                    transfer.idle_ticks = 0;
                    stalled.push((*id, transfer.meta.clone(), transfer.offset));
                }
            }
        }
        for (id, meta, offset) in stalled {
            self.request_chunk(id, meta, offset);
        }
    }

    /// Follower side: a chunk from the leader. Already-covered snapshots are acknowledged
    /// at once; stale, duplicate and overtaking chunks are dropped; otherwise storage writes
    /// the chunk and answers `SnapshotChunkWritten`.
    pub(super) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        if self.phase == Phase::Leader {
            return;
        }
        self.follow(from);
        if self.log.term_at(meta.index) == Some(meta.term)
            || meta.index <= self.log.committed_index()
        {
            // We already hold that prefix (paper §7: keep the log after a matching entry).
            self.log.commit_to(meta.index);
            let body = MessageBody::InstallSnapshotResponse {
                snapshot_index: meta.index,
                next_offset: meta.size_bytes,
                done: true,
                rejected: false,
            };
            self.send(from, body);
            return;
        }
        if let Some(current) = &self.incoming_snapshot {
            // Never hand storage a chunk that could replace a newer snapshot, restart a
            // snapshot whose last chunk is being installed, or rewrite bytes already handed
            // over (a duplicated message): each would make storage restore the state machine
            // to a point the core has moved past.
            let stale = meta.index < current.meta.index;
            let duplicate = meta == current.meta && offset < current.handed_through;
            if duplicate && !current.finishing && offset < current.durable_through {
                // The leader resent bytes we hold: our answer was lost. Say where we are.
                let body = MessageBody::InstallSnapshotResponse {
                    snapshot_index: meta.index,
                    next_offset: current.durable_through,
                    done: false,
                    rejected: false,
                };
                self.send(from, body);
                return;
            }
            if stale || current.finishing || duplicate {
                return;
            }
        }
        let continuing = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|current| current.meta == meta);
        if !continuing {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                sender: from,
                handed_through: 0,
                durable_through: 0,
                finishing: false,
            });
        }
        if let Some(current) = self.incoming_snapshot.as_mut() {
            current.sender = from;
            current.handed_through = offset + data.len() as u64;
            current.finishing = done;
        }
        self.actions.push(Action::WriteSnapshotChunk {
            from,
            meta,
            offset,
            data,
            done,
        });
    }

    /// `Input::SnapshotChunkWritten`: answer the leader; when installed, the snapshot replaces
    /// the whole log (storage discarded its log too) and the state machine is at its index.
    pub(super) fn on_snapshot_chunk_written(
        &mut self,
        meta: SnapshotMeta,
        next_offset: u64,
        installed: bool,
        rejected: bool,
    ) {
        if installed && meta.index > self.log.snapshot_index() {
            self.log.restore(meta.clone());
            self.applied = meta.index;
            self.apply_requested = meta.index;
            self.refresh_membership();
        }
        let Some(current) = self.incoming_snapshot.as_mut() else {
            return;
        };
        if current.meta != meta {
            return; // An answer about a transfer we gave up; nobody waits for it.
        }
        let leader = current.sender;
        if installed {
            self.incoming_snapshot = None;
        } else {
            if rejected || next_offset >= meta.size_bytes {
                // The last chunk (or a refused one) is answered: the transfer goes on from
                // where storage says it stands.
                current.finishing = false;
            }
            if rejected {
                current.handed_through = next_offset;
            }
            current.durable_through = next_offset;
        }
        let body = MessageBody::InstallSnapshotResponse {
            snapshot_index: meta.index,
            next_offset,
            done: installed,
            rejected,
        };
        self.send(leader, body);
    }
}

/// A snapshot this follower is receiving.
#[derive(Clone, Debug)]
pub(super) struct IncomingSnapshot {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// The leader sending it; answers go there.
    pub sender: NodeId,
    /// End of the bytes handed to storage so far; chunks below it are duplicates.
    pub handed_through: u64,
    /// End of the bytes storage reported durable. Invariant: `<= handed_through`.
    pub durable_through: u64,
    /// The last chunk is with storage: until it answers, nothing else is written, appends are
    /// refused (the install will reset the log) and this node does not campaign.
    pub finishing: bool,
}

impl Replica {
    /// True while the last chunk of a received snapshot is being installed by storage.
    pub(super) fn snapshot_finishing(&self) -> bool {
        self.incoming_snapshot.as_ref().is_some_and(|s| s.finishing)
    }
}
