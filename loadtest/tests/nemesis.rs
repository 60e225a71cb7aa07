//! The short nemesis matrix of `make test` (the full one is `make faults`): the real
//! `rcraft-loadtest` against real `rcraft serve` nodes under seeded partitions (as root: each
//! node in its own network namespace) and damaged follower logs. Every run must find the
//! history linearizable and lose no acknowledged write; Ctrl-C must leave no namespace behind.
//! Without root the partition cases run with their faults skipped and must say so.
//!
//! The torn-tail nemesis (`wal-tail`) is not in this matrix, only in `make faults` (release):
//! in this debug build a node recovering a torn tail takes ~14 s (recovery scans the whole
//! 64 MiB segment after the tear), so two damaged followers in a row leave a 3-node cluster
//! without a leader longer than the read-back waits (seed 4 of `wal-record,wal-tail,kill`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::build_rcraft_bin;

/// Upper bound for one run; a hang past it fails the test instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct Run {
    status: std::process::ExitStatus,
    report: String,
    stderr: String,
    json: String,
}

fn start(nodes: usize, nemesis: &str, seed: u64, json: &std::path::Path) -> Child {
    let rcraft = build_rcraft_bin();
    Command::new(env!("CARGO_BIN_EXE_rcraft-loadtest"))
        .args(["--spawn", &nodes.to_string(), "--clients", "4"])
        .args([
            "--duration",
            "7",
            "--keys",
            "20",
            "--workload",
            "write-heavy",
        ])
        .args(["--nemesis", nemesis, "--seed", &seed.to_string()])
        .args(["--nemesis-every", "1.5", "--nemesis-hold", "0.9"])
        .args(["--snapshot-every", "300"])
        .arg("--rcraft-bin")
        .arg(&rcraft)
        .arg("--json")
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the loadtest to end (SIGTERM, then SIGKILL, past [`RUN_LIMIT`]).
fn finish(mut child: Child, json: &std::path::Path) -> Run {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_LIMIT {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            panic!("rcraft-loadtest did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        status: output.status,
        report: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        json: std::fs::read_to_string(json).unwrap_or_default(),
    }
}

fn run(nodes: usize, nemesis: &str, seed: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    finish(start(nodes, nemesis, seed, &json), &json)
}

/// The run passed: linearizable, nothing acknowledged lost, no node died on its own.
fn assert_passed(run: &Run, what: &str) {
    assert!(
        run.status.success(),
        "{what}: exit {}\n{}\n{}",
        run.status,
        run.report,
        run.stderr
    );
    for field in [
        "\"lost_acked_writes\":0",
        "\"linearizable\":true",
        "\"passed\":true",
        "\"problems\":[]",
    ] {
        assert!(
            run.json.contains(field),
            "{what}: no {field} in {}",
            run.json
        );
    }
}

#[test]
fn partitions_lose_no_acknowledged_write_and_stay_linearizable() {
    if !is_root() {
        let run = run(3, "halves,one-way", 1);
        assert_passed(&run, "halves without root");
        assert!(
            run.stderr.contains("halves skipped") && run.stderr.contains("not running as root"),
            "{}",
            run.stderr
        );
        return;
    }
    for (nodes, nemesis, seed) in [
        (3, "isolate-leader,one-way", 1),
        (3, "halves,bridge", 2),
        (5, "halves,bridge,one-way", 3),
    ] {
        let what = format!("{nodes} nodes, {nemesis}, seed {seed}");
        let run = run(nodes, nemesis, seed);
        assert_passed(&run, &what);
        assert!(
            run.json.contains("\"kind\":\"partition\"") && run.json.contains("\"kind\":\"heal\""),
            "{what}: no partition happened: {}",
            run.report
        );
        assert!(
            run.report.contains("nemesis") && run.report.contains(&format!("seed {seed}")),
            "{}",
            run.report
        );
    }
}

#[test]
fn a_damaged_record_in_a_stopped_followers_log_is_repaired_and_nothing_is_lost() {
    let run = run(3, "wal-record,kill", 4);
    assert_passed(&run, "wal-record,kill");
    assert!(
        run.report.contains("bit flipped in record"),
        "{}",
        run.report
    );
    assert!(
        run.report.contains("repaired the damaged range"),
        "a follower with a damaged inner record must start and repair it:\n{}",
        run.report
    );
}

#[test]
fn ctrl_c_during_a_partition_removes_every_namespace() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let child = start(3, "isolate-leader", 5, &json);
    let prefix = format!("rclt{}x", child.id());
    let listed = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&prefix)
    };
    // Interrupt once the namespaces exist and the first partition is in force (about 1.5 s
    // in; bounded wait, no timing assert).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(listed(), "the namespaces never appeared");
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: kill(2) with our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let run = finish(child, &json);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(!listed(), "namespaces left behind after Ctrl-C");
    let links = Command::new("ip").args(["link", "show"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&prefix),
        "links left behind after Ctrl-C"
    );
}
