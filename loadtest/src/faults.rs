//! The fault thread: on a fixed schedule (`--kill-leader-every`, `--pause-leader-every`) and on
//! the seeded nemesis schedule (`--nemesis ... --seed N`, `nemesis.rs`) it finds the leader and
//! applies a fault: kill (`kill -9`) or pause (`SIGSTOP`) the leader, cut the network between
//! nodes (a partition, `netns.rs`), add packet loss or delay, or stop a follower and damage its
//! log (`wal_damage.rs`). Later it undoes the fault: restart with the same data directory,
//! `SIGCONT`, heal the network, or restart the damaged follower. It owns the schedules and the
//! event list; it touches the cluster only under its mutex and never while asking nodes for
//! their status.
//!
//! Invariant: at most one fault is in force at a time; a fault due while another is still in
//! force is skipped (and counted). When the run stops, every fault in force is undone so the
//! read-back sees the whole cluster.

use crate::backend::{ClusterAccess, find_leader};
use crate::cli::FaultSchedule;
use crate::cluster::SpawnedCluster;
use crate::limits::{
    FAULT_LEADER_ATTEMPTS, FAULT_POLL_INTERVAL, REPAIR_WAIT, STATUS_POLL_INTERVAL,
};
use crate::nemesis::{self, NemesisKind, Planned};
use crate::stats::lock;
use crate::wal_damage::{self, Damage};
use crate::workload::RunShared;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened to a node or to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9` of the leader.
    Kill,
    /// Started again with the same data directory.
    Restart,
    /// `SIGSTOP` of the leader.
    Pause,
    /// `SIGCONT`.
    Resume,
    /// Packets between nodes dropped (the detail lists the groups or cuts).
    Partition,
    /// Packet loss or delay on every node (`tc netem`).
    Netem,
    /// The network made whole again.
    Heal,
    /// A follower stopped and its log damaged (the detail says where).
    Damage,
}

impl FaultKind {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Resume => "resume",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
            FaultKind::Heal => "heal",
            FaultKind::Damage => "damage",
        }
    }

    /// True for the events that put a fault in force (the others undo one).
    pub fn starts_fault(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Pause
                | FaultKind::Partition
                | FaultKind::Netem
                | FaultKind::Damage
        )
    }
}

/// One fault event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// Nanoseconds since the start of the run.
    pub at_ns: u64,
    /// What was done.
    pub kind: FaultKind,
    /// To which node (for network faults: the leader when it started).
    pub node: usize,
    /// The node's term when it was killed or paused (it was the leader of that term).
    pub term: Option<u64>,
    /// What exactly (partition groups, damaged bytes, ...); empty for kill, pause and undo.
    pub detail: String,
}

/// The outcome of the fault thread.
#[derive(Debug, Clone, Default)]
pub struct FaultLog {
    /// Every event, in time order.
    pub events: Vec<FaultEvent>,
    /// Faults that were due but skipped (no leader found, or another fault still in force).
    pub skipped: u64,
    /// Problems worth telling the user (a restart that failed, ...).
    pub problems: Vec<String>,
    /// Nemeses that could not run here and why (each said once, also on stderr).
    pub notes: Vec<String>,
}

/// How a fault in force is undone.
enum Undo {
    Restart(usize),
    Resume(usize),
    /// Heal the network; the node the fault's start event named.
    Heal(usize),
    /// Restart a follower whose log was damaged; with a damaged inner record it must start
    /// and repair the range from the leader.
    Repair {
        node: usize,
        damage: Damage,
        inner_record: bool,
    },
}

struct Pending {
    due: Duration,
    undo: Undo,
}

struct FaultThread {
    cluster: Arc<Mutex<SpawnedCluster>>,
    access: Arc<dyn ClusterAccess>,
    shared: Arc<RunShared>,
    log: FaultLog,
    in_force: Option<Pending>,
}

/// What the fault thread does: the periodic leader faults and the seeded nemesis plan.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Leader kills.
    pub kill: Option<FaultSchedule>,
    /// Leader pauses.
    pub pause: Option<FaultSchedule>,
    /// Seeded nemeses, in time order.
    pub nemeses: Vec<Planned>,
    /// Every kind the nemeses were drawn from: each that cannot run here is announced at
    /// the start, drawn or not.
    pub kinds: Vec<NemesisKind>,
}

/// Runs the schedule until the run stops (or `until`, after which no new fault starts), then
/// undoes whatever is in force.
pub fn run(
    cluster: Arc<Mutex<SpawnedCluster>>,
    access: Arc<dyn ClusterAccess>,
    shared: Arc<RunShared>,
    plan: FaultPlan,
    until: Duration,
) -> FaultLog {
    let mut thread = FaultThread {
        cluster,
        access,
        shared,
        log: FaultLog::default(),
        in_force: None,
    };
    let (kill, pause) = (plan.kill, plan.pause);
    let mut next_kill = kill.map(|k| k.every);
    let mut next_pause = pause.map(|p| p.every);
    for kind in plan.kinds {
        if let Some(reason) = thread.unavailable(kind) {
            thread.note(reason);
        }
    }
    let mut nemeses = plan.nemeses.into_iter().peekable();
    while !thread.shared.stopping() {
        let now = thread.shared.start.elapsed();
        if thread.in_force.as_ref().is_some_and(|p| p.due <= now) {
            thread.undo();
        }
        if let (Some(due), Some(schedule)) = (next_kill, kill)
            && due <= now
            && now < until
        {
            thread.inject(NemesisKind::Kill, schedule.undo_after, 0);
            next_kill = Some(due + schedule.every);
        }
        if let (Some(due), Some(schedule)) = (next_pause, pause)
            && due <= now
            && now < until
        {
            thread.inject(NemesisKind::Pause, schedule.undo_after, 0);
            next_pause = Some(due + schedule.every);
        }
        if let Some(planned) = nemeses.next_if(|p| p.at <= now)
            && now < until
        {
            thread.inject(planned.kind, planned.hold, planned.draw);
        }
        std::thread::sleep(FAULT_POLL_INTERVAL);
    }
    if thread.in_force.is_some() {
        thread.undo();
    }
    thread.log
}

impl FaultThread {
    fn record(
        &mut self,
        at_ns: u64,
        kind: FaultKind,
        node: usize,
        term: Option<u64>,
        detail: String,
    ) {
        self.log.events.push(FaultEvent {
            at_ns,
            kind,
            node,
            term,
            detail,
        });
    }

    fn note(&mut self, note: String) {
        if !self.log.notes.contains(&note) {
            eprintln!("rcraft-loadtest: {note}");
            self.log.notes.push(note);
        }
    }

    /// The current leader among serving nodes, polling while an election runs.
    fn leader(&self) -> Option<(usize, u64)> {
        for _ in 0..FAULT_LEADER_ATTEMPTS {
            let (addrs, serving): (Vec<_>, Vec<usize>) = {
                let cluster = lock(&self.cluster);
                let addrs = cluster.addrs();
                let serving = (0..addrs.len())
                    .filter(|&i| cluster.is_serving(i))
                    .collect();
                (addrs, serving)
            };
            let candidates: Vec<_> = serving.iter().map(|&i| addrs[i]).collect();
            if let Some((pos, status)) = find_leader(self.access.as_ref(), &candidates) {
                return Some((serving[pos], status.term.0));
            }
            if self.shared.stopping() {
                return None;
            }
            std::thread::sleep(STATUS_POLL_INTERVAL);
        }
        None
    }

    /// Why `kind` cannot run against this cluster, if it cannot.
    fn unavailable(&self, kind: NemesisKind) -> Option<String> {
        if !kind.needs_network() {
            return None;
        }
        let mut cluster = lock(&self.cluster);
        match cluster.net_mut() {
            None => Some(format!(
                "{} skipped: {}",
                kind.name(),
                crate::netns::unavailable_reason()
                    .unwrap_or_else(|| "the nodes are not in network namespaces".into())
            )),
            Some(net) if kind.needs_netem() && !net.has_netem() => Some(format!(
                "{} skipped: the kernel has no tc netem (sch_netem)",
                kind.name()
            )),
            Some(_) => None,
        }
    }

    fn inject(&mut self, kind: NemesisKind, hold: Duration, draw: u64) {
        if let Some(reason) = self.unavailable(kind) {
            self.note(reason);
            self.log.skipped += 1;
            return;
        }
        if self.in_force.is_some() {
            self.log.skipped += 1;
            return;
        }
        let Some((leader, term)) = self.leader() else {
            self.log.skipped += 1;
            return;
        };
        // Faults are timed from the moment they are applied, not from when the call returned
        // (a kill also reaps the process).
        let at_ns = self.shared.elapsed_ns();
        let applied = match kind {
            NemesisKind::Kill | NemesisKind::Pause => self.leader_fault(kind, leader),
            NemesisKind::WalTail | NemesisKind::WalRecord => self.damage(kind, leader, draw),
            NemesisKind::Loss | NemesisKind::Delay => self.netem(kind),
            _ => self.partition(kind, leader, draw),
        };
        match applied {
            Ok((event, node, detail, undo)) => {
                let term = matches!(event, FaultKind::Kill | FaultKind::Pause).then_some(term);
                self.record(at_ns, event, node, term, detail);
                self.in_force = Some(Pending {
                    due: self.shared.start.elapsed() + hold,
                    undo,
                });
            }
            Err(NotApplied::Skipped(reason)) => {
                self.log.skipped += 1;
                self.note(format!("{} skipped once: {reason}", kind.name()));
            }
            Err(NotApplied::Failed(message)) => {
                self.log.skipped += 1;
                self.log
                    .problems
                    .push(format!("{}: {message}", kind.name()));
            }
        }
    }

    fn leader_fault(&mut self, kind: NemesisKind, node: usize) -> Applied {
        let mut cluster = lock(&self.cluster);
        if kind == NemesisKind::Kill {
            cluster
                .kill(node)
                .map_err(|e| format!("kill of node {node} failed: {e}"))?;
            Ok((FaultKind::Kill, node, String::new(), Undo::Restart(node)))
        } else {
            cluster.pause(node);
            Ok((FaultKind::Pause, node, String::new(), Undo::Resume(node)))
        }
    }

    fn partition(&mut self, kind: NemesisKind, leader: usize, draw: u64) -> Applied {
        let mut cluster = lock(&self.cluster);
        let n = cluster.len();
        let shape = nemesis::partition(kind, n, leader, draw)
            .ok_or_else(|| format!("no such partition of {n} nodes"))?;
        let net = cluster.net_mut().ok_or("no network namespaces")?;
        for &(from, to) in &shape.cuts {
            if let Err(e) = net.cut(from, to) {
                let _ = net.heal();
                return Err(e.to_string().into());
            }
        }
        Ok((FaultKind::Partition, leader, shape.text, Undo::Heal(leader)))
    }

    fn netem(&mut self, kind: NemesisKind) -> Applied {
        let mut cluster = lock(&self.cluster);
        let net = cluster.net_mut().ok_or("no network namespaces")?;
        if let Err(e) = net.netem(kind.netem_args()) {
            let _ = net.heal();
            return Err(e.to_string().into());
        }
        let detail = format!("{} on every node", kind.netem_args().join(" "));
        Ok((FaultKind::Netem, 0, detail, Undo::Heal(0)))
    }

    fn damage(&mut self, kind: NemesisKind, leader: usize, draw: u64) -> Applied {
        let mut cluster = lock(&self.cluster);
        let node = nemesis::follower(cluster.len(), leader, draw).ok_or("no follower")?;
        cluster
            .kill(node)
            .map_err(|e| format!("stopping node {node} failed: {e}"))?;
        let target = if kind == NemesisKind::WalTail {
            wal_damage::Target::Tail
        } else {
            wal_damage::Target::Record
        };
        let wal = cluster.data_dir(node).join("wal");
        match wal_damage::damage(&wal, target, draw.rotate_left(17)) {
            Ok(damage) => {
                let detail = format!("node {node}: {}", damage.text);
                let undo = Undo::Repair {
                    node,
                    damage,
                    inner_record: target == wal_damage::Target::Record,
                };
                Ok((FaultKind::Damage, node, detail, undo))
            }
            Err(e) => match cluster.restart(node) {
                // The log had too few records to damage (or none): nothing was done.
                Ok(()) => Err(NotApplied::Skipped(format!("node {node}'s log: {e}"))),
                Err(restart) => Err(NotApplied::Failed(format!(
                    "damaging node {node}'s log: {e}; restart: {restart}"
                ))),
            },
        }
    }

    fn undo(&mut self) {
        let Some(pending) = self.in_force.take() else {
            return;
        };
        let at_ns = self.shared.elapsed_ns();
        let (kind, node, result) = match pending.undo {
            Undo::Restart(node) => (FaultKind::Restart, node, lock(&self.cluster).restart(node)),
            Undo::Resume(node) => {
                lock(&self.cluster).resume(node);
                (FaultKind::Resume, node, Ok(()))
            }
            Undo::Heal(node) => {
                let mut cluster = lock(&self.cluster);
                let healed = cluster.net_mut().map_or(Ok(()), |net| net.heal());
                (FaultKind::Heal, node, healed)
            }
            Undo::Repair {
                node,
                damage,
                inner_record,
            } => {
                let detail = self.repair(node, &damage, inner_record);
                self.record(at_ns, FaultKind::Restart, node, None, detail);
                return;
            }
        };
        match result {
            Ok(()) => self.record(at_ns, kind, node, None, String::new()),
            Err(e) => self
                .log
                .problems
                .push(format!("{} of node {node} failed: {e}", kind.name())),
        }
    }

    /// Restarts a follower after its log was damaged; returns what happened. A torn tail is
    /// cut at start. A damaged inner record is synced data lost: the node must start anyway,
    /// name the lost range and fetch it from the leader (protocol-aware recovery), which its
    /// log says with a `repaired:` line.
    fn repair(&mut self, node: usize, _damage: &Damage, inner_record: bool) -> String {
        if let Err(e) = lock(&self.cluster).restart(node) {
            self.log
                .problems
                .push(format!("restart of node {node} failed: {e}"));
            return String::new();
        }
        if !inner_record {
            return String::new();
        }
        let log_path = lock(&self.cluster).log_path(node).to_path_buf();
        let deadline = Instant::now() + REPAIR_WAIT;
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains("repaired:")) {
                let line = line.trim();
                let said = line.find("repaired:").map_or(line, |at| &line[at..]);
                return format!("started and repaired the damaged range ({said})");
            }
            if Instant::now() >= deadline {
                return format!(
                    "started; no repair logged within {} s (the run's checks decide)",
                    REPAIR_WAIT.as_secs()
                );
            }
            std::thread::sleep(STATUS_POLL_INTERVAL);
        }
    }
}

/// Why a due fault was not applied.
enum NotApplied {
    /// It could not apply to the cluster as it was (e.g. a log too short to damage).
    Skipped(String),
    /// Applying it failed: a problem for the report.
    Failed(String),
}

impl From<&str> for NotApplied {
    fn from(message: &str) -> NotApplied {
        NotApplied::Failed(message.into())
    }
}

impl From<String> for NotApplied {
    fn from(message: String) -> NotApplied {
        NotApplied::Failed(message)
    }
}

/// A fault applied: the event, the node it names, its detail, and how to undo it.
type Applied = std::result::Result<(FaultKind, usize, String, Undo), NotApplied>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::MemoryCluster;
    use crate::cluster::{SpawnOptions, test_support::sleeper_script};
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn kills_are_undone_one_at_a_time_and_at_the_end() {
        // Stand-in nodes are `sleep` processes; the fake access says every node leads in the
        // same term, so the kill hits one of the serving nodes.
        let Some(script) = sleeper_script("faults") else {
            return;
        };
        let cluster = SpawnedCluster::start(SpawnOptions {
            nodes: 2,
            rcraft_bin: script.clone(),
            election_timeout_ms: "150-300".into(),
            heartbeat_ms: 50,
            keep_data: false,
            network_namespaces: false,
            node_args: Vec::new(),
        })
        .unwrap();
        let cluster = Arc::new(Mutex::new(cluster));
        let shared = Arc::new(RunShared::new());
        let schedule = FaultSchedule {
            every: Duration::from_millis(30),
            undo_after: Duration::from_millis(20),
        };
        let thread = {
            let (cluster, shared) = (cluster.clone(), shared.clone());
            let access: Arc<dyn ClusterAccess> = Arc::new(MemoryCluster::default());
            std::thread::spawn(move || {
                let plan = FaultPlan {
                    kill: Some(schedule),
                    ..FaultPlan::default()
                };
                run(cluster, access, shared, plan, Duration::from_secs(60))
            })
        };
        // Stop once a kill has happened (bounded wait, no timing assert).
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && (0..2).all(|i| lock(&cluster).is_serving(i)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        shared.stop.store(true, Ordering::Relaxed);
        let log = thread.join().unwrap();

        assert!(log.problems.is_empty(), "{:?}", log.problems);
        assert!(!log.events.is_empty());
        for pair in log.events.chunks(2) {
            assert_eq!(
                pair.len(),
                2,
                "every kill is followed by its restart: {:?}",
                log.events
            );
            assert_eq!(
                (pair[0].kind, pair[1].kind),
                (FaultKind::Kill, FaultKind::Restart)
            );
            assert_eq!(pair[0].node, pair[1].node);
            assert_eq!(
                pair[0].term,
                Some(1),
                "the killed leader's term is recorded"
            );
            assert!(pair[0].at_ns <= pair[1].at_ns);
        }
        let cluster = lock(&cluster);
        assert!(
            cluster.is_serving(0) && cluster.is_serving(1),
            "the run ends with every node up"
        );
        drop(cluster);
        std::fs::remove_file(script).unwrap();
    }

    #[test]
    fn network_nemeses_without_namespaces_are_skipped_with_a_note() {
        let Some(script) = sleeper_script("faults-net") else {
            return;
        };
        let cluster = SpawnedCluster::start(SpawnOptions {
            nodes: 3,
            rcraft_bin: script.clone(),
            election_timeout_ms: "150-300".into(),
            heartbeat_ms: 50,
            keep_data: false,
            network_namespaces: false,
            node_args: Vec::new(),
        })
        .unwrap();
        let cluster = Arc::new(Mutex::new(cluster));
        let shared = Arc::new(RunShared::new());
        let plan = FaultPlan {
            nemeses: vec![Planned {
                at: Duration::from_millis(10),
                kind: NemesisKind::Halves,
                hold: Duration::from_millis(10),
                draw: 1,
            }],
            kinds: vec![NemesisKind::Halves, NemesisKind::Kill],
            ..FaultPlan::default()
        };
        let thread = {
            let (cluster, shared) = (cluster.clone(), shared.clone());
            let access: Arc<dyn ClusterAccess> = Arc::new(MemoryCluster::default());
            std::thread::spawn(move || run(cluster, access, shared, plan, Duration::from_secs(60)))
        };
        std::thread::sleep(Duration::from_millis(100));
        shared.stop.store(true, Ordering::Relaxed);
        let log = thread.join().unwrap();
        assert_eq!(log.notes.len(), 1, "said once: {:?}", log.notes);
        assert!(
            log.notes[0].starts_with("halves skipped"),
            "{:?}",
            log.notes
        );
        assert_eq!(log.skipped, 1);
        assert!(log.events.is_empty() && log.problems.is_empty());
        drop(cluster);
        std::fs::remove_file(script).unwrap();
    }
}
