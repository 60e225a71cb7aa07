//! What an operator wants to know about the consensus core, told once per change: elections
//! started, won and lost, step-downs, leader changes and membership changes, each with its
//! term and reason, logged at info.
//!
//! The core is pure and logs nothing (tests/core_purity.rs); the consensus thread calls
//! [`Observer::observe`] once per turn, after the core's actions are carried out, and this
//! module compares the core's role, term, leader and configuration with what it saw last
//! turn. A reason is read from the change itself: a leader that steps down in its own term
//! was either removed from the configuration or lost a quorum (CheckQuorum, thesis §6.2); in
//! a later term it saw that term from another node. Several changes inside one turn are seen
//! as one (a candidate that wins at once is seen going from follower to leader).
//!
//! The same observer feeds the node's metrics (node/metrics.rs) what only the consensus
//! thread sees: leader changes, committed and applied entries, pending and failed requests,
//! snapshot chunks sent and received, and peer round trips. A round trip is sampled: with none
//! in flight to a peer, the next request sent to it (append, heartbeat, vote, snapshot chunk)
//! starts one and its next response ends it (a lost message makes one sample long, by at most
//! a heartbeat interval; one older than [`ROUND_TRIP_SAMPLE_MAX`] is dropped).
//!
//! Owned by the consensus thread. Invariant: `seen` is what the last call observed, so each
//! change is told exactly once. Repeated lost elections (a node cut off from the others keeps
//! campaigning) are logged at info once, then at debug, and counted in the line that reports
//! the next leader.

use super::limits::DROPPED_FRAMES_RECORD_INTERVAL;
use super::metrics::{MetricsHook, Stage};
use crate::admin::describe_membership;
use crate::core::{Replica, SelfDemotion, SelfDemotionReason};
use rcraft_wire::{LogIndex, Membership, Message, MessageBody, NodeId, Role, SnapshotMeta, Term};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A round trip still unanswered after this long is not sampled (the peer is down or the
/// message was lost).
const ROUND_TRIP_SAMPLE_MAX: Duration = Duration::from_secs(5);

/// One change worth telling an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notable {
    /// What kind of change (a short fixed word, e.g. `election_won`).
    pub(crate) kind: &'static str,
    /// The node's term after the change.
    pub(crate) term: Term,
    /// The change and its reason, as one sentence.
    pub(crate) detail: String,
    /// False for repeats an operator does not need at info (a further lost election).
    pub(crate) info: bool,
}

/// What the observer saw last turn.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    membership: Membership,
}

impl Seen {
    fn of(replica: &Replica) -> Seen {
        Seen {
            role: replica.role(),
            term: replica.hard_state().term,
            leader: replica.leader(),
            membership: replica.membership().clone(),
        }
    }

    /// True when `replica` is where this was taken (cheap: no copies).
    fn matches(&self, replica: &Replica) -> bool {
        self.role == replica.role()
            && self.term == replica.hard_state().term
            && self.leader == replica.leader()
            && self.membership == *replica.membership()
    }
}

/// Watches one replica from its consensus thread.
pub(crate) struct Observer {
    id: NodeId,
    seen: Seen,
    /// Elections started or lost since the node last knew a leader.
    elections_lost: u64,
    metrics: MetricsHook,
    /// Commit and applied index at the last turn, for the committed and applied counters;
    /// `None` before the first turn (what was recovered is not counted).
    counted: Option<(LogIndex, LogIndex)>,
    /// Per peer, when the sampled message in flight was sent.
    round_trips: BTreeMap<NodeId, Instant>,
    /// Per peer, when the first chunk of the snapshot being sent to it was read.
    snapshots_sending: BTreeMap<NodeId, Instant>,
    /// When the first chunk of the snapshot being received arrived.
    snapshot_receiving: Option<Instant>,
    /// Stage clocks of the write path (node/metrics.rs, `Stage`).
    stages: StageClocks,
    /// Peer messages dropped at the last look, and when that was.
    dropped_seen: (u64, Option<Instant>),
}

