//! Runs many seeds (in parallel, one world per thread at a time) or replays one, reading its
//! options from the environment, and reports the first failure with its reproduction line.
//!
//! Environment: `SIM_SEED=n` replays exactly seed n (`SIM_TRACE=1` also prints every event);
//! `SIM_SEEDS=n` runs n seeds starting at `SIM_SEED_START` (default 0); `SIM_THREADS=n`;
//! `SIM_SKIP_SEEDS=a,b,...` leaves those seeds out (the mutation check skips seeds that
//! already fail without a planted bug); `SIM_KEEP_GOING=1` runs every seed and lists each failing one (for triage);
//! `SIM_CHECK_PERSIST=0` turns off the direct persist-before-acknowledge check so only the
//! end-to-end safety checks can catch a durability bug.

use crate::params::TRACE_LINES;
use crate::replica::SimCore;
use crate::world::{Failure, RunSummary, TraceMode, World};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Seeds per `cargo test` in a release build.
const DEFAULT_SEEDS_RELEASE: u64 = 2_000;
/// Seeds per `cargo test` in a debug build, which must stay quick.
const DEFAULT_SEEDS_DEBUG: u64 = 100;

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct RunnerOptions {
    first_seed: u64,
    seeds: u64,
    single: Option<u64>,
    threads: usize,
    echo_trace: bool,
    check_persist_contract: bool,
    keep_going: bool,
    skip: Vec<u64>,
}

impl RunnerOptions {
    /// Options from the `SIM_*` environment variables; a malformed one is an error.
    pub(crate) fn from_env() -> Result<RunnerOptions, String> {
        let default_seeds = if cfg!(debug_assertions) {
            DEFAULT_SEEDS_DEBUG
        } else {
            DEFAULT_SEEDS_RELEASE
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(RunnerOptions {
            first_seed: env_u64("SIM_SEED_START")?.unwrap_or(0),
            seeds: env_u64("SIM_SEEDS")?.unwrap_or(default_seeds),
            single: env_u64("SIM_SEED")?,
            threads: env_u64("SIM_THREADS")?.map_or(cores, |n| n.max(1) as usize),
            echo_trace: env_u64("SIM_TRACE")?.unwrap_or(0) != 0,
            check_persist_contract: env_u64("SIM_CHECK_PERSIST")?.unwrap_or(1) != 0,
            keep_going: env_u64("SIM_KEEP_GOING")?.unwrap_or(0) != 0,
            skip: env_seed_list("SIM_SKIP_SEEDS")?,
        })
    }
}

fn env_seed_list(name: &str) -> Result<Vec<u64>, String> {
    let Ok(value) = std::env::var(name) else {
        return Ok(Vec::new());
    };
    value
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{name}: {s:?} is not a seed number"))
        })
        .collect()
}

fn env_u64(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={value:?} is not a non-negative integer")),
        Err(_) => Ok(None),
    }
}

