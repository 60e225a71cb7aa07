//! Term checks common to every peer message, then dispatch to one handler per message kind
//! (Raft paper §5.1: a higher term turns any node into a follower; a lower term is stale).
//!
//! Runs on the replica's owner thread as part of `Replica::step`.

use super::repair::{PairAnswer, RepairTail};
use super::replica::{Phase, Replica};
use rcraft_wire::{Message, MessageBody};

impl Replica {
    /// Handles one peer message.
    pub(super) fn on_message(&mut self, message: Message) {
        if message.to != self.id || message.from == self.id {
            return;
        }
        // Outside the term rules (`repair.rs`, `link_probe.rs`): a repairing node's question
        // or a link probe must not disturb anyone's term, and any answer is news.
        match message.body {
            MessageBody::RepairQuery { lost } => {
                // Its term is adopted as any later term is (a repairing node raises its
                // witnesses' terms this way, `repair.rs`), but not by a node in a leader's
                // lease (as for a vote request: its promise to the leader holds) and without
                // restarting a running election timer.
                if message.term > self.term && !self.in_leader_lease(false) {
                    self.step_down_for_candidate(message.term);
                }
                return self.on_repair_query(message.from, lost);
            }
            MessageBody::RepairAnswer {
                log_end,
                last_log_index,
                last_log_term,
                snapshot_index,
                last_joint_index,
                snapshot_pair,
                range_membership,
            } => {
                self.on_vote_recovery_answer(message.from, message.term);
                let answer = PairAnswer {
                    log_end,
                    last_log: (last_log_index, last_log_term),
                    snapshot_index,
                    last_joint_index,
                    snapshot_pair,
                };
                self.on_repair_answer_of_pair(message.from, answer);
                let answer = RepairTail {
                    above: false,
                    last: (last_log_index, last_log_term),
                    usable: log_end == last_log_index && !range_membership,
                };
                return self.on_repair_answer(message.from, message.term, log_end, answer);
            }
            MessageBody::LinkProbe {
                sent_tick,
                peers_milliticks,
            } => {
                let (from, term) = (message.from, message.term);
                return self.on_link_probe(from, term, sent_tick, peers_milliticks);
            }
            MessageBody::LinkProbeReply { sent_tick } => {
                return self.on_link_probe_reply(message.from, sent_tick);
            }
            _ => {}
        }
        if message.term > self.term && !self.on_higher_term(&message) {
            return;
        }
        if message.term < self.term {
            self.on_lower_term(&message);
            return;
        }
        let from = message.from;
        let term = message.term;
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.on_vote_request(from, term, pre_vote, last_log_index, last_log_term),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.on_vote_response(from, term, pre_vote, granted)
            }
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.on_append_request(from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            MessageBody::AppendResponse {
                success,
                match_index,
                conflict,
            } => self.on_append_response(from, success, match_index, conflict),
            MessageBody::Heartbeat {
                leader_commit,
                read_context,
            } => self.on_heartbeat(from, leader_commit, read_context),
            MessageBody::HeartbeatResponse { read_context } => {
                self.on_heartbeat_response(from, read_context)
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                chunk_crc,
                done,
            } => self.on_install_snapshot(from, meta, offset, data, chunk_crc, done),
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                rejected,
            } => {
                self.on_install_snapshot_response(from, snapshot_index, next_offset, done, rejected)
            }
            MessageBody::TimeoutNow => self.on_timeout_now(from),
            MessageBody::ReadIndexRequest { request } => self.on_read_index_request(from, request),
            MessageBody::ReadIndexResponse { request, index } => {
                self.on_read_index_response(from, request, index)
            }
            MessageBody::RepairQuery { .. }
            | MessageBody::RepairAnswer { .. }
            | MessageBody::LinkProbe { .. }
            | MessageBody::LinkProbeReply { .. } => {
                unreachable!("handled before the term checks")
            }
        }
    }

    /// A message from a later term. Returns false when the message must be dropped.
    fn on_higher_term(&mut self, message: &Message) -> bool {
        match &message.body {
            MessageBody::VoteRequest {
                pre_vote,
                leadership_transfer,
                ..
            } => {
                // Thesis §4.2.3: a node that heard from a live leader recently ignores
                // would-be candidates, so a partitioned node cannot depose a healthy leader.
                if self.in_leader_lease(*pre_vote) && !leadership_transfer {
                    return false;
                }
                if !pre_vote {
                    self.step_down_for_candidate(message.term);
                }
                true
            }
            // A granted pre-vote carries the term the candidate will campaign in.
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            } => true,
            MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from));
                true
            }
            _ => {
                self.become_follower(message.term, None);
                true
            }
        }
    }

    /// Adopts a candidate's higher term without restarting a running election timer. Paper
    /// Fig. 2: a follower's timer restarts only when it grants a vote or hears from the
    /// current leader. Restarting it here let candidates whose logs are too short to win keep
    /// resetting the timer of the one node that could win, so without Pre-Vote no leader was
    /// elected (simulator seed 9648). A leader stepping down has no follower timer running
    /// and starts a fresh one.
    fn step_down_for_candidate(&mut self, term: rcraft_wire::Term) {
        let was_leader = self.phase == Phase::Leader;
        let (elapsed, timeout) = (self.election_elapsed, self.election_timeout_ticks);
        self.become_follower(term, None);
        if !was_leader {
            self.election_elapsed = elapsed;
            self.election_timeout_ticks = timeout;
        }
    }

    /// A message from an earlier term: tell a stale leader or (pre-)candidate about our term
    /// (paper Fig. 2: reply false with the current term). Without this, a node whose term ran
    /// ahead while it was cut off, and whose vote requests a live leader's followers ignore,
    /// could never rejoin; and a candidate whose term lags could never catch up with voters
    /// whose term others keep raising (sim seed 13308: a learner with a stale configuration
    /// kept campaigning against the one voter the only electable candidate needed).
    fn on_lower_term(&mut self, message: &Message) {
        match &message.body {
            MessageBody::AppendRequest { .. } | MessageBody::Heartbeat { .. } => {
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        success: false,
                        match_index: rcraft_wire::LogIndex(0),
                        conflict: None,
                    },
                );
            }
            MessageBody::VoteRequest { pre_vote, .. } => {
                self.send(
                    message.from,
                    MessageBody::VoteResponse {
                        pre_vote: *pre_vote,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// True when this node heard from a live leader less than the minimum election timeout
    /// ago, and so ignores would-be candidates: pre-vote requests always (thesis §9.6, the
    /// second pre-vote condition), real vote requests only with CheckQuorum (thesis §4.2.3),
    /// which also makes a leader that is no longer live step down.
    pub(super) fn in_leader_lease(&self, pre_vote: bool) -> bool {
        if self.boot_lease && self.now_ticks < self.config.election_timeout_min_ticks {
            return true;
        }
        (self.config.check_quorum || pre_vote)
            && self.leader.is_some()
            && (self.phase == Phase::Leader
                || self.election_elapsed < self.config.election_timeout_min_ticks)
    }
}