/// When each write in flight entered its current stage. Bounded: at most
/// [`STAGE_CLOCKS_MAX`] entries per table (the oldest are forgotten).
#[derive(Default)]
struct StageClocks {
    /// Leader: proposed entries not yet committed, by index.
    proposed: BTreeMap<LogIndex, Instant>,
    /// Leader: committed entries not yet reported applied, by index.
    committed: BTreeMap<LogIndex, Instant>,
    /// Leader: per follower, when the sampled append with entries was sent.
    replicating: BTreeMap<NodeId, Instant>,
    /// Follower: last index of each append received with entries, and when.
    received: BTreeMap<LogIndex, Instant>,
}

/// Largest number of writes each stage clock table follows.
const STAGE_CLOCKS_MAX: usize = 65_536;

/// Inserts into a bounded clock table, forgetting the oldest entry when full.
fn clock_in(table: &mut BTreeMap<LogIndex, Instant>, index: LogIndex, at: Instant) {
    if table.len() >= STAGE_CLOCKS_MAX {
        table.pop_first();
    }
    table.insert(index, at);
}

/// Removes and returns the clocks of every index through `through`.
fn clocks_through(
    table: &mut BTreeMap<LogIndex, Instant>,
    through: LogIndex,
) -> Vec<(LogIndex, Instant)> {
    if table
        .first_key_value()
        .is_none_or(|(&first, _)| first > through)
    {
        return Vec::new();
    }
    let later = table.split_off(&LogIndex(through.0.saturating_add(1)));
    let done = std::mem::replace(table, later);
    done.into_iter().collect()
}

impl Observer {
    /// Starts watching `replica` as it is now (recovered state is not a change).
    pub(crate) fn new(replica: &Replica) -> Observer {
        Observer {
            id: replica.id(),
            seen: Seen::of(replica),
            elections_lost: 0,
            metrics: MetricsHook::default(),
            counted: None,
            round_trips: BTreeMap::new(),
            snapshots_sending: BTreeMap::new(),
            snapshot_receiving: None,
            stages: StageClocks::default(),
            dropped_seen: (0, None),
        }
    }

    /// Writes to `metrics` from now on.
    pub(crate) fn set_metrics(&mut self, metrics: MetricsHook) {
        self.metrics = metrics;
    }

