//! The fault thread: on a fixed schedule it finds the leader, kills (`kill -9`) or pauses
//! (`SIGSTOP`) it, and undoes the fault later (restart with the same data directory, or
//! `SIGCONT`). It owns the schedule and the event list; it touches the cluster only under its
//! mutex and never while asking nodes for their status.
//!
//! Invariant: at most one fault is in force at a time; a fault due while another is still in
//! force is skipped (and counted). When the run stops, every fault in force is undone so the
//! read-back sees the whole cluster.

use crate::backend::{ClusterAccess, find_leader};
use crate::cli::FaultSchedule;
use crate::cluster::SpawnedCluster;
use crate::limits::{FAULT_LEADER_ATTEMPTS, FAULT_POLL_INTERVAL, STATUS_POLL_INTERVAL};
use crate::stats::lock;
use crate::workload::RunShared;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happened to a node.
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
}

impl FaultKind {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Resume => "resume",
        }
    }
}

/// One fault event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// Nanoseconds since the start of the run.
    pub at_ns: u64,
    /// What was done.
    pub kind: FaultKind,
    /// To which node.
    pub node: usize,
    /// The node's term when it was killed or paused (it was the leader of that term).
    pub term: Option<u64>,
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
}

struct Pending {
    due: Duration,
    kind: FaultKind,
    node: usize,
}

struct FaultThread {
    cluster: Arc<Mutex<SpawnedCluster>>,
    access: Arc<dyn ClusterAccess>,
    shared: Arc<RunShared>,
    log: FaultLog,
    in_force: Option<Pending>,
}

/// Runs the schedule until the run stops (or `until`, after which no new fault starts), then
/// undoes whatever is in force.
pub fn run(
    cluster: Arc<Mutex<SpawnedCluster>>,
    access: Arc<dyn ClusterAccess>,
    shared: Arc<RunShared>,
    kill: Option<FaultSchedule>,
    pause: Option<FaultSchedule>,
    until: Duration,
) -> FaultLog {
    let mut thread = FaultThread {
        cluster,
        access,
        shared,
        log: FaultLog::default(),
        in_force: None,
    };
    let mut next_kill = kill.map(|k| k.every);
    let mut next_pause = pause.map(|p| p.every);
    while !thread.shared.stopping() {
        let now = thread.shared.start.elapsed();
        if thread.in_force.as_ref().is_some_and(|p| p.due <= now) {
            thread.undo();
        }
        if let (Some(due), Some(schedule)) = (next_kill, kill)
            && due <= now
            && now < until
        {
            thread.inject(FaultKind::Kill, schedule.undo_after);
            next_kill = Some(due + schedule.every);
        }
        if let (Some(due), Some(schedule)) = (next_pause, pause)
            && due <= now
            && now < until
        {
            thread.inject(FaultKind::Pause, schedule.undo_after);
            next_pause = Some(due + schedule.every);
        }
        std::thread::sleep(FAULT_POLL_INTERVAL);
    }
    if thread.in_force.is_some() {
        thread.undo();
    }
    thread.log
}

impl FaultThread {
    fn record(&mut self, at_ns: u64, kind: FaultKind, node: usize, term: Option<u64>) {
        self.log.events.push(FaultEvent {
            at_ns,
            kind,
            node,
            term,
        });
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

    fn inject(&mut self, kind: FaultKind, undo_after: Duration) {
        if self.in_force.is_some() {
            self.log.skipped += 1;
            return;
        }
        let Some((node, term)) = self.leader() else {
            self.log.skipped += 1;
            return;
        };
        // Failover is measured from the moment the signal is sent, not from when the kill
        // returned (it also reaps the process).
        let at_ns = self.shared.elapsed_ns();
        let result = {
            let mut cluster = lock(&self.cluster);
            match kind {
                FaultKind::Kill => cluster.kill(node),
                _ => {
                    cluster.pause(node);
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            self.log
                .problems
                .push(format!("{} of node {node} failed: {e}", kind.name()));
            return;
        }
        self.record(at_ns, kind, node, Some(term));
        let undo = if kind == FaultKind::Kill {
            FaultKind::Restart
        } else {
            FaultKind::Resume
        };
        self.in_force = Some(Pending {
            due: self.shared.start.elapsed() + undo_after,
            kind: undo,
            node,
        });
    }

    fn undo(&mut self) {
        let Some(pending) = self.in_force.take() else {
            return;
        };
        let at_ns = self.shared.elapsed_ns();
        let result = {
            let mut cluster = lock(&self.cluster);
            match pending.kind {
                FaultKind::Restart => cluster.restart(pending.node),
                _ => {
                    cluster.resume(pending.node);
                    Ok(())
                }
            }
        };
        match result {
            Ok(()) => self.record(at_ns, pending.kind, pending.node, None),
            Err(e) => self.log.problems.push(format!(
                "{} of node {} failed: {e}",
                pending.kind.name(),
                pending.node
            )),
        }
    }
}

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
            lease_reads: false,
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
                run(
                    cluster,
                    access,
                    shared,
                    Some(schedule),
                    None,
                    Duration::from_secs(60),
                )
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
}
