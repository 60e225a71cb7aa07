//! The shape of one simulated run: fixed limits, and the per-seed parameters drawn from the
//! seed (cluster size, fault rates, network and disk behaviour, core tuning).
//!
//! Every limit of the simulator lives here. A `RunParams` value is computed once per world
//! from its seed and never changes during the run.

use crate::network::NetworkProfile;
use crate::rng::SimRng;
use rcraft::core::CoreConfig;
use rcraft::wire::NodeId;

/// Sim milliseconds per core tick (the core's defaults assume 10 ms).
pub(crate) const TICK_MS: u64 = 10;
/// How long a client request may wait inside a node (its consensus handler's pending table)
/// before it is answered with a timeout: reads waiting for a confirmation round that never
/// comes; the core answers every proposal in the turn it arrives.
pub(crate) const RPC_TIMEOUT_MS: u64 = 2_000;
/// Quiet start: the cluster must elect a leader and commit within this before faults begin.
pub(crate) const BOOT_MS: u64 = 2_000;
/// Length of a phase with faults.
pub(crate) const CHAOS_MS: u64 = 2_500;
/// Length of a healed phase (every node up, every link restored, no loss).
pub(crate) const CALM_MS: u64 = 2_500;
/// Chaos and calm phases per run.
pub(crate) const CYCLES: u64 = 2;
/// After faults heal, a leader must exist and a new write must be acknowledged within this
/// (200 ticks: several election timeouts, room for pre-vote and restarts).
pub(crate) const LIVENESS_BOUND_MS: u64 = 2_000;
/// A run that processes more events than this is reported (a message storm, or a loop).
pub(crate) const MAX_EVENTS_PER_RUN: u64 = 400_000;
/// Concurrent clients, each sticking to the node it believes leads, with one session and at
/// most one write in flight each (`clients.rs`).
pub(crate) const CLIENTS: usize = 8;
/// Leader churn also strikes when a leader advances its commit index this soon after its
/// election: the moment a wrongly counted commit is most exposed.
pub(crate) const EARLY_TERM_MS: u64 = 300;
/// Most spare node slots beyond the initial voters.
pub(crate) const MAX_SPARES: usize = 2;
/// Share of runs, per mille, in which the leader is asked for membership changes.
pub(crate) const MEMBERSHIP_RUNS_PER_MILLE: u64 = 600;
/// Membership changes in runs without Pre-Vote. Off: open finding 7 of `docs/SIM_FINDINGS.md`
/// (seeds 3972 and 15485 of 0..30000: without Pre-Vote, under membership churn, voters with
/// stale logs or configurations keep campaigning and no leader is elected within the liveness
/// bound). Runs with Pre-Vote are the same either way.
pub(crate) const MEMBERSHIP_CHANGES_WITHOUT_PRE_VOTE: bool = false;
/// A node removed by a committed configuration is shut down (as an operator would) within
/// this long; until then it may still run, campaign and disrupt.
pub(crate) const RETIRE_DELAY_MAX_MS: u64 = 300;
/// Length of a whole run.
pub(crate) const RUN_MS: u64 = BOOT_MS + CYCLES * (CHAOS_MS + CALM_MS);
/// Clients stop this long before the end of a run, so that every running member must have
/// applied the same entries by the end (the convergence check).
pub(crate) const QUIET_END_MS: u64 = 1_000;
/// Share of runs, per mille, whose disks lose synced data (bit rot, lost writes, unreadable
/// sectors): protocol-aware recovery (docs/ARCHITECTURE.md). Drawn from a generator of its
/// own, so the other parameters of every seed stay as they were.
pub(crate) const DAMAGE_RUNS_PER_MILLE: u64 = 500;
/// In those runs, the chance per mille that a restarting node finds synced entries lost.
pub(crate) const DAMAGE_PER_RESTART_PER_MILLE: u64 = 400;
/// Most synced entries one damage takes off the end of a log.
pub(crate) const DAMAGE_ENTRIES_MAX: u64 = 12;
/// Share of runs, per mille, in which the node leading at [`SLOW_DISK_AT_MS`] gets a slow disk
/// (gray failure) until the first calm phase, and again in every chaos phase: it must hand
/// leadership over within [`SLOW_DISK_HANDOVER_BOUND_MS`]. Drawn from a generator of its own; these runs get a quick
/// network and quick disks otherwise, so the slow one stands out.
pub(crate) const SLOW_DISK_RUNS_PER_MILLE: u64 = 250;
/// When the leader's disk turns slow (in the calm boot phase; tried again every 50 ms while
/// there is no leader, up to three times).
pub(crate) const SLOW_DISK_AT_MS: u64 = 500;
/// What the slow disk adds to every sync. Below the shortest election timeout, so its vote
/// still counts in an election that needs it.
pub(crate) const SLOW_DISK_EXTRA_MS: u64 = 120;
/// Share of runs, per mille, in which the node leading at [`SLOW_DISK_AT_MS`] gets slow links
/// instead (gray failure, the network half): every message it sends is
/// [`SLOW_LINKS_EXTRA_MS`] late, from then until the first calm phase and again in every chaos
/// phase, and it must hand leadership over within [`SLOW_DISK_HANDOVER_BOUND_MS`]. Drawn from
/// a generator of its own, among the runs without a slow disk; a quick network and quick
/// disks otherwise, as in slow-disk runs.
pub(crate) const SLOW_LINKS_RUNS_PER_MILLE: u64 = 200;
/// What slow links add to every message their node sends: with the heartbeat interval (50
/// ms) below the shortest election timeout, so the heartbeat that waits longest when the
/// links turn slow still comes in time (120 ms, as the slow disk, made elections instead).
pub(crate) const SLOW_LINKS_EXTRA_MS: u64 = 80;
/// After the disk turned slow, another node must lead within this (the window below, the
/// averages' ramp, the transfer and an election), still inside the boot phase.
pub(crate) const SLOW_DISK_HANDOVER_BOUND_MS: u64 = 1_000;
/// Self-demotion in every simulated core: a shorter window than a node's default so it fits
/// the boot phase, and a smaller gap, so equal disks are tested closer to the threshold.
pub(crate) const SIM_SELF_DEMOTION: rcraft::core::SelfDemotionConfig =
    rcraft::core::SelfDemotionConfig {
        window_ticks: 40,
        ratio: 4,
        min_gap_ticks: 4,
        cooldown_ticks: 300,
        link_probe_interval_ticks: 5,
    };