    /// Messages handed to the network thread: starts a round-trip sample per idle peer, and
    /// a replication sample per follower with no append in flight.
    pub(crate) fn on_sent(&mut self, messages: &[Message]) {
        let now = Instant::now();
        for message in messages {
            if let MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            } = message.body
            {
                let detail = format!("voted for node {} in term {}", message.to, message.term);
                self.record(message.term, "vote_granted", detail);
            }
        }
        for message in messages.iter().filter(|m| is_request(&m.body)) {
            self.round_trips.entry(message.to).or_insert(now);
            if matches!(&message.body, MessageBody::AppendRequest { entries, .. } if !entries.is_empty())
            {
                self.stages.replicating.entry(message.to).or_insert(now);
            }
        }
    }

    /// The consensus thread took a client request the network thread decoded at `received`.
    pub(crate) fn on_client_request(&self, received: Instant) {
        let waited = received.elapsed();
        self.metrics
            .with(|m| m.stage(Stage::QueueWait, None, waited));
    }

    /// The core appended a proposal at `index` (leader).
    pub(crate) fn on_proposed(&mut self, index: LogIndex) {
        clock_in(&mut self.stages.proposed, index, Instant::now());
    }

    /// A message from a peer: ends its round-trip sample; counts snapshot chunks received.
    pub(crate) fn on_peer_message(&mut self, message: &Message) {
        let now = Instant::now();
        let response = is_response(&message.body);
        if let Some(sent) = response
            .then(|| self.round_trips.remove(&message.from))
            .flatten()
        {
            let took = now.saturating_duration_since(sent);
            if took <= ROUND_TRIP_SAMPLE_MAX {
                self.metrics.with(|m| m.peer_round_trip(message.from, took));
            }
        }
        match &message.body {
            MessageBody::AppendResponse { .. } => {
                if let Some(sent) = self.stages.replicating.remove(&message.from) {
                    let took = now.saturating_duration_since(sent);
                    (self.metrics).with(|m| m.stage(Stage::Replication, Some(message.from), took));
                }
            }
            MessageBody::AppendRequest {
                prev_log_index,
                entries,
                ..
            } if !entries.is_empty() => {
                let last = LogIndex(prev_log_index.0 + entries.len() as u64);
                clock_in(&mut self.stages.received, last, now);
            }
            _ => {}
        }
        if let MessageBody::InstallSnapshot { offset, data, .. } = &message.body {
            if *offset == 0 || self.snapshot_receiving.is_none() {
                self.snapshot_receiving = Some(now);
                let detail = format!(
                    "receiving a snapshot from node {} from offset {offset}",
                    message.from
                );
                self.record(message.term, "snapshot_receive_started", detail);
            }
            self.metrics
                .with(|m| m.snapshot_chunk_received(data.len() as u64));
        }
    }

    /// A received snapshot is stored.
    pub(crate) fn on_snapshot_stored(&mut self) {
        if let Some(started) = self.snapshot_receiving.take() {
            self.metrics
                .with(|m| m.snapshot_received(started.elapsed()));
        }
        let term = self.seen.term;
        self.record(
            term,
            "snapshot_stored",
            "a received snapshot is stored".to_string(),
        );
    }

    /// The storage thread read a chunk of the snapshot being sent to `to`.
    pub(crate) fn on_snapshot_chunk_read(
        &mut self,
        to: NodeId,
        meta: &SnapshotMeta,
        offset: u64,
        bytes: usize,
    ) {
        let now = Instant::now();
        let term = self.seen.term;
        if offset == 0 {
            self.snapshots_sending.insert(to, now);
            let detail = format!(
                "sending the snapshot at index {} ({} bytes) to node {to}",
                meta.index, meta.size_bytes
            );
            self.record(term, "snapshot_send_started", detail);
        }
        let last = offset + bytes as u64 >= meta.size_bytes;
        let took = match last {
            true => self
                .snapshots_sending
                .remove(&to)
                .map(|started| now.saturating_duration_since(started)),
            false => None,
        };
        if let Some(took) = took {
            let detail = format!(
                "read the last chunk of the snapshot at index {} for node {to} after {} ms",
                meta.index,
                took.as_millis()
            );
            self.record(term, "snapshot_send_done", detail);
        }
        self.metrics
            .with(|m| m.snapshot_chunk_sent(bytes as u64, took));
    }

    /// The core hands leadership over because this leader's writes, or its links, are far
    /// slower than its followers' (core/gray_failure.rs): says why with the figures, in
    /// milliseconds.
    pub(crate) fn on_self_demotion(&mut self, demotion: &SelfDemotion, tick: Duration, term: Term) {
        let detail = describe_self_demotion(demotion, tick);
        log::warn!("node {}: {detail}", self.id);
        self.record(term, "self_demotion", detail);
        self.metrics.with(|m| m.self_demoted(demotion.reason));
    }

    /// Records one event in the flight recorder.
    fn record(&self, term: Term, kind: &str, detail: String) {
        self.metrics.with(|m| m.recorder.record(term, kind, detail));
    }

    /// The flight recorder's events (empty without metrics).
    pub(crate) fn recorded_events(&self) -> Vec<rcraft_wire::RecordedEvent> {
        let mut events = Vec::new();
        self.metrics.with(|m| events = m.recorder.events());
        events
    }

    /// At most once per [`DROPPED_FRAMES_RECORD_INTERVAL`], records the peer messages the
    /// network dropped since the last look.
    fn record_dropped_frames(&mut self, term: Term) {
        let now = Instant::now();
        let (seen, checked) = self.dropped_seen;
        if checked.is_some_and(|at| now - at < DROPPED_FRAMES_RECORD_INTERVAL) {
            return;
        }
        let mut stats = None;
        self.metrics.with(|m| stats = m.dropped_frames());
        let Some(s) = stats else {
            return;
        };
        let total = s.peer_dropped_queue_full
            + s.peer_dropped_link_down
            + s.peer_dropped_unknown
            + s.peer_dropped_events_full
            + s.commands_dropped_full;
        self.dropped_seen = (total, Some(now));
        if checked.is_some() && total > seen {
            let detail = format!(
                "{} peer messages dropped since the last look (totals: queue full {}, link \
                 down {}, unknown peer {}, events full {}, commands full {})",
                total - seen,
                s.peer_dropped_queue_full,
                s.peer_dropped_link_down,
                s.peer_dropped_unknown,
                s.peer_dropped_events_full,
                s.commands_dropped_full
            );
            self.record(term, "frames_dropped", detail);
        }
    }

    /// The node's per-stage write latency (empty without metrics).
    pub(crate) fn latency_report(&self) -> Vec<rcraft_wire::StageLatency> {
        let mut report = Vec::new();
        self.metrics.with(|m| report = m.latency_report());
        report
    }

    /// A client request was answered with an error (a redirect to the leader is not one).
    pub(crate) fn on_request_failed(&self) {
        self.metrics.with(|m| m.proposals_failed.inc());
    }

    /// Once per turn: counts what the turn committed and applied, the requests still waiting,
    /// and tells every change of role, leader or configuration.
    pub(crate) fn on_turn(&mut self, replica: &Replica, applied: LogIndex, pending: usize) {
        let commit = replica.hard_state().commit;
        let (counted_commit, counted_applied) = self.counted.unwrap_or((commit, applied));
        self.metrics.with(|m| {
            m.proposals_committed
                .inc_by(commit.0.saturating_sub(counted_commit.0));
            m.proposals_applied
                .inc_by(applied.0.saturating_sub(counted_applied.0));
            m.proposals_pending.set(pending as i64);
        });
        self.counted = Some((commit.max(counted_commit), applied.max(counted_applied)));
        self.time_stages(replica, commit, applied);
        self.record_dropped_frames(replica.hard_state().term);
        self.observe(replica);
    }

    /// Ends the stages that the core's commit, applied and persisted indexes passed.
    fn time_stages(&mut self, replica: &Replica, commit: LogIndex, applied: LogIndex) {
        let now = Instant::now();
        let clocks = &mut self.stages;
        if replica.role() != Role::Leader {
            // Entries proposed by an earlier term of ours may be replaced or committed by
            // another leader: their clocks no longer time our stages.
            clocks.proposed.clear();
            clocks.committed.clear();
            clocks.replicating.clear();
        }
        let metrics = &self.metrics;
        for (index, proposed) in clocks_through(&mut clocks.proposed, commit) {
            metrics.with(|m| m.stage(Stage::Commit, None, now - proposed));
            clock_in(&mut clocks.committed, index, now);
        }
        for (_, committed) in clocks_through(&mut clocks.committed, applied) {
            metrics.with(|m| m.stage(Stage::Apply, None, now - committed));
        }
        for (_, received) in clocks_through(&mut clocks.received, replica.persisted_index()) {
            metrics.with(|m| m.stage(Stage::ReceiveToDurable, None, now - received));
        }
    }

    /// Tells (logs) every change since the last call.
    fn observe(&mut self, replica: &Replica) {
        if self.seen.matches(replica) {
            return;
        }
        let now = Seen::of(replica);
        let changes = self.changes(&now);
        if now.leader != self.seen.leader && now.leader.is_some() {
            self.metrics.with(|m| m.leader_changes.inc());
        }
        if now.role == Role::Leader && self.seen.role != Role::Leader {
            self.metrics.with(|m| m.elections_won.inc());
        }
        self.seen = now;
        for change in &changes {
            self.record(change.term, change.kind, change.detail.clone());
            let level = if change.info {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(level, "node {}: {}", self.id, change.detail);
        }
    }

    fn changes(&mut self, now: &Seen) -> Vec<Notable> {
        let was = self.seen.clone();
        let mut changes = Vec::new();
        if was.membership != now.membership {
            changes.push(self.notable(
                "membership_changed",
                now.term,
                format!(
                    "configuration changed in term {}: now {} (was {})",
                    now.term,
                    describe_membership(&now.membership),
                    describe_membership(&was.membership)
                ),
            ));
        }
        let role_change = match (was.role, now.role) {
            (a, b) if a == b => None,
            (Role::Leader, _) => Some(self.stepped_down(&was, now)),
            (_, Role::Leader) => Some(self.won(&was, now)),
            (Role::Candidate, _) => Some(self.lost(&was, now)),
            (_, Role::Candidate) => Some(self.campaigning(&was, now)),
            _ => None,
        };
        changes.extend(role_change);
        let leader_known = now.leader.is_some() && now.role != Role::Leader;
        if leader_known && (was.leader != now.leader || was.term != now.term) {
            changes.push(self.following(now));
        } else if was.role == Role::Candidate && now.role == Role::Candidate && was.term != now.term
        {
            // A further round while cut off: a pre-vote that turned into a real election,
            // or a new election after a split vote.
            changes.push(self.campaigning(&was, now));
        }
        changes
    }

    fn notable(&self, kind: &'static str, term: Term, detail: String) -> Notable {
        Notable {
            kind,
            term,
            detail,
            info: true,
        }
    }

    fn won(&mut self, was: &Seen, now: &Seen) -> Notable {
        self.elections_lost = 0;
        let from = if was.role == Role::Candidate {
            "candidate"
        } else {
            "follower"
        };
        self.notable(
            "election_won",
            now.term,
            format!(
                "won the election for term {} (was {from} in term {}); now leader",
                now.term, was.term
            ),
        )
    }

    fn stepped_down(&mut self, was: &Seen, now: &Seen) -> Notable {
        let reason = if now.term > was.term {
            match now.leader {
                Some(leader) => format!("node {leader} leads term {}", now.term),
                None => format!("another node started term {}", now.term),
            }
        } else if !now.membership.is_voter(self.id) {
            "it was removed from the voters".to_string()
        } else {
            "it has not heard from a quorum of voters for an election timeout (CheckQuorum)"
                .to_string()
        };
        self.notable(
            "stepped_down",
            now.term,
            format!("stepped down as leader of term {}: {reason}", was.term),
        )
    }

    fn lost(&mut self, was: &Seen, now: &Seen) -> Notable {
        self.elections_lost += 1;
        let reason = match now.leader {
            Some(leader) => format!("node {leader} leads term {}", now.term),
            None if now.term > was.term => format!("another node started term {}", now.term),
            None => "a majority did not vote for it".to_string(),
        };
        Notable {
            info: self.elections_lost == 1 || now.leader.is_some(),
            ..self.notable(
                "election_lost",
                now.term,
                format!(
                    "lost the election for term {}: {reason}",
                    was.term.0.max(now.term.0)
                ),
            )
        }
    }

    fn campaigning(&mut self, was: &Seen, now: &Seen) -> Notable {
        let what = if now.term > was.term {
            format!("campaigning in term {}", now.term)
        } else {
            format!("asking for pre-votes for term {}", now.term.0 + 1)
        };
        let why = match was.leader {
            Some(leader) if was.role != Role::Candidate => {
                format!(
                    "heard nothing from leader {leader} for an election timeout, or was asked to take over"
                )
            }
            _ => "no leader known".to_string(),
        };
        Notable {
            info: self.elections_lost == 0,
            ..self.notable("campaign", now.term, format!("{what}: {why}"))
        }
    }

    fn following(&mut self, now: &Seen) -> Notable {
        let after = match std::mem::take(&mut self.elections_lost) {
            0 | 1 => String::new(),
            lost => format!(" (after {lost} elections without a leader)"),
        };
        let leader = now.leader.map_or(0, |l| l.0);
        self.notable(
            "leader_changed",
            now.term,
            format!("follows leader {leader} in term {}{after}", now.term),
        )
    }
}

