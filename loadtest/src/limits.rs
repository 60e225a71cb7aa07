//! Every limit and interval of the loadtest, in one place.

use std::time::Duration;

/// Lowest latency the histograms track, in microseconds.
pub const LATENCY_US_MIN: u64 = 1;
/// Highest latency the histograms track, in microseconds; longer samples saturate here.
pub const LATENCY_US_MAX: u64 = 120_000_000;
/// Significant decimal digits kept by the histograms (0.1 % relative error).
pub const LATENCY_SIGFIG: u8 = 3;
/// Latency histograms are sharded so client threads rarely contend on one lock.
pub const STAT_SHARDS: usize = 16;

/// How often the progress line and the per-second series are produced.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A last, partial interval shorter than this (seconds) is left out of the time series.
pub const FINAL_SAMPLE_MIN_S: f64 = 0.5;
/// How long to wait for a spawned or given cluster to elect a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(15);
/// Pause between status polls while waiting for a leader.
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Budget of one status request to one node (a paused node never answers).
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(300);
/// Attempts to find the leader before a scheduled kill or pause is skipped.
pub const FAULT_LEADER_ATTEMPTS: u32 = 50;

/// Grace period between SIGTERM and SIGKILL when stopping spawned nodes.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long the fault thread watches a node restarted on a log with a damaged inner record
/// for the line saying it repaired the range (the run goes on meanwhile).
pub const REPAIR_WAIT: Duration = Duration::from_secs(10);
/// How often the fault thread checks its schedule and the stop flag.
pub const FAULT_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Threads used to read keys back after the run.
pub const VERIFY_THREADS_MAX: usize = 32;
/// Attempts per key during read-back before the key counts as unverifiable.
pub const VERIFY_ATTEMPTS: u32 = 10;
/// Pause after a failed read-back attempt.
pub const VERIFY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Budget for opening one connection (TCP connect plus handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a pipelined client blocks in one read before checking deadlines and the stop flag.
pub const PIPELINE_READ_POLL: Duration = Duration::from_millis(20);
/// Largest `--pipeline` depth accepted.
pub const PIPELINE_DEPTH_MAX: usize = 4096;

/// Longest an engine thread waits in one `poll` before checking the stop flag.
pub const ENGINE_POLL_MAX: Duration = Duration::from_millis(20);

/// Pause after a definite client error before the next operation (no busy loop when down).
pub const ERROR_BACKOFF: Duration = Duration::from_millis(2);

/// Search steps the linearizability checker may spend on one key before calling it
/// inconclusive (a step is one attempt to linearize or undo one operation; the memo cache
/// holds at most this many 20-byte configurations).
pub const CHECK_STEPS_PER_KEY: u64 = 2_000_000;
/// Operations recorded for the linearizability check (about 100 bytes each). Past it the
/// history is cut at the time the limit was reached and only that prefix is checked.
pub const HISTORY_OPS_MAX: u64 = 5_000_000;
/// Violations (keys with their failing windows) kept for the report.
pub const VIOLATIONS_KEPT: usize = 3;
/// Operations of a failing window printed in the text report.
pub const WINDOW_LINES_MAX: usize = 40;
