//! Latency and throughput accounting: sharded HdrHistograms that client threads record into,
//! and the per-second samples the progress thread cuts from them.
//!
//! Client threads lock one shard (`client_id % STAT_SHARDS`) per operation; the progress
//! thread locks each shard once per second to take the interval's histogram and counters.
//! Invariant: every recorded operation lands in exactly one interval and in the total.

use crate::limits::{LATENCY_SIGFIG, LATENCY_US_MAX, LATENCY_US_MIN, STAT_SHARDS};
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::Duration;

/// A new latency histogram with the loadtest's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl LatencySummary {
    /// Summarises a histogram; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// How one operation ended, as far as the statistics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// A write acknowledged by the cluster.
    WriteOk,
    /// A read answered by the cluster.
    ReadOk,
    /// Certainly not applied (rejected, no leader within the deadline before proposing...).
    DefiniteError,
    /// May or may not have been applied.
    Unknown,
}

/// Counters of one interval or of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Acknowledged writes.
    pub writes: u64,
    /// Answered reads.
    pub reads: u64,
    /// Definite failures.
    pub errors: u64,
    /// Unknown outcomes.
    pub unknown: u64,
}

impl Counts {
    /// Successful operations.
    pub fn ops(&self) -> u64 {
        self.writes + self.reads
    }

    fn add(&mut self, other: &Counts) {
        self.writes += other.writes;
        self.reads += other.reads;
        self.errors += other.errors;
        self.unknown += other.unknown;
    }

    fn count(&mut self, outcome: OpOutcome) {
        match outcome {
            OpOutcome::WriteOk => self.writes += 1,
            OpOutcome::ReadOk => self.reads += 1,
            OpOutcome::DefiniteError => self.errors += 1,
            OpOutcome::Unknown => self.unknown += 1,
        }
    }
}

struct Shard {
    interval: Histogram<u64>,
    total: Histogram<u64>,
    interval_counts: Counts,
    total_counts: Counts,
}

/// Shared recorder for all client threads.
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        let shards = (0..STAT_SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    interval: new_histogram(),
                    total: new_histogram(),
                    interval_counts: Counts::default(),
                    total_counts: Counts::default(),
                })
            })
            .collect();
        Recorder { shards }
    }

    /// Records one finished operation of `client`. Only successful operations contribute a
    /// latency sample: a timeout's latency is the deadline, not the cluster's speed.
    pub fn record(&self, client: usize, outcome: OpOutcome, latency: Duration) {
        let mut shard = lock(&self.shards[client % self.shards.len()]);
        if matches!(outcome, OpOutcome::WriteOk | OpOutcome::ReadOk) {
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(LATENCY_US_MIN);
            shard.interval.saturating_record(us);
            shard.total.saturating_record(us);
        }
        shard.interval_counts.count(outcome);
        shard.total_counts.count(outcome);
    }

    /// Takes (and resets) the histogram and counters recorded since the previous call.
    pub fn take_interval(&self) -> (Histogram<u64>, Counts) {
        let mut merged = new_histogram();
        let mut counts = Counts::default();
        for shard in &self.shards {
            let mut shard = lock(shard);
            merged
                .add(&shard.interval)
                .expect("histograms share bounds");
            shard.interval.reset();
            counts.add(&shard.interval_counts);
            shard.interval_counts = Counts::default();
        }
        (merged, counts)
    }

    /// The histogram and counters of the whole run so far.
    pub fn totals(&self) -> (Histogram<u64>, Counts) {
        let mut merged = new_histogram();
        let mut counts = Counts::default();
        for shard in &self.shards {
            let shard = lock(shard);
            merged.add(&shard.total).expect("histograms share bounds");
            counts.add(&shard.total_counts);
        }
        (merged, counts)
    }
}

/// Locks a mutex, tolerating poison: a panicked client thread must not hide the results.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One point of the per-second time series.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SecondSample {
    /// Seconds since the start of the run at the end of this interval.
    pub t_s: f64,
    /// Length of the interval in seconds (close to 1).
    pub interval_s: f64,
    /// What happened in the interval.
    pub counts: Counts,
    /// Latency of the interval's successful operations.
    pub latency: LatencySummary,
}

impl SecondSample {
    /// Successful operations per second in this interval.
    pub fn ops_per_s(&self) -> f64 {
        if self.interval_s > 0.0 {
            self.counts.ops() as f64 / self.interval_s
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_empty_histogram_is_zero() {
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn summary_percentiles_follow_the_samples() {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let s = LatencySummary::of(&h);
        // 3 significant digits: values are exact below 2048.
        assert_eq!(
            (s.p50, s.p90, s.p99, s.p999, s.max),
            (500, 900, 990, 999, 1000)
        );
    }

    #[test]
    fn recorder_splits_intervals_and_keeps_totals() {
        let r = Recorder::new();
        r.record(0, OpOutcome::WriteOk, Duration::from_micros(100));
        r.record(1, OpOutcome::ReadOk, Duration::from_micros(300));
        r.record(2, OpOutcome::Unknown, Duration::from_secs(5));
        let (h, c) = r.take_interval();
        assert_eq!(h.len(), 2, "failed operations carry no latency sample");
        assert_eq!(
            c,
            Counts {
                writes: 1,
                reads: 1,
                errors: 0,
                unknown: 1
            }
        );
        r.record(3, OpOutcome::DefiniteError, Duration::from_micros(7));
        let (h, c) = r.take_interval();
        assert_eq!((h.len(), c.errors, c.ops()), (0, 1, 0));
        let (total, counts) = r.totals();
        assert_eq!(total.len(), 2);
        assert_eq!(
            counts,
            Counts {
                writes: 1,
                reads: 1,
                errors: 1,
                unknown: 1
            }
        );
        assert_eq!(LatencySummary::of(&total).max, 300);
    }

    #[test]
    fn huge_latencies_saturate_instead_of_failing() {
        let r = Recorder::new();
        r.record(0, OpOutcome::WriteOk, Duration::from_secs(100_000));
        assert!(LatencySummary::of(&r.totals().0).max >= LATENCY_US_MAX);
    }
}