/// Runs the selected seeds. `Ok` is the summary line; `Err` the failure report.
pub(crate) fn run_seeds<C: SimCore>(options: &RunnerOptions) -> Result<String, String> {
    if let Some(seed) = options.single {
        let trace = TraceMode {
            keep_lines: if options.echo_trace { usize::MAX } else { 0 },
            echo: options.echo_trace,
        };
        let world = World::<C>::new(seed, options.check_persist_contract, trace);
        return match world.run() {
            Ok(summary) => Ok(format!("sim: seed {seed} passed ({})", describe(&summary))),
            Err(failure) => Err(report::<C>(failure, options)),
        };
    }
    let next = AtomicU64::new(options.first_seed);
    let end = options.first_seed.saturating_add(options.seeds);
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let totals: Mutex<RunSummary> = Mutex::new(RunSummary::default());
    std::thread::scope(|scope| {
        for _ in 0..options.threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    if options.skip.contains(&seed) {
                        continue;
                    }
                    let quiet = TraceMode {
                        keep_lines: 0,
                        echo: false,
                    };
                    match World::<C>::new(seed, options.check_persist_contract, quiet).run() {
                        Ok(summary) => add(
                            &mut totals.lock().unwrap_or_else(|p| p.into_inner()),
                            &summary,
                        ),
                        Err(failure) => {
                            if options.keep_going {
                                println!(
                                    "sim failed: seed={} check: {}",
                                    failure.seed, failure.message
                                );
                            } else {
                                stop.store(true, Ordering::Relaxed);
                            }
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(failure);
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let failed = failures.len();
    if let Some(first) = failures.into_iter().min_by_key(|f| f.seed) {
        let mut text = report::<C>(first, options);
        if options.keep_going {
            text.push_str(&format!("{failed} of {} seeds failed\n", options.seeds));
        }
        return Err(text);
    }
    let totals = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(format!(
        "sim: {} seeds passed (seeds {}..{}; {})",
        options.seeds,
        options.first_seed,
        end,
        describe(&totals)
    ))
}

/// Seeds that once failed, each with its docs/SIM_FINDINGS.md number, run beside the seed
/// range by `seeds_of_findings_pass` (most lie beyond `make test`'s range). A change to the
/// simulator's schedules may move a seed off its bug: each finding also has a unit test.
pub(crate) const FINDING_SEEDS: &[(u64, &str)] = &[
    (2890, "17: a voter starved of its snapshot transfer"),
    (
        3996,
        "18: a refusal of an earlier chunk restarted a transfer being installed",
    ),
    (
        5105,
        "19: a chunk paid for after a wait for the budget dropped as stalled",
    ),
    (
        2343,
        "23: a slow disk's timer restarted when the writes paused for a window",
    ),
    (
        1297,
        "24: a node that lost entries and its votes voted for a candidate lacking them",
    ),
    (
        690,
        "25: a stray chunk of another snapshot emptied the partial file under way",
    ),
    (
        625,
        "26: a follower behind the entry cache caught up too slowly",
    ),
    (
        1734,
        "26: a follower behind the entry cache caught up too slowly",
    ),
    (
        785,
        "27: two damaged voters of four, one without its votes and one with a lost range",
    ),
    (
        1921,
        "37: a leader's own unreplicated tail lost, no candidate covering it",
    ),
    (
        2292,
        "47: byte streams stalled per message: a busy leader's links looked slow, it demoted",
    ),
    (
        4634,
        "47: byte streams stalled per message, with membership changes and snapshot storms",
    ),
    (
        4765,
        "46: a write whose entry the session table refused, counted as taking effect",
    ),
    (
        25,
        "49: real WAL damage below its frontier forgot the uncounted newest batch after it",
    ),
    (
        898,
        "50: a WAL reset to a snapshot inside a lost range forgot the claim at a crash",
    ),
    (
        6971,
        "61: a claim held in the claim file alone kept its term after later-term entries",
    ),
    (
        12473,
        "62: an acknowledgement released after a later leader replaced the entries it named",
    ),
];

/// Seeds that once failed with log damage drawn in configurations of two voters
/// (`damage_voters_min` 2 instead of `DAMAGE_VOTERS_MIN`), run that way by
/// `seeds_of_findings_pass`: the pair rule of docs/SIM_FINDINGS.md, finding 10. The
/// descriptions are the histories they ran when found; the simulator's draws changed since
/// (each node's consensus handler is driven), so they now run other pair histories. Seed
/// 1282 was dropped then: its new history is one of finding 10's open cases (a pair appended
/// in the lost range of a node whose intact log names three voters).
pub(crate) const PAIR_DAMAGE_SEEDS: &[(u64, &str)] = &[
    (
        647,
        "10: a pair's other voter holds a learner change in the lost range",
    ),
    (
        1241,
        "10: a pair's other voter names its configuration from another entry",
    ),
    (
        1295,
        "10: a pair's other voter compacted part of the range into a snapshot of the pair",
    ),
];

/// Runs every seed of [`FINDING_SEEDS`] and of [`PAIR_DAMAGE_SEEDS`]; `Err` lists the
/// failures, each with its finding.
pub(crate) fn run_finding_seeds<C: SimCore>() -> Result<String, String> {
    let quiet = TraceMode {
        keep_lines: 0,
        echo: false,
    };
    let pairs = PAIR_DAMAGE_SEEDS
        .iter()
        .map(|(seed, finding)| (seed, finding, 2));
    let default = crate::params::DAMAGE_VOTERS_MIN;
    let failed: Vec<String> = (FINDING_SEEDS.iter())
        .map(|(seed, finding)| (seed, finding, default))
        .chain(pairs)
        .filter_map(|(seed, finding, voters_min)| {
            let mut world = World::<C>::new(*seed, true, quiet);
            world.damage_voters_min = voters_min;
            let run = world.run();
            let how = match voters_min == default {
                true => String::new(),
                false => format!(" with params::DAMAGE_VOTERS_MIN = {voters_min}"),
            };
            run.err().map(|failure| {
                format!(
                    "sim failed: seed={seed} (SIM_FINDINGS {finding}) check: {} reproduce: \
                     make sim SEED={seed}{how}",
                    failure.message
                )
            })
        })
        .collect();
    if failed.is_empty() {
        Ok(format!(
            "sim: the {} seeds of findings passed",
            FINDING_SEEDS.len() + PAIR_DAMAGE_SEEDS.len()
        ))
    } else {
        Err(failed.join("\n"))
    }
}

fn add(totals: &mut RunSummary, run: &RunSummary) {
    totals.events += run.events;
    totals.committed += run.committed;
    totals.writes_acked += run.writes_acked;
    totals.reads += run.reads;
    totals.crashes += run.crashes;
    totals.membership_changes += run.membership_changes;
    totals.retries += run.retries;
    totals.duplicates += run.duplicates;
    totals.expired += run.expired;
    totals.self_demotions += run.self_demotions;
    totals.entry_reads += run.entry_reads;
    totals.appends.sent += run.appends.sent;
    totals.appends.refused += run.appends.refused;
    totals.damage.log_ranges += run.damage.log_ranges;
    totals.damage.hard_states += run.damage.hard_states;
    totals.damage.beside_another += run.damage.beside_another;
    totals.damage.real_bytes += run.damage.real_bytes;
    totals.damage.unreadable_pages += run.damage.unreadable_pages;
    totals.damage.snapshot_files += run.damage.snapshot_files;
    totals.wire.add(&run.wire);
}

fn describe(summary: &RunSummary) -> String {
    format!(
        "{} events, {} committed entries, {} acknowledged writes ({} retries, {} answered as \
         duplicates, {} refused as of a forgotten session), {} linearizable reads, {} crashes, {} committed configuration changes, \
         {} self-demotions of a leader with a slow disk or slow links, {} entry reads from a \
         leader's disk for a follower, {} AppendRequests sent and {} refused, disk damage: {} \
         synced log ranges lost and {} hard states damaged ({} while another node was damaged, \
         {} as real bytes, {} of them unreadable WAL pages), {} snapshot files damaged, \
         byte streams in {} runs: {} bytes in {} pieces over {} connections, {} connections \
         broken, {} messages dropped by a link backing off, {} links timed out waiting for a \
         handshake answer, {} accepted connections closed for stalling; client connections: {} \
         opened, {} refused by the cap per address and {} by the cap on all, {} broken, {} \
         bytes, {} answers decoded, {} reads of a slow reader found it paused by back-pressure",
        summary.events,
        summary.committed,
        summary.writes_acked,
        summary.retries,
        summary.duplicates,
        summary.expired,
        summary.reads,
        summary.crashes,
        summary.membership_changes,
        summary.self_demotions,
        summary.entry_reads,
        summary.appends.sent,
        summary.appends.refused,
        summary.damage.log_ranges,
        summary.damage.hard_states,
        summary.damage.beside_another,
        summary.damage.real_bytes,
        summary.damage.unreadable_pages,
        summary.damage.snapshot_files,
        summary.wire.runs,
        summary.wire.bytes,
        summary.wire.pieces,
        summary.wire.connections,
        summary.wire.breaks,
        summary.wire.dropped,
        summary.wire.timeouts,
        summary.wire.stalled,
        summary.wire.clients.connections,
        summary.wire.clients.refused_per_address,
        summary.wire.clients.refused_overall,
        summary.wire.clients.breaks,
        summary.wire.clients.bytes,
        summary.wire.clients.answers,
        summary.wire.clients.paused
    )
}

/// The failure report: the reproduction line, the check that failed, and the last events
/// (replaying the seed with tracing on, which the determinism makes exact).
fn report<C: SimCore>(failure: Failure, options: &RunnerOptions) -> String {
    let traced = if failure.trace.is_empty() {
        let trace = TraceMode {
            keep_lines: TRACE_LINES,
            echo: false,
        };
        match World::<C>::new(failure.seed, options.check_persist_contract, trace).run() {
            Err(replayed) if replayed.message == failure.message => replayed,
            _ => failure.clone(),
        }
    } else {
        failure.clone()
    };
    let tail = traced.trace.len().saturating_sub(TRACE_LINES);
    let mut text = format!(
        "sim failed: seed={} at t={}ms event #{} ({}) reproduce: make sim SEED={}\n\
         check: {}\nlast events:\n",
        failure.seed, failure.time_ms, failure.event, failure.params, failure.seed, failure.message
    );
    for line in &traced.trace[tail..] {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}
