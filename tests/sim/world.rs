//! One simulated world: a cluster of replicas, their disks and state machines, the network,
//! the clients, a virtual clock and the event queue that drives them, for one seed.
//!
//! Owned by one thread for one run. Events are ordered by (time, sequence number), so ties
//! break by scheduling order and the run is a pure function of the seed. After every event
//! the checkers run (see `checker.rs`, `history.rs`); the first violated property ends the run
//! with a [`Failure`].

use crate::checker::{Checker, Verdict};
use crate::clients::{Attempt, SimClient};
use crate::disk::{Disk, SnapshotDamage, StoredSnapshot, WalDamage};
use crate::entry_log::EntryLog;
use crate::history::{History, ReadRecord};
use crate::network::Network;
use crate::params::{
    BOOT_MS, CALM_MS, CHAOS_MS, CLIENTS, CYCLES, DAMAGE_ENTRIES_MAX, DAMAGE_PER_RESTART_PER_MILLE,
    DAMAGE_RUNS_PER_MILLE, DAMAGE_VOTERS_MIN, DAMAGE_WITH_MEMBERSHIP_CHANGES, LIVENESS_BOUND_MS,
    MAX_EVENTS_PER_RUN, RPC_TIMEOUT_MS, RUN_MS, RunParams, SLOW_DISK_AT_MS,
    SLOW_DISK_HANDOVER_BOUND_MS, SLOW_DISK_RUNS_PER_MILLE, SLOW_LINKS_RUNS_PER_MILLE,
    SMALL_ENTRY_CACHE_RUNS_PER_MILLE, SNAPSHOT_STORM_RUNS_PER_MILLE, TICK_MS,
};
use crate::replica::{CoreView, SimCore};
use crate::rng::SimRng;
use crate::state_machine::{AppendList, NodeStateMachine};
use crate::wire::{Wire, WireCounts};
use crate::world_checks;
use rcraft::core::{Input, RequestId, StorageOutcome};
use rcraft::node::testing::SimConsensusSettings;
use rcraft::wire::{LogIndex, Membership, Message, NodeId, Role, SnapshotMeta, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Something that happens at a point of sim time.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// A node's clock ticks (only for the life it was scheduled in).
    Tick { node: usize, incarnation: u64 },
    /// A node's turn ends: the actions of the messages it took meanwhile are carried out.
    Drain { node: usize, incarnation: u64 },
    /// A message arrives at `msg.to`.
    Deliver(Message),
    /// A piece of a byte stream arrives (runs with byte streams, `wire.rs`): on connection
    /// `conn` dialled by `dialler` to `acceptor`, toward the acceptor or back.
    Bytes {
        dialler: usize,
        acceptor: usize,
        conn: u64,
        toward_acceptor: bool,
        bytes: Vec<u8>,
    },
    /// A piece of a client connection's bytes arrives (runs with byte streams,
    /// `client_wire.rs`): on client `client`'s connection `serial` to `node`, toward the node
    /// or back.
    ClientBytes {
        client: usize,
        node: usize,
        serial: u64,
        toward_node: bool,
        bytes: Vec<u8>,
    },
    /// The slow reader `client` takes what its node wrote to its connection `serial`.
    ClientReads { client: usize, serial: u64 },
    /// A node's disk finishes syncing persist `seq`; the core hears `Persisted`.
    Sync {
        node: usize,
        incarnation: u64,
        seq: u64,
    },
    /// A delayed answer from a node's storage or apply side.
    Answer {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    /// A received snapshot was written, verified and installed; tell the core.
    Install {
        node: usize,
        incarnation: u64,
        snapshot: StoredSnapshot,
    },
    /// A crashed node comes back.
    Restart { node: usize },
    /// Leader churn: a node that just became leader crashes or is cut off (if still in the
    /// same life).
    Depose {
        node: usize,
        incarnation: u64,
        cut_off_only: bool,
    },
    /// A node cut off by churn gets its links back.
    Reconnect { node: usize },
    /// Inject a fault (only during chaos).
    Fault,
    /// A client invokes a write or a read.
    Client,
    /// Some node snapshots its state machine.
    Snapshot,
    /// The leader (or some node) is asked for a membership change (only during chaos).
    Membership,
    /// A node removed by a committed configuration is shut down, if still not a member.
    Retire { node: usize },
    /// Faults stop; everything heals.
    Calm,
    /// Faults start.
    Chaos,
    /// Liveness: since `since` everything has been healed; progress is due by now.
    LivenessCheck {
        since: u64,
        /// The highest commit index any node knew when the faults healed.
        commit: LogIndex,
    },
    /// In a slow-disk (or slow-links) run: the leader's disk (or links) turns slow (`tries`
    /// left while no node leads).
    SlowDisk { tries: u64 },
    /// In a slow-disk or slow-links run: `node`, whose disk or links turned slow at `since`
    /// while it led, must have handed leadership over by now.
    SlowDiskCheck { node: usize, since: u64 },
    /// The run is over.
    End,
}

/// One simulated server: the replica (while up) and everything around it.
pub(crate) struct SimNode<C> {
    /// Its id.
    pub(crate) id: NodeId,
    /// The replica; `None` while crashed.
    pub(crate) core: Option<C>,
    /// Grows at every crash; events of an earlier life are ignored.
    pub(crate) incarnation: u64,
    /// Survives crashes.
    pub(crate) disk: Disk,
    /// The replica's log as its persist actions describe it (its in-memory log).
    pub(crate) log: EntryLog,
    /// The state machine.
    pub(crate) sm: NodeStateMachine,
    /// Snapshot files it can serve chunks from, by index, removed as the storage thread
    /// removes them: only those below the newest its core uses and not in use.
    pub(crate) snapshots: BTreeMap<LogIndex, StoredSnapshot>,
    /// The snapshots its core last said are in use (`StorageAction::KeepSnapshots`); lost in a
    /// crash, as the storage thread's list is.
    pub(crate) kept: Vec<SnapshotMeta>,
    /// Proposals awaiting `Proposed`: request id to the client's attempt.
    pub(crate) proposals: BTreeMap<RequestId, Attempt>,
    /// Appended proposals awaiting application: index to (term, attempt).
    pub(crate) proposed: BTreeMap<LogIndex, (Term, Attempt)>,
    /// Reads awaiting `ReadReady`.
    pub(crate) reads: BTreeMap<RequestId, ReadRecord>,
    /// Confirmed reads awaiting application through their read index.
    pub(crate) ready_reads: Vec<(LogIndex, RequestId, ReadRecord)>,
    /// The view observed after its last step.
    pub(crate) view: Option<CoreView>,
    /// Highest commit index observed in this life.
    pub(crate) last_commit: LogIndex,
    /// Last persist sequence number seen in this life.
    pub(crate) last_persist_seq: Option<u64>,
    /// Sim time it last became leader.
    pub(crate) leader_since: Option<u64>,
    /// Membership proposals awaiting `Proposed` or `ProposeRejected`.
    pub(crate) membership_requests: BTreeSet<RequestId>,
    /// Shut down for good after its removal committed (until a change adds it back).
    pub(crate) retired: bool,
    /// Messages were stepped in this life whose actions wait for an `Event::Drain`.
    pub(crate) turn_open: bool,
}

/// Why a run failed.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// The seed.
    pub(crate) seed: u64,
    /// Sim time of the failing event.
    pub(crate) time_ms: u64,
    /// Number of the failing event.
    pub(crate) event: u64,
    /// The run's parameters.
    pub(crate) params: String,
    /// The checker's message.
    pub(crate) message: String,
    /// The last events, when tracing.
    pub(crate) trace: Vec<String>,
}

