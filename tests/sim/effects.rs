//! Feeding inputs to a node's consensus side and carrying out what its turn decided, then
//! checking what its new state says about the cluster.
//!
//! Part of [`World`]'s single-threaded event loop. A node's consensus side is the node's own
//! consensus-thread handler (`rcraft::node::testing::SimConsensus`): the simulator feeds it
//! messages, ticks, client requests and what storage and the state machine report, with its
//! simulated time, and carries out its turn's output per destination in the order the
//! consensus thread hands it on: storage commands to the disk (a persist is acknowledged later
//! by a `Sync` event), apply commands to the state machine ([`World::apply_commands`], whose
//! progress comes back as an `Applied` answer), peer messages to the network, answers to the
//! clients.

use crate::checker::Verdict;
use crate::clients::Attempt;
use crate::params::{
    EARLY_TERM_MS, SIM_SELF_DEMOTION, SLOW_DISK_EXTRA_MS, SLOW_LINKS_EXTRA_MS, TICK_MS,
};
use crate::replica::SimCore;
use crate::state_machine::decode_write;
use crate::world::{Event, World};
use crate::world_checks;
use rcraft::core::{Input, LostEntries, ProposeError, StorageAction, StorageOutcome};
use rcraft::node::testing::{SimApplyCommand, SimTurn};
use rcraft::wire::{
    ClientRequestBody, ClientResponse, ClientResponseBody, Entry, EntryPayload, LogIndex, Message,
    MessageBody, NodeId, Role, Session, SnapshotMeta, Term,
};

use crate::disk::StoredSnapshot;

/// What a node's apply side is given, in the core's order: committed entries
/// (`Action::Apply`), or the restore of an installed snapshot (`Action::RestoreSnapshot`).
pub(crate) enum ApplyWork {
    Entries(Vec<Entry>),
    Restore(SnapshotMeta),
}

impl<C: SimCore> World<C> {
    /// Feeds `node` with `input` (in the core's terms), ends its turn, carries out what the
    /// turn decided and runs the checks.
    pub(crate) fn feed(&mut self, node: usize, input: Input) -> Verdict {
        if self.nodes[node].core.is_none() {
            return Ok(());
        }
        self.take_input(node, input)?;
        self.drain(node)
    }

    /// Hands `input` to `node`'s consensus side as the node would receive it: a message from
    /// the network, a proposal, read, membership change or leadership transfer as a client
    /// request named by its request id, storage and apply reports as those threads send
    /// them, a tick as time passing; a campaign is a fault with no node input.
    pub(crate) fn take_input(&mut self, node: usize, input: Input) -> Verdict {
        let now = self.now;
        let Some(core) = self.nodes[node].core.as_mut() else {
            return Ok(());
        };
        match input {
            Input::Tick => core.tick(now),
            Input::Message(message) => core.message(message, now),
            Input::Propose { id, session, data } => {
                let body = ClientRequestBody::Write {
                    session,
                    command: data,
                };
                core.client(id, body, now);
            }
            Input::ReadIndex { id, mode } => {
                let body = ClientRequestBody::Read {
                    query: Vec::new(),
                    mode,
                };
                core.client(id, body, now);
            }
            Input::ProposeMembership { id, membership } => {
                core.client(id, ClientRequestBody::ChangeMembership { membership }, now);
            }
            Input::TransferLeadership { target } => {
                // Nobody waits for this answer (request 0 is never a client's).
                core.client(0, ClientRequestBody::TransferLeader { target }, now);
            }
            Input::Campaign => core.campaign(),
            other => core.report(other, now)?,
        }
        Ok(())
    }

    /// Ends `node`'s turn, carries out what it decided, then checks its new state.
    pub(crate) fn drain(&mut self, node: usize) -> Verdict {
        let now = self.now;
        let id = self.nodes[node].id;
        let Some(core) = self.nodes[node].core.as_mut() else {
            return Ok(());
        };
        let turn = core
            .finish_turn(now)
            .map_err(|e| format!("node {id}: {e}"))?;
        self.carry_out_turn(node, turn)
            .map_err(|e| format!("node {id}: {e}"))?;
        self.observe(node)
    }

