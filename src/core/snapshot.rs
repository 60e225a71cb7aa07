//! Snapshots: compacting the local log view after the state machine saved a snapshot, sending
//! a snapshot in chunks to a follower that needs compacted entries, and installing one
//! received from the leader (paper §7, thesis §5).
//!
//! Runs on the replica's owner thread. The core never touches snapshot bytes itself: the
//! leader asks the caller to read chunks (`StorageAction::ReadSnapshotChunk`) and sends what comes
//! back; the follower asks the caller to write chunks (`StorageAction::WriteSnapshotChunk`) and
//! answers the leader with the offset storage reports durable. Invariants: at most
//! `snapshot_chunks_in_flight` chunks per follower are outstanding, requested in offset
//! order and within the leader-wide `snapshot_bytes_per_tick` budget; a follower hands
//! storage only chunks that continue exactly where the previous one ended (a gap is refused
//! with the offset to resend from, a duplicate dropped or answered); a follower resets its
//! log only after storage reports the snapshot verified, durable and installed.

use super::api::{Action, StorageAction};
use super::progress::{ProgressState, SnapshotTransfer};
use super::replica::{Phase, Replica};
use rcraft_wire::{LogIndex, MessageBody, NodeId, SnapshotMeta};

impl Replica {
    /// `ApplyOutcome::SnapshotTaken`: compact the log view behind a durable local snapshot. A
    /// snapshot written again at the current one's index and term (its file was damaged) whose
    /// bytes differ (a state machine need not serialize deterministically) replaces it too, so
    /// transfers go on with what the file now holds.
    pub(super) fn on_snapshot_taken(&mut self, meta: SnapshotMeta, retain_entries: u64) {
        let rewritten = self
            .log
            .snapshot()
            .is_some_and(|s| s.index == meta.index && s.term == meta.term && *s != meta);
        let usable = (meta.index > self.log.snapshot_index() || rewritten)
            && meta.index <= self.apply_requested
            && self.log.term_at(meta.index) == Some(meta.term);
        if !usable {
            return;
        }
        let through = self.log.compact(meta.clone(), retain_entries);
        self.actions
            .push(Action::Storage(StorageAction::CompactLog { through }));
        // A transfer under way goes on with the snapshot it started with, whose file storage
        // keeps (`StorageAction::KeepSnapshots`): restarting every transfer from offset 0 with each
        // new snapshot meant a follower never finished one while snapshots came faster than
        // a transfer (issue 14, finding 15 of docs/SIM_FINDINGS.md). Only a transfer whose
        // file was written again under the same name with other bytes, or found damaged,
        // starts over: the bytes it was sending are gone, or storage sends no more of them.
        let point = (meta.index, meta.term);
        let damaged = self
            .damaged_snapshot
            .take()
            .filter(|damaged| *damaged != point);
        self.restart_transfers(|t| {
            let at = (t.meta.index, t.meta.term);
            (at == point && t.meta != meta) || Some(at) == damaged
        });
    }

    /// `StorageOutcome::SnapshotDamaged`: transfers of that snapshot start over with the current one
    /// if it is another; otherwise when its replacement is taken.
    pub(super) fn on_snapshot_damaged(&mut self, index: LogIndex, term: rcraft_wire::Term) {
        let current = self.log.snapshot().map(|s| (s.index, s.term));
        if current == Some((index, term)) {
            self.damaged_snapshot = Some((index, term));
            return;
        }
        self.restart_transfers(|t| (t.meta.index, t.meta.term) == (index, term));
    }