/// What a passing run did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunSummary {
    /// Events processed.
    pub(crate) events: u64,
    /// Committed entries.
    pub(crate) committed: usize,
    /// Acknowledged writes.
    pub(crate) writes_acked: usize,
    /// Completed reads.
    pub(crate) reads: u64,
    /// Crashes injected.
    pub(crate) crashes: u64,
    /// Committed membership entries.
    pub(crate) membership_changes: u64,
    /// Writes sent again after an unknown outcome.
    pub(crate) retries: u64,
    /// Retries the session table answered without applying them again.
    pub(crate) duplicates: u64,
    /// Writes refused because their session was forgotten.
    pub(crate) expired: u64,
    /// Gray-failure self-demotions (by a leader with a slow disk or slow links).
    pub(crate) self_demotions: u64,
    /// Entries a leader read back from its disk for a follower (no longer cached).
    pub(crate) entry_reads: u64,
    /// AppendRequests sent, and refusals of one with a hint of where the refusing log stands
    /// (each sends its leader back to probing).
    pub(crate) appends: AppendCounts,
    /// Disk damage injected: synced log ranges lost, hard-state files damaged, and how many
    /// of those struck while another node was still damaged.
    pub(crate) damage: DamageCounts,
    /// What the byte streams carried (`wire.rs`).
    pub(crate) wire: WireCounts,
}

/// AppendRequests and their refusals in a run (or summed over runs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AppendCounts {
    /// AppendRequests sent (each copy the network delivers counts once, at the send).
    pub(crate) sent: u64,
    /// AppendResponses refusing an append with a conflict hint (not the answers to a stale
    /// term): each sends its leader back to probing.
    pub(crate) refused: u64,
}

/// Disk damage injected into a run (or summed over runs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DamageCounts {
    /// Synced log ranges lost (a restart found the tail of a log gone).
    pub(crate) log_ranges: u64,
    /// Hard-state files found damaged at a restart.
    pub(crate) hard_states: u64,
    /// Damage of either kind that struck while another node was still damaged.
    pub(crate) beside_another: u64,
    /// Damage of either kind done to the real storage's bytes (runs with `real_storage`).
    pub(crate) real_bytes: u64,
    /// Of those, WAL pages made unreadable (`WalDamage::Unreadable`).
    pub(crate) unreadable_pages: u64,
    /// Newest snapshot files damaged in the real storage (`Disk::damage_real_snapshot`).
    pub(crate) snapshot_files: u64,
}

/// How much of the run to record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceMode {
    /// Lines kept (the last ones); 0 records nothing.
    pub(crate) keep_lines: usize,
    /// Print every line as it happens.
    pub(crate) echo: bool,
}

