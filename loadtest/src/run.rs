//! One load test from start to report: set up the target, wait for a leader, start the client
//! threads, the progress ticker and the fault thread, stop them after the duration (or on
//! Ctrl-C/SIGTERM), read every written key back, check the history for linearizability,
//! stop spawned nodes, and build the summary.
//!
//! Runs on the main thread, which owns the spawned cluster's `Arc` and joins every thread it
//! started before returning, on every path.

use crate::backend::{ClusterAccess, client_options, find_leader};
use crate::chart;
use crate::cli::{Settings, Target};
use crate::cluster::{SpawnOptions, SpawnedCluster};
use crate::cpu;
use crate::engine::{EngineSpec, spawn_engine};
use crate::error::{Error, Result};
use crate::faults::{self, FaultKind, FaultLog};
use crate::history::{History, Verification, check_key, failover_ns, key_name};
use crate::limits::{
    LEADER_WAIT, STATUS_POLL_INTERVAL, VERIFY_ATTEMPTS, VERIFY_RETRY_PAUSE, VERIFY_THREADS_MAX,
};
use crate::linearizability::{self, Linearizability};
use crate::mix::Mix;
use crate::nemesis;
use crate::oplog::{ClientLog, OpRecord, Outcome, READ_BACK_CLIENT, Request, Value};
use crate::pipeline::PipelineSpec;
use crate::progress::Ticker;
use crate::report::Summary;
use crate::stats::{LatencySummary, lock};
use crate::workload::{RunShared, WorkloadSpec, spawn_clients};
use rcraft::client::{ATTEMPT_TIMEOUT_MAX, Client, ClientOptions};
use rcraft::wire::{Role, StageLatency};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds the cluster access for a list of addresses and a per-operation timeout.
pub type AccessFactory = dyn Fn(&[SocketAddr], Duration) -> Arc<dyn ClusterAccess>;

fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// The target once started: addresses, the spawned cluster if any, and a description.
type StartedTarget = (Vec<SocketAddr>, Option<Arc<Mutex<SpawnedCluster>>>, String);

fn start_target(settings: &Settings) -> Result<StartedTarget> {
    match &settings.target {
        Target::Servers(addrs) => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            Ok((addrs.clone(), None, format!("servers {}", list.join(","))))
        }
        Target::Spawn {
            nodes,
            rcraft_bin,
            election_timeout_ms,
            heartbeat_ms,
            keep_data,
            network_namespaces,
            node_args,
        } => {
            let cluster = SpawnedCluster::start(SpawnOptions {
                nodes: *nodes,
                rcraft_bin: rcraft_bin.clone(),
                election_timeout_ms: election_timeout_ms.clone(),
                heartbeat_ms: *heartbeat_ms,
                keep_data: *keep_data,
                network_namespaces: *network_namespaces,
                node_args: node_args.clone(),
            })?;
            eprintln!(
                "rcraft-loadtest: spawned {nodes} nodes, data and logs in {}",
                cluster.dir().display()
            );
            Ok((
                cluster.addrs(),
                Some(Arc::new(Mutex::new(cluster))),
                format!("{nodes} spawned nodes"),
            ))
        }
    }
}