    /// Starts the transfers `wanted` picks over with the current snapshot.
    fn restart_transfers(&mut self, wanted: impl Fn(&SnapshotTransfer) -> bool) {
        let restart: Vec<NodeId> = match &self.leader_state {
            Some(state) => state
                .progress
                .iter()
                .filter(|(_, pr)| matches!(&pr.state, ProgressState::Snapshot(t) if wanted(t)))
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
        pr.become_snapshot(meta);
        self.fill_snapshot_windows();
    }

    /// Most snapshot bytes the leader's budget holds: a tick's worth plus one chunk. The
    /// leftover of a tick that is smaller than a chunk carries over, so the configured rate is
    /// what moves (capping at one tick's worth lost that leftover every tick and delivered
    /// about half the rate when a tick's worth was under two chunks); and a budget below the
    /// chunk size still lets a chunk through now and then.
    pub(super) fn snapshot_budget_cap(&self) -> u64 {
        self.config
            .snapshot_bytes_per_tick
            .saturating_add(self.config.snapshot_chunk_bytes)
    }

    /// Leader tick: the shared snapshot budget grows by a tick's worth, and transfers that
    /// were waiting for it go on.
    pub(super) fn refill_snapshot_budget(&mut self) {
        if self.config.snapshot_bytes_per_tick == 0 {
            return;
        }
        let cap = self.snapshot_budget_cap();
        let per_tick = self.config.snapshot_bytes_per_tick;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        state.snapshot_budget = state.snapshot_budget.saturating_add(per_tick).min(cap);
        self.fill_snapshot_windows();
    }

    /// Requests chunks for every transfer whose window has room, one chunk per transfer per
    /// round, each round starting after the transfer served last (so transfers share the
    /// budget fairly even when it pays for one chunk at a time), until windows are full, the
    /// snapshots are all requested, or the budget is spent.
    fn fill_snapshot_windows(&mut self) {
        let chunk = self.config.snapshot_chunk_bytes;
        let window = chunk.saturating_mul(self.config.snapshot_chunks_in_flight);
        let limited = self.config.snapshot_bytes_per_tick != 0;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let ids: Vec<NodeId> = state.progress.keys().copied().collect();
        let mut requests = Vec::new();
        loop {
            let mut progressed = false;
            let first = state
                .snapshot_turn
                .and_then(|last| ids.iter().position(|id| *id > last))
                .unwrap_or(0);
            for id in ids[first..].iter().chain(&ids[..first]) {
                let Some(pr) = state.progress.get_mut(id) else {
                    continue;
                };
                let ProgressState::Snapshot(transfer) = &mut pr.state else {
                    continue;
                };
                let size = transfer.meta.size_bytes;
                let start = transfer.requested_through;
                // An empty snapshot still takes one (empty, final) chunk.
                let wanted = start < size || (start == 0 && size == 0);
                if !wanted || start - transfer.offset >= window {
                    continue;
                }
                let cost = chunk.min(size - start);
                if limited && state.snapshot_budget < cost {
                    continue;
                }
                if limited {
                    state.snapshot_budget -= cost;
                }
                if start == transfer.offset {
                    // Nothing was outstanding: the wait for an answer starts now. Counting the
                    // wait for the budget too restarted the window in the very tick that
                    // requested a chunk, which was then dropped when read, its cost wasted
                    // (SIM_FINDINGS 19).
                    transfer.idle_ticks = 0;
                }
                transfer.requested_through = start + chunk;
                requests.push((*id, transfer.meta.clone(), start));
                state.snapshot_turn = Some(*id);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        for (to, meta, offset) in requests {
            self.actions
                .push(Action::Storage(StorageAction::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    max_bytes: chunk,
                }));
        }
    }

    /// `StorageOutcome::SnapshotChunkRead`: send the chunk if the transfer still wants it.
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
            matches!(&pr.state, ProgressState::Snapshot(t)
                if t.meta == meta && t.offset <= offset && offset < t.requested_through)
        });
        if !wanted {
            return;
        }
        let done = offset + data.len() as u64 >= meta.size_bytes;
        let chunk_crc = crc32c::crc32c(&data);
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                chunk_crc,
                done,
            },
        );
    }

    /// The follower's answer to a chunk: slide the window past what it holds (or, if it
    /// refused a chunk, restart the window where it asks), or go back to log replication
    /// once it installed the snapshot.
    pub(super) fn on_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        done: bool,
        rejected: bool,
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
            let newer_sent = matches!(&pr.state,
                ProgressState::Snapshot(t) if t.meta.index > snapshot_index);
            let news = pr.maybe_update(snapshot_index);
            if !news && !was_sending {
                return; // A duplicate or stale answer; replication already moved on.
            }
            if newer_sent && (!news || snapshot_index.next() < self.log.first_index()) {
                // An answer about an older snapshot while a newer one goes to the follower:
                // a duplicate or stale one, or news (the follower got the old one elsewhere,
                // from an earlier leader say) while the log after the old one is gone.
                // Probing would restart the newer transfer from offset 0, a window re-read
                // and re-sent per such answer (SIM_FINDINGS 48); news moves the match point
                // and the transfer goes on where it stands.
                if news {
                    self.maybe_advance_commit();
                }
                return;
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
        let size = transfer.meta.size_bytes;
        if next_offset > size {
            // About other bytes of the same snapshot point (one rewritten after damage by a
            // state machine whose snapshots vary in size): not this transfer.
            return;
        }
        // Only the final chunk makes the follower install, so an answer that every byte is
        // held without the install (the final chunk or its answer was lost, or the answer is
        // about other bytes of this point) leaves the last byte to be sent again, as a final
        // chunk; a follower missing bytes before it refuses that chunk with its real offset.
        let next_offset = next_offset.min(size.saturating_sub(1));
        if rejected {
            // A chunk did not fit where the follower stands (one was lost, or it restarted):
            // everything in flight after `next_offset` is wasted; resend from there.
            transfer.offset = next_offset;
            transfer.requested_through = next_offset;
        } else {
            // Answers to pipelined chunks may come out of order; the largest one counts.
            transfer.offset = transfer.offset.max(next_offset);
            transfer.requested_through = transfer.requested_through.max(transfer.offset);
        }
        transfer.idle_ticks = 0;
        self.fill_snapshot_windows();
    }

    /// Leader heartbeat: a transfer that heard nothing for an election timeout since it asked
    /// for a chunk restarts its window at the last acknowledged offset (chunks or their
    /// answers were lost).
    pub(super) fn resume_stalled_snapshots(&mut self) {
        let interval = self.config.heartbeat_interval_ticks;
        let patience = self.config.election_timeout_min_ticks;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let mut any = false;
        for pr in state.progress.values_mut() {
            if let ProgressState::Snapshot(transfer) = &mut pr.state {
                if transfer.requested_through <= transfer.offset {
                    // Nothing outstanding (waiting for the budget): nothing to lose.
                    transfer.idle_ticks = 0;
                    continue;
                }
                transfer.idle_ticks += interval;
                if transfer.idle_ticks >= patience {
                    transfer.idle_ticks = 0;
                    transfer.requested_through = transfer.offset;
                    any = true;
                }
            }
        }
        if any {
            self.fill_snapshot_windows();
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
        chunk_crc: u32,
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
            // Storage holds every byte but has not installed them (a restart between the last
            // chunk's sync and the install, or a resumed complete partial file): the final
            // chunk goes to storage even though its bytes are held, since only a final chunk
            // makes storage finish. The leader resends it for an answer saying so.
            let final_of_complete = done
                && meta == current.meta
                && !current.finishing
                && current.durable_through >= meta.size_bytes;
            let duplicate =
                meta == current.meta && offset < current.handed_through && !final_of_complete;
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
        if let Some(current) = self.incoming_snapshot.as_mut() {
            if current.meta == meta && offset > current.handed_through {
                // A chunk overtook a lost one; storage would refuse it. Ask the leader once
                // per gap and round to resend from the end of what we hold (it restarts its
                // window). A chunk at or before the last refused one starts a new round: the
                // leader did not hear the last answer (lost, or it restarted its window).
                let new_round = current.last_refused.is_none_or(|last| offset <= last);
                current.last_refused = Some(offset);
                if current.gap_reported_at != Some(current.handed_through) || new_round {
                    current.gap_reported_at = Some(current.handed_through);
                    let body = MessageBody::InstallSnapshotResponse {
                        snapshot_index: meta.index,
                        next_offset: current.handed_through,
                        done: false,
                        rejected: true,
                    };
                    self.send(from, body);
                }
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
                gap_reported_at: None,
                last_refused: None,
            });
        }
        if let Some(current) = self.incoming_snapshot.as_mut() {
            current.sender = from;
            current.handed_through = offset + data.len() as u64;
            current.finishing = done;
            current.gap_reported_at = None;
            current.last_refused = None;
        }
        // Storage carries out its commands in order, and the final chunk installs the snapshot
        // (restarting the log after it): everything accepted before this chunk, entries and a
        // new term alike, must reach storage first (issue 14, finding 1).
        #[cfg(not(feature = "bug-chunk-before-persist"))]
        self.flush_persist();
        self.chunk_writes_unanswered += 1;
        self.actions
            .push(Action::Storage(StorageAction::WriteSnapshotChunk {
                from,
                meta,
                offset,
                data,
                chunk_crc,
                done,
            }));
    }

    /// `StorageOutcome::SnapshotInstalled`: storage verified the received snapshot, made it current and
    /// restarted its log after it. A snapshot newer than the log's replaces the whole log
    /// (storage discarded its log too) and the state machine is asked to restore it
    /// (`Action::RestoreSnapshot`, ordered before any later `Action::Apply`); the leader is
    /// told the transfer is done.
    pub(super) fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        // The install answers the final chunk.
        self.chunk_writes_unanswered = self.chunk_writes_unanswered.saturating_sub(1);
        if meta.index > self.log.snapshot_index() {
            self.ahead.forget();
            self.log.restore(meta.clone());
            self.applied = meta.index;
            self.apply_requested = meta.index;
            self.refresh_membership();
            self.actions
                .push(Action::RestoreSnapshot { meta: meta.clone() });
        }
        let Some(current) = self.incoming_snapshot.as_ref() else {
            return;
        };
        if current.meta != meta {
            return; // An answer about a transfer we gave up; nobody waits for it.
        }
        let leader = current.sender;
        self.incoming_snapshot = None;
        let body = MessageBody::InstallSnapshotResponse {
            snapshot_index: meta.index,
            next_offset: meta.size_bytes,
            done: true,
            rejected: false,
        };
        self.send(leader, body);
    }

    /// `StorageOutcome::SnapshotChunkWritten`: answer the leader with the offset storage holds durable.
    pub(super) fn on_snapshot_chunk_written(
        &mut self,
        meta: SnapshotMeta,
        next_offset: u64,
        rejected: bool,
    ) {
        self.chunk_writes_unanswered = self.chunk_writes_unanswered.saturating_sub(1);
        let Some(current) = self.incoming_snapshot.as_mut() else {
            return;
        };
        if current.meta != meta {
            return; // An answer about a transfer we gave up; nobody waits for it.
        }
        let leader = current.sender;
        // Storage answers chunks in the order it got them and the final chunk went last:
        // while it is with storage, an answer that leaves chunk writes unanswered is about
        // an earlier chunk and cannot end the wait. A refusal here (of a chunk from before
        // the leader rewound) says nothing about the final chunk, which may yet install;
        // restarting the transfer on it handed storage a second copy of the snapshot after
        // the install (SIM_FINDINGS 18). The final chunk's own answer comes next.
        let earlier = current.finishing && self.chunk_writes_unanswered > 0;
        if earlier && rejected {
            return;
        }
        if !earlier && (rejected || next_offset >= meta.size_bytes) {
            // The last chunk (or a refused one) is answered: the transfer goes on from
            // where storage says it stands.
            current.finishing = false;
        }
        current.durable_through = next_offset;
        // Storage may already hold more than was handed to it in this transfer (a
        // partial file from before a restart or from another leader): chunks below
        // `next_offset` are duplicates, the next one continues there.
        current.handed_through = current.handed_through.max(next_offset);
        if rejected {
            current.handed_through = next_offset;
            // The rest of a pipelined window is refused too: ask the leader once.
            if current.gap_reported_at == Some(next_offset) {
                return;
            }
            current.gap_reported_at = Some(next_offset);
        }
        let body = MessageBody::InstallSnapshotResponse {
            snapshot_index: meta.index,
            next_offset,
            done: false,
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
    /// `handed_through` when a chunk beyond it was last refused, so the leader is asked to
    /// rewind once per gap rather than once per overtaking chunk.
    pub gap_reported_at: Option<u64>,
    /// Offset of the last chunk refused for leaving a gap, since the last one handed over.
    pub last_refused: Option<u64>,
}

impl Replica {
    /// Tells storage which snapshot files are in use (the current snapshot and those being
    /// sent) when that changed since it was last told; last among the drain's actions, so
    /// reads of a snapshot released in this drain come before its removal.
    pub(super) fn keep_snapshots_in_use(&mut self) {
        let mut in_use: Vec<SnapshotMeta> = self
            .leader_state
            .iter()
            .flat_map(|state| state.progress.values())
            .filter_map(|pr| match &pr.state {
                ProgressState::Snapshot(transfer) => Some(transfer.meta.clone()),
                _ => None,
            })
            .chain(self.log.snapshot().cloned())
            .collect();
        in_use.sort_by_key(|meta| (meta.index, meta.term));
        in_use.dedup();
        if in_use != self.snapshots_kept {
            self.snapshots_kept = in_use.clone();
            self.actions
                .push(Action::Storage(StorageAction::KeepSnapshots { in_use }));
        }
    }

    /// True while the last chunk of a received snapshot is being installed by storage.
    pub(super) fn snapshot_finishing(&self) -> bool {
        self.incoming_snapshot.as_ref().is_some_and(|s| s.finishing)
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{ApplyOutcome, CoreConfig, Input, RecoveredState, StorageOutcome};
    use super::*;
    use rcraft_wire::{Membership, Message, Term};

    use super::super::testing::{from_peer_in, step_confirming as step};

    fn chunk(meta: &SnapshotMeta, offset: u64) -> Input {
        chunk_of(meta, offset, 2, false)
    }

    /// Node 1's chunk of `len` bytes of `meta` at `offset`, final when `done`.
    fn chunk_of(meta: &SnapshotMeta, offset: u64, len: usize, done: bool) -> Input {
        Input::Message(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                meta: meta.clone(),
                offset,
                data: vec![7; len],
                chunk_crc: crc32c::crc32c(&vec![7; len]),
                done,
            },
        })
    }

    fn written_offsets(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageAction::WriteSnapshotChunk { offset, .. }) => Some(*offset),
                _ => None,
            })
            .collect()
    }

    fn rejections(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    body:
                        MessageBody::InstallSnapshotResponse {
                            next_offset,
                            rejected: true,
                            ..
                        },
                    ..
                }) => Some(*next_offset),
                _ => None,
            })
            .collect()
    }

    /// Node 2 of a fresh 3-node cluster, and a 10-byte snapshot at index 9 to send it.
    fn follower_and_a_10_byte_snapshot() -> (Replica, SnapshotMeta) {
        let voters = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let recovered = RecoveredState {
            initial_membership: voters.clone(),
            lost: None,
            ..RecoveredState::default()
        };
        let follower = Replica::new(CoreConfig::new(NodeId(2), 5), recovered).unwrap();
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(1),
            membership: voters,
            membership_entry: None,
            size_bytes: 10,
            checksum: 0,
        };
        (follower, meta)
    }

    #[test]
    fn follower_holding_every_byte_hands_the_final_chunk_to_storage() {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        let chunk_at = |offset, len, done| chunk_of(&meta, offset, len, done);
        // Storage answers that it holds all 10 bytes without installing them (it resumed a
        // complete partial file after a restart).
        let actions = step(&mut follower, chunk_at(0, 4, false));
        assert_eq!(written_offsets(&actions), [0]);
        let held = Input::Storage(StorageOutcome::SnapshotChunkWritten {
            meta: meta.clone(),
            next_offset: 10,
            rejected: false,
        });
        step(&mut follower, held);
        // The leader resends the last byte as the final chunk: storage gets it, to finish.
        let actions = step(&mut follower, chunk_at(9, 1, true));
        assert_eq!(written_offsets(&actions), [9]);
        let done_flags = actions.iter().filter_map(|a| match a {
            Action::Storage(StorageAction::WriteSnapshotChunk { done, .. }) => Some(*done),
            _ => None,
        });
        assert!(done_flags.into_iter().all(|done| done));
        // A second copy while storage finishes is dropped.
        assert!(written_offsets(&step(&mut follower, chunk_at(9, 1, true))).is_empty());
    }

    /// SIM_FINDINGS 18 (seed 3996): a refusal of a chunk handed over before the final one
    /// arrived while the final chunk was still with storage. The follower took it as the
    /// final chunk's answer and handed storage the whole snapshot again, which storage then
    /// got after it had installed the first copy.
    #[test]
    fn a_refusal_of_an_earlier_chunk_does_not_restart_a_transfer_whose_final_chunk_is_with_storage()
    {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        let answer = |next_offset, rejected| {
            Input::Storage(StorageOutcome::SnapshotChunkWritten {
                meta: meta.clone(),
                next_offset,
                rejected,
            })
        };
        // Chunk 0 (which storage will refuse: say its checksum failed) and the final chunk
        // go to storage before either is answered.
        assert_eq!(
            written_offsets(&step(&mut follower, chunk_of(&meta, 0, 4, false))),
            [0]
        );
        assert_eq!(
            written_offsets(&step(&mut follower, chunk_of(&meta, 4, 6, true))),
            [4]
        );
        // Chunk 0's refusal: the final chunk's fate is not known yet, so nothing is resent
        // to storage, and the leader's copies are dropped.
        let actions = step(&mut follower, answer(0, true));
        assert!(rejections(&actions).is_empty(), "{actions:?}");
        assert!(written_offsets(&step(&mut follower, chunk_of(&meta, 0, 4, false))).is_empty());
        assert!(written_offsets(&step(&mut follower, chunk_of(&meta, 4, 6, true))).is_empty());
        // The final chunk's refusal (it left a gap) restarts the transfer once.
        assert_eq!(rejections(&step(&mut follower, answer(0, true))), [0]);
        assert_eq!(
            written_offsets(&step(&mut follower, chunk_of(&meta, 0, 4, false))),
            [0]
        );
        assert_eq!(
            written_offsets(&step(&mut follower, chunk_of(&meta, 4, 6, true))),
            [4]
        );
        step(&mut follower, answer(4, false));
        let installed = step(
            &mut follower,
            Input::Storage(StorageOutcome::SnapshotInstalled { meta: meta.clone() }),
        );
        assert_eq!(follower.log.snapshot_index(), meta.index);
        let restores: Vec<&SnapshotMeta> = installed
            .iter()
            .filter_map(|a| match a {
                Action::RestoreSnapshot { meta } => Some(meta),
                _ => None,
            })
            .collect();
        assert_eq!(restores, [&meta], "{installed:?}");
        assert!(follower.incoming_snapshot.is_none());
    }

    #[test]
    fn follower_refuses_a_gap_once_and_takes_the_resent_chunk() {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        // Pipelined chunks 0 and 2 are handed to storage in order.
        assert_eq!(written_offsets(&step(&mut follower, chunk(&meta, 0))), [0]);
        assert_eq!(written_offsets(&step(&mut follower, chunk(&meta, 2))), [2]);
        // Chunk 4 was lost: 6 and 8 overtake it. The first is refused with the offset to
        // resend from, the second silently; neither reaches storage.
        let actions = step(&mut follower, chunk(&meta, 6));
        assert!(written_offsets(&actions).is_empty());
        assert_eq!(rejections(&actions), [4]);
        let actions = step(&mut follower, chunk(&meta, 8));
        assert!(written_offsets(&actions).is_empty());
        assert!(rejections(&actions).is_empty());
        // The answer was lost: the leader's next round repeats 6 and 8, refused once again.
        assert_eq!(rejections(&step(&mut follower, chunk(&meta, 6))), [4]);
        assert!(rejections(&step(&mut follower, chunk(&meta, 8))).is_empty());
        // The leader rewinds: 4 continues the file, a repeated 2 is not written again.
        assert_eq!(written_offsets(&step(&mut follower, chunk(&meta, 4))), [4]);
        assert!(written_offsets(&step(&mut follower, chunk(&meta, 2))).is_empty());
    }

    /// Issue 14, finding 1: entries accepted in the same step as a snapshot's final chunk must
    /// reach storage before the chunk, or storage installs the snapshot (restarting its log
    /// after it) and is then asked to truncate below the new start. A new term must be durable
    /// before the install too.
    #[test]
    fn entries_accepted_before_a_final_chunk_are_persisted_before_it() {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        let append = Input::Message(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendRequest {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![rcraft_wire::Entry::new(
                    Term(1),
                    LogIndex(1),
                    rcraft_wire::EntryPayload::Noop,
                )],
                leader_commit: LogIndex(0),
            },
        });
        follower.step(append);
        follower.step(chunk_of(&meta, 0, 10, true));
        let actions = follower.take_actions();
        let position = |wanted: fn(&Action) -> bool| actions.iter().position(wanted);
        let persist =
            position(|a| matches!(a, Action::Storage(StorageAction::Persist { entries, .. }) if !entries.is_empty()))
                .expect("the accepted entry is persisted");
        let write = position(|a| {
            matches!(
                a,
                Action::Storage(StorageAction::WriteSnapshotChunk { done: true, .. })
            )
        })
        .expect("the final chunk goes to storage");
        assert!(
            persist < write,
            "persist after the final chunk: {actions:?}"
        );
        let Action::Storage(StorageAction::Persist { hard_state, .. }) = &actions[persist] else {
            unreachable!()
        };
        assert_eq!(hard_state.as_ref().map(|h| h.term), Some(Term(1)));
    }

    #[test]
    fn nothing_is_applied_while_a_received_snapshot_is_installed() {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        let from_leader = |body| {
            Input::Message(Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(1),
                body,
            })
        };
        let entry = rcraft_wire::Entry::new(Term(1), LogIndex(1), rcraft_wire::EntryPayload::Noop);
        step(
            &mut follower,
            from_leader(MessageBody::AppendRequest {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![entry],
                leader_commit: LogIndex(0),
            }),
        );
        step(&mut follower, chunk_of(&meta, 0, 10, true));
        // Storage is installing the snapshot (discarding the log, restoring the state
        // machine): a commit index learned now must not hand entry 1 to the state machine,
        // which would apply it after the restore.
        let heartbeat = MessageBody::Heartbeat {
            leader_commit: LogIndex(1),
            read_context: 0,
        };
        let actions = step(&mut follower, from_leader(heartbeat));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Apply { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn follower_continues_after_bytes_storage_already_held() {
        let (mut follower, meta) = follower_and_a_10_byte_snapshot();
        // A new leader starts at 0, but storage kept a partial file through offset 6.
        assert_eq!(written_offsets(&step(&mut follower, chunk(&meta, 0))), [0]);
        let held = Input::Storage(StorageOutcome::SnapshotChunkWritten {
            meta: meta.clone(),
            next_offset: 6,
            rejected: false,
        });
        step(&mut follower, held);
        // The leader continues at 6: that is no gap. A late chunk 2 is answered, not written.
        assert_eq!(written_offsets(&step(&mut follower, chunk(&meta, 6))), [6]);
        assert!(written_offsets(&step(&mut follower, chunk(&meta, 2))).is_empty());
    }

    fn read_offsets(actions: &[Action]) -> Vec<(u64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageAction::ReadSnapshotChunk { to, offset, .. }) => {
                    Some((to.0, *offset))
                }
                _ => None,
            })
            .collect()
    }

    fn from_peer(from: u64, body: MessageBody) -> Input {
        from_peer_in(2, from, body)
    }

    /// A leader of nodes 1-3 with a 100-byte snapshot in 10-byte chunks, two in flight, that
    /// found node 2 behind it and asked for its first two chunks.
    fn leader_sending_to_node_2() -> Replica {
        let (mut leader, behind) = leader_with_snapshot(&[1, 2, 3], 100, |config| {
            config.snapshot_chunk_bytes = 10;
            config.snapshot_chunks_in_flight = 2;
        });
        assert_eq!(
            read_offsets(&step(&mut leader, behind(2))),
            [(2, 0), (2, 10)]
        );
        leader
    }

    /// Node `from`'s answer to a chunk of the snapshot at index 9 (not the final one).
    fn chunk_answer(from: u64, next_offset: u64, rejected: bool) -> Input {
        from_peer(
            from,
            MessageBody::InstallSnapshotResponse {
                snapshot_index: LogIndex(9),
                next_offset,
                done: false,
                rejected,
            },
        )
    }

    /// Node 2's answer, not a refusal, to the snapshot at `index`: durable through
    /// `next_offset`, and installed when `done`.
    fn node_2_answer(index: LogIndex, next_offset: u64, done: bool) -> Input {
        from_peer(
            2,
            MessageBody::InstallSnapshotResponse {
                snapshot_index: index,
                next_offset,
                done,
                rejected: false,
            },
        )
    }

    /// A leader (node 1, elected with node 2's vote) of `voters` holding only a snapshot of
    /// `size_bytes` at index 9, configured by `configure`; and a follower answer saying it is
    /// behind that snapshot.
    fn leader_with_snapshot(
        voters: &[u64],
        size_bytes: u64,
        configure: impl FnOnce(&mut CoreConfig),
    ) -> (Replica, impl Fn(u64) -> Input) {
        let voters = Membership::with_voters(voters.iter().copied().map(NodeId));
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(1),
            membership: voters.clone(),
            membership_entry: None,
            size_bytes,
            checksum: 0,
        };
        let recovered = RecoveredState {
            snapshot: Some(meta),
            hard_state: super::super::api::HardState {
                term: Term(1),
                ..Default::default()
            },
            initial_membership: voters,
            lost: None,
            ..RecoveredState::default()
        };
        let mut config = CoreConfig::new(NodeId(1), 5);
        config.pre_vote = false;
        configure(&mut config);
        let mut leader = Replica::new(config, recovered).unwrap();
        step(&mut leader, Input::Campaign);
        let vote = MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        };
        step(&mut leader, from_peer(2, vote));
        let behind = |from| {
            from_peer(
                from,
                MessageBody::AppendResponse {
                    success: false,
                    match_index: LogIndex(9),
                    conflict: Some(rcraft_wire::ConflictHint {
                        term: None,
                        first_index: LogIndex(1),
                    }),
                },
            )
        };
        (leader, behind)
    }

    #[test]
    fn leader_windows_and_byte_budget_bound_chunk_requests() {
        let (mut leader, behind) = leader_with_snapshot(&[1, 2, 3], 100, |config| {
            config.snapshot_chunk_bytes = 10;
            config.snapshot_chunks_in_flight = 2;
            config.snapshot_bytes_per_tick = 25;
        });
        // The budget starts at a tick's worth (25 bytes): a window of two chunks for node 2...
        assert_eq!(
            read_offsets(&step(&mut leader, behind(2))),
            [(2, 0), (2, 10)]
        );
        // ...leaves 5 bytes, less than a chunk, for node 3.
        assert!(read_offsets(&step(&mut leader, behind(3))).is_empty());
        // A tick adds 25 (the 5 left over carry: 30, under the cap of 25 + 10): node 2's window
        // is full, node 3 takes two chunks, 10 bytes are left.
        assert_eq!(
            read_offsets(&step(&mut leader, Input::Tick)),
            [(3, 0), (3, 10)]
        );
        // An answer slides node 2's window by one chunk, within what is left (10 bytes).
        let ack = |next_offset, rejected| chunk_answer(2, next_offset, rejected);
        assert_eq!(read_offsets(&step(&mut leader, ack(10, false))), [(2, 20)]);
        // Every window is full: a tick only refills the budget.
        assert!(read_offsets(&step(&mut leader, Input::Tick)).is_empty());
        // A refusal at 10 rewinds node 2's window there.
        step(&mut leader, Input::Tick);
        assert_eq!(
            read_offsets(&step(&mut leader, ack(10, true))),
            [(2, 10), (2, 20)]
        );
    }

    /// SIM_FINDINGS 17 (seed 2890): a budget that pays for one chunk per tick went to the
    /// lowest id every time, so a follower that kept needing snapshots starved another voter
    /// of its transfer for good. Transfers now take turns.
    #[test]
    fn transfers_take_turns_when_the_budget_pays_for_one_chunk_at_a_time() {
        let (mut leader, behind) = leader_with_snapshot(&[1, 2, 3], 100, |config| {
            config.snapshot_chunk_bytes = 10;
            config.snapshot_chunks_in_flight = 10;
            config.snapshot_bytes_per_tick = 10;
        });
        assert_eq!(read_offsets(&step(&mut leader, behind(2))), [(2, 0)]);
        assert!(read_offsets(&step(&mut leader, behind(3))).is_empty());
        let mut served = Vec::new();
        for _ in 0..4 {
            served.extend(read_offsets(&step(&mut leader, Input::Tick)));
        }
        assert_eq!(served, [(3, 0), (2, 10), (3, 10), (2, 20)]);
    }

    /// SIM_FINDINGS 19 (seed 5105): a transfer that waited for the shared budget longer than
    /// an election timeout counted as stalled, and on a heartbeat tick the stall restart
    /// dropped the chunk requested in that very tick: its read came back unwanted, and the
    /// budget paid for it was lost. Followers that needed one snapshot after another under a
    /// snapshot storm fell further behind. A transfer is stalled only when something it asked
    /// for went unanswered for an election timeout.
    #[test]
    fn a_chunk_paid_for_after_a_long_wait_for_the_budget_is_sent() {
        for followers in [&[2][..], &[2, 3]] {
            for chunk in 5..=40 {
                for per_tick in 1..=4 {
                    every_chunk_read_is_sent(followers, chunk, per_tick);
                }
            }
        }
    }

    /// A leader sends its snapshot to `followers` under a budget of `per_tick` bytes in
    /// `chunk`-byte chunks, one in flight each; the followers answer every chunk at once.
    fn every_chunk_read_is_sent(followers: &[u64], chunk: u64, per_tick: u64) {
        let (mut leader, behind) = leader_with_snapshot(&[1, 2, 3], 100_000, |config| {
            config.snapshot_chunk_bytes = chunk;
            config.snapshot_chunks_in_flight = 1;
            config.snapshot_bytes_per_tick = per_tick;
            // The followers answer only the chunks they are sent.
            config.check_quorum = false;
        });
        let meta = leader.log.snapshot().cloned().unwrap();
        let mut pending = Vec::new();
        for &id in followers {
            pending.extend(read_offsets(&step(&mut leader, behind(id))));
        }
        let mut sent = 0;
        for _ in 0..300 {
            for (to, offset) in std::mem::take(&mut pending) {
                let read = Input::Storage(StorageOutcome::SnapshotChunkRead {
                    to: NodeId(to),
                    meta: meta.clone(),
                    offset,
                    data: vec![1; chunk as usize],
                });
                let actions = step(&mut leader, read);
                let chunks = actions.iter().filter(|a| {
                    matches!(
                        a,
                        Action::Send(Message {
                            body: MessageBody::InstallSnapshot { .. },
                            ..
                        })
                    )
                });
                assert_eq!(
                    chunks.count(),
                    1,
                    "{followers:?} in {chunk}-byte chunks at {per_tick} B/tick: the chunk for \
                     {to} at {offset} was read and then not sent"
                );
                sent += 1;
                let answer = chunk_answer(to, offset + chunk, false);
                pending.extend(read_offsets(&step(&mut leader, answer)));
            }
            pending.extend(read_offsets(&step(&mut leader, Input::Tick)));
        }
        assert!(sent >= 300 * per_tick / chunk, "{sent} chunks sent");
    }

    #[test]
    fn a_snapshot_rewritten_with_other_bytes_restarts_transfers_of_the_old_ones() {
        let mut leader = leader_sending_to_node_2();
        let old = leader.log.snapshot().cloned().unwrap();
        let taken = |meta: &SnapshotMeta| {
            Input::Apply(ApplyOutcome::SnapshotTaken {
                meta: meta.clone(),
                retain_entries: 0,
            })
        };
        // The same snapshot written again (identical bytes): nothing changes.
        assert!(read_offsets(&step(&mut leader, taken(&old))).is_empty());
        // Written again with other bytes: the transfer starts over with the new description.
        let rewritten = SnapshotMeta {
            size_bytes: 120,
            checksum: 7,
            ..old
        };
        let actions = step(&mut leader, taken(&rewritten));
        assert_eq!(read_offsets(&actions), [(2, 0), (2, 10)]);
        let metas = actions.iter().filter_map(|a| match a {
            Action::Storage(StorageAction::ReadSnapshotChunk { meta, .. }) => Some(meta.clone()),
            _ => None,
        });
        assert!(metas.into_iter().all(|meta| meta == rewritten));
        assert_eq!(leader.log.snapshot(), Some(&rewritten));
    }

    /// Which snapshots `actions` said are in use, by index, each time.
    fn kept(actions: &[Action]) -> Vec<Vec<u64>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageAction::KeepSnapshots { in_use }) => {
                    Some(in_use.iter().map(|meta| meta.index.0).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// The leader of `leader_with_snapshot` commits and applies its no-op (index 10, term 2)
    /// with node 3's acknowledgement and takes a 50-byte snapshot of it, keeping the entry in
    /// its log; the snapshot and the actions of taking it.
    fn take_a_newer_snapshot(leader: &mut Replica) -> (SnapshotMeta, Vec<Action>) {
        take_a_newer_snapshot_retaining(leader, 5)
    }

    /// [`take_a_newer_snapshot`], keeping `retain_entries` entries behind it.
    fn take_a_newer_snapshot_retaining(
        leader: &mut Replica,
        retain_entries: u64,
    ) -> (SnapshotMeta, Vec<Action>) {
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(10),
            conflict: None,
        };
        step(leader, from_peer(3, ack));
        step(
            leader,
            Input::Apply(ApplyOutcome::Applied {
                index: LogIndex(10),
            }),
        );
        let newer = SnapshotMeta {
            index: LogIndex(10),
            term: Term(2),
            size_bytes: 50,
            checksum: 5,
            ..leader.log.snapshot().cloned().unwrap()
        };
        let taken = Input::Apply(ApplyOutcome::SnapshotTaken {
            meta: newer.clone(),
            retain_entries,
        });
        let actions = step(leader, taken);
        assert_eq!(leader.log.snapshot(), Some(&newer));
        (newer, actions)
    }

    /// A transfer of a snapshot whose file storage found damaged starts over with its
    /// replacement, here a newer snapshot (the same point written again is covered above).
    #[test]
    fn a_transfer_of_a_damaged_snapshot_starts_over_with_its_replacement() {
        let mut leader = leader_sending_to_node_2();
        let damaged = Input::Storage(StorageOutcome::SnapshotDamaged {
            index: LogIndex(9),
            term: Term(1),
        });
        // Nothing else to send yet.
        assert!(read_offsets(&step(&mut leader, damaged)).is_empty());
        let (newer, actions) = take_a_newer_snapshot(&mut leader);
        assert_eq!(read_offsets(&actions), [(2, 0), (2, 10)]);
        assert!(actions.iter().all(|a| match a {
            Action::Storage(StorageAction::ReadSnapshotChunk { meta, .. }) => *meta == newer,
            _ => true,
        }));
        assert_eq!(kept(&actions), [vec![10]]);
    }

    /// Issue 14 (docs/SIM_FINDINGS.md, finding 15): every new local snapshot restarted every
    /// transfer from offset 0 with the new snapshot, so with snapshots taken faster than a
    /// transfer took, a follower never received one. A transfer now goes on with its
    /// snapshot, which storage is told is in use until the transfer ends.
    #[test]
    fn a_transfer_goes_on_with_its_snapshot_when_a_newer_one_is_taken() {
        let (mut leader, behind) = leader_with_snapshot(&[1, 2, 3], 100, |config| {
            config.snapshot_chunk_bytes = 10;
            config.snapshot_chunks_in_flight = 2;
        });
        let old = leader.log.snapshot().cloned().unwrap();
        assert_eq!(
            leader.snapshots_kept,
            std::slice::from_ref(&old),
            "the current one is in use"
        );
        let actions = step(&mut leader, behind(2));
        assert_eq!(read_offsets(&actions), [(2, 0), (2, 10)]);
        let (newer, actions) = take_a_newer_snapshot(&mut leader);
        assert!(read_offsets(&actions).is_empty(), "restarted: {actions:?}");
        assert_eq!(
            kept(&actions),
            [vec![9, 10]],
            "the one being sent stays in use"
        );
        assert!(matches!(
            actions.last(),
            Some(Action::Storage(StorageAction::KeepSnapshots { .. }))
        ));
        // The transfer goes on from where node 2 stands, with the old snapshot.
        let answer = |next_offset| chunk_answer(2, next_offset, false);
        let actions = step(&mut leader, answer(10));
        assert_eq!(read_offsets(&actions), [(2, 20)]);
        assert!(actions.iter().all(|a| match a {
            Action::Storage(StorageAction::ReadSnapshotChunk { meta, .. }) => *meta == old,
            _ => true,
        }));
        // Installed: node 2 catches up from the log (entry 10 is still there), and the old
        // snapshot is no longer in use.
        let installed = node_2_answer(LogIndex(9), 100, true);
        let actions = step(&mut leader, installed);
        assert_eq!(kept(&actions), [vec![10]]);
        assert!(read_offsets(&actions).is_empty());
        let entry_10_sent = actions.iter().any(|a| {
            matches!(a, Action::Send(Message { to, body: MessageBody::AppendRequest { entries, .. }, .. })
                if *to == NodeId(2) && entries.iter().any(|e| e.index == newer.index))
        });
        assert!(entry_10_sent, "{actions:?}");
    }

    /// SIM_FINDINGS 48: node 2 installed the old snapshot (index 9) while the leader had
    /// compacted its log past it (a newer snapshot at 10, no entry kept), so the leader went
    /// on to send the newer one. Every further answer "done at 9" (a duplicate, or the answer
    /// to a copy of an old chunk resent after a stall) restarted that transfer from offset 0
    /// and asked storage for a whole window of chunks again, throwing away what node 2 had
    /// acknowledged: one window re-read and re-sent per stale answer.
    #[test]
    fn a_stale_done_answer_does_not_restart_a_transfer_of_a_newer_snapshot() {
        let mut leader = leader_sending_to_node_2();
        let (newer, _) = take_a_newer_snapshot_retaining(&mut leader, 0);
        let done_at_9 = || node_2_answer(LogIndex(9), 100, true);
        // The first one is news: node 2 holds 9, and entry 10 is gone, so the newer snapshot
        // goes from offset 0.
        let actions = step(&mut leader, done_at_9());
        assert_eq!(read_offsets(&actions), [(2, 0), (2, 10)]);
        let sending = |leader: &Replica| match &leader.leader_state.as_ref().unwrap().progress
            [&NodeId(2)]
            .state
        {
            ProgressState::Snapshot(t) => Some((t.meta.index.0, t.offset)),
            _ => None,
        };
        assert_eq!(sending(&leader), Some((newer.index.0, 0)));
        // Node 2 acknowledges 20 bytes of the newer one; the window slides.
        let ack = node_2_answer(newer.index, 20, false);
        assert_eq!(read_offsets(&step(&mut leader, ack)), [(2, 20), (2, 30)]);
        // Stale answers about the old snapshot change nothing.
        for _ in 0..3 {
            let actions = step(&mut leader, done_at_9());
            assert!(read_offsets(&actions).is_empty(), "{actions:?}");
            assert_eq!(sending(&leader), Some((newer.index.0, 20)));
        }
    }

    /// The rest of SIM_FINDINGS 48: a "done" that is news about an older snapshot (the
    /// follower got it elsewhere) while a newer one is being sent, the log after the old one
    /// gone, moves the match point and keeps the newer transfer where it stands.
    #[test]
    fn news_of_an_older_snapshot_keeps_the_newer_transfer_where_it_stands() {
        let mut leader = leader_sending_to_node_2();
        let (newer, _) = take_a_newer_snapshot_retaining(&mut leader, 0);
        // Node 2 is sent the newer snapshot before it holds the old one (its transfer of the
        // old one restarts with the newer, e.g. after it refused an append).
        leader.start_snapshot_transfer(NodeId(2));
        let ack = node_2_answer(newer.index, 20, false);
        step(&mut leader, ack);
        let progress = |leader: &Replica| {
            let pr = &leader.leader_state.as_ref().unwrap().progress[&NodeId(2)];
            let sending = match &pr.state {
                ProgressState::Snapshot(t) => Some((t.meta.index.0, t.offset)),
                _ => None,
            };
            (pr.match_index.0, sending)
        };
        let before = progress(&leader);
        assert_eq!(before.1, Some((newer.index.0, 20)));
        assert!(before.0 < 9, "{before:?}");
        let done_at_9 = node_2_answer(LogIndex(9), 100, true);
        let actions = step(&mut leader, done_at_9);
        assert!(read_offsets(&actions).is_empty(), "{actions:?}");
        assert_eq!(progress(&leader), (9, Some((newer.index.0, 20))));
    }

    #[test]
    fn answers_at_or_past_the_end_leave_the_final_chunk_to_be_sent() {
        let mut leader = leader_sending_to_node_2();
        let answer = |next_offset, rejected| chunk_answer(2, next_offset, rejected);
        // Past the end: about other bytes of this point; ignored (it used to leave nothing
        // to send, for good).
        assert!(read_offsets(&step(&mut leader, answer(130, false))).is_empty());
        assert!(read_offsets(&step(&mut leader, answer(130, true))).is_empty());
        // Every byte held but not installed: the last byte goes again, as the final chunk.
        assert_eq!(
            read_offsets(&step(&mut leader, answer(100, false))),
            [(2, 99)]
        );
        // The follower refuses it with the offset it really holds; the window resumes there.
        assert_eq!(
            read_offsets(&step(&mut leader, answer(40, true))),
            [(2, 40), (2, 50)]
        );
    }

    #[test]
    fn the_byte_budget_moves_the_configured_rate() {
        // 15 bytes per tick with 10-byte chunks: a tick's worth is under two chunks, the case
        // in which dropping the leftover delivered one chunk (10 bytes) per tick.
        let (mut leader, behind) = leader_with_snapshot(&[1, 2], 1_000_000, |config| {
            config.snapshot_chunk_bytes = 10;
            config.snapshot_chunks_in_flight = 1_000;
            config.snapshot_bytes_per_tick = 15;
            // The follower never answers here; the leader must not step down for it.
            config.check_quorum = false;
        });
        let mut requested = read_offsets(&step(&mut leader, behind(2))).len();
        let ticks = 100;
        for _ in 0..ticks {
            requested += read_offsets(&step(&mut leader, Input::Tick)).len();
        }
        // 100 ticks of 15 bytes plus the first tick's worth: 1515 bytes, 151 whole chunks.
        assert_eq!(requested, (ticks + 1) * 15 / 10);
    }
}
