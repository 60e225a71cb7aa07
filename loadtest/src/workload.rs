//! Client threads: each owns one session and issues gets, puts, deletes and compare-and-swaps
//! (the run's [`Mix`]) over the key space until the run's stop flag is set, recording latency
//! into the shared [`Recorder`] and every operation into its own [`ClientLog`] (returned when
//! the thread ends): the history the linearizability checker reads, and the writes the
//! read-back checks.
//!
//! Closed loop by default (next request on reply). With a rate, each thread follows a fixed
//! schedule and latency counts from the scheduled send time, so a stall is not hidden by the
//! requests it prevented (coordinated omission).

use crate::backend::{ClusterAccess, KvSession, OpError};
use crate::history::{WriteId, key_name};
use crate::limits::{ERROR_BACKOFF, HISTORY_OPS_MAX, STATUS_POLL_INTERVAL};
use crate::mix::{Mix, OpChoice};
use crate::oplog::{ClientLog, OpRecord, Outcome, Request, Value};
use crate::pipeline::{self, PipelineSpec};
use crate::stats::{OpOutcome, Recorder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// State shared by every thread of one run.
pub struct RunShared {
    /// Set when clients should finish their current operation and return.
    pub stop: AtomicBool,
    /// Time zero of the run; every timestamp is relative to it.
    pub start: Instant,
    /// Latency and counters.
    pub recorder: Recorder,
    /// Operations admitted to the history so far (may pass [`HISTORY_OPS_MAX`] by the
    /// operations in flight when it was reached).
    history_ops: AtomicU64,
    /// When the history reached [`HISTORY_OPS_MAX`] (ns since the start); `u64::MAX` before.
    /// Invariant: every operation called at or before it is in the history.
    history_cut_ns: AtomicU64,
}

impl RunShared {
    /// A run starting now.
    pub fn new() -> RunShared {
        RunShared {
            stop: AtomicBool::new(false),
            start: Instant::now(),
            recorder: Recorder::new(),
            history_ops: AtomicU64::new(0),
            history_cut_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether an operation called at `call_ns` joins the history: every one until
    /// [`HISTORY_OPS_MAX`] are recorded, then only those called before the cut (the time
    /// the limit was reached), so the history stays a prefix of the run.
    pub fn admit_to_history(&self, call_ns: u64) -> bool {
        if call_ns > self.history_cut_ns.load(Ordering::Relaxed) {
            return false;
        }
        if self.history_ops.fetch_add(1, Ordering::Relaxed) < HISTORY_OPS_MAX {
            return true;
        }
        // Any operation admitted earlier returned before now, so it was called before the
        // cut; the first to pass the limit sets it.
        let now = self.elapsed_ns();
        let _ = self.history_cut_ns.compare_exchange(
            u64::MAX,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        call_ns <= self.history_cut_ns.load(Ordering::Relaxed)
    }

    /// The time the history was cut at, if it reached [`HISTORY_OPS_MAX`].
    pub fn history_cut_ns(&self) -> Option<u64> {
        Some(self.history_cut_ns.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Nanoseconds since the start of the run.
    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// True once the run should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Default for RunShared {
    fn default() -> Self {
        RunShared::new()
    }
}

/// What every client thread does.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSpec {
    /// Number of client threads.
    pub clients: usize,
    /// Key space size.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Which requests to issue.
    pub mix: Mix,
    /// Open-loop rate per client thread, if any.
    pub rate_per_client: Option<f64>,
    /// Distinguishes this run's keys from earlier runs'.
    pub run_id: u64,
}

/// A small, fast, seeded generator (xorshift64*): the workload needs speed, not quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next request of client `client` on `key`, drawn from `mix`; a write takes the next of
/// the client's unique values (`counter`), a compare-and-swap expects what the client last
/// saw in the key.
pub fn draw_request(
    mix: &Mix,
    rng: &mut Rng,
    log: &ClientLog,
    key: u64,
    client: usize,
    counter: &mut u64,
) -> Request {
    let mut next_id = || {
        *counter += 1;
        WriteId {
            client: client as u32,
            counter: *counter - 1,
        }
    };
    match mix.draw(rng) {
        OpChoice::Get => Request::Get,
        OpChoice::Put => Request::Put(next_id()),
        OpChoice::Delete => Request::Delete,
        OpChoice::Cas => Request::Cas {
            expected: log.last_seen.expected(key),
            new: next_id(),
        },
    }
}

/// Starts one thread per client; each returns its log (as a one-element list, like an
/// engine thread's) when the stop flag is set. With `pipeline`, the threads use pipelined
/// connections instead of the blocking client.
pub fn spawn_clients(
    spec: WorkloadSpec,
    pipeline: Option<PipelineSpec>,
    access: Arc<dyn ClusterAccess>,
    shared: Arc<RunShared>,
) -> Vec<JoinHandle<Vec<ClientLog>>> {
    (0..spec.clients)
        .map(|client| {
            let access = access.clone();
            let shared = shared.clone();
            let pipeline = pipeline.clone();
            std::thread::Builder::new()
                .name(format!("client-{client}"))
                .spawn(move || {
                    vec![match &pipeline {
                        Some(pipe) => {
                            pipeline::client_loop(client, spec, pipe, access.as_ref(), &shared)
                        }
                        None => client_loop(client, spec, access.as_ref(), &shared),
                    }]
                })
                .expect("spawning a client thread")
        })
        .collect()
}

fn connect(access: &dyn ClusterAccess, shared: &RunShared) -> Option<Box<dyn KvSession>> {
    while !shared.stopping() {
        match access.session() {
            Ok(session) => return Some(session),
            Err(_) => std::thread::sleep(STATUS_POLL_INTERVAL),
        }
    }
    None
}

fn client_loop(
    client: usize,
    spec: WorkloadSpec,
    access: &dyn ClusterAccess,
    shared: &RunShared,
) -> ClientLog {
    let mut log = ClientLog::new(spec.mix.cas > 0.0);
    let Some(mut session) = connect(access, shared) else {
        return log;
    };
    let mut rng = Rng::new(spec.run_id ^ (client as u64 + 1));
    let interval = spec
        .rate_per_client
        .map(|rate| Duration::from_secs_f64(1.0 / rate));
    // Spread the open-loop threads over one interval so they do not fire together.
    let mut due = shared.start + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.next_f64()));
    let mut counter = 0u64;
    while !shared.stopping() {
        let intended = match interval {
            Some(interval) => {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let intended = due;
                due += interval;
                intended
            }
            None => Instant::now(),
        };
        let key = rng.next_u64() % spec.keys;
        let request = draw_request(&spec.mix, &mut rng, &log, key, client, &mut counter);
        let call_ns = shared.elapsed_ns();
        let (outcome, term) = issue(session.as_mut(), &spec, key, request);
        let record = OpRecord {
            client: client as u32,
            key,
            request,
            outcome,
            call_ns,
            return_ns: shared.elapsed_ns(),
        };
        let outcome = log.record(record, term, shared.admit_to_history(call_ns));
        finish(shared, client, outcome, intended);
    }
    log
}

/// Sends one request through the blocking session: its outcome and, for an acknowledged
/// write, the entry's term.
fn issue(
    session: &mut dyn KvSession,
    spec: &WorkloadSpec,
    key: u64,
    request: Request,
) -> (Outcome, Option<u64>) {
    let key = key_name(spec.run_id, key);
    let failed = |error: OpError| match error {
        OpError::Definite(_) => (Outcome::Failed, None),
        OpError::Unknown(_) => (Outcome::Unknown, None),
    };
    match request {
        Request::Get => match session.get(&key) {
            Ok(value) => (Outcome::Read(Value::from_bytes(value.as_deref())), None),
            Err(e) => failed(e),
        },
        Request::Put(id) => match session.put(&key, &id.value(spec.value_size)) {
            Ok(ack) => (Outcome::Done, ack.term),
            Err(e) => failed(e),
        },
        Request::Delete => match session.delete(&key) {
            Ok(ack) => (Outcome::Done, ack.term),
            Err(e) => failed(e),
        },
        Request::Cas { expected, new } => {
            let expected = expected.to_bytes(spec.value_size);
            match session.cas(&key, expected.as_deref(), &new.value(spec.value_size)) {
                Ok(reply) if reply.swapped => (Outcome::Swapped, reply.term),
                Ok(reply) => {
                    let found = Value::from_bytes(reply.current.as_deref());
                    (Outcome::NotSwapped(found), reply.term)
                }
                Err(e) => failed(e),
            }
        }
    }
}

fn finish(shared: &RunShared, client: usize, outcome: OpOutcome, intended: Instant) {
    shared.recorder.record(client, outcome, intended.elapsed());
    if outcome == OpOutcome::DefiniteError {
        // The cluster said no (e.g. no leader yet): do not spin on it.
        std::thread::sleep(ERROR_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::MemoryCluster;
    use crate::history::{History, Verification, check_key};

    fn run_fake(
        unknown_every: u64,
        read_ratio: f64,
        rate: Option<f64>,
    ) -> (History, Verification, u64) {
        let cluster = Arc::new(MemoryCluster {
            unknown_every,
            ..MemoryCluster::default()
        });
        let shared = Arc::new(RunShared::new());
        let spec = WorkloadSpec {
            clients: 4,
            keys: 50,
            value_size: 32,
            mix: Mix::reads_and_puts(read_ratio),
            rate_per_client: rate,
            run_id: 7,
        };
        let handles = spawn_clients(spec, None, cluster.clone(), shared.clone());
        std::thread::sleep(Duration::from_millis(100));
        shared.stop.store(true, Ordering::Relaxed);
        let logs: Vec<ClientLog> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let history = History::from_clients(logs.into_iter().map(|l| l.writes).collect());
        let map = cluster.map.lock().unwrap();
        let mut v = Verification::default();
        for key in history.keys() {
            let observed = map.get(&key_name(7, key)).map(Vec::as_slice);
            v.count(check_key(history.writes_of(key), observed));
        }
        let (_, counts) = shared.recorder.totals();
        (history, v, counts.reads)
    }

    #[test]
    fn a_linearizable_store_loses_nothing() {
        let (history, v, _) = run_fake(0, 0.0, None);
        assert!(history.acked_writes() > 0);
        assert_eq!(history.unknown_writes(), 0);
        assert!(v.passed(), "{v:?}");
    }

    #[test]
    fn unknown_outcomes_are_recorded_and_tolerated() {
        let (history, v, reads) = run_fake(3, 0.5, None);
        assert!(history.unknown_writes() > 0);
        assert!(reads > 0);
        assert!(v.passed(), "{v:?}");
    }

    #[test]
    fn the_history_is_cut_once_it_is_full() {
        let shared = RunShared::new();
        assert_eq!(shared.history_cut_ns(), None);
        for _ in 0..HISTORY_OPS_MAX {
            assert!(shared.admit_to_history(0));
        }
        std::thread::sleep(Duration::from_millis(2));
        // The limit is reached: an operation called before now is still admitted, and sets
        // the cut; one called after the cut is not.
        assert!(shared.admit_to_history(1));
        let cut = shared.history_cut_ns().unwrap();
        assert!(cut >= 2_000_000);
        assert!(shared.admit_to_history(cut));
        assert!(!shared.admit_to_history(cut + 1));
    }

    #[test]
    fn rng_is_deterministic_per_seed_and_in_range() {
        let (mut a, mut b) = (Rng::new(0), Rng::new(0));
        for _ in 0..100 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