/// Polls until some node reports itself leader.
fn wait_for_leader(
    access: &dyn ClusterAccess,
    addrs: &[SocketAddr],
    cluster: Option<&Arc<Mutex<SpawnedCluster>>>,
    interrupt: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + LEADER_WAIT;
    while Instant::now() < deadline && !interrupt.load(Ordering::Relaxed) {
        if find_leader(access, addrs).is_some() {
            return Ok(());
        }
        if let Some(cluster) = cluster {
            let died = lock(cluster).reap_unexpected_exits();
            if !died.is_empty() {
                return Err(Error::Cluster(died.join("; ")));
            }
        }
        std::thread::sleep(STATUS_POLL_INTERVAL);
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let logs = cluster.map_or(String::new(), |c| {
        format!(" (node logs in {})", lock(c).dir().display())
    });
    Err(Error::Cluster(format!(
        "no leader elected within {} s{logs}",
        LEADER_WAIT.as_secs()
    )))
}

/// Reads back every key `history` wrote, from several threads, and judges each.
/// `None` when interrupted.
pub fn verify(
    history: &History,
    access: &dyn ClusterAccess,
    run_id: u64,
    interrupt: &AtomicBool,
) -> Option<Verification> {
    read_back(history, access, run_id, interrupt, &RunShared::new()).map(|(v, _)| v)
}

/// [`verify`], also returning every read of the read-back as an operation of the history
/// (timed on `shared`'s clock), so the linearizability checker sees the final values too.
pub fn read_back(
    history: &History,
    access: &dyn ClusterAccess,
    run_id: u64,
    interrupt: &AtomicBool,
    shared: &RunShared,
) -> Option<(Verification, Vec<OpRecord>)> {
    let keys = history.keys();
    let threads = VERIFY_THREADS_MAX.min(keys.len()).max(1);
    let chunk = keys.len().div_ceil(threads).max(1);
    let partials: Vec<Option<(Verification, Vec<OpRecord>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .enumerate()
            .map(|(thread, keys)| {
                let reader = ReadBack {
                    history,
                    access,
                    run_id,
                    interrupt,
                    shared,
                    client: READ_BACK_CLIENT + thread as u32,
                };
                scope.spawn(move || reader.verify_keys(keys))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    let mut total = Verification::default();
    let mut ops = Vec::new();
    for partial in partials {
        let (verification, reads) = partial?;
        total.merge(&verification);
        ops.extend(reads);
    }
    Some((total, ops))
}

/// One read-back thread's context.
struct ReadBack<'a> {
    history: &'a History,
    access: &'a dyn ClusterAccess,
    run_id: u64,
    interrupt: &'a AtomicBool,
    shared: &'a RunShared,
    client: u32,
}

impl ReadBack<'_> {
    fn verify_keys(&self, keys: &[u64]) -> Option<(Verification, Vec<OpRecord>)> {
        let (history, access, run_id, interrupt) =
            (self.history, self.access, self.run_id, self.interrupt);
        let mut result = Verification::default();
        let mut reads = Vec::new();
        let mut session = None;
        for &key in keys {
            let mut observed = None;
            for _ in 0..VERIFY_ATTEMPTS {
                if interrupt.load(Ordering::Relaxed) {
                    return None;
                }
                if session.is_none() {
                    session = access.session().ok();
                }
                if let Some(s) = session.as_mut() {
                    let call_ns = self.shared.elapsed_ns();
                    match s.get(&key_name(run_id, key)) {
                        Ok(value) => {
                            reads.push(OpRecord {
                                client: self.client,
                                key,
                                request: Request::Get,
                                outcome: Outcome::Read(Value::from_bytes(value.as_deref())),
                                call_ns,
                                return_ns: self.shared.elapsed_ns(),
                            });
                            observed = Some(value);
                            break;
                        }
                        Err(_) => session = None,
                    }
                }
                std::thread::sleep(VERIFY_RETRY_PAUSE);
            }
            match observed {
                Some(value) => result.count(check_key(history.writes_of(key), value.as_deref())),
                None => result.unreadable_keys += 1,
            }
        }
        Some((result, reads))
    }
}

/// Failover time of every fault of `kind` (kill or pause of the leader) in `log`, in
/// milliseconds: from the fault to the first write acknowledged in a newer term.
fn failovers_ms(history: &History, log: &FaultLog, kind: FaultKind) -> Vec<Option<f64>> {
    let acks = history.acks();
    log.events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| failover_ns(&acks, e.at_ns, e.term).map(|ns| ns as f64 / 1e6))
        .collect()
}

/// Runs the load test described by `settings`. `interrupt` is set by SIGINT/SIGTERM.
pub fn run(
    settings: &Settings,
    make_access: &AccessFactory,
    interrupt: Arc<AtomicBool>,
) -> Result<Summary> {
    let (addrs, cluster, target) = start_target(settings)?;
    let access = make_access(&addrs, settings.timeout);
    wait_for_leader(access.as_ref(), &addrs, cluster.as_ref(), &interrupt)?;

    let run_id = run_id();
    let shared = Arc::new(RunShared::new());
    let spec = WorkloadSpec {
        clients: settings.clients,
        keys: settings.keys,
        value_size: settings.value_size,
        mix: mix_of(settings),
        rate_per_client: settings.rate.map(|r| r / settings.clients as f64),
        run_id,
    };
    let pipeline = (settings.pipeline > 1).then(|| PipelineSpec {
        depth: settings.pipeline,
        addrs: addrs.clone(),
        timeout: settings.timeout,
        // Any cluster's: the nodes were named on the command line (or spawned).
        cluster_id: rcraft::wire::CLUSTER_ID_UNKNOWN,
        read_mode: settings.read_mode,
        token: settings.token.clone(),
        tls: settings.tls.clone(),
    });
    let tool_cpu_before = cpu::own_cpu();
    let nodes_cpu_before = nodes_cpu(cluster.as_ref());
    let clients = match (settings.engine_threads, pipeline) {
        (Some(threads), None) => {
            let engine = EngineSpec {
                addrs: addrs.clone(),
                options: ClientOptions {
                    token: settings.token.clone(),
                    tls: settings.tls.clone(),
                    read_mode: settings.read_mode,
                    ..client_options(settings.timeout)
                },
                threads,
            };
            spawn_engine(spec, &engine, shared.clone())
        }
        (_, pipeline) => spawn_clients(spec, pipeline, access.clone(), shared.clone()),
    };
    let ticker_done = Arc::new(AtomicBool::new(false));
    let ticker = Ticker {
        shared: shared.clone(),
        access: access.clone(),
        addrs: addrs.clone(),
        cluster: cluster.clone(),
        tty: std::io::stderr().is_terminal(),
        done: ticker_done.clone(),
    };
    let ticker = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || ticker.run())
        .map_err(|e| Error::io("starting the progress thread", e))?;
    let plan = faults::FaultPlan {
        kill: settings.kill,
        pause: settings.pause,
        nemeses: (settings.nemesis.as_ref())
            .map(|n| nemesis::plan(n, settings.duration))
            .unwrap_or_default(),
        kinds: (settings.nemesis.as_ref())
            .map(|n| n.kinds.clone())
            .unwrap_or_default(),
    };
    let fault_thread = match (
        &cluster,
        plan.kill.is_some() || plan.pause.is_some() || !plan.kinds.is_empty(),
    ) {
        (Some(cluster), true) => {
            let (cluster, access, shared) = (cluster.clone(), access.clone(), shared.clone());
            let until = settings.duration;
            Some(
                std::thread::Builder::new()
                    .name("faults".into())
                    .spawn(move || faults::run(cluster, access, shared, plan, until))
                    .map_err(|e| Error::io("starting the fault thread", e))?,
            )
        }
        _ => None,
    };

    while shared.start.elapsed() < settings.duration && !interrupt.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let logs: Vec<ClientLog> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let tool_cpu = cpu::own_cpu().saturating_sub(tool_cpu_before);
    let server_cpu = cpu_since(&nodes_cpu_before, &nodes_cpu(cluster.as_ref()));
    let (writes, ops): (Vec<_>, Vec<_>) = logs.into_iter().map(|l| (l.writes, l.ops)).unzip();
    let mut ops: Vec<OpRecord> = ops.into_iter().flatten().collect();
    let duration_s = shared.start.elapsed().as_secs_f64();
    ticker_done.store(true, Ordering::Relaxed);
    let progress = ticker.join().unwrap_or_default();
    let fault_log = fault_thread
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();

    let history = History::from_clients(writes);
    let mut problems = progress.node_problems;
    problems.extend(fault_log.problems.iter().cloned());
    let verification = if interrupt.load(Ordering::Relaxed) {
        None
    } else {
        eprintln!(
            "rcraft-loadtest: reading back {} keys",
            history.keys().len()
        );
        match wait_for_leader(access.as_ref(), &addrs, cluster.as_ref(), &interrupt) {
            Ok(()) => read_back(&history, access.as_ref(), run_id, &interrupt, &shared).map(
                |(verification, reads)| {
                    ops.extend(reads);
                    verification
                },
            ),
            Err(e) => {
                problems.push(format!("read-back impossible: {e}"));
                None
            }
        }
    };
    let timeline = match shared.history_cut_ns() {
        Some(_) => Vec::new(),
        None => chart::timeline(&ops, &fault_log.events, (duration_s * 1e9) as u64),
    };
    let linearizability =
        (!interrupt.load(Ordering::Relaxed)).then(|| check_history(ops, shared.history_cut_ns()));
    let leader_stages = leader_stages(&addrs, settings);
    let (rss_bytes_max, anon_rss_bytes_max) = match cluster {
        Some(cluster) => finish_cluster(cluster, &mut problems),
        None => (Vec::new(), Vec::new()),
    };
    let (histogram, counts) = shared.recorder.totals();
    Ok(Summary {
        target,
        clients: settings.clients,
        duration_s,
        value_size: settings.value_size,
        keys: settings.keys,
        read_ratio: mix_of(settings).get,
        read_mode: settings.read_mode,
        workload: settings.workload.map(|w| w.name()),
        rate: settings.rate,
        pipeline: settings.pipeline,
        engine_threads: settings.engine_threads,
        tool_cpu_s: tool_cpu.as_secs_f64(),
        server_cpu_s: server_cpu.map(|d| d.as_secs_f64()),
        writes: counts.writes,
        reads: counts.reads,
        errors: counts.errors,
        unknown: counts.unknown,
        latency: LatencySummary::of(&histogram),
        failover_ms: failovers_ms(&history, &fault_log, FaultKind::Kill),
        pause_failover_ms: failovers_ms(&history, &fault_log, FaultKind::Pause),
        events: fault_log.events,
        faults_skipped: fault_log.skipped,
        verification,
        linearizability,
        run_id,
        rss_bytes_max,
        anon_rss_bytes_max,
        per_second: progress.samples,
        timeline,
        nemesis: settings.nemesis.clone(),
        fault_notes: fault_log.notes,
        problems,
        interrupted: interrupt.load(Ordering::Relaxed),
        leader_stages,
    })
}