/// Share of runs, per mille, whose nodes may find their hard-state file damaged at a restart
/// (tests/sim/hard_state_damage.rs). Drawn from a generator of its own.
pub(crate) const HARD_STATE_DAMAGE_RUNS_PER_MILLE: u64 = 400;
/// In those runs, the chance per mille that a restarting node finds its hard state damaged.
pub(crate) const HARD_STATE_DAMAGE_PER_RESTART_PER_MILLE: u64 = 300;
/// Damage to a log strikes only while every configuration has at least this many voters.
pub(crate) const DAMAGE_VOTERS_MIN: usize = 3;
/// Damage to a hard state strikes only while every configuration has at least this many
/// voters (tests/sim/hard_state_damage.rs).
pub(crate) const HARD_STATE_DAMAGE_VOTERS_MIN: usize = 3;
/// Whether runs that change membership draw damage too.
pub(crate) const DAMAGE_WITH_MEMBERSHIP_CHANGES: bool = true;
/// Share of runs, per mille, in which a node snapshots every 1-10 ms (rather than every
/// 50-500 ms), mostly the leader, so that it takes new snapshots while it sends one: a
/// transfer under way must still finish (docs/SIM_FINDINGS.md, finding 15). Drawn from a
/// generator of its own, so the other parameters of every seed stay as they were.
pub(crate) const SNAPSHOT_STORM_RUNS_PER_MILLE: u64 = 200;

