//! The progress ticker: once per interval it cuts a [`SecondSample`] from the recorder, asks
//! the cluster who leads, samples spawned nodes' memory, notices nodes that died, and prints
//! one progress line (rewritten in place on a terminal, one line per interval otherwise).
//!
//! Owns the time series until the thread ends; stops when its own flag is set, after the
//! clients have returned, so the last partial interval is included.

use crate::backend::{ClusterAccess, find_leader};
use crate::cluster::SpawnedCluster;
use crate::limits::{FINAL_SAMPLE_MIN_S, PROGRESS_INTERVAL};
use crate::report::{format_ms, thousands};
use crate::stats::{LatencySummary, SecondSample, lock};
use crate::workload::RunShared;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the ticker hands back.
#[derive(Debug, Default)]
pub struct ProgressLog {
    /// One sample per interval.
    pub samples: Vec<SecondSample>,
    /// Messages about nodes that died on their own.
    pub node_problems: Vec<String>,
}

/// Everything the ticker reads.
pub struct Ticker {
    /// Run state.
    pub shared: Arc<RunShared>,
    /// For leader lookups.
    pub access: Arc<dyn ClusterAccess>,
    /// Node addresses in id order.
    pub addrs: Vec<SocketAddr>,
    /// The spawned cluster, if any.
    pub cluster: Option<Arc<Mutex<SpawnedCluster>>>,
    /// Rewrite the line in place.
    pub tty: bool,
    /// Set by the main thread when the ticker should take its last sample and return.
    pub done: Arc<AtomicBool>,
}

/// The progress line for one sample.
pub fn progress_line(sample: &SecondSample, leader: Option<(usize, u64)>) -> String {
    let leader = match leader {
        Some((id, term)) => format!("node {id} (term {term})"),
        None => "none".to_string(),
    };
    format!(
        "{:>5.0}s {:>9} ops/s  p99 {:>9}  errors {:>5}  unknown {:>5}  leader {leader}",
        sample.t_s,
        thousands(sample.ops_per_s().round() as u64),
        format_ms(sample.latency.p99),
        sample.counts.errors,
        sample.counts.unknown,
    )
}

impl Ticker {
    /// Runs until `done` is set.
    pub fn run(self) -> ProgressLog {
        let mut log = ProgressLog::default();
        let mut last = Instant::now();
        let mut next = self.shared.start + PROGRESS_INTERVAL;
        loop {
            while !self.done.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep(
                    Duration::from_millis(10).min(next.saturating_duration_since(Instant::now())),
                );
            }
            let finished = self.done.load(Ordering::Relaxed);
            let now = Instant::now();
            let (histogram, counts) = self.shared.recorder.take_interval();
            let sample = SecondSample {
                t_s: now.duration_since(self.shared.start).as_secs_f64(),
                interval_s: now.duration_since(last).as_secs_f64(),
                counts,
                latency: LatencySummary::of(&histogram),
            };
            last = now;
            next += PROGRESS_INTERVAL;
            // The sliver after the last full interval (clients finishing their last request)
            // would show as a bogus drop in the series; the totals still count it.
            if finished && sample.interval_s < FINAL_SAMPLE_MIN_S {
                break;
            }
            log.samples.push(sample);
            self.check_nodes(&mut log);
            if !finished {
                self.print(&progress_line(&sample, self.leader()));
            }
            if finished {
                break;
            }
        }
        if self.tty {
            eprintln!();
        }
        log
    }

    fn check_nodes(&self, log: &mut ProgressLog) {
        let Some(cluster) = &self.cluster else { return };
        let mut cluster = lock(cluster);
        cluster.sample_rss();
        for message in cluster.reap_unexpected_exits() {
            eprintln!("\nrcraft-loadtest: {message}");
            log.node_problems.push(message);
        }
    }

    fn leader(&self) -> Option<(usize, u64)> {
        let serving: Vec<usize> = match &self.cluster {
            Some(cluster) => {
                let cluster = lock(cluster);
                (0..self.addrs.len())
                    .filter(|&i| cluster.is_serving(i))
                    .collect()
            }
            None => (0..self.addrs.len()).collect(),
        };
        let addrs: Vec<SocketAddr> = serving.iter().map(|&i| self.addrs[i]).collect();
        find_leader(self.access.as_ref(), &addrs).map(|(pos, status)| (serving[pos], status.term.0))
    }

    fn print(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}