/// The leader's per-stage write latency since it started, asked of each address in turn;
/// `None` when no node answers as leader (or the servers do not answer latency requests).
fn leader_stages(addrs: &[SocketAddr], settings: &Settings) -> Option<(u64, Vec<StageLatency>)> {
    let timeout = settings.timeout;
    let options = ClientOptions {
        timeout,
        attempt_timeout: timeout.min(ATTEMPT_TIMEOUT_MAX),
        token: settings.token.clone(),
        tls: settings.tls.clone(),
        ..ClientOptions::default()
    };
    let mut client = Client::new(addrs, options).ok()?;
    addrs.iter().find_map(|&address| {
        let status = client.status_of(address).ok()?;
        if status.role != Role::Leader {
            return None;
        }
        let stages = client.latency_of(address).ok()?;
        Some((status.id.0, stages))
    })
}

/// CPU time used so far by each spawned node, with its process id; empty against
/// `--servers` (the tool does not know the nodes' processes).
fn nodes_cpu(cluster: Option<&Arc<Mutex<SpawnedCluster>>>) -> Vec<Option<(u32, Duration)>> {
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    let pids = lock(cluster).pids();
    pids.into_iter()
        .map(|pid| pid.and_then(|pid| Some((pid, cpu::process_cpu(pid)?))))
        .collect()
}

