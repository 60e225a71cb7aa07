//! End to end: `rcraft-loadtest --spawn 3` against the real `rcraft` binary, with one leader
//! kill and restart, must verify every acknowledged write and write the contract's JSON.
//!
//! The `rcraft` binary belongs to another package, so `CARGO_BIN_EXE_rcraft` is not available
//! here; the test looks for it next to `rcraft-loadtest` in the same target directory and
//! skips (saying why) when it is missing. `cargo test --workspace` builds it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the whole run; a hang past it fails the test instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn rcraft_bin() -> Option<PathBuf> {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_rcraft-loadtest"));
    let rcraft = loadtest.parent()?.join("rcraft");
    rcraft.is_file().then_some(rcraft)
}

#[test]
fn spawned_cluster_survives_a_leader_kill_without_losing_writes() {
    let Some(rcraft) = rcraft_bin() else {
        eprintln!(
            "skipped: no rcraft binary next to rcraft-loadtest (run `cargo build -p rcraft`)"
        );
        return;
    };
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
            "200",
        ])
        .args([
            "--value-size",
            "100",
            "--kill-leader-every",
            "1.5",
            "--restart-after",
            "0.7",
        ])
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
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(status.success(), "exit {status}; report:\n{report}");
    assert!(report.contains("0 acknowledged writes lost"), "{report}");

    let summary = std::fs::read_to_string(&json).unwrap();
    for field in [
        "\"clients\":4",
        "\"leader_kills\":1",
        "\"lost_acked_writes\":0",
        "\"latency_us\":{\"p50\":",
        "\"failover_ms\":[",
        "\"rss_bytes_max\":[",
        "\"passed\":true",
    ] {
        assert!(summary.contains(field), "missing {field} in {summary}");
    }
    assert!(
        !summary.contains("\"failover_ms\":[null]"),
        "no write acknowledged after the kill: {summary}"
    );
    assert!(!summary.contains("\"acked_writes\":0,"), "{summary}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("kill n") && svg.contains("restart n"), "{svg}");
}