/// Share of runs, per mille, whose nodes keep a tiny entry cache (0 to a few entries' worth;
/// a simulated entry is some tens of bytes), so that catch-up reads entries from storage.
pub(crate) const SMALL_ENTRY_CACHE_RUNS_PER_MILLE: u64 = 400;
/// Share of runs, per mille, whose messages travel as bytes through each node's own network
/// code (`wire.rs`): TCP-like connections, which break where the other runs lose a message
/// and never duplicate or reorder. The other runs pass messages as values, lost, duplicated
/// and reordered one by one, which tests the core against more than TCP can do. Drawn from a
/// generator of its own, so the other runs keep their histories.
pub(crate) const WIRE_RUNS_PER_MILLE: u64 = 500;
/// In runs with byte streams, the share, per mille, whose peers authenticate with a cluster
/// secret (the handshake's challenge and proofs, `src/node/net/auth.rs`).
pub(crate) const WIRE_SECRET_PER_MILLE: u64 = 500;
/// Events shown when a seed fails.
pub(crate) const TRACE_LINES: usize = 60;

const _: () = assert!(LIVENESS_BOUND_MS < CALM_MS && LIVENESS_BOUND_MS <= BOOT_MS);
const _: () = assert!(SLOW_DISK_AT_MS + 150 + SLOW_DISK_HANDOVER_BOUND_MS < BOOT_MS);

/// The parameters of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub(crate) struct RunParams {
    /// Voters of the initial configuration (3 to 5), nodes 0 to `voters - 1`.
    pub(crate) voters: usize,
    /// Clients every replica's session table remembers (`world::sessions_max`; the node's
    /// `SESSIONS_MAX` unless the run exercises forgotten sessions).
    pub(crate) sessions_max: usize,
    /// Node slots in all: the initial voters plus up to [`MAX_SPARES`] spare nodes that start
    /// outside the configuration and may be added by membership changes.
    pub(crate) nodes: usize,
    /// Longest gap between two membership changes asked of the leader during chaos, ms;
    /// `None`: this run never changes membership.
    pub(crate) membership_gap_max_ms: Option<u64>,
    /// Network behaviour.
    pub(crate) network: NetworkProfile,
    /// Shortest time for a write to become durable, ms.
    pub(crate) disk_delay_min_ms: u64,
    /// Longest time for a write to become durable, ms.
    pub(crate) disk_delay_max_ms: u64,
    /// Longest gap between two faults during chaos, ms.
    pub(crate) fault_gap_max_ms: u64,
    /// Longest time a crashed node stays down during chaos, ms.
    pub(crate) downtime_max_ms: u64,
    /// Longest gap between two client operations, ms.
    pub(crate) client_gap_max_ms: u64,
    /// Chance, per mille, that a node becoming leader during chaos is crashed or cut off
    /// soon after (the leader churn behind Figure 8 of the Raft paper).
    pub(crate) churn_per_mille: u64,
    /// Share of client operations that are reads, per mille.
    pub(crate) read_per_mille: u64,
    /// Core: Pre-Vote on.
    pub(crate) pre_vote: bool,
    /// Core: CheckQuorum on.
    pub(crate) check_quorum: bool,
    /// Core: lease reads on (safe here: every node's clock ticks at exactly the same rate).
    pub(crate) lease_reads: bool,
    /// Core: in-flight AppendRequests per follower.
    pub(crate) max_inflight_messages: usize,
    /// Core: bytes per AppendRequest.
    pub(crate) max_append_bytes: u64,
    /// Core: uncommitted bytes at the leader before proposals are refused.
    pub(crate) max_uncommitted_bytes: u64,
    /// Snapshots come fifty times as often ([`SNAPSHOT_STORM_RUNS_PER_MILLE`]).
    pub(crate) snapshot_storm: bool,
    /// Core: bytes per snapshot chunk.
    pub(crate) snapshot_chunk_bytes: u64,
    /// Core: snapshot chunks in flight per follower (1 is stop-and-wait).
    pub(crate) snapshot_chunks_in_flight: u64,
    /// Core: leader-wide snapshot bytes per tick (0: unlimited); small values throttle.
    pub(crate) snapshot_bytes_per_tick: u64,
    /// Longest a delivered message waits in a node's turn before its actions are carried
    /// out, ms; messages arriving meanwhile are stepped into the same drain, as the
    /// consensus thread takes every queued input before draining once. 0: one drain per
    /// message.
    pub(crate) turn_ms_max: u64,
    /// The node's real storage thread runs beside the disk model (tests/sim/disk.rs).
    pub(crate) real_storage: bool,
    /// The leader at [`SLOW_DISK_AT_MS`] gets a slow disk (see [`SLOW_DISK_RUNS_PER_MILLE`]).
    pub(crate) slow_disk: bool,
    /// Core: bytes of durable, applied entries kept in memory; small in
    /// [`SMALL_ENTRY_CACHE_RUNS_PER_MILLE`] of the runs, so that entries leave the cache and
    /// lagging followers are served by storage reads.
    pub(crate) entry_cache_bytes: u64,
    /// The leader at [`SLOW_DISK_AT_MS`] gets slow links (see [`SLOW_LINKS_RUNS_PER_MILLE`]).
    pub(crate) slow_links: bool,
}