    /// Carries out one turn's output in the order the consensus thread hands it on: storage,
    /// apply, peers, answers.
    fn carry_out_turn(&mut self, node: usize, turn: SimTurn) -> Verdict {
        let SimTurn {
            storage,
            apply,
            peers,
            replies,
            self_demotions,
        } = turn;
        for command in storage {
            if self.tracing() {
                self.note(format!(
                    "  node {node} storage: {}",
                    describe_storage(&command)
                ));
            }
            self.carry_out_storage(node, command)?;
        }
        self.apply_commands(node, apply)?;
        for message in peers {
            if self.tracing() {
                let line = rcraft::core::describe::describe_message(&message);
                self.note(format!("  node {node} send {line}"));
            }
            self.send(node, message)?;
        }
        let mut over_wire = Vec::new();
        for (conn, request, body) in replies {
            if self.tracing() {
                self.note(format!("  node {node} answers request {request}: {body:?}"));
            }
            // Connection 0 is no connection: the request was handed to the handler directly.
            if conn == 0 {
                self.on_answer_to_client(node, request, body)?;
            } else {
                let request_id = request;
                over_wire.push((conn, ClientResponse { request_id, body }));
            }
        }
        self.send_client_replies(node, over_wire);
        for demotion in self_demotions {
            self.self_demoted(node, &demotion)?;
        }
        Ok(())
    }

    fn carry_out_storage(&mut self, node: usize, command: StorageAction) -> Verdict {
        match command {
            StorageAction::Persist {
                seq,
                hard_state,
                entries,
            } => self.persist(node, seq, hard_state, entries),
            StorageAction::ReadSnapshotChunk {
                to,
                meta,
                offset,
                max_bytes,
            } => self.read_snapshot_chunk(node, to, meta, offset, max_bytes),
            StorageAction::ReadEntries {
                id,
                to,
                low,
                high,
                max_bytes,
            } => {
                let entries = self.nodes[node].disk.read_entries(low, high, max_bytes)?;
                if entries.is_ok() {
                    self.entry_reads += 1;
                }
                let input = Input::Storage(StorageOutcome::EntriesRead {
                    id,
                    to,
                    low,
                    entries,
                });
                self.answer_after_disk_delay(node, input);
                Ok(())
            }
            StorageAction::WriteSnapshotChunk {
                from,
                meta,
                offset,
                data,
                done,
                ..
            } => self.write_snapshot_chunk(node, from, meta, offset, &data, done),
            StorageAction::CompactLog { through } => {
                let n = &mut self.nodes[node];
                n.disk.compact(through)?;
                n.log.compact(through)
            }
            StorageAction::KeepSnapshots { in_use } => {
                let n = &mut self.nodes[node];
                n.disk.keep_snapshots(in_use.clone())?;
                n.kept = in_use;
                n.remove_unused_snapshots();
                Ok(())
            }
        }
    }

    /// Carries out `node`'s apply commands, in order, on its state machine: the one route
    /// from the consensus side to the apply side.
    pub(crate) fn apply_commands(
        &mut self,
        node: usize,
        commands: Vec<SimApplyCommand>,
    ) -> Verdict {
        for command in commands {
            if self.tracing() {
                self.note(format!("  node {node} apply: {}", describe_apply(&command)));
            }
            match command {
                SimApplyCommand::Entries(entries) => {
                    self.apply(node, ApplyWork::Entries(entries))?
                }
                SimApplyCommand::WaitProposal {
                    request,
                    index,
                    term,
                } => self.on_proposed(node, request, index, term)?,
                SimApplyCommand::Read { request, index } => {
                    self.request_client.remove(&request);
                    let read = self.nodes[node]
                        .reads
                        .remove(&request)
                        .ok_or_else(|| format!("a read confirmed for unknown request {request}"))?;
                    self.history.check_read_index(&read, index)?;
                    self.nodes[node].ready_reads.push((index, request, read));
                    self.serve_ready_reads(node)?;
                }
                SimApplyCommand::Restore(meta) => self.apply(node, ApplyWork::Restore(meta))?,
                // The simulated state machine restores a received snapshot once it is stored.
                SimApplyCommand::SnapshotArriving(_) => {}
            }
        }
        Ok(())
    }

