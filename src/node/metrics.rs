//! A node's Prometheus metrics: counters, gauges and histograms of the official
//! `prometheus-client` crate, registered once per node and rendered in the Prometheus text
//! format (version 0.0.4) for `GET /metrics` (node/metrics_http.rs) and
//! [`NodeHandle::metrics_text`](super::NodeHandle::metrics_text).
//!
//! Who writes what: the consensus thread (through node/observe.rs) the leader changes, the
//! proposals and the peer round trips; the storage thread the WAL fsync durations; the apply
//! thread the snapshots it saves; the consensus thread the snapshots it sends and receives.
//! Every metric is an atomic, so writers never wait for a scrape. What another thread already
//! counts (the network thread's [`NetStatsSnapshot`], the core's indexes in a
//! [`NodeStatus`]) is copied in when a scrape renders, under `render_lock`, so two scrapes
//! cannot both add the same increase. Names follow Prometheus conventions: the `rcraft_`
//! prefix, base units (seconds, bytes), `_total` on counters.

use super::flight_recorder::FlightRecorder;
use super::limits::SLOW_FSYNC_RECORD_MIN;
use super::net::NetStatsSnapshot;
use crate::core::SelfDemotionReason;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rcraft_wire::{NodeId, NodeStatus, Role, StageLatency};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A stage of the write path, in path order (see docs/OPERATIONS.md, "Where a write's time
/// goes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Leader: a client request decoded by the network thread until the consensus thread
    /// takes it.
    QueueWait,
    /// Leader and followers: writing one batch of entries into the WAL, before its sync.
    WalAppend,
    /// Leader and followers: syncing one batch.
    Fsync,
    /// Leader: an append with entries sent to a follower until its answer (one sampled in
    /// flight per follower).
    Replication,
    /// Leader: an entry proposed until it is committed.
    Commit,
    /// Leader: an entry committed until the apply thread reports it applied (its answer
    /// handed to the network thread).
    Apply,
    /// Leader and followers: the apply thread taking a batch until its answers are handed to
    /// the network thread, per answer.
    Reply,
    /// Follower: entries received until they are durable.
    ReceiveToDurable,
}

impl Stage {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::QueueWait => "queue_wait",
            Stage::WalAppend => "wal_append",
            Stage::Fsync => "fsync",
            Stage::Replication => "replication",
            Stage::Commit => "commit",
            Stage::Apply => "apply",
            Stage::Reply => "reply",
            Stage::ReceiveToDurable => "receive_to_durable",
        }
    }
}

/// Number of [`Stage`]s.
const STAGES: usize = Stage::ReceiveToDurable as usize + 1;

/// Largest stage duration the percentile summaries hold (longer ones are clamped to it).
const STAGE_SUMMARY_MAX_US: u64 = 60_000_000;

/// Percentile summaries of the stages, for `rcraft status --latency`.
type StageSummaries = BTreeMap<(Stage, Option<NodeId>), hdrhistogram::Histogram<u64>>;