/// CPU the nodes used between two readings, summed over the nodes that ran (as the same
/// process) from the first to the second; `None` without spawned nodes or when none did.
fn cpu_since(
    before: &[Option<(u32, Duration)>],
    after: &[Option<(u32, Duration)>],
) -> Option<Duration> {
    let deltas: Vec<Duration> = before
        .iter()
        .zip(after)
        .filter_map(|pair| match pair {
            (Some((a, before)), Some((b, after))) if a == b => Some(after.saturating_sub(*before)),
            _ => None,
        })
        .collect();
    (!deltas.is_empty()).then(|| deltas.iter().sum())
}

/// The run's operation mix: the named workload, or gets and puts by the read ratio.
fn mix_of(settings: &Settings) -> Mix {
    settings
        .workload
        .map_or(Mix::reads_and_puts(settings.read_ratio), Mix::of)
}

/// Checks the history (cut at `cut_ns` if it reached its bound) for linearizability,
/// saying how long that took.
fn check_history(ops: Vec<OpRecord>, cut_ns: Option<u64>) -> Linearizability {
    eprintln!(
        "rcraft-loadtest: checking {} operations for linearizability",
        ops.len()
    );
    let started = Instant::now();
    let result = linearizability::check(ops, cut_ns);
    eprintln!(
        "rcraft-loadtest: checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    result
}

/// Stops the spawned nodes and returns their peak memory: (peak RSS, peak anonymous RSS).
fn finish_cluster(
    cluster: Arc<Mutex<SpawnedCluster>>,
    problems: &mut Vec<String>,
) -> (Vec<u64>, Vec<u64>) {
    let mut cluster = match Arc::try_unwrap(cluster) {
        Ok(mutex) => mutex
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
        Err(shared) => {
            // Another thread still holds a reference (cannot happen once all are joined);
            // stop the nodes through the lock and let the last owner drop the directory.
            let mut cluster = lock(&shared);
            cluster.stop();
            return (cluster.rss_max_bytes(), cluster.anon_rss_max_bytes());
        }
    };
    problems.extend(cluster.reap_unexpected_exits());
    cluster.stop();
    let memory = (cluster.rss_max_bytes(), cluster.anon_rss_max_bytes());
    if let Some(kept) = cluster.finish() {
        problems.push(format!("node data and logs kept in {}", kept.display()));
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::MemoryCluster;

    fn settings() -> Settings {
        Settings {
            target: Target::Servers(vec!["127.0.0.1:1".parse().unwrap()]),
            clients: 3,
            duration: Duration::from_millis(300),
            value_size: 16,
            keys: 20,
            read_ratio: 0.3,
            read_mode: rcraft::wire::ReadMode::Linearizable,
            token: None,
            tls: None,
            workload: None,
            rate: None,
            pipeline: 1,
            engine_threads: None,
            kill: None,
            pause: None,
            nemesis: None,
            timeout: Duration::from_secs(1),
            json: None,
            chart: None,
        }
    }

    #[test]
    fn a_run_against_a_correct_store_passes() {
        let make: &AccessFactory = &|_, _| {
            Arc::new(MemoryCluster {
                unknown_every: 5,
                ..MemoryCluster::default()
            })
        };
        let summary = run(&settings(), make, Arc::new(AtomicBool::new(false))).unwrap();
        assert!(summary.writes > 0 && summary.reads > 0 && summary.unknown > 0);
        let v = summary.verification.unwrap();
        assert!(v.keys_checked > 0 && v.keys_checked <= 20);
        assert!(summary.passed(), "{summary:?}");
        assert!(summary.rss_bytes_max.is_empty());
    }

    #[test]
    fn an_interrupted_run_is_not_verified() {
        let make: &AccessFactory = &|_, _| Arc::new(MemoryCluster::default());
        let interrupt = Arc::new(AtomicBool::new(false));
        let long = Settings {
            duration: Duration::from_secs(600),
            ..settings()
        };
        let flag = interrupt.clone();
        let interrupter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::Relaxed);
        });
        let summary = run(&long, make, interrupt).unwrap();
        interrupter.join().unwrap();
        assert!(summary.interrupted && summary.verification.is_none() && !summary.passed());
        assert!(summary.writes > 0);
    }

    #[test]
    fn an_interrupt_before_the_run_is_an_error() {
        let make: &AccessFactory = &|_, _| Arc::new(MemoryCluster::default());
        let err = run(&settings(), make, Arc::new(AtomicBool::new(true))).unwrap_err();
        assert!(matches!(err, Error::Interrupted));
    }
}