impl RunParams {
    /// Draws a run's parameters.
    pub(crate) fn random(rng: &mut SimRng) -> RunParams {
        // (window, batch bytes): tiny batches (one entry each) with a window wide enough to
        // keep up, small ones, and large ones. Tiny batches split a new leader's catch-up of
        // old entries from its own no-op, which is what exposes the Figure 8 commit rule.
        let (max_inflight_messages, max_append_bytes) =
            rng.pick(&[(8, 64), (32, 64), (2, 256), (8, 4_096), (64, 1 << 20)]);
        // Liveness is judged against a bound, so the backlog a leader may build must drain
        // within it: a small replication window gets a small uncommitted-bytes cap.
        let window_bytes = max_inflight_messages as u64 * max_append_bytes;
        let max_uncommitted_bytes = if window_bytes < 64 << 10 {
            rng.pick(&[2_048, 4_096])
        } else {
            rng.pick(&[2_048, 64 << 20])
        };
        let voters = rng.pick(&[3, 4, 5]);
        let mut params = RunParams {
            voters,
            nodes: voters + rng.below(MAX_SPARES as u64 + 1) as usize,
            membership_gap_max_ms: if rng.chance(MEMBERSHIP_RUNS_PER_MILLE) {
                Some(rng.pick(&[150, 400, 1_000]))
            } else {
                None
            },
            network: NetworkProfile::random(rng),
            disk_delay_min_ms: 1,
            // Raft needs broadcast time (two syncs and two network hops for a vote) well
            // below the election timeout (150-300 ms here), or split votes can go on and on.
            disk_delay_max_ms: rng.pick(&[2, 10, 20]),
            fault_gap_max_ms: rng.pick(&[100, 300, 800]),
            downtime_max_ms: rng.pick(&[200, 1_000]),
            client_gap_max_ms: rng.pick(&[10, 40, 100]),
            churn_per_mille: rng.pick(&[0, 300, 700, 950]),
            read_per_mille: rng.pick(&[100, 300]),
            pre_vote: rng.chance(700),
            check_quorum: rng.chance(700),
            lease_reads: rng.chance(250),
            max_inflight_messages,
            max_append_bytes,
            max_uncommitted_bytes,
            // Snapshots here are a few KiB to a few tens of KiB: small chunks need several
            // round trips, the largest sends one chunk. The slowest mix (512-byte chunks, one
            // in flight, 512 bytes per tick) still moves a snapshot within the liveness bound.
            snapshot_chunk_bytes: rng.pick(&[512, 2_048, 16_384, 1 << 20]),
            snapshot_chunks_in_flight: rng.between(1, 8),
            snapshot_bytes_per_tick: rng.pick(&[0, 512, 2_048, 16_384, 8 << 20]),
            turn_ms_max: rng.pick(&[0, 0, 1, 3]),
            real_storage: rng.chance(500),
            sessions_max: rcraft::node::limits::SESSIONS_MAX,
            slow_disk: false,
            slow_links: false,
            snapshot_storm: false,
            entry_cache_bytes: CoreConfig::new(NodeId(0), 0).entry_cache_bytes,
        };
        if !params.pre_vote && !MEMBERSHIP_CHANGES_WITHOUT_PRE_VOTE {
            params.membership_gap_max_ms = None;
        }
        params
    }