/// One world.
pub(crate) struct World<C> {
    pub(crate) seed: u64,
    pub(crate) params: RunParams,
    pub(crate) check_persist_contract: bool,
    pub(crate) rng: SimRng,
    pub(crate) now: u64,
    queue: BTreeMap<(u64, u64), Event>,
    next_event_seq: u64,
    events: u64,
    pub(crate) nodes: Vec<SimNode<C>>,
    pub(crate) network: Network,
    pub(crate) checker: Checker,
    pub(crate) history: History,
    /// The configuration every node starts from: the first `params.voters` nodes vote.
    pub(crate) initial_membership: Membership,
    pub(crate) calm: bool,
    pub(crate) next_request_id: RequestId,
    pub(crate) next_write_id: u64,
    pub(crate) crashes: u64,
    /// The clients (their sessions, writes in flight and nodes of choice).
    pub(crate) clients: Vec<SimClient>,
    /// Writes sent again after an unknown outcome.
    pub(crate) retries: u64,
    /// Retries answered from a session table without being applied again.
    pub(crate) duplicates: u64,
    /// Writes refused because their session was forgotten.
    pub(crate) expired: u64,
    /// Which client sent each outstanding request.
    pub(crate) request_client: BTreeMap<RequestId, usize>,
    trace_mode: TraceMode,
    trace: VecDeque<String>,
    /// Decides disk damage (`DAMAGE_*` in params.rs); `None` in runs without it.
    damage_rng: Option<SimRng>,
    /// Log damage strikes only while every configuration has at least this many voters
    /// (`DAMAGE_VOTERS_MIN`, unless a seed of a finding runs with another).
    pub(crate) damage_voters_min: usize,
    /// Decides hard-state damage (tests/sim/hard_state_damage.rs); `None` in runs without it.
    pub(crate) hard_state_damage_rng: Option<SimRng>,
    /// The node whose disk is slow (`SLOW_DISK_*` in params.rs), once chosen.
    pub(crate) slow_disk_node: Option<usize>,
    /// Its disk is slow now: from the choice on, except in calm phases (which heal every
    /// fault, so the run can check that the replicas converge).
    pub(crate) slow_disk_on: bool,
    /// The node whose links are slow (`SLOW_LINKS_*` in params.rs), once chosen.
    pub(crate) slow_links_node: Option<usize>,
    /// Its messages are late now (as `slow_disk_on`).
    pub(crate) slow_links_on: bool,
    /// When the last calm phase began, turning a slow disk or slow links fast again.
    pub(crate) slow_off_at: Option<u64>,
    /// Every gray-failure self-demotion: (sim time, node, its incarnation).
    pub(crate) self_demotions: Vec<(u64, usize, u64)>,
    /// Entry reads (`StorageAction::ReadEntries`) the disk answered with entries.
    pub(crate) entry_reads: u64,
    /// AppendRequests and refusals sent so far.
    pub(crate) appends: AppendCounts,
    /// Disk damage injected so far.
    pub(crate) damage: DamageCounts,
    /// The byte streams between the nodes, in runs that have them (`wire.rs`).
    pub(crate) wire: Option<Wire>,
}

impl<C: SimCore> World<C> {
    /// A world for `seed`; nothing runs until [`World::run`].
    pub(crate) fn new(seed: u64, check_persist_contract: bool, trace_mode: TraceMode) -> Self {
        let mut rng = SimRng::new(seed);
        let mut params = RunParams::random(&mut rng);
        params.sessions_max = sessions_max(seed);
        params.entry_cache_bytes = entry_cache_bytes(seed, params.entry_cache_bytes);
        if slow_disk_run(seed) {
            params = params.with_slow_disk();
        } else if slow_links_run(seed) {
            params = params.with_slow_links();
        }
        params.snapshot_storm =
            SimRng::new(seed ^ 0x5A0B_5707_0000_0001).chance(SNAPSHOT_STORM_RUNS_PER_MILLE);
        let ids: Vec<NodeId> = (0..params.nodes).map(|i| NodeId(i as u64)).collect();
        let initial_membership = Membership::with_voters(ids[..params.voters].iter().copied());
        let nodes = ids
            .iter()
            .map(|&id| {
                SimNode::new(
                    id,
                    &initial_membership,
                    params.real_storage,
                    params.sessions_max,
                )
            })
            .collect();
        let params_for_damage = params.clone();
        let wire = Wire::for_seed(seed, ids.len(), !(params.slow_disk || params.slow_links));
        World {
            seed,
            network: Network::new(params.network.clone()),
            params,
            check_persist_contract,
            rng,
            now: 0,
            queue: BTreeMap::new(),
            next_event_seq: 0,
            events: 0,
            nodes,
            checker: Checker::default(),
            history: History::default(),
            initial_membership,
            calm: true,
            next_request_id: 1,
            next_write_id: 1,
            crashes: 0,
            clients: vec![SimClient::default(); CLIENTS],
            retries: 0,
            duplicates: 0,
            expired: 0,
            request_client: BTreeMap::new(),
            trace_mode,
            trace: VecDeque::new(),
            damage_rng: damage_rng(seed, &params_for_damage),
            damage_voters_min: DAMAGE_VOTERS_MIN,
            hard_state_damage_rng: crate::hard_state_damage::hard_state_damage_rng(
                seed,
                &params_for_damage,
            ),
            slow_disk_node: None,
            slow_disk_on: false,
            slow_links_node: None,
            slow_links_on: false,
            slow_off_at: None,
            self_demotions: Vec::new(),
            entry_reads: 0,
            appends: AppendCounts::default(),
            damage: DamageCounts::default(),
            wire,
        }
    }