    /// The write (or membership change) `request` was appended at (`index`, `term`).
    fn on_proposed(&mut self, node: usize, request: u64, index: LogIndex, term: Term) -> Verdict {
        if self.nodes[node].membership_requests.remove(&request) {
            // A leader with an uncommitted configuration is the most fragile moment of a
            // change: churn strikes it as it strikes a new leader.
            self.maybe_churn(node, false);
            return Ok(());
        }
        self.request_client.remove(&request);
        let attempt = self.nodes[node]
            .proposals
            .remove(&request)
            .ok_or_else(|| format!("a write appended for unknown request {request}"))?;
        let replaced = self.nodes[node].proposed.insert(index, (term, attempt));
        if let Some((_, lost)) = replaced {
            self.attempt_lost(&lost);
        }
        Ok(())
    }

    /// `node` answered `request` before its entry or read got anywhere: refused, or timed
    /// out inside the node.
    pub(crate) fn on_answer_to_client(
        &mut self,
        node: usize,
        request: u64,
        body: ClientResponseBody,
    ) -> Verdict {
        if request == 0 {
            return Ok(()); // A leadership transfer's answer: nobody waits for it.
        }
        let error = match body {
            ClientResponseBody::NotLeader { leader, .. } => {
                Some(ProposeError::NotLeader { leader })
            }
            ClientResponseBody::Overloaded => Some(ProposeError::Overloaded),
            ClientResponseBody::Error {
                definite: true,
                message,
            } => Some(ProposeError::Rejected(message)),
            // Timed out inside the node: the outcome is unknown.
            ClientResponseBody::Error {
                definite: false, ..
            } => None,
            other => return Err(format!("answers request {request} with {other:?}")),
        };
        if self.nodes[node].membership_requests.remove(&request) {
            return Ok(());
        }
        if let Some(attempt) = self.nodes[node].proposals.remove(&request) {
            return match error {
                Some(error) => {
                    self.redirect_client(request, &error);
                    self.attempt_refused(&attempt, &error)
                }
                None => {
                    self.request_client.remove(&request);
                    self.attempt_lost(&attempt);
                    Ok(())
                }
            };
        }
        if self.nodes[node].reads.remove(&request).is_some() {
            let error = error.unwrap_or(ProposeError::Overloaded);
            self.redirect_client(request, &error);
            return Ok(());
        }
        Err(format!(
            "answers request {request}, which it was never sent"
        ))
    }

    /// Gray failure: only the node whose disk is slow may hand leadership over of its own
    /// accord for a slow disk (equal disks never make a leader look slow), only the node whose
    /// links are slow for slow links, only to another voter, and not again within its
    /// cool-down (in one life: the cool-down is not kept across a restart).
    fn self_demoted(&mut self, node: usize, demotion: &rcraft::core::SelfDemotion) -> Verdict {
        let incarnation = self.nodes[node].incarnation;
        let cooldown_ms = SIM_SELF_DEMOTION.cooldown_ticks * TICK_MS;
        let previous = (self.self_demotions.iter().rev())
            .find(|&&(_, n, life)| n == node && life == incarnation)
            .map(|&(at, _, _)| at);
        let slow_now = match demotion.reason {
            rcraft::core::SelfDemotionReason::SlowDisk => self.slow_disk_on,
            rcraft::core::SelfDemotionReason::SlowLinks => self.slow_links_on,
        };
        let n = &self.nodes[node];
        let facts = world_checks::DemotionFacts {
            demotion,
            node,
            id: n.id,
            now: self.now,
            previous,
            slow_disk_node: self.slow_disk_node,
            slow_links_node: self.slow_links_node,
            slow_off_for: (!slow_now)
                .then_some(self.slow_off_at)
                .flatten()
                .map(|at| self.now - at),
            to_is_voter: (n.view.as_ref()).is_some_and(|v| v.membership.is_voter(demotion.to)),
        };
        let verdict = world_checks::demotion_allowed(&facts, cooldown_ms);
        self.self_demotions.push((self.now, node, incarnation));
        verdict
    }

