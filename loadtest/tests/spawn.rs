//! End to end: `rcraft-loadtest --spawn 3` against the real `rcraft` binary, with one leader
//! kill and restart, must verify every acknowledged write, find the history linearizable
//! (today's put-only mix, and the compare-and-swap-heavy workload) and write the contract's
//! JSON.
//!
//! The `rcraft` binary comes from `support::build_rcraft_bin`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::build_rcraft_bin;

/// Upper bound for the whole run; a hang past it fails the test instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

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
        "\"engine_threads\":1",
        "\"tool_cpu_us_per_write\":",
        "\"server_cpu_us_per_write\":",
    ] {
        assert!(summary.contains(field), "missing {field} in {summary}");
    }
    // Two nodes ran the whole run as the same processes, so the nodes' CPU is known.
    assert!(!summary.contains("_cpu_us_per_write\":null"), "{summary}");
    assert!(report.contains("CPU per write"), "{report}");
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