    /// Runs the whole scenario, turning a panic inside the core or the simulator into a
    /// failure of this seed too; the first violated property is the `Err`.
    pub(crate) fn run(mut self) -> Result<RunSummary, Failure> {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_events()));
        outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a non-string panic".to_string());
            Err(self.failure(format!("panic: {what}")))
        })
    }

    fn run_events(&mut self) -> Result<RunSummary, Failure> {
        if let Err(message) = self.boot() {
            return Err(self.failure(message));
        }
        while let Some(((time, _), event)) = self.queue.pop_first() {
            self.now = time;
            self.events += 1;
            if self.tracing() {
                let line = format!("{event:?}");
                self.note(line);
            }
            if matches!(event, Event::End) {
                if let Err(message) = self.check_end() {
                    return Err(self.failure(message));
                }
                break;
            }
            if self.events > MAX_EVENTS_PER_RUN {
                return Err(self.failure(format!(
                    "more than {MAX_EVENTS_PER_RUN} events: a message storm or a loop"
                )));
            }
            if let Err(message) = self.handle(event) {
                return Err(self.failure(message));
            }
        }
        let (writes_acked, reads) = self.history.counts();
        Ok(RunSummary {
            events: self.events,
            committed: self.checker.committed_count(),
            writes_acked,
            reads,
            crashes: self.crashes,
            membership_changes: self.checker.committed_membership_changes(),
            retries: self.retries,
            duplicates: self.duplicates,
            expired: self.expired,
            self_demotions: self.self_demotions.len() as u64,
            entry_reads: self.entry_reads,
            appends: self.appends,
            damage: self.damage,
            wire: self.wire.as_ref().map(|w| w.counts()).unwrap_or_default(),
        })
    }

    /// After the last calm phase: the node that applied the most holds every acknowledged
    /// write and no write told it failed, and every running member of its configuration
    /// applied as much (the replicas converged).
    fn check_end(&self) -> Verdict {
        let up = || self.nodes.iter().filter(|n| n.core.is_some() && !n.retired);
        let Some(most) = up().max_by_key(|n| n.sm.applied_index()) else {
            return Ok(());
        };
        self.history.check_final_state(&most.sm.writes())?;
        let Some(view) = most.view.as_ref() else {
            return Ok(());
        };
        let members = view.membership.members();
        let running_members = up().filter(|n| members.contains(&n.id));
        world_checks::converged(
            (most.id, most.sm.applied_index()),
            running_members.map(|n| (n.id, n.sm.applied_index())),
        )
    }

    fn boot(&mut self) -> Verdict {
        // The boot phase is calm: the first liveness check covers it.
        self.network.set_calm(true);
        for node in 0..self.nodes.len() {
            self.start_node(node)?;
        }
        self.schedule(
            BOOT_MS.min(LIVENESS_BOUND_MS),
            Event::LivenessCheck {
                since: 0,
                commit: LogIndex(0),
            },
        );
        for cycle in 0..CYCLES {
            let chaos_at = BOOT_MS + cycle * (CHAOS_MS + CALM_MS);
            self.schedule(chaos_at, Event::Chaos);
            self.schedule(chaos_at + 1, Event::Fault);
            self.schedule(chaos_at + CHAOS_MS, Event::Calm);
        }
        self.schedule(RUN_MS, Event::End);
        self.schedule(50, Event::Client);
        self.schedule(100, Event::Snapshot);
        if self.params.membership_gap_max_ms.is_some() {
            self.schedule(BOOT_MS + 1, Event::Membership);
        }
        if self.params.slow_disk || self.params.slow_links {
            self.schedule(SLOW_DISK_AT_MS, Event::SlowDisk { tries: 3 });
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Verdict {
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Drain { node, incarnation } => self.on_drain(node, incarnation),
            Event::Deliver(msg) => self.on_deliver(msg),
            Event::Bytes {
                dialler,
                acceptor,
                conn,
                toward_acceptor,
                bytes,
            } => self.on_bytes(dialler, acceptor, conn, toward_acceptor, bytes),
            Event::ClientBytes {
                client,
                node,
                serial,
                toward_node,
                bytes,
            } => self.on_client_bytes(client, node, serial, toward_node, bytes),
            Event::ClientReads { client, serial } => self.on_client_reads(client, serial),
            Event::Sync {
                node,
                incarnation,
                seq,
            } => self.on_sync(node, incarnation, seq),
            Event::Answer {
                node,
                incarnation,
                input,
            } => self.on_answer(node, incarnation, input),
            Event::Install {
                node,
                incarnation,
                snapshot,
            } => self.on_install(node, incarnation, snapshot),
            Event::Restart { node } => self.restart_if_down(node),
            Event::Depose {
                node,
                incarnation,
                cut_off_only,
            } => self.on_depose(node, incarnation, cut_off_only),
            Event::Reconnect { node } => {
                let id = self.nodes[node].id;
                self.network.reconnect(id);
                Ok(())
            }
            Event::Fault => self.on_fault(),
            Event::Client => self.on_client(),
            Event::Snapshot => self.on_snapshot(),
            Event::Membership => self.on_membership(),
            Event::Retire { node } => self.on_retire(node),
            Event::Calm => self.on_calm(),
            Event::Chaos => {
                self.calm = false;
                self.slow_disk_on = self.slow_disk_node.is_some();
                self.slow_links_on = self.slow_links_node.is_some();
                self.network.set_calm(false);
                Ok(())
            }
            Event::LivenessCheck { since, commit } => self.on_liveness_check(since, commit),
            Event::SlowDisk { tries } => {
                self.on_slow_disk(tries);
                Ok(())
            }
            Event::SlowDiskCheck { node, since } => self.on_slow_disk_check(node, since),
            Event::End => Ok(()),
        }
    }

    /// Queues `event` at `at` (never in the past).
    pub(crate) fn schedule(&mut self, at: u64, event: Event) {
        let at = at.max(self.now);
        self.queue.insert((at, self.next_event_seq), event);
        self.next_event_seq += 1;
    }

    /// Index of node `id` in `nodes`.
    pub(crate) fn index_of(&self, id: NodeId) -> Option<usize> {
        let index = id.0 as usize;
        (index < self.nodes.len()).then_some(index)
    }

    /// True when `node` is up and still in life `incarnation`.
    fn alive(&self, node: usize, incarnation: u64) -> bool {
        let n = &self.nodes[node];
        n.core.is_some() && n.incarnation == incarnation
    }

    fn on_tick(&mut self, node: usize, incarnation: u64) -> Verdict {
        if !self.alive(node, incarnation) {
            return Ok(());
        }
        self.schedule(self.now + TICK_MS, Event::Tick { node, incarnation });
        self.feed(node, Input::Tick)
    }

    fn on_deliver(&mut self, msg: Message) -> Verdict {
        let Some(to) = self.index_of(msg.to) else {
            return Err(format!("message to unknown node {}: {msg:?}", msg.to));
        };
        if self.network.is_cut(msg.from, msg.to) || self.nodes[to].core.is_none() {
            return Ok(());
        }
        self.deliver_message(to, msg)
    }

    /// Steps a message that reached `to` (up, and not cut off from the sender).
    pub(crate) fn deliver_message(&mut self, to: usize, msg: Message) -> Verdict {
        if self.params.turn_ms_max == 0 {
            return self.feed(to, Input::Message(msg));
        }
        // As the consensus thread does, take the message now and carry out what it causes
        // when the turn ends, together with whatever else arrived meanwhile (and before any
        // other input is fed, which drains at once).
        self.take_input(to, Input::Message(msg))?;
        if !self.nodes[to].turn_open {
            self.nodes[to].turn_open = true;
            let at = self.now + self.rng.between(0, self.params.turn_ms_max);
            let incarnation = self.nodes[to].incarnation;
            self.schedule(
                at,
                Event::Drain {
                    node: to,
                    incarnation,
                },
            );
        }
        Ok(())
    }

    fn on_drain(&mut self, node: usize, incarnation: u64) -> Verdict {
        if !self.alive(node, incarnation) {
            return Ok(());
        }
        self.nodes[node].turn_open = false;
        self.drain(node)
    }

    fn on_sync(&mut self, node: usize, incarnation: u64, seq: u64) -> Verdict {
        if !self.alive(node, incarnation) {
            return Ok(());
        }
        let id = self.nodes[node].id;
        self.nodes[node]
            .disk
            .sync_through(seq)
            .map_err(|e| format!("node {id}: {e}"))?;
        self.judge_revotes(node)?;
        self.feed(node, Input::Storage(StorageOutcome::Persisted { seq }))
    }

    /// A node that lost the record of its votes (a damaged hard state) saved a vote in a term
    /// where the destroyed record held another. Election safety allows exactly one such case:
    /// the forgotten vote was for itself, in a candidacy no other node granted (its requests
    /// reached nobody, or nobody granted them): that vote counts toward no quorum, and no
    /// node can know the term it was cast in, since a node that received the candidacy's
    /// request would have reported that term. Any other is two votes in a term.
    pub(crate) fn judge_revotes(&mut self, node: usize) -> Verdict {
        let id = self.nodes[node].id;
        for (term, forgotten, candidate) in self.nodes[node].disk.take_revotes() {
            let granted = self.checker.granted_to(forgotten, term);
            if forgotten != id || !granted.is_empty() {
                return Err(format!(
                    "node {id}: voted twice in term {term}: for {forgotten} (a record its damaged \
                     hard state lost; granted to it by {granted:?}) and then for {candidate}"
                ));
            }
        }
        Ok(())
    }

    fn on_answer(&mut self, node: usize, incarnation: u64, input: Input) -> Verdict {
        if !self.alive(node, incarnation) {
            return Ok(());
        }
        self.feed(node, input)
    }

    fn on_calm(&mut self) -> Verdict {
        self.calm = true;
        self.slow_disk_on = false;
        self.slow_links_on = false;
        self.slow_off_at = Some(self.now);
        self.network.heal();
        self.network.set_calm(true);
        for node in 0..self.nodes.len() {
            self.restart_if_down(node)?;
        }
        let commit = self.nodes.iter().map(|n| n.last_commit).max();
        self.schedule(
            self.now + LIVENESS_BOUND_MS,
            Event::LivenessCheck {
                since: self.now,
                commit: commit.unwrap_or(LogIndex(0)),
            },
        );
        Ok(())
    }

    /// Every damaged node that is up has repaired what its disk lost by the liveness check,
    /// and learned its voters' terms if its hard state was damaged.
    fn check_repaired(&self, since: u64) -> Verdict {
        let nodes = self.nodes.iter();
        world_checks::repaired(since, nodes.map(|n| (n.id, n.view.as_ref(), n.disk.lost())))
    }

    /// With everything healed since `since`, a leader must exist and a write invoked since
    /// then must have been acknowledged. Every node that is not retired is up, so every voter
    /// of the configuration in force is; the leader must vote in its own configuration (a
    /// leader still finishing its own removal does not count), and removed nodes and
    /// learners are not expected to do anything. Every voter of the leader's configuration
    /// must also have applied what was committed at the heal (`commit`): one that needs a
    /// snapshot must get one while writes and snapshots go on.
    fn on_liveness_check(&mut self, since: u64, commit: LogIndex) -> Verdict {
        let leader = self.leading().and_then(|i| self.nodes[i].view.as_ref());
        let leader_membership = leader.map(|v| &v.membership);
        let running: Vec<(NodeId, LogIndex)> = (self.nodes.iter())
            .filter(|n| n.core.is_some())
            .map(|n| (n.id, n.sm.applied_index()))
            .collect();
        let acked = self.history.acked_since(since);
        world_checks::live(since, commit, leader_membership, &running, acked)?;
        self.check_repaired(since)
    }

    /// The node leading now, if one does (a voter that sees itself leader).
    fn leading(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            let n = &self.nodes[i];
            n.core.is_some()
                && (n.view.as_ref())
                    .is_some_and(|v| v.role == Role::Leader && v.membership.is_voter(n.id))
        })
    }

    /// Gray failure: the leader's disk (or, in a slow-links run, its links) turns slow for the
    /// rest of the run.
    fn on_slow_disk(&mut self, tries: u64) {
        match self.leading() {
            Some(node) if self.params.slow_links => {
                self.slow_links_node = Some(node);
                self.slow_links_on = true;
                let since = self.now;
                let at = since + SLOW_DISK_HANDOVER_BOUND_MS;
                self.schedule(at, Event::SlowDiskCheck { node, since });
            }
            Some(node) => {
                self.slow_disk_node = Some(node);
                self.slow_disk_on = true;
                let since = self.now;
                let at = since + SLOW_DISK_HANDOVER_BOUND_MS;
                self.schedule(at, Event::SlowDiskCheck { node, since });
            }
            None if tries > 0 => {
                let tries = tries - 1;
                self.schedule(self.now + 50, Event::SlowDisk { tries });
            }
            None => {}
        }
    }

    /// The node with the slow disk (or links) handed leadership over of its own accord, to a
    /// node that leads now.
    fn on_slow_disk_check(&mut self, node: usize, since: u64) -> Verdict {
        let what = if self.params.slow_links {
            "links"
        } else {
            "disk"
        };
        let leader = self.leading();
        world_checks::handed_over(node, since, what, &self.self_demotions, leader)
    }

    /// Starts (or restarts) `node` from what its disk holds.
    pub(crate) fn start_node(&mut self, node: usize) -> Verdict {
        let seed = self.seed;
        let config = self
            .params
            .core_config(seed, node, self.nodes[node].incarnation);
        let id = self.nodes[node].id;
        self.nodes[node]
            .disk
            .restart_real(&self.initial_membership)
            .map_err(|e| format!("node {id}: {e}"))?;
        let recovered = self.nodes[node].disk.recovered(&self.initial_membership);
        let durable = self.nodes[node].disk.snapshot().cloned();
        if let Some(snapshot) = &durable {
            self.restore_checked(id, snapshot)?;
        }
        let (base_index, base_term, base_membership) = durable.as_ref().map_or(
            (LogIndex(0), Term(0), self.initial_membership.clone()),
            |s| (s.meta.index, s.meta.term, s.meta.membership.clone()),
        );
        let log = EntryLog::from_parts(
            base_index,
            base_term,
            base_membership,
            recovered.entries.clone(),
        )
        .map_err(|e| format!("node {id}: durable log: {e}"))?;
        let first_tick = self.now + self.rng.between(1, TICK_MS);
        // Entries kept behind a snapshot: one choice per life of the node.
        let retain_entries = self.rng.pick(&[0, 3, 20]);
        let sm = NodeStateMachine::new(
            &self.initial_membership,
            self.params.sessions_max,
            durable.as_ref(),
            retain_entries,
        )
        .map_err(|e| format!("node {id}: restoring its snapshot at start: {e}"))?;
        let settings = SimConsensusSettings {
            servers: self.nodes.len(),
            tick_ms: TICK_MS,
            rpc_timeout_ms: RPC_TIMEOUT_MS,
            applied: sm.applied_index(),
        };
        let core = C::start(config, recovered, &settings, first_tick)
            .map_err(|e| format!("node {id}: start: {e}"))?;
        self.wire_start(node)?;
        let n = &mut self.nodes[node];
        n.core = Some(core);
        n.log = log;
        n.sm = sm;
        n.snapshots = durable.into_iter().map(|s| (s.meta.index, s)).collect();
        n.last_commit = base_index;
        n.last_persist_seq = None;
        n.view = None;
        let incarnation = n.incarnation;
        self.schedule(first_tick, Event::Tick { node, incarnation });
        self.drain(node)
    }

    /// Restarts `node` unless it is up or retired.
    pub(crate) fn restart_if_down(&mut self, node: usize) -> Verdict {
        if self.nodes[node].core.is_some() || self.nodes[node].retired {
            return Ok(());
        }
        if self.tracing() {
            self.note(format!("restart node {node}"));
        }
        self.maybe_damage_disk(node)?;
        self.maybe_damage_hard_state(node)?;
        self.start_node(node)
    }

    /// Damage to synced data found at a restart, in the runs that have it: the last entries
    /// of the node's log are gone (in real-storage runs also from a WAL page made unreadable
    /// on). A minority: the nodes whose loss is not repaired, or whose votes are unknown,
    /// with this one, stay fewer than half the voters of every configuration
    /// (`World::voters_needed_for_damage`: one needs three voters, two five).
    /// Where the real storage runs, its WAL's bytes are damaged from the first entry lost
    /// (`Disk::damage_synced`), and its restart must report what the model lost; or, in a
    /// third of those draws, its newest snapshot file is (`Disk::damage_real_snapshot`), and
    /// the model follows what the real start made of it once that start proved sound.
    fn maybe_damage_disk(&mut self, node: usize) -> Verdict {
        let Some(rng) = self.damage_rng.as_mut() else {
            return Ok(());
        };
        if !rng.chance(DAMAGE_PER_RESTART_PER_MILLE) {
            return Ok(());
        }
        let count = rng.between(1, DAMAGE_ENTRIES_MAX);
        let real_draw = (self.nodes[node].disk.has_real_storage()).then(|| rng.next_u64());
        // A damaged voter votes only for a candidate covering what it may have acknowledged
        // (src/core/repair.rs): damage strikes while every node's configuration (each half
        // of a joint one), and the one the damaged node is left with, has at least
        // `damage_voters_min` voters, and enough that the damaged nodes stay a minority.
        let min = self.voters_needed_for_damage(node, self.damage_voters_min);
        let minority = |m: &Membership| {
            let outgoing = m.voters_outgoing.len();
            m.voters.len() >= min && (outgoing == 0 || outgoing >= min)
        };
        let initial = &self.initial_membership;
        let all_large = self
            .nodes
            .iter()
            .all(|n| minority(&n.disk.latest_membership(initial)));
        if !all_large {
            return Ok(());
        }
        let initial = self.initial_membership.clone();
        // A third of the real draws damage the newest snapshot file instead, where the node
        // has one (`Disk::damage_real_snapshot`), from a generator of that draw's own.
        if let Some(mut snap_rng) = real_draw.map(|d| SimRng::new(d ^ 0x5AA9_5407_DA3A_6ED1)) {
            if snap_rng.chance(333) {
                let checker = &self.checker;
                let config_at = |index| {
                    (checker.committed_membership_through(index))
                        .unwrap_or(&initial)
                        .clone()
                };
                let disk = &mut self.nodes[node].disk;
                let damage =
                    disk.damage_real_snapshot(snap_rng.next_u64(), &initial, minority, config_at);
                let damage = damage.map_err(|e| format!("node {node}: {e}"))?;
                if let Some(SnapshotDamage { point, claim }) = damage {
                    self.damage.snapshot_files += 1;
                    if self.tracing() {
                        self.note(format!(
                            "node {node}'s snapshot file at {point:?} damaged; its restart \
                             claims {claim:?}"
                        ));
                    }
                    return Ok(());
                }
            }
        }
        let damaged = self.nodes[node]
            .disk
            .damage_synced(count, real_draw, &initial, minority)?;
        if let Some((lost, real)) = damaged {
            self.damage.log_ranges += 1;
            if self.another_node_damaged(node) {
                self.damage.beside_another += 1;
            }
            if let Some(kind) = real {
                self.damage.real_bytes += 1;
                if kind == WalDamage::Unreadable {
                    self.damage.unreadable_pages += 1;
                }
            }
            if self.tracing() {
                self.note(format!(
                    "node {node}'s disk lost synced entries {}..={} ({real:?})",
                    lost.from, lost.through
                ));
            }
        }
        Ok(())
    }

    /// Restores a state machine from a snapshot and checks it against the committed log.
    pub(crate) fn restore_checked(
        &self,
        id: NodeId,
        snapshot: &StoredSnapshot,
    ) -> Result<AppendList, String> {
        let sm = AppendList::restore(&snapshot.meta, &snapshot.bytes, self.params.sessions_max)
            .map_err(|e| format!("node {id}: {e}"))?;
        let index = snapshot.meta.index;
        let expected = self
            .checker
            .committed_state_through(index, &self.initial_membership, self.params.sessions_max)
            .ok_or_else(|| {
                format!("node {id}: snapshot at {index} covers entries never seen committed")
            })?;
        let term_ok = index == LogIndex(0)
            || self
                .checker
                .committed_entry(index)
                .is_some_and(|e| e.term == snapshot.meta.term);
        let membership_ok = self
            .checker
            .committed_membership_through(index)
            .unwrap_or(&self.initial_membership)
            == &snapshot.meta.membership;
        if !membership_ok {
            return Err(format!(
                "snapshot membership: node {id} restores a snapshot at index {index} carrying \
                 configuration {:?}, but the committed log has {:?} in force there",
                snapshot.meta.membership,
                self.checker
                    .committed_membership_through(index)
                    .unwrap_or(&self.initial_membership)
            ));
        }
        // The entry point a repairing peer's answer leans on (finding 39): the snapshot
        // must name the committed log's configuration entry in force at its index.
        let entry_point = self.checker.committed_membership_entry_through(index);
        if entry_point.is_some() && snapshot.meta.membership_entry != entry_point {
            return Err(format!(
                "snapshot membership entry: node {id} restores a snapshot at index {index} \
                 naming {:?} as its configuration's entry, but the committed log's is {:?}",
                snapshot.meta.membership_entry, entry_point
            ));
        }
        if expected.writes != sm.writes || !term_ok {
            return Err(format!(
                "state machine safety: node {id} restores a snapshot at index {index} term {} \
                 whose contents differ from the committed log",
                snapshot.meta.term
            ));
        }
        if expected.snapshot_bytes() != snapshot.bytes {
            return Err(format!(
                "state machine safety: node {id} restores a snapshot at index {index} term {} \
                 whose session table differs from the committed log's",
                snapshot.meta.term
            ));
        }
        Ok(sm)
    }

    /// Crashes `node`: its replica, state machine and unsynced writes are gone.
    pub(crate) fn crash(&mut self, node: usize) -> Verdict {
        let pending = self.nodes[node].disk.pending_writes() as u64;
        let reached_disk = self.rng.between(0, pending) as usize;
        self.crashes += 1;
        if self.tracing() {
            self.note(format!(
                "crash node {node} ({reached_disk} of {pending} unsynced writes reach disk)"
            ));
        }
        self.wire_crash(node);
        let n = &mut self.nodes[node];
        let id = n.id;
        n.core = None;
        n.turn_open = false;
        n.incarnation += 1;
        n.disk
            .crash(reached_disk)
            .map_err(|e| format!("node {id}: {e}"))?;
        self.judge_revotes(node)?;
        let n = &mut self.nodes[node];
        let proposals: Vec<Attempt> = n.proposals.values().copied().collect();
        let proposed: Vec<Attempt> = n.proposed.values().map(|(_, a)| *a).collect();
        n.membership_requests.clear();
        n.proposals.clear();
        n.proposed.clear();
        n.reads.clear();
        n.ready_reads.clear();
        n.snapshots.clear();
        n.kept.clear();
        n.view = None;
        for attempt in proposals.into_iter().chain(proposed) {
            self.attempt_lost(&attempt);
        }
        Ok(())
    }

    /// True when events are being recorded.
    pub(crate) fn tracing(&self) -> bool {
        self.trace_mode.keep_lines > 0
    }

    /// Records one trace line.
    pub(crate) fn note(&mut self, line: String) {
        let mut line = format!("t={:>6} #{:<6} {line}", self.now, self.events);
        if line.len() > 400 {
            let mut cut = 400;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" ...");
        }
        if self.trace_mode.echo {
            println!("{line}");
        }
        if self.trace.len() == self.trace_mode.keep_lines {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn failure(&self, message: String) -> Failure {
        Failure {
            seed: self.seed,
            time_ms: self.now,
            event: self.events,
            params: match &self.wire {
                Some(wire) => format!("{}, {}", self.params.describe(), wire.describe()),
                None => self.params.describe(),
            },
            message,
            trace: self.trace.iter().cloned().collect(),
        }
    }
}