/// The operator's sentence for a self-demotion: the core's figures (thousandths of a tick)
/// in milliseconds.
fn describe_self_demotion(d: &SelfDemotion, tick: Duration) -> String {
    let ms = |milliticks: u64| milliticks as f64 * tick.as_secs_f64();
    let times = d.leader_milliticks as f64 / d.median_follower_milliticks.max(1) as f64;
    let slow_for = (tick * d.slow_for_ticks as u32).as_secs_f64();
    match d.reason {
        SelfDemotionReason::SlowDisk => format!(
            "handing leadership to node {} (gray failure): this leader's writes took {:.1} ms \
             to become durable on average, {times:.1} times the {:.1} ms of the median \
             follower ({} measured), for the last {slow_for:.1} s; node {} takes {:.1} ms",
            d.to,
            ms(d.leader_milliticks),
            ms(d.median_follower_milliticks),
            d.followers_measured,
            d.to,
            ms(d.target_milliticks)
        ),
        SelfDemotionReason::SlowLinks => format!(
            "handing leadership to node {} (gray failure, slow network): this leader's round \
             trips to its followers took {:.1} ms on average, {times:.1} times the {:.1} ms its \
             followers measure between themselves ({} reporting), for the last {slow_for:.1} \
             s; node {} measures {:.1} ms",
            d.to,
            ms(d.leader_milliticks),
            ms(d.median_follower_milliticks),
            d.followers_measured,
            d.to,
            ms(d.target_milliticks)
        ),
    }
}