/// Buckets for write-path stages: 10 us to about 10 s.
fn stage_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// Labels of a per-peer or per-reason metric.
type Labels = Vec<(&'static str, String)>;
/// A histogram per label set.
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for disk syncs: 50 us to about 1.6 s.
fn fsync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Buckets for network round trips: 25 us to about 0.8 s.
fn round_trip_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// Buckets for snapshot stages: 1 ms to about 65 s.
fn snapshot_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of one node. Shared (`Arc`) by the threads that write it.
pub struct NodeMetrics {
    registry: Registry,
    /// Serializes scrapes: copying totals in is read-modify-write.
    render_lock: parking_lot::Mutex<()>,
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    snapshot_index: Gauge,
    repairing_entries: Gauge,
    votes_unknown: Gauge,
    pub(crate) leader_changes: Counter,
    pub(crate) elections_won: Counter,
    leader_self_demotions: Family<Labels, Counter>,
    pub(crate) proposals_committed: Counter,
    pub(crate) proposals_applied: Counter,
    pub(crate) proposals_pending: Gauge,
    pub(crate) proposals_failed: Counter,
    wal_fsync: Histogram,
    snapshot_save: Histogram,
    snapshot_saved_bytes: Counter,
    snapshot_send: Histogram,
    snapshot_sent_bytes: Counter,
    snapshot_receive: Histogram,
    snapshot_received_bytes: Counter,
    peer_round_trip: HistogramFamily,
    network_received_bytes: Counter,
    network_sent_bytes: Counter,
    network_received_frames: Counter,
    network_sent_frames: Counter,
    network_dropped_frames: Family<Labels, Counter>,
    connections_refused: Counter,
    client_connections: Gauge,
    write_stage: HistogramFamily,
    /// `write_stage`'s histogram of each stage, by `Stage as usize`, looked up once (a lookup
    /// allocates its label set: two allocations per sample on the write path otherwise).
    write_stage_handles: [std::sync::OnceLock<Histogram>; STAGES],
    replication_stage: HistogramFamily,
    /// Percentiles per stage (and follower); a lock taken once per sample by the thread
    /// that owns the stage, and by a `Latency` request.
    stage_summaries: parking_lot::Mutex<StageSummaries>,
    /// The node's flight recorder, written through the same hooks.
    pub(crate) recorder: FlightRecorder,
    /// The network thread's counters, once the network runs (for dropped-frame events).
    net: std::sync::OnceLock<Arc<super::net::NetStats>>,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    /// Every metric at zero, registered under the `rcraft_` prefix.
    pub fn new() -> NodeMetrics {
        let mut metrics = NodeMetrics {
            registry: Registry::with_prefix("rcraft"),
            render_lock: parking_lot::Mutex::new(()),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            repairing_entries: Gauge::default(),
            votes_unknown: Gauge::default(),
            leader_changes: Counter::default(),
            elections_won: Counter::default(),
            leader_self_demotions: Family::default(),
            proposals_committed: Counter::default(),
            proposals_applied: Counter::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            wal_fsync: fsync_buckets(),
            snapshot_save: snapshot_buckets(),
            snapshot_saved_bytes: Counter::default(),
            snapshot_send: snapshot_buckets(),
            snapshot_sent_bytes: Counter::default(),
            snapshot_receive: snapshot_buckets(),
            snapshot_received_bytes: Counter::default(),
            peer_round_trip: Family::new_with_constructor(round_trip_buckets),
            network_received_bytes: Counter::default(),
            network_sent_bytes: Counter::default(),
            network_received_frames: Counter::default(),
            network_sent_frames: Counter::default(),
            network_dropped_frames: Family::default(),
            connections_refused: Counter::default(),
            client_connections: Gauge::default(),
            write_stage: Family::new_with_constructor(stage_buckets),
            write_stage_handles: Default::default(),
            replication_stage: Family::new_with_constructor(stage_buckets),
            stage_summaries: parking_lot::Mutex::new(BTreeMap::new()),
            recorder: FlightRecorder::default(),
            net: std::sync::OnceLock::new(),
        };
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "has_leader",
            "1 when this node knows a leader in its current term, else 0",
            self.has_leader.clone(),
        );
        r.register(
            "is_leader",
            "1 while this node leads, else 0",
            self.is_leader.clone(),
        );
        r.register("term", "The node's current Raft term", self.term.clone());
        r.register(
            "commit_index",
            "Highest log index this node knows is committed",
            self.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "Highest log index its state machine applied",
            self.applied_index.clone(),
        );
        r.register(
            "last_index",
            "Last index of its log",
            self.last_index.clone(),
        );
        r.register(
            "snapshot_index",
            "Index covered by its latest snapshot",
            self.snapshot_index.clone(),
        );
        r.register(
            "repairing_entries",
            "Entries this node synced, lost from its disk and has not fetched again yet \
             (0 when its log is whole; while above 0 it votes only for candidates covering them)",
            self.repairing_entries.clone(),
        );
        r.register(
            "votes_unknown",
            "1 while this node's hard state (whom it voted for) was found damaged and it waits \
             for its voters' current terms, neither voting nor campaigning; else 0",
            self.votes_unknown.clone(),
        );
        r.register(
            "leader_changes",
            "Times this node saw the leader change (a new leader known, or itself elected)",
            self.leader_changes.clone(),
        );
        r.register(
            "elections_won",
            "Elections this node won",
            self.elections_won.clone(),
        );
        r.register(
            "leader_self_demotions",
            "Times this node, leading, handed leadership over because its own log writes \
             (reason disk) or its round trips to its followers (reason network) stayed far \
             slower than its followers' (gray-failure self-demotion)",
            self.leader_self_demotions.clone(),
        );
        // Both reasons show from the start, at 0.
        for reason in [SelfDemotionReason::SlowDisk, SelfDemotionReason::SlowLinks] {
            let _ = (self.leader_self_demotions)
                .get_or_create(&vec![("reason", reason.name().to_string())]);
        }
        r.register(
            "proposals_committed",
            "Log entries this node learned are committed",
            self.proposals_committed.clone(),
        );
        r.register(
            "proposals_applied",
            "Log entries its state machine applied",
            self.proposals_applied.clone(),
        );
        r.register(
            "proposals_pending",
            "Client requests waiting inside the node for their outcome",
            self.proposals_pending.clone(),
        );
        r.register(
            "proposals_failed",
            "Client requests answered with an error (refused, not leader, timed out, lost)",
            self.proposals_failed.clone(),
        );
        r.register_with_unit(
            "wal_fsync_duration",
            "Time to sync one batch of WAL appends to disk",
            Unit::Seconds,
            self.wal_fsync.clone(),
        );
        r.register_with_unit(
            "snapshot_save_duration",
            "Time to write one snapshot of the state machine",
            Unit::Seconds,
            self.snapshot_save.clone(),
        );
        r.register_with_unit(
            "snapshot_saved",
            "Bytes of snapshots written",
            Unit::Bytes,
            self.snapshot_saved_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_send_duration",
            "Time from reading a snapshot's first chunk to reading its last, sending to a follower",
            Unit::Seconds,
            self.snapshot_send.clone(),
        );
        r.register_with_unit(
            "snapshot_sent",
            "Bytes of snapshot chunks read for followers",
            Unit::Bytes,
            self.snapshot_sent_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_receive_duration",
            "Time from a snapshot's first chunk arriving to the snapshot being stored",
            Unit::Seconds,
            self.snapshot_receive.clone(),
        );
        r.register_with_unit(
            "snapshot_received",
            "Bytes of snapshot chunks received from a leader",
            Unit::Bytes,
            self.snapshot_received_bytes.clone(),
        );
        r.register_with_unit(
            "peer_round_trip",
            "Time from sending a peer a message to its next answer (sampled, one in flight)",
            Unit::Seconds,
            self.peer_round_trip.clone(),
        );
        r.register_with_unit(
            "network_received",
            "Bytes read from every connection",
            Unit::Bytes,
            self.network_received_bytes.clone(),
        );
        r.register_with_unit(
            "network_sent",
            "Bytes written to every connection",
            Unit::Bytes,
            self.network_sent_bytes.clone(),
        );
        r.register(
            "network_received_frames",
            "Frames decoded from every connection",
            self.network_received_frames.clone(),
        );
        r.register(
            "network_sent_frames",
            "Peer frames written to a socket",
            self.network_sent_frames.clone(),
        );
        r.register(
            "network_dropped_frames",
            "Peer messages dropped, by reason (Raft sends them again)",
            self.network_dropped_frames.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed for a protocol violation, a timeout or the connection cap",
            self.connections_refused.clone(),
        );
        r.register(
            "client_connections",
            "Client connections open now",
            self.client_connections.clone(),
        );
        r.register_with_unit(
            "write_stage_duration",
            "Time a write spends in each stage of the write path, by stage",
            Unit::Seconds,
            self.write_stage.clone(),
        );
        r.register_with_unit(
            "replication_round_trip",
            "Leader: an append with entries sent to a follower until its answer, by follower",
            Unit::Seconds,
            self.replication_stage.clone(),
        );
    }

    /// One sample of `stage` (for `Replication`, of follower `peer`).
    pub(crate) fn stage(&self, stage: Stage, peer: Option<NodeId>, took: Duration) {
        self.stage_samples(stage, peer, 1, took);
    }

    /// `count` samples of `stage`, each `took` (one per answer of a batch).
    pub(crate) fn stage_each(&self, stage: Stage, count: usize, took: Duration) {
        if count > 0 {
            self.stage_samples(stage, None, count as u64, took);
        }
    }

    fn stage_samples(&self, stage: Stage, peer: Option<NodeId>, count: u64, took: Duration) {
        let seconds = took.as_secs_f64();
        let observe = |histogram: &Histogram| (0..count).for_each(|_| histogram.observe(seconds));
        match peer {
            Some(peer) => observe(
                &self
                    .replication_stage
                    .get_or_create(&vec![("peer", peer.0.to_string())]),
            ),
            None => observe(self.write_stage_handles[stage as usize].get_or_init(|| {
                let labels = vec![("stage", stage.name().to_string())];
                self.write_stage.get_or_create(&labels).clone()
            })),
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut summaries = self.stage_summaries.lock();
        let summary = summaries.entry((stage, peer)).or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, STAGE_SUMMARY_MAX_US, 2)
                .expect("constant histogram bounds are valid")
        });
        summary.saturating_record_n(micros.clamp(1, STAGE_SUMMARY_MAX_US), count);
    }

    /// Percentiles of every stage with samples, in path order.
    pub fn latency_report(&self) -> Vec<StageLatency> {
        let summaries = self.stage_summaries.lock();
        summaries
            .iter()
            .map(|(&(stage, peer), h)| StageLatency {
                stage: stage.name().to_string(),
                peer,
                count: h.len(),
                p50_us: h.value_at_quantile(0.50),
                p90_us: h.value_at_quantile(0.90),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            })
            .collect()
    }

    /// The storage thread synced one batch.
    pub(crate) fn wal_fsync(&self, took: Duration) {
        self.wal_fsync.observe(took.as_secs_f64());
        self.stage(Stage::Fsync, None, took);
        if took >= SLOW_FSYNC_RECORD_MIN {
            let detail = format!("a WAL sync took {} ms", took.as_millis());
            self.recorder.record_now("slow_fsync", detail);
        }
    }

    /// The apply thread wrote a snapshot of `bytes`.
    pub(crate) fn snapshot_saved(&self, took: Duration, bytes: u64) {
        self.snapshot_save.observe(took.as_secs_f64());
        self.snapshot_saved_bytes.inc_by(bytes);
        let detail = format!("snapshot written: {bytes} bytes in {} ms", took.as_millis());
        self.recorder.record_now("snapshot_saved", detail);
    }

    /// Lets the node read the network thread's counters (for dropped-frame events).
    pub(crate) fn set_net(&self, net: Arc<super::net::NetStats>) {
        let _ = self.net.set(net);
    }

    /// Peer messages dropped so far, when the network runs.
    pub(crate) fn dropped_frames(&self) -> Option<NetStatsSnapshot> {
        self.net.get().map(|net| net.snapshot())
    }

    /// A snapshot chunk of `bytes` was read for a follower; `took` is set on the last one.
    pub(crate) fn snapshot_chunk_sent(&self, bytes: u64, took: Option<Duration>) {
        self.snapshot_sent_bytes.inc_by(bytes);
        if let Some(took) = took {
            self.snapshot_send.observe(took.as_secs_f64());
        }
    }

    /// A snapshot chunk of `bytes` arrived from a leader.
    pub(crate) fn snapshot_chunk_received(&self, bytes: u64) {
        self.snapshot_received_bytes.inc_by(bytes);
    }

    /// A received snapshot was stored, `took` after its first chunk arrived.
    pub(crate) fn snapshot_received(&self, took: Duration) {
        self.snapshot_receive.observe(took.as_secs_f64());
    }

    /// The counter of self-demotions for `reason`.
    fn self_demotions(&self, reason: SelfDemotionReason) -> Counter {
        (self.leader_self_demotions)
            .get_or_create(&vec![("reason", reason.name().to_string())])
            .clone()
    }

    /// This node handed leadership over (core/gray_failure.rs).
    pub(crate) fn self_demoted(&self, reason: SelfDemotionReason) {
        self.self_demotions(reason).inc();
    }

    /// A round trip to `peer`.
    pub(crate) fn peer_round_trip(&self, peer: NodeId, took: Duration) {
        self.peer_round_trip
            .get_or_create(&vec![("peer", peer.0.to_string())])
            .observe(took.as_secs_f64());
    }

    /// The metrics in the Prometheus text format, after copying in `status` (the node's
    /// view; `None` when it did not answer) and the network thread's counters.
    pub fn render(&self, status: Option<&NodeStatus>, net: &NetStatsSnapshot) -> String {
        let _one_scrape = self.render_lock.lock();
        if let Some(s) = status {
            let known = s.leader.is_some();
            self.has_leader.set(i64::from(known));
            self.is_leader.set(i64::from(s.role == Role::Leader));
            self.term.set(gauge(s.term.0));
            self.commit_index.set(gauge(s.commit_index.0));
            self.applied_index.set(gauge(s.applied_index.0));
            self.last_index.set(gauge(s.last_index.0));
            self.snapshot_index.set(gauge(s.snapshot_index.0));
            self.repairing_entries
                .set(gauge(s.repairing.map_or(0, |lost| lost.len())));
            self.votes_unknown.set(i64::from(s.votes_unknown.is_some()));
        }
        catch_up(&self.network_received_bytes, net.bytes_received);
        catch_up(&self.network_sent_bytes, net.bytes_sent);
        catch_up(&self.network_received_frames, net.frames_received);
        catch_up(&self.network_sent_frames, net.peer_frames_sent);
        catch_up(&self.connections_refused, net.connections_refused);
        self.client_connections.set(gauge(net.client_connections));
        for (reason, total) in [
            ("queue_full", net.peer_dropped_queue_full),
            ("link_down", net.peer_dropped_link_down),
            ("unknown_peer", net.peer_dropped_unknown),
            ("events_full", net.peer_dropped_events_full),
            ("commands_full", net.commands_dropped_full),
        ] {
            let counter = self
                .network_dropped_frames
                .get_or_create(&vec![("reason", reason.to_string())]);
            catch_up(&counter, total);
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A counter that mirrors a total kept elsewhere: raised to `total` (totals only grow).
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The metrics a node's threads write to; does nothing when the node has none (the
/// simulator's and unit tests' threads).
#[derive(Clone, Default)]
pub(crate) struct MetricsHook(Option<Arc<NodeMetrics>>);

impl MetricsHook {
    /// A hook that writes to `metrics`.
    pub(crate) fn new(metrics: Arc<NodeMetrics>) -> MetricsHook {
        MetricsHook(Some(metrics))
    }

    /// Runs `write` on the metrics, if any.
    pub(crate) fn with<T>(&self, write: impl FnOnce(&NodeMetrics) -> T) {
        if let Some(metrics) = &self.0 {
            write(metrics);
        }
    }
}

/// One stage's latency as JSON, the shape both `rcraft status --latency --json` and
/// rcraft-loadtest's `leader_stages` print: `{"stage","peer","count","p50_us","p90_us",
/// "p99_us","max_us"}`.
#[cfg(feature = "cli")]
pub fn stage_latency_json(s: &StageLatency) -> serde_json::Value {
    serde_json::json!({
        "stage": s.stage,
        "peer": s.peer.map(|p| p.0),
        "count": s.count,
        "p50_us": s.p50_us,
        "p90_us": s.p90_us,
        "p99_us": s.p99_us,
        "max_us": s.max_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_uses_prometheus_names_and_copies_totals_once() {
        let metrics = NodeMetrics::new();
        metrics.wal_fsync(Duration::from_micros(300));
        metrics.peer_round_trip(NodeId(2), Duration::from_micros(80));
        let net = NetStatsSnapshot {
            bytes_received: 1000,
            peer_dropped_queue_full: 3,
            ..NetStatsSnapshot::default()
        };
        let first = metrics.render(None, &net);
        let again = metrics.render(None, &net);
        for text in [&first, &again] {
            assert!(text.contains("# TYPE rcraft_wal_fsync_duration_seconds histogram"));
            assert!(text.contains("rcraft_wal_fsync_duration_seconds_count 1"));
            assert!(
                text.contains("rcraft_network_received_bytes_total 1000"),
                "{text}"
            );
            assert!(text.contains(r#"rcraft_network_dropped_frames_total{reason="queue_full"} 3"#));
            assert!(text.contains(r#"rcraft_peer_round_trip_seconds_count{peer="2"} 1"#));
            assert!(text.contains(r#"rcraft_write_stage_duration_seconds_count{stage="fsync"} 1"#));
        }
    }

    /// The recovery gauges follow the status they are rendered from: `votes_unknown` is 1
    /// exactly while the node waits for its voters' terms, `repairing_entries` counts the
    /// lost range.
    #[test]
    fn the_recovery_gauges_follow_the_status() {
        use rcraft_wire::{LogIndex, LostRange, Membership, Term};
        let metrics = NodeMetrics::new();
        let mut status = NodeStatus {
            id: NodeId(1),
            role: Role::Follower,
            term: Term(3),
            leader: None,
            commit_index: LogIndex(10),
            applied_index: LogIndex(10),
            last_index: LogIndex(10),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0), NodeId(1), NodeId(2)],
            learners: Vec::new(),
            membership: Membership::with_voters([NodeId(0), NodeId(1), NodeId(2)]),
            replication: Vec::new(),
            repairing: Some(LostRange {
                from: LogIndex(11),
                through: LogIndex(14),
            }),
            votes_unknown: Some(vec![NodeId(2)]),
            lost: None,
        };
        let net = NetStatsSnapshot::default();
        let text = metrics.render(Some(&status), &net);
        assert!(text.contains("# TYPE rcraft_votes_unknown gauge"), "{text}");
        assert!(text.contains("\nrcraft_votes_unknown 1\n"), "{text}");
        assert!(text.contains("\nrcraft_repairing_entries 4\n"), "{text}");
        status.votes_unknown = None;
        status.repairing = None;
        let text = metrics.render(Some(&status), &net);
        assert!(text.contains("\nrcraft_votes_unknown 0\n"), "{text}");
        assert!(text.contains("\nrcraft_repairing_entries 0\n"), "{text}");
    }

    #[test]
    fn the_latency_report_lists_stages_in_path_order_with_percentiles() {
        let metrics = NodeMetrics::new();
        for micros in 1..=100 {
            metrics.stage(Stage::Commit, None, Duration::from_micros(micros * 10));
        }
        metrics.stage(
            Stage::Replication,
            Some(NodeId(2)),
            Duration::from_micros(250),
        );
        metrics.stage(Stage::QueueWait, None, Duration::from_micros(5));
        let report = metrics.latency_report();
        let stages: Vec<(&str, Option<NodeId>)> =
            report.iter().map(|s| (s.stage.as_str(), s.peer)).collect();
        assert_eq!(
            stages,
            [
                ("queue_wait", None),
                ("replication", Some(NodeId(2))),
                ("commit", None)
            ]
        );
        let commit = &report[2];
        assert_eq!(commit.count, 100);
        assert!((495..=505).contains(&commit.p50_us), "{commit:?}");
        assert!((985..=1000).contains(&commit.p99_us), "{commit:?}");
        assert!((995..=1005).contains(&commit.max_us), "{commit:?}");
    }
}