impl<C> SimNode<C> {
    /// Drops the snapshot files storage removes when its core says which are in use: those
    /// below the newest in use that are not in use.
    pub(crate) fn remove_unused_snapshots(&mut self) {
        let point = |meta: &SnapshotMeta| (meta.index, meta.term);
        let Some(below) = self.kept.iter().map(point).max() else {
            return;
        };
        let kept = &self.kept;
        self.snapshots.retain(|_, snapshot| {
            let at = point(&snapshot.meta);
            at >= below || kept.iter().any(|k| point(k) == at)
        });
    }

    fn new(
        id: NodeId,
        initial_membership: &Membership,
        real_storage: bool,
        sessions_max: usize,
    ) -> Self {
        let disk = if real_storage {
            Disk::with_real_storage(initial_membership).unwrap_or_else(|e| panic!("node {id}: {e}"))
        } else {
            Disk::default()
        };
        SimNode {
            id,
            core: None,
            incarnation: 0,
            disk,
            log: EntryLog::default(),
            // Replaced by `start_node`, which chooses the life's setting.
            sm: NodeStateMachine::new(initial_membership, sessions_max, None, 0)
                .unwrap_or_else(|e| panic!("node {id}: {e}")),
            snapshots: BTreeMap::new(),
            kept: Vec::new(),
            proposals: BTreeMap::new(),
            proposed: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            view: None,
            last_commit: LogIndex(0),
            last_persist_seq: None,
            leader_since: None,
            membership_requests: BTreeSet::new(),
            retired: false,
            turn_open: false,
        }
    }
}

