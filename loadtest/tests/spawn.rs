//! End to end: `rcraft-loadtest --spawn 3` against the real `rcraft` binary, with one leader
//! kill and restart, must verify every acknowledged write, find the history linearizable
//! (today's put-only mix, and the compare-and-swap-heavy workload) and write the contract's
//! JSON.
//!
//! The `rcraft` binary belongs to another package, so `CARGO_BIN_EXE_rcraft` is not available
//! here. The test asks cargo to build it (a no-op when it is up to date) and runs the executable
//! cargo reports, so it never runs a stale binary left from older sources, and a binary that
//! cannot be built fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the whole run; a hang past it fails the test instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Builds the workspace's `rcraft` binary with the cargo running this test and returns the
/// executable's path; panics, with cargo's output, when that fails.
fn build_rcraft_bin() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "rcraft",
            "--bin",
            "rcraft",
            "--message-format=json",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the rcraft binary: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "building the rcraft binary failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let executable = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["kind"] == serde_json::json!(["bin"]))
        .filter(|message| message["target"]["name"] == "rcraft")
        .find_map(|message| message["executable"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("cargo reported no rcraft executable:\n{stdout}"));
    let executable = PathBuf::from(executable);
    assert!(
        executable.is_file(),
        "cargo reported {} as the rcraft binary, but it is missing",
        executable.display()
    );
    executable
}

/// Runs `rcraft-loadtest --spawn 3` over `keys` keys with a leader kill and `extra` flags;
/// returns the exit status, the printed report, the JSON summary and the SVG chart.
fn run_loadtest(keys: &str, extra: &[&str]) -> (std::process::ExitStatus, String, String, String) {
    let rcraft = build_rcraft_bin();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let chart = dir.path().join("chart.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcraft-loadtest"))
        .args([
            "--spawn",
            "3",
            "--clients",
            "4",
            "--duration",
            "3",
            "--keys",
            keys,
        ])
        .args([
            "--value-size",
            "100",
            "--kill-leader-every",
            "1.5",
            "--restart-after",
            "0.7",
        ])
        .args(extra)
        .arg("--rcraft-bin")
        .arg(&rcraft)
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&chart)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            // SIGKILL leaves the nodes orphaned; SIGTERM lets the loadtest stop them first.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            panic!("rcraft-loadtest did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary = std::fs::read_to_string(&json).unwrap_or_default();
    let svg = std::fs::read_to_string(&chart).unwrap_or_default();
    (status, report, summary, svg)
}

#[test]
fn spawned_cluster_survives_a_leader_kill_without_losing_writes() {
    let (status, report, summary, svg) = run_loadtest("200", &[]);
    assert!(status.success(), "exit {status}; report:\n{report}");
    assert!(report.contains("0 acknowledged writes lost"), "{report}");
    for field in [
        "\"clients\":4",
        "\"leader_kills\":1",
        "\"lost_acked_writes\":0",
        "\"latency_us\":{\"p50\":",
        "\"failover_ms\":[",
        "\"rss_bytes_max\":[",
        "\"linearizable\":true",
        "\"ops_checked\":",
        "\"passed\":true",
        "\"leader_stages\":{\"leader\":",
        "{\"stage\":\"commit\",",
    ] {
        assert!(summary.contains(field), "missing {field} in {summary}");
    }
    // The leader's own stages are printed beside the end-to-end percentiles.
    assert!(report.contains("leader stages   node "), "{report}");
    assert!(report.contains("\n    commit"), "{report}");
    assert!(
        !summary.contains("\"failover_ms\":[null]"),
        "no write acknowledged after the kill: {summary}"
    );
    assert!(!summary.contains("\"acked_writes\":0,"), "{summary}");
    assert!(svg.contains("kill n") && svg.contains("restart n"), "{svg}");
}

#[test]
fn spawned_cluster_is_linearizable_under_compare_and_swaps_and_a_leader_kill() {
    let (status, report, summary, _) = run_loadtest("20", &["--workload", "cas-heavy"]);
    assert!(status.success(), "exit {status}; report:\n{report}");
    assert!(report.contains("linearizable    yes"), "{report}");
    for field in [
        "\"workload\":\"cas-heavy\"",
        "\"leader_kills\":1",
        "\"lost_acked_writes\":0",
        "\"linearizable\":true",
        "\"passed\":true",
    ] {
        assert!(summary.contains(field), "missing {field} in {summary}");
    }
}