/// True for the answers to the messages [`is_request`] names (a link probe or its reply,
/// which come and go whatever else is in flight, must not end a round-trip sample).
fn is_response(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }
    )
}

/// True for the messages that expect a response.
fn is_request(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::VoteRequest { .. }
            | MessageBody::InstallSnapshot { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(role: Role, term: u64, leader: Option<u64>, voters: &[u64]) -> Seen {
        Seen {
            role,
            term: Term(term),
            leader: leader.map(NodeId),
            membership: Membership::with_voters(voters.iter().map(|&v| NodeId(v))),
        }
    }

    fn observer(start: Seen) -> Observer {
        Observer {
            id: NodeId(0),
            seen: start,
            elections_lost: 0,
            metrics: MetricsHook::default(),
            counted: None,
            round_trips: BTreeMap::new(),
            snapshots_sending: BTreeMap::new(),
            snapshot_receiving: None,
            stages: StageClocks::default(),
            dropped_seen: (0, None),
        }
    }

    /// Feeds `steps` in order and returns every change as `kind: detail`, `(debug)` marking
    /// the ones not logged at info.
    fn told(start: Seen, steps: &[Seen]) -> Vec<String> {
        let mut observer = observer(start);
        let mut lines = Vec::new();
        for step in steps {
            for change in observer.changes(step) {
                let debug = if change.info { "" } else { " (debug)" };
                lines.push(format!("{}: {}{debug}", change.kind, change.detail));
            }
            observer.seen = step.clone();
        }
        lines
    }

    #[test]
    fn an_election_won_and_a_step_down_for_a_higher_term() {
        let lines = told(
            seen(Role::Follower, 1, Some(2), &[0, 1, 2]),
            &[
                seen(Role::Candidate, 1, None, &[0, 1, 2]),
                seen(Role::Candidate, 2, None, &[0, 1, 2]),
                seen(Role::Leader, 2, Some(0), &[0, 1, 2]),
                seen(Role::Follower, 3, Some(1), &[0, 1, 2]),
            ],
        );
        assert_eq!(
            lines,
            [
                "campaign: asking for pre-votes for term 2: heard nothing from leader 2 for an \
                 election timeout, or was asked to take over",
                "campaign: campaigning in term 2: no leader known",
                "election_won: won the election for term 2 (was candidate in term 2); now leader",
                "stepped_down: stepped down as leader of term 2: node 1 leads term 3",
                "leader_changed: follows leader 1 in term 3",
            ]
        );
    }

    #[test]
    fn repeated_losses_are_told_once_at_info_and_counted() {
        let mut steps = Vec::new();
        for _ in 0..3 {
            steps.push(seen(Role::Candidate, 4, None, &[0, 1, 2]));
            steps.push(seen(Role::Follower, 4, None, &[0, 1, 2]));
        }
        steps.push(seen(Role::Follower, 5, Some(1), &[0, 1, 2]));
        let lines = told(seen(Role::Follower, 4, None, &[0, 1, 2]), &steps);
        assert_eq!(
            lines,
            [
                "campaign: asking for pre-votes for term 5: no leader known",
                "election_lost: lost the election for term 4: a majority did not vote for it",
                "campaign: asking for pre-votes for term 5: no leader known (debug)",
                "election_lost: lost the election for term 4: a majority did not vote for it \
                 (debug)",
                "campaign: asking for pre-votes for term 5: no leader known (debug)",
                "election_lost: lost the election for term 4: a majority did not vote for it \
                 (debug)",
                "leader_changed: follows leader 1 in term 5 (after 3 elections without a leader)",
            ]
        );
    }

    #[test]
    fn a_self_demotion_is_told_in_milliseconds() {
        let demotion = SelfDemotion {
            reason: SelfDemotionReason::SlowDisk,
            to: NodeId(2),
            leader_milliticks: 25_500,
            median_follower_milliticks: 1_200,
            target_milliticks: 800,
            followers_measured: 2,
            slow_for_ticks: 500,
        };
        assert_eq!(
            describe_self_demotion(&demotion, Duration::from_millis(10)),
            "handing leadership to node 2 (gray failure): this leader's writes took 255.0 ms to \
             become durable on average, 21.2 times the 12.0 ms of the median follower (2 \
             measured), for the last 5.0 s; node 2 takes 8.0 ms"
        );
        // Counted in the metrics and kept in the flight recorder.
        let metrics = std::sync::Arc::new(super::super::metrics::NodeMetrics::new());
        let mut watching = observer(seen(Role::Leader, 3, Some(0), &[0, 1, 2]));
        watching.set_metrics(MetricsHook::new(std::sync::Arc::clone(&metrics)));
        watching.on_self_demotion(&demotion, Duration::from_millis(10), Term(3));
        let text = metrics.render(None, &Default::default());
        assert!(
            text.contains(r#"rcraft_leader_self_demotions_total{reason="disk"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rcraft_leader_self_demotions_total{reason="network"} 0"#),
            "{text}"
        );
        let events = watching.recorded_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind.as_str(), events[0].term),
            ("self_demotion", Term(3))
        );
        assert!(
            events[0]
                .detail
                .starts_with("handing leadership to node 2 (gray failure)")
        );
    }

    #[test]
    fn same_term_step_downs_name_removal_or_a_lost_quorum() {
        let lines = told(
            seen(Role::Leader, 7, Some(0), &[0, 1, 2]),
            &[
                seen(Role::Follower, 7, None, &[0, 1, 2]),
                seen(Role::Leader, 8, Some(0), &[0, 1, 2]),
                seen(Role::Follower, 8, None, &[1, 2]),
            ],
        );
        assert_eq!(
            lines[0],
            "stepped_down: stepped down as leader of term 7: it has not heard from a quorum of \
             voters for an election timeout (CheckQuorum)"
        );
        assert_eq!(
            lines[2],
            "membership_changed: configuration changed in term 8: now voters 1,2; learners none \
             (was voters 0,1,2; learners none)"
        );
        assert_eq!(
            lines[3],
            "stepped_down: stepped down as leader of term 8: it was removed from the voters"
        );
    }
}