    fn send(&mut self, node: usize, msg: Message) -> Verdict {
        if msg.from != self.nodes[node].id {
            return Err(format!("sends a message as node {}: {msg:?}", msg.from));
        }
        if self.check_persist_contract {
            self.check_released_durably(node, &msg)?;
        }
        if let MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        } = msg.body
        {
            self.checker
                .observe_vote_granted(msg.from, msg.term, msg.to)?;
        }
        match &msg.body {
            MessageBody::AppendRequest { .. } => self.appends.sent += 1,
            MessageBody::AppendResponse {
                success: false,
                conflict: Some(_),
                ..
            } => self.appends.refused += 1,
            _ => {}
        }
        let delays = self.network.delivery_delays(&mut self.rng);
        if self.wire.is_some() {
            return self.wire_send(node, &msg, &delays);
        }
        let late = self.slow_links_on && self.slow_links_node == Some(node);
        let extra = if late { SLOW_LINKS_EXTRA_MS } else { 0 };
        for delay in delays {
            self.schedule(self.now + delay + extra, Event::Deliver(msg.clone()));
        }
        Ok(())
    }

    /// Persist before acknowledging (thesis §10.2.1): a granted vote and an append
    /// acknowledgement may leave a node only once what they promise is on its disk.
    fn check_released_durably(&self, node: usize, msg: &Message) -> Verdict {
        let n = &self.nodes[node];
        match &msg.body {
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            } => world_checks::vote_released_durably(
                msg.to,
                msg.term,
                n.disk.durable_vote(msg.term),
                n.disk.durable_term(),
            ),
            MessageBody::AppendResponse {
                success: true,
                match_index,
                ..
            } => {
                let covered = n.disk.snapshot().map_or(LogIndex(0), |s| s.meta.index);
                let durable = n.disk.durable_last_index();
                world_checks::ack_released_durably(msg.to, *match_index, covered.max(durable))
            }
            _ => Ok(()),
        }
    }

    fn persist(
        &mut self,
        node: usize,
        seq: u64,
        hard_state: Option<rcraft::core::HardState>,
        entries: Vec<Entry>,
    ) -> Verdict {
        let n = &mut self.nodes[node];
        world_checks::persist_seq_grows(seq, n.last_persist_seq)?;
        n.last_persist_seq = Some(seq);
        if let Some(rcraft::core::HardState {
            term,
            vote: Some(candidate),
            ..
        }) = hard_state
        {
            self.checker.observe_vote_cast(n.id, term, candidate);
        }
        n.log.write(&entries)?;
        for entry in &entries {
            let prev_term = n.log.term_at(entry.index.prev());
            self.checker.observe_entry(n.id, entry, prev_term)?;
        }
        n.disk.write(seq, hard_state, entries);
        let mut delay = self
            .rng
            .between(self.params.disk_delay_min_ms, self.params.disk_delay_max_ms);
        if self.slow_disk_on && self.slow_disk_node == Some(node) {
            delay += SLOW_DISK_EXTRA_MS;
        }
        let n = &mut self.nodes[node];
        let sync_at = n.disk.last_sync_at.max(self.now + delay);
        n.disk.last_sync_at = sync_at;
        let incarnation = n.incarnation;
        self.schedule(
            sync_at,
            Event::Sync {
                node,
                incarnation,
                seq,
            },
        );
        Ok(())
    }

    /// The node's apply side: its apply thread's handler (`rcraft::node::testing::SimApply`,
    /// inside the node's state machine) applies committed entries or restores an installed
    /// snapshot, and the checks watch what it does.
    fn apply(&mut self, node: usize, work: ApplyWork) -> Verdict {
        let entries = match work {
            ApplyWork::Entries(entries) => entries,
            ApplyWork::Restore(meta) => {
                // As the consensus thread hands the restore to the apply thread, and hears back.
                self.restore_snapshot(node, &meta)?;
                let now = self.now;
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.restored(meta, now);
                }
                return Ok(());
            }
        };
        let term = self.current_term(node);
        let mut applied_index = self.nodes[node].sm.applied_index();
        for entry in &entries {
            let n = &self.nodes[node];
            world_checks::applies_next(entry.index, applied_index)?;
            applied_index = entry.index;
            let id = n.id;
            if self.check_persist_contract {
                let covered = n.disk.snapshot().map_or(LogIndex(0), |s| s.meta.index);
                let durable = n.disk.durable_term_at(entry.index);
                world_checks::applied_durably(entry.index, entry.term, covered, durable)?;
            }
            self.checker.observe_apply(id, term, entry)?;
        }
        // One batch through the node's apply handler, as the apply thread takes what one
        // hand-off brought; the report to the core is the handler's own.
        let (answers, reported) = self.nodes[node].sm.apply_batch(&entries)?;
        let replies = self.nodes[node].sm.take_replies();
        if replies.len() != entries.len() {
            return Err(format!(
                "the apply handler answered {} of {} entries",
                replies.len(),
                entries.len()
            ));
        }
        for ((entry, applied), reply) in entries.iter().zip(answers).zip(replies) {
            // The history decides whether the entry took effect (finding 46).
            if let EntryPayload::Command { data, .. } = &entry.payload
                && let Some(write_id) = decode_write(data)
            {
                self.history.observe_entry_applied(write_id, &applied)?;
            }
            let n = &mut self.nodes[node];
            if let Some((proposed_term, attempt)) = n.proposed.remove(&entry.index) {
                // (index, term) names one entry: the attempt is this entry exactly when the
                // terms agree.
                if entry.term == proposed_term && carries_attempt(entry, &attempt) {
                    if self.clients_over_wire() {
                        // The client learns it from the answer's bytes.
                        self.answer_applied(node, attempt, entry.index, applied, reply);
                    } else {
                        self.attempt_applied(&attempt, entry.index, &applied)?;
                    }
                } else {
                    self.attempt_lost(&attempt);
                }
            }
        }
        self.serve_ready_reads(node)?;
        let input = world_checks::reported_applied(applied_index, reported)?;
        let incarnation = self.nodes[node].incarnation;
        let delay = self.rng.between(0, 2);
        self.schedule(
            self.now + delay,
            Event::Answer {
                node,
                incarnation,
                input: Input::Apply(input),
            },
        );
        Ok(())
    }

    /// Completes every confirmed read whose read index the state machine has reached.
    pub(crate) fn serve_ready_reads(&mut self, node: usize) -> Verdict {
        let n = &mut self.nodes[node];
        let applied = n.sm.applied_index();
        let (done, waiting): (Vec<_>, Vec<_>) = n
            .ready_reads
            .drain(..)
            .partition(|(index, _, _)| *index <= applied);
        n.ready_reads = waiting;
        if done.is_empty() {
            return Ok(());
        }
        let writes = self.nodes[node].sm.writes();
        for (_, request, read) in done {
            if self.clients_over_wire() {
                // Complete when the client reads the answer.
                self.answer_read(node, request, read, applied, writes.clone());
            } else {
                self.history
                    .complete_read(&read, applied, &writes, self.now)?;
            }
        }
        Ok(())
    }

    fn read_snapshot_chunk(
        &mut self,
        node: usize,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        max_bytes: u64,
    ) -> Verdict {
        let n = &self.nodes[node];
        let snapshot = n
            .snapshots
            .get(&meta.index)
            .filter(|s| s.meta == meta)
            .ok_or_else(|| {
                format!("asks to read snapshot {meta:?}, which it does not have (any more)")
            })?;
        let start = offset.min(snapshot.meta.size_bytes) as usize;
        let end = offset
            .saturating_add(max_bytes)
            .min(snapshot.meta.size_bytes) as usize;
        let data = snapshot.bytes[start..end].to_vec();
        let input = Input::Storage(StorageOutcome::SnapshotChunkRead {
            to,
            meta,
            offset,
            data,
        });
        self.answer_after_disk_delay(node, input);
        Ok(())
    }

    /// Schedules `input` for `node` (in its current life) after a disk delay.
    fn answer_after_disk_delay(&mut self, node: usize, input: Input) {
        let incarnation = self.nodes[node].incarnation;
        let delay = self
            .rng
            .between(self.params.disk_delay_min_ms, self.params.disk_delay_max_ms);
        self.schedule(
            self.now + delay,
            Event::Answer {
                node,
                incarnation,
                input,
            },
        );
    }

    fn write_snapshot_chunk(
        &mut self,
        node: usize,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Verdict {
        let outcome = self.nodes[node]
            .disk
            .write_chunk(from, &meta, offset, data, done)?;
        let delay = self
            .rng
            .between(self.params.disk_delay_min_ms, self.params.disk_delay_max_ms);
        // The storage thread answers in the order it was given work: after every sync
        // scheduled before this chunk and before any scheduled after it (the core tells the
        // final chunk's answer from earlier ones by that order).
        let n = &mut self.nodes[node];
        let at = n.disk.last_sync_at.max(self.now + delay);
        n.disk.last_sync_at = at;
        let incarnation = n.incarnation;
        let event = match outcome.installed {
            Some(snapshot) => Event::Install {
                node,
                incarnation,
                snapshot,
            },
            // A snapshot not newer than the durable one: the core hears it is installed, and
            // asks for no restore (its log holds as much).
            None if outcome.covered => Event::Answer {
                node,
                incarnation,
                input: Input::Storage(StorageOutcome::SnapshotInstalled { meta }),
            },
            None => Event::Answer {
                node,
                incarnation,
                input: Input::Storage(StorageOutcome::SnapshotChunkWritten {
                    meta,
                    next_offset: outcome.next_offset,
                    rejected: outcome.rejected,
                }),
            },
        };
        self.schedule(at, event);
        Ok(())
    }

    /// Storage installed the received snapshot: the node's consensus side hears it
    /// (`SnapshotStored`); the core asks for the restore (`Action::RestoreSnapshot`) when it is
    /// newer than its own.
    pub(crate) fn on_install(
        &mut self,
        node: usize,
        incarnation: u64,
        snapshot: StoredSnapshot,
    ) -> Verdict {
        let n = &mut self.nodes[node];
        if n.core.is_none() || n.incarnation != incarnation {
            return Ok(());
        }
        let core_snapshot = n.view.as_ref().map_or(LogIndex(0), |v| v.snapshot_index);
        // The core resets its log only for a snapshot newer than the one it has.
        if snapshot.meta.index > core_snapshot {
            n.log.install_snapshot(
                snapshot.meta.index,
                snapshot.meta.term,
                &snapshot.meta.membership,
            );
        }
        let meta = snapshot.meta.clone();
        n.snapshots.insert(meta.index, snapshot);
        self.feed(
            node,
            Input::Storage(StorageOutcome::SnapshotInstalled { meta }),
        )
    }

    /// Part of [`World::apply`]: the apply side restores the state machine from the installed snapshot the core names
    /// (or the newer one installed since, as the node's apply thread reads the current one).
    fn restore_snapshot(&mut self, node: usize, meta: &SnapshotMeta) -> Verdict {
        let n = &self.nodes[node];
        let id = n.id;
        let snapshot = n
            .disk
            .snapshot()
            .filter(|current| current.meta.index >= meta.index)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "restores snapshot {} which storage does not hold",
                    meta.index
                )
            })?;
        world_checks::restore_not_behind(id, snapshot.meta.index, n.sm.applied_index())?;
        self.restore_checked(id, &snapshot)?;
        (self.nodes[node].sm)
            .restore(meta, &snapshot)
            .map_err(|e| format!("node {id}: {e}"))?;
        self.serve_ready_reads(node)
    }

    fn current_term(&self, node: usize) -> Term {
        self.nodes[node]
            .core
            .as_ref()
            .map_or(Term(0), |c| c.view().term)
    }

    /// Checks what `node`'s state after a step says: its own consistency, election safety,
    /// leader completeness, and every newly committed entry.
    fn observe(&mut self, node: usize) -> Verdict {
        let Some(core) = self.nodes[node].core.as_ref() else {
            return Ok(());
        };
        let view = core.view();
        let n = &self.nodes[node];
        let id = n.id;
        let (_, latest) = n.log.latest_membership();
        world_checks::view_consistent(id, n.view.as_ref(), &view, n.log.last_index(), latest)?;
        let became_leader = view.role == Role::Leader
            && n.view
                .as_ref()
                .is_none_or(|v| v.role != Role::Leader || v.term != view.term);
        if view.role == Role::Leader {
            self.checker.observe_leader(id, view.term, &n.log)?;
        }
        if became_leader {
            self.checker.observe_election(
                id,
                view.term,
                &view.membership,
                &n.log,
                view.commit_index,
            )?;
        }
        let leader_commit = view.role == Role::Leader
            && n.view.as_ref().is_some_and(|v| {
                v.role == Role::Leader && v.term == view.term && v.commit_index < view.commit_index
            });
        if leader_commit {
            self.check_commit_quorum(node, &view)?;
        }
        let early_commit = view.role == Role::Leader
            && !became_leader
            && n.view
                .as_ref()
                .is_some_and(|v| v.commit_index < view.commit_index)
            && n.leader_since
                .is_some_and(|since| self.now <= since + EARLY_TERM_MS);
        self.observe_commits(node, &view)?;
        let n = &self.nodes[node];
        let appended = n
            .view
            .as_ref()
            .is_none_or(|v| v.last_index != view.last_index);
        if view.role == Role::Leader && (appended || became_leader) {
            self.checker
                .check_one_uncommitted_change(id, view.term, &n.log)?;
        }
        if became_leader {
            self.recall_retired_members(&view.membership)?;
            self.nodes[node].leader_since = Some(self.now);
            self.maybe_churn(node, false);
        } else if early_commit {
            self.maybe_churn(node, true);
        }
        let n = &mut self.nodes[node];
        n.last_commit = n.last_commit.max(view.commit_index);
        n.view = Some(view);
        Ok(())
    }

    fn observe_commits(&mut self, node: usize, view: &crate::replica::CoreView) -> Verdict {
        let n = &self.nodes[node];
        let id = n.id;
        let mut retire_check = false;
        for index in n.last_commit.0 + 1..=view.commit_index.0 {
            let index = LogIndex(index);
            if index <= n.log.base_index() {
                continue;
            }
            let entry = n
                .log
                .get(index)
                .ok_or_else(|| format!("node {id}: commit index {index} is beyond its log"))?;
            let leaders = self.nodes.iter().filter_map(|other| {
                let v = other.view.as_ref()?;
                (other.core.is_some() && v.role == Role::Leader && other.id != id)
                    .then_some((other.id, v.term, &other.log))
            });
            self.checker.observe_commit(id, view.term, entry, leaders)?;
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                retire_check = true;
            }
        }
        if retire_check {
            self.schedule_retirements();
        }
        Ok(())
    }

    /// A leader advanced its commit index to `view.commit_index`: a quorum of the
    /// configuration it uses (both halves when joint) holds that entry, durably when the
    /// persistence contract is checked (else in the log its persist actions describe).
    fn check_commit_quorum(&self, node: usize, view: &crate::replica::CoreView) -> Verdict {
        let n = &self.nodes[node];
        let index = view.commit_index;
        let Some(term) = n.log.term_at(index) else {
            return Ok(());
        };
        // The commit may have been counted under the configuration before an uncommitted
        // change appended later in the same turn.
        let (latest_at, _) = n.log.latest_membership();
        let before = (latest_at > index).then(|| n.log.membership_through(latest_at.prev()).1);
        let holds = |id: NodeId| {
            self.index_of(id)
                .is_some_and(|i| self.holds(i, index, term) || self.repairing_covers(i, index))
        };
        world_checks::commit_quorum(
            n.id,
            view.term,
            &view.membership,
            before,
            index,
            term,
            holds,
        )
    }

    /// True when `node` lost `index` from its disk after syncing it and is repairing it. Its
    /// acknowledgement of the entry, sent before the loss, still counts: until it holds the
    /// range again a repairing node votes only for a candidate whose log covers it
    /// (src/core/repair.rs), so every quorum that can elect a leader meanwhile holds what its
    /// members acknowledged or checked the candidate against it. (Seed 345: a leader committed with a stale match of a follower that
    /// restarted having lost the entries, and the holders alone were a minority.)
    /// A node that is down has no view, but its disk still claims the range and it restarts
    /// repairing it (seed 3480: the node crashed again before the leader counted its old
    /// acknowledgement), so the disk's claim counts as well.
    fn repairing_covers(&self, node: usize, index: LogIndex) -> bool {
        let covers = |lost: LostEntries| lost.from <= index && index <= lost.through;
        let n = &self.nodes[node];
        n.view
            .as_ref()
            .and_then(|v| v.repairing)
            .is_some_and(covers)
            || n.disk.lost().is_some_and(covers)
    }

    /// True when `node` holds the entry (`index`, `term`), or a snapshot covering it.
    fn holds(&self, node: usize, index: LogIndex, term: Term) -> bool {
        let n = &self.nodes[node];
        if self.check_persist_contract {
            let covered = n.disk.snapshot().is_some_and(|s| s.meta.index >= index);
            covered || n.disk.durable_term_at(index) == Some(term)
        } else {
            n.log.base_index() >= index || n.log.term_at(index) == Some(term)
        }
    }
}