/// The session table's capacity in run `seed`: in a quarter of the runs a few clients fewer
/// or more than there are clients, so sessions are forgotten (more so as retried registrations
/// leave orphans) and clients must re-register; else the node's own. Drawn apart from the
/// other parameters so that it does not change them.
fn sessions_max(seed: u64) -> usize {
    let mut rng = SimRng::new(seed ^ 0x5E55_10A5_0000_0001);
    if rng.chance(250) {
        rng.between(CLIENTS as u64 / 2, CLIENTS as u64 + 4) as usize
    } else {
        rcraft::node::limits::SESSIONS_MAX
    }
}

/// The nodes' entry cache: tiny in [`SMALL_ENTRY_CACHE_RUNS_PER_MILLE`] of the runs, so that
/// entries leave it and followers are caught up from storage reads; else `default`. Drawn
/// apart from the other parameters so that it does not change them.
fn entry_cache_bytes(seed: u64, default: u64) -> u64 {
    let mut rng = SimRng::new(seed ^ 0xCAC4_E000_0000_0001);
    if rng.chance(SMALL_ENTRY_CACHE_RUNS_PER_MILLE) {
        rng.pick(&[0, 64, 256, 2_048])
    } else {
        default
    }
}

/// Whether `seed` runs with a slow disk (`SLOW_DISK_*` in params.rs), from a generator of its
/// own.
fn slow_disk_run(seed: u64) -> bool {
    SimRng::new(seed ^ 0x5107_D15C_0000_0001).chance(SLOW_DISK_RUNS_PER_MILLE)
}

/// Whether `seed` is a slow-links run (if not a slow-disk one), from a generator of its own.
fn slow_links_run(seed: u64) -> bool {
    SimRng::new(seed ^ 0x5107_1145_0000_0001).chance(SLOW_LINKS_RUNS_PER_MILLE)
}

/// The generator deciding disk damage, in the runs that have it; not runs with membership
/// changes: a configuration shrunk to two voters while one of them
/// repairs elects no leader (the other may not win without the abstaining vote, and the
/// repair needs a leader); see "Protocol-aware recovery" in docs/ARCHITECTURE.md.
fn damage_rng(seed: u64, params: &RunParams) -> Option<SimRng> {
    let mut rng = SimRng::new(seed ^ 0xDA3A_6ED0_15C5_0001);
    let eligible = DAMAGE_WITH_MEMBERSHIP_CHANGES || params.membership_gap_max_ms.is_none();
    (eligible && rng.chance(DAMAGE_RUNS_PER_MILLE)).then_some(rng)
}
