//! Log replication (paper §5.3): the leader's tick, heartbeats, AppendEntries with the
//! consistency check and fast backtracking, pipelined sends bounded by the in-flight window,
//! proposals with the uncommitted-bytes cap, and the commit rule of Figure 8.
//!
//! Runs on the replica's owner thread. Invariants: the leader counts its own match only once
//! its write is durable (thesis §10.2.1); only an entry of the leader's current term commits
//! by counting replicas (paper §5.4.2); a follower never truncates a committed entry.

use super::api::{Action, ProposeError, ReadEntriesError, StorageAction};
use super::log::Sendable;
use super::progress::ProgressState;
use super::quorum;
use super::replica::{Phase, Replica};
use rcraft_wire::{ConflictHint, Entry, EntryPayload, LogIndex, MessageBody, NodeId, Term};

impl Replica {
    /// Leader tick: heartbeats, CheckQuorum, the transfer deadline, the snapshot budget,
    /// stalled snapshots.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_min_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // Thesis §6.2: a leader cut off from a quorum steps down so clients look
                // elsewhere, and its lease-based guarantees stop.
                self.become_follower(self.term, None);
                return;
            }
        }
        self.tick_transfer();
        if self.leader_state.is_none() {
            return; // A leader removed from the voters stepped down (`hand_over_on_removal`).
        }
        self.maybe_self_demote();
        self.refill_snapshot_budget();
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            self.resume_stalled_snapshots();
        }
    }

    /// True when a quorum answered since the last check (resets the marks for the next one).
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.id;
        let Some(state) = self.leader_state.as_mut() else {
            return false;
        };
        let active = quorum::is_quorum(&self.membership, |id| {
            id == me || state.progress.get(&id).is_some_and(|p| p.recent_active)
        });
        for pr in state.progress.values_mut() {
            pr.recent_active = false;
        }
        active
    }

    /// Sends a heartbeat to every follower, starting a new read round.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let now = self.now_ticks;
        let commit = self.log.committed_index();
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let round = state.reads.start_round(now);
        let targets: Vec<(NodeId, LogIndex)> = state
            .progress
            .iter()
            .map(|(id, pr)| (*id, commit.min(pr.match_index)))
            .collect();
        for (to, leader_commit) in targets {
            let body = MessageBody::Heartbeat {
                leader_commit,
                read_context: round,
            };
            self.send(to, body);
        }
    }

    /// Follower side of a heartbeat: the leader is alive; learn its commit index.
    pub(super) fn on_heartbeat(
        &mut self,
        from: NodeId,
        leader_commit: LogIndex,
        read_context: u64,
    ) {
        self.follow(from);
        self.log.commit_to(leader_commit);
        self.send(from, MessageBody::HeartbeatResponse { read_context });
    }

    /// Makes this node a follower of `leader` in the current term and resets its timer.
    pub(super) fn follow(&mut self, leader: NodeId) {
        if self.phase != Phase::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    /// Leader side of a heartbeat answer: liveness, read rounds, and a nudge for followers
    /// that are behind (a lost AppendRequest in the replicate state is recovered here).
    pub(super) fn on_heartbeat_response(&mut self, from: NodeId, read_context: u64) {
        let last = self.log.last_index();
        let (max_messages, max_bytes) = (
            self.config.max_inflight_messages,
            self.config.max_inflight_bytes,
        );
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_round = pr
            .acked_round
            .max(state.reads.acknowledged_round(read_context));
        pr.probe_sent = false;
        let behind = pr.match_index < last;
        if behind
            && pr.state == ProgressState::Replicate
            && pr.inflight_full(max_messages, max_bytes)
        {
            pr.free_first_inflight();
        }
        self.confirm_reads();
        if behind {
            self.send_append(from, true);
        }
    }

    // ----- proposals -----

    /// Appends as leader the new entry that `make` makes at (term, next index), subject to
    /// the overload cap.
    pub(super) fn append_proposal(
        &mut self,
        make: impl FnOnce(Term, LogIndex) -> Entry,
    ) -> Result<(Term, LogIndex), ProposeError> {
        let Some(state) = self.leader_state.as_ref() else {
            return Err(self.not_leader());
        };
        if state.transfer.is_some() {
            return Err(self.not_leader());
        }
        let entry = make(self.term, self.log.last_index().next());
        let size = entry.size_bytes();
        if state.uncommitted_bytes > 0
            && state.uncommitted_bytes + size > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::Overloaded);
        }
        let position = (entry.term, entry.index);
        self.append_as_leader(entry);
        // Sent when the caller drains actions, batched with the proposals stepped meanwhile.
        self.proposals_unsent = true;
        Ok(position)
    }

    /// Appends `entry` to the leader's log and queues it for persistence.
    pub(super) fn append_as_leader(&mut self, entry: Entry) {
        let is_membership = matches!(entry.payload, EntryPayload::Membership(_));
        if let Some(state) = self.leader_state.as_mut() {
            state.uncommitted_bytes += entry.size_bytes();
        }
        self.persist_entries(std::slice::from_ref(&entry));
        self.log.append(entry);
        if is_membership {
            self.refresh_membership();
        }
        // A single-voter cluster commits as soon as the entry is durable; nothing to send.
        self.maybe_advance_commit();
    }

    // ----- leader sending -----

    /// Sends what each follower may take now; empty probes too when `allow_empty`.
    pub(super) fn broadcast_append(&mut self, allow_empty: bool) {
        let peers: Vec<NodeId> = match &self.leader_state {
            Some(state) => state.progress.keys().copied().collect(),
            None => return,
        };
        for peer in peers {
            let mut sent_any = false;
            while self.send_append(peer, false) {
                sent_any = true;
            }
            if allow_empty && !sent_any {
                self.send_append(peer, true);
            }
        }
    }

    /// Sends one AppendRequest to `peer` if its progress allows. Returns true when sent.
    /// Entries no longer cached are asked of storage (`StorageAction::ReadEntries`) and sent when
    /// they arrive (`on_entries_read`).
    pub(super) fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let (max_messages, max_bytes) = (
            self.config.max_inflight_messages,
            self.config.max_inflight_bytes,
        );
        let max_append_bytes = self.config.max_append_bytes;
        let Some(state) = self.leader_state.as_mut() else {
            return false;
        };
        let Some(pr) = state.progress.get_mut(&peer) else {
            return false;
        };
        if !pr.can_send(max_messages, max_bytes) {
            return false;
        }
        let low = pr.next_index;
        let (Some(_), sendable) = (
            self.log.term_at(low.prev()),
            self.log.entries_for_send(low, max_append_bytes),
        ) else {
            self.start_snapshot_transfer(peer);
            return false;
        };
        let entries = match sendable {
            Sendable::Entries(entries) => entries,
            Sendable::Compacted => {
                self.start_snapshot_transfer(peer);
                return false;
            }
            Sendable::InStorage { high } => {
                if let Some(batch) = pr.batch_from_read_back(max_append_bytes) {
                    if batch.is_empty() && !allow_empty {
                        return false;
                    }
                    self.send_entries(peer, batch);
                    return true;
                }
                let id = self.next_entries_read;
                self.next_entries_read += 1;
                pr.entries_read = Some(id);
                self.actions
                    .push(Action::Storage(StorageAction::ReadEntries {
                        id,
                        to: peer,
                        low,
                        high,
                        max_bytes: pr.read_bytes(max_messages, max_bytes, max_append_bytes),
                    }));
                return false;
            }
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        self.send_entries(peer, entries);
        true
    }

    /// Sends `peer` an AppendRequest of `entries` (from its `next_index` on; may be empty)
    /// and records them in flight.
    fn send_entries(&mut self, peer: NodeId, entries: Vec<Entry>) {
        let commit = self.log.committed_index();
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&peer) else {
            return;
        };
        let prev_log_index = pr.next_index.prev();
        let prev_log_term = self
            .log
            .term_at(prev_log_index)
            .expect("checked by the caller");
        let bytes = entries.iter().map(Entry::size_bytes).sum();
        pr.on_sent(entries.last().map(|e| e.index), bytes);
        if let Some(last) = entries.last() {
            state.latency.on_sent(peer, last.index, self.now_ticks);
        }
        let body = MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: commit,
        };
        self.send(peer, body);
    }

    /// `StorageOutcome::EntriesRead`: storage's answer to a `ReadEntries` for `to`. Sent on when it is
    /// the read `to`'s progress waits for, still starts at its `next_index` and matches our
    /// log (terms known for every index); a failed read falls back to the snapshot.
    pub(super) fn on_entries_read(
        &mut self,
        id: u64,
        to: NodeId,
        low: LogIndex,
        entries: std::result::Result<Vec<Entry>, ReadEntriesError>,
    ) {
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&to) else {
            return;
        };
        if pr.entries_read != Some(id) {
            return; // A read of an earlier state; the current one (if any) is on its way.
        }
        pr.entries_read = None;
        let entries = match entries {
            Ok(entries) if !entries.is_empty() => entries,
            // Storage no longer holds them, cannot read them, or read none (whatever the
            // kind of failure). Without a snapshot to send, the follower's next heartbeat
            // answer tries again (not at once: that could loop on a bad disk).
            _ => {
                self.start_snapshot_transfer(to);
                return;
            }
        };
        let matches_log = pr.next_index == low
            && self.log.term_at(low.prev()).is_some()
            && (entries.iter().enumerate()).all(|(i, e)| {
                e.index.0 == low.0 + i as u64 && self.log.term_at(e.index) == Some(e.term)
            });
        if matches_log {
            // Sent from there as the window allows, and again after a refusal or a probe.
            pr.keep_read_back(entries);
        }
        while self.send_append(to, false) {}
    }

    // ----- follower side -----

    /// AppendEntries at our term: the consistency check, then append and acknowledge once
    /// durable, or refuse with a hint of where our log diverges.
    pub(super) fn on_append_request(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        if self.phase == Phase::Leader {
            return; // Two leaders in one term cannot happen; ignore rather than obey.
        }
        self.follow(from);
        if self.snapshot_finishing() {
            // A snapshot is being installed; its completion will reset the log.
            self.reject_append(from, prev_log_index);
            return;
        }
        if prev_log_index > self.log.last_index() {
            // Ahead of our log: kept until its predecessor arrives, or refused (`ahead.rs`).
            if !self.hold_ahead(from, prev_log_index, prev_log_term, entries, leader_commit) {
                self.reject_append(from, prev_log_index);
            }
            return;
        }
        let Some(mut matched) =
            self.append_from_leader(from, prev_log_index, prev_log_term, entries, leader_commit)
        else {
            return;
        };
        self.note_stream(from);
        // The appends kept ahead of the log whose predecessor it now reaches, in order.
        while let Some((prev, held)) = self.next_held(from) {
            let (prev_term, entries, commit) =
                (held.prev_log_term, held.entries, held.leader_commit);
            match self.append_from_leader(from, prev, prev_term, entries, commit) {
                Some(last) => matched = matched.max(last),
                None => self.ahead.drop_held(),
            }
        }
        let body = MessageBody::AppendResponse {
            success: true,
            match_index: matched,
            conflict: None,
        };
        self.send(from, body);
    }

    /// The consistency check and the append of an AppendRequest whose `prev_log_index` is
    /// within our log: the last index the log now matches the leader's through, or `None`
    /// when refused (the refusal is sent).
    fn append_from_leader(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) -> Option<LogIndex> {
        let committed = self.log.committed_index();
        let (mut prev_index, mut prev_term) = (prev_log_index, prev_log_term);
        if prev_index < committed {
            // Everything through our commit index already matches every leader's log.
            entries.retain(|e| e.index > committed);
            prev_index = committed;
            prev_term = self.log.term_at(committed).expect("commit point is held");
            if let Some(first) = entries.first() {
                if first.index != committed.next() {
                    entries.clear();
                }
            }
        }
        if self.log.term_at(prev_index) != Some(prev_term) {
            self.reject_append(from, prev_index);
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        if let Some(conflict) = self.log.find_conflict(&entries) {
            let start = (conflict.0 - prev_index.0 - 1) as usize;
            self.append_as_follower(&entries[start..]);
        }
        self.log.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    pub(super) fn reject_append(&mut self, from: NodeId, probe_index: LogIndex) {
        let hint: ConflictHint = self.log.conflict_hint(probe_index);
        let body = MessageBody::AppendResponse {
            success: false,
            match_index: probe_index,
            conflict: Some(hint),
        };
        self.send(from, body);
    }

    /// Writes entries from the leader over our log from their first index on.
    fn append_as_follower(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        if first.index <= self.log.last_index() {
            // A truncation: what was kept ahead was judged against the log it replaces.
            self.ahead.drop_held();
        }
        let replaces_membership = first.index <= self.membership_index;
        let brings_membership = entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Membership(_)));
        self.log.truncate_and_append(entries);
        self.persist_entries(entries);
        if replaces_membership || brings_membership {
            self.refresh_membership();
        }
    }

    // ----- leader receiving -----

    /// A follower's answer to an AppendRequest.
    pub(super) fn on_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
    ) {
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            state
                .latency
                .on_acknowledged(from, match_index, self.now_ticks);
            self.on_append_accepted(from, match_index);
        } else {
            state.latency.on_refused(from);
            self.on_append_rejected(from, match_index, conflict);
        }
    }

    fn on_append_accepted(&mut self, from: NodeId, match_index: LogIndex) {
        // A correct follower only acknowledges what this leader sent it, so a match beyond
        // our own log comes from a damaged or hostile peer: ignore it rather than let the
        // progress (and then the commit index) run past the log.
        if match_index > self.log.last_index() {
            return;
        }
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&from) else {
            return;
        };
        if let ProgressState::Snapshot(transfer) = &pr.state {
            if match_index < transfer.meta.index {
                return;
            }
        }
        let updated = pr.maybe_update(match_index);
        // Besides news, only the answer of an up-to-date follower to the outstanding probe
        // (its match unchanged) moves a probing follower on, as in etcd-io/raft. Any other
        // stale or duplicated acknowledgement is ignored: answering each with another append
        // let duplicated acknowledgements multiply the probes without bound (simulator
        // finding 2, seeds 196, 585, 701, ...).
        let probe_answered =
            !updated && pr.state == ProgressState::Probe && match_index == pr.match_index;
        if !updated && !probe_answered {
            return;
        }
        let was_probing = pr.state != ProgressState::Replicate;
        if was_probing {
            pr.become_replicate();
        }
        let committed = self.maybe_advance_commit();
        self.maybe_send_timeout_now(from);
        let mut sent = false;
        while self.send_append(from, false) {
            sent = true;
        }
        if was_probing && updated && !sent && !committed {
            // A follower that just caught up may not know the commit index yet.
            self.send_append(from, true);
        }
    }

    fn on_append_rejected(
        &mut self,
        from: NodeId,
        probed: LogIndex,
        conflict: Option<ConflictHint>,
    ) {
        let next = self.next_index_after_reject(probed, conflict);
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(pr) = state.progress.get_mut(&from) else {
            return;
        };
        // A refusal below the match point answers an append sent before the follower
        // matched: stale. One at the match point can be news (see `shows_lost_entries`).
        let stale = match pr.state {
            ProgressState::Replicate => probed < pr.match_index,
            ProgressState::Probe => probed != pr.next_index.prev(),
            ProgressState::Snapshot(_) => true,
        };
        if stale {
            return;
        }
        let next = next.min(probed);
        // Only the answer to a probe can show lost entries. In Replicate, a refusal may have
        // been sent before the acknowledgement that overtook it (of the append that filled
        // the follower's gap): it probes at the match point, where the follower's log does
        // reach. A follower that really lost entries refuses that probe too.
        if pr.state == ProgressState::Probe
            && shows_lost_entries(&self.log, pr.match_index, probed, conflict)
        {
            pr.forget_match_from(next);
        }
        pr.become_probe(next);
        self.send_append(from, true);
    }

    /// Where to probe next after a follower refused `probed` (paper §5.3 optimisation): skip
    /// the follower's whole conflicting term, or to its end when its log is short.
    fn next_index_after_reject(
        &self,
        probed: LogIndex,
        conflict: Option<ConflictHint>,
    ) -> LogIndex {
        let next = match conflict {
            None => probed,
            Some(ConflictHint {
                term: None,
                first_index,
            }) => first_index,
            Some(ConflictHint {
                term: Some(term),
                first_index,
            }) => match self.log.last_index_of_term(term, probed) {
                Some(last) => last.next(),
                None => first_index,
            },
        };
        next.max(LogIndex(1))
    }

    /// Commits the highest index a quorum holds, if it is of the current term.
    pub(super) fn maybe_advance_commit(&mut self) -> bool {
        let me = self.id;
        let own = self.log.persisted_index();
        let Some(state) = self.leader_state.as_ref() else {
            return false;
        };
        let quorum_index = quorum::quorum_index(&self.membership, |id| {
            if id == me {
                own
            } else {
                state
                    .progress
                    .get(&id)
                    .map(|p| p.match_index)
                    .unwrap_or_default()
            }
        });
        let committed = self.log.committed_index();
        if quorum_index <= committed || !self.may_commit_by_counting(quorum_index) {
            return false;
        }
        let newly = self.log.bytes_between(committed.next(), quorum_index);
        self.log.commit_to(quorum_index);
        if let Some(state) = self.leader_state.as_mut() {
            state.uncommitted_bytes = state.uncommitted_bytes.saturating_sub(newly);
        }
        self.on_commit_advanced();
        true
    }

    /// Figure 8: counting replicas commits only an entry of the current term; earlier ones
    /// commit indirectly with it.
    #[cfg(not(feature = "bug-commit-old-term"))]
    fn may_commit_by_counting(&self, index: LogIndex) -> bool {
        self.log.term_at(index) == Some(self.term)
    }

    /// PLANTED BUG (mutation check only): commit an older term's entry by counting replicas,
    /// the Figure 8 mistake.
    #[cfg(feature = "bug-commit-old-term")]
    fn may_commit_by_counting(&self, index: LogIndex) -> bool {
        index <= self.log.last_index()
    }

    /// Follow-ups of a commit: reads waiting for the first commit of the term, the second
    /// phase of a joint change, stepping down when removed, and telling followers.
    fn on_commit_advanced(&mut self) {
        self.start_reads_waiting_for_commit();
        self.maybe_finish_membership_change();
        if self.phase == Phase::Leader
            && !self.membership.is_voter(self.id)
            && self.membership_index <= self.log.committed_index()
        {
            self.hand_over_on_removal();
            return;
        }
        if self.phase == Phase::Leader {
            self.broadcast_append(true);
        }
    }

    /// The configuration that removes this leader has committed (thesis §4.2.2): it tells the
    /// followers the commit index and hands leadership over (thesis §3.10) to the voter of the
    /// new configuration whose log is longest (the lowest id among equals): proposals are
    /// refused, naming that voter; once the voter holds the whole log it gets `TimeoutNow`
    /// and campaigns at once, and this node steps down. The cluster has a leader again after
    /// about a round trip rather than an election timeout. If the transfer gives up (an
    /// election timeout, `tick_transfer`) this node steps down all the same and the others
    /// elect a leader when their timers run out.
    fn hand_over_on_removal(&mut self) {
        match self.leader_state.as_mut() {
            Some(state) if !state.leaving => state.leaving = true,
            _ => return, // Handing over already.
        }
        self.broadcast_append(true);
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let membership = &self.membership;
        let target = (state.progress.iter())
            .filter(|(id, _)| membership.is_voter(**id))
            .max_by_key(|(id, pr)| (pr.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let Some(target) = target else {
            self.become_follower(self.term, None);
            return;
        };
        state.transfer = Some((target, 0));
        state.transfer_grace_ticks = 0;
        self.maybe_send_timeout_now(target);
    }
}

/// True when a follower's refusal of `probed` says it lacks entries through `match_index`
/// that it acknowledged: its log ends at or before the match point, or it holds another term
/// at a probed index inside the matched range. A refusal for any other reason (a snapshot
/// being installed) describes a log that still holds the match point, and is not taken as a
/// loss.
fn shows_lost_entries(
    log: &super::log::RaftLog,
    match_index: LogIndex,
    probed: LogIndex,
    conflict: Option<ConflictHint>,
) -> bool {
    match conflict {
        None => false,
        Some(ConflictHint {
            term: None,
            first_index,
        }) => first_index <= match_index,
        Some(ConflictHint {
            term: Some(term), ..
        }) => probed <= match_index && log.term_at(probed) != Some(term),
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{Action, ApplyOutcome, Input, ReadFailure, StorageOutcome};
    use super::*;
    use rcraft_wire::Message;

    use super::super::testing::{from_peer_in, leader_of_three, step_confirming as step};

    fn from_peer(from: u64, body: MessageBody) -> Input {
        from_peer_in(1, from, body)
    }

    /// The `prev_log_index` of every AppendRequest to `to` among `actions`.
    fn appends_to(actions: &[Action], to: u64) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    to: target,
                    body: MessageBody::AppendRequest { prev_log_index, .. },
                    ..
                }) if *target == NodeId(to) => Some(prev_log_index.0),
                _ => None,
            })
            .collect()
    }

    fn refusal(probed: u64, follower_last: u64) -> MessageBody {
        MessageBody::AppendResponse {
            success: false,
            match_index: LogIndex(probed),
            conflict: Some(ConflictHint {
                term: None,
                first_index: LogIndex(follower_last + 1),
            }),
        }
    }

    /// Node 1 leading nodes 1-3 in term 1 with entries 1-4 (its no-op and three commands),
    /// which node 2 acknowledged.
    fn leader_matched_by_node_2_through_4() -> Replica {
        let mut leader = leader_of_three(|_| {});
        for id in 1..=3 {
            let data = vec![id as u8];
            step(
                &mut leader,
                Input::Propose {
                    id,
                    session: None,
                    data,
                },
            );
        }
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(4),
            conflict: None,
        };
        step(&mut leader, from_peer(2, ack));
        assert_eq!(leader.status().commit_index, LogIndex(4));
        leader
    }

    /// Issue 14, finding 2: a follower whose WAL tail was cut on restart refuses appends at
    /// its old match point. The leader must probe below it and resend what the follower lost,
    /// not keep probing at a point the follower no longer holds.
    #[test]
    fn a_follower_that_lost_acknowledged_entries_is_repaired() {
        let mut leader = leader_matched_by_node_2_through_4();
        // Node 2 restarted with only entries 1-2. A new command goes out after index 4 and
        // is refused; the leader then probes, and each probe is refused the same way.
        let actions = step(
            &mut leader,
            Input::Propose {
                id: 9,
                session: None,
                data: vec![9],
            },
        );
        assert_eq!(appends_to(&actions, 2), [4]);
        let mut probed = 4;
        for _ in 0..4 {
            let actions = step(&mut leader, from_peer(2, refusal(probed, 2)));
            let sent = appends_to(&actions, 2);
            assert_eq!(sent.len(), 1, "one probe per refusal: {actions:?}");
            probed = sent[0];
            if probed <= 2 {
                break;
            }
        }
        assert_eq!(probed, 2, "the leader probes where the follower's log ends");
        // Node 2 accepts, and is streamed what it lost.
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(5),
            conflict: None,
        };
        step(&mut leader, from_peer(2, ack));
        let progress = leader.status().replication;
        let node_2 = progress.iter().find(|p| p.id == NodeId(2)).unwrap();
        assert_eq!(node_2.match_index, LogIndex(5));
    }

    /// A refusal that still shows the match point held (a follower installing a snapshot
    /// refuses every append) does not lower the match point.
    #[test]
    fn a_refusal_that_holds_the_match_point_keeps_it() {
        let mut leader = leader_matched_by_node_2_through_4();
        let held = MessageBody::AppendResponse {
            success: false,
            match_index: LogIndex(4),
            conflict: Some(ConflictHint {
                term: Some(Term(1)),
                first_index: LogIndex(1),
            }),
        };
        let actions = step(&mut leader, from_peer(2, held));
        assert!(appends_to(&actions, 2).iter().all(|&prev| prev >= 4));
        let progress = leader.status().replication;
        let node_2 = progress.iter().find(|p| p.id == NodeId(2)).unwrap();
        assert_eq!(node_2.match_index, LogIndex(4));
    }

    /// SIM_FINDINGS 26: a refusal sent before the acknowledgement that overtook it (node 2
    /// refused an append ahead of its log, then took the predecessor) does not lower the
    /// match point. The leader probes at the match point, which node 2 holds; only a refusal
    /// of that probe shows lost entries (`a_follower_that_lost_acknowledged_entries_is_repaired`).
    #[test]
    fn a_refusal_overtaken_by_an_acknowledgement_keeps_the_match_point() {
        let mut leader = leader_matched_by_node_2_through_4();
        let mut sent = Vec::new();
        for id in 5..=6 {
            let input = Input::Propose {
                id,
                session: None,
                data: vec![id as u8],
            };
            sent.extend(appends_to(&step(&mut leader, input), 2));
        }
        assert_eq!(sent, [4, 5]);
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(5),
            conflict: None,
        };
        step(&mut leader, from_peer(2, ack));
        // The refusal of the append after 5, sent while node 2's log ended at 4.
        let actions = step(&mut leader, from_peer(2, refusal(5, 4)));
        let progress = leader.status().replication;
        let node_2 = progress.iter().find(|p| p.id == NodeId(2)).unwrap();
        assert_eq!(node_2.match_index, LogIndex(5));
        assert_eq!(appends_to(&actions, 2), [5], "probes at the match point");
        // Node 2 holds 5 and takes the probe.
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(6),
            conflict: None,
        };
        step(&mut leader, from_peer(2, ack));
        let progress = leader.status().replication;
        let node_2 = progress.iter().find(|p| p.id == NodeId(2)).unwrap();
        assert_eq!(node_2.match_index, LogIndex(6));
        leader.check_invariants();
    }

    /// Proposes `count` commands of `bytes` bytes each at `leader`, node 2 acknowledges
    /// them and the state machine reports them applied; returns every entry persisted.
    fn write_applied(leader: &mut Replica, count: u64, bytes: usize) -> Vec<Entry> {
        let mut written = Vec::new();
        for id in 0..count {
            let input = Input::Propose {
                id: 100 + id,
                session: None,
                data: vec![id as u8; bytes],
            };
            for action in step(leader, input) {
                if let Action::Storage(StorageAction::Persist { entries, .. }) = action {
                    written.extend(entries);
                }
            }
            let last = leader.status().last_index;
            let ack = MessageBody::AppendResponse {
                success: true,
                match_index: last,
                conflict: None,
            };
            step(leader, from_peer(2, ack));
            step(leader, Input::Apply(ApplyOutcome::Applied { index: last }));
        }
        written
    }

    /// Memory does not grow with the log: durable, applied entries leave the cache beyond
    /// its bytes, however many are written (the log view keeps only their terms).
    #[test]
    fn the_entry_cache_stays_within_its_bytes_however_long_the_log() {
        let cache_bytes = 2_000;
        let mut leader = leader_of_three(|config| config.entry_cache_bytes = cache_bytes);
        for _ in 0..20 {
            write_applied(&mut leader, 25, 100);
            assert!(
                leader.log_cache_bytes() <= cache_bytes,
                "the cache holds {} bytes",
                leader.log_cache_bytes()
            );
        }
        let status = leader.status();
        assert_eq!(status.last_index, LogIndex(501));
        assert_eq!(status.applied_index, LogIndex(501));
        assert!(leader.log_entries().len() < 20);
        assert_eq!(
            leader.log_term(LogIndex(2)),
            Some(Term(1)),
            "terms stay known"
        );
        leader.check_invariants();
    }

    /// Entries not yet applied stay cached whatever the cache size: the apply path needs them.
    #[test]
    fn entries_not_yet_applied_stay_cached() {
        let mut leader = leader_of_three(|config| config.entry_cache_bytes = 0);
        for id in 0..10 {
            let input = Input::Propose {
                id,
                session: None,
                data: vec![1; 100],
            };
            step(&mut leader, input);
        }
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(11),
            conflict: None,
        };
        let actions = step(&mut leader, from_peer(2, ack));
        let applied: Vec<LogIndex> = (actions.iter())
            .filter_map(|a| match a {
                Action::Apply { entries } => Some(entries.iter().map(|e| e.index)),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(applied.first(), Some(&LogIndex(2)));
        assert_eq!(applied.last(), Some(&LogIndex(11)));
        // Handed out, so they may go; the no-op was handed out before.
        assert_eq!(leader.log_entries().len(), 0);
        step(
            &mut leader,
            Input::Apply(ApplyOutcome::Applied {
                index: LogIndex(11),
            }),
        );
        leader.check_invariants();
    }

    /// The `ReadEntries` requests among `actions`: (id, to, low, high).
    fn entry_reads(actions: &[Action]) -> Vec<(u64, u64, u64, u64)> {
        (actions.iter())
            .filter_map(|a| match a {
                Action::Storage(StorageAction::ReadEntries {
                    id, to, low, high, ..
                }) => Some((*id, to.0, low.0, high.0)),
                _ => None,
            })
            .collect()
    }

    /// The entries of every AppendRequest to `to` among `actions`.
    fn entries_sent_to(actions: &[Action], to: u64) -> Vec<LogIndex> {
        (actions.iter())
            .filter_map(|a| match a {
                Action::Send(Message {
                    to: target,
                    body: MessageBody::AppendRequest { entries, .. },
                    ..
                }) if *target == NodeId(to) => Some(entries.iter().map(|e| e.index)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A follower behind the cache is caught up from storage: the leader asks for the
    /// entries (`StorageAction::ReadEntries`), sends what storage answers, and goes on from there;
    /// an answer to a read it no longer waits for is ignored.
    #[test]
    fn a_lagging_follower_is_caught_up_from_storage_reads() {
        let mut leader = leader_of_three(|config| {
            config.entry_cache_bytes = 0;
            config.max_append_bytes = 300;
        });
        let written = write_applied(&mut leader, 30, 100);
        assert_eq!(
            leader.log_cache_first_index(),
            LogIndex(32),
            "nothing cached"
        );
        // Node 3 answers at last: it holds the no-op only.
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(1),
            conflict: None,
        };
        let actions = step(&mut leader, from_peer(3, ack));
        let reads = entry_reads(&actions);
        assert_eq!(reads.len(), 1, "{actions:?}");
        let (id, to, low, high) = reads[0];
        assert_eq!((to, low, high), (3, 2, 31));
        assert!(
            entries_sent_to(&actions, 3).is_empty(),
            "sends wait for the read"
        );
        // Nothing more is asked while the read is out, even on a heartbeat answer.
        let beat = MessageBody::HeartbeatResponse { read_context: 0 };
        assert!(entry_reads(&step(&mut leader, from_peer(3, beat))).is_empty());
        // Storage answers; a stale answer (another id) changes nothing.
        let answer = |id: u64, from: u64| {
            Input::Storage(StorageOutcome::EntriesRead {
                id,
                to: NodeId(3),
                low: LogIndex(from),
                entries: Ok(
                    written[(from - 2) as usize..((from + 1) as usize).min(written.len())].to_vec(),
                ),
            })
        };
        assert!(step(&mut leader, answer(id + 100, 2)).is_empty());
        let actions = step(&mut leader, answer(id, 2));
        assert_eq!(
            appends_to(&actions, 3),
            [1, 3],
            "what was read, in batches within max_append_bytes"
        );
        assert_eq!(
            entries_sent_to(&actions, 3),
            [LogIndex(2), LogIndex(3), LogIndex(4)]
        );
        // In Replicate, the next entries are read at once, as many as the window takes.
        let reads = entry_reads(&actions);
        assert_eq!(reads.len(), 1, "{actions:?}");
        assert_eq!((reads[0].2, reads[0].3), (5, 31));
        let window_read = actions
            .iter()
            .any(|a| matches!(a, Action::Storage(StorageAction::ReadEntries { max_bytes, .. }) if *max_bytes > 300));
        assert!(window_read, "{actions:?}");
        // The leader keeps streaming as storage answers, until the follower is caught up.
        let mut read = reads[0];
        let mut sent = vec![LogIndex(2), LogIndex(3), LogIndex(4)];
        while read.2 <= 31 {
            let actions = step(&mut leader, answer(read.0, read.2));
            sent.extend(entries_sent_to(&actions, 3));
            match entry_reads(&actions)[..] {
                [next] => read = next,
                [] => break,
                _ => panic!("one read at a time: {actions:?}"),
            }
        }
        let expected: Vec<LogIndex> = (2..=31).map(LogIndex).collect();
        assert_eq!(sent, expected);
        leader.check_invariants();
    }

    /// Entries read back for a follower are kept until it acknowledges them: a refusal after
    /// a lost message resends them without reading storage again.
    #[test]
    fn a_refusal_resends_from_the_entries_read_back() {
        let mut leader = leader_of_three(|config| {
            config.entry_cache_bytes = 0;
            config.max_append_bytes = 300;
        });
        let written = write_applied(&mut leader, 10, 100);
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(1),
            conflict: None,
        };
        let actions = step(&mut leader, from_peer(3, ack));
        let (id, ..) = entry_reads(&actions)[0];
        let answer = Input::Storage(StorageOutcome::EntriesRead {
            id,
            to: NodeId(3),
            low: LogIndex(2),
            entries: Ok(written.clone()),
        });
        let actions = step(&mut leader, answer);
        assert_eq!(appends_to(&actions, 3), [1, 3, 5, 7, 9], "{actions:?}");
        // The message after index 3 was lost: node 3 refuses the next one.
        let refused = step(&mut leader, from_peer(3, refusal(5, 3)));
        assert_eq!(appends_to(&refused, 3), [3], "{refused:?}");
        assert!(entry_reads(&refused).is_empty(), "{refused:?}");
    }

    /// A read that storage cannot answer (the entries were compacted meanwhile) sends the
    /// follower the snapshot instead.
    #[test]
    fn a_failed_entry_read_falls_back_to_the_snapshot() {
        let mut leader = leader_of_three(|config| config.entry_cache_bytes = 0);
        write_applied(&mut leader, 10, 100);
        let meta = rcraft_wire::SnapshotMeta {
            index: LogIndex(11),
            term: Term(1),
            membership: leader.membership().clone(),
            membership_entry: None,
            size_bytes: 100,
            checksum: 0,
        };
        let taken = Input::Apply(ApplyOutcome::SnapshotTaken {
            meta,
            retain_entries: 100,
        });
        step(&mut leader, taken);
        let ack = MessageBody::AppendResponse {
            success: true,
            match_index: LogIndex(1),
            conflict: None,
        };
        let actions = step(&mut leader, from_peer(3, ack));
        let (id, ..) = entry_reads(&actions)[0];
        let failed = Input::Storage(StorageOutcome::EntriesRead {
            id,
            to: NodeId(3),
            low: LogIndex(2),
            entries: Err(ReadEntriesError::new(ReadFailure::NotHeld, "compacted")),
        });
        let actions = step(&mut leader, failed);
        assert!(
            (actions.iter())
                .any(|a| matches!(a, Action::Storage(StorageAction::ReadSnapshotChunk { to, .. }) if *to == NodeId(3))),
            "{actions:?}"
        );
    }

    /// SIM_FINDINGS 62 (seed 12473): a follower acknowledges leader 1's entries 1..=3 of term
    /// 2, gated on the next persist; before that persist is issued, leader 3 of term 3
    /// replaces 2..=3 with its own entry 2. The persist holds 1@2 and 2@3: the term-2
    /// acknowledgement of 3 must not go out when it is confirmed, the term-3 one must.
    /// Fails with the gate releasing every held message.
    #[test]
    fn an_acknowledgement_whose_entries_a_later_leader_replaced_is_not_sent() {
        use super::super::testing::{node_2_of_three, to_node_2};
        use rcraft_wire::{Entry, EntryPayload};
        let mut follower = node_2_of_three();
        let entry =
            |index: u64, term: u64| Entry::new(Term(term), LogIndex(index), EntryPayload::Noop);
        let append = |prev: (u64, u64), entries: Vec<Entry>| MessageBody::AppendRequest {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        };
        follower.step(to_node_2(
            1,
            2,
            append((0, 0), vec![entry(1, 2), entry(2, 2), entry(3, 2)]),
        ));
        follower.step(to_node_2(3, 3, append((1, 2), vec![entry(2, 3)])));
        let actions = follower.take_actions();
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Send(_))),
            "{actions:?}"
        );
        let seq = actions
            .iter()
            .find_map(|a| match a {
                Action::Storage(StorageAction::Persist { seq, .. }) => Some(*seq),
                _ => None,
            })
            .expect("a persist");
        follower.step(Input::Storage(StorageOutcome::Persisted { seq }));
        let acknowledged: Vec<(u64, u64, u64)> = follower
            .take_actions()
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message {
                    to,
                    term,
                    body:
                        MessageBody::AppendResponse {
                            success: true,
                            match_index,
                            ..
                        },
                    ..
                }) => Some((to.0, term.0, match_index.0)),
                _ => None,
            })
            .collect();
        assert_eq!(acknowledged, [(3, 3, 2)]);
    }
}