/// True when `entry` is the command `attempt` sent: its write, or a registration.
fn carries_attempt(entry: &Entry, attempt: &Attempt) -> bool {
    match (&entry.payload, attempt.write_id) {
        (EntryPayload::Command { session, .. }, None) => *session == Some(Session::REGISTER),
        (EntryPayload::Command { data, .. }, Some(write_id)) => {
            decode_write(data) == Some(write_id)
        }
        _ => false,
    }
}

/// A storage command as the trace prints it.
fn describe_storage(command: &StorageAction) -> String {
    use rcraft::core::describe::{describe_entries, describe_snapshot_meta};
    match command {
        StorageAction::Persist {
            seq,
            hard_state,
            entries,
        } => format!(
            "persist #{seq} hard state {hard_state:?} entries {}",
            describe_entries(entries)
        ),
        StorageAction::WriteSnapshotChunk {
            meta,
            offset,
            data,
            done,
            ..
        } => format!(
            "write chunk of {} at {offset} ({} bytes, done {done})",
            describe_snapshot_meta(meta),
            data.len()
        ),
        other => format!("{other:?}"),
    }
}

/// An apply command as the trace prints it.
fn describe_apply(command: &SimApplyCommand) -> String {
    match command {
        SimApplyCommand::Entries(entries) => {
            format!(
                "entries {}",
                rcraft::core::describe::describe_entries(entries)
            )
        }
        other => format!("{other:?}"),
    }
}