    /// The core configuration of node `index` in its `incarnation`-th life.
    pub(crate) fn core_config(&self, seed: u64, index: usize, incarnation: u64) -> CoreConfig {
        let node_seed = seed
            .wrapping_mul(0x2545_F491_4F6C_DD1D)
            .wrapping_add((index as u64) << 32)
            .wrapping_add(incarnation);
        let mut config = CoreConfig::new(NodeId(index as u64), node_seed);
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.lease_reads = self.lease_reads;
        config.max_inflight_messages = self.max_inflight_messages;
        config.max_append_bytes = self.max_append_bytes;
        config.max_inflight_bytes = self.max_append_bytes * self.max_inflight_messages as u64;
        config.max_uncommitted_bytes = self.max_uncommitted_bytes;
        config.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        config.snapshot_chunks_in_flight = self.snapshot_chunks_in_flight;
        config.snapshot_bytes_per_tick = self.snapshot_bytes_per_tick;
        config.self_demotion = Some(SIM_SELF_DEMOTION);
        config.entry_cache_bytes = self.entry_cache_bytes;
        config
    }

    /// Makes this a slow-disk run: a quick network and quick disks, so the one slow disk is
    /// what sets its node apart.
    pub(crate) fn with_slow_disk(mut self) -> RunParams {
        self.slow_disk = true;
        self.network.delay_max_ms = self.network.delay_min_ms + 2;
        self.disk_delay_max_ms = self.disk_delay_max_ms.min(10);
        self
    }

    /// Makes this a slow-links run: a quick network and quick disks, so the one node whose
    /// messages are late is what sets it apart.
    pub(crate) fn with_slow_links(mut self) -> RunParams {
        self.slow_links = true;
        self.network.delay_max_ms = self.network.delay_min_ms + 2;
        self.disk_delay_max_ms = self.disk_delay_max_ms.min(10);
        self
    }

    /// A one-line description for failure reports.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} voters + {} spares, membership changes every <={}, pre_vote={}, check_quorum={}, lease_reads={}, drop={}‰, dup={}‰, net<={}ms, disk<={}ms, \
             inflight={}x{}B, chunk={}Bx{} at {}B/tick, snapshot_storm={}, turn<={}ms, real_storage={}, sessions<={}, slow_disk={}, entry_cache={}B, slow_links={}",
            self.voters,
            self.nodes - self.voters,
            self.membership_gap_max_ms
                .map_or("never".to_string(), |ms| format!("{ms}ms")),
            self.pre_vote,
            self.check_quorum,
            self.lease_reads,
            self.network.drop_per_mille,
            self.network.duplicate_per_mille,
            self.network.delay_max_ms,
            self.disk_delay_max_ms,
            self.max_inflight_messages,
            self.max_append_bytes,
            self.snapshot_chunk_bytes,
            self.snapshot_chunks_in_flight,
            self.snapshot_bytes_per_tick,
            self.snapshot_storm,
            self.turn_ms_max,
            self.real_storage,
            self.sessions_max,
            self.slow_disk,
            self.entry_cache_bytes,
            self.slow_links
        )
    }
}
